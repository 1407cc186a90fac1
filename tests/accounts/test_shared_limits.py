"""Login and registration throttles shared by two nodes through a real Redis: one attempt counts
once whichever node it reaches, with the in-process throttles' rules and Retry-After values."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Callable
from contextlib import AsyncExitStack
from dataclasses import dataclass
from pathlib import Path

import pytest
from redis.asyncio import Redis

from securechat.accounts import validation
from securechat.accounts.service import Accounts, Registration
from securechat.accounts.throttle import SharedAttempts
from securechat.config import PROJECT_ROOT, Config
from securechat.errors import InvalidCredentials, Throttled
from securechat.store import Store
from securechat.store.sqlite import SQLiteStore
from tests.clockkit import ManualClock
from tests.conftest import FAST_ITERATIONS, fast_config
from tests.engines import RedisEngine
from tests.limitkit import node_limits, redis_client

AUTH_KEY = b"\x07" * validation.AUTH_KEY_BYTES
WRONG_KEY = b"\x00" * validation.AUTH_KEY_BYTES
SERVER_KEY = b"\x01" * 32
DEVICE_KEY = b"\x02" * 32
ADDRESS = "10.0.0.1"


@dataclass
class Cluster:
    """Two nodes' accounts over one store and one Redis, a lone process's beside them, one
    clock for all, and a client to look into Redis."""

    nodes: tuple[Accounts, Accounts]
    lone: Accounts
    clock: ManualClock
    redis: Redis
    config: Config


@pytest.fixture(name="store")
async def _store(tmp_path: Path) -> AsyncIterator[Store]:
    store = SQLiteStore.for_file(tmp_path / "test.db", PROJECT_ROOT / "schema.sql")
    await store.open()
    yield store
    await store.close()


@pytest.fixture(name="cluster")
async def _cluster(
    tmp_path: Path, store: Store, redis_engine: RedisEngine
) -> AsyncIterator[Cluster]:
    config = fast_config(tmp_path / "data", registrations_per_address=10)
    clock = ManualClock()
    async with AsyncExitStack() as stack:
        redis = await stack.enter_async_context(redis_client(redis_engine.url))
        nodes = []
        for _ in range(2):
            limits = await stack.enter_async_context(node_limits(redis_engine.url, config, clock))
            nodes.append(_accounts(config, store, clock, limits.throttles))
        lone = _accounts(config, store, clock, None)
        yield Cluster((nodes[0], nodes[1]), lone, clock, redis, config)


def _accounts(
    config: Config, store: Store, clock: ManualClock, shared: SharedAttempts | None
) -> Accounts:
    return Accounts.create(
        config, store, SERVER_KEY, clock, device_token_key=DEVICE_KEY, shared=shared
    )


def _registration(username: str) -> Registration:
    return Registration(
        username=username,
        salt=b"\x02" * validation.SALT_BYTES,
        iterations=FAST_ITERATIONS,
        auth_key=AUTH_KEY,
        enc_public_key=b"enc",
        sign_public_key=b"sign",
        key_backup="backup",
    )


async def _outcome(accounts: Accounts, key: bytes = WRONG_KEY, **options: str) -> str | int:
    """What a login of alice gets: "ok", "wrong", or the Retry-After of a 429."""
    try:
        await accounts.login(
            "alice", key, options.get("address", ADDRESS), options.get("device_token")
        )
    except InvalidCredentials:
        return "wrong"
    except Throttled as refused:
        return refused.retry_after
    return "ok"


async def _run_twice(cluster: Cluster, steps: list[tuple[int, float, bytes]]) -> list[list[object]]:
    """The same logins, (node, seconds to wait first, key), on the two nodes and in one
    process alone: the outcomes each way."""
    results: list[list[object]] = [[], []]
    pickers: list[Callable[[int], Accounts]] = [cluster.nodes.__getitem__, lambda _: cluster.lone]
    for run, pick in enumerate(pickers):
        started = cluster.clock.now_ms()
        for node, wait, key in steps:
            cluster.clock.advance(wait)
            results[run].append(await _outcome(pick(node), key))
        cluster.clock.advance((started - cluster.clock.now_ms()) / 1000 + 10_000)
    return results


async def test_eleven_wrong_logins_over_two_nodes_get_429_on_the_eleventh(
    cluster: Cluster,
) -> None:
    """Ten wrong logins alternating between the nodes are all counted: the eleventh, on either
    node and even with the right key, is refused with the Retry-After one process would give."""
    await cluster.lone.register(_registration("alice"))
    steps = [(index % 2, 20.0, WRONG_KEY) for index in range(10)] + [(0, 20.0, AUTH_KEY)]
    shared, lone = await _run_twice(cluster, steps)
    assert shared == lone
    assert shared[:10] == ["wrong"] * 10
    assert shared[10] == cluster.config.login_failure_window - 10 * 20


async def test_the_growing_delays_are_those_of_one_process(cluster: Cluster) -> None:
    """Past the free failures, attempts sent too soon to either node wait as they would in
    one process (1 s, 2 s, 4 s ...), and the Retry-After values are the same."""
    await cluster.lone.register(_registration("alice"))
    steps = [(index % 2, 0.5, WRONG_KEY) for index in range(12)]
    steps += [(1, 1.0, WRONG_KEY), (0, 2.5, WRONG_KEY), (1, 4.0, AUTH_KEY)]
    shared, lone = await _run_twice(cluster, steps)
    assert shared == lone
    assert any(isinstance(outcome, int) for outcome in shared)


async def test_a_success_on_one_node_forgets_the_failures_counted_on_the_other(
    cluster: Cluster,
) -> None:
    """A right key on node B clears the name's failures from node A, and takes back its own
    address count only; one process does the same."""
    await cluster.lone.register(_registration("alice"))
    steps = [(0, 30.0, WRONG_KEY)] * 4 + [(1, 30.0, AUTH_KEY)] + [(0, 30.0, WRONG_KEY)] * 7
    shared, lone = await _run_twice(cluster, steps)
    assert shared == lone
    assert shared[:11] == ["wrong"] * 4 + ["ok"] + ["wrong"] * 6
    # The address kept its 4 earlier failures: 4 + 6 = 10, so the next one is refused (the
    # name, cleared by the success, has only 6).
    assert isinstance(shared[11], int)


async def test_concurrent_attempts_on_both_nodes_are_each_counted_once(
    cluster: Cluster,
) -> None:
    """Thirty wrong logins sent at once, half to each node: exactly as many get through as
    one process lets through (the free failures and one more), every other one is refused."""
    await cluster.lone.register(_registration("alice"))

    async def burst(pick: list[Accounts]) -> list[object]:
        return list(await asyncio.gather(*(_outcome(pick[i % len(pick)]) for i in range(30))))

    shared = await burst(list(cluster.nodes))
    cluster.clock.advance(10_000)
    lone = await burst([cluster.lone])
    allowed = cluster.config.login_failures_max // 2 + 1
    assert shared.count("wrong") == lone.count("wrong") == allowed
    assert await cluster.redis.zcard("securechat:login:user:alice") == allowed
    assert await cluster.redis.zcard(f"securechat:login:addr:{ADDRESS}") == allowed


async def test_registrations_are_counted_once_over_both_nodes(cluster: Cluster) -> None:
    """Fifty registrations from one address at once, split over the nodes: exactly the bound
    is let through, free of delays; another address is not held back."""

    async def attempt(accounts: Accounts, address: str) -> bool:
        try:
            await accounts.admit_registration(address)
        except Throttled:
            return False
        return True

    nodes = cluster.nodes
    admitted = await asyncio.gather(*(attempt(nodes[i % 2], ADDRESS) for i in range(50)))
    assert admitted.count(True) == cluster.config.registrations_per_address
    assert await attempt(nodes[0], "10.0.0.2")
    try:
        await nodes[1].admit_registration(ADDRESS)
    except Throttled as refused:
        assert refused.retry_after == cluster.config.registration_window
    else:
        raise AssertionError("the address was let in past its bound")


async def test_a_device_spent_on_both_nodes_is_locked_out_on_both(cluster: Cluster) -> None:
    """A device's failures on both nodes add up to its budget; then it is locked out on
    either node for the window, while the name stays open to other browsers."""
    await cluster.lone.register(_registration("alice"))
    user = await cluster.nodes[0].login("alice", AUTH_KEY, ADDRESS)
    token = cluster.nodes[0].issue_device_token(user)
    for index in range(cluster.config.device_failures_max):
        cluster.clock.advance(20)
        address = f"10.0.1.{index}"  # spread, so only the device's own budget runs out
        outcome = await _outcome(cluster.nodes[index % 2], address=address, device_token=token)
        assert outcome == "wrong"
    for node in cluster.nodes:
        refused = await _outcome(node, AUTH_KEY, address="10.0.2.1", device_token=token)
        assert refused == cluster.config.login_failure_window
    assert await _outcome(cluster.nodes[1], AUTH_KEY, address="10.0.2.2") == "ok"


async def test_every_key_expires(cluster: Cluster) -> None:
    """Each key the throttles write has a TTL of at most its window: Redis holds only what
    still counts."""
    await cluster.lone.register(_registration("alice"))
    user = await cluster.nodes[0].login("alice", AUTH_KEY, ADDRESS)
    token = cluster.nodes[0].issue_device_token(user)
    for index in range(cluster.config.device_failures_max):
        cluster.clock.advance(20)
        await _outcome(cluster.nodes[1], address=f"10.0.1.{index}", device_token=token)
        await _outcome(cluster.nodes[0])
    await cluster.nodes[0].admit_registration(ADDRESS)
    nonce = token.split(".")[0]
    keys = set(await cluster.redis.keys("securechat:*"))
    assert {
        "securechat:login:user:alice",
        f"securechat:login:addr:{ADDRESS}",
        f"securechat:lockout:{nonce}",
        f"securechat:register:{ADDRESS}",
    } <= keys
    window = max(cluster.config.login_failure_window, cluster.config.registration_window)
    for key in keys:
        ttl = await cluster.redis.pttl(key)
        assert 0 < ttl <= window * 1000, key
