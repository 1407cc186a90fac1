"""Users and their sessions on SQLite: every SQL statement about accounts lives here."""

from __future__ import annotations

import sqlite3
from collections.abc import Sequence

from securechat.errors import NotFound, UsernameTaken
from securechat.store.records import (
    NewKeys,
    NewPassword,
    NewUser,
    RecoveryRecord,
    Session,
    User,
)
from securechat.store.sqlite.database import Database
from securechat.store.sqlite.directory import append_key_entry

_USER_COLUMNS = (
    "id, username, salt, iterations, auth_hash, enc_public_key, sign_public_key,"
    " key_backup, created_at, keys_updated_at"
)
_SESSION_COLUMNS = (
    "s.id, s.public_id, s.user_id, u.username, s.created_at, s.last_seen_at, s.expires_at,"
    " s.revoked_at, s.user_agent, s.address"
)


class AccountStore:
    """Named queries over ``users``."""

    def __init__(self, db: Database) -> None:
        self.db = db

    async def add_user(self, user: NewUser, now_ms: int) -> int:
        """Insert a user; raise UsernameTaken if the name exists (the UNIQUE index decides races)."""

        def job(connection: sqlite3.Connection) -> int:
            # A deleted account's name stays taken while in quarantine (accounts/lifecycle.py).
            if connection.execute(
                "SELECT 1 FROM username_quarantine WHERE username = ? AND until_ms > ?",
                (user.username, now_ms),
            ).fetchone():
                raise UsernameTaken()
            try:
                cursor = connection.execute(
                    "INSERT INTO users (username, salt, iterations, auth_hash, enc_public_key,"
                    " sign_public_key, key_backup, created_at, keys_updated_at)"
                    " VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)",
                    (
                        user.username,
                        user.salt,
                        user.iterations,
                        user.auth_hash,
                        user.enc_public_key,
                        user.sign_public_key,
                        user.key_backup,
                        now_ms,
                        now_ms,
                    ),
                )
            except sqlite3.IntegrityError as error:
                raise UsernameTaken() from error
            assert cursor.lastrowid is not None
            # Same transaction: a user never exists without a key directory log entry.
            append_key_entry(
                connection, user.username, user.enc_public_key, user.sign_public_key, now_ms
            )
            return cursor.lastrowid

        return await self.db.write(job)

    async def user_by_name(self, username: str) -> User | None:
        """The user with this (already normalised) name."""
        row = await self.db.fetch_one(
            f"SELECT {_USER_COLUMNS} FROM users WHERE username = ?", (username,)
        )
        return User(*row) if row else None

    async def update_auth_hash(self, user_id: int, old_hash: str, auth_hash: str) -> bool:
        """Store a rehashed auth_key (argon2 parameters changed) if the stored hash is still
        ``old_hash``; False if a password change or recovery replaced it meanwhile."""
        changed = await self.db.execute(
            "UPDATE users SET auth_hash = ? WHERE id = ? AND auth_hash = ?",
            (auth_hash, user_id, old_hash),
        )
        return changed == 1

    async def count_users(self) -> int:
        row = await self.db.fetch_one("SELECT count(*) FROM users")
        return int(row[0]) if row else 0

    async def search_users(self, query: str, limit: int, exclude: str) -> list[str]:
        """Usernames containing ``query`` (literally), without ``exclude``: the exact name,
        then those starting with it, then the rest, each rank in order.

        A substring cannot use the index: this reads every name (docs/performance.md), which
        the search limiter (securechat/chat/contacts.py) keeps to a person's typing speed.
        """
        rows = await self.db.fetch_all(
            "SELECT username FROM users WHERE instr(username, ?1) > 0 AND username != ?2"
            " ORDER BY username != ?1, substr(username, 1, length(?1)) != ?1, username"
            " LIMIT ?3",
            (query, exclude, limit),
        )
        return [row[0] for row in rows]

    # --- password change, recovery key, key reset (issue 12, items 1-2) ---------------------

    async def change_password(
        self,
        user_id: int,
        expected_hash: str,
        password: NewPassword,
        keep_session_id: str | None,
        now_ms: int,
    ) -> list[str] | None:
        """Replace the password's material if the hash is still ``expected_hash`` (a change
        racing this one loses), and end the other sessions, in one transaction."""

        def job(connection: sqlite3.Connection) -> list[str] | None:
            if not _replace_password(connection, user_id, expected_hash, password):
                return None
            return _revoke_sessions(connection, user_id, keep_session_id, now_ms)

        return await self.db.write(job)

    async def recovery(self, user_id: int) -> RecoveryRecord | None:
        """The user's recovery key record, if one was set."""
        row = await self.db.fetch_one(
            "SELECT auth_hash, previous_hash, key_backup, created_at FROM recovery_keys"
            " WHERE user_id = ?",
            (user_id,),
        )
        return RecoveryRecord(*row) if row else None

    async def set_recovery(
        self, user_id: int, auth_hash: str, key_backup: str, now_ms: int
    ) -> None:
        """Set or replace the recovery key; the replaced one's hash is kept as previous."""
        await self.db.execute(
            "INSERT INTO recovery_keys (user_id, auth_hash, previous_hash, key_backup, created_at)"
            " VALUES (?1, ?2, NULL, ?3, ?4) ON CONFLICT (user_id) DO UPDATE SET"
            " previous_hash = recovery_keys.auth_hash, auth_hash = ?2, key_backup = ?3,"
            " created_at = ?4",
            (user_id, auth_hash, key_backup, now_ms),
        )

    async def recover(
        self,
        user_id: int,
        expected_hash: str,
        password: NewPassword,
        new_recovery: tuple[str, str],
        now_ms: int,
    ) -> list[str] | None:
        """Use the recovery key ``expected_hash``: a new password and recovery key, every
        session ended, in one transaction; None if the key was used meanwhile."""

        def job(connection: sqlite3.Connection) -> list[str] | None:
            # Compare-and-set on the key's hash: of two recoveries with one key, one wins.
            cursor = connection.execute(
                "UPDATE recovery_keys SET previous_hash = auth_hash, auth_hash = ?, key_backup = ?,"
                " created_at = ? WHERE user_id = ? AND auth_hash = ?",
                (*new_recovery, now_ms, user_id, expected_hash),
            )
            if cursor.rowcount != 1:
                return None
            connection.execute(
                "UPDATE users SET salt = ?, iterations = ?, auth_hash = ?, key_backup = ?"
                " WHERE id = ?",
                (
                    password.salt,
                    password.iterations,
                    password.auth_hash,
                    password.key_backup,
                    user_id,
                ),
            )
            return _revoke_sessions(connection, user_id, None, now_ms)

        return await self.db.write(job)

    async def reset_keys(
        self,
        username: str,
        keys: NewKeys,
        password: NewPassword | None,
        keep_session_id: str | None,
        now_ms: int,
    ) -> list[str]:
        """New keys (and password) logged in the key directory, the recovery key dropped,
        the other sessions ended, in one transaction; NotFound if no such user."""

        def job(connection: sqlite3.Connection) -> list[str]:
            row = connection.execute(
                "SELECT id FROM users WHERE username = ?", (username,)
            ).fetchone()
            if row is None:
                raise NotFound("No such user.")
            user_id = int(row[0])
            connection.execute(
                "UPDATE users SET enc_public_key = ?, sign_public_key = ?, key_backup = ?,"
                " keys_updated_at = ? WHERE id = ?",
                (keys.enc_public_key, keys.sign_public_key, keys.key_backup, now_ms, user_id),
            )
            if password is not None:
                connection.execute(
                    "UPDATE users SET salt = ?, iterations = ?, auth_hash = ? WHERE id = ?",
                    (password.salt, password.iterations, password.auth_hash, user_id),
                )
            connection.execute("DELETE FROM recovery_keys WHERE user_id = ?", (user_id,))
            append_key_entry(
                connection, username, keys.enc_public_key, keys.sign_public_key, now_ms
            )
            return _revoke_sessions(connection, user_id, keep_session_id, now_ms)

        return await self.db.write(job)


def _replace_password(
    connection: sqlite3.Connection, user_id: int, expected_hash: str, password: NewPassword
) -> bool:
    """Replace the password's material if the auth hash is still ``expected_hash``."""
    cursor = connection.execute(
        "UPDATE users SET salt = ?, iterations = ?, auth_hash = ?, key_backup = ?"
        " WHERE id = ? AND auth_hash = ?",
        (
            password.salt,
            password.iterations,
            password.auth_hash,
            password.key_backup,
            user_id,
            expected_hash,
        ),
    )
    return cursor.rowcount == 1


def _revoke_sessions(
    connection: sqlite3.Connection, user_id: int, keep_session_id: str | None, now_ms: int
) -> list[str]:
    """End every live session of the user but ``keep_session_id``; return the ids ended."""
    keep = keep_session_id or ""
    rows = connection.execute(
        "UPDATE sessions SET revoked_at = ? WHERE user_id = ? AND id != ? AND revoked_at IS NULL"
        " RETURNING id",
        (now_ms, user_id, keep),
    ).fetchall()
    return [str(row[0]) for row in rows]


_INSERT_SESSION = (
    "INSERT INTO sessions (id, public_id, user_id, created_at, last_seen_at, expires_at,"
    " user_agent, address)"
)


class SessionStore:
    """Named queries over ``sessions``. Session ids are stored hashed; see sessions.py."""

    def __init__(self, db: Database) -> None:
        self.db = db

    async def add_session(self, session: Session, auth_hash: str | None = None) -> bool:
        """Insert a new session row (given ``auth_hash``: only while the user still has it
        and is not disabled, checked in the same statement)."""
        columns = (
            session.id,
            session.public_id,
            session.user_id,
            session.created_at,
            session.last_seen_at,
            session.expires_at,
            session.user_agent,
            session.address,
        )
        if auth_hash is None:
            sql = f"{_INSERT_SESSION} VALUES (?, ?, ?, ?, ?, ?, ?, ?)"
            return await self.db.execute(sql, columns) == 1
        sql = (
            f"{_INSERT_SESSION} SELECT ?, ?, ?, ?, ?, ?, ?, ?"
            " WHERE EXISTS (SELECT 1 FROM users WHERE id = ? AND auth_hash = ?)"
            " AND NOT EXISTS (SELECT 1 FROM disabled_users WHERE user_id = ?)"
        )
        params = (*columns, session.user_id, auth_hash, session.user_id)
        return await self.db.execute(sql, params) == 1

    async def session_by_id(self, session_id: str) -> Session | None:
        """The session with this hashed id, revoked or not."""
        row = await self.db.fetch_one(
            f"SELECT {_SESSION_COLUMNS} FROM sessions s JOIN users u ON u.id = s.user_id"
            " WHERE s.id = ?",
            (session_id,),
        )
        return Session(*row) if row else None

    async def unrevoked_sessions(self, session_ids: Sequence[str]) -> set[str]:
        """Which of these hashed ids name a stored session not revoked (one query; the
        caller keeps a batch under SQLite's 32,766 parameters)."""
        if not session_ids:
            return set()
        marks = ", ".join("?" * len(session_ids))
        rows = await self.db.fetch_all(
            f"SELECT id FROM sessions WHERE revoked_at IS NULL AND id IN ({marks})",
            tuple(session_ids),
        )
        return {row[0] for row in rows}

    async def touch(self, session_id: str, now_ms: int) -> None:
        """Record activity (for the idle timeout)."""
        await self.db.execute(
            "UPDATE sessions SET last_seen_at = ? WHERE id = ? AND revoked_at IS NULL",
            (now_ms, session_id),
        )

    async def revoke(self, session_id: str, now_ms: int) -> None:
        """End one session."""
        await self.db.execute(
            "UPDATE sessions SET revoked_at = ? WHERE id = ? AND revoked_at IS NULL",
            (now_ms, session_id),
        )

    async def revoke_others(self, user_id: int, keep_session_id: str, now_ms: int) -> list[str]:
        """End every live session of a user but one; return the ids ended."""

        def job(connection: sqlite3.Connection) -> list[str]:
            ids = [
                row[0]
                for row in connection.execute(
                    "SELECT id FROM sessions WHERE user_id = ? AND id != ? AND revoked_at IS NULL",
                    (user_id, keep_session_id),
                )
            ]
            connection.execute(
                "UPDATE sessions SET revoked_at = ? WHERE user_id = ? AND id != ?"
                " AND revoked_at IS NULL",
                (now_ms, user_id, keep_session_id),
            )
            return ids

        return await self.db.write(job)

    async def revoke_by_public_id(self, user_id: int, public_id: str, now_ms: int) -> str | None:
        """End the user's session with this public id; return its id, or None if none was live."""

        def job(connection: sqlite3.Connection) -> str | None:
            row = connection.execute(
                "SELECT id FROM sessions WHERE user_id = ? AND public_id = ? AND revoked_at IS NULL",
                (user_id, public_id),
            ).fetchone()
            if row is None:
                return None
            connection.execute("UPDATE sessions SET revoked_at = ? WHERE id = ?", (now_ms, row[0]))
            return str(row[0])

        return await self.db.write(job)

    async def live_sessions(self, user_id: int, now_ms: int, idle_ms: int) -> list[Session]:
        """The user's sessions that are neither revoked nor expired, newest first."""
        rows = await self.db.fetch_all(
            f"SELECT {_SESSION_COLUMNS} FROM sessions s JOIN users u ON u.id = s.user_id"
            " WHERE s.user_id = ? AND s.revoked_at IS NULL AND s.expires_at > ?"
            " AND s.last_seen_at > ? ORDER BY s.created_at DESC",
            (user_id, now_ms, now_ms - idle_ms),
        )
        return [Session(*row) for row in rows]

    async def count_active(self, now_ms: int, idle_ms: int) -> int:
        """Sessions not revoked and not expired, across all users."""
        row = await self.db.fetch_one(
            "SELECT count(*) FROM sessions WHERE revoked_at IS NULL AND expires_at > ?"
            " AND last_seen_at > ?",
            (now_ms, now_ms - idle_ms),
        )
        return int(row[0]) if row else 0

    async def prune_oldest_beyond(self, user_id: int, keep: int, now_ms: int) -> list[str]:
        """Revoke the user's oldest live sessions beyond ``keep``; return the ids revoked."""

        def job(connection: sqlite3.Connection) -> list[str]:
            ids = [
                row[0]
                for row in connection.execute(
                    "SELECT id FROM sessions WHERE user_id = ? AND revoked_at IS NULL"
                    " ORDER BY created_at DESC LIMIT -1 OFFSET ?",
                    (user_id, keep),
                )
            ]
            connection.executemany(
                "UPDATE sessions SET revoked_at = ? WHERE id = ?", [(now_ms, i) for i in ids]
            )
            return ids

        return await self.db.write(job)

    async def purge_dead(self, before_ms: int, idle_ms: int) -> int:
        """Delete sessions that ended before ``before_ms``; return how many.

        A session ended when it was revoked, reached its absolute expiry, or went idle longer
        than ``idle_ms`` (it then expired at ``last_seen_at + idle_ms``). Live sessions and
        those that ended more recently stay (the settings page lists recent ones).
        """

        def job(connection: sqlite3.Connection) -> int:
            cursor = connection.execute(
                "DELETE FROM sessions WHERE revoked_at < ?1 OR expires_at < ?1"
                " OR last_seen_at < ?1 - ?2",
                (before_ms, idle_ms),
            )
            return max(cursor.rowcount, 0)

        return await self.db.write(job)
