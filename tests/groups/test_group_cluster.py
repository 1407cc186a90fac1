"""Groups across a real cluster (issue 13): two Hypercorn node processes over one PostgreSQL and
one Redis, the members of one group spread over both.

The nodes are started as `make cluster` starts them (tools/cluster.py), over a fresh database
on the session's throwaway PostgreSQL and a Redis of this module's own. Fifty members, half on
each node, ten of them sending at once and five offline, who come back on the other node: every
member gets every other's message exactly once, at its acked position, in one order. And a
node killed with SIGKILL right after acks loses none of them.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator

import pytest

from securechat import e2e
from tests.engines import PostgresEngine, RedisEngine, find_engines
from tests.groups import groupkit
from tests.test_cluster import SETTINGS, free_port
from tools.cluster import Cluster, Node

MEMBERS = 50
SENDERS = 10
PER_SENDER = 5
OFFLINE = 5
# The node crash: members (alternately on A and B), senders among them, messages each, and
# the ack after which node A is killed.
CRASH_MEMBERS = 6
CRASH_SENDERS = 4
CRASH_PER_SENDER = 30
CRASH_KILL_AFTER = 40


@pytest.fixture(name="nodes")
async def _nodes(postgres_engine: PostgresEngine) -> AsyncIterator[tuple[Node, Node]]:
    """Nodes A and B over a fresh database and a Redis of their own."""
    redis = RedisEngine.start(find_engines()[1])
    try:
        async with postgres_engine.fresh_database() as database:
            ports = [free_port() for _ in range(2)]
            origins = [f"http://127.0.0.1:{port}" for port in ports]
            cluster = await asyncio.to_thread(
                Cluster.prepare, postgres_engine.url(database), redis.url, origins, SETTINGS
            )
            try:
                a, b = [await asyncio.to_thread(cluster.start_node, port) for port in ports]
                yield a, b
            finally:
                await asyncio.to_thread(cluster.stop)
    finally:
        redis.stop()


@pytest.mark.slow
async def test_fifty_members_on_two_nodes_exactly_once_in_order(
    nodes: tuple[Node, Node], identities: list[e2e.Identity]
) -> None:
    """Members on nodes A and B alike, senders on both, offline members back on the other
    node: every member gets every other's message once, at its acked position, in order."""
    a, b = nodes
    people = await groupkit.members([a.url, b.url], identities, MEMBERS, "cl")
    try:
        creator, others = people[0], people[1:]
        group = await creator.groups.create("Across nodes", [m.name for m in others])
        senders = people[:SENDERS]  # alternately on A and B
        offline = [m for m in people[-2 * OFFLINE :] if m.client.base_url == a.url]
        assert len(offline) == OFFLINE
        async with asyncio.timeout(300):
            sent = await groupkit.exchange(
                people,
                group,
                senders=senders,
                per_sender=PER_SENDER,
                offline=offline,
                back_on=b.url,
            )
        assert len(sent.acks) == SENDERS * PER_SENDER
        assert {m.client.base_url for m in offline} == {b.url}
        groupkit.check_exactly_once_in_order(people, sent)
    finally:
        await groupkit.close_all(people)


@pytest.mark.slow
async def test_sigkill_of_a_node_loses_no_acked_group_message(
    nodes: tuple[Node, Node], identities: list[e2e.Identity]
) -> None:
    """Senders on both nodes; node A is killed with SIGKILL right after the 40th ack: every
    acked message is there for every member, once and in order, read from B from position 0
    (A's members come back on B)."""
    a, b = nodes
    people = await groupkit.members([a.url, b.url], identities, CRASH_MEMBERS, "clk")
    names = [m.name for m in people]
    try:
        group = await people[0].groups.create("Durable across nodes", names[1:])
        sent = groupkit.Exchange()
        async with asyncio.timeout(120):
            await asyncio.gather(
                *(
                    groupkit.send_until_killed(
                        m, group, CRASH_PER_SENDER, sent, a.kill, CRASH_KILL_AFTER
                    )
                    for m in people[:CRASH_SENDERS]  # alternately on A and B
                )
            )
        assert a.process.poll() is not None, "node A was not killed"
        assert len(sent.acks) >= CRASH_KILL_AFTER
        assert {sent.senders[i] for i in sent.acks} >= {m.name for m in people[1:CRASH_SENDERS:2]}
    finally:
        await groupkit.close_all(people)
    again = [await groupkit.join(await groupkit.log_in(b.url, name)) for name in names]
    try:
        async with asyncio.timeout(120):
            await groupkit.read_acked(again, sent)
        groupkit.check_acked_once_in_order(again, sent)
    finally:
        await groupkit.close_all(again)
