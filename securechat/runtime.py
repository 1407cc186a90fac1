"""The running process's shared machinery: the clock, ending background tasks, and duration
histograms (the commit times and the collector's pauses in /metrics)."""

from __future__ import annotations

import asyncio
import bisect
import contextlib
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, Final, Protocol


class Timer(Protocol):
    """A call set for later that can be called off (``asyncio.TimerHandle`` is one)."""

    def cancel(self) -> None: ...


class Clock(Protocol):
    """The time of day as the app reads it, timers set by it, and a clock for intervals.

    The server runs on :data:`WALL_CLOCK`. A test gives ``create_app`` a clock of its own and
    moves it forward, so that session expiry and throttles are checked without waiting.
    """

    def now_ms(self) -> int:
        """Milliseconds since the epoch (message ``ts``, session times, log entries)."""
        ...

    def monotonic(self) -> float:
        """Seconds from any origin on a clock that never goes back (the login throttles)."""
        ...

    def call_at(self, when_ms: int, callback: Callable[[], object]) -> Timer:
        """Call ``callback`` in the running event loop once :meth:`now_ms` reaches ``when_ms``."""
        ...


class WallClock:
    """The system's wall clock; its timers are the running event loop's."""

    def now_ms(self) -> int:
        return time.time_ns() // 1_000_000

    def monotonic(self) -> float:
        return time.monotonic()

    def call_at(self, when_ms: int, callback: Callable[[], object]) -> Timer:
        delay = max(0.0, (when_ms - self.now_ms()) / 1000)
        return asyncio.get_running_loop().call_later(delay, callback)


WALL_CLOCK: Final[Clock] = WallClock()


async def cancel_and_wait(task: asyncio.Task[Any] | None) -> None:
    """Cancel ``task`` (if there is one) and return once it has finished."""
    if task is None:
        return
    task.cancel()
    with contextlib.suppress(asyncio.CancelledError):
        await task


# Upper bounds (seconds) of the buckets, 0.5 ms to 2.5 s; the last is +Inf.
BUCKETS: Final = (
    0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, float("inf")
)  # fmt: skip


@dataclass
class Timings:
    """How many durations fell in each bucket of :data:`BUCKETS`, their sum and the longest."""

    counts: list[int] = field(default_factory=lambda: [0] * len(BUCKETS))
    total: float = 0.0
    longest: float = 0.0

    def observe(self, seconds: float) -> None:
        self.counts[bisect.bisect_left(BUCKETS, seconds)] += 1
        self.total += seconds
        self.longest = max(self.longest, seconds)

    def cumulative(self) -> list[tuple[str, float]]:
        """Prometheus histogram buckets: (``le`` label, count at or below it)."""
        buckets, running = [], 0
        for bound, count in zip(BUCKETS, self.counts, strict=True):
            running += count
            buckets.append(("+Inf" if bound == float("inf") else repr(bound), float(running)))
        return buckets


__all__ = ["BUCKETS", "WALL_CLOCK", "Clock", "Timer", "Timings", "WallClock", "cancel_and_wait"]
