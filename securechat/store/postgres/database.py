"""The PostgreSQL connection pool, the schema, and transactions that retry once.

Every node of a cluster opens its own asyncpg pool over the one database. The schema
(``schema.sql`` beside this module) is applied at start-up under a transaction-level advisory
lock, so nodes starting together apply it once, one after the other; every statement in it may
run again. A write is a function of an asyncpg connection run inside one transaction: a
serialization failure or a deadlock (SQLSTATE 40001, 40P01) rolls it back and runs it once
more, then gives up with :class:`Unavailable`, which the chat answers as ``unavailable`` (the
client resends; a resend is safe because ``UNIQUE (sender_id, client_id)`` settles it).

asyncpg was chosen for its own pool and the binary protocol: it is the fastest asyncio driver,
and it needs no thread, unlike the SQLite backend's writer.
"""

from __future__ import annotations

import time
from collections.abc import Awaitable, Callable, Sequence
from pathlib import Path
from typing import Any, Final, TypeVar

import asyncpg

from securechat.store.records import CommitStats

T = TypeVar("T")

SCHEMA_PATH: Final = Path(__file__).with_name("schema.sql")
# pg_advisory_xact_lock key for applying the schema: any constant, the same on every node.
_SCHEMA_LOCK: Final = 0x5EC0C4A7
# Key for appending to the key log (directory appends are serialised across nodes).
KEY_LOG_LOCK: Final = 0x5EC0C4A8
_RETRYABLE: Final = (asyncpg.SerializationError, asyncpg.DeadlockDetectedError)

Job = Callable[[asyncpg.Connection], Awaitable[T]]


class Unavailable(RuntimeError):
    """A write could not be committed (retried once); nothing of it was stored."""


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
    ) -> None:
        self.dsn = dsn
        self.pool_min = pool_min
        self.pool_max = pool_max
        self.command_timeout = command_timeout
        self.schema_path = schema_path
        self.stats = CommitStats()
        self._pool: asyncpg.Pool | None = None

    async def open(self) -> None:
        """Open the pool and apply the schema (once across nodes starting together)."""
        self._pool = await asyncpg.create_pool(
            self.dsn,
            min_size=self.pool_min,
            max_size=self.pool_max,
            command_timeout=self.command_timeout,
        )
        schema = self.schema_path.read_text(encoding="utf-8")
        async with self.pool.acquire() as connection, connection.transaction():
            await connection.execute("SELECT pg_advisory_xact_lock($1)", _SCHEMA_LOCK)
            await connection.execute(schema)

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


__all__ = ["KEY_LOG_LOCK", "SCHEMA_PATH", "Database", "Job", "Unavailable"]
