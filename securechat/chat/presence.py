"""Presence: tell the people I have conversations with when I come online or go offline.

The hub reports a user's first connection and last disconnection synchronously; finding that
user's conversation partners needs the database, so the change is queued for one worker task.
The queue keeps only each user's latest state (a user who flaps online/offline/online costs one
announcement, not three), so it is bounded by the number of users, and one worker announces the
changes in the order they happened.
"""

from __future__ import annotations

import asyncio
import logging

from securechat.chat.delivery import ChatStats
from securechat.chat.hub import Broker, Hub
from securechat.chat.protocol import PresenceStatus, presence_frame
from securechat.runtime import cancel_and_wait
from securechat.store import MessageStore

log = logging.getLogger(__name__)


class Presence:
    """Announces presence changes to conversation partners; answers who of mine is online."""

    def __init__(
        self, store: MessageStore, broker: Broker, hub: Hub, peers_max: int, stats: ChatStats
    ) -> None:
        self.store = store
        self.broker = broker
        self.hub = hub
        self.peers_max = peers_max
        self.stats = stats
        self._pending: dict[str, PresenceStatus] = {}
        self._wakeup = asyncio.Event()
        self._task: asyncio.Task[None] | None = None
        hub.add_presence_listener(self.changed)

    def changed(self, user: str, status: PresenceStatus) -> None:
        """The hub's listener: queue the announcement (latest state per user wins)."""
        self._pending.pop(user, None)  # re-inserted last: announced after earlier changes
        self._pending[user] = status
        self._wakeup.set()

    async def online_peers(self, user: str) -> list[str]:
        """The user's conversation partners who are online now, most recent first."""
        peers = await self.store.peer_names(user, self.peers_max)
        return [peer for peer in peers if self.hub.is_online(peer)]

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
        text = presence_frame(user, status)
        for peer in await self.store.peer_names(user, self.peers_max):
            await self.broker.publish(peer, text)
        self.stats.presence_events += 1


__all__ = ["Presence"]
