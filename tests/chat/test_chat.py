"""/ws on a real Hypercorn port: who may connect, bad input, limits, backpressure, closes."""

from __future__ import annotations

import asyncio
import io
import json
import sqlite3
import time
import uuid
from typing import Any

import httpx
import pytest
from websockets.exceptions import ConnectionClosed, InvalidStatus
from wsproto.events import TextMessage

from securechat.chat import wsguard
from securechat.chat.protocol import KeyedRateLimiter
from securechat.client import ChatClosed, ChatConnection, ChatError, SecureChatClient
from tests.chatkit import (
    FAKE_ENVELOPE,
    Accounts,
    ServerWith,
    next_frame,
    raw_socket,
    send_text,
)

# The fixtures these tests use (a server shared by the module, accounts on it).
from tests.chatkit import _accounts as _accounts
from tests.chatkit import _server_with as _server_with
from tests.chatkit import _shared_server as _shared_server
from tests.clockkit import ManualClock
from tests.livesrv import LiveServer

TOKEN = "chat-admin-token-for-tests"


def name_of(client: SecureChatClient) -> str:
    assert client.account is not None
    return client.account.username


async def refused_status(base_url: str, **options: Any) -> int:
    """The HTTP status of a handshake the server refuses."""
    with pytest.raises(InvalidStatus) as refused:
        async with raw_socket(base_url, **options):
            pass
    return refused.value.response.status_code


async def closed_with(chat: ChatConnection, wait: float = 10.0) -> tuple[int | None, str]:
    """Read until the server closes; return its close code and reason."""
    with pytest.raises(ChatClosed) as closed:
        while True:
            await chat.receive(wait=wait)
    return closed.value.code, closed.value.reason


# --- Who may connect -------------------------------------------------------------------------


async def test_handshake_without_a_session_is_refused_with_403(shared_server: LiveServer) -> None:
    """No cookie: HTTP 403 instead of the upgrade."""
    assert await refused_status(shared_server.url, cookie=None) == 403


async def test_handshake_with_a_made_up_cookie_is_refused_with_403(
    shared_server: LiveServer,
) -> None:
    """A cookie that names no session: 403."""
    assert await refused_status(shared_server.url, cookie="forged") == 403


async def test_handshake_after_logout_is_refused_with_403(accounts: Accounts) -> None:
    """The cookie of a revoked session opens nothing."""
    alice = await accounts.sign_up("alice")
    cookie = alice.session_cookie
    await alice.logout()
    assert await refused_status(accounts.base_url, cookie=cookie) == 403


async def test_handshake_from_a_foreign_origin_is_refused_before_accept(accounts: Accounts) -> None:
    """A valid session from another site's page (cross-site WebSocket hijacking): 403."""
    alice = await accounts.sign_up("alice")
    status = await refused_status(
        accounts.base_url, cookie=alice.session_cookie, origin="https://evil.example"
    )
    assert status == 403


async def test_handshake_without_an_origin_is_refused(accounts: Accounts) -> None:
    """No Origin header at all: 403 (browsers always send one)."""
    alice = await accounts.sign_up("alice")
    assert await refused_status(accounts.base_url, cookie=alice.session_cookie, origin=None) == 403


async def test_an_origin_the_operator_allowed_may_connect(server_with: ServerWith) -> None:
    """An origin listed in allowed_origins is accepted like the server's own."""
    server, accounts = server_with(allowed_origins=("https://chat.example",))
    alice = await accounts.sign_up("alice")
    async with raw_socket(
        server.url, cookie=alice.session_cookie, origin="https://chat.example"
    ) as socket:
        await socket.send('{"type":"ping"}')
        assert await next_frame(socket) == {"type": "pong"}


@pytest.mark.parametrize("after", ["-1", "x", "1e3", "9" * 20, str(2**63)])
async def test_a_malformed_after_is_refused_with_400(accounts: Accounts, after: str) -> None:
    """/ws?after= must be a seq: anything else answers 400 before the upgrade."""
    alice = await accounts.sign_up("alice")
    url = f"{accounts.base_url}/ws?after={after}"
    with pytest.raises(InvalidStatus) as refused:
        async with raw_socket(accounts.base_url, cookie=alice.session_cookie, path=url):
            pass
    assert refused.value.response.status_code == 400


async def test_connecting_with_after_replays_before_anything_live(accounts: Accounts) -> None:
    """With ?after=N the first frames are the replay in order, then synced, then live ones."""
    alice, bob = await accounts.sign_up("alice"), await accounts.sign_up("bob")
    a = await alice.connect()
    acks = [await a.send_message(name_of(bob), str(i)) for i in range(3)]
    async with raw_socket(
        accounts.base_url, cookie=bob.session_cookie, path=f"/ws?after={acks[0]['seq']}"
    ) as socket:
        later = await a.send_message(name_of(bob), "live")
        frames: list[dict[str, Any]] = []
        while len(frames) < 4:
            frame = await next_frame(socket)
            if frame["type"] != "presence":  # alice is online: a hint that may come any time
                frames.append(frame)
    assert [(f["type"], f.get("id")) for f in frames] == [
        ("message", acks[1]["id"]),
        ("message", acks[2]["id"]),
        ("synced", None),
        ("message", later["id"]),
    ]


async def test_refusal_body_is_json_without_detail(accounts: Accounts) -> None:
    """The 403 says why in one code, nothing more."""
    with pytest.raises(InvalidStatus) as refused:
        async with raw_socket(accounts.base_url, cookie=None):
            pass
    body = json.loads(refused.value.response.body or b"{}")
    assert body == {"error": "unauthenticated", "message": "Log in first."}


# --- Sessions ending -------------------------------------------------------------------------


async def test_logout_closes_that_sessions_sockets_with_1008(accounts: Accounts) -> None:
    """Logging out over HTTP closes the session's open sockets at once."""
    alice = await accounts.sign_up("alice")
    first, second = await alice.connect(), await alice.connect()
    await alice.logout()
    assert (await closed_with(first))[0] == 1008
    assert (await closed_with(second))[0] == 1008


async def test_revoking_other_sessions_closes_their_sockets_only(accounts: Accounts) -> None:
    """ "Log out other sessions" closes the laptop's socket and keeps the phone's."""
    phone = await accounts.sign_up("alice")
    laptop = await accounts.login_again(name_of(phone))
    phone_chat, laptop_chat = await phone.connect(), await laptop.connect()
    await phone.call("POST", "/api/v1/sessions/revoke-others", {})
    assert await closed_with(laptop_chat) == (1008, "session ended")
    assert await phone_chat.ping() == {"type": "pong"}


async def test_socket_closes_when_its_session_expires(server_with: ServerWith) -> None:
    """A session's absolute expiry closes its socket with 1008, though it is in use."""
    clock = ManualClock()
    _server, accounts = server_with(clock=clock, session_absolute_timeout=3600)
    alice = await accounts.sign_up("alice")
    chat = await alice.connect()
    clock.advance(3600 - 1)
    assert await chat.ping() == {"type": "pong"}
    clock.advance(1)
    assert await closed_with(chat) == (1008, "session expired")


async def test_a_handshake_counts_as_activity_for_the_idle_timer(server_with: ServerWith) -> None:
    """A session idle for nearly its whole timeout is renewed by the handshake: its socket
    stays open a full idle period, even when it only listens, and is not closed early."""
    clock = ManualClock()
    server, accounts = server_with(clock=clock, session_idle_timeout=70)
    alice = await accounts.sign_up("alice")
    nearly_idle = clock.now_ms() - 69_000  # 1 s left; past the 60 s touch interval
    with sqlite3.connect(server.database_path) as db:
        db.execute("UPDATE sessions SET last_seen_at = ?", (nearly_idle,))
    chat = await alice.connect()
    with sqlite3.connect(server.database_path) as db:
        (last_seen,) = db.execute("SELECT last_seen_at FROM sessions").fetchone()
    assert last_seen == clock.now_ms()  # the handshake wrote its activity once ...
    clock.advance(59)  # ... and the socket outlives the old deadline
    assert await chat.ping() == {"type": "pong"}
    with sqlite3.connect(server.database_path) as db:  # (a ping within 60 s writes nothing)
        assert db.execute("SELECT last_seen_at FROM sessions").fetchone() == (last_seen,)
    clock.advance(70 - 59)  # a full idle period after the handshake, it ends
    assert await closed_with(chat) == (1008, "session expired")


async def test_a_socket_to_an_unknown_path_is_refused_404_in_json(base_url: str) -> None:
    """An upgrade to a path with no socket answers 404 with a JSON error, not a 500."""
    with pytest.raises(InvalidStatus) as refused:
        async with raw_socket(base_url, cookie=None, path="/nope"):
            pass
    assert refused.value.response.status_code == 404
    assert json.loads(refused.value.response.body)["error"] == "not_found"


# --- Bad input -------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("frame", "code"),
    [
        ("{not json", "bad_json"),
        ("[1, 2]", "not_an_object"),
        ('{"type": "shout"}', "unknown_type"),
        ('{"type": 7}', "bad_field"),
        ('{"type": "sync", "after": "0"}', "bad_field"),
        ('{"type": "read", "seq": -1}', "bad_field"),
        ('{"type": "send", "id": "x", "to": "bob", "envelope": {}}', "bad_field"),
        ('{"type": "typing", "to": "Not A Name!"}', "bad_field"),
        (b"\x00\x01binary", "binary_frame"),
    ],
)
async def test_malformed_frames_get_an_error_frame_and_the_socket_survives(
    accounts: Accounts, frame: str | bytes, code: str
) -> None:
    """Each kind of bad frame is answered with its error code; the next ping still works."""
    alice = await accounts.sign_up("alice")
    chat = await alice.connect()
    await chat.send_raw(frame)
    error = await chat.wait_for("error")
    assert error["code"] == code
    assert "Traceback" not in error["message"]
    assert await chat.ping() == {"type": "pong"}


async def test_error_frame_names_the_id_of_the_frame_it_answers(accounts: Accounts) -> None:
    """A send with a valid id but a bad field gets an error carrying that id."""
    alice = await accounts.sign_up("alice")
    chat = await alice.connect()
    frame_id = str(uuid.uuid4())
    await chat.send_frame({"type": "send", "id": frame_id, "to": "bob", "envelope": "no"})
    assert (await chat.wait_for("error", id=frame_id))["code"] == "bad_field"


async def test_sending_to_yourself_is_an_error(accounts: Accounts) -> None:
    """A message to oneself is refused with self_recipient."""
    alice = await accounts.sign_up("alice")
    chat = await alice.connect()
    frame_id = str(uuid.uuid4())
    await chat.send_raw(send_text(name_of(alice), frame_id=frame_id))
    assert (await chat.wait_for("error", id=frame_id))["code"] == "self_recipient"


async def test_sending_to_an_unknown_user_is_an_error(accounts: Accounts) -> None:
    """A message to a name without an account is refused with unknown_recipient."""
    alice = await accounts.sign_up("alice")
    chat = await alice.connect()
    frame_id = str(uuid.uuid4())
    await chat.send_raw(send_text("no-such-user", frame_id=frame_id))
    assert (await chat.wait_for("error", id=frame_id))["code"] == "unknown_recipient"


async def test_envelope_over_the_limit_is_an_error_frame(accounts: Accounts) -> None:
    """An envelope over 56 KiB inside a frame under 64 KiB: envelope_too_large, no close."""
    alice, bob = await accounts.sign_up("alice"), await accounts.sign_up("bob")
    chat = await alice.connect()
    envelope = FAKE_ENVELOPE | {"ct": "B" * (57 * 1024)}
    frame_id = str(uuid.uuid4())
    await chat.send_raw(send_text(name_of(bob), frame_id=frame_id, envelope=envelope))
    assert (await chat.wait_for("error", id=frame_id))["code"] == "envelope_too_large"
    assert await chat.ping() == {"type": "pong"}


async def test_the_from_field_of_a_client_is_ignored(accounts: Accounts) -> None:
    """A send claiming to be from someone else is stored as from its real sender."""
    alice, bob = await accounts.sign_up("alice"), await accounts.sign_up("bob")
    mallory = await accounts.sign_up("mallory")
    m = await mallory.connect()
    frame = json.loads(send_text(name_of(bob))) | {"from": name_of(alice)}
    await m.send_frame(frame)
    await m.wait_ack(frame["id"])
    b = await bob.connect()
    assert [f["from"] for f in b.replayed] == [name_of(mallory)]


async def test_marking_someone_elses_message_is_refused(accounts: Accounts) -> None:
    """Carol cannot mark alice's message to bob delivered or read."""
    alice, bob = await accounts.sign_up("alice"), await accounts.sign_up("bob")
    carol = await accounts.sign_up("carol")
    a = await alice.connect()
    ack = await a.send_message(name_of(bob), "private")
    c = await carol.connect()
    for status in ("delivered", "read"):
        await c.mark(ack["seq"], status)
        assert (await c.wait_for("error"))["code"] == "unknown_message"
    history = await bob.call("GET", f"/api/v1/messages?with={name_of(alice)}")
    assert (history["messages"][0]["delivered_ts"], history["messages"][0]["read_ts"]) == (
        None,
        None,
    )


async def test_the_sender_cannot_mark_their_own_message(accounts: Accounts) -> None:
    """Only the recipient marks: alice marking her own message read is refused."""
    alice, bob = await accounts.sign_up("alice"), await accounts.sign_up("bob")
    a = await alice.connect()
    ack = await a.send_message(name_of(bob), "mine")
    await a.mark(ack["seq"], "read")
    assert (await a.wait_for("error"))["code"] == "unknown_message"


async def test_an_unexpected_error_closes_only_that_connection_with_1011(
    accounts: Accounts, shared_server: LiveServer
) -> None:
    """A server fault in one connection closes it with 1011 and no detail; others carry on."""
    victim, bystander = await accounts.sign_up("victim"), await accounts.sign_up("bystander")
    v, b = await victim.connect(), await bystander.connect()
    delivery = shared_server.app.extensions["securechat"].chat.delivery
    healthy = delivery.changes

    async def faulty(user: Any, after: int) -> Any:
        # Fault injection: a bug that strikes one user's sync.
        if user.name == name_of(victim):
            raise RuntimeError("injected fault: /secret/path")
        return await healthy(user, after)

    delivery.changes = faulty
    try:
        await v.send_frame({"type": "sync", "after": 0})
        assert await closed_with(v) == (1011, "internal error")
    finally:
        del delivery.changes
    assert await b.ping() == {"type": "pong"}


# --- Limits ----------------------------------------------------------------------------------


async def test_a_frame_over_the_websocket_limit_closes_with_1009(accounts: Accounts) -> None:
    """A 65 KiB frame (over hypercorn.toml's 64 KiB) closes that socket with 1009."""
    alice = await accounts.sign_up("alice")
    chat = await alice.connect()
    await chat.send_raw("x" * (65 * 1024))
    assert (await closed_with(chat))[0] == 1009


async def test_the_server_declines_permessage_deflate(accounts: Accounts) -> None:
    """The client offers compression; the server answers without it (see securechat/wsguard)."""
    alice = await accounts.sign_up("alice")
    async with raw_socket(accounts.base_url, cookie=alice.session_cookie) as socket:
        assert socket.response is not None
        assert "Sec-WebSocket-Extensions" not in socket.response.headers
        assert socket.protocol.extensions == []


def test_an_oversized_message_is_not_buffered_past_the_limit() -> None:
    """Hypercorn's buffer, as installed, refuses a part before storing it, and keeps refusing."""
    wsguard.install(__import__("quart").Quart(__name__), 4)
    from hypercorn.protocol import ws_stream

    buffer = ws_stream.WebsocketBuffer(10)
    buffer.extend(TextMessage(data="12345", message_finished=False))
    for _ in range(3):
        with pytest.raises(ws_stream.FrameTooLargeError):
            buffer.extend(TextMessage(data="x" * 1000, message_finished=False))
    assert isinstance(buffer.value, io.StringIO)
    assert buffer.value.getvalue() == "12345"


async def test_flooding_past_the_rate_closes_with_1008(accounts: Accounts) -> None:
    """More frames than the burst allows, at once: the socket is closed with 1008."""
    alice = await accounts.sign_up("alice")
    async with raw_socket(accounts.base_url, cookie=alice.session_cookie) as socket:
        with pytest.raises(ConnectionClosed) as closed:
            for _ in range(1000):
                await socket.send('{"type":"ping"}')
            while True:
                await next_frame(socket)
    assert closed.value.rcvd is not None and closed.value.rcvd.code == 1008


async def test_one_connection_too_many_for_a_user_is_refused_newest_first(
    server_with: ServerWith,
) -> None:
    """Past ws_connections_per_user, the new socket is closed with 1008; the old ones live."""
    _server, accounts = server_with(ws_connections_per_user=2)
    alice = await accounts.sign_up("alice")
    first, second = await alice.connect(), await alice.connect()
    third = await alice.connect(after=None)
    assert await closed_with(third) == (1008, "too many connections")
    assert await first.ping() == await second.ping() == {"type": "pong"}


async def test_the_server_wide_connection_bound_answers_try_again_later(
    server_with: ServerWith,
) -> None:
    """Past ws_connections_max in all, a new socket is closed with 1013."""
    _server, accounts = server_with(ws_connections_max=1)
    alice, bob = await accounts.sign_up("alice"), await accounts.sign_up("bob")
    await alice.connect()
    late = await bob.connect(after=None)
    assert await closed_with(late) == (1013, "server busy")


@pytest.mark.slow  # tens of MB through real sockets, and real stalls
async def test_a_slow_reader_is_closed_with_1013_and_catches_up_with_sync(
    server_with: ServerWith,
) -> None:
    """A reader that stops reading is closed rather than buffered; sync then gives it all."""
    _server, accounts = server_with(
        ws_queue_frames=4,
        ws_frames_per_s=10_000.0,
        ws_frames_burst=10_000,
        sends_per_user_per_s=10_000.0,
        sends_per_user_burst=10_000,
    )
    alice, bob = await accounts.sign_up("alice"), await accounts.sign_up("bob")
    a = await alice.connect()
    slow = await bob.connect()
    # Bob reads nothing now: his client library stops reading its TCP socket once 16 frames
    # wait unread, the socket buffers fill, the server's writes block, then its 4-frame queue
    # for bob overflows. About 29 MB is well past what the buffers hold.
    envelope = FAKE_ENVELOPE | {"ct": "B" * (48 * 1024)}
    ids = [str(uuid.uuid4()) for _ in range(600)]
    for frame_id in ids:
        await a.send_raw(send_text(name_of(bob), frame_id=frame_id, envelope=envelope))
        await a.wait_ack(frame_id)
    code, _reason = await closed_with(slow)
    assert code == 1013
    again = await bob.connect(after=slow.cursor)
    seen = set(slow.messages) | {f["id"] for f in again.replayed}
    assert seen == set(ids)


async def test_health_reports_chat_connections(server_with: ServerWith) -> None:
    """/admin/health has a chat section with live connection counts."""
    server, accounts = server_with(admin_token=TOKEN)
    alice = await accounts.sign_up("alice")
    await alice.connect()
    async with httpx.AsyncClient(base_url=server.url) as http:
        response = await http.get("/admin/health", headers={"Authorization": f"Bearer {TOKEN}"})
    chat = response.json()["chat"]
    assert chat["connections"] == chat["sockets_open"] == chat["users_online"] == 1


async def test_ping_is_answered_with_pong(accounts: Accounts) -> None:
    """The application-level ping gets a pong."""
    alice = await accounts.sign_up("alice")
    chat = await alice.connect()
    assert await chat.ping() == {"type": "pong"}


async def test_connections_are_independent_of_each_others_errors(accounts: Accounts) -> None:
    """One client's bad frames and flood leave another client's socket untouched."""
    alice, bob = await accounts.sign_up("alice"), await accounts.sign_up("bob")
    a, b = await alice.connect(), await bob.connect()
    await a.send_raw("{oops")
    await a.send_raw("x" * (65 * 1024))
    assert (await closed_with(a))[0] == 1009
    assert await b.ping() == {"type": "pong"}


# --- Per-account send rate, stalled readers ---------------------------------------------------


async def test_sends_past_the_accounts_rate_are_refused_across_all_its_sockets(
    server_with: ServerWith,
) -> None:
    """The send bucket is per account: a second socket shares it. Past it, an error names the
    frame, nothing is stored, and the socket stays open."""
    _server, accounts = server_with(sends_per_user_per_s=0.001, sends_per_user_burst=3)
    alice, bob = await accounts.sign_up("alice"), await accounts.sign_up("bob")
    first, second = await alice.connect(), await alice.connect()
    acks = [
        await first.send_message(name_of(bob), "one"),
        await first.send_message(name_of(bob), "two"),
    ]
    acks.append(await second.send_message(name_of(bob), "three"))
    refused_id = str(uuid.uuid4())
    await first.send_raw(send_text(name_of(bob), frame_id=refused_id))
    with pytest.raises(ChatError) as refused:
        await first.wait_ack(refused_id)
    assert refused.value.code == "rate_limited"
    assert refused.value.frame["id"] == refused_id
    assert await first.ping() == await second.ping() == {"type": "pong"}
    b = await bob.connect(after=0)
    assert [f["id"] for f in b.replayed] == [ack["id"] for ack in acks]


def test_the_send_limiter_forgets_only_refilled_buckets_first() -> None:
    """Full buckets are forgotten before busy ones; the table never outgrows its bound."""
    limiter = KeyedRateLimiter(1.0, 2, max_keys=4)
    assert limiter.allow("busy", 0.0) and limiter.allow("busy", 0.0)
    for key in ("a", "b", "c"):
        assert limiter.allow(key, 0.0)
    assert not limiter.allow("busy", 0.0)
    # At t=1 a, b and c have refilled (one token spent, one refilled); busy has one token.
    assert limiter.allow("new", 1.0)
    assert len(limiter) <= 4
    assert limiter.allow("busy", 1.0)
    assert not limiter.allow("busy", 1.0)  # its bucket was kept, not reset to full


def stalling_server(server_with: ServerWith, send_timeout: float) -> tuple[LiveServer, Accounts]:
    """A server with ``ws_send_timeout=send_timeout`` and limits wide enough for a backlog."""
    return server_with(
        ws_send_timeout=send_timeout,
        ws_close_timeout=30.0,
        ws_frames_per_s=10_000.0,
        ws_frames_burst=10_000,
        sends_per_user_per_s=10_000.0,
        sends_per_user_burst=10_000,
    )


async def send_backlog(sender: ChatConnection, to: str) -> int:
    """About 24 MB of messages to ``to``: far more than the socket buffers between server and
    client hold. Returns how many."""
    envelope = FAKE_ENVELOPE | {"ct": "B" * (48 * 1024)}
    for _ in range(10):
        ids = [str(uuid.uuid4()) for _ in range(50)]
        for frame_id in ids:
            await sender.send_raw(send_text(to, frame_id=frame_id, envelope=envelope))
        for frame_id in ids:
            await sender.wait_ack(frame_id)
    return 500


def longest_write(stalls: Any) -> float:
    """Seconds the oldest write in progress has waited so far (the server's clock is
    ``loop.time``, that is ``time.monotonic``)."""
    started = [s.write_started for s in stalls if s.write_started is not None]
    return time.monotonic() - min(started) if started else 0.0


def chat_of(server: LiveServer) -> Any:
    """The server's ChatService (stats, the stall sweep)."""
    return server.app.extensions["securechat"].chat


@pytest.mark.slow  # tens of MB through real sockets, and real stalls
async def test_a_reader_that_stalls_during_a_sync_is_closed_with_1013(
    server_with: ServerWith,
) -> None:
    """With no live traffic at all, a socket whose peer stops reading mid-replay is closed
    once one write has waited ws_send_timeout, instead of holding its send lock forever;
    it is counted, and the sweep forgets the session once its handler ends."""
    server, accounts = stalling_server(server_with, send_timeout=1.0)
    alice, bob = await accounts.sign_up("alice"), await accounts.sign_up("bob")
    await send_backlog(await alice.connect(), name_of(bob))
    # The raw client stops reading its TCP socket once 16 frames wait unread.
    async with raw_socket(
        accounts.base_url, cookie=bob.session_cookie, path="/ws?after=0"
    ) as socket:
        # The replay's writes block; after 1 s (plus at most one 1 s sweep) the server gives up.
        await asyncio.sleep(4)
        with pytest.raises(ConnectionClosed) as closed:
            while True:
                await next_frame(socket)
    assert closed.value.rcvd is not None
    assert (closed.value.rcvd.code, closed.value.rcvd.reason) == (
        1013,
        "stopped reading; reconnect and sync",
    )
    service = chat_of(server)
    assert service.stats.rejected["stalled_reader"] == 1
    for _ in range(200):  # the handler ends once the closing handshake is done
        if len(service.stalls) == 1:  # alice's socket is still open
            break
        await asyncio.sleep(0.05)
    assert len(service.stalls) == 1


@pytest.mark.slow  # tens of MB through real sockets, and real stalls
async def test_a_reader_that_pauses_less_than_ws_send_timeout_is_not_closed(
    server_with: ServerWith,
) -> None:
    """A peer that stops reading for less than ws_send_timeout, then reads on, gets the whole
    replay and keeps its socket."""
    server, accounts = stalling_server(server_with, send_timeout=4.0)
    alice, bob = await accounts.sign_up("alice"), await accounts.sign_up("bob")
    count = await send_backlog(await alice.connect(), name_of(bob))
    async with raw_socket(
        accounts.base_url, cookie=bob.session_cookie, path="/ws?after=0"
    ) as socket:
        blocked = 0.0
        for _ in range(35):  # up to 3.5 s without reading: a write waits, but less than 4 s
            await asyncio.sleep(0.1)
            blocked = max(blocked, longest_write(chat_of(server).stalls))
            if blocked > 1.5:
                break
        # A write really waited on this reader, across at least one sweep (every second).
        assert blocked > 1.0
        types = [(await next_frame(socket))["type"]]
        while types[-1] != "synced":
            types.append((await next_frame(socket))["type"])
        await socket.send('{"type":"ping"}')
        while types[-1] != "pong":  # the socket still answers
            types.append((await next_frame(socket))["type"])
    assert types.count("message") == count
    assert chat_of(server).stats.rejected["stalled_reader"] == 0


def test_frames_are_written_without_quarts_per_frame_extras() -> None:
    """chat.py writes through Quart's ASGI send (``Websocket._send``), not ``Websocket.send``.

    ``send`` yields to the loop and re-runs ``accept()`` for every frame (docs/performance.md);
    if Quart renames ``_send``, chat.py falls back to ``send`` silently slower: this says so.
    """
    from hypercorn.typing import ConnectionState, WebsocketScope
    from quart.wrappers import Websocket
    from werkzeug.datastructures import Headers

    from securechat.chat.endpoint import _transmitter

    async def asgi_send(data: str | bytes) -> None:
        return None

    async def unused(*args: Any) -> Any:
        raise AssertionError("not called")

    scope: WebsocketScope = {
        "type": "websocket",
        "asgi": {"version": "3.0"},
        "http_version": "1.1",
        "scheme": "ws",
        "path": "/ws",
        "raw_path": b"/ws",
        "query_string": b"",
        "root_path": "",
        "headers": [],
        "client": None,
        "server": None,
        "subprotocols": [],
        "state": ConnectionState({}),
        "extensions": {},
    }
    socket = Websocket(
        "/ws", b"", "ws", Headers(), "", "1.1", [], unused, asgi_send, unused, unused, scope
    )
    assert _transmitter(socket) is asgi_send
