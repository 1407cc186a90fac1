"""Catching sockets up from the database when a broker may have lost a frame.

Redis pub/sub delivers at most once: a frame published while a node's subscription was down,
or lost on the way, never comes. The database stays the truth, so a socket that is behind it
catches up from there (``ChatSession.catch_up``: the positions above its ``last_pos``, as live
frames). Which sockets may be behind is found by comparing each one's ``last_pos`` with the
highest position the database holds for its user (``MessageStore.head``):

- every local user, when the node's pub/sub connection came back after a loss (``all``);
- a user whose channel has just been subscribed (``user``): frames published between the
  socket's first sync and the subscription went nowhere;
- the users another node could not publish to (``ordered``: its resync order, sent when
  Redis answers it again; chat/redisbroker.py), and every local user after a dead node's
  lease was reaped (frames it committed but never published);
- every ``interval`` seconds, the next ``users_max`` local users in turn (round robin), for
  a frame lost with no loss of connection seen.

The cost is bounded: one query at a time, at most ``users_max`` users per round and rounds
at least ``interval / 20`` apart, so a reconnect of a node with 20,000 users spreads its
checks over about 20 seconds (defaults) instead of one burst. A socket behind its head gets a
catch-up order on its own queue (``request_catch_up``), run by its send task: a slow socket
never holds up this worker. Its own sends move ``last_pos`` with their acks when nothing lies
between (``ChatSession.forward``); when something did, the socket is replayed its own messages
once with it, and the client de-duplicates them by id (docs/protocol.md, "Order and the
cursor").
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Collection, Iterable
from dataclasses import dataclass

from securechat.chat.session import ChatSession
from securechat.runtime import cancel_and_wait
from securechat.store import MessageStore

log = logging.getLogger(__name__)


@dataclass
class ResyncStats:
    """What the resync has done, for /admin/health."""

    checks: int = 0
    catch_ups: int = 0
    all_requests: int = 0


class Resync:
    """Finds the local sockets behind the database and has them catch up."""

    def __init__(
        self,
        store: MessageStore,
        sessions: Iterable[ChatSession],
        interval: float,
        users_max: int,
    ) -> None:
        self.store = store
        self._sessions = sessions
        self.interval = interval
        self.users_max = users_max
        self.stats = ResyncStats()
        self._dirty: dict[str, None] = {}  # users to check soon, in the order they came
        self._turn = 0  # where the round robin goes on
        self._checking = False
        self._wakeup = asyncio.Event()
        self._task: asyncio.Task[None] | None = None

    def all(self) -> None:
        """Check every local socket soon (the pub/sub connection was lost and came back)."""
        self.stats.all_requests += 1
        for session in self._sessions:
            self._dirty[session.user.name] = None
        self._wakeup.set()

    def user(self, name: str) -> None:
        """Check that user's local sockets soon."""
        self._dirty[name] = None
        self._wakeup.set()

    def ordered(self, names: Collection[str] | None) -> None:
        """Another node could not publish to these users (None: to anyone, it lost count):
        check those of them with a socket here soon."""
        if names is None:
            self.all()
            return
        wanted = set(names)
        for session in self._sessions:
            if session.user.name in wanted:
                self.user(session.user.name)

    @property
    def idle(self) -> bool:
        """Whether no user waits for a check and none is under way."""
        return not self._dirty and not self._checking

    async def check(self, names: Iterable[str]) -> int:
        """Compare these users' local sockets with the database; how many were told to
        catch up."""
        wanted = set(names)
        by_user: dict[str, list[ChatSession]] = {}
        for session in self._sessions:
            if session.user.name in wanted and session.in_order:
                by_user.setdefault(session.user.name, []).append(session)
        told = 0
        for sessions in by_user.values():
            head = await self.store.head(sessions[0].user.user_id)
            self.stats.checks += 1
            for session in sessions:
                if session.last_pos < head and session.request_catch_up():
                    told += 1
        self.stats.catch_ups += told
        return told

    def start(self) -> None:
        """Start the worker."""
        if self._task is None:
            self._task = asyncio.create_task(self._run(), name="chat-resync")

    async def stop(self) -> None:
        """Stop the worker."""
        await cancel_and_wait(self._task)
        self._task = None

    async def _run(self) -> None:
        loop = asyncio.get_running_loop()
        next_sweep = loop.time() + self.interval
        while True:
            if not self._dirty:
                try:
                    async with asyncio.timeout_at(next_sweep):
                        await self._wakeup.wait()
                except TimeoutError:
                    pass
            self._wakeup.clear()
            if loop.time() >= next_sweep:
                for name in self._next_in_turn():
                    self._dirty.setdefault(name)
                next_sweep = loop.time() + self.interval
            batch = list(self._dirty)[: self.users_max]
            for name in batch:
                del self._dirty[name]
            self._checking = True
            try:
                await self.check(batch)
            except Exception:  # the database may be down: the next round tries again
                log.exception("checking %d users' sockets against the database failed", len(batch))
            finally:
                self._checking = False
            await asyncio.sleep(self.interval / 20)

    def _next_in_turn(self) -> list[str]:
        """The next ``users_max`` local users, going round them all over the intervals."""
        users = sorted({session.user.name for session in self._sessions})
        if len(users) <= self.users_max:
            return users
        start = self._turn % len(users)
        self._turn = start + self.users_max
        return (users + users)[start : start + self.users_max]


__all__ = ["Resync", "ResyncStats"]
