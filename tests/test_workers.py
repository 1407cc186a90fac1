"""`hypercorn --workers 2`: one Hypercorn master, two worker processes sharing its socket.

On PostgreSQL and Redis each worker is a node of a cluster (README, "Several workers on one
machine"): two clients whose sockets the kernel handed to different workers chat, lose
nothing, and a logout served by either worker closes the session's sockets on both. Which
worker holds a socket is read from /proc: the server side of the client's TCP connection
(/proc/net/tcp) belongs to one worker's file descriptors.

On SQLite alone (no database URL) the workers would each deliver live only to their own
sockets, so the second worker refuses to start (store/sqlite/serving.py) and Hypercorn's
master, seeing a worker fail, stops the server, the log saying why.
"""

from __future__ import annotations

import asyncio
import os
import subprocess
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from pathlib import Path

import pytest

from securechat import e2e
from securechat.client import SecureChatClient
from securechat.client.chat import ChatConnection
from securechat.config import PROJECT_ROOT
from tests.chatkit import PASSWORD, unique
from tests.conftest import FAST_ITERATIONS
from tests.engines import PostgresEngine, RedisEngine, find_engines
from tests.test_cluster import SETTINGS, _closed_with, _exchange, _in_order_once
from tools.cluster import Cluster, Node, free_port, hypercorn_command

pytestmark = pytest.mark.slow

WORKERS = ["--workers", "2"]
EXCHANGED = 200
# Sockets opened until the kernel has handed one to each worker (it picks; each try is a coin
# toss at worst, so 40 failing is a broken server, not bad luck).
TRIES = 40


def _children(pid: int) -> list[int]:
    found: list[int] = []
    for task in Path(f"/proc/{pid}/task").iterdir():
        found += [int(child) for child in (task / "children").read_text().split()]
    return found


def _socket_inodes(pid: int) -> set[str]:
    inodes = set()
    for fd in Path(f"/proc/{pid}/fd").iterdir():
        try:
            target = os.readlink(fd)
        except OSError:  # closed meanwhile
            continue
        if target.startswith("socket:["):
            inodes.add(target[len("socket:[") : -1])
    return inodes


def _server_inode(server_port: int, client_port: int) -> str | None:
    """The inode of the server side of 127.0.0.1:client_port -> 127.0.0.1:server_port."""
    local, remote = f"0100007F:{server_port:04X}", f"0100007F:{client_port:04X}"
    for line in Path("/proc/net/tcp").read_text().splitlines()[1:]:
        fields = line.split()
        if fields[1] == local and fields[2] == remote:
            return fields[9]
    return None


@dataclass
class Workers:
    """One Hypercorn master with two workers over the test's PostgreSQL and Redis."""

    node: Node
    port: int
    identities: list[e2e.Identity]
    clients: list[SecureChatClient] = field(default_factory=list)

    def worker_pids(self) -> list[int]:
        """The master's children that serve (the multiprocessing helper holds no socket)."""
        return [pid for pid in _children(self.node.process.pid) if _socket_inodes(pid)]

    def worker_of(self, chat: ChatConnection) -> int:
        """The pid of the worker holding ``chat``'s connection."""
        client_port = chat.socket.local_address[1]
        inode = _server_inode(self.port, client_port)
        assert inode is not None, "the server side of the socket is not in /proc/net/tcp"
        holders = [pid for pid in self.worker_pids() if inode in _socket_inodes(pid)]
        assert len(holders) == 1, holders
        return holders[0]

    async def user(self, prefix: str) -> tuple[SecureChatClient, str]:
        client = self.client()
        name = unique(prefix)
        identity = self.identities[len(self.clients) % len(self.identities)]
        await client.register(name, PASSWORD, iterations=FAST_ITERATIONS, identity=identity)
        await client.login(name, PASSWORD)
        return client, name

    def client(self) -> SecureChatClient:
        client = SecureChatClient(self.node.url, min_iterations=FAST_ITERATIONS)
        self.clients.append(client)
        return client

    async def connect_on(
        self, client: SecureChatClient, worker: int, *, other: bool = False
    ) -> ChatConnection:
        """A socket of ``client``'s session on ``worker`` (``other``: on any other worker),
        opening new ones until the kernel hands one there."""
        for _ in range(TRIES):
            chat = await client.connect(after=None)
            if (self.worker_of(chat) == worker) != other:
                return chat
            await chat.close()
        raise AssertionError(f"no socket landed {'off' if other else 'on'} worker {worker}")


@pytest.fixture(name="workers", scope="module")
async def _workers(
    postgres_engine: PostgresEngine, identities: list[e2e.Identity]
) -> AsyncIterator[Workers]:
    redis = RedisEngine.start(find_engines()[1])
    try:
        async with postgres_engine.fresh_database() as database:
            port = free_port()
            settings = SETTINGS | {"SECURECHAT_WS_CONNECTIONS_PER_USER": "20"}
            cluster = await asyncio.to_thread(
                Cluster.prepare,
                postgres_engine.url(database),
                redis.url,
                [f"http://127.0.0.1:{port}"],
                settings,
            )
            try:
                node = await asyncio.to_thread(cluster.start_node, port, WORKERS)
                workers = Workers(node, port, identities)
                yield workers
                for client in workers.clients:
                    await client.close()
            finally:
                await asyncio.to_thread(cluster.stop)
    finally:
        redis.stop()


async def test_two_workers_serve_two_nodes(workers: Workers) -> None:
    """The master runs two serving workers, each a process of its own."""
    pids = workers.worker_pids()
    assert len(pids) == 2 and workers.node.process.pid not in pids


async def test_clients_on_two_workers_chat_and_lose_nothing(workers: Workers) -> None:
    """Alice's socket on one worker, bob's on the other: 200 messages each way at once, each
    arrives once, in order, with the position its sender was acknowledged."""
    alice, alice_name = await workers.user("alice")
    bob, bob_name = await workers.user("bob")
    on_first = await alice.connect(after=None)
    on_second = await workers.connect_on(bob, workers.worker_of(on_first), other=True)
    (alice_ids, to_alice, alice_acks), (bob_ids, to_bob, bob_acks) = await asyncio.gather(
        _exchange(on_first, bob_name, EXCHANGED), _exchange(on_second, alice_name, EXCHANGED)
    )
    _in_order_once(to_bob, alice_ids)
    _in_order_once(to_alice, bob_ids)
    assert {frame["id"]: frame["seq"] for frame in to_bob} == alice_acks
    assert {frame["id"]: frame["seq"] for frame in to_alice} == bob_acks
    # And what was stored is what a fresh sync replays, each once.
    replayed = (await bob.connect()).replayed
    messages = [frame for frame in replayed if frame["type"] == "message"]
    assert sorted(frame["id"] for frame in messages) == sorted(alice_ids + bob_ids)


async def test_a_logout_closes_the_sessions_sockets_on_both_workers(workers: Workers) -> None:
    """Alice holds a socket on each worker; her logout (served by either) closes both with
    1008, and bob's socket stays open."""
    alice, _ = await workers.user("alice")
    bob, _ = await workers.user("bob")
    first = await alice.connect(after=None)
    second = await workers.connect_on(alice, workers.worker_of(first), other=True)
    bystander = await bob.connect(after=None)
    await alice.logout()
    assert await _closed_with(first) == (1008, "session ended")
    assert await _closed_with(second) == (1008, "session ended")
    assert await bystander.ping() == {"type": "pong"}


def test_two_workers_on_one_sqlite_file_refuse_to_start(tmp_path: Path) -> None:
    """Without a database URL, `--workers 2` stops by itself at once, and its log says why and
    what to do: one worker serves the SQLite file, or every worker is a node on PostgreSQL and
    Redis. (Hypercorn 0.18's master then exits 0 all the same: its final join overwrites the
    failed worker's status, pgjones/hypercorn#269.)"""
    environment = (
        {
            key: value
            for key, value in os.environ.items()
            if key not in ("SECURECHAT_DATABASE_URL", "SECURECHAT_REDIS_URL")
        }
        | SETTINGS
        | {"SECURECHAT_DATA_DIR": str(tmp_path / "data")}
    )
    log = tmp_path / "hypercorn.log"
    with log.open("wb") as output:
        # Returns once the master has stopped, and with it both workers (it joins them).
        subprocess.run(
            hypercorn_command(free_port(), WORKERS),
            cwd=PROJECT_ROOT,
            env=environment,
            stdin=subprocess.DEVNULL,
            stdout=output,
            stderr=subprocess.STDOUT,
            timeout=120,
            check=False,
        )
    text = log.read_text(errors="replace")
    assert "is serving the SQLite database" in text, text[-3000:]
    assert "SECURECHAT_DATABASE_URL" in text and "one worker" in text
