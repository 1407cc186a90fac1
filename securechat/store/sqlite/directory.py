"""The key directory's log on SQLite: every SQL statement about ``key_log`` lives here.

The log is append-only. The schema's triggers refuse UPDATE and DELETE and any INSERT that is
not the next index, so even a bug here cannot rewrite history; only someone who drops the
triggers can, and then the signed tree heads clients already hold expose it.
"""

from __future__ import annotations

import sqlite3
from collections.abc import Callable, Sequence
from typing import Any

from securechat.errors import NotFound
from securechat.store.keylog import next_entry
from securechat.store.records import ClusterIdentity, LogEntry
from securechat.store.sqlite.database import Database

_ENTRY_COLUMNS = "idx, timestamp_ms, user_hash, enc_fingerprint, sign_fingerprint"


def append_key_entry(
    connection: sqlite3.Connection,
    username: str,
    enc_public_key: bytes,
    sign_public_key: bytes,
    now_ms: int,
) -> LogEntry:
    """Append the log entry for a key publication, inside the caller's write job.

    Run it in the same job as the change to ``users`` so both commit or neither does: a user
    never exists, nor changes keys, without a log entry.
    """
    return append_entry(
        connection, lambda last: next_entry(last, username, enc_public_key, sign_public_key, now_ms)
    )


def append_entry(
    connection: sqlite3.Connection, build: Callable[[tuple[int, int] | None], LogEntry]
) -> LogEntry:
    """Append the entry ``build`` makes from the log's last (index, timestamp), inside the
    caller's write job. The single writer task serialises jobs, so reading the last row and
    inserting the next cannot race."""
    last = connection.execute(
        "SELECT idx, timestamp_ms FROM key_log ORDER BY idx DESC LIMIT 1"
    ).fetchone()
    entry = build(None if last is None else (int(last[0]), int(last[1])))
    connection.execute(
        f"INSERT INTO key_log ({_ENTRY_COLUMNS}) VALUES (?, ?, ?, ?, ?)",
        (
            entry.index,
            entry.timestamp_ms,
            entry.user_hash,
            entry.enc_fingerprint,
            entry.sign_fingerprint,
        ),
    )
    return entry


class DirectoryStore:
    """Named queries over ``key_log``."""

    def __init__(self, db: Database) -> None:
        self.db = db

    async def entries(self, start: int, end: int) -> list[LogEntry]:
        """The entries with ``start <= index < end``, in order."""
        rows = await self.db.fetch_all(
            f"SELECT {_ENTRY_COLUMNS} FROM key_log WHERE idx >= ? AND idx < ? ORDER BY idx",
            (start, end),
        )
        return [_entry(row) for row in rows]

    async def latest_entry(self, user: bytes, below: int) -> LogEntry | None:
        """The newest entry of the user with this hash among the first ``below`` entries."""
        row = await self.db.fetch_one(
            f"SELECT {_ENTRY_COLUMNS} FROM key_log WHERE user_hash = ? AND idx < ?"
            " ORDER BY idx DESC LIMIT 1",
            (user, below),
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

        def job(connection: sqlite3.Connection) -> LogEntry:
            cursor = connection.execute(
                "UPDATE users SET enc_public_key = ?, sign_public_key = ?, key_backup = ?,"
                " keys_updated_at = ? WHERE username = ?",
                (enc_public_key, sign_public_key, key_backup, now_ms, username),
            )
            if cursor.rowcount != 1:
                raise NotFound("No such user.")
            return append_key_entry(connection, username, enc_public_key, sign_public_key, now_ms)

        return await self.db.write(job)

    async def record_root(self, tree_size: int, root: bytes, now_ms: int) -> bytes:
        """Record the root of a signed tree size unless one is; return the one recorded."""

        def job(connection: sqlite3.Connection) -> bytes:
            # The primary key settles two signers of one size: the first row stays.
            connection.execute(
                "INSERT INTO tree_heads (tree_size, root, signed_at) VALUES (?, ?, ?)"
                " ON CONFLICT (tree_size) DO NOTHING",
                (tree_size, root, now_ms),
            )
            row = connection.execute(
                "SELECT root FROM tree_heads WHERE tree_size = ?", (tree_size,)
            ).fetchone()
            return bytes(row[0])

        return await self.db.write(job)

    async def latest_root(self, at_most: int) -> tuple[int, bytes] | None:
        """The largest recorded tree size ``<= at_most`` and its root, or None."""
        row = await self.db.fetch_one(
            "SELECT tree_size, root FROM tree_heads WHERE tree_size <= ?"
            " ORDER BY tree_size DESC LIMIT 1",
            (at_most,),
        )
        return (int(row[0]), bytes(row[1])) if row else None


class IdentityStore:
    """Named queries over ``cluster_identity``."""

    def __init__(self, db: Database) -> None:
        self.db = db

    async def claim_identity(self, identity: ClusterIdentity, now_ms: int) -> ClusterIdentity:
        """Record ``identity`` unless one is recorded; return the one recorded."""

        def job(connection: sqlite3.Connection) -> ClusterIdentity:
            # The one row's primary key settles two nodes starting at once: the first stays.
            connection.execute(
                "INSERT INTO cluster_identity"
                " (id, directory_fingerprint, secret_fingerprint, recorded_at)"
                " VALUES (1, ?, ?, ?) ON CONFLICT (id) DO NOTHING",
                (identity.directory_fingerprint, identity.secret_fingerprint, now_ms),
            )
            row = connection.execute(
                "SELECT directory_fingerprint, secret_fingerprint FROM cluster_identity"
            ).fetchone()
            return ClusterIdentity(str(row[0]), str(row[1]))

        return await self.db.write(job)


def _entry(row: Sequence[Any]) -> LogEntry:
    return LogEntry(
        index=int(row[0]),
        timestamp_ms=int(row[1]),
        user_hash=bytes(row[2]),
        enc_fingerprint=bytes(row[3]),
        sign_fingerprint=bytes(row[4]),
    )
