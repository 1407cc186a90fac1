"""The chat's parts that exist only on a cluster's node: the Redis broker, the node's lease
and presence directory, the resync that makes up for what pub/sub loses, and the session check
that makes up for the control orders it lost.

Imported only when ``SECURECHAT_REDIS_URL`` is set (chat/service.py), so a single process never
loads redis-py.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import Any

from securechat.chat.hub import Hub
from securechat.chat.redisbroker import RedisBroker
from securechat.chat.resync import Resync
from securechat.chat.session import ChatSession
from securechat.cluster.nodes import NodeLeases
from securechat.cluster.redis import RedisDown, RedisLink
from securechat.config import Config
from securechat.errors import Close
from securechat.runtime import cancel_and_wait
from securechat.store import MessageStore, SessionStore

log = logging.getLogger(__name__)


class SessionCheck:
    """Closes this node's sockets whose session was revoked or is gone from the database.

    A logout or revocation on another node reaches this one as a control order on Redis
    pub/sub. The sender keeps an order Redis did not take and sends it again, but one published
    while this node's subscription was down never arrives, and the session's sockets here would
    stay open until their own expiry. So every ``interval`` seconds, and at once when the
    subscription comes back, the sessions holding a local socket are read from the database,
    ``batch`` ids per query, and those revoked or gone are closed (1008, ``session ended``), as
    the order would have done: a lost order closes its sockets within ``interval`` seconds.
    """

    def __init__(self, hub: Hub, sessions: SessionStore, interval: float, batch: int) -> None:
        self.hub = hub
        self.sessions = sessions
        self.interval = interval
        self.batch = max(1, batch)
        self.checks = 0  # queries made, for /admin/health
        self.closed = 0  # sockets closed by a check
        self._wakeup = asyncio.Event()
        self._task: asyncio.Task[None] | None = None

    def request(self) -> None:
        """Check soon (again after the running check, if one runs)."""
        self._wakeup.set()

    async def check(self) -> int:
        """Close the local sockets of sessions revoked or gone; how many were closed."""
        ids = sorted(self.hub.session_ids())
        closed = 0
        code, reason = Close.SESSION_ENDED.code, Close.SESSION_ENDED.reason
        for start in range(0, len(ids), self.batch):
            chunk = ids[start : start + self.batch]
            live = await self.sessions.unrevoked_sessions(chunk)
            self.checks += 1
            for session_id in chunk:
                if session_id not in live:
                    closed += self.hub.close_session(session_id, code, reason)
        self.closed += closed
        return closed

    def start(self) -> None:
        """Start checking every ``interval`` seconds (and when asked)."""
        if self._task is None:
            self._task = asyncio.create_task(self._run(), name="chat-session-check")

    async def stop(self) -> None:
        """Stop checking."""
        await cancel_and_wait(self._task)
        self._task = None

    async def _run(self) -> None:
        while True:
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(self.interval):
                    await self._wakeup.wait()
            self._wakeup.clear()
            try:
                await self.check()
            except Exception:  # the database may be down too; the next round checks again
                log.exception("checking the local sockets' sessions failed")


@dataclass
class ChatCluster:
    """A node's broker, lease, resync and session check, started and stopped together."""

    link: RedisLink
    broker: RedisBroker
    nodes: NodeLeases
    resync: Resync
    session_check: SessionCheck
    canary_timeout: float
    # Gets the users a dead node held (presence announces them offline; chat/service.py).
    on_reaped: Callable[[Iterable[str]], None] = lambda users: None

    def reaped(self, users: Iterable[str]) -> None:
        """A dead node's lease was reaped: its users may have moved here with frames it never
        published, so every local socket is checked against the database; then presence."""
        self.resync.all()
        self.on_reaped(users)

    @classmethod
    def create(
        cls,
        config: Config,
        hub: Hub,
        link: RedisLink,
        node_id: str,
        store: MessageStore,
        sessions: Iterable[ChatSession],
        session_store: SessionStore,
    ) -> ChatCluster:
        """Wire the four over ``link``; presence hooks ``on_reaped`` up afterwards."""
        resync = Resync(
            store, sessions, config.broker_resync_interval, config.broker_resync_users_max
        )
        nodes = NodeLeases(
            link,
            node_id,
            config.node_lease,
            lambda: {user: hub.connections_of(user) for user in hub.online_users()},
        )

        session_check = SessionCheck(
            hub, session_store, config.session_check_interval, config.session_check_batch
        )

        def reconnected() -> None:
            nodes.mark_stale()  # Redis may have restarted empty
            resync.all()
            session_check.request()  # control orders sent meanwhile were lost

        broker = RedisBroker(
            hub,
            link,
            node_id,
            config,
            on_reconnect=reconnected,
            on_subscribed=resync.user,
            on_resync=resync.ordered,
        )
        cluster = cls(link, broker, nodes, resync, session_check, config.broker_canary_timeout)
        nodes.on_reaped = cluster.reaped
        return cluster

    def start(self) -> None:
        """Subscribe, take the lease, start checking sockets."""
        self.broker.start()
        self.nodes.start()
        self.resync.start()
        self.session_check.start()

    async def stop(self) -> None:
        """Stop them all; the lease is given up, so this node's users go offline."""
        await self.session_check.stop()
        await self.resync.stop()
        await self.broker.stop()
        await self.nodes.stop()

    async def health(self) -> dict[str, Any]:
        """The broker's part of /admin/health: ``status`` is ``error`` when a message this node
        publishes does not come back through Redis within ``broker_canary_timeout``."""
        began = time.perf_counter()
        canary = await self.broker.canary(self.canary_timeout)
        try:
            nodes: list[str] | None = await self.nodes.live_nodes()
        except RedisDown:
            nodes = None
        resync = self.resync.stats
        return {
            "kind": "redis",
            "status": "ok" if canary is not None and self.broker.connected else "error",
            "connected": self.broker.connected,
            "canary_ms": None if canary is None else round(canary * 1000, 3),
            "health_ms": round((time.perf_counter() - began) * 1000, 3),
            "nodes_alive": None if nodes is None else len(nodes),
            "subscribed_users": len(self.broker.subscribed_users()),
            "published": self.broker.published,
            "received": self.broker.received,
            "dropped": self.broker.dropped,
            "outbox": self.broker.outbox(),
            "orders_waiting": self.broker.orders_waiting(),
            "orders_resent": self.broker.orders_resent,
            "resync_orders": self.broker.resync_orders,
            "reconnects": self.broker.reconnects,
            "nodes_reaped": self.nodes.reaped,
            "resync_checks": resync.checks,
            "resync_catch_ups": resync.catch_ups,
            "session_checks": self.session_check.checks,
            "session_check_closes": self.session_check.closed,
        }


__all__ = ["ChatCluster"]
