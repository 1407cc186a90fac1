"""Micro-benchmark: what the stream heads cost and save, on both store backends.

    python -m tools.bench.heads [--backend sqlite,postgres] [--stored 60000] [--rounds 200]

Each backend gets a fresh database (a SQLite file with ``synchronous=OFF``, so fsync noise does
not swamp a fraction of a millisecond; a throwaway PostgreSQL from tools/engines.py, as the
tests start it) holding ``--stored`` undelivered 610-byte messages from 20 senders to one
recipient, committed in batches of 500. Then, the two measures, heads first:

- **commit**: ``--rounds`` commits of 20 sends (one from each sender to the recipient), every
  other one with the stream-head bookkeeping turned off (the backend's ``stream_entries``
  answering no entries, so no head is read, linked or written), so both kinds see the same
  database as it grows. Median and p90 of each, in ms, and the difference.
- **head**: the recipient's head read 2,000 times by the statement ``head()`` ran before
  (the maximum of its four sources' indexes) and by ``head()`` now (the ``stream_heads`` row),
  alternating in blocks of 100; median µs per call, and that both gave the same answer.

One process, one connection at a time: it measures the store's own work, not a server under load.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import statistics
import tempfile
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path
from types import ModuleType
from typing import Any

from securechat.config import PROJECT_ROOT
from securechat.store import NewMessage, NewUser, Store
from securechat.store.postgres import Database as PostgresDatabase
from securechat.store.postgres import PostgresStore
from securechat.store.postgres import messages as postgres_messages
from securechat.store.sqlite import SQLiteStore
from securechat.store.sqlite import messages as sqlite_messages
from securechat.store.sqlite.database import Database as SQLiteDatabase
from tools.engines import PostgresEngine, find_engines

ENVELOPE = '{"ct":"' + "A" * 560 + '","iv":"BBBB","rk":"CC","sig":"DD","sk":"EE","v":1}'
SENDERS = 20
NOW = 1_700_000_000_000
HEAD_CALLS = 2000
# head() before the stream_heads table: the end of each of the sync's four sources' indexes.
SCAN_HEAD = {
    "sqlite": (
        "SELECT max("
        " coalesce((SELECT max(seq) FROM messages WHERE sender_id = ?1), 0),"
        " coalesce((SELECT max(seq) FROM messages WHERE recipient_id = ?1), 0),"
        " coalesce((SELECT max(delivered_seq) FROM messages"
        "  WHERE sender_id = ?1 AND delivered_seq IS NOT NULL), 0),"
        " coalesce((SELECT max(read_seq) FROM messages"
        "  WHERE sender_id = ?1 AND read_seq IS NOT NULL), 0))"
    ),
    "postgres": (
        "SELECT GREATEST("
        " coalesce((SELECT max(seq) FROM messages WHERE sender_id = $1), 0),"
        " coalesce((SELECT max(seq) FROM messages WHERE recipient_id = $1), 0),"
        " coalesce((SELECT max(delivered_seq) FROM messages"
        "  WHERE sender_id = $1 AND delivered_seq IS NOT NULL), 0),"
        " coalesce((SELECT max(read_seq) FROM messages"
        "  WHERE sender_id = $1 AND read_seq IS NOT NULL), 0))"
    ),
}
MODULES: dict[str, ModuleType] = {"sqlite": sqlite_messages, "postgres": postgres_messages}


@contextlib.asynccontextmanager
async def open_store(backend: str) -> AsyncIterator[Store]:
    """A fresh, open store on ``backend``, removed afterwards."""
    with tempfile.TemporaryDirectory(prefix="bench-heads-") as tmp:
        if backend == "sqlite":
            db = SQLiteDatabase(
                Path(tmp) / "heads.db", PROJECT_ROOT / "schema.sql", synchronous="OFF"
            )
            store: Store = SQLiteStore(db)
            await store.open()
            try:
                yield store
            finally:
                await store.close()
            return
        engine = PostgresEngine.start(find_engines()[0])
        try:
            async with engine.fresh_database() as name:
                store = PostgresStore(PostgresDatabase(engine.url(name), pool_min=1, pool_max=2))
                await store.open()
                try:
                    yield store
                finally:
                    await store.close()
        finally:
            engine.stop()


async def seed(store: Store, stored: int) -> tuple[list[int], int]:
    """The senders' ids and the recipient's, with ``stored`` messages between them."""
    senders = [
        await store.accounts.add_user(NewUser(f"s{n}", b"s" * 16, 1, "h", b"e", b"s", "b"), 1)
        for n in range(SENDERS)
    ]
    recipient = await store.accounts.add_user(NewUser("r", b"s" * 16, 1, "h", b"e", b"s", "b"), 1)
    for start in range(0, stored, 500):
        sends = [
            NewMessage(senders[n % SENDERS], f"seed-{n}", "r", ENVELOPE)
            for n in range(start, min(start + 500, stored))
        ]
        await store.messages.commit(sends, [], NOW)
    return senders, recipient


async def measure_commits(
    store: Store, backend: str, senders: list[int], rounds: int
) -> dict[str, list[float]]:
    """Commit times in ms, with the stream heads kept ("on") and not ("off"), interleaved."""
    module = MODULES[backend]
    kept = module.stream_entries
    times: dict[str, list[float]] = {"on": [], "off": []}
    for n in range(rounds):
        kind = "on" if n % 2 == 0 else "off"
        module.stream_entries = kept if kind == "on" else (lambda *_: [])  # type: ignore[attr-defined]
        sends = [NewMessage(sender, f"r{n}-{sender}", "r", ENVELOPE) for sender in senders]
        try:
            started = time.perf_counter()
            await store.messages.commit(sends, [], NOW + n)
            times[kind].append((time.perf_counter() - started) * 1000)
        finally:
            module.stream_entries = kept  # type: ignore[attr-defined]
    return times


async def measure_heads(store: Store, backend: str, user: int) -> dict[str, Any]:
    """Median µs per head read, the old statement against head(), and their answers."""
    db: Any = store.db  # type: ignore[attr-defined]
    sql = SCAN_HEAD[backend]
    if backend == "sqlite":

        async def scan() -> int:
            row = await db.fetch_one(sql, (user,))
            return int(row[0])
    else:

        async def scan() -> int:
            return int(await db.fetch_value(sql, user))

    async def row() -> int:
        return await store.messages.head(user)

    ways: dict[str, Callable[[], Awaitable[int]]] = {"scan": scan, "row": row}
    per_call: dict[str, list[float]] = {"scan": [], "row": []}
    answers = {name: await way() for name, way in ways.items()}
    for block in range(HEAD_CALLS // 100 * 2):
        name = "scan" if block % 2 == 0 else "row"
        started = time.perf_counter()
        for _ in range(100):
            await ways[name]()
        per_call[name].append((time.perf_counter() - started) * 1e6 / 100)
    engine = await engine_times(store, backend, user)
    return {
        "scan_us": round(statistics.median(per_call["scan"]), 1),
        "row_us": round(statistics.median(per_call["row"]), 1),
        "same_answer": answers["scan"] == answers["row"],
        "head": answers["row"],
        "engine_scan_us": engine["scan"],
        "engine_row_us": engine["row"],
    }


async def engine_times(store: Store, backend: str, user: int) -> dict[str, float]:
    """Median µs of each statement inside the engine, without the driver's round trip: a
    plain sqlite3 connection on the writer's side; PostgreSQL's own EXPLAIN ANALYZE time."""
    db: Any = store.db  # type: ignore[attr-defined]
    row_sql = MODULES[backend]._HEAD_SQL
    found: dict[str, float] = {}
    for name, sql in (("scan", SCAN_HEAD[backend]), ("row", row_sql)):
        if backend == "sqlite":
            with contextlib.closing(db.connect()) as connection:
                times = []
                for _ in range(HEAD_CALLS // 100):
                    started = time.perf_counter()
                    for _ in range(100):
                        connection.execute(sql, (user,)).fetchone()
                    times.append((time.perf_counter() - started) * 1e6 / 100)
        else:
            times = []
            for _ in range(HEAD_CALLS // 10):
                plan = await db.fetch_value(f"EXPLAIN (ANALYZE, FORMAT JSON) {sql}", user)
                times.append(json.loads(plan)[0]["Execution Time"] * 1000)
        found[name] = round(statistics.median(times), 2)
    return found


def summary(values: list[float]) -> dict[str, float]:
    ordered = sorted(values)
    return {
        "median_ms": round(statistics.median(ordered), 3),
        "p90_ms": round(ordered[int(len(ordered) * 0.9)], 3),
    }


async def run(backend: str, stored: int, rounds: int) -> dict[str, Any]:
    async with open_store(backend) as store:
        senders, recipient = await seed(store, stored)
        # Before the commits: half of those leave the heads behind on purpose.
        heads = await measure_heads(store, backend, recipient)
        commits = await measure_commits(store, backend, senders, rounds)
    on, off = summary(commits["on"]), summary(commits["off"])
    return {
        "backend": backend,
        "stored": stored,
        "rounds": rounds,
        "commit_with_heads": on,
        "commit_without_heads": off,
        "heads_cost_pct": round((on["median_ms"] / off["median_ms"] - 1) * 100, 1),
        "head_read": heads,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--backend", default="sqlite,postgres")
    parser.add_argument("--stored", type=int, default=60_000)
    parser.add_argument("--rounds", type=int, default=200)
    args = parser.parse_args()
    for backend in args.backend.split(","):
        print(json.dumps(asyncio.run(run(backend, args.stored, args.rounds))), flush=True)


if __name__ == "__main__":
    main()
