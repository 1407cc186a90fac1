"""The equivocation alarm: a node that computes another Merkle root for a tree size than the
one recorded in the database signs no further head, and says so (issue 11, item 5)."""

from __future__ import annotations

from pathlib import Path

import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from securechat.app import create_app
from securechat.directory.merkle import MerkleTree
from securechat.directory.service import DirectoryHalted, KeyDirectory
from securechat.directory.transparency import entry_leaf_hash
from securechat.store import Store, create_store
from tests.conftest import fast_config
from tests.store.conftest import MakeStore, new_user

WRONG = b"\xee" * 32
TOKEN = "equivocation-admin-token-for-tests"


async def test_each_signed_size_records_its_root(any_store: Store) -> None:
    """The root of every size a head is signed for is recorded, and is the tree's."""
    keys = KeyDirectory(Ed25519PrivateKey.generate(), any_store.directory)
    for name in ("alice", "bob"):
        await any_store.accounts.add_user(new_user(name), 1)
        head = await keys.refresh()
        assert await any_store.directory.latest_root(head.tree_size) == (
            head.tree_size,
            head.root_hash,
        )
    entries = await any_store.directory.entries(0, 2)
    assert MerkleTree(entry_leaf_hash(e) for e in entries).root() == head.root_hash


async def test_nodes_that_agree_raise_no_alarm(make_any_store: MakeStore) -> None:
    """Two nodes over one database catching up in turn compute the recorded roots."""
    key = Ed25519PrivateKey.generate()
    stores = [make_any_store(), make_any_store()]
    for store in stores:
        await store.open()
    try:
        nodes = [KeyDirectory(key, store.directory) for store in stores]
        for number in range(3):
            await stores[number % 2].accounts.add_user(new_user(f"user{number}"), number)
            for node in nodes:
                await node.refresh()
        assert [node.equivocations for node in nodes] == [0, 0]
    finally:
        for store in stores:
            await store.close()


async def test_another_root_for_the_size_halts_signing(any_store: Store) -> None:
    """A recorded root the node does not compute: DirectoryHalted, counted, ERROR logged,
    health says equivocation, and no later refresh signs a head."""
    keys = KeyDirectory(Ed25519PrivateKey.generate(), any_store.directory)
    await any_store.accounts.add_user(new_user("alice"), 1)
    await any_store.directory.record_root(1, WRONG, 1)
    with pytest.raises(DirectoryHalted):
        await keys.refresh()
    assert keys.equivocations == 1
    await any_store.accounts.add_user(new_user("bob"), 2)
    with pytest.raises(DirectoryHalted):
        await keys.refresh()
    assert await any_store.directory.latest_root(2) == (1, WRONG)  # size 2 never signed
    health = (await keys.health())["directory"]
    assert health["status"] == "equivocation" and health["tree_size"] == 0


async def test_a_rewritten_past_size_is_found_at_start(
    any_store: Store, caplog: pytest.LogCaptureFixture
) -> None:
    """A fresh node whose log has grown past a recorded size compares that size's root too."""
    await any_store.accounts.add_user(new_user("alice"), 1)
    await any_store.directory.record_root(1, WRONG, 1)
    await any_store.accounts.add_user(new_user("bob"), 2)
    keys = KeyDirectory(Ed25519PrivateKey.generate(), any_store.directory)
    with pytest.raises(DirectoryHalted):
        await keys.refresh()
    assert "EQUIVOCATION: for tree size 1" in caplog.text
    assert caplog.records[-1].levelname == "ERROR"


async def test_a_node_that_equivocates_serves_on_and_says_so(tmp_path: Path) -> None:
    """The app starts, answers 503 for the log, and /admin/health and /metrics show the alarm."""
    config = fast_config(tmp_path / "data", admin_token=TOKEN)
    config.data_dir.mkdir(mode=0o700)
    store = create_store(config)
    await store.open()
    await store.accounts.add_user(new_user("alice"), 1)
    await store.directory.record_root(1, WRONG, 1)
    await store.close()
    app = create_app(config)
    async with app.test_app() as running:
        client = running.test_client()
        assert (await client.get("/api/v1/directory/head")).status_code == 503
        auth = {"Authorization": f"Bearer {TOKEN}"}
        health = await (await client.get("/admin/health", headers=auth)).get_json()
        assert health["status"] == "degraded"
        assert health["directory"]["status"] == "equivocation"
        metrics = await (await client.get("/metrics", headers=auth)).get_data(as_text=True)
        assert "securechat_directory_equivocations_total 1.0" in metrics
