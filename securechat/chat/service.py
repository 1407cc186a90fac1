"""The chat's long-lived parts, built once per app: the hub, its broker, delivery and presence."""

from __future__ import annotations

import os
import secrets
import socket
from collections.abc import AsyncGenerator
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Protocol

from quart import Quart

from securechat.chat import wsguard
from securechat.chat.contacts import Contacts
from securechat.chat.delivery import ChatStats, Delivery, SharedRate
from securechat.chat.hub import Broker, Connection, Hub, LocalBroker
from securechat.chat.presence import Presence
from securechat.chat.session import StallSweep
from securechat.config import Config
from securechat.errors import Close
from securechat.runtime import Clock
from securechat.store import Store

if TYPE_CHECKING:
    from securechat.chat.cluster import ChatCluster
    from securechat.cluster.redis import RedisLink


def new_node_id() -> str:
    """A name for this process, unique in a cluster: host, pid and a random suffix."""
    return f"{socket.gethostname()}-{os.getpid()}-{secrets.token_hex(3)}"


class SharedSocketCap(Protocol):
    """``ws_connections_per_user`` counted over every node (cluster/limits.SharedSockets)."""

    async def claim(self, user: str, conn_id: int) -> bool | None:
        """Count this socket if ``user`` is under the cap on all nodes together: False at the
        cap, None when the count cannot be reached."""
        ...

    def release(self, user: str, conn_id: int) -> None:
        """Stop counting this socket (idempotent, never waits)."""
        ...


@dataclass
class ChatService:
    """What the ``/ws`` endpoint, the conversations API and the operator endpoints reach."""

    config: Config
    hub: Hub
    broker: Broker  # LocalBroker in one process, the cluster's RedisBroker with redis_url
    delivery: Delivery
    presence: Presence
    stats: ChatStats
    stalls: StallSweep  # closes the sockets whose write waited ws_send_timeout
    open_sockets: int = 0
    # In a cluster, the per-user cap over every node; the hub's own cap holds either way.
    shared_sockets: SharedSocketCap | None = None
    # This process's name in the cluster (health, the broker's envelopes, the lease).
    node_id: str = field(default_factory=new_node_id)
    # A cluster's node: the Redis broker, the lease, the resync; None in one process.
    cluster: ChatCluster | None = None
    # Who may message whom, the requests and blocks, the search limit (chat/contacts.py).
    contacts: Contacts = field(init=False)

    @classmethod
    def create(
        cls,
        config: Config,
        store: Store,
        clock: Clock,
        *,
        shared_rate: SharedRate | None = None,
        shared_sockets: SharedSocketCap | None = None,
        redis: RedisLink | None = None,
        node_id: str | None = None,
    ) -> ChatService:
        """The chat of one process over ``store`` (not yet open: it opens while serving),
        with the send rate and socket cap counted over the cluster when they are given, and
        frames relayed through Redis when ``redis`` is (else the LocalBroker). ``node_id`` is
        the process's name, the one its shared limits count sockets under (app.py makes it
        once); a fresh one when not given."""
        hub = Hub(config.ws_connections_per_user, config.ws_queue_frames)
        stats = ChatStats()
        stalls = StallSweep(config.ws_send_timeout)
        node_id = node_id or new_node_id()
        cluster = None
        broker: Broker = LocalBroker(hub)
        if redis is not None:
            # Imported here: only a cluster's nodes load redis-py (make run never does).
            from securechat.chat.cluster import ChatCluster

            cluster = ChatCluster.create(
                config, hub, redis, node_id, store.messages, stalls, store.sessions
            )
            broker = cluster.broker
        presence = Presence(
            store.messages,
            broker,
            hub,
            config.presence_peers_max,
            stats,
            directory=None if cluster is None else cluster.nodes,
        )
        if cluster is not None:
            cluster.on_reaped = presence.gone  # a dead node's users: announced offline
        service = cls(
            config=config,
            hub=hub,
            broker=broker,
            delivery=Delivery(
                store.messages, broker, config, stats, clock, shared_rate, store.contacts
            ),
            presence=presence,
            stats=stats,
            stalls=stalls,
            shared_sockets=shared_sockets,
            node_id=node_id,
            cluster=cluster,
        )
        service.contacts = Contacts(store.contacts, presence, config, clock)
        return service

    def install(self, app: Quart) -> None:
        """Guard Hypercorn's WebSocket stream and tie the chat's start and stop to the app's."""
        wsguard.install(app, self.config.ws_receive_queue_frames)
        app.while_serving(self._serving)

    async def _serving(self) -> AsyncGenerator[None, None]:
        # while_serving starts after before_serving (the store is open) and ends before
        # after_serving (the store closes), so the last commits still have their database.
        await self.delivery.start()
        self.presence.start()
        self.stalls.start()
        if self.cluster is not None:
            self.cluster.start()
        yield
        self.hub.close_all(Close.SERVER_SHUTDOWN.code, Close.SERVER_SHUTDOWN.reason)
        await self.stalls.stop()
        await self.presence.stop()
        await self.delivery.stop()
        if self.cluster is not None:
            await self.cluster.stop()  # after the last commit's fan-out

    async def claim_socket(self, conn: Connection) -> bool:
        """Whether ``conn``'s user is under ``ws_connections_per_user`` on every node together
        (always true without shared limits, or while they cannot be reached)."""
        if self.shared_sockets is None:
            return True
        return await self.shared_sockets.claim(conn.user, conn.conn_id) is not False

    def release_socket(self, conn: Connection) -> None:
        """Stop counting ``conn`` against its user's cap on every node (idempotent)."""
        if self.shared_sockets is not None:
            self.shared_sockets.release(conn.user, conn.conn_id)

    async def session_ended(self, session_id: str) -> None:
        """The accounts' listener: close that session's sockets at once (logout, revocation),
        on every node of a cluster."""
        if self.cluster is not None:
            await self.cluster.broker.end_session(session_id)
        else:
            self.hub.close_session(session_id, Close.SESSION_ENDED.code, Close.SESSION_ENDED.reason)

    async def close_user(self, user: str, code: int, reason: str) -> None:
        """Close every socket of ``user``, on every node of a cluster (account removal)."""
        if self.cluster is not None:
            await self.cluster.broker.close_user(user, code, reason)
        else:
            self.hub.close_user(user, code, reason)

    async def health(self) -> dict[str, Any]:
        """The /admin/health sections: connection counts and queue depths; the broker, this
        node's id and, in a cluster, the nodes alive and the broker's round trip."""
        hub = self.hub.stats()
        broker: dict[str, Any] = {"kind": "local", "status": "ok"}
        if self.cluster is not None:
            broker = await self.cluster.health()
        return {
            "broker": {**broker, "node": self.node_id},
            "chat": {
                "connections": hub.connections,
                "sockets_open": self.open_sockets,
                "users_online": hub.users_online,
                "queued_frames": hub.queued_frames,
                "slow_reader_closes": hub.slow_reader_closes,
                "commit_pending": self.delivery.pending(),
                "last_seq": self.delivery.last_seq,
            },
        }
