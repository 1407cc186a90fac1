"""An account's end and the operator's hold on it, on PostgreSQL: the same queries as
``store/sqlite/lifecycle.py``, with the same results and errors."""

from __future__ import annotations

from typing import Final

import asyncpg

from securechat.errors import NotFound
from securechat.store.keylog import next_tombstone
from securechat.store.postgres.database import Database
from securechat.store.postgres.directory import append_entry
from securechat.store.postgres.groups import forget_posts_of, lock_posts_of, note_gone
from securechat.store.postgres.messages import recount_heads, stream_peers
from securechat.store.records import OperatorAction, UserSummary

# pg_advisory_xact_lock key serialising the audit trail's appends, so its ids commit in the
# order they are drawn and a server following ``actions_after`` never passes one that commits
# later (an identity alone would let two transactions commit out of order).
OPERATOR_ACTIONS_LOCK: Final = 0x5EC0C4A9

_SUMMARY = (
    "SELECT u.id, u.username, u.created_at, u.keys_updated_at, d.disabled_at,"
    " (SELECT count(*) FROM sessions s WHERE s.user_id = u.id AND s.revoked_at IS NULL"
    " AND s.expires_at > $1) FROM users u LEFT JOIN disabled_users d ON d.user_id = u.id"
)


class LifecycleStore:
    """Named queries over ``username_quarantine``, ``disabled_users`` and ``operator_actions``."""

    def __init__(self, db: Database) -> None:
        self.db = db

    async def delete_user(self, username: str, quarantine_until_ms: int, now_ms: int) -> list[str]:
        """Tombstone, quarantine and remove the user in one transaction; its live sessions' ids.

        The tombstone is appended first, under the key log's lock: a registration of the name
        racing with this one checks the quarantine after taking that lock (AccountStore.add_user),
        so it sees the row committed here."""

        async def job(connection: asyncpg.Connection) -> list[str]:
            await append_entry(connection, lambda last: next_tombstone(last, username, now_ms))
            user_id = await _user_id(connection, username)
            sessions = await _live_session_ids(connection, user_id)
            # The commits' lock first (before any row they also write): no deadlock with one.
            peers = await stream_peers(connection, user_id)
            # What the senders' backlog toward it gives back, read now (the commits' lock
            # holds it still) and written after the delete: a group mark locks its reader's
            # rows before a sender's count, and the delete's cascade takes them in that order.
            given_back = await connection.fetch(
                "SELECT sender_id, sum(length(envelope)) FROM messages"
                " WHERE recipient_id = $1 AND delivered_at IS NULL GROUP BY sender_id"
                " ORDER BY sender_id",
                user_id,
            )
            await lock_posts_of(connection, user_id)  # a mark's order: the post, then the rows
            await forget_posts_of(connection, user_id)  # its group posts leave the streams
            await note_gone(connection, user_id, username)  # its name stays in its groups
            # ON DELETE CASCADE takes the rest, group memberships and posts too.
            await connection.execute("DELETE FROM users WHERE id = $1", user_id)
            await connection.executemany(
                "UPDATE undelivered_senders SET bytes = bytes - $2 WHERE sender_id = $1",
                [(int(row[0]), int(row[1])) for row in given_back],
            )
            await recount_heads(connection, peers)  # their streams lost those positions
            await connection.execute(
                "INSERT INTO username_quarantine (username, deleted_at, until_ms)"
                " VALUES ($1, $2, $3) ON CONFLICT (username) DO UPDATE"
                " SET deleted_at = excluded.deleted_at, until_ms = excluded.until_ms",
                username,
                now_ms,
                quarantine_until_ms,
            )
            return sessions

        return await self.db.write(job)

    async def quarantine_until(self, username: str, now_ms: int) -> int | None:
        value = await self.db.fetch_value(
            "SELECT until_ms FROM username_quarantine WHERE username = $1 AND until_ms > $2",
            username,
            now_ms,
        )
        return None if value is None else int(value)

    async def set_disabled(self, username: str, disabled: bool, now_ms: int) -> list[str]:
        async def job(connection: asyncpg.Connection) -> list[str]:
            user_id = await _user_id(connection, username)
            if not disabled:
                await connection.execute("DELETE FROM disabled_users WHERE user_id = $1", user_id)
                return []
            await connection.execute(
                "INSERT INTO disabled_users (user_id, disabled_at) VALUES ($1, $2)"
                " ON CONFLICT (user_id) DO NOTHING",
                user_id,
                now_ms,
            )
            return await _revoke_all(connection, user_id, now_ms)

        return await self.db.write(job)

    async def is_disabled(self, user_id: int) -> bool:
        value = await self.db.fetch_value(
            "SELECT 1 FROM disabled_users WHERE user_id = $1", user_id
        )
        return value is not None

    async def withdraw_keys(self, username: str, now_ms: int) -> list[str]:
        async def job(connection: asyncpg.Connection) -> list[str]:
            user_id = await _user_id(connection, username)
            await append_entry(connection, lambda last: next_tombstone(last, username, now_ms))
            return await _revoke_all(connection, user_id, now_ms)

        return await self.db.write(job)

    async def revoke_all(self, username: str, now_ms: int) -> list[str]:
        async def job(connection: asyncpg.Connection) -> list[str]:
            user_id = await _user_id(connection, username)
            return await _revoke_all(connection, user_id, now_ms)

        return await self.db.write(job)

    async def users(self, after: str, limit: int, now_ms: int) -> list[UserSummary]:
        rows = await self.db.fetch_all(
            f"{_SUMMARY} WHERE u.username > $2 ORDER BY u.username LIMIT $3", now_ms, after, limit
        )
        return [_summary(row) for row in rows]

    async def user_summary(self, username: str, now_ms: int) -> UserSummary | None:
        row = await self.db.fetch_one(f"{_SUMMARY} WHERE u.username = $2", now_ms, username)
        return _summary(row) if row else None

    async def record_action(self, action: str, username: str, detail: str, now_ms: int) -> int:
        async def job(connection: asyncpg.Connection) -> int:
            await connection.execute("SELECT pg_advisory_xact_lock($1)", OPERATOR_ACTIONS_LOCK)
            action_id: int = await connection.fetchval(
                "INSERT INTO operator_actions (at_ms, action, username, detail)"
                " VALUES ($1, $2, $3, $4) RETURNING id",
                now_ms,
                action,
                username,
                detail,
            )
            return action_id

        return await self.db.write(job)

    async def actions_after(self, after_id: int, limit: int) -> list[OperatorAction]:
        rows = await self.db.fetch_all(
            "SELECT id, at_ms, action, username, detail FROM operator_actions WHERE id > $1"
            " ORDER BY id LIMIT $2",
            after_id,
            limit,
        )
        return [OperatorAction(int(r[0]), int(r[1]), str(r[2]), str(r[3]), str(r[4])) for r in rows]

    async def last_action_id(self) -> int:
        return int(await self.db.fetch_value("SELECT coalesce(max(id), 0) FROM operator_actions"))


async def _user_id(connection: asyncpg.Connection, username: str) -> int:
    """The user's id, its row locked for this transaction; NotFound if there is none."""
    value = await connection.fetchval(
        "SELECT id FROM users WHERE username = $1 FOR UPDATE", username
    )
    if value is None:
        raise NotFound("No such user.")
    return int(value)


async def _live_session_ids(connection: asyncpg.Connection, user_id: int) -> list[str]:
    rows = await connection.fetch(
        "SELECT id FROM sessions WHERE user_id = $1 AND revoked_at IS NULL", user_id
    )
    return [str(row[0]) for row in rows]


async def _revoke_all(connection: asyncpg.Connection, user_id: int, now_ms: int) -> list[str]:
    rows = await connection.fetch(
        "UPDATE sessions SET revoked_at = $1 WHERE user_id = $2 AND revoked_at IS NULL"
        " RETURNING id",
        now_ms,
        user_id,
    )
    return [str(row[0]) for row in rows]


def _summary(row: asyncpg.Record) -> UserSummary:
    disabled = row[4]
    return UserSummary(
        id=int(row[0]),
        username=str(row[1]),
        created_at=int(row[2]),
        keys_updated_at=int(row[3]),
        disabled_at=None if disabled is None else int(disabled),
        live_sessions=int(row[5]),
    )
