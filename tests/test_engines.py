"""The harness's own checks: the throwaway engines are up, private, and not the system's."""

from __future__ import annotations

import os

import redis.asyncio

from tests.engines import PostgresEngine, RedisEngine


async def test_postgres_answers_on_its_own_socket(
    postgres_database: str, postgres_engine: PostgresEngine
) -> None:
    """A fresh database answers over the engine's unix socket, with no TCP port open."""
    connection = await postgres_engine.connect(postgres_database)
    try:
        assert await connection.fetchval("SELECT current_database()") == postgres_database
        assert await connection.fetchval("SHOW listen_addresses") == ""
        assert await connection.fetchval("SHOW data_directory") == str(postgres_engine.data)
    finally:
        await connection.close()


async def test_postgres_runs_as_postgres_when_root(postgres_engine: PostgresEngine) -> None:
    """As root, the cluster's files belong to the postgres user (the server refuses root)."""
    owner = postgres_engine.data.stat().st_uid
    assert owner != 0 if os.geteuid() == 0 else owner == os.geteuid()


async def test_redis_answers_ping_on_its_socket(redis_engine: RedisEngine) -> None:
    """redis.asyncio reaches the throwaway Redis over its unix socket."""
    client = redis.asyncio.Redis.from_url(redis_engine.url)
    try:
        assert await client.ping() is True
        assert (await client.config_get("port"))["port"] == "0"
    finally:
        await client.aclose()
