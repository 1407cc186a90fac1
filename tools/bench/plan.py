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
    live_ramp: list[float] = field(default_factory=lambda: rates(600, 1.4, 40_000))
    live_step_seconds: float = 3.0
    live_refine: int = 2
    live_servers: tuple[str, ...] = LIVE_SERVERS
    # The cluster scenario: its users (made again on each cluster), and its ramp for the
    # clusters, which starts lower than the live one; the references run the live ramp.
    cluster_users: int = 400
    cluster_ramp: list[float] = field(default_factory=lambda: rates(100, 1.4, 40_000))
    drain_recipients: int = 200
    drain_senders_per_recipient: int = 4
    drain_per_sender: int = 50  # 200 messages owed to each recipient: 40,000 queued
    # The group fan-out scenario: one group of this many members, all connected, and its
    # ramp of group messages per second (each delivered to every other member).
    group_members: int = 100
    group_ramp: list[float] = field(default_factory=lambda: rates(20, 1.4, 2_000))
    group_step_seconds: float = 3.0
    login_users: int = 4
    # Every login in flight counts as a failure of its address until it succeeds (accounts.py):
    # past five at once from one address, logins are throttled. Four clients keep the four
    # argon2 slots (argon2_max_concurrent) busy without tripping that.
    login_lanes: int = 4
    login_seconds: float = 10.0
    login_hash_samples: int = 3
    workers: int = 2
    # Seconds the whole run may spend waiting for other people's work on the machine to pause.
    quiet_budget_seconds: float = 60.0

    @property
    def users(self) -> int:
        """Accounts to create: capacity uses the first ones, live and drain disjoint slices."""
        drain = self.drain_recipients * (1 + self.drain_senders_per_recipient)
        return max(self.capacity_users, self.live_users + drain)


FULL = Plan()
QUICK = Plan(
    capacity_users=8,
    capacity_per_user=2,
    capacity_settle_seconds=0.2,
    live_users=4,
    live_ramp=[40.0],  # 10 msgs/s per user: well under the per-connection flood limit
    live_step_seconds=0.5,
    live_refine=0,
    cluster_users=4,
    cluster_ramp=[40.0],
    drain_recipients=2,
    drain_senders_per_recipient=2,
    drain_per_sender=5,
    group_members=6,
    group_ramp=[5.0],
    group_step_seconds=0.5,
    login_users=1,
    login_lanes=2,
    login_seconds=1.0,
    login_hash_samples=1,
    workers=1,
    quiet_budget_seconds=0.0,
)
