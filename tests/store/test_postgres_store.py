"""The PostgreSQL store as a cluster uses it: several nodes (one pool each) over one database,
on a throwaway PostgreSQL (tests/engines.py). What both backends do alike is in
test_store_contract.py."""

from __future__ import annotations

import asyncio
import hashlib
from collections.abc import AsyncIterator

import pytest

from securechat.directory.transparency import user_hash
from securechat.errors import UsernameTaken
from securechat.store import LogEntry
from securechat.store.postgres import Database, PostgresStore
from tests.engines import PostgresEngine
from tests.store.conftest import new_user


@pytest.fixture(name="nodes")
async def _nodes(
    postgres_engine: PostgresEngine, postgres_database: str
) -> AsyncIterator[list[PostgresStore]]:
    """Two stores over one database, opened together, as two nodes starting at once."""
    url = postgres_engine.url(postgres_database)
    nodes = [PostgresStore(Database(url, pool_min=1, pool_max=4)) for _ in range(2)]
    await asyncio.gather(*(node.open() for node in nodes))
    try:
        yield nodes
    finally:
        await asyncio.gather(*(node.close() for node in nodes))


def assert_gapless(entries: list[LogEntry]) -> None:
    """Indexes 0..n-1 in order, timestamps never going back."""
    assert [entry.index for entry in entries] == list(range(len(entries)))
    times = [entry.timestamp_ms for entry in entries]
    assert times == sorted(times)


async def test_two_nodes_registering_at_once_make_one_gapless_log(
    nodes: list[PostgresStore],
) -> None:
    """Registrations spread over two nodes, a third of them for a name already asked for: each
    name registered once, the rest UsernameTaken, and one log with each user once, in order."""
    names = [f"user{i % 40}" for i in range(60)]
    # Clocks that disagree (later registrations read earlier times): the log never goes back.
    results = await asyncio.gather(
        *(
            nodes[i % 2].accounts.add_user(new_user(name), 10_000 - i)
            for i, name in enumerate(names)
        ),
        return_exceptions=True,
    )
    failures = [r for r in results if isinstance(r, BaseException)]
    assert len(failures) == 20 and all(isinstance(r, UsernameTaken) for r in failures)
    assert len({r for r in results if isinstance(r, int)}) == 40
    entries = await nodes[0].directory.entries(0, 100)
    assert_gapless(entries)
    assert sorted(e.user_hash for e in entries) == sorted(user_hash(f"user{i}") for i in range(40))
    assert await nodes[1].accounts.count_users() == 40


async def test_key_changes_on_two_nodes_interleave_without_a_fork(
    nodes: list[PostgresStore],
) -> None:
    """Key changes racing with registrations on both nodes still make one gapless log, and each
    user's latest entry is the keys stored for them."""
    for i in range(5):
        await nodes[0].accounts.add_user(new_user(f"old{i}"), 1)
    await asyncio.gather(
        *(
            nodes[i % 2].directory.replace_keys(f"old{i % 5}", bytes([i]), b"s", "b", 100 - i)
            for i in range(10)
        ),
        *(nodes[i % 2].accounts.add_user(new_user(f"new{i}"), 50) for i in range(10)),
    )
    entries = await nodes[1].directory.entries(0, 100)
    assert len(entries) == 25
    assert_gapless(entries)
    for i in range(5):
        user = await nodes[0].accounts.user_by_name(f"old{i}")
        latest = await nodes[1].directory.latest_entry(user_hash(f"old{i}"), 25)
        assert user is not None and latest is not None
        assert latest.enc_fingerprint == hashlib.sha256(user.enc_public_key).digest()


async def test_the_store_reports_no_checkpoints_and_counts_commits(
    nodes: list[PostgresStore],
) -> None:
    """PostgreSQL checkpoints itself (None); each node counts its own transactions."""
    await nodes[0].accounts.add_user(new_user("alice"), 1)
    assert nodes[0].checkpoint_stats is None
    assert nodes[0].commit_stats.transactions == 1
    assert nodes[1].commit_stats.transactions == 0
    await nodes[1].ping()
