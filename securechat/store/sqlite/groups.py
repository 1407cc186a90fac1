"""Groups on SQLite (issue 13): membership chains, the messages and key distributions posted
to them, and their places in the members' streams.

Every write is one job of the file's one writer, which is the lock ``MessageStore.commit``
draws positions under: a write reads ``chat_sequence``, takes the next position, stores its
rows, enters the position into the streams of the users it is for (``group_inbox``) and moves
their ``stream_heads`` (store/batch.move_heads), all in one transaction.
"""

from __future__ import annotations

import json
import sqlite3
from collections.abc import Iterable, Mapping, Sequence
from typing import Any, Final

from securechat.store.batch import entry_refusal, post_envelopes
from securechat.store.records import (
    NOT_ANOTHER_MEMBER,
    STALE_HEAD,
    TOO_MANY_GROUPS,
    UNKNOWN_GROUP,
    UNKNOWN_MESSAGE,
    GroupHistoryItem,
    GroupMarkOutcome,
    GroupReceipt,
    GroupStored,
    GroupSummary,
    GroupView,
    GroupWriteOutcome,
    MarkStatus,
    NewEntry,
    NewGroupPost,
)
from securechat.store.sqlite.database import Database
from securechat.store.sqlite.messages import move_stream_heads


class GroupStore:
    """Named queries over ``groups``, ``group_entries``, ``group_members``, ``group_posts``
    and ``group_inbox``."""

    def __init__(self, db: Database) -> None:
        self.db = db

    async def append_entry(self, entry: NewEntry, now_ms: int) -> GroupWriteOutcome:
        """Append a membership entry and replace the member list, at the next position (see
        ``GroupStore`` in store/interface.py for the refusals)."""

        def job(connection: sqlite3.Connection) -> GroupWriteOutcome:
            found = connection.execute(_GROUP, (entry.group_id,)).fetchone()
            refusal = entry_refusal(found, entry)
            if refusal is not None:
                return refusal
            ids = _user_ids(connection, [*entry.members, *entry.removed])
            members = {ids[name]: name for name in entry.members if name in ids}
            current = set() if found is None else _member_ids(connection, found[0])
            if _too_many_groups(connection, sorted(members.keys() - current), entry):
                return TOO_MANY_GROUPS
            position = _next_position(connection)
            group_row = _store_entry(connection, found, entry, position, now_ms)
            admins = set(entry.admins)
            connection.execute("DELETE FROM group_members WHERE group_row = ?", (group_row,))
            connection.executemany(
                "INSERT INTO group_members (group_row, user_id, admin) VALUES (?, ?, ?)",
                [(group_row, user, int(name in admins)) for user, name in members.items()],
            )
            readers = members | {ids[name]: name for name in entry.removed if name in ids}
            _enter(connection, position, group_row, "entry", {user: None for user in readers})
            return GroupStored(position, now_ms, True, _prevs(connection, position, readers))

        return await self.db.write(job)

    async def post(self, post: NewGroupPost, now_ms: int) -> GroupWriteOutcome:
        """Store a group message or key distribution at the next position (see ``GroupStore``
        in store/interface.py for the refusals); a resend answers its first copy."""

        def job(connection: sqlite3.Connection) -> GroupWriteOutcome:
            # The resend first: whatever else it says, it gets the first copy's answer.
            original = connection.execute(_ORIGINAL, (post.sender_id, post.client_id)).fetchone()
            if original is not None:
                return GroupStored(int(original[0]), int(original[1]), False, {})
            found = connection.execute(_GROUP, (post.group_id,)).fetchone()
            if found is None:
                return UNKNOWN_GROUP
            members = _members(connection, found[0])
            if post.sender_id not in members:
                return UNKNOWN_GROUP
            if bytes(found[1]) != post.head:
                return STALE_HEAD
            envelopes = post_envelopes(post, members)
            if envelopes is None:
                return NOT_ANOTHER_MEMBER
            position = _next_position(connection)
            connection.execute(
                _INSERT_POST,
                (position, found[0], post.sender_id, post.client_id, post.kind, post.head,
                 now_ms, post.envelope),
            )  # fmt: skip
            # The sender's own copy of a message is read already: it counts as no one's unread.
            seen = now_ms if post.kind == "message" else None
            _enter(connection, position, found[0], post.kind, envelopes, post.sender_id, seen)
            readers = {user: members[user] for user in envelopes}
            return GroupStored(position, now_ms, True, _prevs(connection, position, readers))

        return await self.db.write(job)

    async def mark(
        self, reader_id: int, seq: int, status: MarkStatus, now_ms: int
    ) -> GroupMarkOutcome:
        """Mark a group message delivered or read for one member; its counts if they moved."""

        def job(connection: sqlite3.Connection) -> GroupMarkOutcome:
            row = connection.execute(_MARKABLE, (reader_id, seq)).fetchone()
            if row is None or row[0] == reader_id:
                return UNKNOWN_MESSAGE
            _, delivered_at, read_at, client_id, sender, group_id = row
            if read_at is not None or (status == "delivered" and delivered_at is not None):
                return None  # marks only move forward; read implies delivered
            if status == "read":
                connection.execute(_MARK_READ, (now_ms, now_ms, reader_id, seq))
            else:
                connection.execute(_MARK_DELIVERED, (now_ms, reader_id, seq))
            delivered, read, others = connection.execute(_COUNTS, (seq,)).fetchone()
            return GroupReceipt(bytes(group_id), client_id, sender, delivered, read, others)

        return await self.db.write(job)

    async def group(self, group_id: bytes) -> GroupView | None:
        """The group's chain and member list, or None."""
        found = await self.db.fetch_one(_GROUP, (group_id,))
        if found is None:
            return None
        entries = await self.db.fetch_all(
            "SELECT entry FROM group_entries WHERE group_row = ? ORDER BY idx", (found[0],)
        )
        members = await self.db.fetch_all(_MEMBER_NAMES, (found[0],))
        return GroupView(
            group_id,
            bytes(found[1]),
            [bytes(row[0]) for row in entries],
            [str(row[0]) for row in members],
            [str(row[0]) for row in members if row[1]],
        )

    async def groups_of(self, user_id: int, limit: int) -> list[GroupSummary]:
        """The user's groups, the latest position in their stream first."""
        rows = await self.db.fetch_all(_GROUPS_OF, (user_id, limit))
        return [GroupSummary(bytes(r[0]), bytes(r[1]), r[2], r[3], r[4]) for r in rows]

    async def history(
        self, user_id: int, group_id: bytes, before: int, limit: int
    ) -> list[GroupHistoryItem]:
        """The group's messages in the user's stream, ``seq < before``, newest first."""
        rows = await self.db.fetch_all(_HISTORY, (user_id, group_id, before, limit))
        return [
            GroupHistoryItem(r[0], r[1], r[2], bytes(r[3]), r[4], r[5], r[6], r[7], r[8])
            for r in rows
        ]


def forget_posts_of(connection: sqlite3.Connection, user_id: int) -> None:
    """Take an account's group posts out of every stream they entered (the posts themselves
    go with the account, ON DELETE CASCADE): in the job that deletes the account, after
    ``stream_peers`` and before ``recount_heads``."""
    connection.execute(
        "DELETE FROM group_inbox WHERE position IN"
        " (SELECT position FROM group_posts WHERE sender_id = ?)",
        (user_id,),
    )


def _next_position(connection: sqlite3.Connection) -> int:
    """Draw the next position from ``chat_sequence`` (the writer's lock is held)."""
    row = connection.execute(
        "UPDATE chat_sequence SET last = last + 1 WHERE id = 1 RETURNING last"
    ).fetchone()
    return int(row[0])


def _store_entry(
    connection: sqlite3.Connection,
    found: Sequence[Any] | None,
    entry: NewEntry,
    position: int,
    now_ms: int,
) -> int:
    """Create the group or move its head; append the entry; the group's row id."""
    if found is None:
        cursor = connection.execute(
            "INSERT INTO groups (group_id, head, entries, created_at) VALUES (?, ?, 1, ?)",
            (entry.group_id, entry.head, now_ms),
        )
        assert cursor.lastrowid is not None
        group_row = cursor.lastrowid
    else:
        group_row = int(found[0])
        connection.execute(
            "UPDATE groups SET head = ?, entries = entries + 1 WHERE id = ?",
            (entry.head, group_row),
        )
    connection.execute(
        "INSERT INTO group_entries (group_row, idx, position, entry, ts) VALUES (?, ?, ?, ?, ?)",
        (group_row, entry.index, position, entry.entry, now_ms),
    )
    return group_row


def _too_many_groups(connection: sqlite3.Connection, added: list[int], entry: NewEntry) -> bool:
    """Whether anyone the entry adds is in ``groups_per_user_max`` groups already."""
    if not added:
        return False
    row = connection.execute(
        "SELECT max(n) FROM (SELECT count(*) AS n FROM group_members"
        " WHERE user_id IN (SELECT value FROM json_each(?)) GROUP BY user_id)",
        (json.dumps(added),),
    ).fetchone()
    return row[0] is not None and int(row[0]) >= entry.groups_per_user_max


def _enter(
    connection: sqlite3.Connection,
    position: int,
    group_row: int,
    kind: str,
    envelopes: Mapping[int, str | None],
    sender_id: int = 0,
    seen: int | None = None,
) -> None:
    """Enter ``position`` into each user's stream, with their own envelope if any; the
    sender's row marked ``seen``."""
    connection.executemany(
        "INSERT INTO group_inbox (user_id, position, group_row, kind, envelope, delivered_at,"
        " read_at) VALUES (?, ?, ?, ?, ?, ?, ?)",
        [
            (user, position, group_row, kind, envelope, *((seen, seen) if user == sender_id else (None, None)))
            for user, envelope in sorted(envelopes.items())
        ],
    )  # fmt: skip


def _prevs(
    connection: sqlite3.Connection, position: int, readers: Mapping[int, str]
) -> dict[str, int]:
    """Move the readers' stream heads to ``position``; each one's previous head, by name."""
    prevs = move_stream_heads(connection, [(position, frozenset(readers))])
    return {name: prevs[(user, position)] for user, name in readers.items()}


def _members(connection: sqlite3.Connection, group_row: int) -> dict[int, str]:
    rows = connection.execute(
        "SELECT m.user_id, u.username FROM group_members m JOIN users u ON u.id = m.user_id"
        " WHERE m.group_row = ?",
        (group_row,),
    )
    return {int(row[0]): str(row[1]) for row in rows}


def _member_ids(connection: sqlite3.Connection, group_row: int) -> set[int]:
    rows = connection.execute("SELECT user_id FROM group_members WHERE group_row = ?", (group_row,))
    return {int(row[0]) for row in rows}


def _user_ids(connection: sqlite3.Connection, names: Iterable[str]) -> dict[str, int]:
    rows = connection.execute(
        "SELECT username, id FROM users WHERE username IN (SELECT value FROM json_each(?))",
        (json.dumps(sorted(set(names))),),
    )
    return {str(row[0]): int(row[1]) for row in rows}


_GROUP: Final = "SELECT id, head, entries FROM groups WHERE group_id = ?"
_ORIGINAL: Final = "SELECT position, ts FROM group_posts WHERE sender_id = ? AND client_id = ?"
_INSERT_POST: Final = (
    "INSERT INTO group_posts (position, group_row, sender_id, client_id, kind, head, ts,"
    " envelope) VALUES (?, ?, ?, ?, ?, ?, ?, ?)"
)
_MEMBER_NAMES: Final = (
    "SELECT u.username, m.admin FROM group_members m JOIN users u ON u.id = m.user_id"
    " WHERE m.group_row = ? ORDER BY u.username"
)
# A message in the reader's stream, of a group they are still a member of.
_MARKABLE: Final = """
SELECT p.sender_id, i.delivered_at, i.read_at, p.client_id, s.username, g.group_id
  FROM group_inbox i
  JOIN group_posts p ON p.position = i.position
  JOIN users s ON s.id = p.sender_id
  JOIN groups g ON g.id = p.group_row
  JOIN group_members m ON m.group_row = p.group_row AND m.user_id = i.user_id
 WHERE i.user_id = ?1 AND i.position = ?2 AND i.kind = 'message'
"""
_MARK_READ: Final = (
    "UPDATE group_inbox SET read_at = ?, delivered_at = coalesce(delivered_at, ?)"
    " WHERE user_id = ? AND position = ?"
)
_MARK_DELIVERED: Final = (
    "UPDATE group_inbox SET delivered_at = ? WHERE user_id = ? AND position = ?"
)
# A post's receipt counts, over its readers other than its sender.
_COUNTS: Final = """
SELECT count(i.delivered_at), count(i.read_at), count(*)
  FROM group_inbox i JOIN group_posts p ON p.position = i.position
 WHERE i.position = ? AND i.user_id != p.sender_id
"""
_GROUPS_OF: Final = """
SELECT g.group_id, g.head,
       (SELECT count(*) FROM group_members c WHERE c.group_row = g.id),
       coalesce((SELECT max(i.position) FROM group_inbox i
                  WHERE i.user_id = m.user_id AND i.group_row = g.id), 0) AS last_seq,
       (SELECT count(*) FROM group_inbox u
         WHERE u.user_id = m.user_id AND u.group_row = g.id
           AND u.kind = 'message' AND u.read_at IS NULL)
  FROM group_members m JOIN groups g ON g.id = m.group_row
 WHERE m.user_id = ?1
 ORDER BY last_seq DESC LIMIT ?2
"""
# The user's page of the group's messages (along group_inbox_history), then each one's counts
# over its other readers (along group_inbox_by_position).
_HISTORY: Final = """
SELECT p.position, p.client_id, s.username, p.head, p.ts, p.envelope,
       count(o.delivered_at), count(o.read_at), count(o.user_id)
  FROM (SELECT i.position FROM group_inbox i JOIN groups g ON g.id = i.group_row
         WHERE g.group_id = ?2 AND i.user_id = ?1 AND i.kind = 'message' AND i.position < ?3
         ORDER BY i.position DESC LIMIT ?4) AS mine
  JOIN group_posts p ON p.position = mine.position
  JOIN users s ON s.id = p.sender_id
  LEFT JOIN group_inbox o ON o.position = p.position AND o.user_id != p.sender_id
 GROUP BY p.position, s.username
 ORDER BY p.position DESC
"""


__all__ = ["GroupStore", "forget_posts_of"]
