"""The chat on SQLite: every SQL statement about messages, receipts and conversations.

Writes come only from the committer (securechat/chat/delivery.py), in batches: :meth:`commit` turns
a batch of sends and marks into one write job of a handful of statements, each taking the
whole batch as one JSON parameter, whatever the batch size. It hands out sequence numbers itself, from ``chat_sequence``, so it
knows every row's ``seq`` without a round trip per row.
"""

from __future__ import annotations

import json
import sqlite3
from collections.abc import Sequence
from typing import Final

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
from securechat.store.sqlite.database import Database

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
        """The last sequence number handed out."""
        row = await self.db.fetch_one("SELECT last FROM chat_sequence WHERE id = 1")
        return int(row[0]) if row else 0

    async def commit(
        self,
        sends: Sequence[NewMessage],
        marks: Sequence[NewMark],
        now_ms: int,
        bounds: BacklogBounds | None = None,
    ) -> CommitResult:
        """Store a batch of sends and marks in one job, numbered after the stored last position.

        The positions are drawn from ``chat_sequence`` inside the job's transaction (BEGIN
        IMMEDIATE: the file's one writer), as on PostgreSQL, so two rows never share a
        position, whoever commits. The caller must only believe the result once this returns:
        the write has then been committed. The undelivered
        counts are checked against ``bounds`` and kept in the same transaction, and so are
        the users' stream heads, which give each new position its ``prev``.
        """

        def job(connection: sqlite3.Connection) -> CommitResult:
            stored_last = int(
                connection.execute("SELECT last FROM chat_sequence WHERE id = 1").fetchone()[0]
            )
            positions = Positions(stored_last)
            send_outcomes, created = _store_sends(connection, sends, positions, now_ms, bounds)
            mark_outcomes, states = _apply_marks(connection, marks, positions, now_ms)
            _write_backlog(connection, backlog_changes(created, marks, mark_outcomes))
            entries = stream_entries(created, mark_outcomes, states)
            if entries:
                heads = _stream_heads(connection, entries)
                send_outcomes, mark_outcomes = link_streams(
                    entries, heads, send_outcomes, created, mark_outcomes, states
                )
                connection.execute(_SET_HEADS, (_json_rows(sorted(heads.items())),))
            if positions.value != stored_last:
                connection.execute(
                    "UPDATE chat_sequence SET last = ? WHERE id = 1", (positions.value,)
                )
            return CommitResult(positions.value, send_outcomes, mark_outcomes)

        return await self.db.write(job)

    async def delete_message(
        self, sender_id: int, client_id: str, sent_since_ms: int
    ) -> DeleteOutcome:
        """Remove the sender's stored message ``client_id`` (delete for everyone), with its
        receipts, its place in the backlog and unread counts, and its stream positions."""

        def job(connection: sqlite3.Connection) -> DeleteOutcome:
            row = connection.execute(_DELETABLE, (sender_id, client_id)).fetchone()
            if row is None:
                return UNKNOWN_MESSAGE
            seq, recipient_id, recipient, ts, undelivered, unread, size = row
            if ts < sent_since_ms:
                return DELETE_EXPIRED
            connection.execute("DELETE FROM messages WHERE seq = ?", (seq,))
            if undelivered:
                connection.execute(_FORGET_PAIR, (sender_id, recipient_id))
                connection.execute(_FORGET_BYTES, (size, sender_id))
            if unread:
                connection.execute(_FORGET_UNREAD, (recipient_id, sender_id))
            recount_heads(connection, sorted({sender_id, recipient_id}))
            return Deleted(int(seq), str(recipient))

        return await self.db.write(job)

    async def undelivered(self) -> list[tuple[int, str, int, int]]:
        """Per (sender id, recipient's name): messages no device of the recipient has
        received yet, and their envelope bytes.

        Read along the partial index ``messages_undelivered``: the cost follows the backlog,
        not the history. ``delivered_at`` rather than ``delivered_seq``: a read mark that
        comes first fills in the time but makes no delivered receipt.
        """
        rows = await self.db.fetch_all(
            "SELECT m.sender_id, u.username, count(*), sum(length(m.envelope))"
            " FROM messages m JOIN users u ON u.id = m.recipient_id"
            " WHERE m.delivered_at IS NULL GROUP BY m.sender_id, m.recipient_id"
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
        rows = await self.db.fetch_all(_CHANGES_SQL, (user_id, after, limit, max_bytes))
        changes = [change_of(row, _KINDS[row[1]]) for row in rows]
        more = bool(rows) and (rows[0][8] >= limit or len(rows) < rows[0][8])
        return changes, more

    async def head(self, user_id: int) -> int:
        """The highest position ``changes_after`` would show the user (0 if none).

        The user's ``stream_heads`` row, which every commit moves under its lock: one probe of
        a primary key, where the resync's periodic check used to ask for the end of each of
        the sync's four sources (docs/performance.md, "Stream heads").
        """
        row = await self.db.fetch_one(_HEAD_SQL, (user_id,))
        return int(row[0]) if row else 0

    async def history(
        self, user_id: int, peer_id: int, before: int, limit: int
    ) -> list[HistoryItem]:
        """The conversation between two users, ``seq < before``, newest first."""
        low, high = sorted((user_id, peer_id))
        rows = await self.db.fetch_all(
            "SELECT m.seq, m.client_id, s.username, r.username, m.ts, m.envelope,"
            " m.delivered_at, m.read_at FROM messages m"
            " JOIN users s ON s.id = m.sender_id JOIN users r ON r.id = m.recipient_id"
            " WHERE min(m.sender_id, m.recipient_id) = ? AND max(m.sender_id, m.recipient_id) = ?"
            " AND m.seq < ? ORDER BY m.seq DESC LIMIT ?",
            (low, high, before, limit),
        )
        return [HistoryItem(*row) for row in rows]

    async def conversations(self, user_id: int, before: int, limit: int) -> list[ConversationRow]:
        """The user's conversations with ``last_seq < before``, most recent first."""
        rows = await self.db.fetch_all(
            "SELECT p.username, c.last_seq, c.unread FROM conversations c"
            " JOIN users p ON p.id = c.peer_id WHERE c.user_id = ? AND c.last_seq < ?"
            " ORDER BY c.last_seq DESC LIMIT ?",
            (user_id, before, limit),
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
            " WHERE u.username = ? AND mine.state = 'accepted' AND theirs.state = 'accepted'"
            " ORDER BY c.last_seq DESC LIMIT ?",
            (username, limit),
        )
        return [row[0] for row in rows]


# The five sources of a sync, each read in order along its own index and merged by position;
# then a running total of envelope sizes cuts the batch at about ``max_bytes`` (the first row
# always passes); ``in_batch`` counts the rows before that cut. Kinds: 0 message, 1 delivered
# receipt, 2 read receipt, 3 group message, 4 key distribution, 5 membership entry (see
# change_of). A group item's ``blob`` is the head a post was sent under, or the entry; its
# envelope a distribution's copy for this reader (the sender's own row holds its first
# recipient's, whom the recipient column then names from group_posts.to_id, as the live
# frame does); its size an entry's base64 length.
_CHANGES_SQL: Final = """
WITH batch AS (
    SELECT seq AS pos, 0 AS kind, seq, client_id, sender_id, recipient_id, ts, envelope,
           length(envelope) AS size, NULL AS group_row, NULL AS blob, -1 AS idx
      FROM messages WHERE sender_id = ?1 AND seq > ?2
    UNION ALL
    SELECT seq, 0, seq, client_id, sender_id, recipient_id, ts, envelope, length(envelope),
           NULL, NULL, -1
      FROM messages WHERE recipient_id = ?1 AND seq > ?2
    UNION ALL
    SELECT delivered_seq, 1, seq, client_id, sender_id, recipient_id, delivered_at, NULL, 0,
           NULL, NULL, -1
      FROM messages WHERE sender_id = ?1 AND delivered_seq > ?2
    UNION ALL
    SELECT read_seq, 2, seq, client_id, sender_id, recipient_id, read_at, NULL, 0,
           NULL, NULL, -1
      FROM messages WHERE sender_id = ?1 AND read_seq > ?2
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
     WHERE i.user_id = ?1 AND i.position > ?2
       AND (p.position IS NOT NULL OR e.position IS NOT NULL)
    ORDER BY pos LIMIT ?3
), sized AS (
    SELECT *, sum(size) OVER (ORDER BY pos ROWS UNBOUNDED PRECEDING) - size AS before_me,
              count(*) OVER () AS in_batch
      FROM batch
)
SELECT b.pos, b.kind, b.seq, b.client_id, s.username, r.username, b.ts, b.envelope, b.in_batch,
       g.group_id, b.blob, b.idx
  FROM sized b LEFT JOIN users s ON s.id = b.sender_id LEFT JOIN users r ON r.id = b.recipient_id
  LEFT JOIN groups g ON g.id = b.group_row
 WHERE b.before_me < ?4
 ORDER BY b.pos
"""


# The largest position _CHANGES_SQL would show the user, as every commit keeps it.
_HEAD_SQL: Final = "SELECT head FROM stream_heads WHERE user_id = ?"
# The users who exchanged a message with ?1, or got a group post of theirs: their streams hold
# positions of its rows.
_STREAM_PEERS: Final = (
    "SELECT recipient_id FROM messages WHERE sender_id = ?1"
    " UNION SELECT sender_id FROM messages WHERE recipient_id = ?1"
    " UNION SELECT i.user_id FROM group_posts p JOIN group_inbox i ON i.position = p.position"
    " WHERE p.sender_id = ?1"
)
# Each listed user's head set to the largest position left in their stream (the end of each of
# _CHANGES_SQL's sources' indexes), after rows of it were deleted.
_RECOUNT_HEADS: Final = """
UPDATE stream_heads SET head = max(
    coalesce((SELECT max(seq) FROM messages WHERE sender_id = stream_heads.user_id), 0),
    coalesce((SELECT max(seq) FROM messages WHERE recipient_id = stream_heads.user_id), 0),
    coalesce((SELECT max(delivered_seq) FROM messages
               WHERE sender_id = stream_heads.user_id AND delivered_seq IS NOT NULL), 0),
    coalesce((SELECT max(read_seq) FROM messages
               WHERE sender_id = stream_heads.user_id AND read_seq IS NOT NULL), 0),
    coalesce((SELECT max(position) FROM group_inbox WHERE user_id = stream_heads.user_id), 0)
) WHERE user_id IN (SELECT value FROM json_each(?))
"""


# Delete for everyone (MessageStore.delete_message): the sender's message by its client id
# (the UNIQUE (sender_id, client_id) index), and what its removal takes from the counts.
_DELETABLE: Final = (
    "SELECT m.seq, m.recipient_id, r.username, m.ts, m.delivered_at IS NULL,"
    " m.read_at IS NULL, length(m.envelope) FROM messages m"
    " JOIN users r ON r.id = m.recipient_id WHERE m.sender_id = ? AND m.client_id = ?"
)
_FORGET_PAIR: Final = (
    "UPDATE undelivered_pairs SET messages = max(messages - 1, 0)"
    " WHERE sender_id = ? AND recipient_id = ?"
)
_FORGET_BYTES: Final = (
    "UPDATE undelivered_senders SET bytes = max(bytes - ?, 0) WHERE sender_id = ?"
)
_FORGET_UNREAD: Final = (
    "UPDATE conversations SET unread = max(unread - 1, 0) WHERE user_id = ? AND peer_id = ?"
)


# The sends and the conversations they move are written with executemany: taken from one JSON
# parameter through json_each, messages of a kilobyte or more cost the writer markedly more
# than bound values (docs/performance.md). The other committer statements take their batch as
# ONE JSON parameter unpacked by json_each (SQLite >= 3.38): their rows are a few numbers, and one
# statement is one hand-over of the GIL, where executemany hands it over once per row.
_COMPACT: Final = json.JSONEncoder(separators=(",", ":"), ensure_ascii=False)
_INSERT_MESSAGE: Final = (
    "INSERT INTO messages (seq, sender_id, recipient_id, client_id, ts, envelope)"
    " VALUES (?, ?, ?, ?, ?, ?) ON CONFLICT (sender_id, client_id) DO NOTHING"
)
_TOUCH_CONVERSATION: Final = (
    "INSERT INTO conversations (user_id, peer_id, last_seq, unread) VALUES (?, ?, ?, ?)"
    " ON CONFLICT (user_id, peer_id) DO UPDATE SET"
    " last_seq = max(last_seq, excluded.last_seq), unread = unread + excluded.unread"
)
_USER_IDS: Final = (
    "SELECT json_group_object(username, id) FROM users"
    " WHERE username IN (SELECT value FROM json_each(?))"
)
# Each key one lookup in the UNIQUE (sender_id, client_id) index.
_ORIGINALS: Final = (
    "SELECT m.sender_id, m.client_id, m.seq, m.ts FROM json_each(?) AS k"
    " JOIN messages m ON m.sender_id = k.value ->> 0 AND m.client_id = k.value ->> 1"
)
_MARK_STATES: Final = (
    "SELECT m.seq, m.sender_id, m.recipient_id, m.client_id, u.username, length(m.envelope),"
    " m.delivered_seq, m.delivered_at, m.read_seq, m.read_at"
    " FROM messages m JOIN users u ON u.id = m.sender_id"
    " WHERE m.seq IN (SELECT value FROM json_each(?))"
)
_UPDATE_MARKS: Final = (
    "UPDATE messages SET delivered_seq = j.value ->> 0, delivered_at = j.value ->> 1,"
    " read_seq = j.value ->> 2, read_at = j.value ->> 3"
    " FROM json_each(?) AS j WHERE seq = j.value ->> 4"
)
_DROP_UNREAD: Final = (
    "UPDATE conversations SET unread = max(unread - (j.value ->> 0), 0)"
    " FROM json_each(?) AS j WHERE user_id = j.value ->> 1 AND peer_id = j.value ->> 2"
)
# The undelivered counts of a batch's pairs and senders, each one primary key lookup; and the
# commit's changes to them added (the WHERE true: SQLite's upsert after a SELECT needs one).
_PAIR_COUNTS: Final = (
    "SELECT p.sender_id, p.recipient_id, p.messages FROM json_each(?) AS k"
    " JOIN undelivered_pairs p ON p.sender_id = k.value ->> 0 AND p.recipient_id = k.value ->> 1"
)
_SENDER_BYTES: Final = (
    "SELECT s.sender_id, s.bytes FROM json_each(?) AS k"
    " JOIN undelivered_senders s ON s.sender_id = k.value"
)
_ADD_PAIRS: Final = (
    "INSERT INTO undelivered_pairs (sender_id, recipient_id, messages)"
    " SELECT j.value ->> 0, j.value ->> 1, j.value ->> 2 FROM json_each(?) AS j WHERE true"
    " ON CONFLICT (sender_id, recipient_id) DO UPDATE SET messages = messages + excluded.messages"
)
# Who may message whom (store/batch.blocked_sends, accepted_by_sending): the blocks among the
# batch's (recipient, sender) pairs, each a primary key lookup; and "accepted" for each pair
# that stored a message, unless the sender decided otherwise before (a block stays).
_BLOCKS: Final = (
    "SELECT c.owner_id, c.peer_id FROM json_each(?) AS k JOIN contacts c"
    " ON c.owner_id = k.value ->> 0 AND c.peer_id = k.value ->> 1 WHERE c.state = 'blocked'"
)
_ACCEPT_BY_SENDING: Final = (
    "INSERT INTO contacts (owner_id, peer_id, state, changed_at)"
    " SELECT j.value ->> 0, j.value ->> 1, 'accepted', j.value ->> 2 FROM json_each(?) AS j"
    " WHERE true ON CONFLICT (owner_id, peer_id) DO NOTHING"
)
# Each user's highest position (store/batch.link_streams): read, and set to the batch's last.
_STREAM_HEADS: Final = (
    "SELECT h.user_id, h.head FROM json_each(?) AS k JOIN stream_heads h ON h.user_id = k.value"
)
_SET_HEADS: Final = (
    "INSERT INTO stream_heads (user_id, head)"
    " SELECT j.value ->> 0, j.value ->> 1 FROM json_each(?) AS j WHERE true"
    " ON CONFLICT (user_id) DO UPDATE SET head = excluded.head"
)
_ADD_SENDERS: Final = (
    "INSERT INTO undelivered_senders (sender_id, bytes)"
    " SELECT j.value ->> 0, j.value ->> 1 FROM json_each(?) AS j WHERE true"
    " ON CONFLICT (sender_id) DO UPDATE SET bytes = bytes + excluded.bytes"
)


def _store_sends(
    connection: sqlite3.Connection,
    sends: Sequence[NewMessage],
    positions: Positions,
    now_ms: int,
    bounds: BacklogBounds | None,
) -> tuple[list[SendOutcome], list[MessageRow]]:
    """The sends' outcomes and the rows stored new."""
    if not sends:
        return [], []
    ids = _user_ids(connection, {send.recipient for send in sends})
    blocks = connection.execute(_BLOCKS, (_json_rows(contact_keys(sends, ids)),)).fetchall()
    blocked = blocked_sends(sends, ids, {(row[0], row[1]) for row in blocks})
    full = _over_bounds(connection, sends, ids, bounds, blocked) if bounds is not None else set()
    outcomes, rows = number_sends(sends, ids, positions, now_ms, full, blocked)
    if not rows:
        return outcomes, []
    # The UNIQUE (sender_id, client_id) index decides whether a send is new, even for two
    # copies of one id in the same batch; a resend keeps its first seq and ts.
    inserted = connection.executemany(_INSERT_MESSAGE, rows).rowcount
    created = rows
    if inserted != len(rows):
        keys = _json_rows([(row[1], row[3]) for row in rows])
        originals = {
            (sender_id, client_id): (seq, ts)
            for sender_id, client_id, seq, ts in connection.execute(_ORIGINALS, (keys,))
        }
        created = settle_duplicates(sends, outcomes, rows, originals)
    connection.executemany(_TOUCH_CONVERSATION, conversation_moves(created))
    accepted = [(*pair, now_ms) for pair in accepted_by_sending(created)]
    connection.execute(_ACCEPT_BY_SENDING, (_json_rows(accepted),))
    return outcomes, created


def _over_bounds(
    connection: sqlite3.Connection,
    sends: Sequence[NewMessage],
    ids: dict[str, int],
    bounds: BacklogBounds,
    blocked: set[int],
) -> set[int]:
    """The sends over a bound, by index: the counts are read under the writer's lock, and
    ids already stored are settled first (a resend is acknowledged, not counted)."""
    known = [send for send in sends if send.recipient in ids]
    keys = _json_rows(sorted({(send.sender_id, send.client_id) for send in known}))
    stored = {(int(row[0]), str(row[1])) for row in connection.execute(_ORIGINALS, (keys,))}
    pairs = _json_rows(sorted({(send.sender_id, ids[send.recipient]) for send in known}))
    senders = _json_rows(sorted({send.sender_id for send in known}))
    counts = Backlog(
        {(row[0], row[1]): row[2] for row in connection.execute(_PAIR_COUNTS, (pairs,))},
        dict(connection.execute(_SENDER_BYTES, (senders,)).fetchall()),
    )
    return over_bounds(sends, ids, stored, counts, bounds, blocked)


def _write_backlog(connection: sqlite3.Connection, changes: Backlog) -> None:
    if pairs := changes.pair_rows():
        connection.execute(_ADD_PAIRS, (_json_rows(pairs),))
    if senders := changes.sender_rows():
        connection.execute(_ADD_SENDERS, (_json_rows(senders),))


def _apply_marks(
    connection: sqlite3.Connection, marks: Sequence[NewMark], positions: Positions, now_ms: int
) -> tuple[list[MarkOutcome], dict[int, MarkState]]:
    """The marks' outcomes, and the marked messages' states by seq."""
    if not marks:
        return [], {}
    states = _mark_states(connection, {mark.seq for mark in marks})
    outcomes, dirty, drops = apply_marks(marks, states, positions, now_ms)
    if dirty:
        connection.execute(_UPDATE_MARKS, (_json_rows(dirty),))
    if drops:
        connection.execute(_DROP_UNREAD, (_json_rows(drops),))
    return outcomes, states


def stream_peers(connection: sqlite3.Connection, user_id: int) -> list[int]:
    """The users whose streams hold positions of ``user_id``'s messages (its correspondents):
    read before those rows are deleted, then :func:`recount_heads` after, in the same job."""
    return sorted(int(row[0]) for row in connection.execute(_STREAM_PEERS, (user_id,)))


def recount_heads(connection: sqlite3.Connection, users: Sequence[int]) -> None:
    """Bring these users' stream heads down to what their sync shows once rows of their
    streams are gone (an account deleted), so head() stays changes_after's last position."""
    if users:
        connection.execute(_RECOUNT_HEADS, (_json_rows(users),))


def move_stream_heads(
    connection: sqlite3.Connection, entries: Sequence[StreamEntry]
) -> dict[tuple[int, int], int]:
    """Move the heads of the users ``entries`` enter (under the writer's lock, as a commit
    does); each (user, position) with the position before it in that user's stream."""
    heads = _stream_heads(connection, entries)
    prevs = move_heads(entries, heads)
    connection.execute(_SET_HEADS, (_json_rows(sorted(heads.items())),))
    return prevs


def _stream_heads(connection: sqlite3.Connection, entries: Sequence[StreamEntry]) -> dict[int, int]:
    """The stored heads of the users the batch's positions enter (a user without a row has
    none yet: 0)."""
    users = sorted({user for _, users in entries for user in users})
    return dict(connection.execute(_STREAM_HEADS, (_json_rows(users),)).fetchall())


def _mark_states(connection: sqlite3.Connection, seqs: set[int]) -> dict[int, MarkState]:
    rows = connection.execute(_MARK_STATES, (_json_rows(sorted(seqs)),))
    return {row[0]: MarkState(*row[1:]) for row in rows}


def _user_ids(connection: sqlite3.Connection, names: set[str]) -> dict[str, int]:
    # One row holding every match, as a JSON object: one step of the statement.
    row = connection.execute(_USER_IDS, (_json_rows(sorted(names)),)).fetchone()
    ids: dict[str, int] = json.loads(row[0]) if row and row[0] else {}
    return ids


def _json_rows(rows: Sequence[object]) -> str:
    return _COMPACT.encode(rows)
