"""securechat.chat.delivery and securechat.chat.session in-process: a real store (a SQLite file,
then a throwaway PostgreSQL: every test runs on both), a real hub.

No sockets: each connection's "socket" is a list that its ChatSession transmits into, and the
frames a test reads are the ones the server would have written.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import sqlite3
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TypeAlias

import asyncpg
import pytest

from securechat.chat.delivery import ChatStats, Delivery, Principal, Sequenced
from securechat.chat.hub import Connection, Hub, LocalBroker
from securechat.chat.protocol import CloseCode, Send
from securechat.chat.session import ChatSession, StallSweep
from securechat.config import PROJECT_ROOT, Config
from securechat.store import NewMessage, NewUser, Stored
from securechat.store.postgres import Database, PostgresStore
from securechat.store.sqlite import SQLiteStore
from tests.chatkit import FAKE_ENVELOPE as ENVELOPE
from tests.engines import PostgresEngine

ENVELOPE_JSON = json.dumps(ENVELOPE, separators=(",", ":"), sort_keys=True)
# Where a test's store lives: a SQLite file (None) or a database of this PostgreSQL.
Engine: TypeAlias = PostgresEngine | None
AnyStore: TypeAlias = SQLiteStore | PostgresStore


class RecordedSession(ChatSession):
    """A ChatSession that keeps the list its socket is (what it transmitted), as ``sent``."""

    sent: list[str]


@dataclass
class Chat:
    """The in-process server: store, hub, broker, delivery."""

    store: AnyStore
    hub: Hub
    broker: LocalBroker
    delivery: Delivery
    config: Config
    users: dict[str, Principal] = field(default_factory=dict)

    def session(
        self,
        name: str,
        sent: list[str] | None = None,
        *,
        transmit: Callable[[str], Awaitable[None]] | None = None,
        clock: Callable[[], float] = lambda: 0.0,
    ) -> RecordedSession:
        """A connected ChatSession for ``name`` whose socket is the list ``sent`` (or
        ``transmit``), on a stopped clock (or ``clock``)."""
        sink = sent if sent is not None else []

        async def append(text: str) -> None:
            sink.append(text)

        conn = self.hub.connect(name, f"session-{uuid.uuid4()}")
        session = RecordedSession(
            conn=conn,
            user=self.users[name],
            delivery=self.delivery,
            broker=self.broker,
            config=self.config,
            transmit=transmit or append,
            clock=clock,
        )
        session.sent = sink
        return session


@pytest.fixture(name="engine", params=["sqlite", "postgres"])
def _engine(request: pytest.FixtureRequest) -> Engine:
    """Each test once on SQLite, once on PostgreSQL (started only when a postgres case runs)."""
    if request.param == "sqlite":
        return None
    engine: PostgresEngine = request.getfixturevalue("postgres_engine")
    return engine


@pytest.fixture(name="chat")
async def _chat(tmp_path: Path, engine: Engine) -> AsyncIterator[Chat]:
    async with running_chat(tmp_path, engine) as chat:
        yield chat


@contextlib.asynccontextmanager
async def fresh_store(tmp_path: Path, engine: Engine) -> AsyncIterator[AnyStore]:
    """An open store on a new SQLite file in ``tmp_path``, or a new database of ``engine``."""
    if engine is None:
        store: AnyStore = SQLiteStore.for_file(tmp_path / "chat.db", PROJECT_ROOT / "schema.sql")
        await store.open()
        try:
            yield store
        finally:
            await store.close()
        return
    async with engine.fresh_database() as name:
        store = PostgresStore(Database(engine.url(name), pool_min=1, pool_max=4))
        await store.open()
        try:
            yield store
        finally:
            await store.close()


@contextlib.asynccontextmanager
async def running_chat(tmp_path: Path, engine: Engine, **settings: Any) -> AsyncIterator[Chat]:
    """The in-process server on a fresh store, with alice, bob and carol; ``settings`` change
    the default Config."""
    tmp_path.mkdir(parents=True, exist_ok=True)
    config = Config(data_dir=tmp_path, **settings)
    async with fresh_store(tmp_path, engine) as store, serving(store, config) as chat:
        yield chat


@contextlib.asynccontextmanager
async def serving(store: AnyStore, config: Config) -> AsyncIterator[Chat]:
    """Hub, broker and a started Delivery over ``store``, with alice, bob and carol."""
    hub = Hub(config.ws_connections_per_user, config.ws_queue_frames)
    broker = LocalBroker(hub)
    delivery = Delivery(store.messages, broker, config, ChatStats())
    try:
        await delivery.start()
        chat = Chat(store, hub, broker, delivery, config)
        for name in ("alice", "bob", "carol"):
            user_id = await store.accounts.add_user(
                NewUser(name, b"s" * 16, 600_000, "hash", b"enc", b"sign", "backup"), 1
            )
            chat.users[name] = Principal(user_id, name)
        yield chat
    finally:
        await delivery.stop()


def send_frame(to: str, frame_id: str | None = None) -> str:
    return json.dumps(
        {"type": "send", "id": frame_id or str(uuid.uuid4()), "to": to, "envelope": ENVELOPE}
    )


def drain(conn: Connection) -> list[dict[str, Any]]:
    frames = []
    while not conn.queue.empty():
        frames.append(json.loads(conn.queue.get_nowait()))
    return frames


async def read_elsewhere(store: AnyStore, sql: str) -> list[tuple[Any, ...]]:
    """``sql``'s rows read over a connection of its own, not the store's."""
    if isinstance(store, SQLiteStore):
        with sqlite3.connect(store.db.path) as db:
            return db.execute(sql).fetchall()
    other = await asyncpg.connect(store.db.dsn)
    try:
        return [tuple(row) for row in await other.fetch(sql)]
    finally:
        await other.close()


async def test_ack_is_queued_only_once_the_message_is_committed(chat: Chat) -> None:
    """When the ack can be read, another connection to the database already sees the row."""
    alice = chat.session("alice")
    await alice.receive(send_frame("bob", "11111111-1111-4111-8111-111111111111"))
    ack = json.loads(await alice.conn.queue.get())
    rows = await read_elsewhere(chat.store, "SELECT seq, client_id FROM messages")
    assert ack["type"] == "ack"
    assert rows == [(ack["seq"], ack["id"])]


async def test_concurrent_sends_are_committed_together(chat: Chat) -> None:
    """Sends waiting together from many connections become one transaction."""
    sessions = [chat.session("alice") for _ in range(4)] + [chat.session("carol")]
    before = chat.store.commit_stats.transactions
    for session in sessions:
        for _ in range(20):
            await session.receive(send_frame("bob"))
    await chat.delivery.flush()
    assert chat.delivery.stats.commit_largest_batch == 100
    assert chat.store.commit_stats.transactions == before + 1
    assert all([f["type"] for f in drain(s.conn)].count("ack") == 20 for s in sessions)


async def test_message_reaches_the_recipient_and_the_senders_other_connections(chat: Chat) -> None:
    """The sending connection gets the ack; the sender's other device and the recipient the
    message."""
    first, second, bob = chat.session("alice"), chat.session("alice"), chat.session("bob")
    await first.receive(send_frame("bob"))
    await chat.delivery.flush()
    assert [f["type"] for f in drain(first.conn)] == ["ack"]
    assert [f["type"] for f in drain(second.conn)] == ["message"]
    assert [(f["type"], f["from"]) for f in drain(bob.conn)] == [("message", "alice")]


async def test_resend_is_acknowledged_again_without_a_second_fanout(chat: Chat) -> None:
    """The same id twice: two identical acks, one message for the recipient."""
    alice, bob = chat.session("alice"), chat.session("bob")
    frame_id = str(uuid.uuid4())
    await alice.receive(send_frame("bob", frame_id))
    await chat.delivery.flush()
    await alice.receive(send_frame("bob", frame_id))
    await chat.delivery.flush()
    first, second = drain(alice.conn)
    assert first == second
    assert len(drain(bob.conn)) == 1
    assert chat.delivery.stats.messages_duplicate == 1


async def test_receipt_reaches_every_connection_of_the_sender(chat: Chat) -> None:
    """A read mark by the recipient becomes a receipt on all the sender's connections."""
    alice, other, bob = chat.session("alice"), chat.session("alice"), chat.session("bob")
    await alice.receive(send_frame("bob"))
    await chat.delivery.flush()
    seq = drain(bob.conn)[0]["seq"]
    drain(alice.conn), drain(other.conn)
    await bob.receive(json.dumps({"type": "read", "seq": seq}))
    await chat.delivery.flush()
    for conn in (alice.conn, other.conn):
        (receipt,) = drain(conn)
        assert (receipt["type"], receipt["status"], receipt["by"]) == ("receipt", "read", "bob")
        assert receipt["seq"] > seq


async def pump(*sessions: ChatSession) -> None:
    """Forward what each session's queue holds, as its send task would."""
    for session in sessions:
        while not session.conn.queue.empty():
            await session.forward(session.conn.queue.get_nowait())


async def test_one_process_never_finds_a_gap_in_a_conversation(chat: Chat) -> None:
    """Sends both ways, marks and a second device on one process: each frame follows the one
    before it in its stream (an ack counts for its own message), so no socket catches up."""
    alice, phone, bob = chat.session("alice"), chat.session("alice"), chat.session("bob")
    for session in (alice, phone, bob):
        await session.sync(0)
    for _ in range(3):
        await alice.receive(send_frame("bob"))
        await chat.delivery.flush()
        await pump(alice, phone, bob)
        await bob.receive(json.dumps({"type": "read", "seq": bob.last_pos}))
        await bob.receive(send_frame("alice"))
        await chat.delivery.flush()
        await pump(alice, phone, bob)
    assert chat.delivery.stats.gap_catch_ups == 0
    for session in (alice, phone, bob):
        assert session.last_pos == await chat.store.messages.head(session.user.user_id)


async def test_a_frame_that_overtakes_another_brings_it_from_the_database(chat: Chat) -> None:
    """Bob's second message forwarded before his first (as from two nodes): the socket
    replays both from the database, once each and in order, and drops the late first."""
    alice = chat.session("alice")
    await alice.sync(0)
    bob_id = chat.users["bob"].user_id
    result = await chat.store.messages.commit(
        [NewMessage(bob_id, str(uuid.uuid4()), "alice", ENVELOPE_JSON) for _ in range(2)],
        [],
        1,
    )
    first, second = (o for o in result.sends if isinstance(o, Stored))
    frames, _ = await chat.delivery.changes(alice.user, 0)
    await alice.forward(Sequenced(frames[1], second.seq, second.prev_recipient))
    await alice.forward(Sequenced(frames[0], first.seq, first.prev_recipient))
    assert [json.loads(text)["seq"] for text in alice.sent[1:]] == [first.seq, second.seq]
    assert (alice.last_pos, chat.delivery.stats.gap_catch_ups) == (second.seq, 1)


async def test_marking_someone_elses_message_is_an_error_and_changes_nothing(chat: Chat) -> None:
    """Carol cannot mark alice's message to bob; alice hears nothing."""
    alice, bob, carol = chat.session("alice"), chat.session("bob"), chat.session("carol")
    await alice.receive(send_frame("bob"))
    await chat.delivery.flush()
    seq = drain(bob.conn)[0]["seq"]
    drain(alice.conn)
    await carol.receive(json.dumps({"type": "read", "seq": seq}))
    await chat.delivery.flush()
    assert [f["code"] for f in drain(carol.conn)] == ["unknown_message"]
    assert drain(alice.conn) == []


async def test_a_failed_commit_answers_unavailable_and_a_resend_then_succeeds(chat: Chat) -> None:
    """A write that fails acknowledges nothing; the same id sent again is stored once."""
    alice, bob = chat.session("alice"), chat.session("bob")
    await refuse_inserts(chat.store, True)
    frame_id = str(uuid.uuid4())
    await alice.receive(send_frame("bob", frame_id))
    await chat.delivery.flush()
    assert drain(alice.conn) == [
        {
            "type": "error",
            "code": "unavailable",
            "id": frame_id,
            "message": "The message could not be stored; send it again with the same id.",
        }
    ]
    await refuse_inserts(chat.store, False)
    await alice.receive(send_frame("bob", frame_id))
    await chat.delivery.flush()
    assert [f["type"] for f in drain(alice.conn)] == ["ack"]
    assert [f["id"] for f in drain(bob.conn)] == [frame_id]


async def refuse_inserts(store: AnyStore, refuse: bool) -> None:
    """Make every insert into ``messages`` fail (a trigger), or stop doing so."""
    if isinstance(store, SQLiteStore):
        await store.db.execute(
            "CREATE TEMP TRIGGER refuse BEFORE INSERT ON messages"
            " BEGIN SELECT RAISE(ABORT, 'disk on fire'); END"
            if refuse
            else "DROP TRIGGER temp.refuse"
        )
        return
    await store.db.pool.execute(
        "CREATE FUNCTION refuse() RETURNS trigger LANGUAGE plpgsql AS"
        " $$ BEGIN RAISE EXCEPTION 'disk on fire'; END; $$;"
        " CREATE TRIGGER refuse BEFORE INSERT ON messages"
        " FOR EACH ROW EXECUTE FUNCTION refuse()"
        if refuse
        else "DROP TRIGGER refuse ON messages; DROP FUNCTION refuse()"
    )


async def test_sending_to_yourself_is_refused_before_the_committer(chat: Chat) -> None:
    """A send to oneself is an error frame with the frame's id; nothing is queued."""
    alice = chat.session("alice")
    frame_id = str(uuid.uuid4())
    await alice.receive(send_frame("alice", frame_id))
    assert [(f["code"], f["id"]) for f in drain(alice.conn)] == [("self_recipient", frame_id)]
    assert chat.delivery.pending() == 0


async def test_unknown_recipient_is_an_error_frame(chat: Chat) -> None:
    """A send to a name without an account is answered with unknown_recipient."""
    alice = chat.session("alice")
    await alice.receive(send_frame("nobody"))
    await chat.delivery.flush()
    assert [f["code"] for f in drain(alice.conn)] == ["unknown_recipient"]


async def test_sync_replays_in_order_and_queued_live_copies_are_dropped(chat: Chat) -> None:
    """Frames already queued when a sync replays them are not sent a second time."""
    alice, bob = chat.session("alice"), chat.session("bob")
    for _ in range(3):
        await alice.receive(send_frame("bob"))
    await chat.delivery.flush()
    await bob.sync(0)
    while not bob.conn.queue.empty():
        await bob.forward(bob.conn.queue.get_nowait())
    frames = [json.loads(text) for text in bob.sent]
    assert [f["type"] for f in frames] == ["message"] * 3 + ["synced"]
    assert [f["seq"] for f in frames] == [1, 2, 3, 3]


async def test_sync_holds_live_frames_until_it_is_done(chat: Chat) -> None:
    """A message committed during a sync is sent once, in position order around synced."""
    alice, bob = chat.session("alice"), chat.session("bob")
    sender = asyncio.create_task(bob.run_sender())
    try:
        await alice.receive(send_frame("bob"))
        await chat.delivery.flush()
        await bob.conn.queue.join()  # message 1 went out live
        syncing = asyncio.create_task(bob.sync(0))
        await alice.receive(send_frame("bob"))
        await chat.delivery.flush()
        await syncing
        await bob.conn.queue.join()
    finally:
        sender.cancel()
    frames = [json.loads(text) for text in bob.sent]
    replay = frames[1:]  # from the sync on
    assert [f["seq"] for f in replay] == sorted(f["seq"] for f in replay)
    assert [f["seq"] for f in replay if f["type"] == "message"] == [1, 2]
    assert {"type": "synced", "seq": 1} in replay or replay[-1] == {"type": "synced", "seq": 2}


async def test_flood_past_the_burst_closes_with_1008(chat: Chat) -> None:
    """With the clock stopped, the burst's worth of frames passes and the next one closes."""
    alice = chat.session("alice")
    for _ in range(chat.config.ws_frames_burst):
        await alice.receive('{"type":"ping"}')
    assert not alice.conn.closed.is_set()
    await alice.receive('{"type":"ping"}')
    assert alice.conn.close_code == CloseCode.POLICY_VIOLATION


async def test_typing_is_relayed_and_rate_limited_silently(chat: Chat) -> None:
    """Typing reaches the recipient's connections; beyond the burst it is dropped."""
    alice, bob = chat.session("alice"), chat.session("bob")
    for _ in range(chat.config.ws_typing_burst + 3):
        await alice.receive('{"type":"typing","to":"bob"}')
    assert drain(bob.conn) == [{"type": "typing", "from": "alice"}] * chat.config.ws_typing_burst
    assert drain(alice.conn) == []
    assert chat.delivery.stats.typing_dropped == 3


async def test_send_parsed_from_the_frame_keeps_the_envelope_text(chat: Chat) -> None:
    """The stored envelope is the canonical text the parser produced, byte for byte."""
    alice = chat.session("alice")
    await chat.delivery.send(
        alice.conn,
        chat.users["alice"],
        Send(str(uuid.uuid4()), "bob", ENVELOPE_JSON),
    )
    await chat.delivery.flush()
    row = await chat.store.db.fetch_one("SELECT envelope FROM messages")
    assert row is not None and row[0] == ENVELOPE_JSON


# --- Stalled readers ----------------------------------------------------------------------------


class Socket:
    """A socket whose peer reads only when told to: each write waits for ``read()``."""

    def __init__(self) -> None:
        self.sent: list[str] = []
        self._readable = asyncio.Event()

    async def transmit(self, text: str) -> None:
        await self._readable.wait()
        self._readable.clear()
        self.sent.append(text)

    def read(self) -> None:
        self._readable.set()


async def started_write(session: ChatSession, text: str = "frame") -> asyncio.Task[None]:
    """Forward ``text`` in a task of its own, and return once its write is under way."""
    task = asyncio.create_task(session.forward(text))
    await asyncio.sleep(0)
    assert session.writing
    return task


async def test_a_write_stuck_past_ws_send_timeout_is_closed_with_1013_once(chat: Chat) -> None:
    """The sweep closes a session whose one write has waited ws_send_timeout, counts it once,
    and leaves it alone before that."""
    now = [100.0]
    socket = Socket()
    bob = chat.session("bob", transmit=socket.transmit, clock=lambda: now[0])
    sweep = StallSweep(chat.config.ws_send_timeout)
    sweep.add(bob)
    writing = await started_write(bob)
    now[0] += chat.config.ws_send_timeout - 0.01
    assert sweep.sweep() == 0
    assert not bob.conn.closed.is_set()
    now[0] += 0.01
    assert sweep.sweep() == 1
    assert (bob.conn.close_code, bob.conn.close_reason) == (
        CloseCode.TRY_AGAIN_LATER,
        "stopped reading; reconnect and sync",
    )
    assert sweep.sweep() == 0
    assert chat.delivery.stats.rejected["stalled_reader"] == 1
    writing.cancel()  # what chat.py does to its tasks once conn.closed is set
    with pytest.raises(asyncio.CancelledError):
        await writing
    assert not bob.writing and socket.sent == []


async def test_a_slow_reader_that_keeps_reading_is_not_closed(chat: Chat) -> None:
    """Each write waits most of ws_send_timeout, all of them far longer: nobody is closed."""
    now = [0.0]
    socket = Socket()
    bob = chat.session("bob", transmit=socket.transmit, clock=lambda: now[0])
    sweep = StallSweep(chat.config.ws_send_timeout)
    sweep.add(bob)
    for index in range(5):
        writing = await started_write(bob, f"frame {index}")
        for _ in range(9):
            now[0] += chat.config.ws_send_timeout / 10
            assert sweep.sweep() == 0
        socket.read()
        await writing
    assert now[0] > 4 * chat.config.ws_send_timeout
    assert socket.sent == [f"frame {index}" for index in range(5)]
    assert sweep.sweep() == 0  # nothing is being written: no clock reading makes it stalled
    assert not bob.conn.closed.is_set()
    assert chat.delivery.stats.rejected["stalled_reader"] == 0


async def test_the_sweep_task_closes_stalled_writes_and_outlives_an_error(chat: Chat) -> None:
    """Run as a task, the sweep closes a stalled session even while another one raises."""
    broken = False

    def failing_clock() -> float:
        if broken:
            raise RuntimeError("injected fault")
        return 0.0

    chat.config = chat.config.replace(ws_send_timeout=0.05)
    sweep = StallSweep(chat.config.ws_send_timeout)
    faulty = chat.session("alice", transmit=Socket().transmit, clock=failing_clock)
    stalled = chat.session("bob", transmit=Socket().transmit, clock=asyncio.get_running_loop().time)
    writes = [await started_write(faulty), await started_write(stalled)]
    broken = True
    sweep.add(faulty)
    sweep.add(stalled)
    sweep.start()
    try:
        async with asyncio.timeout(5):
            await stalled.conn.closed.wait()
        await asyncio.sleep(3 * sweep.period)  # a few more sweeps, each one failing on alice
    finally:
        await sweep.stop()
        for task in writes:
            task.cancel()
        await asyncio.gather(*writes, return_exceptions=True)
    assert stalled.conn.close_code == CloseCode.TRY_AGAIN_LATER
    assert not faulty.conn.closed.is_set()
    sweep.discard(faulty)
    sweep.discard(stalled)
    assert len(sweep) == 0


async def test_an_idle_committer_commits_at_once(tmp_path: Path, engine: Engine) -> None:
    """The gathering wait applies only right after another commit: a lone send is not held."""
    async with running_chat(tmp_path, engine, commit_gather_interval=0.5) as chat:
        alice = chat.session("alice")
        await asyncio.sleep(0.6)  # the fixture's own writes are long done
        started = asyncio.get_running_loop().time()
        await alice.receive(send_frame("bob"))
        ack = json.loads(await asyncio.wait_for(alice.conn.queue.get(), 5))
        assert ack["type"] == "ack"
        assert asyncio.get_running_loop().time() - started < 0.4


async def test_sends_right_after_a_commit_gather_into_the_next(
    tmp_path: Path, engine: Engine
) -> None:
    """Under load the next commit waits for the gathering interval, so sends arriving during
    it (6 sends 20 ms apart, well inside 0.3 s) are stored in one transaction; with no
    interval a send that comes after the previous commit is committed as it comes (waiting
    for each ack, not for a clock, so a busy machine cannot merge them)."""
    for interval in (0.3, 0.0):
        async with running_chat(
            tmp_path / str(interval), engine, commit_gather_interval=interval
        ) as chat:
            alice = chat.session("alice")
            before = chat.delivery.stats.commit_batches
            for _ in range(6):
                await alice.receive(send_frame("bob"))
                if interval:
                    await asyncio.sleep(0.02)
                else:
                    await chat.delivery.flush()
            await chat.delivery.flush()
            acks = [frame for frame in drain(alice.conn) if frame["type"] == "ack"]
            assert len(acks) == 6
            commits = chat.delivery.stats.commit_batches - before
            assert commits == 6 if interval == 0.0 else commits <= 2, (interval, commits)


async def test_submissions_wait_when_commit_pending_max_are_in_flight(
    tmp_path: Path, engine: Engine
) -> None:
    """Backpressure: past ``commit_pending_max`` sends not yet committed, a receive task waits
    (its socket is not read) until a commit makes room; nothing is refused or lost."""
    async with running_chat(
        tmp_path, engine, commit_pending_max=2, commit_gather_interval=0.0
    ) as chat:
        senders = [chat.session("alice") for _ in range(3)]
        tasks = [asyncio.create_task(s.receive(send_frame("bob"))) for s in senders]
        await asyncio.sleep(0)  # each task runs up to its first real wait
        assert [task.done() for task in tasks] == [True, True, False]
        await asyncio.wait_for(asyncio.gather(*tasks), 5)
        await chat.delivery.flush()
        for session in senders:  # each gets its ack (and copies of the other two sends)
            assert [frame["type"] for frame in drain(session.conn)].count("ack") == 1


async def test_one_id_to_a_name_without_account_and_to_bob_counts_against_bob(
    tmp_path: Path, engine: Engine
) -> None:
    """Two sends of one id in one batch, the first to a name with no account: the copy stored
    (to bob) is counted in the backlog, so the next send to bob is over the bound of one."""
    async with running_chat(tmp_path, engine, undelivered_per_pair_max=1) as chat:
        alice = chat.session("alice")
        frame_id = str(uuid.uuid4())
        await alice.receive(send_frame("ghost", frame_id))
        await alice.receive(send_frame("bob", frame_id))
        await chat.delivery.flush()
        assert [f.get("code", f["type"]) for f in drain(alice.conn)] == [
            "unknown_recipient",
            "ack",
        ]
        await alice.receive(send_frame("bob"))
        await chat.delivery.flush()
        assert [f.get("code") for f in drain(alice.conn)] == ["queue_full"]
        pairs = "SELECT sender_id, recipient_id, messages FROM undelivered_pairs"
        bob = chat.users["bob"].user_id
        assert await read_elsewhere(chat.store, pairs) == [(chat.users["alice"].user_id, bob, 1)]


async def test_the_backlog_follows_a_commit_even_when_fanning_out_fails(
    tmp_path: Path, engine: Engine, monkeypatch: pytest.MonkeyPatch
) -> None:
    """In one batch, a send whose fan-out raises and bob's mark delivering alice's earlier
    message: the mark is still answered, and frees alice's place in bob's queue, so her next
    send fits."""
    async with running_chat(tmp_path, engine, undelivered_per_pair_max=1) as chat:
        alice, bob = chat.session("alice"), chat.session("bob")
        await alice.receive(send_frame("bob"))
        await chat.delivery.flush()
        seq = drain(bob.conn)[0]["seq"]
        drain(alice.conn)
        publish = chat.delivery.broker.publish

        async def fails_for_carol(user: str, *args: Any, **kwargs: Any) -> None:
            if user == "carol":
                raise RuntimeError("fan-out failed")
            await publish(user, *args, **kwargs)

        monkeypatch.setattr(chat.delivery.broker, "publish", fails_for_carol)
        await alice.receive(send_frame("carol"))
        await bob.receive(json.dumps({"type": "delivered", "seq": seq}))
        await chat.delivery.flush()
        # The send was committed and acknowledged before its fan-out failed; the mark after it
        # in the batch is still answered with its receipt.
        assert [f["type"] for f in drain(alice.conn)] == ["ack", "receipt"]
        await alice.receive(send_frame("bob"))
        await chat.delivery.flush()
        assert [f["type"] for f in drain(alice.conn)] == ["ack"]
