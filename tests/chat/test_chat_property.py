"""A seeded property test of delivery: random sends, reads, marks, drops, reconnects and syncs.

In-process: a real SQLite file, the real Delivery (committer), Hub, broker and ChatSession. Each
connection's socket is a bounded "wire": the server's writes wait while the client has not read
what is on it, so a client that stops reading backs up into its hub queue until it overflows
(closed 1013), exactly as over TCP. A dropped connection loses whatever was on its wire.

Each simulated client behaves as docs/protocol.md asks: it connects with ``after=<cursor>``,
advances its cursor with every message, receipt and ack it reads, resends its unacknowledged
messages (same id) after reconnecting, and sometimes syncs again from its cursor while frames
are still in flight. Checked as it reads, and at the end:

* every client reads the positions of messages and receipts in strictly increasing order,
  across all its connections (and above its last ``synced``); the only exception is repeats of
  positions it already had while a replay it asked for is under way;
* every message is acknowledged, and each is delivered to its recipient: exactly once after
  de-duplication by id, and exactly once even before it for a client that never re-synced;
* every receipt the store holds has reached the message's sender, offline or not;
* nothing arrives for the wrong person.
"""

from __future__ import annotations

import asyncio
import itertools
import json
import tempfile
import uuid
from collections import deque
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
from hypothesis import HealthCheck, given, seed, settings
from hypothesis import strategies as st

from securechat.chat.delivery import ChatStats, Delivery, Principal
from securechat.chat.hub import Hub, LocalBroker
from securechat.chat.session import ChatSession
from securechat.config import PROJECT_ROOT, Config
from securechat.store import NewUser, Store
from securechat.store.sqlite import SQLiteStore
from tests.chatkit import FAKE_ENVELOPE

USERS = ("ann", "ben", "cat")
WIRE_FRAMES = 3
QUEUE_FRAMES = 6


class Wire:
    """A socket's bytes in flight: what the server wrote and the client has not read."""

    def __init__(self) -> None:
        self.frames: deque[str] = deque()
        self.room = asyncio.Event()
        self.room.set()

    async def transmit(self, text: str) -> None:
        while len(self.frames) >= WIRE_FRAMES:
            self.room.clear()
            await self.room.wait()
        self.frames.append(text)

    def read(self, count: int) -> list[str]:
        taken = [self.frames.popleft() for _ in range(min(count, len(self.frames)))]
        self.room.set()
        return taken


@dataclass
class Link:
    """One live connection of a simulated client: frames go in through ``inbound``."""

    session: ChatSession
    wire: Wire
    inbound: asyncio.Queue[str]
    waiting: asyncio.Event  # the receive task waits for a frame: nothing in progress
    tasks: list[asyncio.Task[Any]]
    initial_synced: bool = False
    resyncs: int = 0  # explicit syncs asked for whose synced frame is not read yet

    def put(self, text: str) -> None:
        self.inbound.put_nowait(text)


@dataclass
class Client:
    """A client following the protocol's rules; records what it saw."""

    name: str
    cursor: int = 0
    seen: set[int] = field(default_factory=set)
    highest: int = 0
    received: list[str] = field(default_factory=list)
    outbox: dict[str, str] = field(default_factory=dict)
    resent: set[str] = field(default_factory=set)
    acks: dict[str, int] = field(default_factory=dict)
    to_me: list[int] = field(default_factory=list)
    receipts: set[tuple[str, str]] = field(default_factory=set)
    resynced: bool = False
    link: Link | None = None

    def read(self, text: str) -> None:
        frame = json.loads(text)
        kind = frame["type"]
        assert kind != "error", frame
        if kind == "ack":
            self.outbox.pop(frame["id"], None)
            assert self.acks.setdefault(frame["id"], frame["seq"]) == frame["seq"]
            self.seen.add(frame["seq"])
            self.cursor = max(self.cursor, frame["seq"])
            if frame["id"] not in self.resent:  # a resend's ack may carry an old position
                self.highest = max(self.highest, frame["seq"])
        elif kind in ("message", "receipt"):
            self.position(frame["seq"])
            if kind == "message" and frame["to"] == self.name:
                self.received.append(frame["id"])
                self.to_me.append(frame["seq"])
            elif kind == "receipt":
                self.receipts.add((frame["id"], frame["status"]))
        elif kind == "synced":
            assert self.link is not None
            if self.link.initial_synced:
                self.link.resyncs -= 1
            self.link.initial_synced = True
            self.highest = max(self.highest, frame["seq"])
            self.cursor = max(self.cursor, frame["seq"])

    def position(self, seq: int) -> None:
        """Positions only go up, except repeats of what it had while it asked for a replay."""
        assert self.link is not None
        if seq <= self.highest:
            assert self.link.resyncs > 0, (self.name, seq, self.highest)
            assert seq in self.seen, (self.name, seq)  # a repeat, never a late newcomer
        self.highest = max(self.highest, seq)
        self.seen.add(seq)
        self.cursor = max(self.cursor, seq)


class World:
    """The server side and the clients."""

    def __init__(self, store: Store, users: dict[str, Principal]) -> None:
        self.config = Config(ws_queue_frames=QUEUE_FRAMES, commit_batch_max=8, sync_batch=3)
        self.store = store
        self.users = users
        self.hub = Hub(self.config.ws_connections_per_user, self.config.ws_queue_frames)
        self.broker = LocalBroker(self.hub)
        self.delivery = Delivery(store.messages, self.broker, self.config, ChatStats())
        self.clients = {name: Client(name) for name in users}
        self.sent: dict[str, tuple[str, str]] = {}  # id -> (sender, recipient)
        self.marked: dict[str, set[tuple[str, str]]] = {}  # sender -> receipts due, from the db
        self._clock = itertools.count()

    async def connect(self, client: Client) -> None:
        if client.link is not None:
            return
        wire = Wire()
        conn = self.hub.connect(client.name, f"s-{uuid.uuid4()}")
        session = ChatSession(
            conn=conn,
            user=self.users[client.name],
            delivery=self.delivery,
            broker=self.broker,
            config=self.config,
            transmit=wire.transmit,
            clock=lambda: float(next(self._clock)),
        )
        inbound: asyncio.Queue[str] = asyncio.Queue()
        waiting = asyncio.Event()
        # As chat.py does for /ws?after=N: the receive task first (it starts with the sync and
        # so holds the send lock before the send task can forward anything), then the sender.
        tasks = [
            asyncio.create_task(_receive(session, inbound, client.cursor, waiting)),
            asyncio.create_task(session.run_sender()),
        ]
        client.link = Link(session, wire, inbound, waiting, tasks)
        for message_id, to in list(client.outbox.items()):
            client.resent.add(message_id)
            client.link.put(self._send_text(message_id, to))

    async def disconnect(self, client: Client) -> None:
        link = client.link
        if link is None:
            return
        for task in link.tasks:
            task.cancel()
        await asyncio.gather(*link.tasks, return_exceptions=True)
        self.hub.disconnect(link.session.conn)
        client.link = None  # what was on the wire is lost

    async def send(self, client: Client, to: str) -> None:
        message_id = str(uuid.uuid4())
        self.sent[message_id] = (client.name, to)
        client.outbox[message_id] = to
        if client.link is not None:
            client.link.put(self._send_text(message_id, to))

    async def read(self, client: Client, count: int) -> None:
        if client.link is None:
            return
        for text in client.link.wire.read(count):
            client.read(text)
        if client.link.session.conn.closed.is_set():
            # The server closes this socket (a slow reader): the client reads what was
            # written before the close, then the connection is gone.
            await self.settle()
            if client.link is not None:
                for text in client.link.wire.read(WIRE_FRAMES):
                    client.read(text)
                await self.disconnect(client)

    async def mark(self, client: Client, status: str, which: int) -> None:
        """The user opens the conversation: reads what has come, marks one message."""
        await self.settle()
        await self.read(client, WIRE_FRAMES)
        if client.link is not None and client.to_me:
            seq = client.to_me[which % len(client.to_me)]
            client.link.put(json.dumps({"type": status, "seq": seq}))

    async def sync(self, client: Client, everything: int) -> None:
        if client.link is not None:
            # From a cursor older than what is in flight, or from the start: a replay of
            # frames it already has, which it de-duplicates by id.
            client.link.resyncs += 1
            client.resynced = True
            after = client.cursor if everything % 2 else 0
            client.link.put(json.dumps({"type": "sync", "after": after}))

    async def tick(self) -> None:
        """A moment: the tasks that can run without the database do (send tasks write)."""
        for _ in range(3):
            await asyncio.sleep(0)

    async def settle(self) -> None:
        """Let the committer and every send task run until nothing more can move."""
        for _ in range(4):
            await self.delivery.flush()
            for _ in range(10):
                await asyncio.sleep(0)

    async def finish(self) -> None:
        """Everyone reconnects and reads until every message is acknowledged and delivered."""
        for _ in range(1000):
            for client in self.clients.values():
                await self.connect(client)
                await self.read(client, WIRE_FRAMES)
            await self.settle()
            if not any(c.outbox for c in self.clients.values()) and all(
                self._quiet(c) for c in self.clients.values()
            ):
                return
            # Reads of the database run in a thread: give them real time (bounded by the loop).
            await asyncio.sleep(0.002)
        raise AssertionError("the world did not settle")

    @staticmethod
    def _quiet(client: Client) -> bool:
        link = client.link
        return (
            link is not None
            and link.waiting.is_set()
            and link.inbound.empty()
            and not link.wire.frames
            and link.session.conn.queue.empty()
            and not link.session.writing
        )

    def _send_text(self, message_id: str, to: str) -> str:
        return json.dumps({"type": "send", "id": message_id, "to": to, "envelope": FAKE_ENVELOPE})


async def _receive(
    session: ChatSession, inbound: asyncio.Queue[str], after: int, waiting: asyncio.Event
) -> None:
    """chat.py's receive task: the initial sync, then each frame in order."""
    await session.sync(after)
    while True:
        waiting.set()
        text = await inbound.get()
        waiting.clear()
        await session.receive(text)


user_index = st.integers(0, len(USERS) - 1)
# Sends and reads are the common steps; drops, reconnects, marks and settling are rarer.
# "settle" is time passing: the committer commits and the send tasks write what they can.
KINDS = ["send"] * 4 + ["read"] * 5 + ["settle"] * 3 + ["mark"] * 4 + ["drop", "connect", "sync"]
actions = st.lists(
    st.tuples(st.sampled_from(KINDS), user_index, st.integers(1, 6)), min_size=10, max_size=80
)


async def run(steps: list[tuple[str, int, int]], directory: Path) -> World:
    store = SQLiteStore.for_file(directory / "chat.db", PROJECT_ROOT / "schema.sql")
    await store.open()
    users = {}
    for name in USERS:
        user_id = await store.accounts.add_user(
            NewUser(name, b"s" * 16, 600_000, "hash", b"enc", b"sign", "backup"), 1
        )
        users[name] = Principal(user_id, name)
    world = World(store, users)
    await world.delivery.start()
    try:
        for client in world.clients.values():
            await world.connect(client)
        for action, who, arg in steps:
            client = world.clients[USERS[who]]
            if action == "send":
                await world.send(client, USERS[(who + 1 + arg % 2) % len(USERS)])
            elif action == "read":
                await world.read(client, arg)
            elif action == "mark":
                await world.mark(client, "read" if arg % 2 else "delivered", arg // 2)
            elif action == "drop":
                await world.disconnect(client)
            elif action == "connect":
                await world.connect(client)
            elif action == "sync":
                await world.sync(client, arg)
            else:
                await world.settle()
            await world.tick()
        await world.finish()
        rows = await store.db.fetch_all(
            "SELECT u.username, m.client_id, m.delivered_seq, m.read_seq FROM messages m"
            " JOIN users u ON u.id = m.sender_id"
        )
        for sender, message_id, delivered, read in rows:
            due = world.marked.setdefault(sender, set())
            due |= {(message_id, "delivered")} if delivered else set()
            due |= {(message_id, "read")} if read else set()
        return world
    finally:
        for client in world.clients.values():
            await world.disconnect(client)
        await world.delivery.stop()
        await store.close()


def check(world: World) -> None:
    for client in world.clients.values():
        assert not client.outbox, client.name
        assert all(world.sent[i][1] == client.name for i in client.received)
        if not client.resynced:
            assert len(client.received) == len(set(client.received)), client.name
    for message_id, (sender, recipient) in world.sent.items():
        assert message_id in world.clients[sender].acks
        assert message_id in world.clients[recipient].received, message_id
    for sender, due in world.marked.items():
        assert world.clients[sender].receipts == due, sender


@pytest.mark.slow  # a hundred runs of a whole chat: about 3 s
@seed(20261127)
@settings(
    max_examples=100,
    deadline=None,
    derandomize=False,
    suppress_health_check=[HealthCheck.too_slow],
)
@given(steps=actions)
def test_every_acknowledged_message_is_delivered_once_and_in_order(
    steps: list[tuple[str, int, int]],
) -> None:
    """Random sends, reads, marks, drops and reconnects: exactly once, in position order."""
    with tempfile.TemporaryDirectory() as directory:
        world = asyncio.run(run(steps, Path(directory)))
    check(world)
