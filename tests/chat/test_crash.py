"""Durability: a real server process killed with SIGKILL loses no acknowledged message.

The server runs as `python -m hypercorn --config hypercorn.toml`, exactly as `make run` does, on
a free port, with its own data directory. Alice sends a batch; the moment the 100th ack is in,
the whole process group is killed (no shutdown, no flush), with more sends still in flight.
After a restart on the same data directory, bob's sync must hold every acknowledged message
exactly once, and alice's resends of the rest (same ids) must not duplicate any of them.
"""

from __future__ import annotations

import asyncio
import os
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest

from securechat import e2e
from securechat.client import SecureChatClient
from tests.chatkit import PASSWORD, send_text
from tests.conftest import FAST_ITERATIONS
from tools.cluster import Node, free_port

SENT = 160
KILL_AFTER_ACKS = 100


def start_server(data_dir: Path, log: Path) -> Node:
    """`python -m hypercorn` with the project's config, as `make run` starts it, on a free
    port, in a process group of its own (tools/cluster.py, as a cluster's nodes)."""
    environment = os.environ | {
        "SECURECHAT_DATA_DIR": str(data_dir),
        "SECURECHAT_ARGON2_TIME_COST": "1",
        "SECURECHAT_ARGON2_MEMORY_KIB": "8192",
        "SECURECHAT_ARGON2_PARALLELISM": "1",
        "SECURECHAT_KDF_MIN_ITERATIONS": str(FAST_ITERATIONS),
        "SECURECHAT_REGISTRATIONS_PER_ADDRESS": "1000",
        # The batch is sent as fast as the socket takes it, past the flood limit.
        "SECURECHAT_WS_FRAMES_PER_S": "100000",
        "SECURECHAT_WS_FRAMES_BURST": "100000",
        "SECURECHAT_SENDS_PER_USER_PER_S": "100000",
        "SECURECHAT_SENDS_PER_USER_BURST": "100000",
    }
    return Node.start(free_port(), environment, log)


@pytest.fixture(name="processes")
def _processes() -> Iterator[list[Node]]:
    started: list[Node] = []
    yield started
    for server in started:
        server.kill()  # SIGKILL the whole group (master and workers): a crash, not a shutdown


async def user(url: str, name: str, identity: e2e.Identity, *, register: bool) -> SecureChatClient:
    client = SecureChatClient(url, min_iterations=FAST_ITERATIONS)
    if register:
        await client.register(name, PASSWORD, iterations=FAST_ITERATIONS, identity=identity)
    await client.login(name, PASSWORD)
    return client


@pytest.mark.slow
async def test_acknowledged_messages_survive_sigkill(
    tmp_path: Path, processes: list[Node], identities: list[e2e.Identity]
) -> None:
    """Every message acked before a SIGKILL is there after restart, delivered exactly once."""
    clients: list[SecureChatClient] = []
    try:
        data_dir, log = tmp_path / "data", tmp_path / "server.log"
        processes.append(first := start_server(data_dir, log))
        alice = await user(first.url, "alice", identities[0], register=True)
        clients.append(alice)
        bob = await user(first.url, "bob", identities[1], register=True)
        clients.append(bob)
        chat = await alice.connect()
        ids = [str(uuid.uuid4()) for _ in range(SENT)]
        acked: dict[str, int] = {}

        async def send_all() -> None:
            for frame_id in ids:
                await chat.send_raw(send_text("bob", frame_id=frame_id))

        sender = asyncio.create_task(send_all())
        while len(acked) < KILL_AFTER_ACKS:
            frame = await chat.wait_for("ack")
            acked[frame["id"]] = frame["seq"]
        first.kill()  # at once: more sends are in flight, some committed and unacknowledged
        sender.cancel()
        await asyncio.gather(sender, return_exceptions=True)
        await alice.close()
        await bob.close()

        processes.append(second := start_server(data_dir, log))
        bob = await user(second.url, "bob", identities[1], register=False)
        clients.append(bob)
        replayed = (await bob.connect()).replayed
        seqs = {f["id"]: f["seq"] for f in replayed}
        assert [f["id"] for f in replayed].count(ids[0]) == 1
        assert len(seqs) == len(replayed)  # nothing twice
        assert {i: seqs.get(i) for i in acked} == acked  # every ack kept, with its seq

        alice = await user(second.url, "alice", identities[0], register=False)
        clients.append(alice)
        again = await alice.connect(after=None)
        for frame_id in ids:
            await again.send_raw(send_text("bob", frame_id=frame_id))
            ack = await again.wait_ack(frame_id)
            if frame_id in acked:
                assert ack["seq"] == acked[frame_id]  # a resend of a stored message stores nothing
        everything = (await bob.connect()).replayed
        assert sorted(f["id"] for f in everything) == sorted(ids)
    finally:
        for client in clients:
            await client.close()
