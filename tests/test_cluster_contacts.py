"""Who may message whom across a cluster's nodes (issue 12, items 5 and 6): the rules live in
PostgreSQL and hold on every node at once (no node caches them), presence changes travel by
Redis, and the search and contacts limits are one bucket per account over every node.

Two real nodes (separate processes) over one throwaway PostgreSQL and one Redis.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from dataclasses import dataclass, field

import pytest

from securechat import e2e
from securechat.client import SecureChatClient
from securechat.config import Config
from tests.chatkit import PASSWORD, unique
from tests.conftest import FAST_ITERATIONS
from tests.engines import PostgresEngine, RedisEngine, find_engines
from tests.test_cluster import SETTINGS, ClientsOfNodes, free_port
from tools.cluster import Cluster, Node

SEARCH_BURST = 4


@dataclass
class Pair(ClientsOfNodes):
    """Nodes A and B of the module's cluster, and the clients tests made."""

    a: Node
    b: Node
    identities: list[e2e.Identity]
    clients: list[SecureChatClient] = field(default_factory=list)

    async def user(self, node: Node, prefix: str) -> tuple[SecureChatClient, str]:
        """Sign up someone on ``node``: their client and name."""
        client = self.client(node)
        name = unique(prefix)
        identity = self.identities[len(self.clients) % len(self.identities)]
        await client.register(name, PASSWORD, iterations=FAST_ITERATIONS, identity=identity)
        await client.login(name, PASSWORD)
        return client, name


@pytest.fixture(name="nodes", scope="module")
async def _nodes(
    postgres_engine: PostgresEngine, identities: list[e2e.Identity]
) -> AsyncIterator[Pair]:
    settings = {
        **SETTINGS,
        "SECURECHAT_USER_SEARCH_PER_S": "0.001",
        "SECURECHAT_USER_SEARCH_BURST": str(SEARCH_BURST),
    }
    redis = RedisEngine.start(find_engines()[1])
    try:
        async with postgres_engine.fresh_database() as database:
            ports = [free_port() for _ in range(2)]
            origins = [f"http://127.0.0.1:{port}" for port in ports]
            cluster = await asyncio.to_thread(
                Cluster.prepare, postgres_engine.url(database), redis.url, origins, settings
            )
            try:
                a, b = [await asyncio.to_thread(cluster.start_node, port) for port in ports]
                nodes = Pair(a, b, identities)
                yield nodes
                for client in nodes.clients:
                    await client.close()
            finally:
                await asyncio.to_thread(cluster.stop)
    finally:
        redis.stop()


async def test_a_block_made_on_one_node_holds_on_the_other(nodes: Pair) -> None:
    """Bob, on B, accepts then blocks alice: alice, on A, sees him online then offline; her
    sends on A are acknowledged and never reach bob, while carol's do."""
    alice, alice_name = await nodes.user(nodes.a, "alice")
    bob, bob_name = await nodes.user(nodes.b, "bob")
    carol, _ = await nodes.user(nodes.a, "carol")
    on_a, on_b = await alice.connect(), await bob.connect()
    first = await on_a.send_message(bob_name, "hello from A")
    await on_b.wait_for("message", id=first["id"])
    await bob.contact(alice_name, "accept")
    await on_a.wait_for("presence", user=bob_name, status="online")
    await bob.contact(alice_name, "block")
    await on_a.wait_for("presence", user=bob_name, status="offline")
    withheld = await on_a.send_message(bob_name, "still there?")
    assert withheld["seq"] > first["seq"]
    later = await (await carol.connect()).send_message(bob_name, "from carol")
    await on_b.wait_for("message", id=later["id"])
    assert withheld["id"] not in on_b.messages
    assert withheld["id"] not in {frame["id"] for frame in await on_b.sync(0)}


async def test_the_search_limit_is_one_bucket_over_every_node(nodes: Pair) -> None:
    """An account's searches count together on A and B: past the burst, either node says 429
    search_limited."""
    me, _ = await nodes.user(nodes.a, "me")
    on_b = nodes.moved(me, nodes.b)
    for index in range(SEARCH_BURST):
        await (me if index % 2 else on_b).search_users("a")
    for client in (me, on_b):
        refused = await client.request("GET", "/api/v1/users?q=b")
        assert (refused.status_code, refused.json()["error"]) == (429, "search_limited")


async def test_the_contacts_limit_is_one_bucket_over_every_node(nodes: Pair) -> None:
    """An account's contacts requests count together on A and B: alternating between them,
    it is refused 429 contacts_limited after about one burst (50), not two (one per node)."""
    me, _ = await nodes.user(nodes.a, "me")
    on_b = nodes.moved(me, nodes.b)
    burst = Config().contacts_per_user_burst
    taken = 0
    while taken < 3 * burst:
        answer = await (me if taken % 2 else on_b).request("GET", "/api/v1/contacts")
        if answer.status_code == 429:
            assert answer.json()["error"] == "contacts_limited"
            break
        assert answer.status_code == 200
        taken += 1
    # The bucket refills at 5 a second while the requests are made: a little past one burst.
    assert burst <= taken < burst * 3 // 2
