"""How big each scenario is: the full run of ``make bench``, and the tiny one the tests use."""

from __future__ import annotations

from dataclasses import dataclass, field

from tools.bench.live import rates

LIVE_SERVERS = ("ours-hypercorn", "quart-relay", "websockets-relay", "ours-uvicorn")


@dataclass(frozen=True)
class Plan:
    """Sizes and durations; every loop in the harness is bounded by these."""

    capacity_users: int = 2500
    capacity_per_user: int = 4  # one session open in four tabs: 10,000 sockets
    capacity_settle_seconds: float = 2.0
    live_users: int = 1000
    live_ramp: list[float] = field(default_factory=lambda: rates(1000, 1.4, 40_000))
    live_step_seconds: float = 3.0
    live_refine: int = 2
    live_servers: tuple[str, ...] = LIVE_SERVERS
    drain_pairs: int = 200
    drain_per_pair: int = 200  # 40,000 messages queued
    login_users: int = 4
    login_lanes: int = 8
    login_seconds: float = 10.0
    workers: int = 2

    @property
    def users(self) -> int:
        """Accounts to create: capacity uses the first ones, live and drain disjoint slices."""
        return max(self.capacity_users, self.live_users + 2 * self.drain_pairs)


FULL = Plan()
QUICK = Plan(
    capacity_users=8,
    capacity_per_user=2,
    capacity_settle_seconds=0.2,
    live_users=4,
    live_ramp=[40.0],  # 10 msgs/s per user: well under the per-connection flood limit
    live_step_seconds=0.5,
    live_refine=0,
    drain_pairs=2,
    drain_per_pair=10,
    login_users=1,
    login_lanes=2,
    login_seconds=1.0,
    workers=1,
)
