"""A clock the test moves by hand, for session expiry and other timed behaviour."""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Callable

from securechat.runtime import WALL_CLOCK


class ManualTimer:
    """A call set on a :class:`ManualClock`, run in the event loop that set it."""

    def __init__(
        self, when_ms: int, loop: asyncio.AbstractEventLoop, callback: Callable[[], object]
    ) -> None:
        self.when_ms = when_ms
        self.cancelled = False
        self._loop = loop
        self._callback = callback

    def cancel(self) -> None:
        self.cancelled = True

    def fire(self) -> None:
        """Run the callback soon in its loop (thread-safe), unless cancelled by then."""
        if not self._loop.is_closed():
            self._loop.call_soon_threadsafe(self._run)

    def _run(self) -> None:
        if not self.cancelled:
            self._callback()


class ManualClock:
    """Starts at the wall clock's time and moves only on :meth:`advance`.

    A live server reads it and sets timers on it from its own thread while the test advances
    it from another, so the timers are kept under a lock and fired in their own loops.
    """

    def __init__(self, now_ms: int | None = None) -> None:
        self._now = WALL_CLOCK.now_ms() if now_ms is None else now_ms
        self._lock = threading.Lock()
        self._timers: list[ManualTimer] = []

    def now_ms(self) -> int:
        return self._now

    def monotonic(self) -> float:
        return self._now / 1000

    def call_at(self, when_ms: int, callback: Callable[[], object]) -> ManualTimer:
        timer = ManualTimer(when_ms, asyncio.get_running_loop(), callback)
        with self._lock:
            self._timers.append(timer)
        self._fire_due()
        return timer

    def advance(self, seconds: float) -> None:
        """Move the time on by ``seconds`` and fire every timer now due."""
        with self._lock:
            self._now += round(seconds * 1000)
        self._fire_due()

    def _fire_due(self) -> None:
        with self._lock:
            due = [t for t in self._timers if t.when_ms <= self._now and not t.cancelled]
            self._timers = [t for t in self._timers if t.when_ms > self._now and not t.cancelled]
        for timer in due:
            timer.fire()
