"""The chat's parts that exist only on a cluster's node: the Redis broker, the node's lease
and presence directory, and the resync that makes up for what pub/sub loses.

Imported only when ``SECURECHAT_REDIS_URL`` is set (chat/service.py), so a single process never
loads redis-py.
"""

from __future__ import annotations

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
from securechat.store import MessageStore


@dataclass
class ChatCluster:
    """A node's broker, lease and resync, started and stopped together."""

    link: RedisLink
    broker: RedisBroker
    nodes: NodeLeases
    resync: Resync
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
    ) -> ChatCluster:
        """Wire the three over ``link``; presence hooks ``nodes.on_reaped`` up afterwards."""
        resync = Resync(
            store, sessions, config.broker_resync_interval, config.broker_resync_users_max
        )
        nodes = NodeLeases(
            link,
            node_id,
            config.node_lease,
            lambda: {user: hub.connections_of(user) for user in hub.online_users()},
        )

        def reconnected() -> None:
            nodes.mark_stale()  # Redis may have restarted empty
            resync.all()

        broker = RedisBroker(
            hub,
            link,
            node_id,
            outbox_max=config.broker_outbox_max,
            on_reconnect=reconnected,
            on_subscribed=resync.user,
        )
        return cls(link, broker, nodes, resync, config.broker_canary_timeout)

    def start(self) -> None:
        """Subscribe, take the lease, start checking sockets."""
        self.broker.start()
        self.nodes.start()
        self.resync.start()

    async def stop(self) -> None:
        """Stop all three; the lease is given up, so this node's users go offline."""
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
        }


__all__ = ["ChatCluster"]
