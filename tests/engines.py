"""The throwaway PostgreSQL and Redis of tools/engines.py as pytest fixtures, started once per
session when a test asks, stopped at its end.

A test that needs an engine that cannot be had fails, never skips (issue 11). The fixtures
(``postgres_engine``, ``postgres_database``, ``redis_engine``) are a pytest plugin that
tests/conftest.py loads; the engine classes live in tools/engines.py so that `make cluster`
(tools/cluster.py) starts the same engines.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Iterator

import pytest

from tools.engines import (
    EngineUnavailable,
    PostgresEngine,
    RedisEngine,
    find_engines,
    postgres_bin_dir,
)

__all__ = [
    "EngineUnavailable",
    "PostgresEngine",
    "RedisEngine",
    "find_engines",
    "postgres_bin_dir",
]


@pytest.fixture(name="postgres_engine", scope="session")
def _postgres_engine() -> Iterator[PostgresEngine]:
    """The session's PostgreSQL, started when a test first asks for it."""
    try:
        engine = PostgresEngine.start(find_engines()[0])
    except EngineUnavailable as error:
        pytest.fail(str(error))
    try:
        yield engine
    finally:
        engine.stop()


@pytest.fixture(name="postgres_database")
async def _postgres_database(postgres_engine: PostgresEngine) -> AsyncIterator[str]:
    """A new, empty database on the session's PostgreSQL, dropped after the test."""
    async with postgres_engine.fresh_database() as name:
        yield name


@pytest.fixture(name="redis_engine", scope="session")
def _redis_engine() -> Iterator[RedisEngine]:
    """The session's Redis, started when a test first asks for it."""
    try:
        engine = RedisEngine.start(find_engines()[1])
    except EngineUnavailable as error:
        pytest.fail(str(error))
    try:
        yield engine
    finally:
        engine.stop()
