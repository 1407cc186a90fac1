"""securechat.chat.redisbroker, resync and cluster/nodes on the throwaway Redis (tests/engines.py).

Two nodes in one process: each a Hub with its RedisBroker, Resync and lease over its own Redis
link, both reading one SQLite store (only node A commits: one committer per database until the
PostgreSQL backend). Sockets are ChatSessions whose "socket" is a list, as in test_delivery.
"""

from __future__ import annotations

import asyncio
import json
import time
import uuid
from collections.abc import AsyncIterator, Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import pytest
from redis.asyncio import Redis

from securechat.chat.delivery import ChatStats, Delivery, Principal, Sequenced
from securechat.chat.hub import Hub
from securechat.chat.protocol import CloseCode, Send, message_frame, parse_client_frame
from securechat.chat.redisbroker import USER_PREFIX, RedisBroker
from securechat.chat.resync import Resync
from securechat.chat.session import ChatSession
from securechat.cluster.nodes import NODES_KEY, NodeLeases, users_key
from securechat.cluster.redis import RedisLink
from securechat.config import PROJECT_ROOT, Config
from securechat.store import NewMessage, NewUser, Stored
from securechat.store.sqlite import SQLiteStore
from tests.chatkit import FAKE_ENVELOPE
from tests.conftest import fast_config
from tests.engines import RedisEngine
from tests.livesrv import LiveServer

ENVELOPE_JSON = json.dumps(FAKE_ENVELOPE, separators=(",", ":"), sort_keys=True)
TOKEN = "redis-broker-admin-token"


@dataclass
class Node:
    """One node: its hub, broker, resync and the sessions it serves."""

    name: str
    hub: Hub
    link: RedisLink
    broker: RedisBroker
    delivery: Delivery
    resync: Resync
    config: Config
    sessions: list[ChatSession] = field(default_factory=list)
    tasks: list[asyncio.Task[None]] = field(default_factory=list)

    def socket(
        self, user: Principal, session_id: str | None = None
    ) -> tuple[ChatSession, list[str]]:
        """A connected session of ``user`` whose send task runs; its list of written frames."""
        sent: list[str] = []

        async def append(text: str) -> None:
            sent.append(text)

        conn = self.hub.connect(user.name, session_id or f"s-{uuid.uuid4()}")
        session = ChatSession(
            conn=conn,
            user=user,
            delivery=self.delivery,
            broker=self.broker,
            config=self.config,
            transmit=append,
            clock=lambda: 0.0,
        )
        self.sessions.append(session)
        self.tasks.append(asyncio.create_task(session.run_sender()))
        return session, sent


@dataclass
class Cluster:
    store: SQLiteStore
    a: Node
    b: Node
    users: dict[str, Principal]


async def until(check: Callable[[], bool], wait: float = 5.0) -> None:
    """Return once ``check()`` is true; fail after ``wait`` seconds."""
    deadline = time.monotonic() + wait
    while not check():
        assert time.monotonic() < deadline, "timed out"
        await asyncio.sleep(0.01)


def positions(sent: list[str]) -> list[int]:
    return [json.loads(text)["seq"] for text in sent if json.loads(text)["type"] == "message"]


@pytest.fixture(name="redis_url")
async def _redis_url(redis_engine: RedisEngine) -> str:
    """The session's Redis, emptied for this test."""
    client = Redis.from_url(redis_engine.url)
    await client.flushall()
    await client.aclose()
    return redis_engine.url


@pytest.fixture(name="cluster")
async def _cluster(tmp_path: Path, redis_url: str) -> AsyncIterator[Cluster]:
    config = Config(data_dir=tmp_path, broker_resync_interval=0.2)
    store = SQLiteStore.for_file(tmp_path / "chat.db", PROJECT_ROOT / "schema.sql")
    await store.open()
    users = {}
    for name in ("alice", "bob"):
        user_id = await store.accounts.add_user(
            NewUser(name, b"s" * 16, 600_000, "hash", b"enc", b"sign", "backup"), 1
        )
        users[name] = Principal(user_id, name)
    nodes = [_node(name, config, store, redis_url) for name in ("node-a", "node-b")]
    await nodes[0].delivery.start()  # A commits; B only reads (its sessions' syncs)
    for node in nodes:
        node.broker.start()
        node.resync.start()
    try:
        await until(lambda: all(node.broker.connected for node in nodes))
        yield Cluster(store, nodes[0], nodes[1], users)
    finally:
        await nodes[0].delivery.stop()
        for node in nodes:
            for task in node.tasks:
                task.cancel()
            await asyncio.gather(*node.tasks, return_exceptions=True)
            await node.resync.stop()
            await node.broker.stop()
            await node.link.close()
        await store.close()


def _node(name: str, config: Config, store: SQLiteStore, url: str) -> Node:
    hub = Hub(config.ws_connections_per_user, config.ws_queue_frames)
    link = RedisLink(url)
    sessions: list[ChatSession] = []
    resync = Resync(store.messages, sessions, config.broker_resync_interval, 16)
    broker = RedisBroker(
        hub,
        link,
        name,
        config,
        on_reconnect=resync.all,
        on_subscribed=resync.user,
        on_resync=resync.ordered,
    )
    delivery = Delivery(store.messages, broker, config, ChatStats())
    return Node(name, hub, link, broker, delivery, resync, config, sessions)


async def numsub(link: RedisLink, user: str) -> int:
    counts = await link.client.pubsub_numsub(USER_PREFIX + user)
    return int(counts[0][1])


def send(to: str) -> Send:
    frame = parse_client_frame(
        json.dumps({"type": "send", "id": str(uuid.uuid4()), "to": to, "envelope": FAKE_ENVELOPE}),
        max_envelope_bytes=1 << 16,
    )
    assert isinstance(frame, Send)
    return frame


# --- fan-out across nodes ---------------------------------------------------------------------


async def test_a_frame_published_on_one_node_reaches_the_other(cluster: Cluster) -> None:
    """A positioned frame for alice, published on A, is queued on her socket on B, seq and
    prev kept."""
    conn = cluster.b.hub.connect("alice", "s1")
    await until(lambda: "alice" in cluster.b.broker.subscribed_users())
    await cluster.a.broker.publish("alice", Sequenced('{"type":"message"}', 7, 5))
    text = await asyncio.wait_for(conn.queue.get(), 5)
    assert text == '{"type":"message"}'
    assert isinstance(text, Sequenced) and (text.seq, text.prev) == (7, 5)


async def test_except_conn_is_skipped_and_nothing_arrives_twice(cluster: Cluster) -> None:
    """The sending socket gets nothing, its user's other sockets (here and there) one copy."""
    sender, local = cluster.a.hub.connect("alice", "s1"), cluster.a.hub.connect("alice", "s2")
    remote = cluster.b.hub.connect("alice", "s3")
    await until(lambda: "alice" in cluster.b.broker.subscribed_users())
    await cluster.a.broker.publish("alice", "hello", except_conn=sender)
    assert await asyncio.wait_for(remote.queue.get(), 5) == "hello"
    await asyncio.sleep(0.2)  # time for A's own copy to come back through Redis, if it would
    assert sender.queue.empty()
    assert [local.queue.get_nowait()] == ["hello"] and local.queue.empty()
    assert remote.queue.empty()


async def test_subscriptions_follow_the_sockets(cluster: Cluster) -> None:
    """A node listens on a user's channel from their first socket until their last is gone."""
    first = cluster.b.hub.connect("bob", "s1")
    second = cluster.b.hub.connect("bob", "s2")
    await until(lambda: "bob" in cluster.b.broker.subscribed_users())
    assert await numsub(cluster.b.link, "bob") == 1
    cluster.b.hub.disconnect(first)
    await asyncio.sleep(0.1)
    assert await numsub(cluster.b.link, "bob") == 1
    cluster.b.hub.disconnect(second)
    await until(lambda: "bob" not in cluster.b.broker.subscribed_users())
    assert await numsub(cluster.b.link, "bob") == 0


# --- the control channel ----------------------------------------------------------------------


async def test_ending_a_session_on_one_node_closes_its_socket_on_the_other(
    cluster: Cluster,
) -> None:
    """A logout on A closes that session's socket on B with 1008; other sessions stay."""
    ended, other = cluster.b.hub.connect("alice", "gone"), cluster.b.hub.connect("alice", "kept")
    await cluster.a.broker.end_session("gone")
    await asyncio.wait_for(ended.closed.wait(), 5)
    assert ended.close_code == CloseCode.POLICY_VIOLATION
    assert ended.close_reason == "session ended"
    assert not other.closed.is_set()


async def test_closing_a_user_closes_their_sockets_on_every_node(cluster: Cluster) -> None:
    """close_user on A closes the user's sockets on B too."""
    here, there = cluster.a.hub.connect("bob", "s1"), cluster.b.hub.connect("bob", "s2")
    await cluster.a.broker.close_user("bob", 4000, "account removed")
    await asyncio.wait_for(there.closed.wait(), 5)
    assert here.closed.is_set()
    assert (there.close_code, there.close_reason) == (4000, "account removed")


# --- presence ----------------------------------------------------------------------------------


async def test_a_node_whose_lease_runs_out_takes_its_users_offline(redis_url: str) -> None:
    """Alice on a node that stops refreshing its lease is offline once it expires, and the
    node that reaps it hands her to presence."""
    links = [RedisLink(redis_url), RedisLink(redis_url)]
    reaped: list[str] = []
    dying = NodeLeases(links[0], "dying", 0.5, lambda: {"alice": 1})
    alive = NodeLeases(links[1], "alive", 0.5, lambda: {}, reaped.extend)
    try:
        await dying.refresh()
        await alive.refresh()
        assert await alive.holders(["alice", "bob"]) == {"alice"}
        assert sorted(await alive.live_nodes()) == ["alive", "dying"]
        await asyncio.sleep(0.6)  # "dying" refreshes no more; "alive" does:
        await alive.refresh()
        assert await alive.holders(["alice"]) == set()
        assert await alive.live_nodes() == ["alive"]
        assert await alive.reap() == ["alice"]
        assert await alive.reap() == []  # reaped once
    finally:
        for link in links:
            await link.close()


async def test_presence_counts_a_user_online_while_any_node_holds_them(redis_url: str) -> None:
    """record() writes this node's count; 0 removes the user from it."""
    link = RedisLink(redis_url)
    leases = NodeLeases(link, "n1", 5.0, lambda: {})
    try:
        await leases.refresh()
        await leases.record("carol", 2)
        assert await leases.online(["carol"]) == {"carol"}
        await leases.record("carol", 0)
        assert await leases.online(["carol"]) == set()
    finally:
        await link.close()


async def test_a_quiet_node_keeps_its_users_online_while_it_refreshes(redis_url: str) -> None:
    """No socket opened or closed for several leases: alice stays online, because each
    refresh extends the users hash with the lease (it used to expire after two leases)."""
    link = RedisLink(redis_url)
    leases = NodeLeases(link, "quiet", 0.6, lambda: {"alice": 1})
    try:
        await leases.refresh()
        for _ in range(8):  # 1.6 s: past two leases' worth of the hash's own expiry
            await asyncio.sleep(0.2)
            await leases.refresh()
        assert await leases.online(["alice"]) == {"alice"}
    finally:
        await leases.leave()
        await link.close()


async def test_a_node_reaped_while_it_stalled_puts_itself_back(redis_url: str) -> None:
    """A reaper that removed a live node (its set entry and users) does not keep it out:
    the node's next refresh writes both again."""
    link = RedisLink(redis_url)
    leases = NodeLeases(link, "stalled", 5.0, lambda: {"bob": 1})
    try:
        await leases.refresh()
        await link.client.srem(NODES_KEY, "stalled")
        await link.client.delete(users_key("stalled"))
        assert await leases.online(["bob"]) == set()
        await leases.refresh()
        assert await leases.online(["bob"]) == {"bob"}
    finally:
        await leases.leave()
        await link.close()


# --- nothing lost --------------------------------------------------------------------------------


async def test_after_pubsub_is_cut_every_message_arrives_once_in_order(cluster: Cluster) -> None:
    """Bob on A sends 60 messages to alice on B while B's pub/sub connection is killed: the
    ones published meanwhile come by the resync; none twice, none missing, in order."""
    alice, alice_sent = cluster.b.socket(cluster.users["alice"])
    await alice.sync(0)
    bob, _ = cluster.a.socket(cluster.users["bob"])
    await until(lambda: "alice" in cluster.b.broker.subscribed_users())
    admin = Redis.from_url(cluster.b.link.url)
    try:
        for index in range(60):
            if index == 20:
                assert await admin.client_kill_filter(_type="pubsub") >= 1
            await cluster.a.delivery.send(bob.conn, cluster.users["bob"], send(to="alice"))
            await asyncio.sleep(0.01)
        await cluster.a.delivery.flush()
        head = await cluster.store.messages.head(cluster.users["alice"].user_id)
        await until(lambda: alice.last_pos == head, wait=10)
    finally:
        await admin.aclose()
    got = positions(alice_sent)
    assert len(got) == 60 and got == sorted(set(got))
    assert cluster.b.broker.reconnects >= 1
    assert cluster.b.resync.stats.catch_ups >= 1  # what pub/sub lost came from the database


async def test_the_periodic_check_catches_up_a_socket_that_missed_a_publish(
    cluster: Cluster,
) -> None:
    """A message stored with no publish at all reaches alice's socket by the head check."""
    alice, alice_sent = cluster.b.socket(cluster.users["alice"])
    await alice.sync(0)
    stored = await cluster.store.messages.commit(
        [NewMessage(cluster.users["bob"].user_id, str(uuid.uuid4()), "alice", ENVELOPE_JSON)],
        [],
        1,
    )
    await until(lambda: alice.last_pos == stored.last_seq)
    assert positions(alice_sent) == [stored.last_seq]


async def test_the_check_leaves_a_socket_alone_until_its_first_sync(cluster: Cluster) -> None:
    """A socket still before its first sync is not told to catch up (its cursor is not the
    client's yet): the sync sends the message, once."""
    alice, alice_sent = cluster.b.socket(cluster.users["alice"])
    stored = await cluster.store.messages.commit(
        [NewMessage(cluster.users["bob"].user_id, str(uuid.uuid4()), "alice", ENVELOPE_JSON)],
        [],
        1,
    )
    assert await cluster.b.resync.check(["alice"]) == 0
    await alice.sync(0)
    await alice.conn.queue.join()
    assert positions(alice_sent) == [stored.last_seq]


@pytest.mark.parametrize("later_on", ["a", "b"], ids=["both-remote", "later-local"])
async def test_a_frame_that_overtakes_another_brings_it_from_the_database(
    cluster: Cluster, later_on: str
) -> None:
    """Bob's message 2 reaches alice's socket on B before his message 1 (published after it
    on purpose: through Redis, or on B itself): the socket catches up from the database, so
    she gets 1 and 2 once each, in order, and the late 1 is dropped."""
    await cluster.b.resync.stop()  # only the frames' own prev may reveal the gap here
    alice, alice_sent = cluster.b.socket(cluster.users["alice"])
    await alice.sync(0)
    await until(lambda: "alice" in cluster.b.broker.subscribed_users())
    bob_id = cluster.users["bob"].user_id
    result = await cluster.store.messages.commit(
        [NewMessage(bob_id, f"m{n}", "alice", ENVELOPE_JSON) for n in (1, 2)], [], 1
    )
    first, second = (o for o in result.sends if isinstance(o, Stored))
    assert (first.prev_recipient, second.prev_recipient) == (0, first.seq)
    frames = [
        Sequenced(message_frame(o.seq, f"m{n}", "bob", "alice", o.ts, ENVELOPE_JSON), o.seq, p)
        for n, o, p in ((1, first, first.prev_recipient), (2, second, second.prev_recipient))
    ]
    later = cluster.a if later_on == "a" else cluster.b
    await later.broker.publish("alice", frames[1])
    await cluster.a.broker.publish("alice", frames[0])
    await until(lambda: cluster.b.broker.received == (2 if later_on == "a" else 1))
    await alice.conn.queue.join()  # what came is forwarded (or dropped)
    assert positions(alice_sent) == [first.seq, second.seq]
    assert (alice.last_pos, cluster.b.delivery.stats.gap_catch_ups) == (second.seq, 1)


async def test_head_is_the_newest_position_a_sync_shows(cluster: Cluster) -> None:
    """head() is the last position changes_after returns for the user, 0 with none."""
    messages, bob_id = cluster.store.messages, cluster.users["bob"].user_id
    assert await messages.head(bob_id) == 0
    result = await messages.commit(
        [NewMessage(bob_id, str(uuid.uuid4()), "alice", ENVELOPE_JSON)], [], 1
    )
    for user in cluster.users.values():
        changes, _ = await messages.changes_after(user.user_id, 0, 100, 1 << 20)
        assert await messages.head(user.user_id) == changes[-1].pos == result.last_seq


# --- wiring ----------------------------------------------------------------------------------------


@pytest.fixture(name="redis_server")
def _redis_server(tmp_path: Path, redis_url: str) -> Iterator[LiveServer]:
    config = fast_config(tmp_path / "data", admin_token=TOKEN, redis_url=redis_url)
    server = LiveServer(config).start()
    try:
        yield server
    finally:
        server.stop()


async def test_a_node_with_redis_reports_its_broker_healthy(redis_server: LiveServer) -> None:
    """/admin/health of a node with redis_url: broker redis, its node id, the canary back."""
    async with httpx.AsyncClient(base_url=redis_server.url) as http:
        body: dict[str, Any] = {}
        for _ in range(50):  # the lease is taken just after the server starts
            response = await http.get("/admin/health", headers={"Authorization": f"Bearer {TOKEN}"})
            body = response.json()
            if body["broker"]["nodes_alive"]:
                break
            await asyncio.sleep(0.1)
    broker = body["broker"]
    assert (broker["kind"], broker["status"], broker["nodes_alive"]) == ("redis", "ok", 1)
    assert broker["node"] == redis_server.app.extensions["securechat"].chat.node_id
    assert broker["canary_ms"] is not None
    assert body["status"] == "ok"


async def test_a_node_without_redis_uses_the_local_broker(admin_server_local: LiveServer) -> None:
    """Without redis_url: broker local, nothing of Redis loaded for it."""
    async with httpx.AsyncClient(base_url=admin_server_local.url) as http:
        response = await http.get("/admin/health", headers={"Authorization": f"Bearer {TOKEN}"})
    broker = response.json()["broker"]
    assert (broker["kind"], broker["status"]) == ("local", "ok")


@pytest.fixture(name="admin_server_local")
def _admin_server_local(tmp_path: Path) -> Iterator[LiveServer]:
    server = LiveServer(fast_config(tmp_path / "data", admin_token=TOKEN)).start()
    try:
        yield server
    finally:
        server.stop()
