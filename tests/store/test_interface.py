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
