"""A real cluster: Hypercorn node processes on three ports over one PostgreSQL and one Redis.

The nodes are started as `make cluster` starts them (tools/cluster.py: the shared secret files
made by ``init --cluster``, a data directory each), over a fresh database on the session's
throwaway PostgreSQL and a Redis of this module's own. Nodes A and B serve every test; node C
is there to be killed. Clients are the project's Python client; a user "moves" to another node
with the same session cookie, as a load balancer without affinity would move them.
"""

from __future__ import annotations

import asyncio
import socket
import uuid
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from typing import Any

import pytest
from redis.asyncio import Redis

from securechat import e2e
from securechat.client import ChatClosed, ClientError, SecureChatClient
from securechat.client.chat import ChatConnection
from tests.chatkit import PASSWORD, send_text, unique
from tests.conftest import FAST_ITERATIONS
from tests.engines import PostgresEngine, RedisEngine, find_engines
from tools.cluster import Cluster, Node

EXCHANGED = 500
CONNECTIONS_PER_USER = 3
SETTINGS = {
    "SECURECHAT_ARGON2_TIME_COST": "1",
    "SECURECHAT_ARGON2_MEMORY_KIB": "8192",
    "SECURECHAT_ARGON2_PARALLELISM": "1",
    "SECURECHAT_KDF_MIN_ITERATIONS": str(FAST_ITERATIONS),
    "SECURECHAT_REGISTRATIONS_PER_ADDRESS": "10000",
    # The exchanges are sent as fast as the socket takes them, past the flood and send limits.
    "SECURECHAT_WS_FRAMES_PER_S": "100000",
    "SECURECHAT_WS_FRAMES_BURST": "100000",
    "SECURECHAT_SENDS_PER_USER_PER_S": "100000",
    "SECURECHAT_SENDS_PER_USER_BURST": "100000",
    "SECURECHAT_WS_CONNECTIONS_PER_USER": str(CONNECTIONS_PER_USER),
}


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


class ClientsOfNodes:
    """The clients a test makes on a cluster's nodes, closed with the cluster."""

    clients: list[SecureChatClient]

    def client(self, node: Node) -> SecureChatClient:
        client = SecureChatClient(node.url, min_iterations=FAST_ITERATIONS)
        self.clients.append(client)
        return client

    def moved(self, client: SecureChatClient, node: Node) -> SecureChatClient:
        """The same session (cookies, keys) reaching ``node`` instead."""
        other = self.client(node)
        other.session_cookie, other.device_cookie = client.session_cookie, client.device_cookie
        other.account = client.account
        return other


@dataclass
class Nodes(ClientsOfNodes):
    """The module's cluster: nodes A, B and C, its Redis, and the clients tests made."""

    cluster: Cluster
    a: Node
    b: Node
    c: Node
    redis: RedisEngine
    identities: list[e2e.Identity]
    clients: list[SecureChatClient] = field(default_factory=list)


@pytest.fixture(name="nodes", scope="module")
async def _nodes(
    postgres_engine: PostgresEngine, identities: list[e2e.Identity]
) -> AsyncIterator[Nodes]:
    redis = RedisEngine.start(find_engines()[1])
    try:
        async with postgres_engine.fresh_database() as database:
            ports = [free_port() for _ in range(3)]
            origins = [f"http://127.0.0.1:{port}" for port in ports]
            cluster = await asyncio.to_thread(
                Cluster.prepare, postgres_engine.url(database), redis.url, origins, SETTINGS
            )
            try:
                a, b, c = [await asyncio.to_thread(cluster.start_node, port) for port in ports]
                nodes = Nodes(cluster, a, b, c, redis, identities)
                yield nodes
                for client in nodes.clients:
                    await client.close()
            finally:
                await asyncio.to_thread(cluster.stop)
    finally:
        redis.stop()


@pytest.fixture(name="redis_client")
async def _redis_client(nodes: Nodes) -> AsyncIterator[Redis]:
    client = Redis.from_url(nodes.redis.url)
    yield client
    await client.aclose()


async def _name_of(nodes: Nodes, node: Node, prefix: str) -> tuple[SecureChatClient, str]:
    """Sign up someone on ``node``: their client and name."""
    client = nodes.client(node)
    name = unique(prefix)
    identity = nodes.identities[len(nodes.clients) % len(nodes.identities)]
    await client.register(name, PASSWORD, iterations=FAST_ITERATIONS, identity=identity)
    await client.login(name, PASSWORD)
    return client, name


async def _exchange(
    chat: ChatConnection, peer: str, count: int
) -> tuple[list[str], list[dict[str, Any]], dict[str, int]]:
    """Send ``count`` messages to ``peer`` while reading theirs: my ids, the peer's message
    frames as they came, and my acks (id -> position)."""
    ids = [str(uuid.uuid4()) for _ in range(count)]

    async def send_all() -> None:
        for frame_id in ids:
            await chat.send_raw(send_text(peer, frame_id=frame_id))

    sender = asyncio.create_task(send_all())
    received: list[dict[str, Any]] = []
    acks: dict[str, int] = {}
    try:
        while len(received) < count or len(acks) < count:
            frame = await chat.receive(wait=30.0)
            if frame["type"] == "message" and frame["from"] == peer:
                received.append(frame)
            elif frame["type"] == "ack":
                acks[frame["id"]] = frame["seq"]
            elif frame["type"] == "error":
                raise AssertionError(f"error frame: {frame}")
        await sender
    finally:
        sender.cancel()
    return ids, received, acks


def _in_order_once(frames: list[dict[str, Any]], ids: list[str]) -> None:
    assert [frame["id"] for frame in frames] == ids  # every one, once, in the order sent
    seqs = [frame["seq"] for frame in frames]
    assert seqs == sorted(set(seqs))


async def test_two_users_on_two_nodes_exchange_messages_in_order_each_once(nodes: Nodes) -> None:
    """Alice on A and bob on B each send 500 at once: each gets the other's, in order, once."""
    alice, alice_name = await _name_of(nodes, nodes.a, "alice")
    bob, bob_name = await _name_of(nodes, nodes.b, "bob")
    on_a, on_b = await alice.connect(), await bob.connect()
    (alice_ids, to_alice, alice_acks), (bob_ids, to_bob, bob_acks) = await asyncio.gather(
        _exchange(on_a, bob_name, EXCHANGED), _exchange(on_b, alice_name, EXCHANGED)
    )
    _in_order_once(to_bob, alice_ids)
    _in_order_once(to_alice, bob_ids)
    assert {frame["id"]: frame["seq"] for frame in to_bob} == alice_acks
    assert {frame["id"]: frame["seq"] for frame in to_alice} == bob_acks


async def test_receipts_typing_and_presence_cross_nodes(nodes: Nodes) -> None:
    """Bob on B marks alice's message delivered and read, types, leaves and comes back: alice
    on A is told each."""
    alice, alice_name = await _name_of(nodes, nodes.a, "alice")
    bob, bob_name = await _name_of(nodes, nodes.b, "bob")
    on_a, on_b = await alice.connect(), await bob.connect()
    ack = await on_a.send_message(bob_name, "hello from A")
    message = await on_b.wait_for("message", id=ack["id"])
    assert (await on_b.open(message)).text == "hello from A"
    await bob.contact(alice_name, "accept")  # typing and presence pass between contacts only
    await on_b.mark(message["seq"], "delivered")
    await on_b.mark(message["seq"], "read")
    for status in ("delivered", "read"):
        receipt = await on_a.wait_for("receipt", id=ack["id"], status=status)
        assert receipt["by"] == bob_name
    await on_b.typing(alice_name)
    assert await on_a.wait_for("typing") == {"type": "typing", "from": bob_name}
    await on_b.close()
    await on_a.wait_for("presence", user=bob_name, status="offline")
    await bob.connect(after=None)
    await on_a.wait_for("presence", user=bob_name, status="online")


async def _closed_with(chat: ChatConnection) -> tuple[int | None, str]:
    with pytest.raises(ChatClosed) as closed:
        while True:
            await chat.receive(wait=10.0)
    return closed.value.code, closed.value.reason


async def test_logout_on_one_node_closes_the_sessions_socket_on_the_other(nodes: Nodes) -> None:
    """Alice logs out on A: her session's socket on B is closed with 1008; bob's stays."""
    alice, _ = await _name_of(nodes, nodes.a, "alice")
    bob, _ = await _name_of(nodes, nodes.b, "bob")
    alice_on_b = await nodes.moved(alice, nodes.b).connect(after=None)
    bystander = await bob.connect(after=None)
    await alice.logout()
    assert await _closed_with(alice_on_b) == (1008, "session ended")
    assert await bystander.ping() == {"type": "pong"}


async def test_wrong_logins_over_both_nodes_are_counted_once(
    nodes: Nodes, redis_client: Redis
) -> None:
    """Eleven wrong logins alternating between A and B, as fast as they go: five free
    failures and a sixth at once answer 401, every later attempt 429, the eleventh too. Counted
    per node (five or six attempts each), all eleven would answer 401."""
    _, name = await _name_of(nodes, nodes.a, "carol")
    try:
        outcomes: list[int] = []
        for attempt in range(11):
            client = nodes.client(nodes.a if attempt % 2 == 0 else nodes.b)
            try:
                await client.login(name, "not the password")
            except ClientError as refused:
                outcomes.append(refused.status)
        # Five free failures, then a growing delay (1 s, 2 s, ...) before each further
        # attempt, which none here waits out: the throttle's rule (accounts/throttle.py).
        assert outcomes == [401] * 6 + [429] * 5
    finally:
        # The address 127.0.0.1 is throttled too: the module's other tests log in from it.
        keys = await redis_client.keys("securechat:login:*")
        if keys:
            await redis_client.delete(*keys)


async def test_the_connections_per_user_cap_holds_across_nodes(nodes: Nodes) -> None:
    """Two sockets on A and one on B fill dave's cap of three: a fourth, on B, is closed 1008."""
    dave, _ = await _name_of(nodes, nodes.a, "dave")
    dave_on_b = nodes.moved(dave, nodes.b)
    kept = [await dave.connect(after=None), await dave.connect(after=None)]
    kept.append(await dave_on_b.connect(after=None))
    assert await _closed_with(await dave_on_b.connect(after=None)) == (1008, "too many connections")
    for chat in kept:
        assert await chat.ping() == {"type": "pong"}


async def test_a_node_killed_mid_stream_loses_nothing_for_the_reader_who_moves(
    nodes: Nodes,
) -> None:
    """Bob reads alice's stream on C; C is SIGKILLed after 100 messages; bob reconnects to A
    with his cursor and has every acknowledged message exactly once, in order."""
    alice, _ = await _name_of(nodes, nodes.a, "alice")
    bob, bob_name = await _name_of(nodes, nodes.c, "bob")
    on_c = await bob.connect()
    sending = await alice.connect(after=None)
    ids = [str(uuid.uuid4()) for _ in range(300)]
    acks: dict[str, int] = {}

    async def send_and_collect_acks() -> None:
        for frame_id in ids:
            await sending.send_raw(send_text(bob_name, frame_id=frame_id))
        while len(acks) < len(ids):
            frame = await sending.wait_for("ack", wait=30.0)
            acks[frame["id"]] = frame["seq"]

    sender = asyncio.create_task(send_and_collect_acks())
    before: list[dict[str, Any]] = []
    while len(before) < 100:
        before.append(await on_c.wait_for("message"))
    await asyncio.to_thread(nodes.c.kill)
    await sender
    on_a = await nodes.moved(bob, nodes.a).connect(after=on_c.cursor)
    everything = before + [frame for frame in on_a.replayed if frame["type"] == "message"]
    _in_order_once(everything, ids)
    assert {frame["id"]: frame["seq"] for frame in everything} == acks
