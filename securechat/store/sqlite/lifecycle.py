"""An account's end and the operator's hold on it, on SQLite: deletion with its tombstone and the
name's quarantine, disabling, the operator's audit trail (securechat/accounts/lifecycle.py)."""

from __future__ import annotations

import sqlite3
from collections.abc import Sequence
from typing import Any

from securechat.errors import NotFound
from securechat.store.keylog import next_tombstone
from securechat.store.records import OperatorAction, UserSummary
from securechat.store.sqlite.database import Database
from securechat.store.sqlite.directory import append_entry
from securechat.store.sqlite.groups import forget_posts_of, note_gone
from securechat.store.sqlite.messages import recount_heads, stream_peers

# The account, whether it is disabled, and how many of its sessions are live (not revoked, not
# past their absolute expiry; the idle timeout is the sessions' own business).
_SUMMARY = (
    "SELECT u.id, u.username, u.created_at, u.keys_updated_at, d.disabled_at,"
    " (SELECT count(*) FROM sessions s WHERE s.user_id = u.id AND s.revoked_at IS NULL"
    " AND s.expires_at > ?) FROM users u LEFT JOIN disabled_users d ON d.user_id = u.id"
)


class LifecycleStore:
    """Named queries over ``username_quarantine``, ``disabled_users`` and ``operator_actions``."""

    def __init__(self, db: Database) -> None:
        self.db = db

    async def delete_user(self, username: str, quarantine_until_ms: int, now_ms: int) -> list[str]:
        """Tombstone, quarantine and remove the user in one job; the ids of its live sessions."""

        def job(connection: sqlite3.Connection) -> list[str]:
            user_id = _user_id(connection, username)
            sessions = _live_session_ids(connection, user_id)
            # The senders' backlog toward the deleted account is given back: those messages go.
            connection.execute(
                "UPDATE undelivered_senders SET bytes = bytes - (SELECT coalesce(sum("
                "length(m.envelope)), 0) FROM messages m WHERE m.sender_id ="
                " undelivered_senders.sender_id AND m.recipient_id = ?1 AND m.delivered_at IS NULL)"
                " WHERE sender_id IN (SELECT sender_id FROM undelivered_pairs"
                " WHERE recipient_id = ?1)",
                (user_id,),
            )
            append_entry(connection, lambda last: next_tombstone(last, username, now_ms))
            peers = stream_peers(connection, user_id)
            forget_posts_of(connection, user_id)  # its group posts leave the members' streams
            note_gone(connection, user_id, username)  # its name stays in its groups' lists
            # ON DELETE CASCADE takes its sessions, messages both ways, conversations, counts,
            # group memberships and posts.
            connection.execute("DELETE FROM users WHERE id = ?", (user_id,))
            recount_heads(connection, peers)  # their streams lost those messages' positions
            connection.execute(
                "INSERT INTO username_quarantine (username, deleted_at, until_ms) VALUES (?, ?, ?)"
                " ON CONFLICT (username) DO UPDATE SET deleted_at = excluded.deleted_at,"
                " until_ms = excluded.until_ms",
                (username, now_ms, quarantine_until_ms),
            )
            return sessions

        return await self.db.write(job)

    async def quarantine_until(self, username: str, now_ms: int) -> int | None:
        """When the name becomes free again, if a deleted account holds it now."""
        row = await self.db.fetch_one(
            "SELECT until_ms FROM username_quarantine WHERE username = ? AND until_ms > ?",
            (username, now_ms),
        )
        return int(row[0]) if row else None

    async def set_disabled(self, username: str, disabled: bool, now_ms: int) -> list[str]:
        """Disable (revoking every session) or enable; the ids of the sessions revoked."""

        def job(connection: sqlite3.Connection) -> list[str]:
            user_id = _user_id(connection, username)
            if not disabled:
                connection.execute("DELETE FROM disabled_users WHERE user_id = ?", (user_id,))
                return []
            connection.execute(
                "INSERT INTO disabled_users (user_id, disabled_at) VALUES (?, ?)"
                " ON CONFLICT (user_id) DO NOTHING",
                (user_id, now_ms),
            )
            return _revoke_all(connection, user_id, now_ms)

        return await self.db.write(job)

    async def is_disabled(self, user_id: int) -> bool:
        row = await self.db.fetch_one("SELECT 1 FROM disabled_users WHERE user_id = ?", (user_id,))
        return row is not None

    async def withdraw_keys(self, username: str, now_ms: int) -> list[str]:
        """Log the withdrawal of the user's keys and end its sessions; their ids."""

        def job(connection: sqlite3.Connection) -> list[str]:
            user_id = _user_id(connection, username)
            append_entry(connection, lambda last: next_tombstone(last, username, now_ms))
            return _revoke_all(connection, user_id, now_ms)

        return await self.db.write(job)

    async def revoke_all(self, username: str, now_ms: int) -> list[str]:
        """End every live session of the user; their ids."""

        def job(connection: sqlite3.Connection) -> list[str]:
            return _revoke_all(connection, _user_id(connection, username), now_ms)

        return await self.db.write(job)

    async def users(self, after: str, limit: int, now_ms: int) -> list[UserSummary]:
        rows = await self.db.fetch_all(
            f"{_SUMMARY} WHERE u.username > ? ORDER BY u.username LIMIT ?", (now_ms, after, limit)
        )
        return [_summary(row) for row in rows]

    async def user_summary(self, username: str, now_ms: int) -> UserSummary | None:
        row = await self.db.fetch_one(f"{_SUMMARY} WHERE u.username = ?", (now_ms, username))
        return _summary(row) if row else None

    async def record_action(self, action: str, username: str, detail: str, now_ms: int) -> int:
        """Append to the audit trail; the single writer hands out ids in commit order."""

        def job(connection: sqlite3.Connection) -> int:
            cursor = connection.execute(
                "INSERT INTO operator_actions (at_ms, action, username, detail)"
                " VALUES (?, ?, ?, ?)",
                (now_ms, action, username, detail),
            )
            assert cursor.lastrowid is not None
            return cursor.lastrowid

        return await self.db.write(job)

    async def actions_after(self, after_id: int, limit: int) -> list[OperatorAction]:
        rows = await self.db.fetch_all(
            "SELECT id, at_ms, action, username, detail FROM operator_actions WHERE id > ?"
            " ORDER BY id LIMIT ?",
            (after_id, limit),
        )
        return [OperatorAction(int(r[0]), int(r[1]), str(r[2]), str(r[3]), str(r[4])) for r in rows]

    async def last_action_id(self) -> int:
        row = await self.db.fetch_one("SELECT coalesce(max(id), 0) FROM operator_actions")
        return int(row[0]) if row else 0


def _user_id(connection: sqlite3.Connection, username: str) -> int:
    row = connection.execute("SELECT id FROM users WHERE username = ?", (username,)).fetchone()
    if row is None:
        raise NotFound("No such user.")
    return int(row[0])


def _live_session_ids(connection: sqlite3.Connection, user_id: int) -> list[str]:
    rows = connection.execute(
        "SELECT id FROM sessions WHERE user_id = ? AND revoked_at IS NULL", (user_id,)
    )
    return [str(row[0]) for row in rows]


def _revoke_all(connection: sqlite3.Connection, user_id: int, now_ms: int) -> list[str]:
    ids = _live_session_ids(connection, user_id)
    connection.execute(
        "UPDATE sessions SET revoked_at = ? WHERE user_id = ? AND revoked_at IS NULL",
        (now_ms, user_id),
    )
    return ids


def _summary(row: Sequence[Any]) -> UserSummary:
    disabled = row[4]
    return UserSummary(
        id=int(row[0]),
        username=str(row[1]),
        created_at=int(row[2]),
        keys_updated_at=int(row[3]),
        disabled_at=None if disabled is None else int(disabled),
        live_sessions=int(row[5]),
    )
