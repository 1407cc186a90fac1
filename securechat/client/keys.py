"""The client's side of docs/protocol.md "Key directory", the twin of static/js/directory.js.

Pin the directory key on first use, verify the signed head and inclusion proof of every key
before using it, check each newer head is consistent with the last one, and pin contacts'
fingerprints on first use. Pure (no network): ``SecureChatClient`` (api.py) makes the requests.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

from securechat import datadir, e2e
from securechat.directory import merkle, transparency

PinState = Literal["new", "same", "changed"]
_KEY_RESPONSE_FIELDS = frozenset(
    {"username", "enc_public_key", "sign_public_key", "entry", "inclusion_proof", "tree_head"}
)
_ENTRY_FIELDS = frozenset(
    {"index", "timestamp", "user_hash", "enc_fingerprint", "sign_fingerprint"}
)


class KeyDirectoryError(Exception):
    """The directory failed a check; ``code`` says which (the same codes as directory.js).

    ``bad_response``: malformed; ``bad_signature``: the tree head is not signed by the pinned
    directory key; ``directory_key_changed``: the server now shows another directory key;
    ``wrong_user``: the entry is another user's; ``not_in_log``: the keys are not the ones the
    log holds, or the inclusion proof fails; ``log_forked``: a head is not consistent with one
    seen before (the log was rewritten, or different people are shown different logs);
    ``bad_entries``: log entries served that do not hash to the signed head;
    ``foreign_key_for_me``: the log lists keys under my name that I do not hold.
    ``account_deleted``, ``keys_withdrawn``: a proved tombstone (:class:`NoKeys`).
    """

    def __init__(self, code: str, message: str) -> None:
        super().__init__(f"{code}: {message}")
        self.code = code


@dataclass(frozen=True)
class DirectoryEntry:
    """One log entry as served (fingerprints as raw 32-byte SHA-256)."""

    index: int
    timestamp_ms: int
    user_hash: bytes
    enc_fingerprint: bytes
    sign_fingerprint: bytes

    @classmethod
    def from_json(cls, data: object) -> DirectoryEntry:
        """Parse strictly; KeyDirectoryError("bad_response") on anything unexpected."""
        try:
            if not isinstance(data, dict) or set(data) != _ENTRY_FIELDS:
                raise ValueError("an entry has exactly " + ", ".join(sorted(_ENTRY_FIELDS)))
            return cls(
                index=transparency.json_uint(data, "index"),
                timestamp_ms=transparency.json_uint(data, "timestamp"),
                user_hash=transparency.json_b64(data, "user_hash", 32),
                enc_fingerprint=_exact(_unhex(data["enc_fingerprint"]), 32),
                sign_fingerprint=_exact(_unhex(data["sign_fingerprint"]), 32),
            )
        except (ValueError, TypeError) as error:
            raise KeyDirectoryError("bad_response", f"malformed log entry: {error}") from None

    def leaf_hash(self) -> bytes:
        """The entry's RFC 9162 leaf hash."""
        return transparency.entry_leaf_hash(self)


def _unhex(text: object) -> bytes:
    if not isinstance(text, str) or text != text.lower():
        raise ValueError("a fingerprint is lower-case hex")
    return bytes.fromhex(text)


def _exact(data: bytes, size: int) -> bytes:
    if len(data) != size:
        raise ValueError(f"expected {size} bytes")
    return data


@dataclass(frozen=True)
class ProvedKeys:
    """A user's keys whose log entry is proved included in a correctly signed tree head."""

    username: str
    enc_public_key: bytes
    sign_public_key: bytes
    entry: DirectoryEntry
    tree_head: transparency.SignedTreeHead

    @property
    def enc_fingerprint(self) -> str:
        return e2e.fingerprint(self.enc_public_key)

    @property
    def sign_fingerprint(self) -> str:
        return e2e.fingerprint(self.sign_public_key)


@dataclass(frozen=True)
class ProvedTombstone:
    """A user's latest log entry is a tombstone, proved included in a signed tree head: there
    are no keys to encrypt to. ``status``: ``deleted`` (the account is gone) or ``withdrawn``
    (the operator withdrew its keys until its owner publishes new ones)."""

    username: str
    status: str
    entry: DirectoryEntry
    tree_head: transparency.SignedTreeHead


class NoKeys(KeyDirectoryError):
    """The user has no keys, and the log proves it: never encrypt to them (``tombstone``)."""

    def __init__(self, tombstone: ProvedTombstone) -> None:
        deleted = tombstone.status == "deleted"
        super().__init__(
            "account_deleted" if deleted else "keys_withdrawn",
            f"{tombstone.username}'s account was deleted"
            if deleted
            else f"{tombstone.username} has no keys until they publish new ones",
        )
        self.tombstone = tombstone


def verify_tombstone(body: dict[str, Any], username: str, directory_key: bytes) -> ProvedTombstone:
    """Check a keys answer without keys: its entry must be a tombstone (rebuilt with zero
    fingerprints, never the ones stated) included in a correctly signed head."""
    status = body.get("status")
    if status not in ("deleted", "withdrawn"):
        raise KeyDirectoryError("bad_response", "unknown key status")
    try:
        head = transparency.SignedTreeHead.from_json(body["tree_head"])
        proof = [_exact(e2e.b64decode(p), 32) for p in body["inclusion_proof"]]
    except (KeyError, ValueError, TypeError) as error:
        raise KeyDirectoryError("bad_response", str(error)) from None
    entry = DirectoryEntry.from_json(body.get("entry"))
    if not transparency.verify_tree_head(directory_key, head):
        raise KeyDirectoryError("bad_signature", "the tree head is not signed by the directory")
    if body.get("username") != username or entry.user_hash != transparency.user_hash(username):
        raise KeyDirectoryError("wrong_user", f"the log entry is not {username}'s")
    zero = transparency.TOMBSTONE_FINGERPRINT
    tombstone = DirectoryEntry(entry.index, entry.timestamp_ms, entry.user_hash, zero, zero)
    if not merkle.verify_inclusion(
        tombstone.leaf_hash(), entry.index, head.tree_size, proof, head.root_hash
    ):
        raise KeyDirectoryError("not_in_log", f"no tombstone for {username} is in the log")
    return ProvedTombstone(username, status, tombstone, head)


@dataclass(frozen=True)
class ProvedHistory:
    """A user's log entries (newest first), each proved included in one signed tree head."""

    username: str
    entries: tuple[DirectoryEntry, ...]
    tree_head: transparency.SignedTreeHead

    @property
    def sign_fingerprints(self) -> frozenset[bytes]:
        """Every sign key fingerprint the user published (tombstones publish none)."""
        return frozenset(
            e.sign_fingerprint for e in self.entries if not transparency.is_tombstone(e)
        )


def verify_key_history(body: object, username: str, directory_key: bytes) -> ProvedHistory:
    """Check a ``GET /api/v1/keys/<username>/history`` answer against the pinned directory key.

    Each entry must be the user's, newest first, and its leaf (rebuilt from the fingerprints
    stated, which are what the log commits to) proved included in the one head, whose
    signature is checked. The caller then checks the head's consistency with the heads seen.
    """
    try:
        if not isinstance(body, dict) or set(body) != {"username", "entries", "tree_head"}:
            raise ValueError("a key history has exactly username, entries, tree_head")
        head = transparency.SignedTreeHead.from_json(body["tree_head"])
        items = body["entries"]
        if not isinstance(items, list) or not items:
            raise ValueError("a key history has entries")
        proved = []
        for item in items:
            if not isinstance(item, dict) or set(item) != {"entry", "inclusion_proof"}:
                raise ValueError("a history item has exactly entry, inclusion_proof")
            proof = [_exact(e2e.b64decode(p), 32) for p in item["inclusion_proof"]]
            proved.append((DirectoryEntry.from_json(item["entry"]), proof))
    except (KeyError, ValueError, TypeError) as error:
        raise KeyDirectoryError("bad_response", f"malformed key history: {error}") from None
    if not transparency.verify_tree_head(directory_key, head):
        raise KeyDirectoryError("bad_signature", "the tree head is not signed by the directory")
    if body["username"] != username:
        raise KeyDirectoryError("wrong_user", f"the key history is not {username}'s")
    mine, below = transparency.user_hash(username), head.tree_size
    for entry, proof in proved:
        if entry.user_hash != mine:
            raise KeyDirectoryError("wrong_user", f"log entry {entry.index} is not {username}'s")
        if entry.index >= below:
            raise KeyDirectoryError("bad_response", "a key history is newest first, in the head")
        below = entry.index
        if not merkle.verify_inclusion(
            entry.leaf_hash(), entry.index, head.tree_size, proof, head.root_hash
        ):
            raise KeyDirectoryError("not_in_log", f"log entry {entry.index} is not in the log")
    return ProvedHistory(username, tuple(e for e, _ in proved), head)


def verify_key_response(body: object, username: str, directory_key: bytes) -> ProvedKeys:
    """Check a ``GET /api/v1/keys/<username>`` answer against the pinned directory key.

    The leaf is rebuilt from the keys served (never from the fingerprints the server states),
    so a key swapped anywhere but in the log fails the inclusion proof. An answer without keys
    (``status``) raises :class:`NoKeys` once its tombstone is proved.
    """
    if isinstance(body, dict) and "status" in body:
        raise NoKeys(verify_tombstone(body, username, directory_key))
    if not isinstance(body, dict) or not set(body) >= _KEY_RESPONSE_FIELDS:
        raise KeyDirectoryError("bad_response", "the key response lacks fields")
    try:
        head = transparency.SignedTreeHead.from_json(body["tree_head"])
        enc_spki = e2e.b64decode(body["enc_public_key"])
        sign_spki = e2e.b64decode(body["sign_public_key"])
        e2e.load_rsa_public_spki(enc_spki)
        e2e.load_ed25519_public_spki(sign_spki)
        proof = [_exact(e2e.b64decode(p), 32) for p in body["inclusion_proof"]]
    except (ValueError, TypeError) as error:
        raise KeyDirectoryError("bad_response", str(error)) from None
    entry = DirectoryEntry.from_json(body["entry"])
    if not transparency.verify_tree_head(directory_key, head):
        raise KeyDirectoryError("bad_signature", "the tree head is not signed by the directory")
    if body["username"] != username or entry.user_hash != transparency.user_hash(username):
        raise KeyDirectoryError("wrong_user", f"the log entry is not {username}'s")
    served = DirectoryEntry(
        entry.index,
        entry.timestamp_ms,
        entry.user_hash,
        hashlib.sha256(enc_spki).digest(),
        hashlib.sha256(sign_spki).digest(),
    )
    if not merkle.verify_inclusion(
        served.leaf_hash(), entry.index, head.tree_size, proof, head.root_hash
    ):
        raise KeyDirectoryError("not_in_log", f"the keys served for {username} are not in the log")
    return ProvedKeys(username, enc_spki, sign_spki, entry, head)


@dataclass
class ContactPin:
    """The fingerprints first seen for a contact, and a different pair seen since, if any."""

    enc_fingerprint: str
    sign_fingerprint: str
    index: int
    verified: bool = False
    pending: dict[str, Any] | None = None  # {"enc_fingerprint", "sign_fingerprint", "index"}


@dataclass(frozen=True)
class VerifiedKeys:
    """Proved keys plus what the pin says: ``new``, ``same`` or ``changed`` since first seen."""

    proved: ProvedKeys
    state: PinState
    verified: bool
    is_self: bool
    previous: ContactPin | None = None

    @property
    def username(self) -> str:
        return self.proved.username

    @property
    def enc_public_key(self) -> bytes:
        return self.proved.enc_public_key

    @property
    def sign_public_key(self) -> bytes:
        return self.proved.sign_public_key

    @property
    def may_send(self) -> bool:
        """False while a verified contact's key has changed and the change is not accepted."""
        return not (self.state == "changed" and self.verified)


@dataclass
class SelfScan:
    """How far my client has read the log for my own entries: size, frontier, known pairs."""

    size: int
    frontier: list[str]  # b64 roots of the perfect subtrees of the first ``size`` leaves
    known: list[str]  # "enc_fingerprint:sign_fingerprint" pairs seen in the log as mine


def _frontier_append(frontier: list[bytes], size: int, leaf: bytes) -> None:
    """Append a leaf hash to the frontier of a tree of ``size`` leaves, in place."""
    node = leaf
    while size % 2 == 1:
        node = merkle.node_hash(frontier.pop(), node)
        size //= 2
    frontier.append(node)


def _frontier_root(frontier: list[bytes]) -> bytes:
    """The RFC 9162 root of the tree whose frontier this is."""
    if not frontier:
        return merkle.EMPTY_ROOT
    node = frontier[-1]
    for left in reversed(frontier[:-1]):
        node = merkle.node_hash(left, node)
    return node


def foreign_entries(
    mine: list[DirectoryEntry], current: str, known: set[str], first: bool
) -> list[DirectoryEntry]:
    """My entries (index order) that carry keys I do not hold; see check_my_entries. A
    tombstone publishes no key, so nobody can pose as me with it: it is never foreign."""
    mine = [e for e in mine if not transparency.is_tombstone(e)]

    def pair(e: DirectoryEntry) -> str:
        return f"{e.enc_fingerprint.hex()}:{e.sign_fingerprint.hex()}"

    accepted = set(known)
    if first and mine and pair(mine[-1]) == current:
        accepted |= {pair(e) for e in mine}
    last_current = max((e.index for e in mine if pair(e) == current), default=-1)
    return [
        e
        for e in mine
        if pair(e) != current and not (pair(e) in accepted and e.index < last_current)
    ]


class KeyDirectoryView:
    """What one client has seen: the pinned directory key, the last head, contacts' pins.

    Pure (no network): ``SecureChatClient`` feeds it. With ``path`` it is kept in a JSON file
    (mode 0600) between runs; it holds only public keys, fingerprints and tree heads.
    """

    def __init__(self, path: Path | None = None) -> None:
        self.path = path
        self.directory_key: bytes | None = None
        self.last_head: transparency.SignedTreeHead | None = None
        self.contacts: dict[str, ContactPin] = {}
        self.self_scans: dict[str, SelfScan] = {}
        if path is not None and path.exists():
            self._load(json.loads(path.read_text("utf-8")))

    def pin_directory_key(self, spki: bytes) -> None:
        """Pin on first use; afterwards a different key is refused until accepted by hand."""
        if self.directory_key is None:
            self.directory_key = spki
            self.save()
        elif spki != self.directory_key:
            raise KeyDirectoryError(
                "directory_key_changed",
                f"the server's directory key is now {e2e.fingerprint(spki)}, not the pinned "
                f"{e2e.fingerprint(self.directory_key)}",
            )

    def accept_directory_key(self, spki: bytes) -> None:
        """Re-pin after a rotation checked out of band; the last head is kept and still checked."""
        self.directory_key = spki
        self.save()

    def pin_contact(self, proved: ProvedKeys, *, is_self: bool = False) -> VerifiedKeys:
        """Compare ``proved`` with the contact's pin (pinning it on first sight)."""
        seen: dict[str, Any] = {
            "enc_fingerprint": proved.enc_fingerprint,
            "sign_fingerprint": proved.sign_fingerprint,
            "index": proved.entry.index,
        }
        pin = self.contacts.get(proved.username)
        if pin is None:
            self.contacts[proved.username] = ContactPin(**seen)
            self.save()
            return VerifiedKeys(proved, "new", False, is_self)
        if (pin.enc_fingerprint, pin.sign_fingerprint) == (
            seen["enc_fingerprint"],
            seen["sign_fingerprint"],
        ):
            if pin.pending is not None:  # the pinned keys are back: nothing left to accept
                pin.pending = None
                self.save()
            return VerifiedKeys(proved, "same", pin.verified, is_self)
        pin.pending = seen
        self.save()
        previous = ContactPin(pin.enc_fingerprint, pin.sign_fingerprint, pin.index, pin.verified)
        return VerifiedKeys(proved, "changed", pin.verified, is_self, previous)

    def mark_verified(self, username: str, verified: bool = True) -> None:
        """Record that the safety number with this contact was compared (or un-mark it)."""
        self.contacts[username].verified = verified
        self.save()

    def accept_change(self, username: str) -> None:
        """Pin the contact's new keys; verification starts over."""
        pin = self.contacts[username]
        if pin.pending is None:
            return
        self.contacts[username] = ContactPin(**pin.pending)
        self.save()

    def check_head(
        self, head: transparency.SignedTreeHead, proof: list[bytes] | None
    ) -> transparency.SignedTreeHead:
        """Check ``head`` against the last head with a consistency ``proof`` between them.

        Returns the head to keep (the larger). ``proof`` runs from the smaller size to the
        larger; it is not needed for equal sizes.
        """
        last = self.last_head
        if last is None:
            return head
        if head.tree_size == last.tree_size:
            if head != last:
                raise KeyDirectoryError(
                    "log_forked", f"two different heads of size {head.tree_size}"
                )
            return last
        old, new = (last, head) if last.tree_size < head.tree_size else (head, last)
        if proof is None or not merkle.verify_consistency(
            old.tree_size, new.tree_size, old.root_hash, new.root_hash, proof
        ):
            raise KeyDirectoryError(
                "log_forked",
                f"the head of size {head.tree_size} is not consistent with the head of size "
                f"{last.tree_size} seen before",
            )
        return new

    def scanned_size(self, username: str) -> int:
        """How many log entries check_my_entries has read for ``username`` (0 at first)."""
        scan = self.self_scans.get(username)
        return scan.size if scan is not None else 0

    def check_my_entries(
        self,
        username: str,
        enc_fingerprint: str,
        sign_fingerprint: str,
        head: transparency.SignedTreeHead,
        entries: list[DirectoryEntry],
    ) -> list[DirectoryEntry]:
        """Check the log entries ``scanned_size(username) <= index < head.tree_size``.

        Nobody but the owner can tell that a key logged under their name is not theirs, so the
        owner's client reads every entry (the twin of checkMyEntries in static/js/directory.js).
        ``head`` must be verified (signature, consistency). The entries, with the frontier kept
        of those read before, must hash to its root (``bad_entries`` otherwise: entries hidden
        or altered). Each entry under my name must carry my current fingerprints, or a pair
        seen here as mine before that a later entry with my current keys supersedes; anything
        else is ``foreign_key_for_me``. The first run accepts my past entries only if the
        latest carries my current keys. Nothing is kept from a failed run. Returns my entries.
        """
        scan = self.self_scans.get(username)
        start = scan.size if scan is not None else 0
        if head.tree_size <= start:
            return []
        frontier = [e2e.b64decode(h) for h in scan.frontier] if scan is not None else []
        me = transparency.user_hash(username)
        mine: list[DirectoryEntry] = []
        for size, entry in enumerate(entries, start):
            if entry.index != size:
                raise KeyDirectoryError("bad_entries", f"entry {entry.index} served at {size}")
            _frontier_append(frontier, size, entry.leaf_hash())
            if entry.user_hash == me:
                mine.append(entry)
        if start + len(entries) != head.tree_size or _frontier_root(frontier) != head.root_hash:
            raise KeyDirectoryError(
                "bad_entries",
                f"the log entries served do not hash to the head of size {head.tree_size}",
            )
        current = f"{enc_fingerprint}:{sign_fingerprint}"
        known = set(scan.known) if scan is not None else set()
        foreign = foreign_entries(mine, current, known, first=scan is None)
        if foreign:
            raise KeyDirectoryError(
                "foreign_key_for_me",
                f"the key directory lists keys for {username} that this client does not hold "
                f"(log entries {', '.join(str(e.index) for e in foreign)})",
            )
        known |= {f"{e.enc_fingerprint.hex()}:{e.sign_fingerprint.hex()}" for e in mine}
        self.self_scans[username] = SelfScan(
            head.tree_size, [e2e.b64encode(h) for h in frontier], sorted(known)
        )
        self.save()
        return mine

    def keep_head(self, head: transparency.SignedTreeHead) -> None:
        """Remember the latest head checked."""
        if self.last_head != head:
            self.last_head = head
            self.save()

    def save(self) -> None:
        """Write the view to ``path`` (atomically), if it has one."""
        if self.path is None:
            return
        datadir.replace_private_file(self.path, json.dumps(self._to_json(), indent=1).encode())

    def _to_json(self) -> dict[str, Any]:
        key = self.directory_key
        data: dict[str, Any] = {
            "v": 1,
            "directory_key": e2e.b64encode(key) if key else None,
            "last_head": self.last_head.to_json() if self.last_head else None,
            "contacts": {name: dataclasses.asdict(pin) for name, pin in self.contacts.items()},
        }
        if self.self_scans:  # public too: sizes, subtree hashes, my fingerprints
            data["self_scans"] = {
                name: dataclasses.asdict(scan) for name, scan in self.self_scans.items()
            }
        return data

    def _load(self, data: dict[str, Any]) -> None:
        key, head = data.get("directory_key"), data.get("last_head")
        self.directory_key = e2e.b64decode(key) if key else None
        self.last_head = transparency.SignedTreeHead.from_json(head) if head else None
        self.contacts = {name: ContactPin(**pin) for name, pin in data["contacts"].items()}
        scans = data.get("self_scans") or {}
        self.self_scans = {name: SelfScan(**scan) for name, scan in scans.items()}
