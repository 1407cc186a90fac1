"""The client's side of groups (docs/protocol.md "Groups (issue 13)"), for bots and tests.

The server relays a group's membership chain and its members' messages, but its word is never
taken: before this client encrypts to a group or accepts anything from it, it replays the
whole signed chain with the keys it verified through the key directory, and refuses a group
whose chain fails or whose server-side member list names anyone the chain does not justify
(the ghost member of Albrecht et al., IEEE S&P 2023). Messages use sender keys
(securechat/groups/senderkeys.py): my chain is handed to each other member inside ordinary
pairwise envelopes, drawn afresh after anyone is removed or leaves, so a removed member reads
nothing sent later. Each device (each client) draws its own chain, named by its id in every
message; my other devices read it from the server's copy of the distribution, which my own
keys open. A member whose account was deleted stays one by the chain but is handed
nothing, once the directory proves the deletion; an entry signed before its signer reset
their keys is checked against the directory's history of their keys (docs/CONTRACTS.md
"Groups", step 2).

``GroupSession`` is one group's state, with no network: the verified chain, the members at
each head, my sender chain and who holds it, the chains others handed me. ``Groups`` drives it
over a ``ChatConnection`` and the HTTP endpoints: create, add, remove, leave, rename,
make_admin, send, and receive.
"""

from __future__ import annotations

import hashlib
import json
import os
import time
import uuid
from collections.abc import Collection, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Final, Literal
from urllib.parse import quote

from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ed25519

from securechat import e2e
from securechat.client.api import ClientError
from securechat.client.chat import ChatError
from securechat.client.keys import KeyDirectoryError, NoKeys, verify_key_history
from securechat.errors import FrameCode, HttpCode
from securechat.groups import names, senderkeys
from securechat.groups.membership import (
    GROUP_ID_BYTES,
    GROUP_MEMBERS_MAX,
    ZERO_HASH,
    Action,
    Entry,
    GroupState,
    MembershipError,
    Subject,
    decode_entry,
    sign_entry,
    verify_chain,
)
from securechat.groups.senderkeys import (
    Distribution,
    GroupMessageError,
    ReceiverChain,
    SenderChain,
)

if TYPE_CHECKING:
    from securechat.client.chat import ChatConnection

# The frames of docs/protocol.md "Group frames, server to client".
GROUP_FRAMES: Final = frozenset({"group_message", "group_keys", "group_entry", "group_receipt"})
# A group_keys frame's ``keys`` as canonical JSON is at most 56 KiB: hand a chain to this many
# members per frame (an envelope is about 1.2 KiB with 2048-bit keys, 1.6 KiB with 3072-bit),
# and split a frame again in the rare case it is still too large.
KEYS_FRAME_BYTES: Final = 56 * 1024
RECIPIENTS_PER_KEYS_FRAME: Final = 32
# How often a change or a send is signed again after the group changed under it (stale_head).
STALE_RETRIES: Final = 5
# Chains kept per sender (each of their devices has one): the current ones and older ones for
# messages still in flight.
HELD_CHAINS_MAX: Final = 8


class GroupRefused(Exception):
    """This client will not send to or accept from the group: its membership does not verify.

    ``code``: a docs/CONTRACTS.md membership code (``ghost_member``, ``hidden_member`` (a
    gone member whose deletion the directory does not prove too), ``bad_signature``,
    ``unknown_key``, ``old_key``, ``reordered``, ``not_admin``, ...).
    """

    def __init__(self, group: str, code: str, message: str) -> None:
        super().__init__(message)
        self.group = group
        self.code = code


class GroupMessageRefused(Exception):
    """One group message or key distribution is refused (the group itself may be fine).

    ``code``: ``not_member`` (the sender is not a member at the head it names, or I am not),
    ``unknown_head``, ``no_chain`` (I hold no chain of the sender's with the id it names),
    ``unverifiable``, ``undecryptable``, ``bad_distribution``.
    """

    def __init__(self, group: str, code: str, message: str) -> None:
        super().__init__(f"{code}: {message} (group {group})")
        self.group = group
        self.code = code


class NotAMember(Exception):
    """I am not (or no longer) a member of the group, or it does not exist."""

    def __init__(self, group: str) -> None:
        super().__init__(f"not a member of group {group} (removed, left, or no such group)")
        self.group = group


@dataclass(frozen=True)
class GroupMessage:
    """A verified, decrypted group message."""

    group: str
    id: str
    seq: int
    sender: str
    text: str = field(repr=False)
    written_ms: int
    head: bytes


@dataclass
class HeldChain:
    """A chain another member handed me, with the chain index of the head it was made for."""

    head_index: int
    chain: ReceiverChain


def signing_key(identity: e2e.Identity) -> ed25519.Ed25519PrivateKey:
    """The identity's Ed25519 key as ``cryptography`` signs with it (entries, group messages)."""
    key = serialization.load_der_private_key(identity.to_pkcs8()[1], password=None)
    if not isinstance(key, ed25519.Ed25519PrivateKey):
        raise TypeError("an identity signs with Ed25519")
    return key


def fingerprint(sign_spki: bytes) -> bytes:
    """The raw fingerprint an entry names a person by: SHA-256 of their sign key's SPKI."""
    return hashlib.sha256(sign_spki).digest()


def members_after_each(entries: Sequence[Entry]) -> list[frozenset[str]]:
    """The members after each entry of a chain that verify_chain accepted."""
    members: set[str] = set()
    out = []
    for e in entries:
        subjects = {s.username for s in e.subjects}
        if e.action is Action.CREATE:
            members = {e.actor} | subjects
        elif e.action is Action.ADD:
            members |= subjects
        elif e.action is Action.REMOVE:
            members -= subjects
        elif e.action is Action.LEAVE:
            members.discard(e.actor)
        out.append(frozenset(members))
    return out


class GroupSession:
    """One group as this client verified it, and the sender chains of its members.

    Pure: ``Groups`` feeds it what the server sends. Every member list it reports comes from
    the signed chain it replayed, never from the server.
    """

    def __init__(self, group: str, me: str, *, max_members: int = GROUP_MEMBERS_MAX) -> None:
        self.group = group
        self.group_id = bytes.fromhex(group)
        if len(self.group_id) != GROUP_ID_BYTES:
            raise ValueError("a group id is 16 bytes")
        self.me = me
        self.max_members = max_members
        self.entries: list[bytes] = []
        self.decoded: list[Entry] = []
        self.state: GroupState | None = None
        self.refusal: GroupRefused | None = None
        # Members whose accounts were deleted (the server said so and the directory proved
        # it): still members by the chain, but nothing is handed to them.
        self.gone: frozenset[str] = frozenset()
        self._members_at: list[frozenset[str]] = []
        self._index_of_head: dict[bytes, int] = {}
        # My sender chain, its generation (one more at every fresh chain), and who holds it.
        self.my_chain: SenderChain | None = None
        self.generation = 0
        self.holders: dict[str, int] = {}
        self.rotate = False
        # Chains other members (and my other devices) handed me, per sender and chain id.
        self.held: dict[str, dict[bytes, HeldChain]] = {}
        # Name keys by the chain index of the create or rename entry whose name they open.
        self.name_keys: dict[int, bytes] = {}

    # What the chain says --------------------------------------------------------------

    @property
    def head(self) -> bytes:
        if self.state is None:
            raise RuntimeError("no verified chain yet")
        return self.state.head

    @property
    def members(self) -> frozenset[str]:
        """The members the verified chain makes, at its head."""
        return self._members_at[-1] if self._members_at else frozenset()

    @property
    def admins(self) -> frozenset[str]:
        return self.state.admins if self.state is not None else frozenset()

    @property
    def is_member(self) -> bool:
        return self.me in self.members

    def index_of(self, head: bytes) -> int | None:
        """The chain index of the entry whose hash is ``head``, if I hold it."""
        return self._index_of_head.get(head)

    def members_at(self, index: int) -> frozenset[str]:
        return self._members_at[index]

    @property
    def name_index(self) -> int:
        """The chain index of the entry that set the current name (a create or a rename)."""
        return max(
            (e.seq for e in self.decoded if e.action in (Action.CREATE, Action.RENAME)), default=0
        )

    @property
    def name(self) -> str | None:
        """The group's name, if a member handed me the key of the entry that set it."""
        index = self.name_index
        key = self.name_keys.get(index)
        if key is None or not self.decoded:
            return None
        try:
            return names.open_name(key, self.decoded[index].detail, self.group_id, index)
        except names.GroupNameError:
            return None

    def label(self) -> str:
        """How a warning names the group: its name when known, always its id."""
        name = self.name
        return f"group {name!r} ({self.group})" if name is not None else f"group {self.group}"

    # Verifying ------------------------------------------------------------------------

    def adopt(
        self,
        entries: Sequence[bytes],
        keys: Mapping[str, Sequence[bytes]],
        *,
        former: Mapping[str, Collection[bytes]] | None = None,
        roster: Iterable[str] | None = None,
        gone: Iterable[str] = (),
        deleted: Collection[str] = (),
    ) -> list[Entry]:
        """Verify a chain the server served (and its member list, when given); keep it.

        The whole chain is replayed with ``keys`` (the actors' current sign keys I verified
        through the directory) and ``former`` (fingerprints of their earlier keys proved in
        the directory's history; docs/CONTRACTS.md "Groups", step 2); it must extend the chain
        verified before, whose signatures are not checked again, and is kept only if it
        verifies. A chain that fails, or a member list that differs from the verified chain's,
        or a member the server calls ``gone`` whose deletion is not among those the directory
        proved (``deleted``), refuses the group (``self.refusal``) until a later chain and
        member list verify together (an entry appended without the list leaves a refusal as
        it is). Returns the entries new to me.
        """
        try:
            if list(entries[: len(self.entries)]) != self.entries:
                raise MembershipError(
                    "broken_link", "the chain served rewrites entries verified before"
                )
            state = verify_chain(
                entries,
                keys,
                max_members=self.max_members,
                former=former,
                verified=len(self.entries),
            )
            if state.group_id != self.group_id:
                raise MembershipError("reordered", "the chain is another group's", 0)
        except MembershipError as failure:
            self.refusal = GroupRefused(
                self.group,
                failure.code,
                f"The membership of {self.label()} does not verify ({failure}). "
                "Messages are not sent to this group until this is resolved.",
            )
            raise self.refusal from failure
        decoded = [decode_entry(e) for e in entries]
        new = decoded[len(self.entries) :]
        self.entries, self.decoded, self.state = list(entries), decoded, state
        self._members_at = members_after_each(decoded)
        self._index_of_head = {hashlib.sha256(e).digest(): i for i, e in enumerate(entries)}
        self._note_changes(new)
        if roster is not None:  # only a whole check (chain and member list) lifts a refusal
            self.refusal = None
            self._check_roster(self.members, set(roster))
            self._check_gone(set(gone), set(deleted))
        return new

    def _check_roster(self, verified: frozenset[str], listed: set[str]) -> None:
        """Refuse a member list that differs from the signed chain's (ghost or hidden)."""
        ghosts, hidden = sorted(listed - verified), sorted(verified - listed)
        if ghosts:
            self.refusal = GroupRefused(
                self.group,
                "ghost_member",
                f"The server lists {', '.join(ghosts)} as a member of {self.label()}, but no "
                "admin added them. Messages are not sent to this group until this is resolved.",
            )
            raise self.refusal
        if hidden:
            self.refusal = GroupRefused(
                self.group,
                "hidden_member",
                f"The server leaves {', '.join(hidden)} out of the members of {self.label()}, "
                "though the signed membership has them. Messages are not sent to this group "
                "until this is resolved.",
            )
            raise self.refusal

    def _check_gone(self, gone: set[str], deleted: set[str]) -> None:
        """Believe the server's ``gone`` only where the directory proved the deletion: a
        member it calls gone without that is refused like a hidden one (the server could
        otherwise cut anyone off from the group's keys), and a non-member like a ghost."""
        ghosts, unproved = sorted(gone - self.members), sorted(gone - deleted)
        if ghosts:
            self.refusal = GroupRefused(
                self.group,
                "ghost_member",
                f"The server lists {', '.join(ghosts)} as a deleted member of {self.label()}, "
                "but no admin added them. Messages are not sent to this group until this is "
                "resolved.",
            )
            raise self.refusal
        if unproved:
            self.refusal = GroupRefused(
                self.group,
                "hidden_member",
                f"The server says the accounts of {', '.join(unproved)} were deleted, but the "
                f"key directory does not prove it: they would be cut off from {self.label()}. "
                "Messages are not sent to this group until this is resolved.",
            )
            raise self.refusal
        self.gone = frozenset(gone)

    @property
    def reachable(self) -> frozenset[str]:
        """The members other than me who can be handed keys: not me, not gone."""
        return self.members - self.gone - {self.me}

    def _note_changes(self, new: Sequence[Entry]) -> None:
        """After someone else is removed or leaves, my next send draws a fresh chain."""
        for e in new:
            gone = {s.username for s in e.subjects} if e.action is Action.REMOVE else set()
            if e.action is Action.LEAVE:
                gone = {e.actor}
            if gone - {self.me} and self.my_chain is not None:
                self.rotate = True

    def check(self) -> None:
        """Raise the refusal, if the group is refused."""
        if self.refusal is not None:
            raise self.refusal

    # My sender chain ------------------------------------------------------------------

    def chain_to_send(self) -> SenderChain:
        """My chain for the next message: a fresh one at first and after a removal or leave."""
        if self.my_chain is None or self.rotate:
            self.my_chain, self.rotate = SenderChain.fresh(), False
            self.generation += 1
            self.holders = {}
        return self.my_chain

    def lacking_my_chain(self) -> list[str]:
        """The current members other than me (and the gone) who do not hold my current chain."""
        return sorted(m for m in self.reachable if self.holders.get(m) != self.generation)

    def handed(self, recipients: Iterable[str], generation: int) -> None:
        """``recipients`` acknowledged my chain of ``generation``."""
        for r in recipients:
            self.holders[r] = generation

    def name_keys_to_hand(self) -> dict[str, str]:
        """The key of the current name, as a distribution's ``name_keys`` carries it."""
        index = self.name_index
        key = self.name_keys.get(index)
        return {} if key is None else {str(index): e2e.b64encode(key)}

    # Chains handed to me --------------------------------------------------------------

    def take_distribution(
        self, distribution: Distribution, envelope_sender: str, name_keys: object
    ) -> None:
        """Keep a chain another member (or another device of mine) handed me, after checking
        who it is from and for.

        The pairwise envelope it came in proves ``envelope_sender``; that must be the
        distribution's sender, a member at the head it was made for, of this group. It is kept
        by its chain id: a chain already held (only further along) changes nothing, and my own
        sending chain is never taken for a chain to read (nor one to send with).
        """
        if distribution.sender != envelope_sender or distribution.group_id != self.group_id:
            raise GroupMessageRefused(
                self.group, "bad_distribution", f"{envelope_sender} handed a chain not theirs"
            )
        index = self.index_of(distribution.head)
        if index is None:
            raise GroupMessageRefused(self.group, "unknown_head", "a chain for an unknown head")
        if distribution.sender not in self._members_at[index]:
            raise GroupMessageRefused(
                self.group, "not_member", f"{distribution.sender} is not a member at that head"
            )
        mine = self.my_chain is not None and self.my_chain.chain_id == distribution.chain_id
        held = self.held.setdefault(distribution.sender, {})
        if distribution.chain_id not in held and not mine:
            held[distribution.chain_id] = HeldChain(
                index, ReceiverChain.from_distribution(distribution)
            )
            while len(held) > HELD_CHAINS_MAX:  # the oldest head's goes first
                del held[min(held, key=lambda cid: held[cid].head_index)]
        self._take_name_keys(name_keys)

    def _take_name_keys(self, name_keys: object) -> None:
        """Keep each name key that opens the name of the entry it is said to be for."""
        if not isinstance(name_keys, dict):
            return
        for index_text, key_b64 in name_keys.items():
            try:
                index, key = int(index_text), e2e.b64decode(key_b64)
                names.open_name(key, self.decoded[index].detail, self.group_id, index)
            except (ValueError, TypeError, IndexError):
                continue  # GroupNameError is a ValueError: a key that opens nothing is dropped
            self.name_keys[index] = key

    def open(
        self, *, message_id: str, sender: str, head: bytes, wire: Any, sender_sign_spki: bytes
    ) -> bytes:
        """Verify and decrypt one group message sent under ``head``; its plaintext.

        The sender (and I) must be members at that head per the verified chain; the chain
        used is the sender's that the message names by its id.
        """
        index = self.index_of(head)
        if index is None:
            raise GroupMessageRefused(self.group, "unknown_head", f"{message_id}: unknown head")
        for who in (sender, self.me):
            if who not in self._members_at[index]:
                raise GroupMessageRefused(
                    self.group, "not_member", f"{who} is not a member at the head of {message_id}"
                )
        held = self.held.get(sender, {}).get(senderkeys.wire_chain_id(wire) or b"")
        if held is None:
            raise GroupMessageRefused(
                self.group, "no_chain", f"no chain of {sender}'s opens {message_id}"
            )
        try:
            return senderkeys.open_group_message(
                wire,
                chain=held.chain,
                group_id=self.group_id,
                head=head,
                sender=sender,
                message_id=message_id,
                sender_sign_spki=sender_sign_spki,
            )
        except GroupMessageError as failure:
            raise GroupMessageRefused(self.group, failure.code, str(failure)) from failure


class Groups:
    """My groups over one chat connection: the operations of issue 13 for a bot.

    Every operation fetches the group and verifies its chain and member list first; a
    refused group raises ``GroupRefused`` (naming the group) and nothing is sent to it.
    ``receive`` reads the socket's group frames in order: it verifies and keeps membership
    changes and the chains others hand me, and returns the next group message (each id once).

    A bot::

        groups = Groups(await client.connect())
        group = await groups.create("Ops", ["bob", "carol"])
        await groups.send(group, "deploy done")
        message = await groups.receive()  # GroupMessage: group, sender, text, seq, ...
    """

    def __init__(self, chat: ChatConnection, *, max_members: int = GROUP_MEMBERS_MAX) -> None:
        self.chat = chat
        self.max_members = max_members
        self.sessions: dict[str, GroupSession] = {}
        self.receipts: dict[str, dict[str, Any]] = {}
        self._seen: set[str] = set()
        self.sent: dict[str, GroupMessage] = {}
        if chat.client.account is None:
            raise RuntimeError("log in first")
        # Accounts whose deletion the key directory proved (a deletion is for good).
        self._deleted: set[str] = set()

    @property
    def me(self) -> str:
        return self.chat.username

    @property
    def _identity(self) -> e2e.Identity:
        """My identity now (a key reset replaces it)."""
        account = self.chat.client.account
        if account is None:
            raise RuntimeError("log in first")
        return account.identity

    @property
    def _sign_key(self) -> ed25519.Ed25519PrivateKey:
        return signing_key(self._identity)

    # Reading the group from the server --------------------------------------------------

    async def refresh(self, group: str) -> GroupSession:
        """Fetch the group's chain and member list, verify both, keep them.

        Raises ``NotAMember`` when the server says I am not a member (the session is kept:
        a removed member keeps the entry that removed it), ``GroupRefused`` when the chain
        or the member list does not verify.
        """
        session = self._session(group)
        try:
            body = await self.chat.client.call("GET", f"/api/v1/groups/{group}")
        except ClientError as error:
            if error.status == 404:
                raise NotAMember(group) from error
            raise
        entries = [e2e.b64decode(e) for e in body["entries"]]
        keys, former = await self._signer_keys(entries, len(session.entries))
        gone = [str(name) for name in body.get("gone", [])]
        session.adopt(
            entries,
            keys,
            former=former,
            roster=body["members"],
            gone=gone,
            deleted=await self._proved_deleted(gone),
        )
        return session

    async def ready(self, group: str) -> GroupSession:
        """The group verified just now, refused or not a member raising."""
        session = await self.refresh(group)
        if not session.is_member:
            raise NotAMember(group)
        return session

    async def my_groups(self) -> list[dict[str, Any]]:
        """My groups as the server lists them (``group``, ``head``, ``members``, ...)."""
        body = await self.chat.client.call("GET", "/api/v1/groups")
        return list(body["groups"])

    def name(self, group: str) -> str | None:
        """The group's decrypted name, if known."""
        session = self.sessions.get(group)
        return session.name if session is not None else None

    def _session(self, group: str) -> GroupSession:
        if group not in self.sessions:
            self.sessions[group] = GroupSession(group, self.me, max_members=self.max_members)
        return self.sessions[group]

    async def _signer_keys(
        self, entries: Sequence[bytes], verified: int = 0
    ) -> tuple[dict[str, list[bytes]], dict[str, frozenset[bytes]]]:
        """The keys to check the entries from ``verified`` on with: each actor's current sign
        key, verified through the directory, and, only for an actor an entry names by another
        key, the fingerprints of their earlier keys proved in the directory's history."""
        named: dict[str, set[bytes]] = {}
        for data in entries[verified:]:
            try:
                entry = decode_entry(data)
            except MembershipError:
                continue  # verify_chain names it
            named.setdefault(entry.actor, set()).add(entry.actor_fingerprint)
        keys: dict[str, list[bytes]] = {}
        former: dict[str, frozenset[bytes]] = {}
        for actor, fingerprints in named.items():
            current = await self._current_sign_key(actor)
            keys[actor] = [] if current is None else [current]
            if current is None or fingerprints != {fingerprint(current)}:
                former[actor] = await self._former_sign_keys(actor)
        return keys, former

    async def _current_sign_key(self, actor: str) -> bytes | None:
        """The actor's sign key verified through the directory now (not the connection's
        copy, which may predate a key reset: an entry under a key replaced since must be
        vouched for); None when the directory gives none (a deleted account, withdrawn keys)."""
        try:
            return (await self.chat.client.fetch_verified_keys(actor)).sign_public_key
        except (KeyDirectoryError, ClientError):
            return None  # no verified key: the chain says unknown_key unless history has it

    async def _former_sign_keys(self, actor: str) -> frozenset[bytes]:
        """Every sign key fingerprint the directory's history proves the actor published:
        each entry's inclusion in one signed head, that head consistent with those seen."""
        client = self.chat.client
        try:
            pinned = client.directory.directory_key or await client.directory_key()
            body = await client.call("GET", f"/api/v1/keys/{quote(actor, safe='')}/history")
            history = verify_key_history(body, actor, pinned)
            await client.check_head(history.tree_head)
        except (KeyDirectoryError, ClientError):
            return frozenset()  # nothing proved: an entry under an older key is unknown_key
        return history.sign_fingerprints

    async def _proved_deleted(self, names: Sequence[str]) -> set[str]:
        """Those of ``names`` whose accounts the directory proves deleted (a tombstone as
        their latest entry, the head consistent with those seen)."""
        if len(set(names)) > self.max_members:
            return set()  # more than a group holds: the member list check refuses it
        for name in set(names) - self._deleted:
            try:
                await self.chat.client.fetch_verified_keys(name)
            except NoKeys as no_keys:
                if no_keys.tombstone.status == "deleted":
                    self._deleted.add(name)
            except (KeyDirectoryError, ClientError):
                continue
        return self._deleted & set(names)

    async def _fingerprint(self, username: str) -> bytes:
        return fingerprint((await self.chat.keys(username)).sign_public_key)

    # Changing a group -------------------------------------------------------------------

    async def create(self, name: str, members: Iterable[str]) -> str:
        """Create a group named ``name`` with me as its admin and ``members``; its id (hex).

        The name is sealed in the creation entry; my chain and the name's key go to every
        member right away."""
        group_id = os.urandom(GROUP_ID_BYTES)
        group = group_id.hex()
        others = sorted(set(members) - {self.me})
        name_key = names.new_name_key()
        entry = sign_entry(
            group_id=group_id,
            seq=0,
            prev_hash=ZERO_HASH,
            action=Action.CREATE,
            written_ms=_now_ms(),
            actor=self.me,
            subjects=[Subject(m, await self._fingerprint(m)) for m in others],
            detail=names.seal_name(name_key, name, group_id, 0),
            sign_key=self._sign_key,
        )
        await self.chat.client.call("POST", "/api/v1/groups", {"entry": e2e.b64encode(entry)})
        session = self._session(group)
        session.adopt([entry], (await self._signer_keys([entry]))[0])
        session.name_keys[0] = name_key
        session.chain_to_send()
        await self._hand_my_chain(session, session.lacking_my_chain())
        return group

    async def add(self, group: str, members: Iterable[str]) -> None:
        """Add ``members``; they get my chain (from now on) and the name's key at once."""
        added = sorted(set(members))
        subjects = [Subject(m, await self._fingerprint(m)) for m in added]
        session = await self._change(group, Action.ADD, subjects)
        session.chain_to_send()
        await self._hand_my_chain(session, [m for m in added if m in session.lacking_my_chain()])

    async def remove(self, group: str, members: Iterable[str]) -> None:
        """Remove ``members``; every remaining member (me too) draws a fresh chain before
        its next send, so they read nothing sent after this."""
        removed = sorted(set(members))
        # Named by the key the chain holds for them: a gone member has none in the directory.
        chain = (await self.ready(group)).state
        known = chain.members if chain is not None else {}
        subjects = [
            Subject(m, known[m]) if m in known else Subject(m, await self._fingerprint(m))
            for m in removed
        ]
        await self._change(group, Action.REMOVE, subjects)

    async def make_admin(self, group: str, members: Iterable[str]) -> None:
        """Make ``members`` admins of the group."""
        chosen = sorted(set(members))
        subjects = [Subject(m, await self._fingerprint(m)) for m in chosen]
        await self._change(group, Action.MAKE_ADMIN, subjects)

    async def leave(self, group: str) -> None:
        """Leave the group (the others rotate their chains)."""
        await self._change(group, Action.LEAVE)

    async def rename(self, group: str, name: str) -> None:
        """Rename the group: the new name is sealed under a fresh key handed to every member."""
        name_key = names.new_name_key()
        session = await self._change(group, Action.RENAME, name=(name, name_key))
        session.chain_to_send()
        await self._hand_my_chain(session, sorted(session.reachable))

    async def _change(
        self,
        group: str,
        action: Action,
        subjects: Sequence[Subject] = (),
        *,
        name: tuple[str, bytes] | None = None,
    ) -> GroupSession:
        """Sign the next entry on the head I verified, post it; sign again if the group
        changed first (``stale_head``). Checked against my own replay before it is posted."""
        for _ in range(STALE_RETRIES):
            session = await self.ready(group)
            index = len(session.entries)
            detail = (
                b"" if name is None else names.seal_name(name[1], name[0], session.group_id, index)
            )
            entry = sign_entry(
                group_id=session.group_id,
                seq=index,
                prev_hash=session.head,
                action=action,
                written_ms=_now_ms(),
                actor=self.me,
                subjects=subjects,
                detail=detail,
                sign_key=self._sign_key,
            )
            chain = [*session.entries, entry]
            keys, former = await self._signer_keys(chain, index)
            verify_chain(  # my mistake, said plainly
                chain, keys, max_members=self.max_members, former=former, verified=index
            )
            try:
                await self.chat.client.call(
                    "POST", f"/api/v1/groups/{group}/entries", {"entry": e2e.b64encode(entry)}
                )
            except ClientError as error:
                if error.code == HttpCode.STALE_HEAD.code:
                    continue
                raise
            session.adopt(chain, keys, former=former)
            if name is not None:
                session.name_keys[index] = name[1]
            return session
        raise ChatError(
            {"code": FrameCode.STALE_HEAD.code, "message": f"group {group} keeps changing"}
        )

    # Sending ----------------------------------------------------------------------------

    async def send(self, group: str, text: str, *, message_id: str | None = None) -> dict[str, Any]:
        """Encrypt ``text`` once for the group and send it; return the ack.

        First every current member gets my current chain (a fresh one after a removal or a
        leave). If the group changed meanwhile (``stale_head``), it is verified again and the
        same id sent again under the new head.
        """
        message_id = message_id or str(uuid.uuid4())
        written_ms = _now_ms()
        plaintext = json.dumps(
            {"text": text, "ts": written_ms}, ensure_ascii=False, separators=(",", ":")
        ).encode("utf-8")
        for _ in range(STALE_RETRIES):
            session = await self.ready(group)
            chain = session.chain_to_send()
            try:
                await self._hand_my_chain(session, session.lacking_my_chain())
                wire = senderkeys.encrypt_group_message(
                    chain=chain,
                    group_id=session.group_id,
                    head=session.head,
                    sender=self.me,
                    message_id=message_id,
                    plaintext=plaintext,
                    sign_key=self._sign_key,
                )
                await self.chat.send_frame(
                    {
                        "type": "send",
                        "id": message_id,
                        "group": group,
                        "head": e2e.b64encode(session.head),
                        "envelope": wire,
                    }
                )
                ack = await self.chat.wait_ack(message_id)
            except ChatError as error:
                if error.code == FrameCode.STALE_HEAD.code:
                    continue
                raise
            self.sent[message_id] = GroupMessage(
                group, message_id, int(ack["seq"]), self.me, text, written_ms, session.head
            )
            return ack
        raise ChatError(
            {"code": FrameCode.STALE_HEAD.code, "message": f"group {group} keeps changing"}
        )

    async def _hand_my_chain(self, session: GroupSession, recipients: Sequence[str]) -> None:
        """Send my current chain (and the current name's key) to ``recipients``, in as many
        ``group_keys`` frames as the size bound needs; note who acknowledged it."""
        if not recipients or session.my_chain is None:
            return
        distribution = session.my_chain.distribution(session.group_id, session.head, self.me)
        extra = {
            "group_keys": e2e.b64encode(distribution.encode()),
            "name_keys": session.name_keys_to_hand(),
        }
        pending = [
            list(recipients[i : i + RECIPIENTS_PER_KEYS_FRAME])
            for i in range(0, len(recipients), RECIPIENTS_PER_KEYS_FRAME)
        ]
        while pending:
            batch = pending.pop(0)
            frame_id = str(uuid.uuid4())
            keys = {r: await self.chat.seal(r, "", frame_id, extra=extra) for r in batch}
            if len(_canonical(keys)) > KEYS_FRAME_BYTES and len(batch) > 1:
                half = len(batch) // 2
                pending[:0] = [batch[:half], batch[half:]]
                continue
            await self.chat.send_frame(
                {
                    "type": "group_keys",
                    "id": frame_id,
                    "group": session.group,
                    "head": e2e.b64encode(session.head),
                    "keys": keys,
                }
            )
            await self.chat.wait_ack(frame_id)
            session.handed(batch, session.generation)

    # Receiving --------------------------------------------------------------------------

    async def receive(self, *, wait: float | None = None) -> GroupMessage:
        """The next message of another member, verified and decrypted; membership changes and
        chains handed to me on the way are verified and kept. Other frames stay on the connection.

        A frame that is refused raises (``GroupRefused``, ``GroupMessageRefused``; and
        ``NotAMember`` for a change I cannot fetch, being no member any more) and is
        consumed: the next call goes on with the next frame.
        """
        while True:
            frame = await self.chat.wait_for_any(GROUP_FRAMES, wait=wait)
            message = await self.handle(frame)
            if message is not None:
                return message

    async def handle(self, frame: dict[str, Any]) -> GroupMessage | None:
        """Take one group frame; another member's message (new to me) is returned, anything
        else kept. My own messages, which a sync replays, are not returned: ``sent`` has
        those this client sent."""
        kind = frame.get("type")
        if kind == "group_entry":
            await self._take_entry(frame)
        elif kind == "group_keys":
            await self._take_keys(frame)
        elif kind == "group_receipt":
            self.receipts[str(frame["id"])] = frame
        elif kind == "group_message":
            return await self._take_message(frame)
        return None

    async def mark(self, message: GroupMessage, status: Literal["delivered", "read"]) -> None:
        """Tell the sender that their group message reached me, or that I read it (they see
        the counts in ``group_receipt`` frames)."""
        await self.chat.send_frame({"type": status, "seq": message.seq, "group": message.group})

    async def _take_entry(self, frame: dict[str, Any]) -> None:
        """A membership change: verify it on the chain I hold, or fetch the chain."""
        group, index = str(frame["group"]), int(frame["index"])
        session = self._session(group)
        if index < len(session.entries):
            return  # had already (fetched with the chain)
        if index == len(session.entries) and session.entries:
            chain = [*session.entries, e2e.b64decode(frame["entry"])]
            keys, former = await self._signer_keys(chain, len(session.entries))
            session.adopt(chain, keys, former=former)
            return
        try:
            await self.refresh(group)
        except NotAMember:
            if index == 0:  # a creation naming me that the server no longer shows: nothing to keep
                return
            raise

    async def _take_keys(self, frame: dict[str, Any]) -> None:
        """A chain another member handed me, inside a pairwise envelope to me; or one my other
        device handed someone (``to``), which my keys open too (the envelope's ``sk``)."""
        sender, group = str(frame["from"]), str(frame["group"])
        mine = sender == self.me
        session = self._session(group)
        try:
            opened = e2e.open_message(
                frame["envelope"],
                message_id=str(frame["id"]),
                sender=sender,
                recipient=str(frame["to"]) if mine else self.me,
                reader=self._identity,
                sender_sign_spki=(await self.chat.keys(sender)).sign_public_key,
                as_sender=mine,
            )
            distribution = Distribution.decode(e2e.b64decode(opened.fields["group_keys"]))
        except (e2e.EnvelopeError, KeyError, TypeError, ValueError) as failure:
            raise GroupMessageRefused(group, "bad_distribution", str(failure)) from failure
        if session.index_of(distribution.head) is None:
            await self.refresh(group)
        session.check()
        session.take_distribution(distribution, sender, opened.fields.get("name_keys"))

    async def _take_message(self, frame: dict[str, Any]) -> GroupMessage | None:
        message_id, group, sender = str(frame["id"]), str(frame["group"]), str(frame["from"])
        if message_id in self._seen:
            return None
        session = self._session(group)
        if sender == self.me and (
            message_id in self.sent
            or senderkeys.wire_chain_id(frame["envelope"]) not in session.held.get(self.me, {})
        ):
            # Sent from here (a sync, a resync after a gap replays it), or from a device of
            # mine whose chain I was never handed: not news.
            self._seen.add(message_id)
            return None
        head = e2e.b64decode(frame["head"])
        if session.index_of(head) is None:
            try:
                await self.refresh(group)
            except NotAMember as gone:
                raise GroupMessageRefused(group, "not_member", "I am not a member") from gone
        session.check()
        plaintext = session.open(
            message_id=message_id,
            sender=sender,
            head=head,
            wire=frame["envelope"],
            sender_sign_spki=(await self.chat.keys(sender)).sign_public_key,
        )
        self._seen.add(message_id)
        try:
            body = json.loads(plaintext.decode("utf-8"))
            text, written_ms = str(body["text"]), int(body["ts"])
        except (ValueError, KeyError, TypeError) as failure:
            raise GroupMessageRefused(group, "undecryptable", "a malformed body") from failure
        return GroupMessage(group, message_id, int(frame["seq"]), sender, text, written_ms, head)


def _canonical(value: Any) -> str:
    return json.dumps(value, separators=(",", ":"), sort_keys=True)


def _now_ms() -> int:
    return time.time_ns() // 1_000_000
