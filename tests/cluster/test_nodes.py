"""securechat.cluster.nodes: reaping dead nodes' leases on the throwaway Redis (tests/engines.py)."""

from __future__ import annotations

import asyncio
from functools import partial

from redis.asyncio import Redis

from securechat.cluster.nodes import NODES_KEY, NodeLeases, users_key
from securechat.cluster.redis import RedisLink, as_text
from tests.engines import RedisEngine


async def test_nodes_reaping_together_take_each_dead_node_once(redis_engine: RedisEngine) -> None:
    """Three live nodes reap twenty dead ones at once: every dead node is reaped by one of them,
    its users handed over once, its hash and set entry gone; the live nodes stay."""
    admin: Redis = Redis.from_url(redis_engine.url)
    await admin.flushall()
    links = [RedisLink(redis_engine.url) for _ in range(4)]
    try:
        # Each dead node's lease runs out 1 s after its write, its users hash 2 s after.
        for index in range(20):
            counts = {f"user-{index}-{n}": 1 for n in range(3)}
            await NodeLeases(links[3], f"dead-{index}", 1.0, partial(dict, counts)).refresh()
        live = [NodeLeases(link, f"live-{n}", 30.0, dict) for n, link in enumerate(links[:3])]
        for node in live:
            await node.refresh()
        await asyncio.sleep(1.1)
        handed = await asyncio.gather(*(node.reap() for node in live))
        users = [user for batch in handed for user in batch]
        assert sorted(users) == sorted(f"user-{i}-{n}" for i in range(20) for n in range(3))
        assert sum(node.reaped for node in live) == 20
        members = {as_text(member) for member in await admin.smembers(NODES_KEY)}
        assert members == {"live-0", "live-1", "live-2"}
        assert not await admin.exists(*(users_key(f"dead-{index}") for index in range(20)))
        assert await live[0].reap() == []
    finally:
        for link in links:
            await link.close()
        await admin.aclose()
