"""Signed, hash-chained group membership (docs/CONTRACTS.md, "Membership entry").

Every change to a group is an entry signed by its actor's Ed25519 identity key and chained to
the previous entry by SHA-256, so the server, which stores and relays the chain, cannot add,
drop, reorder or alter a change without every member's client noticing. ``verify_chain``
replays the chain from its creation with the keys the *reader* verified (through the key
directory) and returns the members and admins it justifies; ``check_roster`` then refuses a
member list that names anyone else (a ghost member, the Matrix attack of Albrecht et al.,
IEEE S&P 2023). Mirrored by ``static/js/groups/membership.js``.
"""

from __future__ import annotations

import hashlib
from collections.abc import Collection, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from enum import IntEnum
from typing import Final

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ed25519

from securechat import e2e

ENTRY_LABEL: Final = b"securechat/v1/group-entry"
GROUP_ID_BYTES: Final = 16
HASH_BYTES: Final = 32
FINGERPRINT_BYTES: Final = 32
SIGNATURE_BYTES: Final = 64
ZERO_HASH: Final = bytes(HASH_BYTES)
MAX_NAME_BYTES: Final = 256
MAX_DETAIL_BYTES: Final = 4096
# The default of SECURECHAT_GROUP_MEMBERS_MAX (issue 13); a caller passes the server's bound.
GROUP_MEMBERS_MAX: Final = 256
# Subjects one entry may name: the decoder's bound, so SECURECHAT_GROUP_MEMBERS_MAX stays below it.
MAX_SUBJECTS: Final = 1024
MAX_SEQ: Final = 2**53 - 1  # a JavaScript number holds every sequence number exactly


class Action(IntEnum):
    """What a membership entry does (its ``u8`` on the wire)."""

    CREATE = 1
    ADD = 2
    REMOVE = 3
    LEAVE = 4
    RENAME = 5
    MAKE_ADMIN = 6


class MembershipError(Exception):
    """A membership entry or chain is refused; ``code`` names what failed.

    Codes: malformed, reordered, broken_link, unknown_key, old_key, bad_signature, not_admin,
    bad_change, ghost_member, hidden_member.
    """

    def __init__(self, code: str, message: str, seq: int | None = None) -> None:
        where = "" if seq is None else f"entry {seq}: "
        super().__init__(f"{code}: {where}{message}")
        self.code = code
        self.seq = seq


@dataclass(frozen=True)
class Subject:
    """A person an entry is about, with the identity key fingerprint the actor verified."""

    username: str
    fingerprint: bytes


@dataclass(frozen=True)
class Entry:
    """One decoded membership entry."""

    group_id: bytes
    seq: int
    prev_hash: bytes
    action: Action
    written_ms: int
    actor: str
    actor_fingerprint: bytes
    subjects: tuple[Subject, ...]
    detail: bytes
    signature: bytes = field(repr=False)

    def body(self) -> bytes:
        """The signed bytes: every field but the signature."""
        return entry_body(
            group_id=self.group_id,
            seq=self.seq,
            prev_hash=self.prev_hash,
            action=self.action,
            written_ms=self.written_ms,
            actor=self.actor,
            actor_fingerprint=self.actor_fingerprint,
            subjects=self.subjects,
            detail=self.detail,
        )

    def encode(self) -> bytes:
        """The entry's wire bytes: body || signature."""
        return self.body() + self.signature


def _name(username: str) -> bytes:
    raw = username.encode("utf-8")
    if not 1 <= len(raw) <= MAX_NAME_BYTES:
        raise ValueError(f"a username must be 1 to {MAX_NAME_BYTES} bytes")
    return e2e.lp(raw)


def _fixed(value: bytes, size: int, what: str) -> bytes:
    if len(value) != size:
        raise ValueError(f"{what} must be {size} bytes")
    return value


def entry_body(
    *,
    group_id: bytes,
    seq: int,
    prev_hash: bytes,
    action: Action,
    written_ms: int,
    actor: str,
    actor_fingerprint: bytes,
    subjects: Sequence[Subject],
    detail: bytes = b"",
) -> bytes:
    """Encode an entry's body (the bytes its actor signs)."""
    if not 0 <= seq <= MAX_SEQ or not 0 <= written_ms <= e2e.MAX_WRITTEN_MS:
        raise ValueError("seq or written_ms out of range")
    if len(detail) > MAX_DETAIL_BYTES or len(subjects) > MAX_SUBJECTS:
        raise ValueError(f"at most {MAX_DETAIL_BYTES} bytes of detail, {MAX_SUBJECTS} subjects")
    return b"".join(
        [
            ENTRY_LABEL,
            _fixed(group_id, GROUP_ID_BYTES, "group_id"),
            seq.to_bytes(8, "big"),
            _fixed(prev_hash, HASH_BYTES, "prev_hash"),
            bytes([Action(action)]),
            written_ms.to_bytes(8, "big"),
            _name(actor),
            _fixed(actor_fingerprint, FINGERPRINT_BYTES, "fingerprint"),
            len(subjects).to_bytes(4, "big"),
            *(
                _name(s.username) + _fixed(s.fingerprint, FINGERPRINT_BYTES, "fingerprint")
                for s in subjects
            ),
            e2e.lp(detail),
        ]
    )


def sign_entry(
    *,
    group_id: bytes,
    seq: int,
    prev_hash: bytes,
    action: Action,
    written_ms: int,
    actor: str,
    subjects: Sequence[Subject] = (),
    detail: bytes = b"",
    sign_key: ed25519.Ed25519PrivateKey,
) -> bytes:
    """Build and sign an entry with the actor's identity key; returns its wire bytes."""
    spki = sign_key.public_key().public_bytes(
        serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo
    )
    body = entry_body(
        group_id=group_id,
        seq=seq,
        prev_hash=prev_hash,
        action=action,
        written_ms=written_ms,
        actor=actor,
        actor_fingerprint=hashlib.sha256(spki).digest(),
        subjects=subjects,
        detail=detail,
    )
    return body + sign_key.sign(body)


def entry_hash(data: bytes) -> bytes:
    """SHA-256 of an entry's wire bytes (signature included): the next entry's prev_hash."""
    return hashlib.sha256(data).digest()


class _Reader:
    """A strict cursor over an entry's bytes: any short read is malformed."""

    def __init__(self, data: bytes) -> None:
        self.data = data
        self.at = 0

    def take(self, size: int) -> bytes:
        if size < 0 or self.at + size > len(self.data):
            raise MembershipError("malformed", "the entry ends early")
        out = self.data[self.at : self.at + size]
        self.at += size
        return out

    def uint(self, size: int) -> int:
        return int.from_bytes(self.take(size), "big")

    def name(self) -> str:
        raw = self.take(self.uint(4))
        if not 1 <= len(raw) <= MAX_NAME_BYTES:
            raise MembershipError("malformed", "a username has a bad length")
        try:
            return raw.decode("utf-8")
        except UnicodeDecodeError as exc:
            raise MembershipError("malformed", "a username is not UTF-8") from exc


def decode_entry(data: bytes) -> Entry:
    """Decode an entry's wire bytes strictly; ``MembershipError('malformed')`` otherwise."""
    r = _Reader(data)
    if r.take(len(ENTRY_LABEL)) != ENTRY_LABEL:
        raise MembershipError("malformed", "not a membership entry")
    group_id, seq, prev_hash = r.take(GROUP_ID_BYTES), r.uint(8), r.take(HASH_BYTES)
    try:
        action = Action(r.uint(1))
    except ValueError as exc:
        raise MembershipError("malformed", "unknown action") from exc
    written_ms, actor, actor_fp = r.uint(8), r.name(), r.take(FINGERPRINT_BYTES)
    count = r.uint(4)
    if count > MAX_SUBJECTS:
        raise MembershipError("malformed", "too many subjects")
    subjects = tuple(Subject(r.name(), r.take(FINGERPRINT_BYTES)) for _ in range(count))
    detail_len = r.uint(4)
    if detail_len > MAX_DETAIL_BYTES:
        raise MembershipError("malformed", "detail too long")
    detail, signature = r.take(detail_len), r.take(SIGNATURE_BYTES)
    if r.at != len(data):
        raise MembershipError("malformed", "trailing bytes after the signature")
    if seq > MAX_SEQ or written_ms > e2e.MAX_WRITTEN_MS:
        raise MembershipError("malformed", "seq or timestamp out of range")
    return Entry(
        group_id, seq, prev_hash, action, written_ms, actor, actor_fp, subjects, detail, signature
    )


def verify_entry(
    entry: Entry,
    keys: Mapping[str, Sequence[bytes]],
    former: Mapping[str, Collection[bytes]] | None = None,
) -> bool:
    """Check the entry's signature under the actor's key that the caller verified: True.

    An entry signed with one of the actor's ``former`` keys (fingerprints the reader proved in
    the key directory's history; their public keys are gone with the reset) cannot have its
    signature checked: False, and the caller needs a later entry under a current key to
    vouch for it (``verify_chain``).
    """
    for spki in keys.get(entry.actor, ()):
        if hashlib.sha256(spki).digest() == entry.actor_fingerprint:
            try:
                e2e.load_ed25519_public_spki(spki).verify(entry.signature, entry.body())
            except (InvalidSignature, ValueError) as exc:
                raise MembershipError(
                    "bad_signature", f"{entry.actor}'s signature does not verify", entry.seq
                ) from exc
            return True
    if former is not None and entry.actor_fingerprint in former.get(entry.actor, ()):
        return False
    raise MembershipError(
        "unknown_key", f"signed by a key of {entry.actor} the reader has not verified", entry.seq
    )


@dataclass(frozen=True)
class GroupState:
    """What a verified chain justifies: its head, members (username -> fingerprint), admins."""

    group_id: bytes
    head: bytes
    seq: int
    members: Mapping[str, bytes]
    admins: frozenset[str]
    name: bytes  # the encrypted name of the last create or rename entry (opaque here)


class _Replay:
    """The membership as the chain builds it, one entry at a time."""

    def __init__(self, max_members: int) -> None:
        self.members: dict[str, bytes] = {}
        self.admins: set[str] = set()
        self.name = b""
        self.max_members = max_members
        self.signed_now = True  # the last entry checked was signed with a current key

    def apply(self, e: Entry) -> None:
        names = [s.username for s in e.subjects]
        if len(set(names)) != len(names):
            raise MembershipError("bad_change", "a subject is named twice", e.seq)
        if e.action is Action.CREATE:
            self._create(e, names)
        elif e.action is Action.LEAVE:
            self._leave(e)
        else:
            if e.actor not in self.admins:
                raise MembershipError(
                    "not_admin", f"{e.actor} is not an admin here ({e.action.name.lower()})", e.seq
                )
            {
                Action.ADD: self._add,
                Action.REMOVE: self._remove,
                Action.RENAME: self._rename,
                Action.MAKE_ADMIN: self._make_admin,
            }[e.action](e, names)
        if len(self.members) > self.max_members:
            raise MembershipError("bad_change", f"more than {self.max_members} members", e.seq)

    def state(self, group_id: bytes, head: bytes, seq: int) -> GroupState:
        """The membership so far, as a chain ending at ``head`` (entry ``seq``) justifies it."""
        return GroupState(
            group_id=group_id,
            head=head,
            seq=seq,
            members=dict(self.members),
            admins=frozenset(self.admins),
            name=self.name,
        )

    def _create(self, e: Entry, names: list[str]) -> None:
        if e.seq != 0:
            raise MembershipError("bad_change", "only the first entry creates", e.seq)
        if e.actor in names:
            raise MembershipError("bad_change", "the creator is not a subject", e.seq)
        self.members = {e.actor: e.actor_fingerprint} | {
            s.username: s.fingerprint for s in e.subjects
        }
        self.admins = {e.actor}
        self.name = e.detail

    def _need(self, e: Entry, names: list[str], *, members: bool) -> None:
        if not names:
            raise MembershipError("bad_change", "the entry names nobody", e.seq)
        wrong = [n for n in names if (n in self.members) != members]
        if wrong:
            state = "not a member" if members else "already a member"
            raise MembershipError("bad_change", f"{', '.join(wrong)}: {state}", e.seq)

    def _add(self, e: Entry, names: list[str]) -> None:
        self._need(e, names, members=False)
        self.members.update((s.username, s.fingerprint) for s in e.subjects)

    def _remove(self, e: Entry, names: list[str]) -> None:
        self._need(e, names, members=True)
        if e.actor in names:
            raise MembershipError("bad_change", "an admin leaves rather than removes", e.seq)
        for n in names:
            del self.members[n]
            self.admins.discard(n)

    def _leave(self, e: Entry) -> None:
        if e.subjects or e.actor not in self.members:
            raise MembershipError("bad_change", f"{e.actor} cannot leave", e.seq)
        del self.members[e.actor]
        self.admins.discard(e.actor)
        if self.members and not self.admins:
            raise MembershipError("bad_change", "the last admin cannot leave", e.seq)

    def _rename(self, e: Entry, names: list[str]) -> None:
        if names:
            raise MembershipError("bad_change", "a rename names nobody", e.seq)
        self.name = e.detail

    def _make_admin(self, e: Entry, names: list[str]) -> None:
        self._need(e, names, members=True)
        if self.admins & set(names):
            raise MembershipError("bad_change", "already an admin", e.seq)
        self.admins.update(names)


def verify_chain(
    entries: Sequence[bytes],
    keys: Mapping[str, Sequence[bytes]],
    *,
    max_members: int = GROUP_MEMBERS_MAX,
    former: Mapping[str, Collection[bytes]] | None = None,
    verified: int = 0,
) -> GroupState:
    """Verify a whole chain (wire bytes, seq 0 first) and return the state it justifies.

    ``keys`` maps each username to the Ed25519 SPKIs the reader verified for them (through the
    key directory): their current keys. ``former`` maps a username to the fingerprints of
    their earlier sign keys, proved in the directory's history (docs/CONTRACTS.md "Groups",
    step 2): an entry signed with one is accepted only if a later entry is signed with its
    actor's current key (``old_key`` otherwise), since that entry's signer verified the whole
    prefix its hash links fix, and an old, maybe compromised key must not append anything new.
    The first ``verified`` entries are ones this reader verified before (the chain served
    must extend them; the caller checks that): their rules are replayed, their signatures
    not checked again. An entry signed by any other key is refused. Raises
    ``MembershipError``.
    """
    return _replay(entries, keys, max_members, former, verified)


def replay_verified(entries: Sequence[bytes], *, max_members: int) -> GroupState:
    """The state of a chain whose signatures were verified already (each when it was
    appended, with the keys of that time), checking every other rule again.

    For the server, which holds chains it checked entry by entry: signing keys change (a key
    reset), so checking old signatures with today's keys would refuse an honest chain.
    """
    return _replay(entries, None, max_members)


def verify_next(
    state: GroupState,
    data: bytes,
    keys: Mapping[str, Sequence[bytes]],
    *,
    max_members: int = GROUP_MEMBERS_MAX,
) -> GroupState:
    """Verify one entry appended to a chain already verified up to ``state``, and return
    the state after it: what :func:`verify_chain` would say of the longer chain, at the cost
    of one entry. Raises ``MembershipError``."""
    replay = _Replay(max_members)
    replay.members, replay.admins, replay.name = dict(state.members), set(state.admins), state.name
    e = _step(replay, state.head, state.group_id, state.seq + 1, data, keys, None)
    return replay.state(e.group_id, entry_hash(data), e.seq)


def _replay(
    entries: Sequence[bytes],
    keys: Mapping[str, Sequence[bytes]] | None,
    max_members: int,
    former: Mapping[str, Collection[bytes]] | None = None,
    verified: int = 0,
) -> GroupState:
    if not entries:
        raise MembershipError("malformed", "an empty chain")
    replay, prev, group_id = _Replay(max_members), ZERO_HASH, b""
    last_current, last_former = -1, -1
    for position, data in enumerate(entries):
        checks = keys if position >= verified else None
        e = _step(replay, prev, group_id, position, data, checks, former)
        group_id = e.group_id
        if checks is not None:
            if replay.signed_now:
                last_current = position
            else:
                last_former = position
        prev = entry_hash(data)
    if last_former > last_current:
        e = decode_entry(entries[last_former])
        raise MembershipError(
            "old_key",
            f"signed with a former key of {e.actor}, and no later entry under a current key "
            "vouches for it",
            e.seq,
        )
    return replay.state(group_id, prev, len(entries) - 1)


def _step(
    replay: _Replay,
    prev: bytes,
    group_id: bytes,
    position: int,
    data: bytes,
    keys: Mapping[str, Sequence[bytes]] | None,
    former: Mapping[str, Collection[bytes]] | None,
) -> Entry:
    """Check entry ``data`` at ``position`` after the entry hashing to ``prev`` and apply it
    to ``replay``; signatures are checked unless ``keys`` is None (``replay.signed_now`` then
    says whether it was signed with a current key rather than a former one)."""
    e = decode_entry(data)
    group_id = group_id or e.group_id
    if e.seq != position or e.group_id != group_id:
        raise MembershipError("reordered", f"found at position {position}", e.seq)
    if (position == 0) != (e.action is Action.CREATE):
        raise MembershipError("bad_change", "a chain starts with its one create", e.seq)
    if e.prev_hash != prev:
        raise MembershipError("broken_link", "prev_hash is not the previous entry's", e.seq)
    if keys is not None:
        replay.signed_now = verify_entry(e, keys, former)
    if e.actor not in replay.members and e.action is not Action.CREATE:
        raise MembershipError("not_admin", f"{e.actor} is not a member here", e.seq)
    replay.apply(e)
    return e


def check_roster(state: GroupState, listed: Iterable[str]) -> None:
    """Refuse a member list (the server's) that differs from the verified chain's."""
    names = set(listed)
    ghosts = sorted(names - set(state.members))
    if ghosts:
        raise MembershipError(
            "ghost_member", f"not justified by the signed membership: {', '.join(ghosts)}"
        )
    hidden = sorted(set(state.members) - names)
    if hidden:
        raise MembershipError("hidden_member", f"members left out: {', '.join(hidden)}")
