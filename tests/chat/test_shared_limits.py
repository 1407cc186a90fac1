"""The send rate and the connections-per-user cap shared by nodes through a real Redis; the
fallback to each node's own limits while Redis is down; and a live server wired to Redis."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from securechat.client import ChatConnection
from securechat.client.chat import ChatClosed
from securechat.config import Config
from tests.chatkit import ServerWith
from tests.chatkit import _server_with as _server_with
from tests.conftest import fast_config
from tests.engines import EngineUnavailable, RedisEngine, find_engines
from tests.limitkit import kill, node_limits, pause, redis_client, resume, revive

TOKEN = "limits-admin-token-for-tests"


@pytest.fixture(name="own_redis")
def _own_redis() -> Iterator[RedisEngine]:
    """A Redis for this test alone, which it may kill, pause and start again."""
    try:
        engine = RedisEngine.start(find_engines()[1])
    except EngineUnavailable as error:
        pytest.fail(str(error))
    try:
        yield engine
    finally:
        resume(engine)
        engine.stop()


def _config(tmp_path: Path, **overrides: Any) -> Config:
    settings: dict[str, Any] = {
        "sends_per_user_per_s": 0.001,  # no refill while a test runs
        "sends_per_user_burst": 3,
        "ws_connections_per_user": 2,
    }
    settings.update(overrides)
    return fast_config(tmp_path / "data", **settings)


async def test_the_send_rate_is_one_bucket_over_both_nodes(
    tmp_path: Path, redis_engine: RedisEngine
) -> None:
    """An account's burst is spent by sends on either node; past it both refuse, and
    another account is not held back. The bucket expires once it would be full again."""
    config = _config(tmp_path, sends_per_user_per_s=1.0)
    async with (
        redis_client(redis_engine.url) as redis,
        node_limits(redis_engine.url, config) as one,
        node_limits(redis_engine.url, config) as two,
    ):
        allowed = [await node.send_rate.allow(7) for node in (one, two, one, two, one)]
        assert allowed[:3] == [True, True, True]
        assert allowed[3:] == [False, False]
        assert await two.send_rate.allow(8) is True
        ttl = await redis.pttl("securechat:send:7")
        assert 0 < ttl <= (config.sends_per_user_burst / 1.0 + 1) * 1000


async def test_sends_at_once_on_both_nodes_take_the_burst_exactly(
    tmp_path: Path, redis_engine: RedisEngine
) -> None:
    """Forty sends at once, half on each node: exactly the burst gets through."""
    config = _config(tmp_path, sends_per_user_burst=10)
    async with (
        redis_client(redis_engine.url),
        node_limits(redis_engine.url, config) as one,
        node_limits(redis_engine.url, config) as two,
    ):
        nodes = (one, two)
        allowed = await asyncio.gather(*(nodes[i % 2].send_rate.allow(9) for i in range(40)))
    assert allowed.count(True) == 10


async def test_the_connection_cap_counts_the_sockets_of_both_nodes(
    tmp_path: Path, redis_engine: RedisEngine
) -> None:
    """With a cap of two, a socket on each node fills it: a third, on either, is refused
    until one closes; another user is not held back."""
    config = _config(tmp_path)
    async with (
        redis_client(redis_engine.url) as redis,
        node_limits(redis_engine.url, config) as one,
        node_limits(redis_engine.url, config) as two,
    ):
        assert await one.sockets.claim("alice", 1) is True
        assert await two.sockets.claim("alice", 1) is True
        assert await one.sockets.claim("alice", 2) is False
        assert await two.sockets.claim("alice", 2) is False
        assert await two.sockets.claim("bob", 3) is True
        one.sockets.release("alice", 1)
        await asyncio.sleep(0.05)  # the release is sent without waiting
        assert await two.sockets.claim("alice", 2) is True
        assert 0 < await redis.pttl("securechat:ws:alice") <= one.sockets.lease * 1000


async def test_a_dead_nodes_sockets_stop_counting_when_its_lease_ends(
    tmp_path: Path, redis_engine: RedisEngine
) -> None:
    """A node that stops renewing (SIGKILLed) holds its users' places only until its lease
    ends; a live node's renewals keep its own sockets counted past it."""
    config = _config(tmp_path)
    async with (
        redis_client(redis_engine.url),
        node_limits(redis_engine.url, config.replace(socket_lease=0.4)) as live,
        node_limits(redis_engine.url, config.replace(socket_lease=0.4)) as dead,
        node_limits(redis_engine.url, config) as other,
    ):
        live.start()
        assert await live.sockets.claim("alice", 1) is True
        assert await dead.sockets.claim("alice", 1) is True  # never renewed
        assert await other.sockets.claim("alice", 5) is False
        await asyncio.sleep(0.8)
        assert await other.sockets.claim("alice", 5) is True  # the dead node's place
        assert await other.sockets.claim("alice", 6) is False  # the live node's still counts


async def test_redis_killed_limits_fall_back_and_come_back(
    tmp_path: Path, own_redis: RedisEngine
) -> None:
    """With Redis killed, the limits answer None (the caller counts locally) without waiting,
    health says local (fallback) and counts the fallbacks; once Redis is back, they are
    shared again."""
    config = _config(tmp_path)
    async with node_limits(own_redis.url, config) as node:
        assert await node.health() == {"limits": "shared", "limits_fallbacks": 0}
        kill(own_redis)
        began = time.monotonic()
        assert await node.send_rate.allow(1) is None
        assert await node.sockets.claim("alice", 1) is None
        assert await node.throttles.count_registration("10.0.0.1") is False
        assert time.monotonic() - began < 1.0
        health = await node.health()
        assert health["limits"] == "local (fallback)"
        assert health["limits_fallbacks"] >= 3
        revive(own_redis)  # empty: what it held is gone
        assert (await node.health())["limits"] == "shared"
        assert await node.send_rate.allow(1) is True
        await node.sockets.renew()  # the socket claimed while Redis was away counts again
        async with redis_client(own_redis.url, fresh=False) as redis:
            assert await redis.zcard("securechat:ws:alice") == 1
        assert await node.sockets.claim("alice", 2) is True
        assert await node.sockets.claim("alice", 3) is False


async def test_redis_that_stops_answering_times_out_to_the_local_limits(
    tmp_path: Path, own_redis: RedisEngine
) -> None:
    """A Redis that hangs (SIGSTOP) costs one short timeout, then the local limits serve."""
    config = _config(tmp_path)
    async with node_limits(own_redis.url, config) as node:
        assert await node.send_rate.allow(1) is True  # connected
        pause(own_redis)
        began = time.monotonic()
        assert await node.send_rate.allow(1) is None
        assert await node.send_rate.allow(1) is None  # resting: not tried again at once
        assert time.monotonic() - began < node.link.timeout + 0.5
        resume(own_redis)
        assert (await node.health())["limits"] == "shared"


# --- A live server with SECURECHAT_REDIS_URL ------------------------------------------------


async def _health(base_url: str) -> dict[str, Any]:
    async with httpx.AsyncClient(base_url=base_url) as http:
        response = await http.get("/admin/health", headers={"Authorization": f"Bearer {TOKEN}"})
    body: dict[str, Any] = response.json()
    return body


async def _closed_with(chat: ChatConnection) -> tuple[int | None, str]:
    with pytest.raises(ChatClosed) as closed:
        while True:
            await chat.receive(wait=10.0)
    return closed.value.code, closed.value.reason


async def test_a_server_with_redis_counts_its_sockets_and_sends_there(
    server_with: ServerWith, own_redis: RedisEngine, tmp_path: Path
) -> None:
    """A server given SECURECHAT_REDIS_URL reports shared limits, counts sockets, sends and
    registrations in Redis, and refuses a socket past the cap when another node holds the
    rest; with Redis killed it serves on its own limits and reports degraded."""
    server, accounts = server_with(
        redis_url=own_redis.url, admin_token=TOKEN, ws_connections_per_user=2
    )
    config = _config(tmp_path)
    async with redis_client(own_redis.url) as redis, node_limits(own_redis.url, config) as other:
        health = await _health(server.url)
        assert (health["status"], health["limits"]) == ("ok", "shared")
        alice, bob = await accounts.sign_up("alice"), await accounts.sign_up("bob")
        assert await redis.exists("securechat:register:127.0.0.1")
        chat = await alice.connect()
        assert bob.account is not None
        await chat.send_message(bob.account.username, "hello")
        assert alice.account is not None
        name = alice.account.username
        assert await redis.zcard(f"securechat:ws:{name}") == 1
        # One id per process: the socket cap counts under the node id the broker reports.
        [member] = await redis.zrange(f"securechat:ws:{name}", 0, -1)
        assert str(member).rsplit(":", 1)[0] == health["broker"]["node"]
        assert len(await redis.keys("securechat:send:*")) == 1
        assert await other.sockets.claim(name, 1) is True  # alice's second, elsewhere
        assert await _closed_with(await alice.connect(after=None)) == (
            1008,
            "too many connections",
        )
        kill(own_redis)
        degraded = await _health(server.url)
        assert (degraded["status"], degraded["limits"]) == ("degraded", "local (fallback)")
        second = await bob.connect()  # the node's own limits serve meanwhile
        assert await second.ping() == {"type": "pong"}
        revive(own_redis)
        assert (await _health(server.url))["limits"] == "shared"
