"""The live scenario: N connected users in pairs, exchanging messages at a rising offered rate.

Each step offers a fixed rate for a few seconds (open loop: sends follow the clock, not the
acks), then waits for the stragglers. For each step: the rate actually offered, the messages
delivered per second inside the step's window, and p50/p99 of send-to-arrival latency. The
figure of merit is the highest delivered rate of a step that was *held*: p99 under 50 ms, every
message of the step acknowledged and delivered, no error.
"""

from __future__ import annotations

import array
import time
from collections.abc import Callable
from typing import Any, Protocol

from tools.bench.pool import Pool, split
from tools.bench.procs import QuietWindow, ServerSpec, machine_busy_seconds
from tools.bench.wsclient import Endpoint

P99_LIMIT_MS = 50.0


class Measured(Protocol):
    """What a ramp measures: one server process (procs.Server) or a whole cluster with its
    engines (tools/bench/cluster.py)."""

    @property
    def spec(self) -> ServerSpec: ...

    def cpu_seconds(self) -> float:
        """CPU seconds used so far by everything that serves."""
        ...


def percentile(sorted_values: list[float], fraction: float) -> float:
    """The nearest-rank percentile of already sorted values (nan when empty)."""
    if not sorted_values:
        return float("nan")
    rank = min(len(sorted_values) - 1, max(0, round(fraction * len(sorted_values)) - 1))
    return sorted_values[rank]


def rates(start: float, factor: float, limit: float) -> list[float]:
    """A geometric ramp of offered rates from ``start`` up to ``limit``."""
    result: list[float] = []
    rate = start
    while rate <= limit:
        result.append(round(rate))
        rate *= factor
    return result


class Ramp:
    """One server's ramp, run a step at a time so that several servers' ramps can interleave.

    Rates rise through ``ramp`` until a step misses (each miss is run once more before it
    counts: the machine is shared, and one stall elsewhere should not end the ramp); then
    ``refine`` bisection steps (geometric means) narrow the edge between held and missed.
    """

    def __init__(
        self,
        pool: Pool,
        server: Measured,
        endpoint: Endpoint,
        users: list[tuple[str, str]],
        *,
        ramp: list[float],
        step_seconds: float = 3.0,
        refine: int = 2,
        quiet: QuietWindow | None = None,
    ) -> None:
        self.pool, self.server, self.users = pool, server, users
        self.step_seconds, self.quiet = step_seconds, quiet
        pairs = [[users[i][0], users[i + 1][0]] for i in range(0, len(users) - 1, 2)]
        self.worker_pairs = split(pairs, pool.size)
        self.rates = list(ramp)
        self.refine = refine
        self.steps: list[dict[str, Any]] = []
        self.good: float | None = None
        self.bad: float | None = None
        self.missed_once = False
        pool.target(endpoint)
        cookies = dict(users)
        connected = pool.call(
            "connect",
            [{"users": [(n, cookies[n]) for p in share for n in p]} for share in self.worker_pairs],
        )
        failed = sum(sum(r["failed"].values()) for r in connected)
        if failed:
            raise RuntimeError(f"{server.spec.name}: {failed} sockets refused: {connected}")

    def next_rate(self) -> float | None:
        """The rate of the next step, or None when the ramp is done."""
        if self.bad is None:
            return self.rates[0] if self.rates else None
        if self.good is None or self.refine <= 0:
            return None
        return float(round((self.good * self.bad) ** 0.5))

    def run_next(self) -> dict[str, Any]:
        """Run the next step and move the ramp on."""
        rate = self.next_rate()
        if rate is None:
            raise RuntimeError(f"{self.server.spec.name}: the ramp is done, no step to run")
        measured = step(
            self.pool, self.server, len(self.steps), rate, self.step_seconds,
            self.worker_pairs, self.quiet,
        )  # fmt: skip
        self.steps.append(measured)
        if not measured["held"] and not self.missed_once:
            self.missed_once = True  # the same rate once more
            return measured
        self.missed_once = False
        refining = self.bad is not None
        if measured["held"]:
            self.good = rate
        else:
            self.bad = rate
        if refining:
            self.refine -= 1
        elif measured["held"]:
            self.rates.pop(0)
        return measured

    def finish(self) -> dict[str, Any]:
        """Close the sockets; the summary: the best held step, losses, every step."""
        accounting = _sum(self.pool.call_all("accounting"))
        self.pool.call_all("close_all")
        return _summary(self.server, self.steps, accounting, len(self.users))


def run_live(
    pool: Pool,
    server: Measured,
    endpoint: Endpoint,
    users: list[tuple[str, str]],
    *,
    ramp: list[float],
    step_seconds: float = 3.0,
    refine: int = 2,
    on_measure: Callable[[], object] | None = None,
    quiet: QuietWindow | None = None,
) -> dict[str, Any]:
    """Run one server's whole ramp; return the summary with every step.

    ``on_measure`` is called once everyone is connected, just before the first step (the
    profiler starts there). With ``quiet``, each step waits for a quiet machine first.
    """
    ramper = Ramp(
        pool, server, endpoint, users, ramp=ramp, step_seconds=step_seconds, refine=refine,
        quiet=quiet,
    )  # fmt: skip
    if on_measure is not None:
        on_measure()
    while ramper.next_rate() is not None:
        ramper.run_next()
    return ramper.finish()


def run_interleaved(ramps: dict[str, Ramp]) -> dict[str, dict[str, Any]]:
    """Run several servers' ramps step by step in turn, so that whatever else the machine is
    doing at some moment falls on all of them alike; return each one's summary."""
    while True:
        pending = [ramp for ramp in ramps.values() if ramp.next_rate() is not None]
        if not pending:
            break
        for ramp in pending:
            ramp.run_next()
    return {name: ramp.finish() for name, ramp in ramps.items()}


def step(
    pool: Pool,
    server: Measured,
    index: int,
    rate: float,
    seconds: float,
    worker_pairs: list[list[list[str]]],
    quiet: QuietWindow | None,
) -> dict[str, Any]:
    other_before = quiet.wait() if quiet is not None else None
    started = time.monotonic()
    start_at = started + 0.3
    cpu0 = server.cpu_seconds()
    busy0 = machine_busy_seconds()
    results = pool.call(
        "step",
        [
            {
                "index": index,
                "rate": rate / pool.size,
                "start_at": start_at,
                "duration": seconds,
                "pairs": share,
            }
            for share in worker_pairs
        ],
    )
    server_cpu = server.cpu_seconds() - cpu0
    machine_cpu = machine_busy_seconds() - busy0
    wall = time.monotonic() - started
    latencies: list[float] = []
    for result in results:
        values = array.array("d")
        values.frombytes(result["latencies_ms"])
        latencies.extend(values)
    latencies.sort()
    sent = sum(r["sent"] for r in results)
    acked = sum(r["acked"] for r in results)
    arrived = sum(r["arrived"] for r in results)
    errors = sum(sum(r["errors"].values()) for r in results)
    closes = sum(sum(r["closes"].values()) for r in results)
    p99 = percentile(latencies, 0.99)
    loadgen_cpu = sum(r["cpu_s"] for r in results)
    step = {
        "offered_per_s": round(rate),
        "sent_per_s": round(sent / seconds),
        "delivered_per_s": round(sum(r["in_window"] for r in results) / seconds),
        "p50_ms": round(percentile(latencies, 0.50), 2),
        "p99_ms": round(p99, 2),
        "max_ms": round(latencies[-1], 1) if latencies else None,
        "sent": sent,
        "acked": acked,
        "arrived": arrived,
        "errors": errors,
        "closes": closes,
        # CPU used during the step and its drain wait, in cores (1.0 = one core busy).
        "server_cpu": round(server_cpu / wall, 2),
        # The same CPU per message delivered in the step, in microseconds: what a message costs.
        "server_cpu_us_per_msg": round(server_cpu / arrived * 1e6, 1) if arrived else None,
        "loadgen_cpu": round(loadgen_cpu / wall, 2),
        "loadgen_max_lag_ms": round(max(r["max_lag_s"] for r in results) * 1000, 1),
        # Everything else on the machine (other people's tests...): the noise in this step.
        "other_cpu": round(max(0.0, machine_cpu - server_cpu - loadgen_cpu) / wall, 2),
        "other_cpu_before": other_before,
    }
    step["held"] = bool(
        p99 < P99_LIMIT_MS and sent == acked == arrived and not errors and not closes and sent
    )
    return step


def _sum(parts: list[dict[str, int]]) -> dict[str, int]:
    total: dict[str, int] = {}
    for part in parts:
        for key, value in part.items():
            total[key] = total.get(key, 0) + value
    return total


def _summary(
    server: Measured, steps: list[dict[str, Any]], accounting: dict[str, int], users: int
) -> dict[str, Any]:
    held = [s for s in steps if s["held"]]
    best = max(held, key=lambda s: s["delivered_per_s"]) if held else None
    return {
        "server": server.spec.name,
        "users": users,
        "delivered_per_s": best["delivered_per_s"] if best else 0,
        "p50_ms": best["p50_ms"] if best else None,
        "p99_ms": best["p99_ms"] if best else None,
        "server_cpu_us_per_msg": best["server_cpu_us_per_msg"] if best else None,
        "held_offered_per_s": best["offered_per_s"] if best else 0,
        "lost": accounting.get("lost", 0),
        "duplicated": accounting.get("duplicated", 0),
        "unacked": accounting.get("unacked", 0),
        "sent": accounting.get("sent", 0),
        "steps": steps,
    }
