"""Positions on PostgreSQL across nodes (issue 11, item 2): several nodes commit at once while a
cursor reader follows one user; none of its positions is skipped or seen twice, and two nodes
racing on one resend store it once.

Each node is its own ``Database`` pool with its own committer loop, as two server processes
would be. A statement-level trigger sleeps a random few milliseconds in every insert, between a
commit's drawing of its positions and its COMMIT, so that commits overlap as they do under load.
"""

from __future__ import annotations

import asyncio
import itertools
import random
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from typing import Any

import pytest

from securechat.store import Change, NewMark, NewMessage, Receipt, Stored
from securechat.store.postgres import Database, PostgresStore, Unavailable
from securechat.store.postgres.messages import MessageStore
from tests.engines import PostgresEngine
from tests.store.conftest import new_user
from tests.store.test_store_messages import ENVELOPE

NOW = 1_700_000_000_000
NAMES = ("alice", "bob", "carol", "dave")
NODES = 4
BATCHES = 30
# Wider than any scheduling accident: each commit holds its transaction open this long at most.
_SLOW_INSERTS = """
CREATE FUNCTION linger() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    PERFORM pg_sleep(random() * 0.004);
    RETURN NULL;
END;
$$;
CREATE TRIGGER linger AFTER INSERT ON messages FOR EACH STATEMENT EXECUTE FUNCTION linger();
"""


@dataclass
class Cluster:
    """Nodes over one database, and the users by name."""

    nodes: list[MessageStore]
    users: dict[str, int]
    # What the nodes' commits acknowledged: (seq, sender, recipient) of each message stored
    # new, and each receipt made (its position, the message's seq).
    acked: list[tuple[int, int, int]] = field(default_factory=list)
    receipts: list[tuple[int, int]] = field(default_factory=list)
    # Commits that failed (``Unavailable``): the committer answers ``unavailable`` and the
    # clients send again; nothing of them is acknowledged.
    failed: int = 0


@pytest.fixture(name="cluster")
async def _cluster(
    postgres_engine: PostgresEngine, postgres_database: str
) -> AsyncIterator[Cluster]:
    url = postgres_engine.url(postgres_database)
    stores = [PostgresStore(Database(url, pool_min=1, pool_max=3)) for _ in range(NODES + 1)]
    await stores[0].open()  # the schema first, then the other nodes at once
    try:
        await asyncio.gather(*(store.open() for store in stores[1:]))
        users = {name: await stores[0].accounts.add_user(new_user(name), 1) for name in NAMES}
        async with stores[0].db.pool.acquire() as connection:
            await connection.execute(_SLOW_INSERTS)
        yield Cluster([store.messages for store in stores], users)
    finally:
        await asyncio.gather(*(store.close() for store in stores))


async def committer(cluster: Cluster, node: MessageStore, seed: int) -> None:
    """One node's committer: batches of sends between random users and marks of messages
    already acknowledged; the last position it sees never goes back."""
    rng = random.Random(seed)
    last_seq = await node.last_seq()
    ids = (f"n{seed}-{n}" for n in itertools.count())
    for _ in range(BATCHES):
        sends = []
        for _ in range(rng.randint(1, 4)):
            sender, recipient = rng.sample(NAMES, 2)
            sends.append(NewMessage(cluster.users[sender], next(ids), recipient, ENVELOPE))
        marks = [
            NewMark(recipient, seq, rng.choice(("delivered", "read")))
            for seq, _, recipient in rng.sample(cluster.acked, min(2, len(cluster.acked)))
        ]
        try:
            result = await node.commit(sends, marks, NOW)
        except Unavailable:
            cluster.failed += 1
            continue
        assert result.last_seq >= last_seq
        last_seq = result.last_seq
        for send, outcome in zip(sends, result.sends, strict=True):
            assert isinstance(outcome, Stored) and outcome.created
            recipient_id = cluster.users[send.recipient]
            cluster.acked.append((outcome.seq, send.sender_id, recipient_id))
        for mark, mark_outcome in zip(marks, result.marks, strict=True):
            if isinstance(mark_outcome, Receipt):
                cluster.receipts.append((mark_outcome.seq, mark.seq))


async def follow(node: MessageStore, user_id: int, writers: asyncio.Future[Any]) -> list[Change]:
    """What a cursor reader of ``user_id`` sees: ``changes_after`` from the last position it
    saw, again and again until the writers are done, then to the end."""
    seen: list[Change] = []
    after = 0
    while True:
        done = writers.done()
        changes, more = await node.changes_after(user_id, after, 20, 1 << 20)
        seen += changes
        after = changes[-1].pos if changes else after
        if done and not more:
            return seen
        if not changes:
            await asyncio.sleep(0.001)


async def test_a_cursor_reader_skips_nothing_while_nodes_commit_concurrently(
    cluster: Cluster,
) -> None:
    """Every position the reader's user will ever have is seen once, in order, even though
    four nodes commit overlapping transactions while it reads."""
    alice = cluster.users["alice"]
    writers = asyncio.gather(
        *(committer(cluster, node, seed) for seed, node in enumerate(cluster.nodes[1:]))
    )
    seen = await follow(cluster.nodes[0], alice, writers)
    await writers  # a writer's failure is reported as itself
    everything, more = await cluster.nodes[0].changes_after(alice, 0, 1 << 20, 1 << 40)
    assert not more
    positions = [change.pos for change in seen]
    assert positions == sorted(set(positions)), "a position was seen twice or out of order"
    skipped = sorted({c.pos for c in everything} - set(positions))
    assert skipped == [], f"the reader passed {len(skipped)} positions that committed late"
    assert seen == everything
    # Every acknowledged message and receipt of alice's is among them.
    mine = {seq for seq, sender, recipient in cluster.acked if alice in (sender, recipient)}
    assert mine <= {c.seq for c in seen if c.kind == "message"}
    sent = {seq for seq, sender, _ in cluster.acked if sender == alice}
    receipts = {pos for pos, seq in cluster.receipts if seq in sent}
    assert receipts <= {c.pos for c in seen if c.kind != "message"}
    assert len(cluster.acked) == len({seq for seq, _, _ in cluster.acked})
    # Every commit takes the row lock first: they queue, never deadlock.
    assert cluster.failed == 0


async def test_two_nodes_racing_on_one_resend_store_it_once_and_agree_on_its_seq(
    cluster: Cluster,
) -> None:
    """The same (sender, client id) committed by two nodes at once: one row, one creator, the
    same position and time for both."""
    alice = cluster.users["alice"]
    first, second = cluster.nodes[1], cluster.nodes[2]
    for n in range(10):
        send = NewMessage(alice, f"race-{n}", "bob", ENVELOPE)
        results = await asyncio.gather(
            first.commit([send], [], NOW + n), second.commit([send], [], NOW + n + 1)
        )
        outcomes = [result.sends[0] for result in results]
        assert all(isinstance(outcome, Stored) for outcome in outcomes)
        stored = [outcome for outcome in outcomes if isinstance(outcome, Stored)]
        assert sorted(outcome.created for outcome in stored) == [False, True]
        assert stored[0].seq == stored[1].seq and stored[0].ts == stored[1].ts
        rows = await first.db.fetch_value(
            "SELECT count(*) FROM messages WHERE sender_id = $1 AND client_id = $2",
            alice,
            send.client_id,
        )
        assert rows == 1


async def test_two_nodes_marking_one_message_make_one_receipt(cluster: Cluster) -> None:
    """Bob's two devices on two nodes mark one message read at once: one receipt, one
    position; the other node reports it already marked."""
    alice, bob = cluster.users["alice"], cluster.users["bob"]
    first, second = cluster.nodes[1], cluster.nodes[2]
    for n in range(10):
        sent = await first.commit([NewMessage(alice, f"mark-{n}", "bob", ENVELOPE)], [], NOW)
        stored = sent.sends[0]
        assert isinstance(stored, Stored)
        mark = NewMark(bob, stored.seq, "read")
        results = await asyncio.gather(
            first.commit([], [mark], NOW + 1), second.commit([], [mark], NOW + 2)
        )
        outcomes = [result.marks[0] for result in results]
        receipts = [outcome for outcome in outcomes if isinstance(outcome, Receipt)]
        assert len(receipts) == 1 and None in outcomes
        changes, _ = await first.changes_after(alice, stored.seq, 100, 1 << 20)
        assert [(c.pos, c.kind) for c in changes] == [(receipts[0].seq, "read")]
