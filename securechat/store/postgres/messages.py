"""The chat on PostgreSQL: every SQL statement about messages, receipts and conversations.

The same results as the SQLite backend (securechat/store/sqlite/messages.py), whose batch logic
it shares (securechat/store/batch.py); what differs is where positions come from. Several nodes
commit at once here, so each commit draws its positions from the ``chat_sequence`` row, locked
FIRST in its transaction and held to its commit: that lock orders every commit that hands out
positions, so they become visible in the order they were drawn and a reader following
``changes_after(user, after)`` never passes a position that commits later (issue 11, item 2).
A SEQUENCE would hand numbers out in call order, not commit order, and let a reader skip a row.
The same lock makes the undelivered counts exact across nodes: each commit reads, checks and
changes them after taking it.

Each batch goes to the database as a few statements taking arrays (``unnest``), whatever its
size.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Final

import asyncpg

from securechat.store.batch import (
    Backlog,
    MarkState,
    MessageRow,
    Positions,
    StreamEntry,
    accepted_by_sending,
    apply_marks,
    backlog_changes,
    blocked_sends,
    change_of,
    contact_keys,
    conversation_moves,
    link_streams,
    move_heads,
    number_sends,
    over_bounds,
    settle_duplicates,
    stream_entries,
)
from securechat.store.postgres.database import Database
from securechat.store.records import (
    DELETE_EXPIRED,
    UNKNOWN_MESSAGE,
    BacklogBounds,
    Change,
    ChangeKind,
    CommitResult,
    ConversationRow,
    Deleted,
    DeleteOutcome,
    HistoryItem,
    MarkOutcome,
    NewMark,
    NewMessage,
    SendOutcome,
)

_KINDS: Final[tuple[ChangeKind, ...]] = (
    "message",
    "delivered",
    "read",
    "group_message",
    "group_keys",
    "group_entry",
)


class MessageStore:
    """Named queries over ``messages``, ``conversations``, ``chat_sequence`` and the
    undelivered counts."""

    def __init__(self, db: Database) -> None:
        self.db = db

    async def last_seq(self) -> int:
        """The last position handed out (committed)."""
        value = await self.db.fetch_value("SELECT last FROM chat_sequence WHERE id = 1")
        return int(value) if value is not None else 0

    async def commit(
        self,
        sends: Sequence[NewMessage],
        marks: Sequence[NewMark],
        now_ms: int,
        bounds: BacklogBounds | None = None,
    ) -> CommitResult:
        """Store a batch of sends and marks in one transaction, its positions drawn from the
        ``chat_sequence`` row under its lock.
        Under the same lock the undelivered counts are checked against ``bounds`` and kept,
        and the users' stream heads, which give each new position its ``prev``, are moved.

        Retried once on a serialization failure or deadlock, then ``Unavailable``.
        """

        async def job(connection: asyncpg.Connection) -> CommitResult:
            # FIRST: every later read sees all the commits that drew before this one.
            last = int(await connection.fetchval(_LOCK_SEQUENCE))
            positions = Positions(last)
            send_outcomes, created = await _store_sends(
                connection, sends, positions, now_ms, bounds
            )
            mark_outcomes, states = await _apply_marks(connection, marks, positions, now_ms)
            await _write_backlog(connection, backlog_changes(created, marks, mark_outcomes))
            entries = stream_entries(created, mark_outcomes, states)
            if entries:
                heads = await _stream_heads(connection, entries)
                send_outcomes, mark_outcomes = link_streams(
                    entries, heads, send_outcomes, created, mark_outcomes, states
                )
                await connection.execute(_SET_HEADS, *_columns(sorted(heads.items()), 2))
            if positions.value != last:
                await connection.execute(_SET_SEQUENCE, positions.value)
            return CommitResult(positions.value, send_outcomes, mark_outcomes)

        return await self.db.write(job)

    async def delete_message(
        self, sender_id: int, client_id: str, sent_since_ms: int
    ) -> DeleteOutcome:
        """Remove the sender's stored message ``client_id`` (delete for everyone), with its
        receipts, its place in the backlog and unread counts, and its stream positions, under
        the commits' lock (no commit moves a head or a count meanwhile). An unknown or expired
        id is answered from a plain read first: it never waits for, nor holds up, a commit."""
        sent = await self.db.fetch_value(_DELETABLE_TS, sender_id, client_id)
        if sent is None:
            return UNKNOWN_MESSAGE
        if sent < sent_since_ms:
            return DELETE_EXPIRED

        async def job(connection: asyncpg.Connection) -> DeleteOutcome:
            await connection.fetchval(_LOCK_SEQUENCE)
            row = await connection.fetchrow(_DELETABLE, sender_id, client_id)
            if row is None:
                return UNKNOWN_MESSAGE
            seq, recipient_id, recipient, ts, undelivered, unread, size = row
            if ts < sent_since_ms:
                return DELETE_EXPIRED
            await connection.execute("DELETE FROM messages WHERE seq = $1", seq)
            if undelivered:
                await connection.execute(_FORGET_PAIR, sender_id, recipient_id)
                await connection.execute(_FORGET_BYTES, size, sender_id)
            if unread:
                await connection.execute(_FORGET_UNREAD, recipient_id, sender_id)
            await recount_heads(connection, sorted({sender_id, recipient_id}))
            return Deleted(int(seq), str(recipient))

        return await self.db.write(job)

    async def undelivered(self) -> list[tuple[int, str, int, int]]:
        """Per (sender id, recipient's name): messages no device of the recipient has
        received yet, and their envelope bytes (along the partial index
        ``messages_undelivered``)."""
        rows = await self.db.fetch_all(
            "SELECT m.sender_id, u.username, count(*), sum(length(m.envelope))"
            " FROM messages m JOIN users u ON u.id = m.recipient_id"
            " WHERE m.delivered_at IS NULL GROUP BY m.sender_id, m.recipient_id, u.username"
        )
        return [(int(row[0]), str(row[1]), int(row[2]), int(row[3])) for row in rows]

    async def changes_after(
        self, user_id: int, after: int, limit: int, max_bytes: int
    ) -> tuple[list[Change], bool]:
        """Messages to or from the user, receipts for their messages and the group items in
        their stream, ``pos > after``, in order: at most ``limit`` items and, past the first,
        about ``max_bytes`` of envelopes.

        The flag says whether more may follow (the batch was cut by ``limit`` or bytes).
        """
        rows = await self.db.fetch_all(_CHANGES_SQL, user_id, after, limit, max_bytes)
        changes = [change_of(row, _KINDS[row[1]]) for row in rows]
        more = bool(rows) and (rows[0][8] >= limit or len(rows) < rows[0][8])
        return changes, more

    async def head(self, user_id: int) -> int:
        """The highest position ``changes_after`` would show the user (0 if none): the user's
        ``stream_heads`` row, which every commit moves under its lock (one primary-key probe
        instead of the end of each of the sync's four sources)."""
        value = await self.db.fetch_value(_HEAD_SQL, user_id)
        return int(value) if value is not None else 0

    async def history(
        self, user_id: int, peer_id: int, before: int, limit: int
    ) -> list[HistoryItem]:
        """The conversation between two users, ``seq < before``, newest first."""
        low, high = sorted((user_id, peer_id))
        rows = await self.db.fetch_all(
            "SELECT m.seq, m.client_id, s.username, r.username, m.ts, m.envelope,"
            " m.delivered_at, m.read_at FROM messages m"
            " JOIN users s ON s.id = m.sender_id JOIN users r ON r.id = m.recipient_id"
            " WHERE LEAST(m.sender_id, m.recipient_id) = $1"
            " AND GREATEST(m.sender_id, m.recipient_id) = $2"
            " AND m.seq < $3 ORDER BY m.seq DESC LIMIT $4",
            low,
            high,
            before,
            limit,
        )
        return [HistoryItem(*row) for row in rows]

    async def conversations(self, user_id: int, before: int, limit: int) -> list[ConversationRow]:
        """The user's conversations with ``last_seq < before``, most recent first."""
        rows = await self.db.fetch_all(
            "SELECT p.username, c.last_seq, c.unread FROM conversations c"
            " JOIN users p ON p.id = c.peer_id WHERE c.user_id = $1 AND c.last_seq < $2"
            " ORDER BY c.last_seq DESC LIMIT $3",
            user_id,
            before,
            limit,
        )
        return [ConversationRow(*row) for row in rows]

    async def peer_names(self, username: str, limit: int) -> list[str]:
        """The people ``username`` has conversations with and shares presence with (both
        accepted the other), most recent first."""
        rows = await self.db.fetch_all(
            "SELECT p.username FROM users u JOIN conversations c ON c.user_id = u.id"
            " JOIN users p ON p.id = c.peer_id"
            " JOIN contacts mine ON mine.owner_id = u.id AND mine.peer_id = p.id"
            " JOIN contacts theirs ON theirs.owner_id = p.id AND theirs.peer_id = u.id"
            " WHERE u.username = $1 AND mine.state = 'accepted' AND theirs.state = 'accepted'"
            " ORDER BY c.last_seq DESC LIMIT $2",
            username,
            limit,
        )
        return [str(row[0]) for row in rows]


# The five sources of a sync, each read in order along its own index and merged by position;
# then a running total of envelope sizes cuts the batch at about ``max_bytes`` (the first row
# always passes); ``in_batch`` counts the rows before that cut. Kinds: 0 message, 1 delivered
# receipt, 2 read receipt, 3 group message, 4 key distribution, 5 membership entry (see
# store/batch.change_of). SQLite's _CHANGES_SQL, in PostgreSQL's dialect: the first branch
# names the types of the columns only the group branch fills.
_CHANGES_SQL: Final = """
WITH batch AS (
    SELECT seq AS pos, 0 AS kind, seq, client_id, sender_id, recipient_id, ts, envelope,
           length(envelope) AS size, NULL::bigint AS group_row, NULL::bytea AS blob,
           -1::bigint AS idx
      FROM messages WHERE sender_id = $1 AND seq > $2
    UNION ALL
    SELECT seq, 0, seq, client_id, sender_id, recipient_id, ts, envelope, length(envelope),
           NULL, NULL, -1
      FROM messages WHERE recipient_id = $1 AND seq > $2
    UNION ALL
    SELECT delivered_seq, 1, seq, client_id, sender_id, recipient_id, delivered_at, NULL, 0,
           NULL, NULL, -1
      FROM messages WHERE sender_id = $1 AND delivered_seq > $2
    UNION ALL
    SELECT read_seq, 2, seq, client_id, sender_id, recipient_id, read_at, NULL, 0,
           NULL, NULL, -1
      FROM messages WHERE sender_id = $1 AND read_seq > $2
    UNION ALL
    SELECT i.position, CASE i.kind WHEN 'message' THEN 3 WHEN 'keys' THEN 4 ELSE 5 END,
           i.position, coalesce(p.client_id, ''), p.sender_id,
           CASE WHEN i.kind <> 'keys' THEN NULL WHEN i.user_id <> p.sender_id THEN i.user_id
                ELSE p.to_id END,
           coalesce(p.ts, e.ts),
           coalesce(i.envelope, p.envelope),
           coalesce(length(coalesce(i.envelope, p.envelope)), (length(e.entry) + 2) / 3 * 4),
           i.group_row, coalesce(p.head, e.entry), coalesce(e.idx, -1)
      FROM group_inbox i
      LEFT JOIN group_posts p ON p.position = i.position
      LEFT JOIN group_entries e ON e.position = i.position
     WHERE i.user_id = $1 AND i.position > $2
       AND (p.position IS NOT NULL OR e.position IS NOT NULL)
    ORDER BY pos LIMIT $3
), sized AS (
    SELECT *, sum(size) OVER (ORDER BY pos ROWS UNBOUNDED PRECEDING) - size AS before_me,
              count(*) OVER () AS in_batch
      FROM batch
)
SELECT b.pos, b.kind, b.seq, b.client_id, s.username, r.username, b.ts, b.envelope, b.in_batch,
       g.group_id, b.blob, b.idx
  FROM sized b LEFT JOIN users s ON s.id = b.sender_id LEFT JOIN users r ON r.id = b.recipient_id
  LEFT JOIN groups g ON g.id = b.group_row
 WHERE b.before_me < $4
 ORDER BY b.pos
"""

# The largest position _CHANGES_SQL would show the user, as every commit keeps it.
_HEAD_SQL: Final = "SELECT head FROM stream_heads WHERE user_id = $1"
# The users who exchanged a message with $1, or got a group post of theirs: their streams hold
# positions of its rows.
_STREAM_PEERS: Final = (
    "SELECT recipient_id FROM messages WHERE sender_id = $1"
    " UNION SELECT sender_id FROM messages WHERE recipient_id = $1"
    " UNION SELECT i.user_id FROM group_posts p JOIN group_inbox i ON i.position = p.position"
    " WHERE p.sender_id = $1"
)
# Each listed user's head set to the largest position left in their stream (the end of each of
# _CHANGES_SQL's sources' indexes), after rows of it were deleted.
_RECOUNT_HEADS: Final = """
UPDATE stream_heads AS h SET head = GREATEST(
    coalesce((SELECT max(seq) FROM messages WHERE sender_id = h.user_id), 0),
    coalesce((SELECT max(seq) FROM messages WHERE recipient_id = h.user_id), 0),
    coalesce((SELECT max(delivered_seq) FROM messages
               WHERE sender_id = h.user_id AND delivered_seq IS NOT NULL), 0),
    coalesce((SELECT max(read_seq) FROM messages
               WHERE sender_id = h.user_id AND read_seq IS NOT NULL), 0),
    coalesce((SELECT max(position) FROM group_inbox WHERE user_id = h.user_id), 0)
) WHERE h.user_id = ANY($1::bigint[])
"""

# The row lock that orders every commit drawing positions, held to the end of the transaction.
_LOCK_SEQUENCE: Final = "SELECT last FROM chat_sequence WHERE id = 1 FOR UPDATE"
_SET_SEQUENCE: Final = "UPDATE chat_sequence SET last = $1 WHERE id = 1"
_USER_IDS: Final = "SELECT username, id FROM users WHERE username = ANY($1::text[])"
# In the batch's order, so of two copies of one id in it the first is the one stored. The
# UNIQUE (sender_id, client_id) index decides, across nodes too: a copy committed by another
# node first makes this one a no-op (READ COMMITTED waits for that node's transaction).
_INSERT_MESSAGES: Final = """
INSERT INTO messages (seq, sender_id, recipient_id, client_id, ts, envelope)
SELECT seq, sender_id, recipient_id, client_id, ts, envelope
  FROM unnest($1::bigint[], $2::bigint[], $3::bigint[], $4::text[], $5::bigint[], $6::text[])
       WITH ORDINALITY AS r(seq, sender_id, recipient_id, client_id, ts, envelope, n)
 ORDER BY n
    ON CONFLICT (sender_id, client_id) DO NOTHING
RETURNING seq
"""
# Each key one lookup in the UNIQUE (sender_id, client_id) index.
_ORIGINALS: Final = """
SELECT m.sender_id, m.client_id, m.seq, m.ts
  FROM unnest($1::bigint[], $2::text[]) AS k(sender_id, client_id)
  JOIN messages m ON m.sender_id = k.sender_id AND m.client_id = k.client_id
"""
_TOUCH_CONVERSATIONS: Final = """
INSERT INTO conversations (user_id, peer_id, last_seq, unread)
SELECT * FROM unnest($1::bigint[], $2::bigint[], $3::bigint[], $4::bigint[])
    ON CONFLICT (user_id, peer_id) DO UPDATE SET
       last_seq = GREATEST(conversations.last_seq, excluded.last_seq),
       unread = conversations.unread + excluded.unread
"""
_MARK_STATES: Final = """
SELECT m.seq, m.sender_id, m.recipient_id, m.client_id, u.username, length(m.envelope),
       m.delivered_seq, m.delivered_at, m.read_seq, m.read_at
  FROM messages m JOIN users u ON u.id = m.sender_id
 WHERE m.seq = ANY($1::bigint[])
"""
_UPDATE_MARKS: Final = """
UPDATE messages m SET delivered_seq = j.delivered_seq, delivered_at = j.delivered_at,
       read_seq = j.read_seq, read_at = j.read_at
  FROM unnest($1::bigint[], $2::bigint[], $3::bigint[], $4::bigint[], $5::bigint[])
       AS j(delivered_seq, delivered_at, read_seq, read_at, seq)
 WHERE m.seq = j.seq
"""
_DROP_UNREAD: Final = """
UPDATE conversations c SET unread = GREATEST(c.unread - j.n, 0)
  FROM unnest($1::bigint[], $2::bigint[], $3::bigint[]) AS j(n, user_id, peer_id)
 WHERE c.user_id = j.user_id AND c.peer_id = j.peer_id
"""
# Delete for everyone (MessageStore.delete_message): the sender's message by its client id
# (the UNIQUE (sender_id, client_id) index), and what its removal takes from the counts.
_DELETABLE: Final = (
    "SELECT m.seq, m.recipient_id, r.username, m.ts, m.delivered_at IS NULL,"
    " m.read_at IS NULL, length(m.envelope) FROM messages m"
    " JOIN users r ON r.id = m.recipient_id WHERE m.sender_id = $1 AND m.client_id = $2"
)
_DELETABLE_TS: Final = "SELECT ts FROM messages WHERE sender_id = $1 AND client_id = $2"
_FORGET_PAIR: Final = (
    "UPDATE undelivered_pairs SET messages = greatest(messages - 1, 0)"
    " WHERE sender_id = $1 AND recipient_id = $2"
)
_FORGET_BYTES: Final = (
    "UPDATE undelivered_senders SET bytes = greatest(bytes - $1, 0) WHERE sender_id = $2"
)
_FORGET_UNREAD: Final = (
    "UPDATE conversations SET unread = greatest(unread - 1, 0) WHERE user_id = $1 AND peer_id = $2"
)
# The undelivered counts of a batch's pairs and senders, and the commit's changes to them.
_PAIR_COUNTS: Final = """
SELECT p.sender_id, p.recipient_id, p.messages
  FROM unnest($1::bigint[], $2::bigint[]) AS k(sender_id, recipient_id)
  JOIN undelivered_pairs p ON p.sender_id = k.sender_id AND p.recipient_id = k.recipient_id
"""
_SENDER_BYTES: Final = (
    "SELECT sender_id, bytes FROM undelivered_senders WHERE sender_id = ANY($1::bigint[])"
)
_ADD_PAIRS: Final = """
INSERT INTO undelivered_pairs (sender_id, recipient_id, messages)
SELECT * FROM unnest($1::bigint[], $2::bigint[], $3::bigint[])
    ON CONFLICT (sender_id, recipient_id) DO UPDATE SET
       messages = undelivered_pairs.messages + excluded.messages
"""
# Who may message whom (store/batch.blocked_sends, accepted_by_sending): the blocks among the
# batch's (recipient, sender) pairs; and "accepted" for each pair that stored a message,
# unless the sender decided otherwise before (a block stays).
_BLOCKS: Final = """
SELECT c.owner_id, c.peer_id FROM unnest($1::bigint[], $2::bigint[]) AS k(owner_id, peer_id)
  JOIN contacts c ON c.owner_id = k.owner_id AND c.peer_id = k.peer_id
 WHERE c.state = 'blocked'
"""
_ACCEPT_BY_SENDING: Final = """
INSERT INTO contacts (owner_id, peer_id, state, changed_at)
SELECT owner_id, peer_id, 'accepted', $3 FROM unnest($1::bigint[], $2::bigint[])
       AS k(owner_id, peer_id)
    ON CONFLICT (owner_id, peer_id) DO NOTHING
"""
# Each user's highest position (store/batch.link_streams): read, and set to the batch's last.
_STREAM_HEADS: Final = "SELECT user_id, head FROM stream_heads WHERE user_id = ANY($1::bigint[])"
_SET_HEADS: Final = """
INSERT INTO stream_heads (user_id, head)
SELECT * FROM unnest($1::bigint[], $2::bigint[])
    ON CONFLICT (user_id) DO UPDATE SET head = excluded.head
"""
_ADD_SENDERS: Final = """
INSERT INTO undelivered_senders (sender_id, bytes)
SELECT * FROM unnest($1::bigint[], $2::bigint[])
    ON CONFLICT (sender_id) DO UPDATE SET bytes = undelivered_senders.bytes + excluded.bytes
"""


async def _store_sends(
    connection: asyncpg.Connection,
    sends: Sequence[NewMessage],
    positions: Positions,
    now_ms: int,
    bounds: BacklogBounds | None,
) -> tuple[list[SendOutcome], list[MessageRow]]:
    """The sends' outcomes and the rows stored new."""
    if not sends:
        return [], []
    names = sorted({send.recipient for send in sends})
    ids = {str(row[0]): int(row[1]) for row in await connection.fetch(_USER_IDS, names)}
    blocks = await connection.fetch(_BLOCKS, *_columns(contact_keys(sends, ids), 2))
    blocked = blocked_sends(sends, ids, {(int(row[0]), int(row[1])) for row in blocks})
    full = (
        await _over_bounds(connection, sends, ids, bounds, blocked) if bounds is not None else set()
    )
    outcomes, rows = number_sends(sends, ids, positions, now_ms, full, blocked)
    if not rows:
        return outcomes, []
    inserted = await connection.fetch(_INSERT_MESSAGES, *_columns(rows, 6))
    created = rows
    if len(inserted) != len(rows):
        # A resend (of a message stored before, or twice in this batch): its drawn position
        # stays unused, a gap no reader waits for.
        found = await connection.fetch(_ORIGINALS, *_key_arrays([(r[1], r[3]) for r in rows]))
        originals = {(int(f[0]), str(f[1])): (int(f[2]), int(f[3])) for f in found}
        created = settle_duplicates(sends, outcomes, rows, originals)
    moves = sorted(conversation_moves(created))
    await connection.execute(_TOUCH_CONVERSATIONS, *_columns(moves, 4))
    accepted = accepted_by_sending(created)
    await connection.execute(_ACCEPT_BY_SENDING, *_columns(accepted, 2), now_ms)
    return outcomes, created


async def _over_bounds(
    connection: asyncpg.Connection,
    sends: Sequence[NewMessage],
    ids: dict[str, int],
    bounds: BacklogBounds,
    blocked: set[int],
) -> set[int]:
    """The sends over a bound, by index. The counts are read after the ``chat_sequence`` lock
    (READ COMMITTED: each statement sees every commit that held it before), and ids already
    stored, by any node, are settled first (a resend is acknowledged, not counted)."""
    known = [send for send in sends if send.recipient in ids]
    keys = sorted({(send.sender_id, send.client_id) for send in known})
    found = await connection.fetch(_ORIGINALS, *_key_arrays(keys))
    stored = {(int(row[0]), str(row[1])) for row in found}
    pairs = sorted({(send.sender_id, ids[send.recipient]) for send in known})
    senders = sorted({send.sender_id for send in known})
    counts = Backlog(
        {(r[0], r[1]): r[2] for r in await connection.fetch(_PAIR_COUNTS, *_columns(pairs, 2))},
        {r[0]: r[1] for r in await connection.fetch(_SENDER_BYTES, senders)},
    )
    return over_bounds(sends, ids, stored, counts, bounds, blocked)


async def _write_backlog(connection: asyncpg.Connection, changes: Backlog) -> None:
    if pairs := changes.pair_rows():
        await connection.execute(_ADD_PAIRS, *_columns(pairs, 3))
    if senders := changes.sender_rows():
        await connection.execute(_ADD_SENDERS, *_columns(senders, 2))


async def _apply_marks(
    connection: asyncpg.Connection, marks: Sequence[NewMark], positions: Positions, now_ms: int
) -> tuple[list[MarkOutcome], dict[int, MarkState]]:
    """The marks' outcomes, and the marked messages' states by seq."""
    if not marks:
        return [], {}
    found = await connection.fetch(_MARK_STATES, sorted({mark.seq for mark in marks}))
    states = {int(row[0]): MarkState(*row[1:]) for row in found}
    outcomes, dirty, drops = apply_marks(marks, states, positions, now_ms)
    if dirty:
        await connection.execute(_UPDATE_MARKS, *_columns(dirty, 5))
    if drops:
        await connection.execute(_DROP_UNREAD, *_columns(drops, 3))
    return outcomes, states


async def stream_peers(connection: asyncpg.Connection, user_id: int) -> list[int]:
    """The users whose streams hold positions of ``user_id``'s messages (its correspondents),
    read under the commits' lock on ``chat_sequence``, taken here and held to the end of the
    transaction: no commit moves a head between this and :func:`recount_heads`, which the
    same transaction runs once those rows are deleted."""
    await connection.fetchval(_LOCK_SEQUENCE)
    return sorted(int(row[0]) for row in await connection.fetch(_STREAM_PEERS, user_id))


async def recount_heads(connection: asyncpg.Connection, users: Sequence[int]) -> None:
    """Bring these users' stream heads down to what their sync shows once rows of their
    streams are gone (an account deleted), so head() stays changes_after's last position."""
    if users:
        await connection.execute(_RECOUNT_HEADS, list(users))


async def lock_positions(connection: asyncpg.Connection) -> int:
    """Take the commits' lock on ``chat_sequence`` (FIRST in a write that draws positions,
    held to its end); the last position drawn."""
    return int(await connection.fetchval(_LOCK_SEQUENCE))


async def draw_position(connection: asyncpg.Connection, last: int) -> int:
    """The position after ``last``, recorded as drawn (under :func:`lock_positions`)."""
    await connection.execute(_SET_SEQUENCE, last + 1)
    return last + 1


async def move_stream_heads(
    connection: asyncpg.Connection, entries: Sequence[StreamEntry]
) -> dict[tuple[int, int], int]:
    """Move the heads of the users ``entries`` enter (under the commits' lock, as a commit
    does); each (user, position) with the position before it in that user's stream."""
    heads = await _stream_heads(connection, entries)
    prevs = move_heads(entries, heads)
    await connection.execute(_SET_HEADS, *_columns(sorted(heads.items()), 2))
    return prevs


async def _stream_heads(
    connection: asyncpg.Connection, entries: Sequence[StreamEntry]
) -> dict[int, int]:
    """The stored heads of the users the batch's positions enter (no row: 0). Read after the
    ``chat_sequence`` lock, so every commit that moved them before is seen."""
    users = sorted({user for _, users in entries for user in users})
    return {int(r[0]): int(r[1]) for r in await connection.fetch(_STREAM_HEADS, users)}


def _columns(rows: Sequence[Sequence[object]], width: int) -> list[list[object]]:
    """Rows as ``width`` column arrays, one ``unnest`` parameter each."""
    return [[row[index] for row in rows] for index in range(width)]


def _key_arrays(keys: Sequence[tuple[int, str]]) -> tuple[list[int], list[str]]:
    return [key[0] for key in keys], [key[1] for key in keys]


__all__ = ["MessageStore"]
