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

from securechat.store.batch import (
    entry_refusal,
    first_recipient,
    group_view,
    member_change,
    post_envelopes,
    withhold_from,
)
from securechat.store.records import (
    GROUP_QUEUE_FULL,
    NOT_ANOTHER_MEMBER,
    STALE_HEAD,
    TOO_MANY_GROUPS,
    UNKNOWN_GROUP,
    UNKNOWN_MESSAGE,
    GroupHistoryItem,
    GroupMarkOutcome,
    GroupMembership,
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
        ``GroupStore`` in store/interface.py for the refusals). The members kept are carried
        forward by id, the gone by name; only the names the entry brings in are looked up."""

        def job(connection: sqlite3.Connection) -> GroupWriteOutcome:
            found = connection.execute(_GROUP, (entry.group_id,)).fetchone()
            refusal = entry_refusal(found, entry)
            if refusal is not None:
                return refusal
            current = {} if found is None else _members(connection, found[0])
            gone = set() if found is None else _gone(connection, found[0])
            change = member_change(entry, current, gone)
            ids = _user_ids(connection, change.added)
            members = change.kept | {ids[name]: name for name in change.added if name in ids}
            # Someone added whose account went between the service's check and now: gone.
            gone_after = sorted({*change.gone, *(n for n in change.added if n not in ids)})
            if _too_many_groups(connection, sorted(members.keys() - current.keys()), entry):
                return TOO_MANY_GROUPS
            position = _next_position(connection)
            group_row = _store_entry(connection, found, entry, position, now_ms)
            admins = set(entry.admins)
            connection.execute("DELETE FROM group_members WHERE group_row = ?", (group_row,))
            connection.executemany(
                "INSERT INTO group_members (group_row, user_id, admin) VALUES (?, ?, ?)",
                [(group_row, user, int(name in admins)) for user, name in members.items()],
            )
            connection.execute("DELETE FROM group_gone WHERE group_row = ?", (group_row,))
            connection.executemany(
                "INSERT INTO group_gone (group_row, username, admin) VALUES (?, ?, ?)",
                [(group_row, name, int(name in admins)) for name in gone_after],
            )
            readers = members | change.removed
            _enter(connection, position, group_row, "entry", {user: None for user in readers})
            return GroupStored(position, now_ms, True, _prevs(connection, position, readers))

        return await self.db.write(job)

    async def post(self, post: NewGroupPost, now_ms: int) -> GroupWriteOutcome:
        """Store a group message or key distribution at the next position (see ``GroupStore``
        in store/interface.py for the refusals); a resend answers its first copy. It does not
        enter the streams of the members who blocked its sender."""

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
            size = len(post.envelope) if post.kind == "message" else 0
            if size and _undelivered_bytes(connection, post.sender_id) + size > (
                post.bytes_per_sender_max
            ):
                return GROUP_QUEUE_FULL
            blockers = _blockers(connection, post.sender_id, envelopes.keys())
            envelopes = withhold_from(envelopes, blockers)
            position = _next_position(connection)
            connection.execute(
                _INSERT_POST,
                (position, found[0], post.sender_id, post.client_id, post.kind, post.head,
                 now_ms, post.envelope, first_recipient(post, members),
                 len(envelopes.keys() - {post.sender_id})),
            )  # fmt: skip
            if size:
                connection.execute(_ADD_BYTES, (post.sender_id, size))
            # The sender's own copy of a message is read already: it counts as no one's unread.
            seen = now_ms if post.kind == "message" else None
            _enter(connection, position, found[0], post.kind, envelopes, post.sender_id, seen)
            readers = {user: members[user] for user in envelopes}
            return GroupStored(position, now_ms, True, _prevs(connection, position, readers))

        return await self.db.write(job)

    async def mark(
        self, reader_id: int, seq: int, status: MarkStatus, now_ms: int
    ) -> GroupMarkOutcome:
        """Mark a group message delivered or read for one member; its counts if they moved.
        The first delivery gives its envelope's bytes back to its sender's backlog."""

        def job(connection: sqlite3.Connection) -> GroupMarkOutcome:
            row = connection.execute(_MARKABLE, (reader_id, seq)).fetchone()
            if row is None or row[0] == reader_id:
                return UNKNOWN_MESSAGE
            sender_id, delivered_at, read_at, client_id, sender, group_id = row[:6]
            delivered, seen, readers, size = row[6:]
            if read_at is not None or (status == "delivered" and delivered_at is not None):
                return None  # marks only move forward; read implies delivered
            if status == "read":
                connection.execute(_MARK_READ, (now_ms, now_ms, reader_id, seq))
                seen += 1
            else:
                connection.execute(_MARK_DELIVERED, (now_ms, reader_id, seq))
            if delivered_at is None:
                delivered += 1
                if delivered == 1:
                    connection.execute(_GIVE_BACK_BYTES, (size, sender_id))
            connection.execute(_COUNT_MARK, (delivered, seen, seq))
            return GroupReceipt(bytes(group_id), client_id, sender, delivered, seen, readers)

        return await self.db.write(job)

    async def membership(self, group_id: bytes, user_id: int) -> GroupMembership | None:
        """The group's head and sizes, if ``user_id`` is a member; else None."""
        row = await self.db.fetch_one(_MEMBERSHIP, (group_id, user_id))
        return None if row is None else GroupMembership(bytes(row[0]), row[1], row[2], row[3])

    async def group(self, group_id: bytes, member_id: int | None = None) -> GroupView | None:
        """The group's chain and member list, read by one statement (one snapshot); None when
        there is no such group, or ``member_id`` is given and is not a member."""
        rows = await self.db.fetch_all(_VIEW, (group_id, member_id or 0))
        return group_view(group_id, rows, member_id)

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


def note_gone(connection: sqlite3.Connection, user_id: int, username: str) -> None:
    """Keep an account's name in the member lists of its groups as gone (the chains still
    name it): in the job that deletes the account, before the delete."""
    connection.execute(
        "INSERT INTO group_gone (group_row, username, admin) SELECT group_row, ?, admin"
        " FROM group_members WHERE user_id = ? ON CONFLICT DO NOTHING",
        (username, user_id),
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
            "INSERT INTO groups (group_id, head, entries, bytes, created_at)"
            " VALUES (?, ?, 1, ?, ?)",
            (entry.group_id, entry.head, len(entry.entry), now_ms),
        )
        assert cursor.lastrowid is not None
        group_row = cursor.lastrowid
    else:
        group_row = int(found[0])
        connection.execute(
            "UPDATE groups SET head = ?, entries = entries + 1, bytes = bytes + ? WHERE id = ?",
            (entry.head, len(entry.entry), group_row),
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


def _gone(connection: sqlite3.Connection, group_row: int) -> set[str]:
    rows = connection.execute("SELECT username FROM group_gone WHERE group_row = ?", (group_row,))
    return {str(row[0]) for row in rows}


def _blockers(connection: sqlite3.Connection, sender_id: int, users: Iterable[int]) -> set[int]:
    """Those of ``users`` who blocked ``sender_id`` (along contacts_by_peer)."""
    rows = connection.execute(_BLOCKERS, (sender_id, json.dumps(sorted(users))))
    return {int(row[0]) for row in rows}


def _undelivered_bytes(connection: sqlite3.Connection, sender_id: int) -> int:
    row = connection.execute(
        "SELECT bytes FROM undelivered_senders WHERE sender_id = ?", (sender_id,)
    ).fetchone()
    return 0 if row is None else int(row[0])


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
    " envelope, to_id, readers) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?)"
)
# A group message's bytes in its sender's backlog (store/batch.Backlog's bytes, the same row
# pair sends count in), from its commit to its first delivery.
_ADD_BYTES: Final = (
    "INSERT INTO undelivered_senders (sender_id, bytes) VALUES (?1, ?2)"
    " ON CONFLICT (sender_id) DO UPDATE SET bytes = bytes + excluded.bytes"
)
_GIVE_BACK_BYTES: Final = (
    "UPDATE undelivered_senders SET bytes = max(bytes - ?, 0) WHERE sender_id = ?"
)
_BLOCKERS: Final = (
    "SELECT owner_id FROM contacts WHERE peer_id = ? AND state = 'blocked'"
    " AND owner_id IN (SELECT value FROM json_each(?))"
)
_MEMBERSHIP: Final = """
SELECT g.head, g.entries,
       (SELECT count(*) FROM group_members c WHERE c.group_row = g.id)
       + (SELECT count(*) FROM group_gone o WHERE o.group_row = g.id), g.bytes
  FROM groups g JOIN group_members m ON m.group_row = g.id AND m.user_id = ?2
 WHERE g.group_id = ?1
"""
# The whole group in one statement, so one snapshot (see group_view).
_VIEW: Final = """
WITH g AS (SELECT id, head FROM groups WHERE group_id = ?1)
SELECT 0 AS part, g.head AS blob, NULL AS name, 0 AS admin, 0 AS me, 0 AS idx FROM g
UNION ALL
SELECT 1, e.entry, NULL, 0, 0, e.idx FROM g JOIN group_entries e ON e.group_row = g.id
UNION ALL
SELECT 2, NULL, u.username, m.admin, m.user_id = ?2, 0
  FROM g JOIN group_members m ON m.group_row = g.id JOIN users u ON u.id = m.user_id
UNION ALL
SELECT 3, NULL, o.username, o.admin, 0, 0 FROM g JOIN group_gone o ON o.group_row = g.id
ORDER BY part, idx
"""
# A message in the reader's stream, of a group they are still a member of, with its counts.
_MARKABLE: Final = """
SELECT p.sender_id, i.delivered_at, i.read_at, p.client_id, s.username, g.group_id,
       p.delivered, p.seen, p.readers, length(p.envelope)
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
_COUNT_MARK: Final = "UPDATE group_posts SET delivered = ?, seen = ? WHERE position = ?"
_GROUPS_OF: Final = """
SELECT g.group_id, g.head,
       (SELECT count(*) FROM group_members c WHERE c.group_row = g.id)
       + (SELECT count(*) FROM group_gone o WHERE o.group_row = g.id),
       coalesce((SELECT max(i.position) FROM group_inbox i
                  WHERE i.user_id = m.user_id AND i.group_row = g.id), 0) AS last_seq,
       (SELECT count(*) FROM group_inbox u
         WHERE u.user_id = m.user_id AND u.group_row = g.id
           AND u.kind = 'message' AND u.read_at IS NULL)
  FROM group_members m JOIN groups g ON g.id = m.group_row
 WHERE m.user_id = ?1
 ORDER BY last_seq DESC LIMIT ?2
"""
# The user's page of the group's messages (along group_inbox_history), with each one's counts.
_HISTORY: Final = """
SELECT p.position, p.client_id, s.username, p.head, p.ts, p.envelope,
       p.delivered, p.seen, p.readers
  FROM (SELECT i.position FROM group_inbox i JOIN groups g ON g.id = i.group_row
         WHERE g.group_id = ?2 AND i.user_id = ?1 AND i.kind = 'message' AND i.position < ?3
         ORDER BY i.position DESC LIMIT ?4) AS mine
  JOIN group_posts p ON p.position = mine.position
  JOIN users s ON s.id = p.sender_id
 ORDER BY p.position DESC
"""


__all__ = ["GroupStore", "forget_posts_of", "note_gone"]
