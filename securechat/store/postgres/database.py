"""The PostgreSQL connection pool, the schema, and transactions that retry once.

Every node of a cluster opens its own asyncpg pool over the one database. The schema
(``schema.sql`` beside this module) is applied at start-up under an advisory lock, so nodes
starting together apply it once, one after the other; every statement in it may run again. The
``schema_version`` row then records :data:`SCHEMA_VERSION`, and a node that finds it there
skips the script, and with it the backfills that scan ``messages`` (SQLite keeps the same number
in ``PRAGMA user_version``). A node waits for the lock at most ``schema_lock_timeout`` seconds,
then gives up with :class:`SchemaLockTimeout`. A write is a function of an asyncpg connection
run inside one transaction: a serialization failure or a deadlock (SQLSTATE 40001, 40P01)
rolls it back and runs it once more, then gives up with :class:`Unavailable`, which the chat
answers as ``unavailable`` (the client resends; a resend is safe because
``UNIQUE (sender_id, client_id)`` settles it).

asyncpg was chosen for its own pool and the binary protocol: it is the fastest asyncio driver,
and it needs no thread, unlike the SQLite backend's writer.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Awaitable, Callable, Sequence
from pathlib import Path
from typing import Any, Final, TypeVar

import asyncpg

from securechat.store.records import CommitStats
from securechat.store.sqlite.migrations import UPGRADES

log = logging.getLogger(__name__)

T = TypeVar("T")

SCHEMA_PATH: Final = Path(__file__).with_name("schema.sql")
# The version schema.sql brings a database to. One numbering for both dialects: SQLite's
# user_version, whose upgrade steps (store/sqlite/migrations.py) every change of the data model
# adds one to; a change of this dialect alone (a trigger, say) adds a step there too, if only
# "SELECT 1;". A node whose database is there (or past it: a newer node migrated first) runs
# nothing.
SCHEMA_VERSION: Final = max(UPGRADES)
# pg_advisory_lock key for applying the schema: any constant, the same on every node.
SCHEMA_LOCK: Final = 0x5EC0C4A7
# Key for appending to the key log (directory appends are serialised across nodes).
KEY_LOG_LOCK: Final = 0x5EC0C4A8
_RETRYABLE: Final = (asyncpg.SerializationError, asyncpg.DeadlockDetectedError)

Job = Callable[[asyncpg.Connection], Awaitable[T]]


class Unavailable(RuntimeError):
    """A write could not be committed (retried once); nothing of it was stored."""


class SchemaLockTimeout(RuntimeError):
    """Another node held the schema lock longer than ``schema_lock_timeout``: this one does not
    start (nothing of the schema was changed by it)."""


class Database:
    """One asyncpg pool over the cluster's database (open before use, close after)."""

    def __init__(
        self,
        dsn: str,
        *,
        pool_min: int = 2,
        pool_max: int = 10,
        command_timeout: float = 10.0,
        schema_path: Path = SCHEMA_PATH,
        schema_lock_timeout: float = 60.0,
    ) -> None:
        self.dsn = dsn
        self.pool_min = pool_min
        self.pool_max = pool_max
        self.command_timeout = command_timeout
        self.schema_path = schema_path
        self.schema_lock_timeout = schema_lock_timeout
        # Whether open() ran the schema script (False: the database was already current).
        self.schema_applied = False
        self.stats = CommitStats()
        self._pool: asyncpg.Pool | None = None

    async def open(self) -> None:
        """Open the pool and bring the schema to :data:`SCHEMA_VERSION` (once across nodes
        starting together; not at all when it is there already)."""
        self._pool = await asyncpg.create_pool(
            self.dsn,
            min_size=self.pool_min,
            max_size=self.pool_max,
            command_timeout=self.command_timeout,
        )
        try:
            async with self.pool.acquire() as connection:
                self.schema_applied = await self._migrate(connection)
        except BaseException:
            await self.close()
            raise

    async def _migrate(self, connection: asyncpg.Connection) -> bool:
        """Run the schema script and record its version, unless the database is current; True
        if it ran. Read first without the lock: a current database costs no wait."""
        if await _schema_version(connection) >= SCHEMA_VERSION:
            return False
        schema = self.schema_path.read_text(encoding="utf-8")
        await self._lock_schema(connection)
        try:
            # A transaction begun after the lock: its catalogue lookups see what the node that
            # held the lock committed (within one begun before, to_regclass may not).
            async with connection.transaction():
                if await _schema_version(connection) >= SCHEMA_VERSION:
                    return False  # another node applied it while this one waited
                # As long as the others wait for it at most, not one statement's timeout: an
                # upgrade's backfill over a large history may take longer than that.
                migration = max(self.command_timeout, self.schema_lock_timeout)
                await connection.execute(schema, timeout=migration)
                await connection.execute(_CREATE_VERSION)
                await connection.execute(_SET_VERSION, SCHEMA_VERSION)
        finally:
            await connection.execute("SELECT pg_advisory_unlock($1)", SCHEMA_LOCK)
        log.info("PostgreSQL schema brought to version %d", SCHEMA_VERSION)
        return True

    async def _lock_schema(self, connection: asyncpg.Connection) -> None:
        """Take the schema's advisory lock (this session's, until ``pg_advisory_unlock`` or the
        connection closes, as open() does when it fails), waiting at most
        ``schema_lock_timeout`` (not the pool's command timeout)."""
        try:
            await connection.execute(
                "SELECT pg_advisory_lock($1)", SCHEMA_LOCK, timeout=self.schema_lock_timeout
            )
        except TimeoutError:
            message = (
                f"another node has held the schema lock (pg_advisory_lock {SCHEMA_LOCK})"
                f" for more than {self.schema_lock_timeout:g} s"
                " (SECURECHAT_DB_SCHEMA_LOCK_TIMEOUT): a migration may be stuck; look for it"
                " in pg_stat_activity, or raise the timeout if a large database is being"
                " upgraded. This node does not start."
            )
            log.critical("%s", message)  # the one line an operator reads before the traceback
            raise SchemaLockTimeout(message) from None

    async def close(self) -> None:
        if self._pool is not None:
            await self._pool.close()
            self._pool = None

    @property
    def pool(self) -> asyncpg.Pool:
        if self._pool is None:
            raise RuntimeError("the PostgreSQL store is not open")
        return self._pool

    async def ping(self) -> None:
        """One round trip to the database (the health check)."""
        await self.pool.fetchval("SELECT 1")

    async def write(self, job: Job[T], *, jobs: int = 1) -> T:
        """Run ``job`` in one READ COMMITTED transaction and commit it; retried once on a
        serialization failure or deadlock, then :class:`Unavailable`. The result is only
        returned once the transaction has committed."""
        for attempt in (1, 2):
            started = time.perf_counter()
            try:
                async with self.pool.acquire() as connection, connection.transaction():
                    result = await job(connection)
            except _RETRYABLE as error:
                if attempt == 2:
                    raise Unavailable("the write conflicted twice; try again") from error
                continue
            self.stats.record(jobs, time.perf_counter() - started)
            return result
        raise AssertionError("unreachable")  # pragma: no cover

    async def fetch_all(self, sql: str, *args: Any) -> list[asyncpg.Record]:
        rows: list[asyncpg.Record] = await self.pool.fetch(sql, *args)
        return rows

    async def fetch_one(self, sql: str, *args: Any) -> asyncpg.Record | None:
        row: asyncpg.Record | None = await self.pool.fetchrow(sql, *args)
        return row

    async def fetch_value(self, sql: str, *args: Any) -> Any:
        return await self.pool.fetchval(sql, *args)

    async def execute_many(self, sql: str, rows: Sequence[Sequence[Any]]) -> None:
        async with self.pool.acquire() as connection:
            await connection.executemany(sql, rows)


# The version row: created by the first migration that records one, beside schema.sql's tables
# (bookkeeping, as SQLite's user_version is, so no part of the catalogue both dialects share).
_CREATE_VERSION: Final = (
    "CREATE TABLE IF NOT EXISTS schema_version"
    " (id BIGINT PRIMARY KEY CHECK (id = 1), version BIGINT NOT NULL)"
)
# Never lowered: an older node that migrates after a newer one leaves the newer number.
_SET_VERSION: Final = (
    "INSERT INTO schema_version (id, version) VALUES (1, $1) ON CONFLICT (id)"
    " DO UPDATE SET version = GREATEST(schema_version.version, excluded.version)"
)


async def _schema_version(connection: asyncpg.Connection) -> int:
    """The version recorded in the database (0: none, a new database or one from before the
    version row)."""
    if await connection.fetchval("SELECT to_regclass('schema_version')") is None:
        return 0
    version = await connection.fetchval("SELECT version FROM schema_version WHERE id = 1")
    return int(version) if version is not None else 0


__all__ = [
    "KEY_LOG_LOCK",
    "SCHEMA_LOCK",
    "SCHEMA_PATH",
    "SCHEMA_VERSION",
    "Database",
    "Job",
    "SchemaLockTimeout",
    "Unavailable",
]
