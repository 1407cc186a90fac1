"""Groups on PostgreSQL (issue 13): the SQLite backend's group store (store/sqlite/groups.py)
for a cluster, with the same decisions (store/batch.py).

Every write that takes a position first locks the ``chat_sequence`` row, the lock
``MessageStore.commit`` draws positions under, and holds it to its commit: group positions and
pairwise ones become visible in the order they were drawn, so a cursor follower never passes
one that commits late. A serialization failure or deadlock is retried once (``Database.write``).
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import Final

import asyncpg

from securechat.store.batch import entry_refusal, post_envelopes
from securechat.store.postgres.database import Database
from securechat.store.postgres.messages import draw_position, lock_positions, move_stream_heads
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


class GroupStore:
    """Named queries over ``groups``, ``group_entries``, ``group_members``, ``group_posts``
    and ``group_inbox``."""

    def __init__(self, db: Database) -> None:
        self.db = db

    async def append_entry(self, entry: NewEntry, now_ms: int) -> GroupWriteOutcome:
        """Append a membership entry and replace the member list, at the next position (see
        ``GroupStore`` in store/interface.py for the refusals)."""

        async def job(connection: asyncpg.Connection) -> GroupWriteOutcome:
            last = await lock_positions(connection)  # FIRST: see every write drawn before
            found = await connection.fetchrow(_GROUP, entry.group_id)
            refusal = entry_refusal(found, entry)
            if refusal is not None:
                return refusal
            ids = await _user_ids(connection, [*entry.members, *entry.removed])
            members = {ids[name]: name for name in entry.members if name in ids}
            current = set() if found is None else await _member_ids(connection, found[0])
            if await _too_many_groups(connection, sorted(members.keys() - current), entry):
                return TOO_MANY_GROUPS
            position = await draw_position(connection, last)
            group_row = await _store_entry(connection, found, entry, position, now_ms)
            admins = set(entry.admins)
            await connection.execute("DELETE FROM group_members WHERE group_row = $1", group_row)
            await connection.executemany(
                "INSERT INTO group_members (group_row, user_id, admin) VALUES ($1, $2, $3)",
                [(group_row, user, int(name in admins)) for user, name in members.items()],
            )
            readers = members | {ids[name]: name for name in entry.removed if name in ids}
            await _enter(connection, position, group_row, "entry", dict.fromkeys(readers))
            return GroupStored(position, now_ms, True, await _prevs(connection, position, readers))

        return await self.db.write(job)

    async def post(self, post: NewGroupPost, now_ms: int) -> GroupWriteOutcome:
        """Store a group message or key distribution at the next position (see ``GroupStore``
        in store/interface.py for the refusals); a resend answers its first copy."""

        async def job(connection: asyncpg.Connection) -> GroupWriteOutcome:
            last = await lock_positions(connection)
            # The resend first (after the lock: a first copy another node committed is seen).
            original = await connection.fetchrow(_ORIGINAL, post.sender_id, post.client_id)
            if original is not None:
                return GroupStored(int(original[0]), int(original[1]), False, {})
            found = await connection.fetchrow(_GROUP, post.group_id)
            if found is None:
                return UNKNOWN_GROUP
            members = await _members(connection, found[0])
            if post.sender_id not in members:
                return UNKNOWN_GROUP
            if bytes(found[1]) != post.head:
                return STALE_HEAD
            envelopes = post_envelopes(post, members)
            if envelopes is None:
                return NOT_ANOTHER_MEMBER
            position = await draw_position(connection, last)
            await connection.execute(
                _INSERT_POST,
                position, found[0], post.sender_id, post.client_id, post.kind, post.head,
                now_ms, post.envelope,
            )  # fmt: skip
            # The sender's own copy of a message is read already: it counts as no one's unread.
            seen = now_ms if post.kind == "message" else None
            await _enter(connection, position, found[0], post.kind, envelopes, post.sender_id, seen)
            readers = {user: members[user] for user in envelopes}
            return GroupStored(position, now_ms, True, await _prevs(connection, position, readers))

        return await self.db.write(job)

    async def mark(
        self, reader_id: int, seq: int, status: MarkStatus, now_ms: int
    ) -> GroupMarkOutcome:
        """Mark a group message delivered or read for one member; its counts if they moved.
        No position: the commits' lock is not taken. The post's row is locked instead, so
        two marks of one message count one after the other (and two devices of one reader
        make one receipt)."""

        async def job(connection: asyncpg.Connection) -> GroupMarkOutcome:
            row = await connection.fetchrow(_MARKABLE, reader_id, seq)
            if row is None or row[0] == reader_id:
                return UNKNOWN_MESSAGE
            _, delivered_at, read_at, client_id, sender, group_id = row
            if read_at is not None or (status == "delivered" and delivered_at is not None):
                return None  # marks only move forward; read implies delivered
            if status == "read":
                await connection.execute(_MARK_READ, now_ms, reader_id, seq)
            else:
                await connection.execute(_MARK_DELIVERED, now_ms, reader_id, seq)
            delivered, read, others = await connection.fetchrow(_COUNTS, seq)
            return GroupReceipt(bytes(group_id), client_id, sender, delivered, read, others)

        return await self.db.write(job)

    async def group(self, group_id: bytes) -> GroupView | None:
        """The group's chain and member list, or None."""
        found = await self.db.fetch_one(_GROUP, group_id)
        if found is None:
            return None
        entries = await self.db.fetch_all(
            "SELECT entry FROM group_entries WHERE group_row = $1 ORDER BY idx", found[0]
        )
        members = await self.db.fetch_all(_MEMBER_NAMES, found[0])
        return GroupView(
            group_id,
            bytes(found[1]),
            [bytes(row[0]) for row in entries],
            [str(row[0]) for row in members],
            [str(row[0]) for row in members if row[1]],
        )

    async def groups_of(self, user_id: int, limit: int) -> list[GroupSummary]:
        """The user's groups, the latest position in their stream first."""
        rows = await self.db.fetch_all(_GROUPS_OF, user_id, limit)
        return [GroupSummary(bytes(r[0]), bytes(r[1]), r[2], r[3], r[4]) for r in rows]

    async def history(
        self, user_id: int, group_id: bytes, before: int, limit: int
    ) -> list[GroupHistoryItem]:
        """The group's messages in the user's stream, ``seq < before``, newest first."""
        rows = await self.db.fetch_all(_HISTORY, user_id, group_id, before, limit)
        return [
            GroupHistoryItem(r[0], r[1], r[2], bytes(r[3]), r[4], r[5], r[6], r[7], r[8])
            for r in rows
        ]


async def forget_posts_of(connection: asyncpg.Connection, user_id: int) -> None:
    """Take an account's group posts out of every stream they entered (the posts themselves
    go with the account, ON DELETE CASCADE): in the transaction that deletes the account,
    after ``stream_peers`` (which takes the commits' lock) and before ``recount_heads``."""
    await connection.execute(
        "DELETE FROM group_inbox WHERE position IN"
        " (SELECT position FROM group_posts WHERE sender_id = $1)",
        user_id,
    )


async def _store_entry(
    connection: asyncpg.Connection,
    found: asyncpg.Record | None,
    entry: NewEntry,
    position: int,
    now_ms: int,
) -> int:
    """Create the group or move its head; append the entry; the group's row id."""
    if found is None:
        group_row = int(
            await connection.fetchval(
                "INSERT INTO groups (group_id, head, entries, created_at)"
                " VALUES ($1, $2, 1, $3) RETURNING id",
                entry.group_id,
                entry.head,
                now_ms,
            )
        )
    else:
        group_row = int(found[0])
        await connection.execute(
            "UPDATE groups SET head = $1, entries = entries + 1 WHERE id = $2",
            entry.head,
            group_row,
        )
    await connection.execute(
        "INSERT INTO group_entries (group_row, idx, position, entry, ts)"
        " VALUES ($1, $2, $3, $4, $5)",
        group_row,
        entry.index,
        position,
        entry.entry,
        now_ms,
    )
    return group_row


async def _too_many_groups(
    connection: asyncpg.Connection, added: list[int], entry: NewEntry
) -> bool:
    """Whether anyone the entry adds is in ``groups_per_user_max`` groups already."""
    if not added:
        return False
    most = await connection.fetchval(
        "SELECT max(n) FROM (SELECT count(*) AS n FROM group_members"
        " WHERE user_id = ANY($1::bigint[]) GROUP BY user_id) AS counts",
        added,
    )
    return most is not None and int(most) >= entry.groups_per_user_max


async def _enter(
    connection: asyncpg.Connection,
    position: int,
    group_row: int,
    kind: str,
    envelopes: Mapping[int, str | None],
    sender_id: int = 0,
    seen: int | None = None,
) -> None:
    """Enter ``position`` into each user's stream, with their own envelope if any; the
    sender's row marked ``seen``."""
    users = sorted(envelopes)
    marks = [seen if user == sender_id else None for user in users]
    await connection.execute(
        "INSERT INTO group_inbox (user_id, position, group_row, kind, envelope, delivered_at,"
        " read_at) SELECT u, $2, $3, $4, e, m, m"
        " FROM unnest($1::bigint[], $5::text[], $6::bigint[]) AS r(u, e, m)",
        users,
        position,
        group_row,
        kind,
        [envelopes[user] for user in users],
        marks,
    )


async def _prevs(
    connection: asyncpg.Connection, position: int, readers: Mapping[int, str]
) -> dict[str, int]:
    """Move the readers' stream heads to ``position``; each one's previous head, by name."""
    prevs = await move_stream_heads(connection, [(position, frozenset(readers))])
    return {name: prevs[(user, position)] for user, name in readers.items()}


async def _members(connection: asyncpg.Connection, group_row: int) -> dict[int, str]:
    rows = await connection.fetch(
        "SELECT m.user_id, u.username FROM group_members m JOIN users u ON u.id = m.user_id"
        " WHERE m.group_row = $1",
        group_row,
    )
    return {int(row[0]): str(row[1]) for row in rows}


async def _member_ids(connection: asyncpg.Connection, group_row: int) -> set[int]:
    rows = await connection.fetch(
        "SELECT user_id FROM group_members WHERE group_row = $1", group_row
    )
    return {int(row[0]) for row in rows}


async def _user_ids(connection: asyncpg.Connection, names: Iterable[str]) -> dict[str, int]:
    rows = await connection.fetch(
        "SELECT username, id FROM users WHERE username = ANY($1::text[])", sorted(set(names))
    )
    return {str(row[0]): int(row[1]) for row in rows}


_GROUP: Final = "SELECT id, head, entries FROM groups WHERE group_id = $1"
_ORIGINAL: Final = "SELECT position, ts FROM group_posts WHERE sender_id = $1 AND client_id = $2"
_INSERT_POST: Final = (
    "INSERT INTO group_posts (position, group_row, sender_id, client_id, kind, head, ts,"
    " envelope) VALUES ($1, $2, $3, $4, $5, $6, $7, $8)"
)
_MEMBER_NAMES: Final = (
    "SELECT u.username, m.admin FROM group_members m JOIN users u ON u.id = m.user_id"
    " WHERE m.group_row = $1 ORDER BY u.username"
)
# A message in the reader's stream, of a group they are still a member of; its row and the
# reader's locked to the end of the mark.
_MARKABLE: Final = """
SELECT p.sender_id, i.delivered_at, i.read_at, p.client_id, s.username, g.group_id
  FROM group_inbox i
  JOIN group_posts p ON p.position = i.position
  JOIN users s ON s.id = p.sender_id
  JOIN groups g ON g.id = p.group_row
  JOIN group_members m ON m.group_row = p.group_row AND m.user_id = i.user_id
 WHERE i.user_id = $1 AND i.position = $2 AND i.kind = 'message'
   FOR UPDATE OF p, i
"""
_MARK_READ: Final = (
    "UPDATE group_inbox SET read_at = $1, delivered_at = coalesce(delivered_at, $1)"
    " WHERE user_id = $2 AND position = $3"
)
_MARK_DELIVERED: Final = (
    "UPDATE group_inbox SET delivered_at = $1 WHERE user_id = $2 AND position = $3"
)
# A post's receipt counts, over its readers other than its sender.
_COUNTS: Final = """
SELECT count(i.delivered_at), count(i.read_at), count(*)
  FROM group_inbox i JOIN group_posts p ON p.position = i.position
 WHERE i.position = $1 AND i.user_id <> p.sender_id
"""
_GROUPS_OF: Final = """
SELECT g.group_id, g.head,
       (SELECT count(*) FROM group_members c WHERE c.group_row = g.id),
       coalesce((SELECT max(i.position) FROM group_inbox i
                  WHERE i.user_id = m.user_id AND i.group_row = g.id), 0) AS last_seq,
       (SELECT count(*) FROM group_inbox u
         WHERE u.user_id = m.user_id AND u.group_row = g.id
           AND u.read_at IS NULL AND u.kind = 'message')
  FROM group_members m JOIN groups g ON g.id = m.group_row
 WHERE m.user_id = $1
 ORDER BY last_seq DESC LIMIT $2
"""
# The user's page of the group's messages (along group_inbox_history), then each one's counts
# over its other readers (along group_inbox_by_position).
_HISTORY: Final = """
SELECT p.position, p.client_id, s.username, p.head, p.ts, p.envelope,
       count(o.delivered_at), count(o.read_at), count(o.user_id)
  FROM (SELECT i.position FROM group_inbox i JOIN groups g ON g.id = i.group_row
         WHERE g.group_id = $2 AND i.user_id = $1 AND i.kind = 'message' AND i.position < $3
         ORDER BY i.position DESC LIMIT $4) AS mine
  JOIN group_posts p ON p.position = mine.position
  JOIN users s ON s.id = p.sender_id
  LEFT JOIN group_inbox o ON o.position = p.position AND o.user_id <> p.sender_id
 GROUP BY p.position, s.username
 ORDER BY p.position DESC
"""


__all__ = ["GroupStore", "forget_posts_of"]
