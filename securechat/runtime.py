"""The running process's shared machinery: the wall clock, ending background tasks, and
duration histograms (the commit times and the collector's pauses in /metrics)."""

from __future__ import annotations

import asyncio
import bisect
import contextlib
import time
from dataclasses import dataclass, field
from typing import Any, Final


def now_ms() -> int:
    """Wall-clock milliseconds since the epoch (message ``ts``, session times, log entries)."""
    return time.time_ns() // 1_000_000


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


__all__ = ["BUCKETS", "Timings", "cancel_and_wait", "now_ms"]
