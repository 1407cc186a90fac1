"""The chat's WebSocket endpoint, ``/ws``: the handshake checks, then a receive and a send task.

The handshake is refused with HTTP 403 *before* ``accept`` when the ``Origin`` is not allowed
(cross-site WebSocket hijacking: browsers send cookies on cross-site WebSocket handshakes, and
only the server's check of ``Origin`` stops them) or when the session is missing, expired or
revoked. Limits are told after ``accept`` with a close code the page can read: more than
``ws_connections_per_user`` sockets for one user -> the newest is closed with 1008; more than
``ws_connections_max`` in all -> 1013 (try again later).

Then, as in websockets' "patterns" guide, three waits under ``asyncio.wait(FIRST_COMPLETED)``:
the receive task (frames -> :class:`~securechat.chat.session.ChatSession`), the send task (the
hub queue -> the socket) and the connection's ``closed`` event (logout, slow reader, flood, or
a write stuck for ``ws_send_timeout``, found by the app's one
:class:`~securechat.chat.session.StallSweep`). Whichever ends first ends the others, so a write
blocked on a peer that stopped reading is cancelled. An unexpected error closes this
connection only, with 1011 and no detail; the traceback goes to the log.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Awaitable, Callable
from typing import Any, Final

from quart import Blueprint, Response, jsonify, websocket
from quart.wrappers import Websocket

from securechat.accounts.sessions import TOUCH_INTERVAL_MS, current_session, is_live
from securechat.chat.delivery import Principal
from securechat.chat.hub import Connection, TooManyConnections
from securechat.chat.protocol import SEQ_LIMIT, presence_frame
from securechat.chat.service import ChatService
from securechat.chat.session import ChatSession
from securechat.config import Config
from securechat.errors import Close, HttpCode
from securechat.runtime import Clock, Timer
from securechat.state import state
from securechat.store import Session
from securechat.web.api import parse_uint
from securechat.web.security import is_allowed_origin

log = logging.getLogger(__name__)

# WebSocket handshakes are addressed to ws:// or wss://; the browser's Origin names http(s).
_HTTP_SCHEME: Final = {"ws": "http", "wss": "https", "http": "http", "https": "https"}

blueprint = Blueprint("chat", __name__)


def chat_service() -> ChatService:
    """The running app's chat service."""
    return state().chat


@blueprint.websocket("/ws")
async def chat_socket() -> tuple[Response, int] | None:
    """Authenticate the handshake, then serve the connection until either side ends it."""
    service = chat_service()
    if not _origin_allowed(service.config):
        return _refuse(service, HttpCode.CROSS_SITE, "This origin may not open the chat.")
    session = await current_session()
    if session is None:
        return _refuse(service, HttpCode.UNAUTHENTICATED)
    try:
        after = _initial_cursor()
    except ValueError:
        service.stats.rejected["handshake_bad_after"] += 1
        return jsonify(HttpCode.INVALID.body("after must be a seq.")), HttpCode.INVALID.status
    if service.open_sockets >= service.config.ws_connections_max:
        await _accept_and_close(service, Close.SERVER_BUSY)
        return None
    try:
        conn = service.hub.connect(session.username, session.id)
    except TooManyConnections:
        service.stats.rejected["too_many_connections"] += 1
        await _accept_and_close(service, Close.TOO_MANY_CONNECTIONS)
        return None
    # Counted from here, before the first await, so simultaneous handshakes cannot all pass
    # the ws_connections_max check above.
    service.open_sockets += 1
    try:
        # The cap again, counting the user's sockets on every node (in a cluster).
        if not await service.claim_socket(conn):
            service.stats.rejected["too_many_connections"] += 1
            await _accept_and_close(service, Close.TOO_MANY_CONNECTIONS)
            return None
        # A logout that finished between reading the session and connect() found no socket
        # to close; reading the session again after connect() closes that gap.
        session = await _still_live(session)
        if session is None:
            return _refuse(service, HttpCode.UNAUTHENTICATED)
        await websocket.accept()
        await _serve(service, conn, session, after)
    finally:
        service.open_sockets -= 1
        service.release_socket(conn)
        service.hub.disconnect(conn)
    return None


def _origin_allowed(config: Config) -> bool:
    origin = websocket.headers.get("Origin")
    scheme = _HTTP_SCHEME.get(websocket.scheme, websocket.scheme)
    return origin is not None and is_allowed_origin(origin, scheme, websocket.host, config)


def _initial_cursor() -> int | None:
    """``/ws?after=N``: replay after N before anything else (ValueError if malformed)."""
    raw = websocket.args.get("after")
    if raw is None:
        return None
    after = parse_uint(raw)
    if after >= SEQ_LIMIT:
        raise ValueError("after must be a seq")
    return after


def _refuse(
    service: ChatService, error: HttpCode, message: str | None = None
) -> tuple[Response, int]:
    """HTTP 403 instead of the upgrade (the ASGI websocket.http.response extension), whatever
    the code's own status: docs/protocol.md, "Opening the socket"."""
    service.stats.rejected["handshake_" + error.code] += 1
    return jsonify(error.body(message)), 403


async def _accept_and_close(service: ChatService, close: Close) -> None:
    await websocket.accept()
    await _close(service, close.code, close.reason)


def _transmitter(socket: Websocket) -> Callable[[str], Awaitable[None]]:
    """How frames are written once the socket is accepted: the ASGI send Quart wraps.

    Quart's ``Websocket.send`` runs ``await asyncio.sleep(0)`` and ``accept()`` (which builds a
    ``Headers``) before *every* frame. For a socket already accepted that is pure overhead, and
    a large share of the server's CPU in a sync replay (measured in docs/performance.md,
    "Proposed optimisations"). ``ChatSession`` yields to the loop itself
    every few frames.
    ``_send`` is Quart's own (private) attribute; without it, ``send`` is used as before.
    """
    send = getattr(socket, "_send", None)
    if not callable(send):
        log.warning("quart.Websocket has no _send: frames go through Websocket.send")
        return socket.send
    return send  # type: ignore[no-any-return]


async def _still_live(session: Session) -> Session | None:
    """The session as stored now, if it is still live (its idle clock as written)."""
    fresh = await state().store.sessions.session_by_id(session.id)
    return fresh if fresh is not None and is_live(fresh, state().clock.now_ms()) else None


async def _serve(
    service: ChatService, conn: Connection, session: Session, after: int | None
) -> None:
    service.stats.connections_opened += 1
    socket: Websocket = websocket._get_current_object()  # type: ignore[attr-defined]
    chat = ChatSession(
        conn=conn,
        user=Principal(session.user_id, session.username),
        delivery=service.delivery,
        broker=service.broker,
        config=service.config,
        transmit=_transmitter(socket),
        groups=state().groups,
    )
    expiry = _Expiry(conn, session, service.config, state().clock)
    code: int = Close.NORMAL.code
    reason = Close.NORMAL.reason
    tasks: list[asyncio.Task[Any]] = []
    service.stalls.add(chat)
    try:
        for peer in await service.presence.online_peers(session.username):
            chat.reply(presence_frame(peer, "online"))
        # The receive task is created first, so it runs first: an initial sync takes the send
        # lock before the send task can forward a live frame (tasks start in creation order).
        tasks = [
            asyncio.create_task(_receive(chat, socket, expiry, after)),
            asyncio.create_task(chat.run_sender()),
            asyncio.create_task(conn.closed.wait()),
        ]
        done, _ = await asyncio.wait(tasks, return_when=asyncio.FIRST_COMPLETED)
        for task in done:
            task.result()  # re-raises what ended a loop
        code, reason = conn.close_code or Close.NORMAL.code, conn.close_reason
    except asyncio.CancelledError:
        raise  # the client went away (Quart cancels the handler) or the server is stopping
    except Exception:
        log.exception("chat connection of %r failed", session.username)
        code, reason = Close.INTERNAL_ERROR.code, Close.INTERNAL_ERROR.reason
    finally:
        service.stalls.discard(chat)
        expiry.cancel()
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
    # Leave the hub before the closing handshake: a peer that does not read may stall it.
    service.release_socket(conn)
    service.hub.disconnect(conn)
    await _close(service, code, reason)


async def _receive(
    chat: ChatSession, socket: Websocket, expiry: _Expiry, after: int | None
) -> None:
    if after is not None:
        await chat.sync(after)
    while True:
        data = await socket.receive()
        await expiry.activity()
        await chat.receive(data)


async def _close(service: ChatService, code: int, reason: str) -> None:
    """Send Close, then read and discard until the client's Close (RFC 6455 section 7.1.1).

    Closing TCP at once would make the kernel reset a connection with unread data from the
    client, and the client could lose the close frame, and with it the code. When the client's
    Close arrives, Quart cancels this handler; a peer that never sends one gets the timeout.
    """
    service.stats.closes[code] += 1
    with contextlib.suppress(Exception):
        async with asyncio.timeout(service.config.ws_close_timeout):
            await websocket.close(code, reason)
            while True:
                await websocket.receive()


class _Expiry:
    """Closes the socket (1008) when its session expires; activity keeps the idle clock fresh.

    The timer is the app's clock's, set for the session's deadline: on the wall clock it is the
    event loop's timer, and a test that moves its own clock past the deadline fires it.
    """

    def __init__(self, conn: Connection, session: Session, config: Config, clock: Clock) -> None:
        self._conn = conn
        self._session = session
        self._clock = clock
        self._idle_ms = config.session_idle_timeout * 1000
        self._touched = session.last_seen_at
        self._timer: Timer | None = None
        self._schedule()

    def _schedule(self) -> None:
        if self._timer is not None:
            self._timer.cancel()
        deadline = min(self._session.expires_at, self._touched + self._idle_ms)
        self._timer = self._clock.call_at(deadline, self._expire)

    def _expire(self) -> None:
        self._conn.close(Close.SESSION_EXPIRED.code, Close.SESSION_EXPIRED.reason)

    async def activity(self) -> None:
        """A frame arrived: record it on the session at most once per TOUCH_INTERVAL_MS."""
        now = self._clock.now_ms()
        if now - self._touched > TOUCH_INTERVAL_MS:
            self._touched = now
            await state().store.sessions.touch(self._session.id, now)
            self._schedule()

    def cancel(self) -> None:
        if self._timer is not None:
            self._timer.cancel()


__all__ = ["blueprint", "chat_service"]
