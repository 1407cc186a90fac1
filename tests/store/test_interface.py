"""securechat.store.interface: the backend the factory picks implements every Protocol."""

from __future__ import annotations

from pathlib import Path

from securechat.store import (
    AccountStore,
    DirectoryStore,
    MessageStore,
    SessionStore,
    Store,
    create_store,
)
from securechat.store.postgres import PostgresStore
from securechat.store.sqlite import SQLiteStore
from tests.conftest import fast_config


def test_the_configured_store_is_sqlite_and_has_every_part(tmp_path: Path) -> None:
    """create_store gives the SQLite backend, and it and its parts have every interface method."""
    store = create_store(fast_config(tmp_path))
    assert isinstance(store, SQLiteStore)
    assert isinstance(store, Store)
    assert isinstance(store.accounts, AccountStore)
    assert isinstance(store.sessions, SessionStore)
    assert isinstance(store.messages, MessageStore)
    assert isinstance(store.directory, DirectoryStore)
    assert store.checkpoint_stats is not None  # SQLite's store checkpoints its own log


def test_a_database_url_gives_the_postgres_store_with_its_pool_bounds(tmp_path: Path) -> None:
    """With database_url set, create_store gives the PostgreSQL backend (not yet connected),
    with every part, the configured pool and no checkpoints of its own."""
    url = "postgresql://securechat@db.example/securechat"
    store = create_store(fast_config(tmp_path, database_url=url, db_pool_min=1, db_pool_max=3))
    assert isinstance(store, PostgresStore)
    assert (store.db.dsn, store.db.pool_min, store.db.pool_max) == (url, 1, 3)
    assert isinstance(store, Store)
    assert isinstance(store.accounts, AccountStore)
    assert isinstance(store.sessions, SessionStore)
    assert isinstance(store.messages, MessageStore)
    assert isinstance(store.directory, DirectoryStore)
    assert store.checkpoint_stats is None
