"""The key directory's log on PostgreSQL: every SQL statement about ``key_log`` lives here.

The log is append-only. The schema's triggers refuse UPDATE, DELETE, TRUNCATE and any INSERT
that is not the next index or that goes back in time. Nodes append through one advisory lock
(:data:`KEY_LOG_LOCK`), so two nodes never race for an index (issue 11, item 5).
"""

from __future__ import annotations

from collections.abc import Callable

import asyncpg

from securechat.errors import NotFound
from securechat.store.keylog import next_entry
from securechat.store.postgres.database import KEY_LOG_LOCK, Database
from securechat.store.records import ClusterIdentity, LogEntry

_ENTRY_COLUMNS = "idx, timestamp_ms, user_hash, enc_fingerprint, sign_fingerprint"


async def append_key_entry(
    connection: asyncpg.Connection,
    username: str,
    enc_public_key: bytes,
    sign_public_key: bytes,
    now_ms: int,
) -> LogEntry:
    """Append the log entry for a key publication, inside the caller's write transaction.

    Run it in the same transaction as the change to ``users`` so both commit or neither does.
    """
    return await append_entry(
        connection, lambda last: next_entry(last, username, enc_public_key, sign_public_key, now_ms)
    )


async def append_entry(
    connection: asyncpg.Connection, build: Callable[[tuple[int, int] | None], LogEntry]
) -> LogEntry:
    """Append the entry ``build`` makes from the log's last (index, timestamp), inside the
    caller's write transaction.

    The transaction-level advisory lock is held until that commit, and every node takes it
    before reading the tail, so the appends of all nodes are serialised: each reads the row
    its predecessor committed (READ COMMITTED takes a new snapshot per statement, after the
    lock is granted) and the index after it is free.
    """
    await connection.execute("SELECT pg_advisory_xact_lock($1)", KEY_LOG_LOCK)
    last = await connection.fetchrow(
        "SELECT idx, timestamp_ms FROM key_log ORDER BY idx DESC LIMIT 1"
    )
    entry = build(None if last is None else (int(last[0]), int(last[1])))
    await connection.execute(
        f"INSERT INTO key_log ({_ENTRY_COLUMNS}) VALUES ($1, $2, $3, $4, $5)",
        entry.index,
        entry.timestamp_ms,
        entry.user_hash,
        entry.enc_fingerprint,
        entry.sign_fingerprint,
    )
    return entry


class DirectoryStore:
    """Named queries over ``key_log``."""

    def __init__(self, db: Database) -> None:
        self.db = db

    async def entries(self, start: int, end: int) -> list[LogEntry]:
        """The entries with ``start <= index < end``, in order."""
        rows = await self.db.fetch_all(
            f"SELECT {_ENTRY_COLUMNS} FROM key_log WHERE idx >= $1 AND idx < $2 ORDER BY idx",
            start,
            end,
        )
        return [_entry(row) for row in rows]

    async def latest_entry(self, user: bytes, below: int) -> LogEntry | None:
        """The newest entry of the user with this hash among the first ``below`` entries."""
        row = await self.db.fetch_one(
            f"SELECT {_ENTRY_COLUMNS} FROM key_log WHERE user_hash = $1 AND idx < $2"
            " ORDER BY idx DESC LIMIT 1",
            user,
            below,
        )
        return _entry(row) if row else None

    async def replace_keys(
        self,
        username: str,
        enc_public_key: bytes,
        sign_public_key: bytes,
        key_backup: str,
        now_ms: int,
    ) -> LogEntry:
        """Publish new keys for an existing user (a key reset) and log them, in one transaction."""

        async def job(connection: asyncpg.Connection) -> LogEntry:
            status = await connection.execute(
                "UPDATE users SET enc_public_key = $1, sign_public_key = $2, key_backup = $3,"
                " keys_updated_at = $4 WHERE username = $5",
                enc_public_key,
                sign_public_key,
                key_backup,
                now_ms,
                username,
            )
            if rows_changed(status) != 1:
                raise NotFound("No such user.")
            return await append_key_entry(
                connection, username, enc_public_key, sign_public_key, now_ms
            )

        return await self.db.write(job)

    async def record_root(self, tree_size: int, root: bytes, now_ms: int) -> bytes:
        """Record the root of a signed tree size unless one is; return the one recorded."""

        async def job(connection: asyncpg.Connection) -> bytes:
            # The primary key settles two nodes signing one size: the first row stays, and
            # the read after it (a new snapshot under READ COMMITTED) sees whichever won.
            await connection.execute(
                "INSERT INTO tree_heads (tree_size, root, signed_at) VALUES ($1, $2, $3)"
                " ON CONFLICT (tree_size) DO NOTHING",
                tree_size,
                root,
                now_ms,
            )
            recorded = await connection.fetchval(
                "SELECT root FROM tree_heads WHERE tree_size = $1", tree_size
            )
            return bytes(recorded)

        return await self.db.write(job)

    async def latest_root(self, at_most: int) -> tuple[int, bytes] | None:
        """The largest recorded tree size ``<= at_most`` and its root, or None."""
        row = await self.db.fetch_one(
            "SELECT tree_size, root FROM tree_heads WHERE tree_size <= $1"
            " ORDER BY tree_size DESC LIMIT 1",
            at_most,
        )
        return (int(row[0]), bytes(row[1])) if row else None


class IdentityStore:
    """Named queries over ``cluster_identity``."""

    def __init__(self, db: Database) -> None:
        self.db = db

    async def claim_identity(self, identity: ClusterIdentity, now_ms: int) -> ClusterIdentity:
        """Record ``identity`` unless one is recorded; return the one recorded."""

        async def job(connection: asyncpg.Connection) -> ClusterIdentity:
            # The one row's primary key settles nodes starting at once: the first stays.
            await connection.execute(
                "INSERT INTO cluster_identity"
                " (id, directory_fingerprint, secret_fingerprint, recorded_at)"
                " VALUES (1, $1, $2, $3) ON CONFLICT (id) DO NOTHING",
                identity.directory_fingerprint,
                identity.secret_fingerprint,
                now_ms,
            )
            row = await connection.fetchrow(
                "SELECT directory_fingerprint, secret_fingerprint FROM cluster_identity"
            )
            return ClusterIdentity(str(row[0]), str(row[1]))

        return await self.db.write(job)


def rows_changed(status: str) -> int:
    """The row count of a command tag such as ``UPDATE 3`` or ``DELETE 0``."""
    return int(status.rsplit(" ", 1)[-1])


def _entry(row: asyncpg.Record) -> LogEntry:
    return LogEntry(
        index=int(row[0]),
        timestamp_ms=int(row[1]),
        user_hash=bytes(row[2]),
        enc_fingerprint=bytes(row[3]),
        sign_fingerprint=bytes(row[4]),
    )
