"""Faults in a real cluster: a node SIGKILLed mid-send, Redis SIGKILLed and started again on
its socket, PostgreSQL stopped with ``pg_ctl -m immediate`` and started again, and a logout
that could not reach another node while Redis was down.

Each test has a cluster of its own (tools/cluster.py, as `make cluster` starts them): nodes A
and B over a fresh database and a Redis of the test's own, so that what a test breaks breaks
no other; the PostgreSQL test has a PostgreSQL of its own too. Clients are the project's Python
client; a user "moves" to another node with the same session cookie, as a load balancer without
affinity would move them.
"""

from __future__ import annotations

import asyncio
import secrets
import time
import uuid
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from typing import Any

import httpx
import pytest
from websockets.exceptions import ConnectionClosed

from securechat import e2e
from securechat.client import ChatClosed, SecureChatClient
from securechat.client.chat import ChatConnection
from tests.chatkit import PASSWORD, send_text, unique
from tests.conftest import FAST_ITERATIONS
from tests.engines import PostgresEngine, RedisEngine, find_engines
from tests.test_cluster import SETTINGS, ClientsOfNodes, _closed_with, _in_order_once
from tools.cluster import Cluster, Node, free_port

pytestmark = pytest.mark.slow

ADMIN_TOKEN = secrets.token_urlsafe(16)
STREAM = 300
# Sends in flight before the sender waits for acks (a client that resends what was not acked).
WINDOW = 20


@dataclass
class Faulted(ClientsOfNodes):
    """A test's own cluster: nodes A and B, its Redis, and the clients the test made."""

    cluster: Cluster
    a: Node
    b: Node
    redis: RedisEngine
    identities: list[e2e.Identity]
    clients: list[SecureChatClient] = field(default_factory=list)

    async def sign_up(self, node: Node, prefix: str) -> tuple[SecureChatClient, str]:
        """Someone registered and logged in on ``node``: their client and name."""
        client = self.client(node)
        name = unique(prefix)
        identity = self.identities[len(self.clients) % len(self.identities)]
        await client.register(name, PASSWORD, iterations=FAST_ITERATIONS, identity=identity)
        await client.login(name, PASSWORD)
        return client, name


@asynccontextmanager
async def _faulted(database_url: str, identities: list[e2e.Identity]) -> AsyncIterator[Faulted]:
    """Nodes A and B over ``database_url`` and a new Redis; all stopped on exit."""
    redis = await asyncio.to_thread(RedisEngine.start, find_engines()[1])
    try:
        ports = [free_port() for _ in range(2)]
        origins = [f"http://127.0.0.1:{port}" for port in ports]
        settings = SETTINGS | {"SECURECHAT_ADMIN_TOKEN": ADMIN_TOKEN}
        cluster = await asyncio.to_thread(
            Cluster.prepare, database_url, redis.url, origins, settings
        )
        try:
            a, b = [await asyncio.to_thread(cluster.start_node, port) for port in ports]
            faulted = Faulted(cluster, a, b, redis, identities)
            try:
                yield faulted
            finally:
                for client in faulted.clients:
                    await client.close()
        finally:
            await asyncio.to_thread(cluster.stop)
    finally:
        await asyncio.to_thread(redis.stop)


@pytest.fixture(name="faulted")
async def _faulted_fixture(
    postgres_engine: PostgresEngine, identities: list[e2e.Identity]
) -> AsyncIterator[Faulted]:
    """A cluster of the test's own over a fresh database on the session's PostgreSQL."""
    async with (
        postgres_engine.fresh_database() as database,
        _faulted(postgres_engine.url(database), identities) as faulted,
    ):
        yield faulted


async def _health(node: Node) -> dict[str, Any]:
    async with httpx.AsyncClient(timeout=10.0) as http:
        answer = await http.get(
            node.url + "/admin/health", headers={"Authorization": f"Bearer {ADMIN_TOKEN}"}
        )
    if answer.status_code != 200:
        tail = node.log.read_text(errors="replace")[-4000:]
        raise AssertionError(f"/admin/health answered {answer.status_code}; the log:\n{tail}")
    body: dict[str, Any] = answer.json()
    return body


async def _messages(chat: ChatConnection, sender: str, count: int) -> list[dict[str, Any]]:
    """The next ``count`` message frames from ``sender``, as they come (late is fine)."""
    return [await chat.wait_for("message", wait=30.0, **{"from": sender}) for _ in range(count)]


async def _nothing_more(chat: ChatConnection, sender: str, wait: float = 1.0) -> None:
    """No further message from ``sender`` comes within ``wait`` seconds (no duplicate)."""
    with pytest.raises(TimeoutError):
        await chat.wait_for("message", wait=wait, **{"from": sender})


async def _send_windowed(
    chat: ChatConnection, to: str, ids: list[str], acks: dict[str, int]
) -> None:
    """Send ``ids`` with at most WINDOW unacknowledged, recording acks, until all are acked
    or the socket closes (ChatClosed)."""
    sent, acked = 0, 0
    while acked < len(ids):
        while sent < len(ids) and sent - acked < WINDOW:
            try:
                await chat.send_raw(send_text(to, frame_id=ids[sent]))
            except ConnectionClosed:
                raise ChatClosed(None, "") from None
            sent += 1
        frame = await chat.wait_for("ack", wait=30.0)
        acks[frame["id"]] = frame["seq"]
        acked += 1


async def test_a_node_killed_mid_send_loses_and_duplicates_nothing_when_the_sender_resends(
    faulted: Faulted,
) -> None:
    """Alice sends on A; A is SIGKILLed after bob on B has 100; alice moves to B and resends
    every id she saw no ack for: bob has each id once, in order, each ack's position kept."""
    alice, _ = await faulted.sign_up(faulted.a, "alice")
    bob, bob_name = await faulted.sign_up(faulted.b, "bob")
    alice_name = alice.account.username if alice.account else ""
    on_b = await bob.connect()
    ids = [str(uuid.uuid4()) for _ in range(STREAM)]
    acks: dict[str, int] = {}
    sender = asyncio.create_task(
        _send_windowed(await alice.connect(after=None), bob_name, ids, acks)
    )
    seen = await _messages(on_b, alice_name, 100)
    await asyncio.to_thread(faulted.a.kill)
    with pytest.raises(ChatClosed):
        await sender
    unacked = [frame_id for frame_id in ids if frame_id not in acks]
    assert unacked  # the kill came mid-send
    acked_before = dict(acks)
    resend = await faulted.moved(alice, faulted.b).connect(after=None)
    await _send_windowed(resend, bob_name, unacked, acks)
    assert {frame_id: acks[frame_id] for frame_id in acked_before} == acked_before
    seen += await _messages(on_b, alice_name, len(ids) - len(seen))
    await _nothing_more(on_b, alice_name)
    _in_order_once(seen, ids)
    assert {frame["id"]: frame["seq"] for frame in seen} == acks
    replay = await faulted.moved(bob, faulted.b).connect(after=0)
    _in_order_once([frame for frame in replay.replayed if frame["type"] == "message"], ids)


async def _stream(
    chat: ChatConnection,
    peer: str,
    ids: list[str],
    received: list[dict[str, Any]],
    fifty: asyncio.Event,
) -> dict[str, int]:
    """Send ``ids`` to ``peer`` one every few milliseconds (a stream, not a burst) while
    reading: the peer's STREAM messages go to ``received`` as they come (``fifty`` is set at
    the fiftieth); my acks returned."""
    acks: dict[str, int] = {}

    async def send_all() -> None:
        for frame_id in ids:
            await chat.send_raw(send_text(peer, frame_id=frame_id))
            await asyncio.sleep(0.005)

    sender = asyncio.create_task(send_all())
    try:
        while len(received) < STREAM or len(acks) < len(ids):
            frame = await chat.receive(wait=30.0)
            if frame["type"] == "message" and frame["from"] == peer:
                received.append(frame)
                if len(received) == 50:
                    fifty.set()
            elif frame["type"] == "ack":
                acks[frame["id"]] = frame["seq"]
            elif frame["type"] == "error":
                raise AssertionError(f"error frame: {frame}")
        await sender
    finally:
        sender.cancel()
    return acks


async def _wait_health(node: Node, wanted: dict[str, Any], wait: float = 10.0) -> dict[str, Any]:
    """The node's /admin/health once its top-level fields match ``wanted``."""
    deadline = time.monotonic() + wait
    while True:
        health = await _health(node)
        if all(health.get(key) == value for key, value in wanted.items()):
            return health
        if time.monotonic() > deadline:
            raise AssertionError(f"health never matched {wanted}: {health}")
        await asyncio.sleep(0.1)


async def test_redis_killed_mid_stream_delays_nothing_for_good_and_limits_fall_back(
    faulted: Faulted,
) -> None:
    """Alice on A and bob on B stream to each other; Redis is SIGKILLed mid-stream and started
    again on its socket a second later: each has every message of the other once, in order;
    health says limits local (fallback) and degraded while it is down, shared and ok after."""
    alice, alice_name = await faulted.sign_up(faulted.a, "alice")
    bob, bob_name = await faulted.sign_up(faulted.b, "bob")
    on_a, on_b = await alice.connect(), await bob.connect()
    alice_ids = [str(uuid.uuid4()) for _ in range(STREAM)]
    bob_ids = [str(uuid.uuid4()) for _ in range(STREAM)]
    to_alice: list[dict[str, Any]] = []
    to_bob: list[dict[str, Any]] = []
    bob_has_fifty = asyncio.Event()
    streams = asyncio.gather(
        _stream(on_a, bob_name, alice_ids, to_alice, asyncio.Event()),
        _stream(on_b, alice_name, bob_ids, to_bob, bob_has_fifty),
    )
    await asyncio.wait_for(bob_has_fifty.wait(), 30.0)
    await asyncio.to_thread(faulted.redis.kill)
    for node in (faulted.a, faulted.b):
        down = await _wait_health(node, {"limits": "local (fallback)"})
        assert down["status"] == "degraded"
    await asyncio.sleep(1.0)
    await asyncio.to_thread(faulted.redis.restart)
    alice_acks, bob_acks = await streams
    await asyncio.gather(_nothing_more(on_a, bob_name), _nothing_more(on_b, alice_name))
    _in_order_once(to_bob, alice_ids)
    _in_order_once(to_alice, bob_ids)
    assert {frame["id"]: frame["seq"] for frame in to_bob} == alice_acks
    assert {frame["id"]: frame["seq"] for frame in to_alice} == bob_acks
    for node in (faulted.a, faulted.b):
        up = await _wait_health(node, {"limits": "shared", "status": "ok"})
        assert up["broker"]["reconnects"] >= 1


async def test_a_logout_while_redis_is_down_closes_the_other_nodes_socket_when_it_returns(
    faulted: Faulted,
) -> None:
    """Redis is down when alice logs out on A: her socket on B stays open (the control order
    is lost, not re-sent) until B's pub/sub comes back and B, checking its sockets' sessions
    against the database, closes it with 1008 within a few seconds; bob's socket stays."""
    alice, _ = await faulted.sign_up(faulted.a, "alice")
    bob, _ = await faulted.sign_up(faulted.b, "bob")
    alice_on_b = await faulted.moved(alice, faulted.b).connect(after=None)
    bystander = await bob.connect(after=None)
    await asyncio.to_thread(faulted.redis.kill)
    await _wait_health(faulted.b, {"limits": "local (fallback)"})
    await alice.logout()
    assert await alice_on_b.ping() == {"type": "pong"}  # the order did not reach B
    await asyncio.to_thread(faulted.redis.restart)
    began = time.monotonic()
    assert await _closed_with(alice_on_b) == (1008, "session ended")
    assert time.monotonic() - began < 5.0
    assert await bystander.ping() == {"type": "pong"}


@pytest.fixture(name="own_postgres")
async def _own_postgres() -> AsyncIterator[PostgresEngine]:
    """A PostgreSQL of the test's own (the test stops it: no other test may share it)."""
    postgres = await asyncio.to_thread(PostgresEngine.start, find_engines()[0])
    try:
        yield postgres
    finally:
        await asyncio.to_thread(postgres.stop)


async def test_postgres_stopped_immediately_and_restarted_keeps_every_acknowledged_message(
    own_postgres: PostgresEngine, identities: list[e2e.Identity]
) -> None:
    """Alice on A has 200 messages to bob acknowledged; PostgreSQL is stopped with ``pg_ctl
    -m immediate`` and started again: both nodes serve at once (their pools reconnect), and
    bob, syncing from 0 on A, has every acknowledged message once, in order, at its position."""
    async with _faulted(own_postgres.url(), identities) as faulted:
        alice, _ = await faulted.sign_up(faulted.a, "alice")
        bob, bob_name = await faulted.sign_up(faulted.b, "bob")
        ids = [str(uuid.uuid4()) for _ in range(200)]
        acks: dict[str, int] = {}
        await _send_windowed(await alice.connect(after=None), bob_name, ids, acks)
        await asyncio.to_thread(own_postgres.crash)
        for node in (faulted.a, faulted.b):
            down = await _health(node)
            assert (down["status"], down["database"]["status"]) == ("degraded", "error")
        await asyncio.to_thread(own_postgres.restart)
        for node in (faulted.a, faulted.b):
            up = await _health(node)
            assert (up["status"], up["database"]["status"]) == ("ok", "ok")
        replay = await faulted.moved(bob, faulted.a).connect(after=0)
        messages = [frame for frame in replay.replayed if frame["type"] == "message"]
        _in_order_once(messages, ids)
        assert {frame["id"]: frame["seq"] for frame in messages} == acks
        more = await faulted.moved(alice, faulted.b).connect(after=None)
        later: dict[str, int] = {}
        await _send_windowed(more, bob_name, [str(uuid.uuid4())], later)
        assert min(later.values()) > max(acks.values())
