"""Presence: tell the people I have conversations with when I come online or go offline.

Only those who share presence with me: each of us accepted the other (wrote to them or
accepted their request; ``MessageStore.peer_names`` reads that from the database, so a block
or an acceptance holds on every node at once: chat/contacts.py).

The hub reports a user's first connection and last disconnection synchronously; finding that
user's conversation partners needs the database, so the change is queued for one worker task.
The queue keeps only each user's latest state (a user who flaps online/offline/online costs one
announcement, not three), so it is bounded by the number of users, and one worker announces the
changes in the order they happened.

In a cluster a user may have sockets on several nodes, so a :class:`PresenceDirectory` (Redis:
cluster/nodes.py) is the truth. The worker writes this node's count for the user there first,
then announces what the directory says (online if any live node holds the user), so a tab
closed on one node while another stays open announces nothing false. While the directory does
not answer, this node's own hub decides, as on a single node.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Iterable, Sequence
from typing import Protocol

from securechat.chat.delivery import ChatStats
from securechat.chat.hub import Broker, Hub
from securechat.chat.protocol import PresenceStatus, presence_frame
from securechat.runtime import cancel_and_wait
from securechat.store import MessageStore

log = logging.getLogger(__name__)


class PresenceDirectory(Protocol):
    """Who is online on any node (cluster/nodes.NodeLeases). Neither call raises when the
    directory is unreachable: ``record`` is then skipped, ``online`` answers None."""

    async def record(self, user: str, sockets: int) -> None:
        """Write how many sockets ``user`` holds on this node (0: none)."""

    async def online(self, users: Sequence[str]) -> set[str] | None:
        """Which of ``users`` some live node holds; None if that cannot be known now."""


class Presence:
    """Announces presence changes to conversation partners; answers who of mine is online."""

    def __init__(
        self,
        store: MessageStore,
        broker: Broker,
        hub: Hub,
        peers_max: int,
        stats: ChatStats,
        directory: PresenceDirectory | None = None,
    ) -> None:
        self.store = store
        self.broker = broker
        self.hub = hub
        self.peers_max = peers_max
        self.stats = stats
        self.directory = directory
        self._pending: dict[str, PresenceStatus] = {}
        self._wakeup = asyncio.Event()
        self._task: asyncio.Task[None] | None = None
        hub.add_presence_listener(self.changed)

    def changed(self, user: str, status: PresenceStatus) -> None:
        """The hub's listener: queue the announcement (latest state per user wins)."""
        self._pending.pop(user, None)  # re-inserted last: announced after earlier changes
        self._pending[user] = status
        self._wakeup.set()

    def gone(self, users: Iterable[str]) -> None:
        """Users of a node that died (its lease ran out): announce them as they are now."""
        for user in users:
            self.changed(user, "offline")

    async def online_peers(self, user: str) -> list[str]:
        """The user's conversation partners who are online now, most recent first."""
        peers = await self.store.peer_names(user, self.peers_max)
        online = await self._online(peers)
        return [peer for peer in peers if peer in online]

    async def _online(self, users: Sequence[str]) -> set[str]:
        found = None if self.directory is None else await self.directory.online(users)
        if found is None:  # a single node, or Redis down: this node's own view
            found = {user for user in users if self.hub.is_online(user)}
        return found

    async def introduce(self, user: str, peer: str) -> None:
        """The two now share presence (each accepted the other: chat/contacts.py): tell each
        whether the other is online, on whichever node their sockets are."""
        online = await self._online([user, peer])
        for me, other in ((user, peer), (peer, user)):
            await self.broker.publish(me, presence_frame(other, _status(other in online)))

    async def part(self, user: str, peer: str) -> None:
        """The two no longer share presence (a block): each sees the other offline from now
        on, as after a real departure, so the block itself is not announced."""
        await self.broker.publish(user, presence_frame(peer, "offline"))
        await self.broker.publish(peer, presence_frame(user, "offline"))

    def start(self) -> None:
        """Start the worker (once: a second call leaves the running one alone)."""
        if self._task is None:
            self._task = asyncio.create_task(self._run(), name="chat-presence")

    async def stop(self) -> None:
        """Stop the worker; announcements still queued are dropped (everyone is leaving)."""
        await cancel_and_wait(self._task)
        self._task = None

    async def _run(self) -> None:
        while True:
            await self._wakeup.wait()
            self._wakeup.clear()
            while self._pending:
                user = next(iter(self._pending))
                status = self._pending.pop(user)
                try:
                    await self._announce(user, status)
                except Exception:
                    log.exception("presence announcement for %r failed", user)

    async def _announce(self, user: str, status: PresenceStatus) -> None:
        if self.directory is not None:
            await self.directory.record(user, self.hub.connections_of(user))
            status = "online" if await self._online([user]) else "offline"
        text = presence_frame(user, status)
        for peer in await self.store.peer_names(user, self.peers_max):
            await self.broker.publish(peer, text)
        self.stats.presence_events += 1


def _status(online: bool) -> PresenceStatus:
    return "online" if online else "offline"


__all__ = ["Presence", "PresenceDirectory"]
