"""One serving process per SQLite database (store/sqlite/serving.py); any number of nodes per
PostgreSQL database. Real files, real flock; the process-level case (``hypercorn --workers 2``
without a database URL) is tests/test_workers.py."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from securechat.config import PROJECT_ROOT
from securechat.store.sqlite import SQLiteStore
from securechat.store.sqlite.serving import DatabaseInUse
from tests.store.conftest import MakeStore, new_user


def sqlite_store(path: Path) -> SQLiteStore:
    return SQLiteStore.for_file(path, PROJECT_ROOT / "schema.sql")


async def test_a_second_server_of_one_sqlite_file_is_refused_until_the_first_closes(
    tmp_path: Path,
) -> None:
    """The second claim names the holder and the way out; once the first store closes, the
    next claim succeeds."""
    path = tmp_path / "securechat.db"
    first, second = sqlite_store(path), sqlite_store(path)
    await first.open()
    await second.open()
    try:
        await first.claim_serving()
        with pytest.raises(DatabaseInUse) as refused:
            await second.claim_serving()
        message = str(refused.value)
        assert f"pid {os.getpid()}" in message and str(path) in message
        assert "SECURECHAT_DATABASE_URL" in message and "one worker" in message
        await first.close()
        await second.claim_serving()
    finally:
        await first.close()
        await second.close()
    assert (tmp_path / "securechat.db.serving").stat().st_mode & 0o777 == 0o600


async def test_a_tool_beside_the_server_opens_the_database_without_claiming(
    tmp_path: Path,
) -> None:
    """A store that does not claim (init, the operator's commands) works while a server holds
    the lock."""
    path = tmp_path / "securechat.db"
    server, tool = sqlite_store(path), sqlite_store(path)
    await server.open()
    await server.claim_serving()
    try:
        await tool.open()
        try:
            await tool.accounts.add_user(new_user("alice"), 1)
        finally:
            await tool.close()
        assert await server.accounts.user_by_name("alice") is not None
    finally:
        await server.close()


async def test_every_node_claims_a_postgres_database(
    make_any_store: MakeStore, request: pytest.FixtureRequest
) -> None:
    """Two stores over one PostgreSQL database both serve (nodes of a cluster); over one SQLite
    file the second is refused."""
    first, second = make_any_store(), make_any_store()
    await first.open()
    await second.open()
    try:
        await first.claim_serving()
        if request.node.callspec.params["make_any_store"] == "postgres":
            await second.claim_serving()
        else:
            with pytest.raises(DatabaseInUse):
                await second.claim_serving()
    finally:
        await first.close()
        await second.close()
