"""What a cluster's node makes up for after Redis failed it: control orders kept and sent again,
resync orders for frames it dropped, a resync after a dead node is reaped, and the periodic
session check (securechat/chat/redisbroker.py, chat/cluster.py, cluster/nodes.py).

Two nodes in one process, wired as a server wires them (``ChatCluster.create``), over one
SQLite store (only node A commits) and a Redis of the module's own that a test may pause: a
call that times out puts the node's link to rest for ``redis_retry_interval`` seconds, and
what the node sends meanwhile never reaches Redis, which is the loss these tests are about.
The resync's own sweep is slow here (every 60 s), so only the path under test can catch a
socket up within a test's wait.
"""

from __future__ import annotations

import asyncio
import json
import uuid
from collections.abc import AsyncIterator, Iterator
from contextlib import asynccontextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from redis.asyncio import Redis

from securechat.chat.cluster import ChatCluster, SessionCheck
from securechat.chat.delivery import ChatStats, Delivery, Principal
from securechat.chat.hub import Hub
from securechat.chat.protocol import CloseCode
from securechat.chat.redisbroker import CONTROL_CHANNEL
from securechat.chat.session import ChatSession
from securechat.cluster.nodes import NodeLeases
from securechat.cluster.redis import RedisLink
from securechat.config import PROJECT_ROOT, Config
from securechat.runtime import cancel_and_wait
from securechat.store import NewMessage, NewUser, Session
from securechat.store.sqlite import SQLiteStore
from tests.chat.test_redis_broker import ENVELOPE_JSON, Node, positions, send, until
from tests.engines import EngineUnavailable, RedisEngine, find_engines
from tests.limitkit import pause, resume

DAY_MS = 86_400_000


@dataclass
class Pair:
    """Two nodes, their clusters, the store and the Redis they share."""

    store: SQLiteStore
    a: Node
    b: Node
    a_cluster: ChatCluster
    b_cluster: ChatCluster
    users: dict[str, Principal]
    redis: RedisEngine

    async def session(self, user: str) -> str:
        """A stored, live session of ``user``: its id."""
        sid = f"s-{uuid.uuid4().hex}"
        principal = self.users[user]
        await self.store.sessions.add_session(
            Session(sid, f"p-{sid}", principal.user_id, user, 1, 1, DAY_MS, None, "ua", "ip")
        )
        return sid

    async def synced(self, node: Node, user: str, sid: str) -> tuple[ChatSession, list[str]]:
        """``user``'s socket on ``node``, synced and subscribed, with no resync check pending
        (one that came before the sync ended skipped it: the sync covers what it would find)."""
        socket, sent = node.socket(self.users[user], sid)
        await socket.sync(0)
        await until(lambda: user in node.broker.subscribed_users() and node.resync.idle)
        return socket, sent


@pytest.fixture(name="redis", scope="module")
def _redis() -> Iterator[RedisEngine]:
    """A Redis for this module alone, which its tests pause."""
    try:
        engine = RedisEngine.start(find_engines()[1])
    except EngineUnavailable as error:
        pytest.fail(str(error))
    try:
        yield engine
    finally:
        resume(engine)
        engine.stop()


@pytest.fixture(name="pair")
async def _pair(tmp_path: Path, redis: RedisEngine) -> AsyncIterator[Pair]:
    link = RedisLink(redis.url)
    await link.client.flushall()
    await link.close()
    config = Config(
        data_dir=tmp_path,
        redis_url=redis.url,
        broker_resync_interval=60.0,
        redis_retry_interval=4.0,  # longer than a commit takes on a busy machine
        node_lease=0.6,
        session_check_interval=0.3,
        broker_control_retry_max=2,
        broker_outbox_max_bytes=10_000,
        broker_pipeline_max_bytes=2_500,
    )
    store = SQLiteStore.for_file(tmp_path / "chat.db", PROJECT_ROOT / "schema.sql")
    await store.open()
    users = {}
    for name in ("alice", "bob"):
        user_id = await store.accounts.add_user(
            NewUser(name, b"s" * 16, 600_000, "hash", b"enc", b"sign", "backup"), 1
        )
        users[name] = Principal(user_id, name)
    (a, a_cluster), (b, b_cluster) = (_node(name, config, store) for name in ("node-a", "node-b"))
    await a.delivery.start()  # A commits; B only reads
    a_cluster.start()
    b_cluster.start()
    try:
        await until(lambda: a.broker.connected and b.broker.connected)
        yield Pair(store, a, b, a_cluster, b_cluster, users, redis)
    finally:
        resume(redis)
        await a.delivery.stop()
        for node, cluster in ((a, a_cluster), (b, b_cluster)):
            for task in node.tasks:
                task.cancel()
            await asyncio.gather(*node.tasks, return_exceptions=True)
            async with asyncio.timeout(30):  # a node that does not stop fails, never hangs
                await cluster.stop()
            await node.link.close()
        await store.close()


def _node(name: str, config: Config, store: SQLiteStore) -> tuple[Node, ChatCluster]:
    hub = Hub(config.ws_connections_per_user, config.ws_queue_frames)
    link = RedisLink.from_config(config)
    sessions: list[ChatSession] = []
    cluster = ChatCluster.create(config, hub, link, name, store.messages, sessions, store.sessions)
    delivery = Delivery(store.messages, cluster.broker, config, ChatStats())
    node = Node(name, hub, link, cluster.broker, delivery, cluster.resync, config, sessions)
    return node, cluster


@asynccontextmanager
async def control_orders(redis: RedisEngine) -> AsyncIterator[asyncio.Queue[dict[str, Any]]]:
    """The resync orders published on the control channel from now on, as they come."""
    client: Redis = Redis.from_url(redis.url)
    pubsub = client.pubsub()
    await pubsub.subscribe(CONTROL_CHANNEL)
    orders: asyncio.Queue[dict[str, Any]] = asyncio.Queue()

    async def listen() -> None:
        async for message in pubsub.listen():
            if message["type"] == "message":
                order = json.loads(message["data"])
                if order["op"] == "resync":
                    orders.put_nowait(order)

    task = asyncio.create_task(listen())
    try:
        yield orders
    finally:
        await cancel_and_wait(task)
        await pubsub.aclose()  # type: ignore[no-untyped-call]
        await client.aclose()


async def rest(link: RedisLink, redis: RedisEngine) -> None:
    """Have one call of ``link`` time out, so that it rests: calls fail at once meanwhile.
    Redis stays paused until every call already under way (the lease's) has timed out too:
    one that Redis answered after the pause would end the rest."""
    pause(redis)
    try:
        assert not await link.ping()
        await asyncio.sleep(link.timeout + 0.1)
    finally:
        resume(redis)
    assert link.down


# --- control orders ------------------------------------------------------------------------------


async def test_a_logout_sent_while_the_link_rests_reaches_the_other_node_later(
    pair: Pair,
) -> None:
    """The order Redis did not take is kept, and sent again once the rest is over: alice's
    socket on B closes with 1008 though her session is still live in the database (so the
    session check would never close it)."""
    sid = await pair.session("alice")
    alice, _ = await pair.synced(pair.b, "alice", sid)
    await rest(pair.a.link, pair.redis)
    await pair.a.broker.end_session(sid)
    assert pair.a.broker.orders_waiting() == 1
    await until(alice.conn.closed.is_set, wait=20)
    assert alice.conn.close_code == CloseCode.POLICY_VIOLATION
    assert (pair.a.broker.orders_waiting(), pair.a.broker.orders_resent) == (0, 1)


async def test_control_orders_kept_are_bounded_oldest_dropped_first(pair: Pair) -> None:
    """Past broker_control_retry_max (2 here) orders waiting, the oldest go (the session
    check covers them); the newest are sent."""
    broker = pair.a.broker
    sids = [await pair.session("alice") for _ in range(3)]
    sockets = [(await pair.synced(pair.b, "alice", sid))[0] for sid in sids]
    await rest(pair.a.link, pair.redis)
    for sid in sids:
        await broker.end_session(sid)
    assert (broker.orders_waiting(), broker.orders_dropped) == (2, 1)
    await until(lambda: all(s.conn.closed.is_set() for s in sockets[1:]), wait=20)
    assert not sockets[0].conn.closed.is_set()


# --- frames dropped ------------------------------------------------------------------------------


async def test_a_frame_dropped_while_the_link_rests_comes_by_a_resync_order(pair: Pair) -> None:
    """Bob on A sends to alice on B while A's link rests: the frame is never published, and
    the resync order A sends when Redis answers again has B catch alice up from the database."""
    alice, alice_sent = await pair.synced(pair.b, "alice", await pair.session("alice"))
    bob, _ = pair.a.socket(pair.users["bob"])
    await rest(pair.a.link, pair.redis)
    await pair.a.delivery.send(bob.conn, pair.users["bob"], send(to="alice"))
    await pair.a.delivery.flush()
    head = await pair.store.messages.head(pair.users["alice"].user_id)
    await until(lambda: pair.a.broker.dropped >= 1)  # alice's frame (and bob's copy)
    await until(lambda: alice.last_pos == head, wait=20)
    assert positions(alice_sent) == [head]
    assert pair.a.broker.resync_orders == 1


async def test_a_resync_order_names_the_users_or_everyone_past_the_bound(pair: Pair) -> None:
    """The order names the users whose frames were dropped; past the bound (2 here), it
    names none: every node checks all its sockets."""
    async with control_orders(pair.redis) as orders:
        await rest(pair.a.link, pair.redis)
        for user in ("carol", "dave"):
            await pair.a.broker.publish(user, "{}")
        assert (await asyncio.wait_for(orders.get(), 20))["users"] == ["carol", "dave"]
        await rest(pair.a.link, pair.redis)
        for user in ("carol", "dave", "erin"):
            await pair.a.broker.publish(user, "{}")
        assert (await asyncio.wait_for(orders.get(), 20))["users"] is None
    assert pair.a.broker.dropped == 5


async def test_the_outbox_is_bounded_in_bytes(pair: Pair) -> None:
    """Frames past broker_outbox_max_bytes (10,000 here) are dropped and made up for, however
    few; a pipeline takes frames up to broker_pipeline_max_bytes (2,500 here), one at least."""
    broker = pair.a.broker
    frame = json.dumps({"type": "x", "pad": "p" * 1000})  # about 1,040 bytes with its envelope
    await broker.stop()  # nothing drains the outbox while it fills
    try:
        for _ in range(12):
            await broker.publish("carol", frame)
        assert (broker.outbox(), broker.dropped) == (9, 3)
        assert [len(broker._next_batch()) for _ in range(5)] == [2, 2, 2, 2, 1]
        assert broker.outbox() == 0
    finally:
        broker.start()


# --- a dead node ---------------------------------------------------------------------------------


async def test_a_dead_node_reaped_has_every_local_socket_checked(pair: Pair) -> None:
    """A node that committed a message but died before publishing it: when B reaps its lease,
    B checks its sockets against the database, and alice gets the message."""
    await pair.a_cluster.nodes.stop()  # B alone reaps
    alice, alice_sent = await pair.synced(pair.b, "alice", await pair.session("alice"))
    stored = await pair.store.messages.commit(
        [NewMessage(pair.users["bob"].user_id, str(uuid.uuid4()), "alice", ENVELOPE_JSON)], [], 1
    )
    link = RedisLink(pair.redis.url)
    try:
        await NodeLeases(link, "node-c", 0.3, lambda: {"bob": 1}).refresh()
    finally:
        await link.close()
    await until(lambda: pair.b_cluster.nodes.reaped == 1, wait=20)
    await until(lambda: alice.last_pos == stored.last_seq, wait=20)
    assert positions(alice_sent) == [stored.last_seq]
    assert pair.b.resync.stats.all_requests >= 1


# --- sessions ------------------------------------------------------------------------------------


async def test_a_session_revoked_with_no_order_closes_its_socket_within_the_interval(
    pair: Pair,
) -> None:
    """A revocation whose control order never went out at all still closes the session's
    sockets on every node: the periodic check finds it in the database."""
    sid = await pair.session("alice")
    alice, _ = await pair.synced(pair.b, "alice", sid)
    other, _ = await pair.synced(pair.b, "alice", await pair.session("alice"))
    await pair.store.sessions.revoke(sid, 2)
    await until(alice.conn.closed.is_set, wait=20)
    assert alice.conn.close_code == CloseCode.POLICY_VIOLATION
    assert not other.conn.closed.is_set()


async def test_the_session_check_asks_in_batches(pair: Pair) -> None:
    """Five sessions, batches of two: three queries, the revoked and the unknown closed."""
    hub = Hub(8, 16)
    sids = [await pair.session("alice") for _ in range(4)] + ["never-stored"]
    conns = [hub.connect("alice", sid) for sid in sids]
    await pair.store.sessions.revoke(sids[1], 2)
    check = SessionCheck(hub, pair.store.sessions, interval=3600, batch=2)
    assert await check.check() == 2
    assert check.checks == 3
    assert [conn.closed.is_set() for conn in conns] == [False, True, False, False, True]
