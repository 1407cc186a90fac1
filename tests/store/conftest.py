"""The store under test on either backend: ``any_store`` (open) and ``make_any_store`` (a
factory of unopened stores over one database), parametrised ``sqlite`` and ``postgres``.

A test that takes either runs twice: on a SQLite file in ``tmp_path`` and on a fresh database
of the session's throwaway PostgreSQL (tests/engines.py), which is only started when a
``postgres`` case first runs. Stores a factory makes share the one database: on PostgreSQL
each has its own pool, as two nodes of a cluster do.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import TypeAlias

import pytest

from securechat.config import PROJECT_ROOT
from securechat.store import NewUser, Store
from securechat.store.postgres import Database, PostgresStore
from securechat.store.sqlite import SQLiteStore
from tests.engines import PostgresEngine

MakeStore: TypeAlias = Callable[[], Store]
BACKENDS = ["sqlite", "postgres"]


def new_user(name: str, enc: bytes = b"enc", sign: bytes = b"sign") -> NewUser:
    """What registration stores for ``name``, with light made-up values."""
    return NewUser(name, b"s" * 16, 600_000, "hash", enc, sign, "backup")


@pytest.fixture(name="make_any_store", params=BACKENDS)
def _make_any_store(request: pytest.FixtureRequest, tmp_path: Path) -> MakeStore:
    """Stores over one SQLite file or one PostgreSQL database (open each before use)."""
    if request.param == "sqlite":
        path = tmp_path / "store.db"
        return lambda: SQLiteStore.for_file(path, PROJECT_ROOT / "schema.sql")
    # Asked for here, not as arguments: the SQLite cases never start PostgreSQL.
    engine: PostgresEngine = request.getfixturevalue("postgres_engine")
    url = engine.url(request.getfixturevalue("postgres_database"))
    return lambda: PostgresStore(Database(url, pool_min=1, pool_max=4))


@pytest.fixture(name="any_store")
async def _any_store(make_any_store: MakeStore) -> AsyncIterator[Store]:
    """An open store on each backend in turn, closed after the test."""
    store = make_any_store()
    await store.open()
    try:
        yield store
    finally:
        await store.close()
