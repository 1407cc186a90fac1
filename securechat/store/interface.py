"""The store's interface: what the services may ask of the database, whichever engine it is.

One Protocol per domain, grouped by :class:`Store`. A backend (``securechat/store/sqlite``)
implements them structurally; ``securechat.store.create_store`` returns one typed as
:class:`Store`, so mypy checks every backend against this module. Callers import these names
and the records (``securechat/store/records.py``), never a backend's classes.

Every write a method makes is committed before it returns; a method whose work spans several
statements does it in one transaction.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Protocol, runtime_checkable

from securechat.store.records import (
    BacklogBounds,
    Change,
    CheckpointStats,
    ClusterIdentity,
    CommitResult,
    CommitStats,
    ContactState,
    ConversationRow,
    DeleteOutcome,
    GroupHistoryItem,
    GroupMarkOutcome,
    GroupMembership,
    GroupSummary,
    GroupView,
    GroupWriteOutcome,
    HistoryItem,
    LogEntry,
    MarkStatus,
    NewEntry,
    NewGroupPost,
    NewKeys,
    NewMark,
    NewMessage,
    NewPassword,
    NewUser,
    OperatorAction,
    RecoveryRecord,
    Session,
    User,
    UserSummary,
)


@runtime_checkable
class AccountStore(Protocol):
    """Users: registration, lookup by name, search."""

    async def add_user(self, user: NewUser, now_ms: int) -> int:
        """Insert a user and its first key log entry in one transaction; return its id.

        Raises UsernameTaken if the name exists (the database's UNIQUE constraint settles two
        registrations racing for one name).
        """
        ...

    async def user_by_name(self, username: str) -> User | None:
        """The user with this (already normalised) name."""
        ...

    async def update_auth_hash(self, user_id: int, old_hash: str, auth_hash: str) -> bool:
        """Store a rehashed auth_key (argon2 parameters changed) if the stored hash is still
        ``old_hash`` (compare and set); False if a password change or recovery replaced it."""
        ...

    async def count_users(self) -> int:
        """How many accounts exist."""
        ...

    async def search_users(self, query: str, limit: int, exclude: str) -> list[str]:
        """Usernames containing ``query`` (taken literally), without ``exclude``, ranked: the
        exact name, then those starting with it, then the rest, each rank in order."""
        ...

    # Password change, recovery key and key reset (issue 12, items 1-2; accounts/service.py).
    # Each is one transaction, and ends sessions in it: their ids are returned so the caller
    # can close their sockets (sessions.notify_session_ended).

    async def change_password(
        self,
        user_id: int,
        expected_hash: str,
        password: NewPassword,
        keep_session_id: str | None,
        now_ms: int,
    ) -> list[str] | None:
        """Replace the user's salt, iterations, auth hash and key backup if its auth hash is
        still ``expected_hash``, and end every live session but ``keep_session_id``; return the
        ids ended, or None (nothing changed) if the hash was not ``expected_hash``."""
        ...

    async def recovery(self, user_id: int) -> RecoveryRecord | None:
        """The user's recovery key record, if one was set."""
        ...

    async def set_recovery(
        self, user_id: int, auth_hash: str, key_backup: str, now_ms: int
    ) -> None:
        """Set (or replace) the user's recovery key; a replaced key's hash becomes
        ``previous_hash``."""
        ...

    async def recover(
        self,
        user_id: int,
        expected_hash: str,
        password: NewPassword,
        new_recovery: tuple[str, str],
        now_ms: int,
    ) -> list[str] | None:
        """Use the recovery key whose hash is ``expected_hash``: replace the password as
        :meth:`change_password` does, replace the recovery key with ``new_recovery`` (its
        hash, its backup), and end every live session; return their ids, or None (nothing
        changed) if the stored key is no longer ``expected_hash`` (used meanwhile)."""
        ...

    async def reset_keys(
        self,
        username: str,
        keys: NewKeys,
        password: NewPassword | None,
        keep_session_id: str | None,
        now_ms: int,
    ) -> list[str]:
        """Publish new keys (and with ``password``, a new password) for the user, log them in
        the key directory, drop the recovery key (it opens the old keys only), and end every
        live session but ``keep_session_id``; return the ids ended. NotFound if no such user."""
        ...


@runtime_checkable
class SessionStore(Protocol):
    """Sessions, by their hashed id; see securechat/accounts/sessions.py."""

    async def add_session(self, session: Session, auth_hash: str | None = None) -> bool:
        """Insert a new session (its ``username`` and ``revoked_at`` are not stored). Given
        the ``auth_hash`` a login verified, only in the same statement as the check that the
        user still has that hash and is not disabled (a password change, recovery, disable
        or deletion that committed after the check wins); whether a row was inserted."""
        ...

    async def session_by_id(self, session_id: str) -> Session | None:
        """The session with this hashed id, revoked or not."""
        ...

    async def unrevoked_sessions(self, session_ids: Sequence[str]) -> set[str]:
        """Which of these hashed ids name a stored session not revoked (one query)."""
        ...

    async def touch(self, session_id: str, now_ms: int) -> None:
        """Record activity on a live session (for the idle timeout)."""
        ...

    async def revoke(self, session_id: str, now_ms: int) -> None:
        """End one session (no change if it already ended)."""
        ...

    async def revoke_others(self, user_id: int, keep_session_id: str, now_ms: int) -> list[str]:
        """End every live session of a user but one; return the ids ended."""
        ...

    async def revoke_by_public_id(self, user_id: int, public_id: str, now_ms: int) -> str | None:
        """End the user's session with this public id; return its id, or None if none was live."""
        ...

    async def live_sessions(self, user_id: int, now_ms: int, idle_ms: int) -> list[Session]:
        """The user's sessions that are neither revoked nor expired, newest first."""
        ...

    async def count_active(self, now_ms: int, idle_ms: int) -> int:
        """Sessions not revoked and not expired, across all users."""
        ...

    async def prune_oldest_beyond(self, user_id: int, keep: int, now_ms: int) -> list[str]:
        """Revoke the user's oldest live sessions beyond ``keep``; return the ids revoked."""
        ...

    async def purge_dead(self, before_ms: int, idle_ms: int) -> int:
        """Delete the sessions that ended (revoked, expired, idle) before ``before_ms``; return
        how many."""
        ...


@runtime_checkable
class MessageStore(Protocol):
    """Messages, their receipts and conversations, all on one sequence of positions."""

    async def last_seq(self) -> int:
        """The last position handed out."""
        ...

    async def commit(
        self,
        sends: Sequence[NewMessage],
        marks: Sequence[NewMark],
        now_ms: int,
        bounds: BacklogBounds | None = None,
    ) -> CommitResult:
        """Store a batch of sends and marks in one transaction; the result's ``last_seq`` is
        the last position handed out once it committed.

        Positions are drawn from the stored ``chat_sequence`` row inside the transaction,
        under a lock that orders every commit drawing them (SQLite's one writer, PostgreSQL's
        row lock), so they become visible in the order drawn: a reader following
        ``changes_after`` never passes a position that commits later.

        The caller must only believe the result once this returns: the write has then been
        committed. A resend of a (sender, client id) already stored, by any node, is reported
        with its first position and not stored again (a position it drew stays unused).

        Under the same lock the store keeps what each sender has left undelivered (messages
        per recipient, envelope bytes over all), so ``bounds`` hold across nodes: a send past
        either is refused ``queue_full`` and takes no position; a resend of a stored id is
        settled before counting; a message's first delivering mark frees its room. Without
        ``bounds`` (tools seeding a history) the counts are kept but not checked.
        """
        ...

    async def delete_message(
        self, sender_id: int, client_id: str, sent_since_ms: int
    ) -> DeleteOutcome:
        """Remove the sender's stored message ``client_id`` (delete for everyone), in one
        transaction under the commits' lock: refused ``unknown_message`` when the sender has
        no such message stored (someone else's, never sent, already deleted) and
        ``delete_expired`` when it was stored before ``sent_since_ms``. Its backlog count,
        the recipient's unread count and both users' stream heads follow."""
        ...

    async def undelivered(self) -> list[tuple[int, str, int, int]]:
        """Per (sender id, recipient's name): messages no device of the recipient has received
        yet, and their envelope bytes, computed from the messages themselves. Pairs only: a
        sender's ``undelivered_senders`` bytes are these plus its group messages that no other
        member has marked delivered yet (``GroupStore.post``)."""
        ...

    async def changes_after(
        self, user_id: int, after: int, limit: int, max_bytes: int
    ) -> tuple[list[Change], bool]:
        """Messages to or from the user and receipts for their messages, ``pos > after``, in
        order: at most ``limit`` items and, past the first, about ``max_bytes`` of envelopes.

        The flag says whether more may follow (the batch was cut by ``limit`` or bytes).
        """
        ...

    async def head(self, user_id: int) -> int:
        """The highest position ``changes_after`` would show the user (0 if none): a socket
        whose last position is below it has missed something (chat/resync.py)."""
        ...

    async def history(
        self, user_id: int, peer_id: int, before: int, limit: int
    ) -> list[HistoryItem]:
        """The conversation between two users, ``seq < before``, newest first."""
        ...

    async def conversations(self, user_id: int, before: int, limit: int) -> list[ConversationRow]:
        """The user's conversations with ``last_seq < before``, most recent first."""
        ...

    async def peer_names(self, username: str, limit: int) -> list[str]:
        """The people ``username`` has conversations with and shares presence with (both have
        accepted the other: ``ContactStore.sharing``), most recent first."""
        ...


@runtime_checkable
class DirectoryStore(Protocol):
    """The key directory's append-only log (RFC 9162 leaves: securechat/directory)."""

    async def entries(self, start: int, end: int) -> list[LogEntry]:
        """The entries with ``start <= index < end``, in order."""
        ...

    async def latest_entry(self, user: bytes, below: int) -> LogEntry | None:
        """The newest entry of the user with this hash among the first ``below`` entries."""
        ...

    async def replace_keys(
        self,
        username: str,
        enc_public_key: bytes,
        sign_public_key: bytes,
        key_backup: str,
        now_ms: int,
    ) -> LogEntry:
        """Publish new keys for an existing user (a key reset) and log them, in one
        transaction; raise NotFound if there is no such user."""
        ...

    async def record_root(self, tree_size: int, root: bytes, now_ms: int) -> bytes:
        """Record the Merkle root of a tree size a head is signed for, unless one is recorded;
        return the one recorded. The first node to sign a size wins (the primary key settles
        a race); any node that computes another root for it has found equivocation."""
        ...

    async def latest_root(self, at_most: int) -> tuple[int, bytes] | None:
        """The largest recorded tree size ``<= at_most`` and its root, or None."""
        ...


@runtime_checkable
class IdentityStore(Protocol):
    """The identity of the nodes sharing this database (securechat/directory/identity.py)."""

    async def claim_identity(self, identity: ClusterIdentity, now_ms: int) -> ClusterIdentity:
        """Record ``identity`` if the database holds none yet; return the one it holds. The
        first node to start wins (a one-row table's primary key settles a race)."""
        ...


@runtime_checkable
class LifecycleStore(Protocol):
    """An account's end and the operator's hold on it (securechat/accounts/lifecycle.py): deletion
    with its tombstone and the name's quarantine, disabling, and the operator's audit trail."""

    async def delete_user(self, username: str, quarantine_until_ms: int, now_ms: int) -> list[str]:
        """In one transaction: log the user's tombstone in the key log, keep the name from
        registration until ``quarantine_until_ms``, and remove the user with everything that
        refers to it (sessions, messages to and from it, conversations, backlog counts; the
        senders' undelivered bytes to it are given back). Return the ids of the sessions that
        were not revoked; NotFound if there is no such user."""
        ...

    async def quarantine_until(self, username: str, now_ms: int) -> int | None:
        """When the name becomes free again, if a deleted account holds it now; else None."""
        ...

    async def set_disabled(self, username: str, disabled: bool, now_ms: int) -> list[str]:
        """Disable (and revoke every session of) or enable the user; return the ids of the
        sessions revoked. NotFound if there is no such user."""
        ...

    async def is_disabled(self, user_id: int) -> bool:
        """Whether an operator has disabled the account."""
        ...

    async def withdraw_keys(self, username: str, now_ms: int) -> list[str]:
        """Log a withdrawal for the user's keys (an entry with both fingerprints zero, as a
        tombstone) and end every live session; return their ids. The account stays: its owner
        publishes new keys at the next login. NotFound if there is no such user."""
        ...

    async def revoke_all(self, username: str, now_ms: int) -> list[str]:
        """End every live session of the user; return their ids. NotFound if no such user."""
        ...

    async def users(self, after: str, limit: int, now_ms: int) -> list[UserSummary]:
        """Accounts whose name sorts after ``after``, in order, at most ``limit``."""
        ...

    async def user_summary(self, username: str, now_ms: int) -> UserSummary | None:
        """One account's summary, or None."""
        ...

    async def record_action(self, action: str, username: str, detail: str, now_ms: int) -> int:
        """Append a row to the operator's audit trail; return its id. Ids become visible in
        the order they are drawn (a reader following ``actions_after`` misses none)."""
        ...

    async def actions_after(self, after_id: int, limit: int) -> list[OperatorAction]:
        """The audit trail's rows with ``id > after_id``, in order, at most ``limit``."""
        ...

    async def last_action_id(self) -> int:
        """The id of the newest row of the audit trail (0 if none)."""
        ...


@runtime_checkable
class ContactStore(Protocol):
    """Who may message whom (issue 12, item 5; securechat/chat/contacts.py): each owner's
    decision about a peer, "accepted" or "blocked"; no row makes the peer a stranger whose
    messages are requests. ``MessageStore.commit`` reads the blocks and records "accepted"
    for every sender it stores a message from, under its own lock."""

    async def set_state(
        self, owner_id: int, peer_id: int, state: ContactState, now_ms: int
    ) -> None:
        """Record the owner's decision about the peer (replacing any earlier one)."""
        ...

    async def unblock(self, owner_id: int, peer_id: int) -> bool:
        """Forget the owner's block of the peer (a stranger again); whether there was one."""
        ...

    async def dismiss(self, owner_id: int, peer_id: int) -> bool:
        """Delete the request: the owner's conversation with a peer they have decided nothing
        about leaves their list (the messages stay, the sender's history holds them);
        whether there was one."""
        ...

    async def relations(
        self, owner_id: int, peers: Sequence[str]
    ) -> dict[str, tuple[ContactState | None, ContactState | None]]:
        """For each of ``peers`` that exists: (the owner's state for them, theirs for the owner)."""
        ...

    async def sharing(self, user: str, peer: str) -> bool:
        """Whether both have accepted the other: only then are presence and typing shared."""
        ...

    async def listed(self, owner_id: int, state: ContactState, limit: int) -> list[str]:
        """The peers the owner has given ``state``, most recently decided first."""
        ...

    async def requests(self, owner_id: int, before: int, limit: int) -> list[ConversationRow]:
        """The owner's conversations with peers they have decided nothing about (requests),
        ``last_seq < before``, most recent first."""
        ...


@runtime_checkable
class GroupStore(Protocol):
    """Groups (issue 13): membership chains, and the messages and key distributions posted to
    them. Every write takes the commits' lock (the one ``MessageStore.commit`` draws positions
    under), draws one position from the same sequence, enters it into the streams of the
    users it is for (``changes_after`` shows it to them, ``head`` moves) and returns the
    position each of those streams had before it, as a pairwise commit does."""

    async def append_entry(self, entry: NewEntry, now_ms: int) -> GroupWriteOutcome:
        """Append a membership entry (index 0: create the group) and replace the member list.
        Refused ``stale_head`` when the stored head is no longer ``entry.prev_head``,
        ``group_exists`` for a creation whose id is taken, ``unknown_group`` for a change to
        a group that does not exist, ``too_many_groups`` when someone added would be in more
        than ``entry.groups_per_user_max`` groups. The entry enters the streams of the
        members after it and of ``entry.removed``."""
        ...

    async def post(self, post: NewGroupPost, now_ms: int) -> GroupWriteOutcome:
        """Store a group message (entering every current member's stream, the sender's too)
        or a key distribution (the streams of the recipients it names and of the sender).
        A resend of a (sender, client id) already posted answers the first copy's position
        and ts, ``created`` False, whatever else it says. Refused ``unknown_group`` when the
        sender is not a member (or no such group), ``stale_head`` when ``post.head`` is not
        the stored head, ``not_a_member`` when a distribution names someone who is not a
        member, or the sender, ``queue_full`` when a message would take its sender's
        undelivered bytes past ``post.bytes_per_sender_max``. A post does not enter the
        stream of a member who blocked its sender."""
        ...

    async def mark(
        self, reader_id: int, seq: int, status: MarkStatus, now_ms: int
    ) -> GroupMarkOutcome:
        """A member marks the group message at position ``seq`` delivered or read. None when
        it changes nothing (already marked so far); ``unknown_message`` when ``seq`` is no
        group message in the reader's stream, or the reader sent it."""
        ...

    async def group(self, group_id: bytes, member_id: int | None = None) -> GroupView | None:
        """The group's chain and member list (gone members included), read in one snapshot;
        None when there is no such group, or ``member_id`` is given and is not a member."""
        ...

    async def membership(self, group_id: bytes, user_id: int) -> GroupMembership | None:
        """The group's head, entry count and member count (gone members included) if
        ``user_id`` is a member, without its chain; else None."""
        ...

    async def groups_of(self, user_id: int, limit: int) -> list[GroupSummary]:
        """The groups the user is a member of, the latest position first."""
        ...

    async def history(
        self, user_id: int, group_id: bytes, before: int, limit: int
    ) -> list[GroupHistoryItem]:
        """The group's messages in the user's stream (since they joined), ``seq < before``,
        newest first."""
        ...


@runtime_checkable
class Store(Protocol):
    """One database, by domain, and its lifetime: open before use, close once."""

    @property
    def accounts(self) -> AccountStore: ...

    @property
    def sessions(self) -> SessionStore: ...

    @property
    def messages(self) -> MessageStore: ...

    @property
    def directory(self) -> DirectoryStore: ...

    @property
    def contacts(self) -> ContactStore: ...

    @property
    def identity(self) -> IdentityStore: ...

    @property
    def lifecycle(self) -> LifecycleStore: ...

    @property
    def groups(self) -> GroupStore: ...

    @property
    def commit_stats(self) -> CommitStats:
        """The write transactions committed so far, for /metrics."""
        ...

    @property
    def checkpoint_stats(self) -> CheckpointStats | None:
        """The checkpoints the store ran itself, or None where the engine runs its own."""
        ...

    async def open(self) -> None:
        """Connect, bring the schema up to date and start the store's own tasks."""
        ...

    async def close(self) -> None:
        """Finish the writes already queued, then stop and disconnect."""
        ...

    async def claim_serving(self) -> None:
        """Claim the database for this serving process, before ``open``: SQLite's is served by
        one process and a second one's claim raises ``DatabaseInUse``; PostgreSQL's by any
        number of nodes. Tools that open the database beside a server do not claim it."""
        ...

    async def ping(self) -> None:
        """A trivial read, for the health check; raises if the database does not answer."""
        ...
