"""One directory, one secret (issue 11, item 5): nodes over one database must hold the same
server secret and directory key, and a node holding others refuses to start."""

from __future__ import annotations

import shutil
from collections.abc import Callable
from pathlib import Path

import pytest
from quart import Quart
from quart.testing.app import LifespanError

from securechat import datadir
from securechat.app import create_app
from securechat.config import Config
from securechat.directory.identity import IdentityMismatch, check_identity
from securechat.store import ClusterIdentity, Store
from tests.conftest import fast_config
from tests.engines import PostgresEngine

MakeConfig = Callable[[str], Config]


@pytest.fixture(name="node_config")
def _node_config(
    tmp_path: Path, postgres_engine: PostgresEngine, postgres_database: str
) -> MakeConfig:
    """A node's config: a data directory of its own, the one PostgreSQL database."""
    url = postgres_engine.url(postgres_database)
    return lambda name: fast_config(tmp_path / name, database_url=url, db_pool_min=1, db_pool_max=2)


async def start(app: Quart) -> None:
    """Run the app's start-up; on a refusal, close what it opened before raising."""
    try:
        await app.startup()
    except BaseException:
        await close_refused(app)
        raise


async def close_refused(app: Quart) -> None:
    """What a refused process's exit does: close the store and the tasks opened before the
    refusal (the after_serving functions; the while_serving ones never started)."""
    async with app.app_context():
        for func in app.after_serving_funcs:
            await app.ensure_async(func)()


async def test_a_node_with_another_directory_key_refuses_to_start(
    node_config: MakeConfig,
) -> None:
    """Node B holds node A's server secret but its own directory key: it refuses, naming the
    key file and the setting, and node A goes on serving."""
    first, second = node_config("a"), node_config("b")
    node_a = create_app(first)
    await start(node_a)
    try:
        second.data_dir.mkdir(mode=0o700)
        shutil.copy2(first.server_secret_path, second.server_secret_path)
        with pytest.raises(IdentityMismatch) as refused:
            await start(create_app(second))
        said = str(refused.value)
        assert "directory signing key" in said and str(second.directory_key_path) in said
        assert "SECURECHAT_DIRECTORY_KEY_FILE" in said and "server secret" not in said
    finally:
        await node_a.shutdown()


async def test_a_node_with_another_server_secret_refuses_to_start(
    node_config: MakeConfig,
) -> None:
    """Node B holds node A's directory key but its own server secret: it refuses, naming the
    secret's file and never its content."""
    first, second = node_config("a"), node_config("b")
    node_a = create_app(first)
    await start(node_a)
    await node_a.shutdown()
    second.data_dir.mkdir(mode=0o700)
    shutil.copy2(first.directory_key_path, second.directory_key_path)
    with pytest.raises(IdentityMismatch) as refused:
        await start(create_app(second))
    said = str(refused.value)
    assert "server secret" in said and "SECURECHAT_SERVER_SECRET_FILE" in said
    assert "directory signing key" not in said
    assert second.server_secret_path.read_bytes().hex() not in said


async def test_nodes_pointed_at_the_shared_files_start(node_config: MakeConfig) -> None:
    """A node whose *_FILE settings name the cluster's files starts beside the first."""
    first = node_config("a")
    node_a = create_app(first)
    await start(node_a)
    try:
        second = node_config("b").replace(
            server_secret_file=first.server_secret_path,
            directory_key_file=first.directory_key_path,
        )
        node_b = create_app(second)
        await start(node_b)
        await node_b.shutdown()
    finally:
        await node_a.shutdown()
    assert not (second.data_dir / datadir.SERVER_SECRET_FILE).exists()


async def test_the_test_client_sees_the_refusal(node_config: MakeConfig) -> None:
    """Under an ASGI server the refusal is a failed lifespan start-up with the message."""
    first, second = node_config("a"), node_config("b")
    node_a = create_app(first)
    await start(node_a)
    await node_a.shutdown()
    node_b = create_app(second)
    with pytest.raises(LifespanError, match="refusing to start"):
        async with node_b.test_app():
            pass
    await close_refused(node_b)


async def test_check_identity_names_both_files(any_store: Store, tmp_path: Path) -> None:
    """Both fingerprints differing: the message names both files, on either backend (as a
    cluster's node: ``database_url`` set is what makes the check run)."""
    config = fast_config(tmp_path / "data", database_url="postgresql://cluster.example/chat")
    await check_identity(any_store.identity, ClusterIdentity("a" * 64, "b" * 64), config, 1)
    with pytest.raises(IdentityMismatch) as refused:
        await check_identity(any_store.identity, ClusterIdentity("c" * 64, "d" * 64), config, 2)
    said = str(refused.value)
    assert str(config.directory_key_path) in said and str(config.server_secret_path) in said
    assert "a" * 64 in said and "c" * 64 in said
