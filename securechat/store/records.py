"""What the store takes and returns, the same whichever backend holds it.

Plain frozen dataclasses and Literals: no backend's row or connection type leaks through them,
so the services, the views and the tests speak these and never a backend's classes.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Final, Literal

from securechat.runtime import Timings

# --- Accounts and sessions ----------------------------------------------------------------------


@dataclass(frozen=True)
class NewUser:
    """What registration stores. ``auth_hash`` is the argon2id hash; nothing here is secret."""

    username: str
    salt: bytes
    iterations: int
    auth_hash: str
    enc_public_key: bytes
    sign_public_key: bytes
    key_backup: str


@dataclass(frozen=True)
class User:
    """A stored account: its name, its keys and the argon2id hash its login is checked with."""

    id: int
    username: str
    salt: bytes
    iterations: int
    auth_hash: str
    enc_public_key: bytes
    sign_public_key: bytes
    key_backup: str
    created_at: int
    keys_updated_at: int


@dataclass(frozen=True)
class Session:
    """A row of the sessions table joined with its user's name."""

    id: str
    public_id: str
    user_id: int
    username: str
    created_at: int
    last_seen_at: int
    expires_at: int
    revoked_at: int | None
    user_agent: str
    address: str


@dataclass(frozen=True)
class UserSummary:
    """What the operator's ``users list`` and ``users show`` print about an account: no keys,
    no hashes. ``disabled_at`` is None for an account that may log in."""

    id: int
    username: str
    created_at: int
    keys_updated_at: int
    disabled_at: int | None
    live_sessions: int


@dataclass(frozen=True)
class OperatorAction:
    """One row of the operator's audit trail (``python -m securechat users ...``)."""

    id: int
    at_ms: int
    action: str
    username: str
    detail: str


@dataclass(frozen=True)
class NewPassword:
    """What a password change stores (accounts/service.py): the new PBKDF2 salt and iterations,
    the argon2id hash of the new ``auth_key``, and the key backup re-wrapped under the new
    ``wrap_key``. Nothing here is secret."""

    salt: bytes
    iterations: int
    auth_hash: str
    key_backup: str


@dataclass(frozen=True)
class NewKeys:
    """What a key reset publishes: both public keys and the backup of their private halves."""

    enc_public_key: bytes
    sign_public_key: bytes
    key_backup: str


@dataclass(frozen=True)
class RecoveryRecord:
    """An account's recovery key, as stored: the argon2id hash of the ``recovery_auth`` it
    derives, the hash of the key it replaced (so a replayed used key is told apart from a
    wrong one), and the second copy of the key backup it opens."""

    auth_hash: str
    previous_hash: str | None
    key_backup: str
    created_at: int


# --- The key directory's log --------------------------------------------------------------------


@dataclass(frozen=True)
class LogEntry:
    """One row of the log: a user (by hash) published these keys (by fingerprint) at this time."""

    index: int
    timestamp_ms: int
    user_hash: bytes
    enc_fingerprint: bytes
    sign_fingerprint: bytes


@dataclass(frozen=True)
class ClusterIdentity:
    """What every node of one database must hold, by fingerprint (never the secrets): the
    directory signing key's (SHA-256 of its SPKI, hex) and the server secret's (HMAC, hex)."""

    directory_fingerprint: str
    secret_fingerprint: str


# --- Messages, receipts and conversations -------------------------------------------------------

MarkStatus = Literal["delivered", "read"]
ChangeKind = Literal["message", "delivered", "read", "group_message", "group_keys", "group_entry"]

# Why a send or a mark was not applied: client-facing error codes (docs/protocol.md), which
# the error frame carries as they are.
SendRefusal = Literal["unknown_recipient", "queue_full"]
MarkRefusal = Literal["unknown_message"]
UNKNOWN_RECIPIENT: Final[SendRefusal] = "unknown_recipient"
QUEUE_FULL: Final[SendRefusal] = "queue_full"
UNKNOWN_MESSAGE: Final[MarkRefusal] = "unknown_message"


@dataclass(frozen=True, slots=True)
class BacklogBounds:
    """What a sender may leave stored that no device of its recipients has received yet:
    messages per recipient, and envelope bytes to all recipients together."""

    per_pair_max: int
    bytes_per_sender_max: int


@dataclass(frozen=True, slots=True)
class NewMessage:
    """A send to store: ``recipient`` is a canonical username, ``envelope`` canonical JSON."""

    sender_id: int
    client_id: str
    recipient: str
    envelope: str


@dataclass(frozen=True, slots=True)
class Stored:
    """Where a send ended up; ``created`` is False for a resend of an id already stored.

    A new message enters two users' streams (what ``changes_after`` shows each): the
    positions before it there are ``prev_recipient`` and ``prev_sender`` (0: none; a resend
    takes no position and has neither)."""

    seq: int
    ts: int
    created: bool
    prev_recipient: int = 0
    prev_sender: int = 0
    # The recipient blocked the sender: acknowledged like a stored message, stored for no one
    # (its position stays unused; docs/security.md "Contacts and blocking").
    withheld: bool = False


@dataclass(frozen=True, slots=True)
class NewMark:
    """The recipient of message ``seq`` says it was delivered to (or read by) them."""

    reader_id: int
    seq: int
    status: MarkStatus


@dataclass(frozen=True, slots=True)
class Receipt:
    """A new receipt at position ``seq`` for message ``message_seq``, to tell ``sender``."""

    seq: int
    message_seq: int
    client_id: str
    status: MarkStatus
    sender: str
    ts: int
    # When this mark is the first to deliver the message (a read implies delivered): the
    # sender's id and the envelope's length in bytes, which leave the sender's backlog.
    delivered: tuple[int, int] | None = None
    # The position before this one in ``sender``'s stream (0: none).
    prev: int = 0


# A send is Stored or refused (UNKNOWN_RECIPIENT, QUEUE_FULL); a mark makes a Receipt,
# changes nothing (None: already marked) or is refused (UNKNOWN_MESSAGE).
SendOutcome = Stored | SendRefusal
MarkOutcome = Receipt | MarkRefusal | None


# Deleting a message for everyone (MessageStore.delete_message): refused as unknown (not a
# stored message of the sender's: someone else's, never sent, or already deleted) or as past
# the window in which its sender may delete it.
DeleteRefusal = Literal["unknown_message", "delete_expired"]
DELETE_EXPIRED: Final[DeleteRefusal] = "delete_expired"


@dataclass(frozen=True, slots=True)
class Deleted:
    """A message removed from the server: it was at ``seq``, sent to ``recipient``."""

    seq: int
    recipient: str


DeleteOutcome = Deleted | DeleteRefusal


@dataclass(frozen=True, slots=True)
class CommitResult:
    """The outcome of each send and mark of a batch, in order, and the last seq handed out."""

    last_seq: int
    sends: list[SendOutcome]
    marks: list[MarkOutcome]


@dataclass(frozen=True, slots=True)
class Change:
    """One item of a sync: a message, or a receipt for a message I sent, at position ``pos``."""

    pos: int
    kind: ChangeKind
    seq: int
    client_id: str
    sender: str
    recipient: str
    ts: int
    envelope: str | None
    # Group items (issue 13): the group's hex id, the membership head a post was sent under
    # (b64), and an entry's index in its chain. For a group_entry, ``envelope`` is the entry
    # (b64) and client_id is empty; for group_keys it is the reader's own pairwise envelope.
    group: str = ""
    head: str = ""
    index: int = -1


@dataclass(frozen=True, slots=True)
class HistoryItem:
    """A message of a conversation with its delivery state."""

    seq: int
    client_id: str
    sender: str
    recipient: str
    ts: int
    envelope: str
    delivered_at: int | None
    read_at: int | None


@dataclass(frozen=True, slots=True)
class ConversationRow:
    """One of my conversations: the other person, the latest seq in it, my unread count."""

    peer: str
    last_seq: int
    unread: int


# Where I stand with someone (issue 12, item 5): "accepted" (I wrote to them or accepted their
# request), "blocked" (their messages to me are withheld); no row: a stranger.
ContactState = Literal["accepted", "blocked"]


# --- Groups (issue 13; securechat/groups/, docs/protocol.md "Groups") ---------------------------

# Why the store refuses a group write, decided under the commits' lock.
GroupRefusal = Literal[
    "unknown_group", "stale_head", "group_exists", "too_many_groups", "not_a_member", "queue_full"
]
UNKNOWN_GROUP: Final[GroupRefusal] = "unknown_group"
STALE_HEAD: Final[GroupRefusal] = "stale_head"
GROUP_EXISTS: Final[GroupRefusal] = "group_exists"
TOO_MANY_GROUPS: Final[GroupRefusal] = "too_many_groups"
# A key distribution names someone who is not another member of the group.
NOT_ANOTHER_MEMBER: Final[GroupRefusal] = "not_a_member"
# A group message past its sender's undelivered byte bound (as a pair send's ``queue_full``).
GROUP_QUEUE_FULL: Final[GroupRefusal] = "queue_full"
GroupPostKind = Literal["message", "keys"]


@dataclass(frozen=True, slots=True)
class GroupView:
    """A group as the server holds it, read in one snapshot: its chain, in order, and the
    member list the service derived from it when each entry was appended (names sorted),
    those whose accounts were deleted since included; ``gone`` names them."""

    group_id: bytes
    head: bytes
    entries: list[bytes]
    members: list[str]
    admins: list[str]
    gone: list[str] = field(default_factory=list)


@dataclass(frozen=True, slots=True)
class GroupMembership:
    """What a change or a history page needs to know of a group one is a member of, without
    its chain: the head, the number of entries and of members (the gone ones included), and
    the entries' bytes together."""

    head: bytes
    entries: int
    members: int
    chain_bytes: int


@dataclass(frozen=True, slots=True)
class NewEntry:
    """A membership entry to append at chain index ``index``, already checked by the service
    against the chain as stored when it read ``prev_head``.

    ``members`` and ``admins`` are the whole lists after the change; ``removed`` are those the
    change takes out (a leave: its actor), whose streams get the entry too. The store appends
    only if the stored head is still ``prev_head`` (32 zero bytes for a creation, which also
    needs the id unused), and only if no one added would then be in more than
    ``groups_per_user_max`` groups."""

    group_id: bytes
    index: int
    prev_head: bytes
    entry: bytes
    head: bytes
    actor_id: int
    members: Sequence[str]
    admins: Sequence[str]
    removed: Sequence[str]
    groups_per_user_max: int


@dataclass(frozen=True, slots=True)
class NewGroupPost:
    """A group message (``envelope``: the group wire object, canonical JSON) or a sender-key
    distribution (``keys``: recipient name to that recipient's pairwise envelope, canonical
    JSON each; ``envelope`` is then the canonical JSON of the whole map, as sent).

    A message's envelope counts in its sender's undelivered bytes until another member marks
    it delivered; past ``bytes_per_sender_max`` it is refused ``queue_full``."""

    sender_id: int
    client_id: str
    group_id: bytes
    head: bytes
    kind: GroupPostKind
    envelope: str
    keys: Mapping[str, str] | None = None
    bytes_per_sender_max: int = 2**62


@dataclass(frozen=True, slots=True)
class GroupStored:
    """A group write committed at position ``seq``: for each user whose stream it entered,
    the position before it there (0: none). ``created`` is False for a resend of a post's id
    already stored (then ``prevs`` is empty: nothing new to fan out)."""

    seq: int
    ts: int
    created: bool
    prevs: Mapping[str, int]


@dataclass(frozen=True, slots=True)
class GroupReceipt:
    """A member's mark of a group message moved its counts: tell ``sender``."""

    group_id: bytes
    client_id: str
    sender: str
    delivered: int
    read: int
    members: int


@dataclass(frozen=True, slots=True)
class GroupSummary:
    """One of my groups: its id, head, member count, latest position and my unread count."""

    group_id: bytes
    head: bytes
    members: int
    last_seq: int
    unread: int


@dataclass(frozen=True, slots=True)
class GroupHistoryItem:
    """A group message with how many of the others have received and read it."""

    seq: int
    client_id: str
    sender: str
    head: bytes
    ts: int
    envelope: str
    delivered: int
    read: int
    members: int


GroupWriteOutcome = GroupStored | GroupRefusal
GroupMarkOutcome = GroupReceipt | MarkRefusal | None


# --- What /metrics reads ------------------------------------------------------------------------


@dataclass
class CommitStats:
    """The store's write transactions, counted as they commit (every backend keeps these)."""

    transactions: int = 0
    jobs: int = 0
    last_batch: int = 0
    largest_batch: int = 0
    # BEGIN to the end of COMMIT, fsync included, of every transaction.
    commit_seconds: Timings = field(default_factory=Timings)

    def record(self, size: int, seconds: float) -> None:
        """One transaction of ``size`` write jobs committed in ``seconds``."""
        self.transactions += 1
        self.jobs += size
        self.last_batch = size
        self.largest_batch = max(self.largest_batch, size)
        self.commit_seconds.observe(seconds)


@dataclass
class CheckpointStats:
    """Checkpoints the store runs itself to keep the engine's write-ahead log short.

    An embedded engine's (SQLite's) store runs them; a database server checkpoints on its own,
    and its store reports none.
    """

    checkpoints: int = 0
    seconds_total: float = 0.0
    # Frames in the write-ahead log at the latest checkpoint, and how many it could not copy
    # yet (a reader still needed them): the log's size is bounded while these stay small.
    wal_frames: int = 0
    wal_frames_left: int = 0


__all__ = [
    "DELETE_EXPIRED",
    "GROUP_EXISTS",
    "GROUP_QUEUE_FULL",
    "NOT_ANOTHER_MEMBER",
    "QUEUE_FULL",
    "STALE_HEAD",
    "TOO_MANY_GROUPS",
    "UNKNOWN_GROUP",
    "UNKNOWN_MESSAGE",
    "UNKNOWN_RECIPIENT",
    "BacklogBounds",
    "Change",
    "ChangeKind",
    "CheckpointStats",
    "ClusterIdentity",
    "CommitResult",
    "CommitStats",
    "ContactState",
    "ConversationRow",
    "DeleteOutcome",
    "DeleteRefusal",
    "Deleted",
    "GroupHistoryItem",
    "GroupMarkOutcome",
    "GroupMembership",
    "GroupPostKind",
    "GroupReceipt",
    "GroupRefusal",
    "GroupStored",
    "GroupSummary",
    "GroupView",
    "GroupWriteOutcome",
    "HistoryItem",
    "LogEntry",
    "MarkOutcome",
    "MarkRefusal",
    "MarkStatus",
    "NewEntry",
    "NewGroupPost",
    "NewKeys",
    "NewMark",
    "NewMessage",
    "NewPassword",
    "NewUser",
    "OperatorAction",
    "Receipt",
    "RecoveryRecord",
    "SendOutcome",
    "SendRefusal",
    "Session",
    "Stored",
    "User",
    "UserSummary",
]
