"""Durations counted in fixed buckets: the commit times and the collector's pauses in /metrics."""

from __future__ import annotations

import bisect
from dataclasses import dataclass, field
from typing import Final

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


__all__ = ["BUCKETS", "Timings"]
