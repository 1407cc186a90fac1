"""securechat.store.postgres.database: the pool, the schema under an advisory lock, and writes
that retry once, on a throwaway PostgreSQL (tests/engines.py)."""

from __future__ import annotations

import asyncio

import asyncpg
import pytest

from securechat.store.postgres.database import Database, Job, Unavailable
from tests.engines import PostgresEngine


def database(engine: PostgresEngine, name: str) -> Database:
    return Database(engine.url(name), pool_min=1, pool_max=3)


async def test_nodes_starting_together_apply_the_schema_once_each_in_turn(
    postgres_engine: PostgresEngine, postgres_database: str
) -> None:
    """Three nodes opening at once all succeed (CREATE ... IF NOT EXISTS under one lock) and
    see the same tables."""
    nodes = [database(postgres_engine, postgres_database) for _ in range(3)]
    await asyncio.gather(*(node.open() for node in nodes))
    try:
        tables = {
            row["tablename"]
            for row in await nodes[0].fetch_all(
                "SELECT tablename FROM pg_tables WHERE schemaname = 'public'"
            )
        }
        assert {"users", "sessions", "key_log", "messages", "chat_sequence"} <= tables
        assert await nodes[2].fetch_value("SELECT last FROM chat_sequence WHERE id = 1") == 0
    finally:
        await asyncio.gather(*(node.close() for node in nodes))


async def test_a_write_is_committed_when_it_returns_and_counted(
    postgres_engine: PostgresEngine, postgres_database: str
) -> None:
    """What write() returns is committed: another connection sees it at once."""
    db = database(postgres_engine, postgres_database)
    await db.open()
    try:

        async def bump(connection: asyncpg.Connection) -> int:
            value: int = await connection.fetchval(
                "UPDATE chat_sequence SET last = last + 5 WHERE id = 1 RETURNING last"
            )
            return value

        assert await db.write(bump) == 5
        other = await postgres_engine.connect(postgres_database)
        try:
            assert await other.fetchval("SELECT last FROM chat_sequence") == 5
        finally:
            await other.close()
        assert db.stats.transactions == 1
    finally:
        await db.close()


async def test_a_conflicting_write_is_retried_once_then_unavailable(
    postgres_engine: PostgresEngine, postgres_database: str
) -> None:
    """A serialization failure rolls the transaction back and runs the job again; a second
    one gives Unavailable, and neither attempt's changes are kept."""
    db = database(postgres_engine, postgres_database)
    await db.open()
    attempts = 0

    def conflicting_until(succeeds_on: int) -> Job[str]:
        async def job(connection: asyncpg.Connection) -> str:
            nonlocal attempts
            attempts += 1
            await connection.execute("UPDATE chat_sequence SET last = last + 1 WHERE id = 1")
            if attempts < succeeds_on:
                raise asyncpg.SerializationError("could not serialize access")
            return "done"

        return job

    try:
        assert await db.write(conflicting_until(2)) == "done"
        assert attempts == 2
        assert await db.fetch_value("SELECT last FROM chat_sequence") == 1
        attempts = 0
        with pytest.raises(Unavailable):
            await db.write(conflicting_until(3))
        assert attempts == 2
        assert await db.fetch_value("SELECT last FROM chat_sequence") == 1
    finally:
        await db.close()


async def test_a_closed_database_says_so() -> None:
    """Using the store before open() is a clear error, not an AttributeError on None."""
    with pytest.raises(RuntimeError, match="not open"):
        await Database("postgresql://nobody@/nowhere").ping()
