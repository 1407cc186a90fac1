"""Tests for securechat.chat.hub: fan-out into bounded queues, presence, closing sessions."""

from __future__ import annotations

import asyncio
import logging

import pytest
from hypothesis import settings
from hypothesis import strategies as st
from hypothesis.stateful import (
    Bundle,
    RuleBasedStateMachine,
    invariant,
    multiple,
    precondition,
    rule,
)

from securechat.chat.hub import Broker, Connection, Hub, LocalBroker, TooManyConnections
from securechat.chat.protocol import CloseCode

QUEUE_SIZE = 4
MAX_PER_USER = 3


@pytest.fixture(name="hub")
def _hub() -> Hub:
    return Hub(max_connections_per_user=MAX_PER_USER, queue_size=QUEUE_SIZE)


@pytest.fixture(name="presence")
def _presence(hub: Hub) -> list[tuple[str, str]]:
    events: list[tuple[str, str]] = []
    hub.add_presence_listener(lambda user, status: events.append((user, status)))
    return events


def drain(conn: Connection) -> list[str]:
    frames = []
    while not conn.queue.empty():
        frames.append(conn.queue.get_nowait())
    return frames


# --- delivery ---------------------------------------------------------------------------------


def test_send_reaches_every_connection_of_the_user(hub: Hub) -> None:
    """A frame for a user is queued on each of that user's connections."""
    first, second = hub.connect("alice", "s1"), hub.connect("alice", "s2")
    assert hub.send_to_user("alice", "hello") == 2
    assert drain(first) == drain(second) == ["hello"]


def test_send_skips_other_users(hub: Hub) -> None:
    """A frame for one user never reaches another."""
    bob = hub.connect("bob", "s1")
    hub.send_to_user("alice", "hello")
    assert drain(bob) == []


def test_send_to_offline_user_delivers_nothing(hub: Hub) -> None:
    """Sending to a user with no connection returns 0."""
    assert hub.send_to_user("nobody", "hello") == 0


def test_send_except_conn(hub: Hub) -> None:
    """except_conn is skipped; the user's other connections still get the frame."""
    origin, other = hub.connect("alice", "s1"), hub.connect("alice", "s2")
    assert hub.send_to_user("alice", "copy", except_conn=origin) == 1
    assert (drain(origin), drain(other)) == ([], ["copy"])


async def test_frames_arrive_in_order(hub: Hub) -> None:
    """A connection's queue yields frames in the order they were sent."""
    conn = hub.connect("alice", "s1")
    for text in ("1", "2", "3"):
        hub.send_to_user("alice", text)
    assert [await conn.queue.get() for _ in range(3)] == ["1", "2", "3"]


async def test_local_broker_publishes_into_the_hub(hub: Hub) -> None:
    """LocalBroker.publish puts the frame on the user's connections."""
    conn = hub.connect("alice", "s1")
    broker: Broker = LocalBroker(hub)
    await broker.publish("alice", "hi")
    assert drain(conn) == ["hi"]


def test_connection_ids_are_unique(hub: Hub) -> None:
    """Every connection gets its own conn_id."""
    conns = [hub.connect(user, "s") for user in ("a01", "a02", "a01")]
    assert len({conn.conn_id for conn in conns}) == 3


# --- slow readers -----------------------------------------------------------------------------


def test_full_queue_marks_connection_for_1013(hub: Hub) -> None:
    """A frame that does not fit closes the connection with 1013 and is not queued."""
    conn = hub.connect("alice", "s1")
    assert [conn.deliver(str(i)) for i in range(QUEUE_SIZE + 1)] == [True] * QUEUE_SIZE + [False]
    assert conn.closed.is_set()
    assert conn.close_code == CloseCode.TRY_AGAIN_LATER
    assert conn.queue.qsize() == QUEUE_SIZE


def test_slow_reader_does_not_affect_other_connections(hub: Hub) -> None:
    """When one connection overflows, the user's other connection keeps receiving."""
    slow, fast = hub.connect("alice", "s1"), hub.connect("alice", "s2")
    for i in range(QUEUE_SIZE + 2):
        hub.send_to_user("alice", str(i))
        drain(fast)
    assert slow.closed.is_set() and not fast.closed.is_set()
    assert hub.send_to_user("alice", "after") == 1
    assert drain(fast) == ["after"]


def test_closed_connection_refuses_delivery(hub: Hub) -> None:
    """After close, deliver returns False and queues nothing."""
    conn = hub.connect("alice", "s1")
    conn.close(CloseCode.POLICY_VIOLATION, "flood")
    assert not conn.deliver("late")
    assert conn.queue.empty()


def test_first_close_reason_wins(hub: Hub) -> None:
    """A second close does not overwrite the first code and reason."""
    conn = hub.connect("alice", "s1")
    conn.close(CloseCode.POLICY_VIOLATION, "session revoked")
    conn.close(CloseCode.GOING_AWAY, "server shutdown")
    assert (conn.close_code, conn.close_reason) == (CloseCode.POLICY_VIOLATION, "session revoked")


async def test_closed_event_wakes_waiter(hub: Hub) -> None:
    """A task waiting on conn.closed wakes when the hub closes the connection."""
    conn = hub.connect("alice", "s1")
    waiter = asyncio.create_task(conn.closed.wait())
    await asyncio.sleep(0)
    hub.close_user("alice", CloseCode.POLICY_VIOLATION, "account deleted")
    await asyncio.wait_for(waiter, timeout=1)


def test_stats_count_slow_reader_closes(hub: Hub) -> None:
    """stats() reports connections, users, queued frames and closes for slowness."""
    hub.connect("alice", "s1")
    hub.connect("bob", "s2")
    for i in range(QUEUE_SIZE + 3):
        hub.send_to_user("alice", str(i))
    stats = hub.stats()
    assert (stats.connections, stats.users_online) == (2, 2)
    assert (stats.queued_frames, stats.slow_reader_closes) == (QUEUE_SIZE, 1)


# --- connection limit -------------------------------------------------------------------------


def test_newest_connection_over_the_limit_is_refused(hub: Hub) -> None:
    """At the limit, connect raises TooManyConnections and the existing ones stay open."""
    existing = [hub.connect("alice", f"s{i}") for i in range(MAX_PER_USER)]
    with pytest.raises(TooManyConnections):
        hub.connect("alice", "s-new")
    assert not any(conn.closed.is_set() for conn in existing)
    assert hub.stats().connections == MAX_PER_USER


def test_limit_is_per_user(hub: Hub) -> None:
    """One user at the limit does not stop another from connecting."""
    for i in range(MAX_PER_USER):
        hub.connect("alice", f"s{i}")
    assert hub.connect("bob", "s9").user == "bob"


def test_closing_connection_does_not_count_toward_limit(hub: Hub) -> None:
    """A connection already told to close leaves room for its replacement."""
    conns = [hub.connect("alice", f"s{i}") for i in range(MAX_PER_USER)]
    conns[0].close(CloseCode.TRY_AGAIN_LATER, "slow")
    assert not hub.connect("alice", "s-new").closed.is_set()


def test_disconnect_frees_a_slot(hub: Hub) -> None:
    """After a disconnect the user can connect again."""
    conns = [hub.connect("alice", f"s{i}") for i in range(MAX_PER_USER)]
    hub.disconnect(conns[0])
    assert hub.connect("alice", "s-new").user == "alice"


# --- presence ---------------------------------------------------------------------------------


def test_online_fires_on_first_connection_only(hub: Hub, presence: list[tuple[str, str]]) -> None:
    """ "online" fires when the first connection opens, not for later ones."""
    hub.connect("alice", "s1")
    hub.connect("alice", "s2")
    assert presence == [("alice", "online")]


def test_offline_fires_on_last_disconnect_only(hub: Hub, presence: list[tuple[str, str]]) -> None:
    """ "offline" fires when the last connection goes, not before."""
    first, second = hub.connect("alice", "s1"), hub.connect("alice", "s2")
    hub.disconnect(first)
    assert presence == [("alice", "online")]
    hub.disconnect(second)
    assert presence == [("alice", "online"), ("alice", "offline")]


def test_disconnect_is_idempotent(hub: Hub, presence: list[tuple[str, str]]) -> None:
    """Disconnecting twice fires "offline" once and changes nothing else."""
    conn = hub.connect("alice", "s1")
    hub.disconnect(conn)
    hub.disconnect(conn)
    assert presence == [("alice", "online"), ("alice", "offline")]


def test_close_does_not_change_presence(hub: Hub, presence: list[tuple[str, str]]) -> None:
    """Closing marks the connection; presence changes only when the handler disconnects."""
    conn = hub.connect("alice", "s1")
    hub.close_user("alice", CloseCode.POLICY_VIOLATION, "revoked")
    assert hub.is_online("alice") and presence == [("alice", "online")]
    hub.disconnect(conn)
    assert not hub.is_online("alice")


def test_disconnect_marks_connection_closed(hub: Hub) -> None:
    """A disconnected connection refuses further frames."""
    conn = hub.connect("alice", "s1")
    hub.disconnect(conn)
    assert conn.closed.is_set() and not conn.deliver("late")


def test_online_users(hub: Hub) -> None:
    """online_users() and is_online() list users with a connection."""
    hub.connect("alice", "s1")
    bob = hub.connect("bob", "s2")
    hub.disconnect(bob)
    assert hub.online_users() == {"alice"}
    assert hub.is_online("alice") and not hub.is_online("bob")


def test_failing_listener_is_logged_and_contained(
    hub: Hub, presence: list[tuple[str, str]], caplog: pytest.LogCaptureFixture
) -> None:
    """A listener that raises is logged; the hub's state and the other listeners are unaffected."""

    def broken(user: str, status: str) -> None:
        raise RuntimeError("boom")

    hub.add_presence_listener(broken)
    events_after: list[tuple[str, str]] = []
    hub.add_presence_listener(lambda user, status: events_after.append((user, status)))
    with caplog.at_level(logging.ERROR, logger="securechat.chat.hub"):
        hub.connect("alice", "s1")
    assert hub.is_online("alice")
    assert presence == events_after == [("alice", "online")]
    assert "presence listener failed" in caplog.text


# --- closing sessions -------------------------------------------------------------------------


def test_close_session_closes_only_that_session(hub: Hub) -> None:
    """close_session closes the session's sockets and no others, even of the same user."""
    a1, a2 = hub.connect("alice", "sess-a"), hub.connect("alice", "sess-a")
    other = hub.connect("alice", "sess-b")
    assert hub.close_session("sess-a", CloseCode.POLICY_VIOLATION, "session revoked") == 2
    assert a1.closed.is_set() and a2.closed.is_set() and not other.closed.is_set()
    assert a1.close_code == CloseCode.POLICY_VIOLATION
    assert a1.close_reason == "session revoked"


def test_close_unknown_session(hub: Hub) -> None:
    """Closing a session without sockets closes nothing."""
    assert hub.close_session("nope", CloseCode.NORMAL, "logout") == 0


def test_close_user_closes_only_that_user(hub: Hub) -> None:
    """close_user closes all of one user's sockets and none of another's."""
    alice = [hub.connect("alice", "s1"), hub.connect("alice", "s2")]
    bob = hub.connect("bob", "s3")
    assert hub.close_user("alice", CloseCode.POLICY_VIOLATION, "account deleted") == 2
    assert all(conn.closed.is_set() for conn in alice) and not bob.closed.is_set()


def test_close_all_uses_going_away(hub: Hub) -> None:
    """close_all closes every socket with 1001 by default."""
    conns = [hub.connect("alice", "s1"), hub.connect("bob", "s2")]
    assert hub.close_all() == 2
    assert {conn.close_code for conn in conns} == {CloseCode.GOING_AWAY}


# --- property: random interleavings -----------------------------------------------------------

USERS = ("ann", "ben", "cat")
PROP_QUEUE = 3
PROP_MAX = 2


class HubMachine(RuleBasedStateMachine):
    """The hub against a plain model: who is connected, what each queue holds, who was closed."""

    conns = Bundle("conns")

    def __init__(self) -> None:
        super().__init__()
        self.hub = Hub(max_connections_per_user=PROP_MAX, queue_size=PROP_QUEUE)
        self.registered: dict[str, list[Connection]] = {user: [] for user in USERS}
        self.expected: dict[int, list[str]] = {}  # conn_id -> frames the queue should hold
        self.closed: set[int] = set()
        self.presence: list[tuple[str, str]] = []
        self.hub.add_presence_listener(lambda user, status: self.presence.append((user, status)))
        self.sent = 0

    def live(self, user: str) -> list[Connection]:
        return [c for c in self.registered[user] if c.conn_id not in self.closed]

    @rule(target=conns, user=st.sampled_from(USERS), session=st.sampled_from(["s1", "s2"]))
    def connect(self, user: str, session: str) -> object:
        if len(self.live(user)) >= PROP_MAX:
            with pytest.raises(TooManyConnections):
                self.hub.connect(user, session)
            return multiple()
        conn = self.hub.connect(user, session)
        self.registered[user].append(conn)
        self.expected[conn.conn_id] = []
        return conn

    @rule(conn=conns)
    def disconnect(self, conn: Connection) -> None:
        self.hub.disconnect(conn)
        if conn in self.registered[conn.user]:
            self.registered[conn.user].remove(conn)
        self.closed.add(conn.conn_id)

    @rule(user=st.sampled_from(USERS), skip=st.none() | conns)
    def send(self, user: str, skip: Connection | None) -> None:
        self.sent += 1
        text = f"{user}:{self.sent}"
        want = 0
        for conn in self.live(user):
            if conn is skip:
                continue
            if len(self.expected[conn.conn_id]) < PROP_QUEUE:
                self.expected[conn.conn_id].append(text)
                want += 1
            else:
                self.closed.add(conn.conn_id)
        assert self.hub.send_to_user(user, text, except_conn=skip) == want

    @rule(conn=conns, count=st.integers(min_value=1, max_value=PROP_QUEUE + 1))
    def drain(self, conn: Connection, count: int) -> None:
        got = [conn.queue.get_nowait() for _ in range(min(count, conn.queue.qsize()))]
        want = self.expected[conn.conn_id][: len(got)]
        del self.expected[conn.conn_id][: len(got)]
        assert got == want

    @precondition(lambda self: any(self.registered.values()))
    @rule(session=st.sampled_from(["s1", "s2"]))
    def close_session(self, session: str) -> None:
        for conns in self.registered.values():
            self.closed.update(c.conn_id for c in conns if c.session_id == session)
        self.hub.close_session(session, CloseCode.POLICY_VIOLATION, "revoked")

    @invariant()
    def queues_match_the_model(self) -> None:
        for conns in self.registered.values():
            for conn in conns:
                assert conn.queue.qsize() == len(self.expected[conn.conn_id]) <= PROP_QUEUE
                assert conn.closed.is_set() == (conn.conn_id in self.closed)

    @invariant()
    def presence_matches_registrations(self) -> None:
        assert self.hub.online_users() == {u for u, conns in self.registered.items() if conns}
        for user in USERS:
            mine = [status for who, status in self.presence if who == user]
            assert mine == ["online", "offline"] * (len(mine) // 2) + ["online"] * (len(mine) % 2)
            assert (mine[-1:] == ["online"]) == self.hub.is_online(user)


HubMachine.TestCase.settings = settings(database=None, max_examples=200, stateful_step_count=40)
# 200 runs of up to 40 steps: about 3 s.
TestHubProperties = pytest.mark.slow(HubMachine.TestCase)
