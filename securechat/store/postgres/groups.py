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

from securechat.store.batch import (
    entry_refusal,
    first_recipient,
    group_view,
    member_change,
    post_envelopes,
    withhold_from,
)
from securechat.store.postgres.database import Database
from securechat.store.postgres.messages import draw_position, lock_positions, move_stream_heads
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


class GroupStore:
    """Named queries over ``groups``, ``group_entries``, ``group_members``, ``group_posts``
    and ``group_inbox``."""

    def __init__(self, db: Database) -> None:
        self.db = db

    async def append_entry(self, entry: NewEntry, now_ms: int) -> GroupWriteOutcome:
        """Append a membership entry and replace the member list, at the next position (see
        ``GroupStore`` in store/interface.py for the refusals). The members kept are carried
        forward by id, the gone by name; only the names the entry brings in are looked up."""

        async def job(connection: asyncpg.Connection) -> GroupWriteOutcome:
            last = await lock_positions(connection)  # FIRST: see every write drawn before
            found = await connection.fetchrow(_GROUP, entry.group_id)
            refusal = entry_refusal(found, entry)
            if refusal is not None:
                return refusal
            current = {} if found is None else await _members(connection, found[0])
            gone = set() if found is None else await _gone(connection, found[0])
            change = member_change(entry, current, gone)
            ids = await _user_ids(connection, change.added)
            members = change.kept | {ids[name]: name for name in change.added if name in ids}
            # Someone added whose account went between the service's check and now: gone.
            gone_after = sorted({*change.gone, *(n for n in change.added if n not in ids)})
            added = sorted(members.keys() - current.keys())
            if await _too_many_groups(connection, added, entry):
                return TOO_MANY_GROUPS
            position = await draw_position(connection, last)
            group_row = await _store_entry(connection, found, entry, position, now_ms)
            admins = set(entry.admins)
            await connection.execute("DELETE FROM group_members WHERE group_row = $1", group_row)
            await connection.executemany(
                "INSERT INTO group_members (group_row, user_id, admin) VALUES ($1, $2, $3)",
                [(group_row, user, int(name in admins)) for user, name in members.items()],
            )
            await connection.execute("DELETE FROM group_gone WHERE group_row = $1", group_row)
            await connection.executemany(
                "INSERT INTO group_gone (group_row, username, admin) VALUES ($1, $2, $3)",
                [(group_row, name, int(name in admins)) for name in gone_after],
            )
            readers = members | change.removed
            await _enter(connection, position, group_row, "entry", dict.fromkeys(readers))
            return GroupStored(position, now_ms, True, await _prevs(connection, position, readers))

        return await self.db.write(job)

    async def post(self, post: NewGroupPost, now_ms: int) -> GroupWriteOutcome:
        """Store a group message or key distribution at the next position (see ``GroupStore``
        in store/interface.py for the refusals); a resend answers its first copy. It does not
        enter the streams of the members who blocked its sender."""

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
            # Pair sends count under the same lock (MessageStore.commit): the bound holds.
            size = len(post.envelope) if post.kind == "message" else 0
            waiting = await connection.fetchval(_UNDELIVERED_BYTES, post.sender_id)
            if size and (waiting or 0) + size > post.bytes_per_sender_max:
                return GROUP_QUEUE_FULL
            blockers = await connection.fetch(_BLOCKERS, post.sender_id, sorted(envelopes))
            envelopes = withhold_from(envelopes, {int(row[0]) for row in blockers})
            position = await draw_position(connection, last)
            await connection.execute(
                _INSERT_POST,
                position, found[0], post.sender_id, post.client_id, post.kind, post.head,
                now_ms, post.envelope, first_recipient(post, members),
                len(envelopes.keys() - {post.sender_id}),
            )  # fmt: skip
            if size:
                await connection.execute(_ADD_BYTES, post.sender_id, size)
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
        No position: the commits' lock is not taken. The post's row is locked first, then
        the reader's (the order an account's deletion takes them in too), so two marks of one
        message count one after the other (and two devices of one reader make one receipt).
        The first delivery gives its envelope's bytes back to its sender's backlog."""

        async def job(connection: asyncpg.Connection) -> GroupMarkOutcome:
            row = await connection.fetchrow(_MARKABLE, reader_id, seq)
            if row is None or row[0] == reader_id:
                return UNKNOWN_MESSAGE
            sender_id, delivered_at, read_at, client_id, sender, group_id = row[:6]
            delivered, seen, readers, size = row[6:]
            if read_at is not None or (status == "delivered" and delivered_at is not None):
                return None  # marks only move forward; read implies delivered
            if status == "read":
                await connection.execute(_MARK_READ, now_ms, reader_id, seq)
                seen += 1
            else:
                await connection.execute(_MARK_DELIVERED, now_ms, reader_id, seq)
            if delivered_at is None:
                delivered += 1
                if delivered == 1:
                    await connection.execute(_GIVE_BACK_BYTES, size, sender_id)
            await connection.execute(_COUNT_MARK, delivered, seen, seq)
            return GroupReceipt(bytes(group_id), client_id, sender, delivered, seen, readers)

        return await self.db.write(job)

    async def membership(self, group_id: bytes, user_id: int) -> GroupMembership | None:
        """The group's head and sizes, if ``user_id`` is a member; else None."""
        row = await self.db.fetch_one(_MEMBERSHIP, group_id, user_id)
        return None if row is None else GroupMembership(bytes(row[0]), row[1], row[2], row[3])

    async def group(self, group_id: bytes, member_id: int | None = None) -> GroupView | None:
        """The group's chain and member list, read by one statement (one snapshot); None when
        there is no such group, or ``member_id`` is given and is not a member."""
        rows = await self.db.fetch_all(_VIEW, group_id, member_id or 0)
        return group_view(group_id, rows, member_id)

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


async def lock_posts_of(connection: asyncpg.Connection, user_id: int) -> None:
    """Lock an account's group posts before their stream rows are deleted: a mark locks a
    post's row before its reader's, and so must the deletion, or the two could deadlock."""
    await connection.execute(
        "SELECT 1 FROM group_posts WHERE sender_id = $1 ORDER BY position FOR UPDATE", user_id
    )


async def forget_posts_of(connection: asyncpg.Connection, user_id: int) -> None:
    """Take an account's group posts out of every stream they entered (the posts themselves
    go with the account, ON DELETE CASCADE): in the transaction that deletes the account,
    after ``stream_peers`` (which takes the commits' lock) and before ``recount_heads``."""
    await connection.execute(
        "DELETE FROM group_inbox WHERE position IN"
        " (SELECT position FROM group_posts WHERE sender_id = $1)",
        user_id,
    )


async def note_gone(connection: asyncpg.Connection, user_id: int, username: str) -> None:
    """Keep an account's name in the member lists of its groups as gone (the chains still
    name it): in the transaction that deletes the account, before the delete."""
    await connection.execute(
        "INSERT INTO group_gone (group_row, username, admin) SELECT group_row, $1, admin"
        " FROM group_members WHERE user_id = $2 ON CONFLICT DO NOTHING",
        username,
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
                "INSERT INTO groups (group_id, head, entries, bytes, created_at)"
                " VALUES ($1, $2, 1, $3, $4) RETURNING id",
                entry.group_id,
                entry.head,
                len(entry.entry),
                now_ms,
            )
        )
    else:
        group_row = int(found[0])
        await connection.execute(
            "UPDATE groups SET head = $1, entries = entries + 1, bytes = bytes + $2 WHERE id = $3",
            entry.head,
            len(entry.entry),
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


async def _gone(connection: asyncpg.Connection, group_row: int) -> set[str]:
    rows = await connection.fetch("SELECT username FROM group_gone WHERE group_row = $1", group_row)
    return {str(row[0]) for row in rows}


async def _user_ids(connection: asyncpg.Connection, names: Iterable[str]) -> dict[str, int]:
    rows = await connection.fetch(
        "SELECT username, id FROM users WHERE username = ANY($1::text[])", sorted(set(names))
    )
    return {str(row[0]): int(row[1]) for row in rows}


_GROUP: Final = "SELECT id, head, entries FROM groups WHERE group_id = $1"
_ORIGINAL: Final = "SELECT position, ts FROM group_posts WHERE sender_id = $1 AND client_id = $2"
_INSERT_POST: Final = (
    "INSERT INTO group_posts (position, group_row, sender_id, client_id, kind, head, ts,"
    " envelope, to_id, readers) VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10)"
)
# A group message's bytes in its sender's backlog (store/batch.Backlog's bytes, the same row
# pair sends count in), from its commit to its first delivery.
_UNDELIVERED_BYTES: Final = "SELECT bytes FROM undelivered_senders WHERE sender_id = $1"
_ADD_BYTES: Final = (
    "INSERT INTO undelivered_senders (sender_id, bytes) VALUES ($1, $2)"
    " ON CONFLICT (sender_id) DO UPDATE SET bytes = undelivered_senders.bytes + excluded.bytes"
)
_GIVE_BACK_BYTES: Final = (
    "UPDATE undelivered_senders SET bytes = greatest(bytes - $1, 0) WHERE sender_id = $2"
)
_BLOCKERS: Final = (
    "SELECT owner_id FROM contacts WHERE peer_id = $1 AND state = 'blocked'"
    " AND owner_id = ANY($2::bigint[])"
)
_MEMBERSHIP: Final = """
SELECT g.head, g.entries,
       (SELECT count(*) FROM group_members c WHERE c.group_row = g.id)
       + (SELECT count(*) FROM group_gone o WHERE o.group_row = g.id), g.bytes
  FROM groups g JOIN group_members m ON m.group_row = g.id AND m.user_id = $2
 WHERE g.group_id = $1
"""
# The whole group in one statement, so one snapshot (see store/batch.group_view).
_VIEW: Final = """
WITH g AS (SELECT id, head FROM groups WHERE group_id = $1)
SELECT 0 AS part, g.head AS blob, NULL::text AS name, 0::bigint AS admin, false AS me,
       0::bigint AS idx FROM g
UNION ALL
SELECT 1, e.entry, NULL, 0, false, e.idx FROM g JOIN group_entries e ON e.group_row = g.id
UNION ALL
SELECT 2, NULL, u.username, m.admin, m.user_id = $2, 0
  FROM g JOIN group_members m ON m.group_row = g.id JOIN users u ON u.id = m.user_id
UNION ALL
SELECT 3, NULL, o.username, o.admin, false, 0 FROM g JOIN group_gone o ON o.group_row = g.id
ORDER BY part, idx
"""
# A message in the reader's stream, of a group they are still a member of, with its counts;
# the post's row and the reader's locked to the end of the mark, in that order.
_MARKABLE: Final = """
SELECT p.sender_id, i.delivered_at, i.read_at, p.client_id, s.username, g.group_id,
       p.delivered, p.seen, p.readers, length(p.envelope)
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
_COUNT_MARK: Final = "UPDATE group_posts SET delivered = $1, seen = $2 WHERE position = $3"
_GROUPS_OF: Final = """
SELECT g.group_id, g.head,
       (SELECT count(*) FROM group_members c WHERE c.group_row = g.id)
       + (SELECT count(*) FROM group_gone o WHERE o.group_row = g.id),
       coalesce((SELECT max(i.position) FROM group_inbox i
                  WHERE i.user_id = m.user_id AND i.group_row = g.id), 0) AS last_seq,
       (SELECT count(*) FROM group_inbox u
         WHERE u.user_id = m.user_id AND u.group_row = g.id
           AND u.read_at IS NULL AND u.kind = 'message')
  FROM group_members m JOIN groups g ON g.id = m.group_row
 WHERE m.user_id = $1
 ORDER BY last_seq DESC LIMIT $2
"""
# The user's page of the group's messages (along group_inbox_history), with each one's counts.
_HISTORY: Final = """
SELECT p.position, p.client_id, s.username, p.head, p.ts, p.envelope,
       p.delivered, p.seen, p.readers
  FROM (SELECT i.position FROM group_inbox i JOIN groups g ON g.id = i.group_row
         WHERE g.group_id = $2 AND i.user_id = $1 AND i.kind = 'message' AND i.position < $3
         ORDER BY i.position DESC LIMIT $4) AS mine
  JOIN group_posts p ON p.position = mine.position
  JOIN users s ON s.id = p.sender_id
 ORDER BY p.position DESC
"""


__all__ = ["GroupStore", "forget_posts_of", "lock_posts_of", "note_gone"]
