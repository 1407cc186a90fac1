"""Users and their sessions on PostgreSQL: every SQL statement about accounts lives here.

The same queries as ``store/sqlite/accounts.py``, with the same results and errors; where the
SQLite backend reads and then writes in one job, a single ``UPDATE ... RETURNING`` does both
here, so a concurrent node's change cannot slip between them.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Final

import asyncpg

from securechat.errors import NotFound, UsernameTaken
from securechat.store.postgres.database import Database
from securechat.store.postgres.directory import append_key_entry, rows_changed
from securechat.store.records import (
    NewKeys,
    NewPassword,
    NewUser,
    RecoveryRecord,
    Session,
    User,
)

_USER_COLUMNS = (
    "id, username, salt, iterations, auth_hash, enc_public_key, sign_public_key,"
    " key_backup, created_at, keys_updated_at"
)
_SESSION_COLUMNS = (
    "s.id, s.public_id, s.user_id, u.username, s.created_at, s.last_seen_at, s.expires_at,"
    " s.revoked_at, s.user_agent, s.address"
)
# PostgreSQL's name for the UNIQUE on users.username (schema.sql declares it unnamed).
_USERNAME_UNIQUE: Final = "users_username_key"


class AccountStore:
    """Named queries over ``users``."""

    def __init__(self, db: Database) -> None:
        self.db = db

    async def add_user(self, user: NewUser, now_ms: int) -> int:
        """Insert a user; raise UsernameTaken if the name exists (the UNIQUE index decides races)."""

        async def job(connection: asyncpg.Connection) -> int:
            try:
                user_id: int = await connection.fetchval(
                    "INSERT INTO users (username, salt, iterations, auth_hash, enc_public_key,"
                    " sign_public_key, key_backup, created_at, keys_updated_at)"
                    " VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $8) RETURNING id",
                    user.username,
                    user.salt,
                    user.iterations,
                    user.auth_hash,
                    user.enc_public_key,
                    user.sign_public_key,
                    user.key_backup,
                    now_ms,
                )
            except asyncpg.UniqueViolationError as error:
                # A registration racing for the name on any node waits for the other's commit
                # here, then fails: the index settles it. Any other violation is a bug.
                if error.constraint_name != _USERNAME_UNIQUE:
                    raise
                raise UsernameTaken() from error
            # Same transaction: a user never exists without a key directory log entry.
            await append_key_entry(
                connection, user.username, user.enc_public_key, user.sign_public_key, now_ms
            )
            # A deleted account's name stays taken while in quarantine (accounts/lifecycle.py).
            # Read under the key log's lock, which a deletion holds until it commits.
            if await connection.fetchval(
                "SELECT 1 FROM username_quarantine WHERE username = $1 AND until_ms > $2",
                user.username,
                now_ms,
            ):
                raise UsernameTaken()
            return user_id

        return await self.db.write(job)

    async def user_by_name(self, username: str) -> User | None:
        """The user with this (already normalised) name."""
        row = await self.db.fetch_one(
            f"SELECT {_USER_COLUMNS} FROM users WHERE username = $1", username
        )
        return User(*row) if row else None

    async def update_auth_hash(self, user_id: int, old_hash: str, auth_hash: str) -> bool:
        """Store a rehashed auth_key (argon2 parameters changed) if the stored hash is still
        ``old_hash``; False if a password change or recovery replaced it meanwhile."""
        changed = await _execute(
            self.db,
            "UPDATE users SET auth_hash = $1 WHERE id = $2 AND auth_hash = $3",
            auth_hash,
            user_id,
            old_hash,
        )
        return changed == 1

    async def count_users(self) -> int:
        return int(await self.db.fetch_value("SELECT count(*) FROM users"))

    async def search_users(self, query: str, limit: int, exclude: str) -> list[str]:
        """Usernames containing ``query`` (literally), without ``exclude``: the exact name,
        then those starting with it, then the rest, each rank in order (a scan of the names,
        as on SQLite, kept to typing speed by the search limiter)."""
        # username is COLLATE "C": byte order, as SQLite's, whatever the cluster's locale.
        rows = await self.db.fetch_all(
            "SELECT username FROM users WHERE strpos(username, $1) > 0 AND username != $2"
            " ORDER BY username <> $1, left(username, length($1)) <> $1, username LIMIT $3",
            query,
            exclude,
            limit,
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
        racing this one on any node loses), and end the other sessions, in one transaction."""

        async def job(connection: asyncpg.Connection) -> list[str] | None:
            status = await connection.execute(
                "UPDATE users SET salt = $1, iterations = $2, auth_hash = $3, key_backup = $4"
                " WHERE id = $5 AND auth_hash = $6",
                password.salt,
                password.iterations,
                password.auth_hash,
                password.key_backup,
                user_id,
                expected_hash,
            )
            if rows_changed(status) != 1:
                return None
            return await _revoke_sessions(connection, user_id, keep_session_id, now_ms)

        return await self.db.write(job)

    async def recovery(self, user_id: int) -> RecoveryRecord | None:
        """The user's recovery key record, if one was set."""
        row = await self.db.fetch_one(
            "SELECT auth_hash, previous_hash, key_backup, created_at FROM recovery_keys"
            " WHERE user_id = $1",
            user_id,
        )
        return RecoveryRecord(*row) if row else None

    async def set_recovery(
        self, user_id: int, auth_hash: str, key_backup: str, now_ms: int
    ) -> None:
        """Set or replace the recovery key; the replaced one's hash is kept as previous."""
        await _execute(
            self.db,
            "INSERT INTO recovery_keys (user_id, auth_hash, previous_hash, key_backup, created_at)"
            " VALUES ($1, $2, NULL, $3, $4) ON CONFLICT (user_id) DO UPDATE SET"
            " previous_hash = recovery_keys.auth_hash, auth_hash = $2, key_backup = $3,"
            " created_at = $4",
            user_id,
            auth_hash,
            key_backup,
            now_ms,
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

        async def job(connection: asyncpg.Connection) -> list[str] | None:
            # Compare-and-set on the key's hash: of two recoveries with one key, on any nodes,
            # the second waits for the first's row lock, then matches nothing.
            status = await connection.execute(
                "UPDATE recovery_keys SET previous_hash = auth_hash, auth_hash = $1,"
                " key_backup = $2, created_at = $3 WHERE user_id = $4 AND auth_hash = $5",
                *new_recovery,
                now_ms,
                user_id,
                expected_hash,
            )
            if rows_changed(status) != 1:
                return None
            await connection.execute(
                "UPDATE users SET salt = $1, iterations = $2, auth_hash = $3, key_backup = $4"
                " WHERE id = $5",
                password.salt,
                password.iterations,
                password.auth_hash,
                password.key_backup,
                user_id,
            )
            return await _revoke_sessions(connection, user_id, None, now_ms)

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

        async def job(connection: asyncpg.Connection) -> list[str]:
            # The key log's lock first, before the user's row, as every other writer of both
            # takes them (LifecycleStore.delete_user): no deadlock with a deletion racing this.
            # For an unknown user the NotFound rolls the appended entry back.
            await append_key_entry(
                connection, username, keys.enc_public_key, keys.sign_public_key, now_ms
            )
            user_id = await connection.fetchval(
                "UPDATE users SET enc_public_key = $1, sign_public_key = $2, key_backup = $3,"
                " keys_updated_at = $4 WHERE username = $5 RETURNING id",
                keys.enc_public_key,
                keys.sign_public_key,
                keys.key_backup,
                now_ms,
                username,
            )
            if user_id is None:
                raise NotFound("No such user.")
            if password is not None:
                await connection.execute(
                    "UPDATE users SET salt = $1, iterations = $2, auth_hash = $3 WHERE id = $4",
                    password.salt,
                    password.iterations,
                    password.auth_hash,
                    user_id,
                )
            await connection.execute("DELETE FROM recovery_keys WHERE user_id = $1", user_id)
            return await _revoke_sessions(connection, int(user_id), keep_session_id, now_ms)

        return await self.db.write(job)


async def _revoke_sessions(
    connection: asyncpg.Connection, user_id: int, keep_session_id: str | None, now_ms: int
) -> list[str]:
    """End every live session of the user but ``keep_session_id``, in the caller's
    transaction; return the ids ended."""
    rows = await connection.fetch(
        "UPDATE sessions SET revoked_at = $1 WHERE user_id = $2 AND id != $3"
        " AND revoked_at IS NULL RETURNING id",
        now_ms,
        user_id,
        keep_session_id or "",
    )
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
            sql = f"{_INSERT_SESSION} VALUES ($1, $2, $3, $4, $5, $6, $7, $8)"
            return await _execute(self.db, sql, *columns) == 1

        async def job(connection: asyncpg.Connection) -> bool:
            # The user row is share-locked first: a password change, recovery, disable or
            # deletion (each locks or writes that row) either committed before, and the
            # insert's fresh READ COMMITTED snapshot sees it, or waits for this commit and
            # then revokes the new session with the rest.
            stored = await connection.fetchval(
                "SELECT auth_hash FROM users WHERE id = $1 FOR SHARE", session.user_id
            )
            if stored != auth_hash:
                return False
            status = await connection.execute(
                f"{_INSERT_SESSION} SELECT $1::text, $2::text, $3::bigint, $4::bigint,"
                " $5::bigint, $6::bigint, $7::text, $8::text"
                " WHERE NOT EXISTS (SELECT 1 FROM disabled_users WHERE user_id = $3::bigint)",
                *columns,
            )
            return rows_changed(status) == 1

        return await self.db.write(job)

    async def session_by_id(self, session_id: str) -> Session | None:
        """The session with this hashed id, revoked or not."""
        row = await self.db.fetch_one(
            f"SELECT {_SESSION_COLUMNS} FROM sessions s JOIN users u ON u.id = s.user_id"
            " WHERE s.id = $1",
            session_id,
        )
        return Session(*row) if row else None

    async def unrevoked_sessions(self, session_ids: Sequence[str]) -> set[str]:
        """Which of these hashed ids name a stored session not revoked (one query)."""
        rows = await self.db.fetch_all(
            "SELECT id FROM sessions WHERE revoked_at IS NULL AND id = ANY($1::text[])",
            list(session_ids),
        )
        return {row[0] for row in rows}

    async def touch(self, session_id: str, now_ms: int) -> None:
        """Record activity (for the idle timeout)."""
        await _execute(
            self.db,
            "UPDATE sessions SET last_seen_at = $1 WHERE id = $2 AND revoked_at IS NULL",
            now_ms,
            session_id,
        )

    async def revoke(self, session_id: str, now_ms: int) -> None:
        """End one session."""
        await _execute(
            self.db,
            "UPDATE sessions SET revoked_at = $1 WHERE id = $2 AND revoked_at IS NULL",
            now_ms,
            session_id,
        )

    async def revoke_others(self, user_id: int, keep_session_id: str, now_ms: int) -> list[str]:
        """End every live session of a user but one; return the ids ended."""
        return await _revoke_returning(
            self.db,
            "UPDATE sessions SET revoked_at = $1 WHERE user_id = $2 AND id != $3"
            " AND revoked_at IS NULL RETURNING id",
            now_ms,
            user_id,
            keep_session_id,
        )

    async def revoke_by_public_id(self, user_id: int, public_id: str, now_ms: int) -> str | None:
        """End the user's session with this public id; return its id, or None if none was live."""
        ids = await _revoke_returning(
            self.db,
            "UPDATE sessions SET revoked_at = $1 WHERE user_id = $2 AND public_id = $3"
            " AND revoked_at IS NULL RETURNING id",
            now_ms,
            user_id,
            public_id,
        )
        return ids[0] if ids else None

    async def live_sessions(self, user_id: int, now_ms: int, idle_ms: int) -> list[Session]:
        """The user's sessions that are neither revoked nor expired, newest first."""
        rows = await self.db.fetch_all(
            f"SELECT {_SESSION_COLUMNS} FROM sessions s JOIN users u ON u.id = s.user_id"
            " WHERE s.user_id = $1 AND s.revoked_at IS NULL AND s.expires_at > $2"
            " AND s.last_seen_at > $3 ORDER BY s.created_at DESC",
            user_id,
            now_ms,
            now_ms - idle_ms,
        )
        return [Session(*row) for row in rows]

    async def count_active(self, now_ms: int, idle_ms: int) -> int:
        """Sessions not revoked and not expired, across all users."""
        count = await self.db.fetch_value(
            "SELECT count(*) FROM sessions WHERE revoked_at IS NULL AND expires_at > $1"
            " AND last_seen_at > $2",
            now_ms,
            now_ms - idle_ms,
        )
        return int(count)

    async def prune_oldest_beyond(self, user_id: int, keep: int, now_ms: int) -> list[str]:
        """Revoke the user's oldest live sessions beyond ``keep``; return the ids revoked,
        newest first."""
        # FOR UPDATE: a node pruning the same user at once waits, then finds these revoked.
        return await _revoke_returning(
            self.db,
            "WITH old AS (SELECT id, created_at FROM sessions WHERE user_id = $2"
            " AND revoked_at IS NULL ORDER BY created_at DESC OFFSET $3 FOR UPDATE)"
            " UPDATE sessions s SET revoked_at = $1 FROM old"
            " WHERE s.id = old.id AND s.revoked_at IS NULL"
            " RETURNING s.id, old.created_at",
            now_ms,
            user_id,
            keep,
            newest_first=True,
        )

    async def purge_dead(self, before_ms: int, idle_ms: int) -> int:
        """Delete sessions that ended before ``before_ms``; return how many.

        A session ended when it was revoked, reached its absolute expiry, or went idle longer
        than ``idle_ms`` (it then expired at ``last_seen_at + idle_ms``). Live sessions and
        those that ended more recently stay (the settings page lists recent ones).
        """
        return await _execute(
            self.db,
            "DELETE FROM sessions WHERE revoked_at < $1 OR expires_at < $1"
            " OR last_seen_at < $1 - $2",
            before_ms,
            idle_ms,
        )


async def _execute(db: Database, sql: str, *args: object) -> int:
    """One write statement in its own transaction; returns the number of rows changed."""

    async def job(connection: asyncpg.Connection) -> int:
        return rows_changed(await connection.execute(sql, *args))

    return await db.write(job)


async def _revoke_returning(
    db: Database, sql: str, *args: object, newest_first: bool = False
) -> list[str]:
    """Run an ``UPDATE ... RETURNING id[, created_at]``; the ids (newest first if asked)."""

    async def job(connection: asyncpg.Connection) -> list[asyncpg.Record]:
        rows: list[asyncpg.Record] = await connection.fetch(sql, *args)
        return rows

    rows = await db.write(job)
    if newest_first:
        rows = sorted(rows, key=lambda row: (-row[1], row[0]))
    return [str(row[0]) for row in rows]
