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
from typing import Any

from tools.bench.pool import Pool, split
from tools.bench.procs import Server, machine_busy_seconds
from tools.bench.wsclient import Endpoint

P99_LIMIT_MS = 50.0


def percentile(sorted_values: list[float], fraction: float) -> float:
    """The nearest-rank percentile of already sorted values (nan when empty)."""
    if not sorted_values:
        return float("nan")
    rank = min(len(sorted_values) - 1, max(0, round(fraction * len(sorted_values)) - 1))
    return sorted_values[rank]


def rates(start: float, factor: float, limit: float) -> list[float]:
    """A geometric ramp of offered rates from ``start`` up to ``limit``."""
    result = []
    rate = start
    while rate <= limit:
        result.append(round(rate))
        rate *= factor
    return result


def run_live(
    pool: Pool,
    server: Server,
    endpoint: Endpoint,
    users: list[tuple[str, str]],
    *,
    ramp: list[float],
    step_seconds: float = 3.0,
    refine: int = 2,
    on_measure: Callable[[], object] | None = None,
) -> dict[str, Any]:
    """Run the ramp against ``server``; return the summary with every step.

    ``on_measure`` is called once everyone is connected, just before the first step (the
    profiler starts there).
    """
    pairs = [[users[i][0], users[i + 1][0]] for i in range(0, len(users) - 1, 2)]
    worker_pairs = split(pairs, pool.size)
    cookies = dict(users)
    steps: list[dict[str, Any]] = []
    pool.target(endpoint)
    connected = pool.call(
        "connect",
        [{"users": [(n, cookies[n]) for pair in share for n in pair]} for share in worker_pairs],
    )
    failed = sum(sum(r["failed"].values()) for r in connected)
    if failed:
        raise RuntimeError(f"{server.spec.name}: {failed} sockets refused: {connected}")
    if on_measure is not None:
        on_measure()

    def run_step(rate: float) -> dict[str, Any]:
        # A step that misses is run once more before it counts: the machine is shared, and
        # one stall elsewhere should not end the ramp.
        for _attempt in range(2):
            step = _step(pool, server, len(steps), rate, step_seconds, worker_pairs)
            steps.append(step)
            if step["held"]:
                break
        return step

    good: float | None = None
    bad: float | None = None
    for rate in ramp:
        if run_step(rate)["held"]:
            good = rate
        else:
            bad = rate
            break
    for _ in range(refine if good is not None and bad is not None else 0):
        assert good is not None and bad is not None
        middle = round((good * bad) ** 0.5)
        if run_step(middle)["held"]:
            good = middle
        else:
            bad = middle
    accounting = _sum(pool.call_all("accounting"))
    pool.call_all("close_all")
    return _summary(server, steps, accounting, len(users))


def _step(
    pool: Pool,
    server: Server,
    index: int,
    rate: float,
    seconds: float,
    worker_pairs: list[list[list[str]]],
) -> dict[str, Any]:
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
        "loadgen_cpu": round(loadgen_cpu / wall, 2),
        "loadgen_max_lag_ms": round(max(r["max_lag_s"] for r in results) * 1000, 1),
        # Everything else on the machine (other people's tests...): the noise in this step.
        "other_cpu": round(max(0.0, machine_cpu - server_cpu - loadgen_cpu) / wall, 2),
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
    server: Server, steps: list[dict[str, Any]], accounting: dict[str, int], users: int
) -> dict[str, Any]:
    held = [s for s in steps if s["held"]]
    best = max(held, key=lambda s: s["delivered_per_s"]) if held else None
    return {
        "server": server.spec.name,
        "users": users,
        "delivered_per_s": best["delivered_per_s"] if best else 0,
        "p50_ms": best["p50_ms"] if best else None,
        "p99_ms": best["p99_ms"] if best else None,
        "held_offered_per_s": best["offered_per_s"] if best else 0,
        "lost": accounting.get("lost", 0),
        "duplicated": accounting.get("duplicated", 0),
        "unacked": accounting.get("unacked", 0),
        "sent": accounting.get("sent", 0),
        "steps": steps,
    }
