"""Presence and fan-out for live WebSocket sessions: pure asyncio, no sockets, no Quart.

Each :class:`Connection` owns a bounded queue of outgoing frame texts. Fan-out puts into those
queues with ``put_nowait`` and never awaits, so one slow client cannot hold up the others; a
client whose queue is full is marked for closing with 1013 and catches up from the store with
``sync`` when it reconnects (websockets ``docs/topics/broadcast.rst``, "per-client queues").

How ``chat.py`` drives a connection::

    conn = hub.connect(user, session_id)          # may raise TooManyConnections
    try:
        # a receive task, a send task (``await conn.queue.get()`` then send) and
        # ``conn.closed.wait()``, under asyncio.wait(..., return_when=FIRST_COMPLETED)
        ...
    finally:
        hub.disconnect(conn)                      # always, exactly once per connect

When ``conn.closed`` is set, the handler closes the socket with ``conn.close_code`` and
``conn.close_reason``. Waiting on the event rather than on a sentinel in the queue matters: the
queue of a slow reader is full, so no sentinel would fit.

The broker seam: handlers publish through a :class:`Broker` rather than calling the hub, so a
multi-process deployment swaps :class:`LocalBroker` for ``chat/redisbroker.RedisBroker``, which
relays through Redis pub/sub (each process subscribes and hands what it receives to its own
``hub.send_to_user``) without any handler changing.
"""

from __future__ import annotations

import asyncio
import itertools
import logging
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import Protocol

from securechat.chat.protocol import PresenceStatus
from securechat.errors import Close

logger = logging.getLogger(__name__)

PresenceListener = Callable[[str, PresenceStatus], None]


class TooManyConnections(Exception):
    """The user already has the maximum number of live connections.

    Never seen as such: the endpoint answers it with ``Close.TOO_MANY_CONNECTIONS``.
    """


class Connection:
    """One live WebSocket session: its identity, its outgoing queue and its fate."""

    __slots__ = (
        "_on_overflow",
        "close_code",
        "close_reason",
        "closed",
        "conn_id",
        "queue",
        "session_id",
        "user",
    )

    def __init__(
        self,
        user: str,
        session_id: str,
        conn_id: int,
        queue_size: int,
        *,
        on_overflow: Callable[[Connection], None] | None = None,
    ) -> None:
        if queue_size < 1:
            raise ValueError("queue_size must be at least 1")  # 0 would mean unbounded
        self.user = user
        self.session_id = session_id
        self.conn_id = conn_id
        self.queue: asyncio.Queue[str] = asyncio.Queue(maxsize=queue_size)
        self.closed = asyncio.Event()
        self.close_code: int | None = None
        self.close_reason = ""
        self._on_overflow = on_overflow

    def __repr__(self) -> str:
        return f"<Connection {self.conn_id} user={self.user!r} closed={self.closed.is_set()}>"

    def deliver(self, text: str) -> bool:
        """Queue ``text`` without waiting; False if closed or full (then close it with 1013)."""
        if self.closed.is_set():
            return False
        try:
            self.queue.put_nowait(text)
        except asyncio.QueueFull:
            self.close(Close.SLOW_READER.code, Close.SLOW_READER.reason)
            if self._on_overflow is not None:
                self._on_overflow(self)
            return False
        return True

    def close(self, code: int, reason: str) -> None:
        """Ask the handler to close the socket; the first reason given wins."""
        if self.closed.is_set():
            return
        self.close_code = code
        self.close_reason = reason
        self.closed.set()


@dataclass(frozen=True, slots=True)
class HubStats:
    """A snapshot for /metrics."""

    connections: int
    users_online: int
    queued_frames: int
    slow_reader_closes: int


class Hub:
    """Who is online, and delivery of frame texts to every connection of a user."""

    def __init__(self, max_connections_per_user: int, queue_size: int) -> None:
        if max_connections_per_user < 1:
            raise ValueError("max_connections_per_user must be at least 1")
        self._max_per_user = max_connections_per_user
        self._queue_size = queue_size
        self._by_user: dict[str, set[Connection]] = {}
        self._by_session: dict[str, set[Connection]] = {}
        self._ids = itertools.count(1)
        self._listeners: list[PresenceListener] = []
        self._slow_reader_closes = 0

    def add_presence_listener(self, listener: PresenceListener) -> None:
        """Call ``listener(user, "online"|"offline")`` on a user's 0->1 and 1->0 connections.

        Listeners run synchronously inside connect/disconnect and must not block; one that needs
        I/O (looking up conversation partners) should start a task.
        """
        self._listeners.append(listener)

    def connect(self, user: str, session_id: str) -> Connection:
        """Register a new connection; raise :class:`TooManyConnections` at the user's limit.

        At the limit the newest connection is refused rather than the oldest evicted: the rule
        is predictable, and opening a tab never kicks out a session that is working. Connections
        already told to close do not count, so a client dropped for slowness can reconnect at
        once.
        """
        conns = self._by_user.get(user)
        live = sum(1 for conn in conns if not conn.closed.is_set()) if conns else 0
        if live >= self._max_per_user:
            raise TooManyConnections()
        conn = Connection(
            user, session_id, next(self._ids), self._queue_size, on_overflow=self._overflowed
        )
        self._by_user.setdefault(user, set()).add(conn)
        self._by_session.setdefault(session_id, set()).add(conn)
        if not conns:
            self._notify(user, "online")
        return conn

    def disconnect(self, conn: Connection) -> None:
        """Forget a connection whose socket is gone; idempotent."""
        conns = self._by_user.get(conn.user)
        if conns is None or conn not in conns:
            return
        conn.close(Close.NORMAL.code, Close.NORMAL.reason)  # later deliveries are refused
        conns.discard(conn)
        _discard(self._by_session, conn.session_id, conn)
        if not conns:
            del self._by_user[conn.user]
            self._notify(conn.user, "offline")

    def send_to_user(self, user: str, text: str, *, except_conn: Connection | None = None) -> int:
        """Queue ``text`` on each of the user's connections but ``except_conn``; return how many."""
        delivered = 0
        for conn in self._by_user.get(user, ()):
            if conn is not except_conn and conn.deliver(text):
                delivered += 1
        return delivered

    def is_online(self, user: str) -> bool:
        """Whether the user has at least one registered connection."""
        return user in self._by_user

    def connections_of(self, user: str) -> int:
        """How many registered connections the user has (presence counts per node)."""
        return len(self._by_user.get(user, ()))

    def online_users(self) -> frozenset[str]:
        """Everyone with at least one registered connection."""
        return frozenset(self._by_user)

    def session_ids(self) -> frozenset[str]:
        """The sessions with at least one registered connection."""
        return frozenset(self._by_session)

    def close_session(self, session_id: str, code: int, reason: str) -> int:
        """Close the sockets of one session (logout, revocation); return how many."""
        return _close_all(self._by_session.get(session_id, ()), code, reason)

    def close_user(self, user: str, code: int, reason: str) -> int:
        """Close every socket of a user (account deleted, all sessions revoked)."""
        return _close_all(self._by_user.get(user, ()), code, reason)

    def close_all(
        self, code: int = Close.SERVER_SHUTDOWN.code, reason: str = Close.SERVER_SHUTDOWN.reason
    ) -> int:
        """Close every socket (server shutdown)."""
        return sum(_close_all(conns, code, reason) for conns in self._by_user.values())

    def stats(self) -> HubStats:
        """Connection, user and queued-frame counts, and closes for slowness so far."""
        conns = [conn for group in self._by_user.values() for conn in group]
        return HubStats(
            connections=len(conns),
            users_online=len(self._by_user),
            queued_frames=sum(conn.queue.qsize() for conn in conns),
            slow_reader_closes=self._slow_reader_closes,
        )

    def _overflowed(self, conn: Connection) -> None:
        self._slow_reader_closes += 1
        logger.info("closing slow reader %r", conn)

    def _notify(self, user: str, status: PresenceStatus) -> None:
        # A failing listener must not leave the registry half-updated or break the handler's
        # cleanup, so its error is logged and the next listener still runs.
        for listener in self._listeners:
            try:
                listener(user, status)
            except Exception:
                logger.exception("presence listener failed for %r (%s)", user, status)


def _discard(index: dict[str, set[Connection]], key: str, conn: Connection) -> None:
    group = index.get(key)
    if group is not None:
        group.discard(conn)
        if not group:
            del index[key]


def _close_all(conns: Iterable[Connection], code: int, reason: str) -> int:
    # Closing only sets events; the handlers' finally blocks disconnect, so iterating is safe.
    count = 0
    for conn in conns:
        if not conn.closed.is_set():
            conn.close(code, reason)
            count += 1
    return count


class Broker(Protocol):
    """Where handlers publish a frame for a user, wherever that user's sockets live."""

    async def publish(self, user: str, text: str, *, except_conn: Connection | None = None) -> None:
        """Deliver ``text`` to every live connection of ``user`` but ``except_conn``.

        ``except_conn`` is always a connection of this process (the one a message came in on,
        which gets an ack instead), so a multi-process broker skips it only locally.
        """


class LocalBroker:
    """The single-process broker: straight into this process's hub."""

    def __init__(self, hub: Hub) -> None:
        self._hub = hub

    async def publish(self, user: str, text: str, *, except_conn: Connection | None = None) -> None:
        """Deliver ``text`` to every live connection of ``user`` in this process."""
        self._hub.send_to_user(user, text, except_conn=except_conn)


__all__ = [
    "Broker",
    "Connection",
    "Hub",
    "HubStats",
    "LocalBroker",
    "PresenceListener",
    "TooManyConnections",
]
