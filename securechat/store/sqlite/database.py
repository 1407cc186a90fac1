"""The SQLite connections: one writer that groups waiting writes into one transaction, one reader.

SQLite allows one writer at a time. Rather than let coroutines contend for the lock, every
write is a *job* queued to a single writer task. The task takes every job waiting (up to
``batch_max``) and hands them to the writer thread in one go: there they run in one
``BEGIN IMMEDIATE`` transaction, each inside its own SAVEPOINT so one failing job rolls back
alone, and the transaction commits once. Only then are the callers' futures resolved. A caller
that gets a result therefore holds a committed write, and a burst of concurrent writes costs one
fsync instead of one each (group commit).

A job is a plain function of a ``sqlite3.Connection``, run on the writer thread, so a whole
transaction costs one hand-over between the event loop and that thread, whatever it holds. (An
``aiosqlite`` connection would cost one per statement, each a wake-up of the loop and a
hand-over of the GIL: a large share of the server's CPU under load, docs/performance.md.)
Reads go through an ``aiosqlite`` connection of their own, one hand-over
per query.

Checkpoints (copying the write-ahead log into the database file) run on a third connection and
thread, every ``checkpoint_interval`` seconds, never inside a commit: see :class:`Checkpointer`.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import logging
import os
import sqlite3
import time
from collections.abc import Callable, Iterable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TypeVar

import aiosqlite

from securechat.runtime import cancel_and_wait
from securechat.store.records import CheckpointStats, CommitStats
from securechat.store.sqlite.migrations import migrate

log = logging.getLogger(__name__)

T = TypeVar("T")
Job = Callable[[sqlite3.Connection], Any]
SYNCHRONOUS_MODES = ("OFF", "NORMAL", "FULL", "EXTRA")


@dataclass
class _PendingWrite:
    job: Job
    future: asyncio.Future[Any] = field(
        default_factory=lambda: asyncio.get_running_loop().create_future()
    )


class Database:
    """Owns the SQLite connections; every statement goes through ``fetch_*`` or ``write``."""

    def __init__(
        self,
        path: Path,
        schema_path: Path,
        *,
        synchronous: str = "FULL",
        busy_timeout_ms: int = 5000,
        batch_max: int = 512,
        checkpoint_interval: float = 0.25,
    ) -> None:
        if synchronous.upper() not in SYNCHRONOUS_MODES:
            raise ValueError(f"synchronous must be one of {SYNCHRONOUS_MODES}")
        self.path = path
        self.schema_path = schema_path
        self.synchronous = synchronous.upper()
        self.busy_timeout_ms = busy_timeout_ms
        self.batch_max = batch_max
        self.stats = CommitStats()
        self.checkpoint_stats = CheckpointStats()
        # The writer connection lives on the writer thread and is used only there.
        self._writer_thread: ThreadPoolExecutor | None = None
        self._writer: sqlite3.Connection | None = None
        self._reader: aiosqlite.Connection | None = None
        self._queue: asyncio.Queue[_PendingWrite] = asyncio.Queue()
        self._writer_task: asyncio.Task[None] | None = None
        self._checkpointer = Checkpointer(self, checkpoint_interval)

    async def open(self) -> None:
        """Open both connections, apply the schema and start the writer task."""
        _create_private(self.path)
        self._writer_thread = ThreadPoolExecutor(max_workers=1, thread_name_prefix="sqlite-writer")
        self._writer = await self._on_writer_thread(self._connect_writer)
        await self._on_writer_thread(migrate, self._writer, self.schema_path)
        self._reader = await aiosqlite.connect(self.path, isolation_level=None)
        self._reader.row_factory = aiosqlite.Row
        for pragma in self._pragmas():
            await self._reader.execute(pragma)
        self._writer_task = asyncio.create_task(self._run_writer(), name="sqlite-writer")
        await self._checkpointer.start()

    async def close(self) -> None:
        """Finish the queued writes, then close the connections."""
        if self._writer_task is not None:
            await self._queue.join()
            await cancel_and_wait(self._writer_task)
            self._writer_task = None
        await self._checkpointer.stop()
        if self._reader is not None:
            await self._reader.close()
            self._reader = None
        if self._writer_thread is not None:
            if self._writer is not None:
                await self._on_writer_thread(self._writer.close)
                self._writer = None
            self._writer_thread.shutdown(wait=True)
            self._writer_thread = None

    def _pragmas(self) -> list[str]:
        return [
            "PRAGMA journal_mode = WAL",
            f"PRAGMA synchronous = {self.synchronous}",
            f"PRAGMA busy_timeout = {int(self.busy_timeout_ms)}",
            "PRAGMA foreign_keys = ON",
        ]

    def connect(self) -> sqlite3.Connection:
        """A new blocking connection with the store's settings, for one thread's use."""
        # Autocommit mode (isolation_level=None): BEGIN and COMMIT are issued explicitly.
        connection = sqlite3.connect(self.path, isolation_level=None)
        connection.row_factory = sqlite3.Row
        for pragma in self._pragmas():
            connection.execute(pragma)
        return connection

    def _connect_writer(self) -> sqlite3.Connection:
        connection = self.connect()
        # The commit that takes the log past 1,000 pages would otherwise copy them into the
        # database file itself: the Checkpointer does that, off the commit path.
        connection.execute("PRAGMA wal_autocheckpoint = 0")
        return connection

    async def _on_writer_thread(self, function: Callable[..., T], *args: Any) -> T:
        assert self._writer_thread is not None, "database is not open"
        loop = asyncio.get_running_loop()
        return await loop.run_in_executor(self._writer_thread, functools.partial(function, *args))

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

    async def write(self, job: Callable[[sqlite3.Connection], T]) -> T:
        """Queue ``job`` for the writer; return its result once its transaction has committed.

        ``job`` runs on the writer thread, inside a transaction: it must only run statements on
        the connection it is given (no awaiting, no I/O of its own) and may raise to roll back
        what it did.
        """
        if self._writer_task is None:
            raise RuntimeError("database is not open")
        pending = _PendingWrite(job)
        self._queue.put_nowait(pending)
        result: T = await asyncio.shield(pending.future)
        return result

    async def execute(self, sql: str, params: Iterable[Any] = ()) -> int:
        """One write statement as its own job; returns the number of rows changed."""
        values = tuple(params)
        return await self.write(lambda connection: connection.execute(sql, values).rowcount)

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
        jobs = [pending.job for pending in batch]
        try:
            outcomes, seconds = await self._on_writer_thread(self._commit_jobs, jobs)
        except Exception as error:  # the transaction as a whole failed: nothing was committed
            log.exception("write transaction failed")
            for pending in batch:
                _settle(pending, None, error)
            return
        self.stats.record(len(batch), seconds)
        for pending, (value, job_error) in zip(batch, outcomes, strict=True):
            _settle(pending, value, job_error)

    def _commit_jobs(self, jobs: list[Job]) -> tuple[list[tuple[Any, Exception | None]], float]:
        """On the writer thread: run the jobs in one transaction; return each one's outcome and
        the seconds from BEGIN to the end of COMMIT (fsync included)."""
        connection = self._writer
        assert connection is not None
        started = time.perf_counter()
        if len(jobs) == 1:
            return [_run_alone(connection, jobs[0])], time.perf_counter() - started
        try:
            connection.execute("BEGIN IMMEDIATE")
            outcomes = [_run_in_savepoint(connection, job) for job in jobs]
            connection.execute("COMMIT")
        except BaseException:
            with contextlib.suppress(Exception):
                connection.execute("ROLLBACK")
            raise
        return outcomes, time.perf_counter() - started


class Checkpointer:
    """Copies the write-ahead log into the database file, on a connection and thread of its own.

    Left to itself, SQLite checkpoints inside the COMMIT that takes the log past 1,000 pages:
    that commit, and every message waiting on it, then pays for copying about 4 MB and an fsync
    of the database file. Under live load those were the slowest commits (25 to 250 ms, about
    1 % of them) and the largest part of the p99 latency. Here the writer never checkpoints;
    this does, every ``interval`` seconds if anything was committed since, in PASSIVE mode,
    which neither waits for nor blocks the writer and the readers. On close, a last TRUNCATE
    checkpoint leaves an empty log behind.
    """

    def __init__(self, db: Database, interval: float) -> None:
        if interval <= 0:
            raise ValueError("checkpoint_interval must be positive")
        self.db = db
        self.interval = interval
        self._thread: ThreadPoolExecutor | None = None
        self._connection: sqlite3.Connection | None = None
        self._task: asyncio.Task[None] | None = None
        self._done_at_transactions = 0

    async def start(self) -> None:
        self._thread = ThreadPoolExecutor(max_workers=1, thread_name_prefix="sqlite-checkpoint")
        self._connection = await self._on_thread(self.db.connect)
        self._task = asyncio.create_task(self._run(), name="sqlite-checkpoint")

    async def stop(self) -> None:
        await cancel_and_wait(self._task)
        self._task = None
        if self._thread is None:
            return
        if self._connection is not None:
            with contextlib.suppress(sqlite3.Error):
                await self.checkpoint("TRUNCATE")
            await self._on_thread(self._connection.close)
            self._connection = None
        self._thread.shutdown(wait=True)
        self._thread = None

    async def checkpoint(self, mode: str = "PASSIVE") -> None:
        """Run one checkpoint now and record it."""
        assert self._connection is not None, "checkpointer is not started"
        connection = self._connection
        self._done_at_transactions = self.db.stats.transactions

        def run() -> tuple[int, int, float]:
            started = time.perf_counter()
            _busy, frames, copied = connection.execute(f"PRAGMA wal_checkpoint({mode})").fetchone()
            return frames, copied, time.perf_counter() - started

        frames, copied, seconds = await self._on_thread(run)
        stats = self.db.checkpoint_stats
        stats.checkpoints += 1
        stats.seconds_total += seconds
        stats.wal_frames, stats.wal_frames_left = max(frames, 0), max(frames - copied, 0)

    async def _run(self) -> None:
        while True:
            await asyncio.sleep(self.interval)
            if self.db.stats.transactions == self._done_at_transactions:
                continue  # nothing new in the log
            try:
                await self.checkpoint()
            except sqlite3.Error:  # housekeeping: the next round tries again
                log.exception("checkpoint failed")

    async def _on_thread(self, function: Callable[[], T]) -> T:
        assert self._thread is not None
        return await asyncio.get_running_loop().run_in_executor(self._thread, function)


def _run_alone(connection: sqlite3.Connection, job: Job) -> tuple[Any, Exception | None]:
    """A transaction of one job needs no SAVEPOINT: if the job raises, roll the whole
    transaction back. (The chat's committer sends one job per transaction, and every statement
    saved is one hand-over of the GIL fewer.)"""
    try:
        connection.execute("BEGIN IMMEDIATE")
        try:
            value = job(connection)
        except Exception as error:
            connection.execute("ROLLBACK")
            return None, error
        connection.execute("COMMIT")
    except BaseException:
        with contextlib.suppress(Exception):
            connection.execute("ROLLBACK")
        raise
    return value, None


def _run_in_savepoint(connection: sqlite3.Connection, job: Job) -> tuple[Any, Exception | None]:
    """Run one job; if it raises, undo what it did and keep the error for its caller."""
    connection.execute("SAVEPOINT job")
    try:
        value = job(connection)
    except Exception as error:
        connection.execute("ROLLBACK TO job")
        connection.execute("RELEASE job")
        return None, error
    connection.execute("RELEASE job")
    return value, None


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
