"""securechat.store.postgres.database: the pool, the schema under an advisory lock, and writes
that retry once, on a throwaway PostgreSQL (tests/engines.py)."""

from __future__ import annotations

import asyncio
from pathlib import Path

import asyncpg
import pytest

from securechat.store.postgres.database import (
    SCHEMA_LOCK,
    SCHEMA_PATH,
    SCHEMA_VERSION,
    Database,
    Job,
    SchemaLockTimeout,
    Unavailable,
)
from tests.engines import PostgresEngine

# A user, a message to themselves, and its recorded head: what the stream_heads backfill
# would write back if it ran.
_ONE_MESSAGE = """
INSERT INTO users (username, salt, iterations, auth_hash, enc_public_key, sign_public_key,
                   key_backup, created_at, keys_updated_at)
     VALUES ('alice', '\\x00', 1, 'h', '\\x00', '\\x00', 'b', 0, 0);
INSERT INTO messages (seq, sender_id, recipient_id, client_id, ts, envelope)
     SELECT 1, id, id, 'm1', 0, '{}' FROM users;
"""


def database(engine: PostgresEngine, name: str) -> Database:
    return Database(engine.url(name), pool_min=1, pool_max=3)


async def test_nodes_starting_together_apply_the_schema_once_each_in_turn(
    postgres_engine: PostgresEngine, postgres_database: str
) -> None:
    """Three nodes opening at once all succeed and see the same tables: the first to take the
    lock applies the schema, the others find it current once they have the lock."""
    nodes = [database(postgres_engine, postgres_database) for _ in range(3)]
    await asyncio.gather(*(node.open() for node in nodes))
    try:
        assert [node.schema_applied for node in nodes].count(True) == 1
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


async def reopen(engine: PostgresEngine, name: str, schema_lock_timeout: float = 60.0) -> Database:
    """A node opened over the database (and closed again): what its open() did."""
    db = Database(engine.url(name), pool_min=1, pool_max=1, schema_lock_timeout=schema_lock_timeout)
    await db.open()
    await db.close()
    return db


async def test_a_current_schema_is_not_applied_again(
    postgres_engine: PostgresEngine, postgres_database: str
) -> None:
    """A node that finds the version row current runs no statement of the schema, so the
    backfills that scan messages do not run at every start; an older version runs them."""
    assert (await reopen(postgres_engine, postgres_database)).schema_applied
    connection = await postgres_engine.connect(postgres_database)
    try:
        assert await connection.fetchval("SELECT version FROM schema_version") == SCHEMA_VERSION
        await connection.execute(_ONE_MESSAGE)
        assert not (await reopen(postgres_engine, postgres_database)).schema_applied
        assert await connection.fetchval("SELECT count(*) FROM stream_heads") == 0  # no backfill
        await connection.execute("UPDATE schema_version SET version = $1", SCHEMA_VERSION - 1)
        assert (await reopen(postgres_engine, postgres_database)).schema_applied
        assert await connection.fetchval("SELECT head FROM stream_heads") == 1  # backfilled
        assert await connection.fetchval("SELECT version FROM schema_version") == SCHEMA_VERSION
    finally:
        await connection.close()


async def test_a_database_from_before_the_version_row_gets_one(
    postgres_engine: PostgresEngine, postgres_database: str
) -> None:
    """A database the schema was applied to before the version row existed is brought up to
    date (the script runs again) and records the version."""
    await reopen(postgres_engine, postgres_database)
    connection = await postgres_engine.connect(postgres_database)
    try:
        await connection.execute("DROP TABLE schema_version")
        assert (await reopen(postgres_engine, postgres_database)).schema_applied
        assert await connection.fetchval("SELECT version FROM schema_version") == SCHEMA_VERSION
    finally:
        await connection.close()


async def test_a_newer_schema_is_left_as_it_is(
    postgres_engine: PostgresEngine, postgres_database: str
) -> None:
    """An older node starting after a newer one migrated runs nothing and keeps the number."""
    await reopen(postgres_engine, postgres_database)
    connection = await postgres_engine.connect(postgres_database)
    try:
        await connection.execute("UPDATE schema_version SET version = $1", SCHEMA_VERSION + 1)
        assert not (await reopen(postgres_engine, postgres_database)).schema_applied
        assert await connection.fetchval("SELECT version FROM schema_version") == SCHEMA_VERSION + 1
    finally:
        await connection.close()


async def test_a_held_schema_lock_stops_a_migrating_node_with_a_clear_error(
    postgres_engine: PostgresEngine, postgres_database: str
) -> None:
    """While another session holds the schema lock, a node with a schema to apply gives up
    after schema_lock_timeout, naming the setting, and changes nothing; a node whose schema is
    current opens without waiting for the lock."""
    holder = await postgres_engine.connect(postgres_database)
    try:
        await holder.execute("SELECT pg_advisory_lock($1)", SCHEMA_LOCK)
        with pytest.raises(SchemaLockTimeout, match="SECURECHAT_DB_SCHEMA_LOCK_TIMEOUT"):
            await reopen(postgres_engine, postgres_database, schema_lock_timeout=0.2)
        assert await holder.fetchval("SELECT to_regclass('users')") is None
        await holder.execute(
            (SCHEMA_PATH.read_text(encoding="utf-8"))
            + "CREATE TABLE schema_version (id BIGINT PRIMARY KEY, version BIGINT NOT NULL);"
            f"INSERT INTO schema_version VALUES (1, {SCHEMA_VERSION});"
        )
        current = await reopen(postgres_engine, postgres_database, schema_lock_timeout=0.2)
        assert not current.schema_applied
    finally:
        await holder.close()


async def test_a_migration_may_run_past_one_statements_timeout(
    postgres_engine: PostgresEngine, postgres_database: str, tmp_path: Path
) -> None:
    """The schema script is bounded by schema_lock_timeout (what the other nodes wait), not by
    the pool's command timeout: a backfill slower than one statement may take still runs."""
    slow = tmp_path / "schema.sql"
    slow.write_text(SCHEMA_PATH.read_text(encoding="utf-8") + "SELECT pg_sleep(0.5);")
    db = Database(
        postgres_engine.url(postgres_database),
        pool_min=1,
        pool_max=1,
        command_timeout=0.2,
        schema_path=slow,
        schema_lock_timeout=30.0,
    )
    await db.open()
    try:
        assert db.schema_applied
    finally:
        await db.close()


async def test_a_failed_open_leaves_no_pool(
    postgres_engine: PostgresEngine, postgres_database: str
) -> None:
    """A node whose open() failed holds no connection (the pool is closed again)."""
    holder = await postgres_engine.connect(postgres_database)
    db = Database(postgres_engine.url(postgres_database), pool_min=1, schema_lock_timeout=0.2)
    try:
        await holder.execute("SELECT pg_advisory_lock($1)", SCHEMA_LOCK)
        with pytest.raises(SchemaLockTimeout):
            await db.open()
        with pytest.raises(RuntimeError, match="not open"):
            await db.ping()
    finally:
        await holder.close()


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
