"""The chat's parts that exist only on a cluster's node: the Redis broker, the node's lease
and presence directory, the resync that makes up for what pub/sub loses, and the session check
that makes up for the control orders it lost.

Imported only when ``SECURECHAT_REDIS_URL`` is set (chat/service.py), so a single process never
loads redis-py.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Iterable
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
    """Closes this node's sockets whose session ended while Redis was down.

    A logout or revocation on another node reaches this one as a control order on Redis
    pub/sub, which is not re-sent: one published while this node's subscription was down is
    lost, and the session's sockets here would stay open until their own expiry. So when the
    subscription comes back, every session holding a local socket is read from the database
    (one query at a time, one per session) and those revoked or gone are closed (1008,
    ``session ended``), as the order would have done.
    """

    def __init__(self, hub: Hub, sessions: SessionStore) -> None:
        self.hub = hub
        self.sessions = sessions
        self.closed = 0  # sockets closed by a check, for /admin/health
        self._again = False
        self._task: asyncio.Task[None] | None = None

    def request(self) -> None:
        """Check soon (again after the running check, if one runs)."""
        if self._task is not None and not self._task.done():
            self._again = True
            return
        self._task = asyncio.create_task(self._run(), name="chat-session-check")

    async def check(self) -> int:
        """Close the local sockets of sessions revoked or gone; how many were closed."""
        closed = 0
        for session_id in sorted(self.hub.session_ids()):
            session = await self.sessions.session_by_id(session_id)
            if session is None or session.revoked_at is not None:
                code, reason = Close.SESSION_ENDED.code, Close.SESSION_ENDED.reason
                closed += self.hub.close_session(session_id, code, reason)
        self.closed += closed
        return closed

    async def stop(self) -> None:
        """Stop a check under way."""
        await cancel_and_wait(self._task)
        self._task = None

    async def _run(self) -> None:
        self._again = True
        while self._again:
            self._again = False
            try:
                await self.check()
            except Exception:  # the database may be down too; the next reconnect checks again
                log.exception("checking the local sockets' sessions failed")


@dataclass
class ChatCluster:
    """A node's broker, lease and resync, started and stopped together."""

    link: RedisLink
    broker: RedisBroker
    nodes: NodeLeases
    resync: Resync
    session_check: SessionCheck
    canary_timeout: float

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
        """Wire the four over ``link``; presence hooks ``nodes.on_reaped`` up afterwards."""
        resync = Resync(
            store, sessions, config.broker_resync_interval, config.broker_resync_users_max
        )
        nodes = NodeLeases(
            link,
            node_id,
            config.node_lease,
            lambda: {user: hub.connections_of(user) for user in hub.online_users()},
        )

        session_check = SessionCheck(hub, session_store)

        def reconnected() -> None:
            nodes.mark_stale()  # Redis may have restarted empty
            resync.all()
            session_check.request()  # control orders sent meanwhile were lost

        broker = RedisBroker(
            hub,
            link,
            node_id,
            outbox_max=config.broker_outbox_max,
            on_reconnect=reconnected,
            on_subscribed=resync.user,
        )
        return cls(link, broker, nodes, resync, session_check, config.broker_canary_timeout)

    def start(self) -> None:
        """Subscribe, take the lease, start checking sockets."""
        self.broker.start()
        self.nodes.start()
        self.resync.start()

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
            "reconnects": self.broker.reconnects,
            "nodes_reaped": self.nodes.reaped,
            "resync_checks": resync.checks,
            "resync_catch_ups": resync.catch_ups,
            "session_check_closes": self.session_check.closed,
        }


__all__ = ["ChatCluster"]
