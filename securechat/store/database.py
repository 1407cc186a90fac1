"""The SQLite connections: one writer that groups waiting writes into one transaction, one reader.

SQLite allows one writer at a time. Rather than let coroutines contend for the lock, every
write is a *job* queued to a single writer task. The task takes every job waiting (up to
``batch_max``), runs them in one ``BEGIN IMMEDIATE`` transaction, each inside its own
SAVEPOINT so one failing job rolls back alone, commits once and only then resolves the
callers' futures. A caller that gets a result therefore holds a committed write, and a
burst of concurrent writes costs one fsync instead of one each (group commit).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
from collections.abc import Awaitable, Callable, Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TypeVar

import aiosqlite

from securechat.store.migrations import migrate

log = logging.getLogger(__name__)

T = TypeVar("T")
Job = Callable[[aiosqlite.Connection], Awaitable[Any]]
SYNCHRONOUS_MODES = ("OFF", "NORMAL", "FULL", "EXTRA")


@dataclass
class _PendingWrite:
    job: Job
    future: asyncio.Future[Any] = field(
        default_factory=lambda: asyncio.get_running_loop().create_future()
    )


@dataclass
class WriterStats:
    """Counters the metrics endpoint reports."""

    transactions: int = 0
    jobs: int = 0
    last_batch: int = 0
    largest_batch: int = 0
    commit_seconds_total: float = 0.0


class Database:
    """Owns the SQLite connections; every statement goes through ``read`` or ``write``."""

    def __init__(
        self,
        path: Path,
        schema_path: Path,
        *,
        synchronous: str = "FULL",
        busy_timeout_ms: int = 5000,
        batch_max: int = 512,
    ) -> None:
        if synchronous.upper() not in SYNCHRONOUS_MODES:
            raise ValueError(f"synchronous must be one of {SYNCHRONOUS_MODES}")
        self.path = path
        self.schema_path = schema_path
        self.synchronous = synchronous.upper()
        self.busy_timeout_ms = busy_timeout_ms
        self.batch_max = batch_max
        self.stats = WriterStats()
        self._writer: aiosqlite.Connection | None = None
        self._reader: aiosqlite.Connection | None = None
        self._queue: asyncio.Queue[_PendingWrite] = asyncio.Queue()
        self._writer_task: asyncio.Task[None] | None = None

    async def open(self) -> None:
        """Open both connections, apply the schema and start the writer task."""
        _create_private(self.path)
        self._writer = await self._connect()
        await migrate(self._writer, self.schema_path)
        self._reader = await self._connect()
        self._writer_task = asyncio.create_task(self._run_writer(), name="sqlite-writer")

    async def close(self) -> None:
        """Finish the queued writes, then close the connections."""
        if self._writer_task is not None:
            await self._queue.join()
            self._writer_task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._writer_task
            self._writer_task = None
        for connection in (self._reader, self._writer):
            if connection is not None:
                await connection.close()
        self._reader = self._writer = None

    async def _connect(self) -> aiosqlite.Connection:
        connection = await aiosqlite.connect(self.path, isolation_level=None)
        connection.row_factory = aiosqlite.Row
        await connection.execute("PRAGMA journal_mode = WAL")
        await connection.execute(f"PRAGMA synchronous = {self.synchronous}")
        await connection.execute(f"PRAGMA busy_timeout = {int(self.busy_timeout_ms)}")
        await connection.execute("PRAGMA foreign_keys = ON")
        return connection

    # Reads -------------------------------------------------------------------------------

    async def fetch_all(self, sql: str, params: Iterable[Any] = ()) -> list[aiosqlite.Row]:
        """Run a read-only query on the reader connection.

        Execute and fetch run as one job on the connection's thread, so the statement is done
        (and its read transaction over) before another starts. Run as separate jobs, queries
        from concurrent coroutines interleave, and one started while another is still open
        shares its read transaction: it misses every commit since (a stale sync).
        """
        assert self._reader is not None, "database is not open"
        return list(await self._reader.execute_fetchall(sql, tuple(params)))

    async def fetch_one(self, sql: str, params: Iterable[Any] = ()) -> aiosqlite.Row | None:
        """The first row of a read-only query, or None."""
        rows = await self.fetch_all(sql, params)
        return rows[0] if rows else None

    async def ping(self) -> None:
        """A trivial read, for the health check."""
        await self.fetch_one("SELECT 1")

    # Writes ------------------------------------------------------------------------------

    async def write(self, job: Callable[[aiosqlite.Connection], Awaitable[T]]) -> T:
        """Queue ``job`` for the writer; return its result once its transaction has committed."""
        if self._writer_task is None:
            raise RuntimeError("database is not open")
        pending = _PendingWrite(job)
        self._queue.put_nowait(pending)
        result: T = await asyncio.shield(pending.future)
        return result

    async def execute(self, sql: str, params: Iterable[Any] = ()) -> int:
        """One write statement as its own job; returns the number of rows changed."""
        values = tuple(params)

        async def job(connection: aiosqlite.Connection) -> int:
            cursor = await connection.execute(sql, values)
            return cursor.rowcount

        return await self.write(job)

    async def _run_writer(self) -> None:
        while True:
            batch = [await self._queue.get()]
            while len(batch) < self.batch_max and not self._queue.empty():
                batch.append(self._queue.get_nowait())
            try:
                await self._commit_batch(batch)
            finally:
                for _ in batch:
                    self._queue.task_done()

    async def _commit_batch(self, batch: list[_PendingWrite]) -> None:
        assert self._writer is not None
        loop = asyncio.get_running_loop()
        started = loop.time()
        results: list[tuple[_PendingWrite, Any, BaseException | None]] = []
        try:
            await self._writer.execute("BEGIN IMMEDIATE")
            for pending in batch:
                results.append(await self._run_job(pending))
            await self._writer.execute("COMMIT")
        except Exception as error:  # the transaction as a whole failed: nothing was committed
            log.exception("write transaction failed")
            await self._rollback()
            for pending in batch:
                _settle(pending, None, error)
            return
        self._record(len(batch), loop.time() - started)
        for pending, value, job_error in results:
            _settle(pending, value, job_error)

    async def _run_job(
        self, pending: _PendingWrite
    ) -> tuple[_PendingWrite, Any, BaseException | None]:
        assert self._writer is not None
        await self._writer.execute("SAVEPOINT job")
        try:
            value = await pending.job(self._writer)
        except Exception as error:
            await self._writer.execute("ROLLBACK TO job")
            await self._writer.execute("RELEASE job")
            return pending, None, error
        await self._writer.execute("RELEASE job")
        return pending, value, None

    async def _rollback(self) -> None:
        assert self._writer is not None
        with contextlib.suppress(Exception):
            await self._writer.execute("ROLLBACK")

    def _record(self, size: int, seconds: float) -> None:
        self.stats.transactions += 1
        self.stats.jobs += size
        self.stats.last_batch = size
        self.stats.largest_batch = max(self.stats.largest_batch, size)
        self.stats.commit_seconds_total += seconds


def _create_private(path: Path) -> None:
    """Create the database file with mode 0600; SQLite gives its -wal and -shm files the same."""
    if path != Path(":memory:"):
        os.close(os.open(path, os.O_RDWR | os.O_CREAT, 0o600))


def _settle(pending: _PendingWrite, value: Any, error: BaseException | None) -> None:
    if pending.future.done():
        return
    if error is not None:
        pending.future.set_exception(error)
    else:
        pending.future.set_result(value)
