"""The chat on SQLite: every SQL statement about messages, receipts and conversations.

Writes come only from the committer (securechat/chat/delivery.py), in batches: :meth:`commit` turns
a batch of sends and marks into one write job of a handful of statements, each taking the
whole batch as one JSON parameter, whatever the batch size. It hands out sequence numbers itself, from ``chat_sequence``, so it
knows every row's ``seq`` without a round trip per row.
"""

from __future__ import annotations

import json
import sqlite3
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Final

from securechat.store.records import (
    UNKNOWN_MESSAGE,
    UNKNOWN_RECIPIENT,
    Change,
    ChangeKind,
    CommitResult,
    ConversationRow,
    HistoryItem,
    MarkOutcome,
    NewMark,
    NewMessage,
    Receipt,
    SendOutcome,
    Stored,
)
from securechat.store.sqlite.database import Database

_KINDS: Final[tuple[ChangeKind, ...]] = ("message", "delivered", "read")


@dataclass(slots=True)
class _MarkState:
    sender_id: int
    recipient_id: int
    client_id: str
    sender: str
    size: int
    delivered_seq: int | None
    delivered_at: int | None
    read_seq: int | None
    read_at: int | None
    dirty: bool = False

    def delivers(self) -> tuple[int, int] | None:
        """For a mark that delivers the message now: its sender and envelope length."""
        return None if self.delivered_at is not None else (self.sender_id, self.size)


class MessageStore:
    """Named queries over ``messages``, ``conversations`` and ``chat_sequence``."""

    def __init__(self, db: Database) -> None:
        self.db = db

    async def last_seq(self) -> int:
        """The last sequence number handed out."""
        row = await self.db.fetch_one("SELECT last FROM chat_sequence WHERE id = 1")
        return int(row[0]) if row else 0

    async def commit(
        self, sends: Sequence[NewMessage], marks: Sequence[NewMark], last_seq: int, now_ms: int
    ) -> CommitResult:
        """Store a batch of sends and marks in one job; numbers continue after ``last_seq``.

        The caller must be the only one committing (it owns ``last_seq``), and must only
        believe the result once this returns: the write has then been committed.
        """

        def job(connection: sqlite3.Connection) -> CommitResult:
            counter = _Counter(last_seq)
            send_outcomes = _store_sends(connection, sends, counter, now_ms)
            mark_outcomes = _apply_marks(connection, marks, counter, now_ms)
            if counter.value != last_seq:
                connection.execute(
                    "UPDATE chat_sequence SET last = ? WHERE id = 1", (counter.value,)
                )
            return CommitResult(counter.value, send_outcomes, mark_outcomes)

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

    async def stored_ids(self, keys: Sequence[tuple[int, str]]) -> set[tuple[int, str]]:
        """Which of these (sender id, client id) are already stored."""
        rows = await self.db.fetch_all(_ORIGINALS, (_json_rows(keys),))
        return {(int(row[0]), str(row[1])) for row in rows}

    async def changes_after(
        self, user_id: int, after: int, limit: int, max_bytes: int
    ) -> tuple[list[Change], bool]:
        """Messages to or from the user and receipts for their messages, ``pos > after``, in
        order: at most ``limit`` items and, past the first, about ``max_bytes`` of envelopes.

        The flag says whether more may follow (the batch was cut by ``limit`` or bytes).
        """
        rows = await self.db.fetch_all(_CHANGES_SQL, (user_id, after, limit, max_bytes))
        changes = [
            Change(row[0], _KINDS[row[1]], row[2], row[3], row[4], row[5], row[6], row[7])
            for row in rows
        ]
        more = bool(rows) and (rows[0][8] >= limit or len(rows) < rows[0][8])
        return changes, more

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
        """The people ``username`` has conversations with, most recent first."""
        rows = await self.db.fetch_all(
            "SELECT p.username FROM users u JOIN conversations c ON c.user_id = u.id"
            " JOIN users p ON p.id = c.peer_id WHERE u.username = ?"
            " ORDER BY c.last_seq DESC LIMIT ?",
            (username, limit),
        )
        return [row[0] for row in rows]


# The four sources of a sync, each read in order along its own index and merged by position;
# then a running total of envelope sizes cuts the batch at about ``max_bytes`` (the first row
# always passes); ``in_batch`` counts the rows before that cut. Kinds: 0 message, 1 delivered
# receipt, 2 read receipt.
_CHANGES_SQL: Final = """
WITH batch AS (
    SELECT seq AS pos, 0 AS kind, seq, client_id, sender_id, recipient_id, ts, envelope
      FROM messages WHERE sender_id = ?1 AND seq > ?2
    UNION ALL
    SELECT seq, 0, seq, client_id, sender_id, recipient_id, ts, envelope
      FROM messages WHERE recipient_id = ?1 AND seq > ?2
    UNION ALL
    SELECT delivered_seq, 1, seq, client_id, sender_id, recipient_id, delivered_at, NULL
      FROM messages WHERE sender_id = ?1 AND delivered_seq > ?2
    UNION ALL
    SELECT read_seq, 2, seq, client_id, sender_id, recipient_id, read_at, NULL
      FROM messages WHERE sender_id = ?1 AND read_seq > ?2
    ORDER BY pos LIMIT ?3
), sized AS (
    SELECT *, sum(coalesce(length(envelope), 0)) OVER (ORDER BY pos ROWS UNBOUNDED PRECEDING)
              - coalesce(length(envelope), 0) AS before_me,
              count(*) OVER () AS in_batch
      FROM batch
)
SELECT b.pos, b.kind, b.seq, b.client_id, s.username, r.username, b.ts, b.envelope, b.in_batch
  FROM sized b JOIN users s ON s.id = b.sender_id JOIN users r ON r.id = b.recipient_id
 WHERE b.before_me < ?4
 ORDER BY b.pos
"""


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


class _Counter:
    """Hands out the batch's sequence numbers."""

    __slots__ = ("value",)

    def __init__(self, last: int) -> None:
        self.value = last

    def next(self) -> int:
        self.value += 1
        return self.value


def _store_sends(
    connection: sqlite3.Connection,
    sends: Sequence[NewMessage],
    counter: _Counter,
    now_ms: int,
) -> list[SendOutcome]:
    if not sends:
        return []
    ids = _user_ids(connection, {send.recipient for send in sends})
    outcomes: list[SendOutcome] = [UNKNOWN_RECIPIENT] * len(sends)
    rows: list[tuple[int, int, int, str, int, str]] = []
    for index, send in enumerate(sends):
        recipient_id = ids.get(send.recipient)
        if recipient_id is not None:
            seq = counter.next()
            outcomes[index] = Stored(seq, now_ms, True)
            rows.append((seq, send.sender_id, recipient_id, send.client_id, now_ms, send.envelope))
    if not rows:
        return outcomes
    # The UNIQUE (sender_id, client_id) index decides whether a send is new, even for two
    # copies of one id in the same batch; a resend keeps its first seq and ts.
    inserted = connection.executemany(_INSERT_MESSAGE, rows).rowcount
    created = rows
    if inserted != len(rows):
        created = _settle_duplicates(connection, sends, outcomes, rows)
    _touch_conversations(connection, created)
    return outcomes


def _settle_duplicates(
    connection: sqlite3.Connection,
    sends: Sequence[NewMessage],
    outcomes: list[SendOutcome],
    rows: list[tuple[int, int, int, str, int, str]],
) -> list[tuple[int, int, int, str, int, str]]:
    """Point each resend at its original message; return the rows really inserted."""
    keys = _json_rows([(row[1], row[3]) for row in rows])
    originals: dict[tuple[int, str], tuple[int, int]] = {
        (sender_id, client_id): (seq, ts)
        for sender_id, client_id, seq, ts in connection.execute(_ORIGINALS, (keys,))
    }
    created = []
    for index, outcome in enumerate(outcomes):
        if isinstance(outcome, Stored):
            seq, ts = originals[(sends[index].sender_id, sends[index].client_id)]
            if seq != outcome.seq:
                outcomes[index] = Stored(seq, ts, False)
    for row in rows:
        if originals[(row[1], row[3])][0] == row[0]:
            created.append(row)
    return created


def _touch_conversations(
    connection: sqlite3.Connection, rows: Iterable[tuple[int, int, int, str, int, str]]
) -> None:
    """Move both sides' conversation to the new seq; one more unread for the recipient."""
    latest: dict[tuple[int, int], list[int]] = {}
    for seq, sender_id, recipient_id, *_ in rows:
        latest.setdefault((sender_id, recipient_id), [0, 0])[0] = seq
        mine = latest.setdefault((recipient_id, sender_id), [0, 0])
        mine[0] = seq
        mine[1] += 1
    connection.executemany(
        _TOUCH_CONVERSATION,
        [(user, peer, seq, unread) for (user, peer), (seq, unread) in latest.items()],
    )


def _apply_marks(
    connection: sqlite3.Connection, marks: Sequence[NewMark], counter: _Counter, now_ms: int
) -> list[MarkOutcome]:
    if not marks:
        return []
    states = _mark_states(connection, {mark.seq for mark in marks})
    outcomes: list[MarkOutcome] = []
    unread_drops: dict[tuple[int, int], int] = {}
    for mark in marks:
        state = states.get(mark.seq)
        if state is None or state.recipient_id != mark.reader_id:
            # Not a message to this reader (or no message at all): indistinguishable on purpose.
            outcomes.append(UNKNOWN_MESSAGE)
        elif mark.status == "read":
            outcomes.append(_mark_read(state, mark.seq, counter, now_ms, unread_drops))
        else:
            outcomes.append(_mark_delivered(state, mark.seq, counter, now_ms))
    dirty = [
        (s.delivered_seq, s.delivered_at, s.read_seq, s.read_at, seq)
        for seq, s in states.items()
        if s.dirty
    ]
    if dirty:
        connection.execute(_UPDATE_MARKS, (_json_rows(dirty),))
    if unread_drops:
        drops = [(count, user, peer) for (user, peer), count in unread_drops.items()]
        connection.execute(_DROP_UNREAD, (_json_rows(drops),))
    return outcomes


def _mark_delivered(state: _MarkState, seq: int, counter: _Counter, now_ms: int) -> MarkOutcome:
    # Marks only move forward: delivered after delivered or after read changes nothing.
    if state.delivered_at is not None or state.read_at is not None:
        return None
    delivered = state.delivers()
    state.delivered_seq, state.delivered_at, state.dirty = counter.next(), now_ms, True
    return Receipt(
        state.delivered_seq, seq, state.client_id, "delivered", state.sender, now_ms, delivered
    )


def _mark_read(
    state: _MarkState,
    seq: int,
    counter: _Counter,
    now_ms: int,
    unread_drops: dict[tuple[int, int], int],
) -> MarkOutcome:
    if state.read_at is not None:
        return None
    # Read implies delivered: the delivered time is filled in, but no separate receipt is
    # made; a read receipt tells the sender both.
    delivered = state.delivers()
    state.read_seq, state.read_at, state.dirty = counter.next(), now_ms, True
    if state.delivered_at is None:
        state.delivered_at = now_ms
    key = (state.recipient_id, state.sender_id)
    unread_drops[key] = unread_drops.get(key, 0) + 1
    return Receipt(state.read_seq, seq, state.client_id, "read", state.sender, now_ms, delivered)


def _mark_states(connection: sqlite3.Connection, seqs: set[int]) -> dict[int, _MarkState]:
    rows = connection.execute(_MARK_STATES, (_json_rows(sorted(seqs)),))
    return {row[0]: _MarkState(*row[1:]) for row in rows}


def _user_ids(connection: sqlite3.Connection, names: set[str]) -> dict[str, int]:
    # One row holding every match, as a JSON object: one step of the statement.
    row = connection.execute(_USER_IDS, (_json_rows(sorted(names)),)).fetchone()
    ids: dict[str, int] = json.loads(row[0]) if row and row[0] else {}
    return ids


def _json_rows(rows: Sequence[object]) -> str:
    return _COMPACT.encode(rows)
