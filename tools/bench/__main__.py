"""``python -m tools.bench``: every scenario against real server processes, one JSON line each.

    python -m tools.bench                      # the full run (what `make bench` does)
    python -m tools.bench --quick --no-doc     # a tiny load: checks the harness (tests use it)
    python -m tools.bench --scenarios live,login

Each scenario prints one JSON line on stdout; progress goes to stderr. The full run also
rewrites the generated part of docs/performance.md and docs/performance-latency.png.
"""

from __future__ import annotations

import argparse
import asyncio
import dataclasses
import importlib.util
import json
import shutil
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from tools.bench import accounts
from tools.bench.capacity import run_capacity
from tools.bench.drain import run_drain
from tools.bench.live import run_live
from tools.bench.login import run_login
from tools.bench.plan import FULL, LIVE_SERVERS, QUICK, Plan
from tools.bench.pool import Pool
from tools.bench.procs import (
    LIGHT_ITERATIONS,
    LIGHT_SETTINGS,
    ROOT,
    Server,
    ServerSpec,
    machine,
    raise_nofile,
)
from tools.bench.wsclient import Endpoint

SCENARIOS = ("capacity", "live", "drain", "login")


def log(message: str) -> None:
    print(f"[bench {time.strftime('%H:%M:%S')}] {message}", file=sys.stderr, flush=True)


class Bench:
    """One run: a data directory of accounts shared by the scenarios on our server."""

    def __init__(self, plan: Plan, workdir: Path, compression: bool) -> None:
        self.plan = plan
        self.workdir = workdir
        self.compression = compression
        self.materials = accounts.key_material(2, LIGHT_ITERATIONS)
        self.envelope = accounts.make_envelope(self.materials[0])
        self.users: list[tuple[str, str]] = []
        self._pool: Pool | None = None

    @property
    def pool(self) -> Pool:
        """The load generator's processes, started once for the whole run."""
        if self._pool is None:
            self._pool = Pool(self.plan.workers, self.envelope)
        return self._pool

    def close(self) -> None:
        if self._pool is not None:
            self._pool.close()

    def ours(self, kind: str = "ours-hypercorn") -> Server:
        return Server(ServerSpec(kind, kind, dict(LIGHT_SETTINGS)), self.workdir)

    def create_users(self) -> None:
        names = [f"bench-{index:05d}" for index in range(self.plan.users)]
        started = time.monotonic()
        with self.ours() as server:
            sessions = asyncio.run(accounts.create_users(server.url, names, self.materials))
        self.users = [(group[0].name, group[0].cookie) for group in sessions]
        log(f"{len(self.users)} accounts and sessions in {time.monotonic() - started:.1f} s")

    def capacity(self) -> dict[str, Any]:
        plan = self.plan
        users = self.users[: plan.capacity_users]
        result: dict[str, Any] = {"scenario": "capacity"}
        for compression in (False, True):
            with self.ours() as server:
                measured = run_capacity(
                    self.pool,
                    server,
                    users,
                    per_user=plan.capacity_per_user,
                    compression=compression,
                    settle=plan.capacity_settle_seconds,
                )
            log(f"capacity compression={compression}: {measured}")
            result["with_compression" if compression else "without_compression"] = measured
        plain = result["without_compression"]
        result.update(
            connections=plain["connections"],
            rss_per_conn_kib=plain["rss_per_conn_kib"],
            rss_per_conn_kib_compressed=result["with_compression"]["rss_per_conn_kib"],
            target_connections=plain["target"],
        )
        result["lost"] = result["duplicated"] = 0  # no message is sent in this scenario
        return result

    def live(self) -> dict[str, Any]:
        plan = self.plan
        users = self.users[: plan.live_users]
        runs: dict[str, dict[str, Any]] = {}
        for kind in plan.live_servers:
            ours = kind.startswith("ours")
            server = self.ours(kind) if ours else Server(ServerSpec(kind, kind), self.workdir)
            with server:
                endpoint = Endpoint(server.url, "cookie" if ours else "query", self.compression)
                runs[kind] = run_live(
                    self.pool,
                    server,
                    endpoint,
                    users,
                    ramp=plan.live_ramp,
                    step_seconds=plan.live_step_seconds,
                    refine=plan.live_refine,
                )
            summary = {k: v for k, v in runs[kind].items() if k != "steps"}
            log(f"live {kind}: {summary}")
        return live_line(runs, self.compression)

    def drain(self) -> dict[str, Any]:
        plan = self.plan
        start = plan.live_users
        users = self.users[start : start + 2 * plan.drain_pairs]
        pairs = [(users[i], users[i + 1]) for i in range(0, len(users) - 1, 2)]
        with self.ours() as server:
            endpoint = Endpoint(server.url, "cookie", self.compression)
            result = run_drain(self.pool, server, endpoint, pairs, per_pair=plan.drain_per_pair)
        return {"scenario": "drain", **result}

    def login(self) -> dict[str, Any]:
        plan = self.plan
        # A server of its own with the default configuration: nothing turned down.
        with Server(ServerSpec("ours-hypercorn-defaults", "ours-hypercorn")) as server:
            try:
                result = run_login(
                    server,
                    self.materials[0].identity,
                    users=plan.login_users,
                    lanes=plan.login_lanes,
                    seconds=plan.login_seconds,
                )
            finally:
                server.stop()
                shutil.rmtree(server.data_dir, ignore_errors=True)
        return {"scenario": "login", **result, "lost": 0, "duplicated": 0}


def live_line(runs: dict[str, dict[str, Any]], compression: bool) -> dict[str, Any]:
    """The live scenario's JSON line: our figures, the ratios, and every run's steps."""
    ours = runs.get("ours-hypercorn", {})
    line: dict[str, Any] = {
        "scenario": "live",
        "server": "ours-hypercorn",
        "compression": compression,
        "users": ours.get("users"),
        "delivered_per_s": ours.get("delivered_per_s"),
        "p50_ms": ours.get("p50_ms"),
        "p99_ms": ours.get("p99_ms"),
        "ratio_vs_quart_relay": _ratio(ours, runs.get("quart-relay")),
        "ratio_vs_websockets_relay": _ratio(ours, runs.get("websockets-relay")),
        "ratio_uvicorn_vs_hypercorn": _ratio(runs.get("ours-uvicorn"), ours),
        "lost": sum(run["lost"] for run in runs.values()),
        "duplicated": sum(run["duplicated"] for run in runs.values()),
        "runs": runs,
    }
    return line


def _ratio(numerator: dict[str, Any] | None, denominator: dict[str, Any] | None) -> float | None:
    if not numerator or not denominator or not denominator.get("delivered_per_s"):
        return None
    return round(numerator["delivered_per_s"] / denominator["delivered_per_s"], 3)


def _plan(args: argparse.Namespace) -> Plan:
    plan = QUICK if args.quick else FULL
    servers = args.live_servers.split(",") if args.live_servers else list(plan.live_servers)
    if importlib.util.find_spec("uvicorn") is None or importlib.util.find_spec("uvloop") is None:
        # `make bench` installs the bench extra; `make test` does not, and still runs --quick.
        log("uvicorn/uvloop not installed (pip install -e '.[bench]'): skipping ours-uvicorn")
        servers = [s for s in servers if s != "ours-uvicorn"]
    return dataclasses.replace(plan, live_servers=tuple(servers))


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m tools.bench", description=__doc__)
    parser.add_argument("--quick", action="store_true", help="a tiny load, for the tests")
    parser.add_argument("--scenarios", default=",".join(SCENARIOS))
    parser.add_argument("--no-compression", action="store_true", help="live/drain: offer none")
    parser.add_argument("--no-doc", action="store_true", help="do not rewrite docs/")
    parser.add_argument(
        "--live-servers", help="comma-separated; default: " + ",".join(LIVE_SERVERS)
    )
    args = parser.parse_args(argv)
    chosen = [s.strip() for s in args.scenarios.split(",") if s.strip()]
    unknown = set(chosen) - set(SCENARIOS)
    if unknown:
        parser.error(f"unknown scenarios: {', '.join(sorted(unknown))}")
    raise_nofile()
    started = time.monotonic()
    workdir = Path(tempfile.mkdtemp(prefix="securechat-bench-"))
    lines: list[dict[str, Any]] = []
    bench = Bench(_plan(args), workdir, not args.no_compression)
    try:
        if set(chosen) - {"login"}:
            bench.create_users()
        for name in SCENARIOS:
            if name in chosen:
                log(f"scenario {name}")
                line = getattr(bench, name)()
                lines.append(line)
                print(json.dumps(line, separators=(",", ":")), flush=True)
    finally:
        bench.close()
        shutil.rmtree(workdir, ignore_errors=True)
    elapsed = time.monotonic() - started
    log(f"done in {elapsed:.0f} s")
    if not args.no_doc:
        from tools.bench.report import write_report

        write_report(lines, machine(), elapsed, ROOT / "docs")
    return 0


if __name__ == "__main__":
    sys.exit(main())
