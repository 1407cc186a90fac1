"""The SQLite backend on a real file: grouped writes, savepoints, WAL and checkpoints, schema
versions. What every backend does alike is in test_store_contract.py."""

from __future__ import annotations

import asyncio
import sqlite3
import threading
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from securechat.config import PROJECT_ROOT
from securechat.store import ClusterIdentity, NewUser
from securechat.store.sqlite import Database, SQLiteStore
from securechat.store.sqlite.migrations import UPGRADES


@pytest.fixture(name="store")
async def _store(tmp_path: Path) -> AsyncIterator[SQLiteStore]:
    store = SQLiteStore.for_file(tmp_path / "test.db", PROJECT_ROOT / "schema.sql")
    await store.open()
    yield store
    await store.close()


def _user(name: str) -> NewUser:
    return NewUser(name, b"s" * 16, 600_000, "hash", b"enc", b"sign", "backup")


def insert_ghost_then_fail(connection: sqlite3.Connection) -> None:
    """A write job that inserts a user, then fails: nothing of it may stay."""
    connection.execute(
        "INSERT INTO users (username, salt, iterations, auth_hash, enc_public_key,"
        " sign_public_key, key_backup, created_at, keys_updated_at)"
        " VALUES ('ghost', x'00', 1, 'h', x'00', x'00', 'b', 0, 0)"
    )
    raise RuntimeError("boom")


async def test_new_database_gets_schema_version_and_wal(store: SQLiteStore, tmp_path: Path) -> None:
    """A new file is at the current schema version, in WAL mode."""
    with sqlite3.connect(tmp_path / "test.db") as db:
        assert db.execute("PRAGMA user_version").fetchone()[0] >= 1
        assert db.execute("PRAGMA journal_mode").fetchone()[0] == "wal"


async def test_concurrent_writes_share_one_transaction(store: SQLiteStore) -> None:
    """Writes queued together commit in one transaction (group commit)."""
    before = store.db.stats.transactions
    await asyncio.gather(*(store.accounts.add_user(_user(f"user{i}"), i) for i in range(50)))
    assert await store.accounts.count_users() == 50
    assert store.db.stats.transactions - before < 50
    assert store.db.stats.largest_batch > 1


async def test_failing_job_rolls_back_alone(store: SQLiteStore) -> None:
    """A job that fails mid-way leaves no partial write and does not sink its batch."""
    results = await asyncio.gather(
        store.accounts.add_user(_user("alice"), 1),
        store.db.write(insert_ghost_then_fail),
        store.accounts.add_user(_user("bob"), 1),
        return_exceptions=True,
    )
    assert isinstance(results[1], RuntimeError)
    assert await store.accounts.user_by_name("ghost") is None
    assert await store.accounts.user_by_name("alice") is not None
    assert await store.accounts.user_by_name("bob") is not None


async def test_jobs_run_off_the_event_loop_in_one_transaction(store: SQLiteStore) -> None:
    """Every job of a batch runs on the writer thread, inside the batch's one transaction."""
    seen: list[tuple[str, bool]] = []

    def where(connection: sqlite3.Connection) -> None:
        seen.append((threading.current_thread().name, connection.in_transaction))

    before = store.db.stats.transactions
    await asyncio.gather(*(store.db.write(where) for _ in range(20)))
    assert len(seen) == 20
    assert {name for name, _ in seen} != {threading.current_thread().name}
    assert all(name.startswith("sqlite-writer") and inside for name, inside in seen)
    assert store.db.stats.transactions - before == 1


async def test_write_result_is_committed_when_returned(store: SQLiteStore, tmp_path: Path) -> None:
    """Once write() returns, another connection sees the row (committed before the answer)."""
    await store.accounts.add_user(_user("alice"), 1)
    with sqlite3.connect(tmp_path / "test.db") as db:
        assert db.execute("SELECT username FROM users").fetchall() == [("alice",)]


async def test_synchronous_mode_is_validated(tmp_path: Path) -> None:
    """An unknown synchronous mode is refused at construction."""
    with pytest.raises(ValueError, match="synchronous"):
        Database(tmp_path / "x.db", PROJECT_ROOT / "schema.sql", synchronous="SOMETIMES")


async def test_checkpoints_are_made_off_the_commit_path(tmp_path: Path) -> None:
    """The writer never checkpoints; the checkpointer copies the log while the store runs."""
    store = SQLiteStore(
        Database(tmp_path / "ckpt.db", PROJECT_ROOT / "schema.sql", checkpoint_interval=0.05)
    )
    await store.open()
    try:
        autocheckpoint = await store.db.write(
            lambda connection: connection.execute("PRAGMA wal_autocheckpoint").fetchone()[0]
        )
        assert autocheckpoint == 0
        for i in range(20):
            await store.accounts.add_user(_user(f"user{i}"), i)
        for _ in range(100):
            if store.checkpoint_stats.checkpoints:
                break
            await asyncio.sleep(0.02)
        assert store.checkpoint_stats.checkpoints >= 1
        assert store.checkpoint_stats.wal_frames > 0
        assert store.checkpoint_stats.wal_frames_left == 0  # nothing held it back
    finally:
        await store.close()
    with sqlite3.connect(tmp_path / "ckpt.db") as db:
        assert db.execute("SELECT count(*) FROM users").fetchone()[0] == 20


async def test_checkpoint_interval_must_be_positive(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="checkpoint_interval"):
        Database(tmp_path / "x.db", PROJECT_ROOT / "schema.sql", checkpoint_interval=0)


def older_database(path: Path, back_to_then: str) -> Path:
    """A database file made with today's schema and then taken back by ``back_to_then``
    (SQL that undoes later steps, adds rows and sets the old user_version)."""
    with sqlite3.connect(path) as db:
        db.executescript((PROJECT_ROOT / "schema.sql").read_text(encoding="utf-8"))
        db.executescript(back_to_then)
    return path


async def test_a_version_1_database_is_upgraded_in_place(tmp_path: Path) -> None:
    """The upgrade steps run on an older file and keep its rows."""
    path = older_database(
        tmp_path / "old.db",
        "CREATE INDEX conversations_recent ON conversations (user_id, last_seq);"
        "PRAGMA user_version = 1;",
    )
    store = SQLiteStore.for_file(path, PROJECT_ROOT / "schema.sql")
    await store.open()
    try:
        await store.accounts.add_user(_user("alice"), 1)
    finally:
        await store.close()
    with sqlite3.connect(path) as db:
        assert db.execute("PRAGMA user_version").fetchone()[0] == max(UPGRADES)
        indexes = {
            row[0] for row in db.execute("SELECT name FROM sqlite_master WHERE type = 'index'")
        }
        assert "conversations_recent" not in indexes
        assert "messages_undelivered" in indexes
        assert db.execute("SELECT count(*) FROM users").fetchone()[0] == 1


async def test_a_version_2_database_gets_the_undelivered_index(tmp_path: Path) -> None:
    """Step 3 adds the partial index the backlog is loaded along, and keeps the messages."""
    path = older_database(
        tmp_path / "v2.db",
        "DROP INDEX messages_undelivered;"
        "INSERT INTO users (id, username, salt, iterations, auth_hash, enc_public_key,"
        " sign_public_key, key_backup, created_at, keys_updated_at) VALUES"
        " (1, 'alice', x'00', 1, 'h', x'00', x'00', 'b', 0, 0),"
        " (2, 'bob', x'00', 1, 'h', x'00', x'00', 'b', 0, 0);"
        "INSERT INTO messages (seq, sender_id, recipient_id, client_id, ts, envelope,"
        " delivered_seq, delivered_at) VALUES"
        " (1, 1, 2, 'a', 0, '{\"x\":1}', NULL, NULL), (2, 1, 2, 'b', 0, '{}', 3, 5);"
        "PRAGMA user_version = 2;",
    )
    store = SQLiteStore.for_file(path, PROJECT_ROOT / "schema.sql")
    await store.open()
    try:
        assert await store.messages.undelivered() == [(1, "bob", 1, 7)]
    finally:
        await store.close()
    with sqlite3.connect(path) as db:
        assert db.execute("PRAGMA user_version").fetchone()[0] == max(UPGRADES)
        index = db.execute(
            "SELECT sql FROM sqlite_master WHERE name = 'messages_undelivered'"
        ).fetchone()
        assert index is not None and "WHERE delivered_at IS NULL" in index[0]
        assert db.execute("SELECT count(*) FROM messages").fetchone()[0] == 2


async def test_a_version_3_database_gets_the_identity_tables(tmp_path: Path) -> None:
    """Step 4 adds cluster_identity and tree_heads, which then record as on a new file."""
    path = older_database(
        tmp_path / "v3.db",
        "DROP TABLE cluster_identity; DROP TABLE tree_heads; PRAGMA user_version = 3;",
    )
    store = SQLiteStore.for_file(path, PROJECT_ROOT / "schema.sql")
    await store.open()
    try:
        identity = ClusterIdentity("a" * 64, "b" * 64)
        assert await store.identity.claim_identity(identity, 1) == identity
        assert await store.directory.record_root(1, bytes(32), 1) == bytes(32)
    finally:
        await store.close()
    with sqlite3.connect(path) as db:
        assert db.execute("PRAGMA user_version").fetchone()[0] == max(UPGRADES)


async def test_a_lone_failing_job_leaves_nothing_and_the_writer_goes_on(store: SQLiteStore) -> None:
    """A transaction of one job (no savepoint) that fails is rolled back whole."""
    with pytest.raises(RuntimeError, match="boom"):
        await store.db.write(insert_ghost_then_fail)
    assert await store.accounts.user_by_name("ghost") is None
    await store.accounts.add_user(_user("alice"), 1)
    assert await store.accounts.user_by_name("alice") is not None
