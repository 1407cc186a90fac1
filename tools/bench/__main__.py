"""``python -m tools.bench``: every scenario against real server processes, one JSON line each.

    python -m tools.bench                      # the full run (what `make bench` does)
    python -m tools.bench --quick --no-doc     # a tiny load: checks the harness (tests use it)
    python -m tools.bench --scenarios live,login
    python -m tools.bench --scenarios cluster --no-doc   # 1 and 2 nodes on PostgreSQL + Redis
    python -m tools.bench --scenarios groups --no-doc    # a 100-member group's fan-out

Each scenario prints one JSON line on stdout; progress goes to stderr. The full run also
rewrites the generated part of docs/performance.md and docs/performance-latency.png.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
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
from tools.bench.cluster import REFERENCES, cluster_line, running_cluster
from tools.bench.drain import run_drain
from tools.bench.groups import run_group_fanout
from tools.bench.live import Measured, Ramp, run_interleaved
from tools.bench.login import run_login
from tools.bench.plan import FULL, LIVE_SERVERS, QUICK, Plan
from tools.bench.pool import Pool
from tools.bench.procs import (
    LIGHT_ITERATIONS,
    LIGHT_SETTINGS,
    ROOT,
    QuietWindow,
    Server,
    ServerSpec,
    machine,
    raise_nofile,
)
from tools.bench.wsclient import Endpoint

# The group scenario's senders: ten members share its highest rate (tools/bench/groups.py), so
# each sends far more than a person does; their accounts' send rate and their sockets' frame
# rate are raised to let them.
GROUP_SEND_RATE = {
    "SECURECHAT_SENDS_PER_USER_PER_S": "1000",
    "SECURECHAT_SENDS_PER_USER_BURST": "1000",
    "SECURECHAT_WS_FRAMES_PER_S": "1000",
    "SECURECHAT_WS_FRAMES_BURST": "1000",
}
SCENARIOS = ("capacity", "live", "drain", "login", "cluster", "groups")


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
        # One budget for the whole run's waits for a quiet machine (none for the tiny run).
        self.quiet = QuietWindow(plan.quiet_budget_seconds) if plan.quiet_budget_seconds else None

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
        # Our server declines permessage-deflate (securechat/chat/wsguard.py), so a browser's offer
        # changes nothing there; what compression would cost is measured where it is agreed to:
        # our app on Uvicorn, whose default is to accept it.
        runs = [("without_compression", "ours-hypercorn", False)]
        runs.append(("offered_compression", "ours-hypercorn", True))
        if "ours-uvicorn" in plan.live_servers:
            runs.append(("uvicorn_without_compression", "ours-uvicorn", False))
            runs.append(("negotiated_compression", "ours-uvicorn-deflate", True))
        for name, kind, offer in runs:
            with self.ours(kind) as server:
                measured = run_capacity(
                    self.pool,
                    server,
                    users,
                    per_user=plan.capacity_per_user,
                    compression=offer,
                    settle=plan.capacity_settle_seconds,
                )
            log(f"capacity {name}: {measured}")
            result[name] = measured
        plain = result["without_compression"]
        negotiated = result.get("negotiated_compression")
        result.update(
            connections=plain["connections"],
            target_connections=plain["target"],
            rss_per_conn_kib=plain["rss_per_conn_kib"],
            rss_per_conn_kib_offered=result["offered_compression"]["rss_per_conn_kib"],
            rss_per_conn_kib_compressed=negotiated["rss_per_conn_kib"] if negotiated else None,
        )
        if negotiated:
            # What negotiating compression adds, on the one server here that agrees to it.
            base = result["uvicorn_without_compression"]["rss_per_conn_kib"]
            result["deflate_cost_per_conn_kib"] = round(negotiated["rss_per_conn_kib"] - base, 1)
        result["lost"] = result["duplicated"] = 0  # no message is sent in this scenario
        return result

    def live(self) -> dict[str, Any]:
        """Every server's ramp, all servers up at once and their steps taken in turn."""
        plan = self.plan
        users = self.users[: plan.live_users]
        for kind in plan.live_servers:
            self.copy_accounts(kind)  # before any server runs: a quiet database to copy
        with contextlib.ExitStack() as stack:
            ramps: dict[str, Ramp] = {}
            for kind in plan.live_servers:
                server = stack.enter_context(self.live_server(kind))
                ramps[kind] = self.ramp(stack, server, self.endpoint(kind, server.url), users)
            runs = run_interleaved(ramps)
        for kind, run in runs.items():
            log(f"live {kind}: { ({k: v for k, v in run.items() if k != 'steps'}) }")
        return live_line(runs, self.compression)

    def cluster(self) -> dict[str, Any]:
        """The live ramp against 1 and 2 nodes on PostgreSQL + Redis (a pair's users on
        different nodes), interleaved with one SQLite process's and the bare Quart relay's."""
        plan = self.plan
        users = self.users[: plan.cluster_users]
        for kind in REFERENCES:
            self.copy_accounts(kind)
        with contextlib.ExitStack() as stack:
            ramps: dict[str, Ramp] = {}
            for kind in REFERENCES:
                server = stack.enter_context(self.live_server(kind))
                ramps[kind] = self.ramp(stack, server, self.endpoint(kind, server.url), users)
            for nodes in (1, 2):
                cluster = stack.enter_context(running_cluster(nodes))
                started = time.monotonic()
                people = cluster.create_users([name for name, _ in users], self.materials)
                log(
                    f"{cluster.spec.name}: {len(people)} accounts in {time.monotonic() - started:.1f} s"
                )
                endpoint = cluster.endpoint(self.compression)
                ramps[cluster.spec.name] = self.ramp(
                    stack, cluster, endpoint, people, plan.cluster_ramp
                )
            runs = run_interleaved(ramps)
        for name, run in runs.items():
            log(f"cluster {name}: { ({k: v for k, v in run.items() if k != 'steps'}) }")
        return cluster_line(runs, self.compression)

    def groups(self) -> dict[str, Any]:
        """One group of ``group_members`` accounts on a server of its own, whose send rate per
        account is raised so that ten members can carry the whole ramp between them."""
        plan = self.plan
        users = self.users[: plan.group_members]
        settings = {**LIGHT_SETTINGS, **GROUP_SEND_RATE}
        copy = self.copy_accounts("ours-groups")
        with Server(ServerSpec("ours-groups", "ours-hypercorn", settings), copy) as server:
            result = asyncio.run(
                run_group_fanout(
                    server,
                    users,
                    self.materials,
                    self.envelope,
                    plan.group_ramp,
                    plan.group_step_seconds,
                )
            )
        log(f"groups: { ({k: v for k, v in result.items() if k != 'steps'}) }")
        return {"scenario": "groups", **result}

    def endpoint(self, kind: str, url: str) -> Endpoint:
        """Our server takes the session cookie; the bare relays a name in the URL."""
        return Endpoint(url, "cookie" if kind.startswith("ours") else "query", self.compression)

    def ramp(
        self,
        stack: contextlib.ExitStack,
        server: Measured,
        endpoint: Endpoint,
        users: list[tuple[str, str]],
        rates: list[float] | None = None,
    ) -> Ramp:
        """A live ramp against ``server`` with generator processes of its own (closed with
        ``stack``); ``rates`` default to the live scenario's."""
        plan = self.plan
        pool = stack.enter_context(Pool(plan.workers, self.envelope))
        return Ramp(
            pool,
            server,
            endpoint,
            users,
            ramp=plan.live_ramp if rates is None else rates,
            step_seconds=plan.live_step_seconds,
            refine=plan.live_refine,
            quiet=self.quiet,
        )

    def live_server(self, kind: str) -> Server:
        """A server for the live ramps. Two of ours must not share a database (each numbers
        messages itself), so every one of ours after the first gets a copy of the accounts."""
        if not kind.startswith("ours"):
            return Server(ServerSpec(kind, kind), self.workdir)
        if kind == "ours-hypercorn":
            return self.ours(kind)
        return Server(ServerSpec(kind, kind, dict(LIGHT_SETTINGS)), self.copy_accounts(kind))

    def copy_accounts(self, kind: str) -> Path:
        """A copy of the accounts' data directory for another of our servers (once)."""
        copy = self.workdir / kind
        if kind.startswith("ours") and kind != "ours-hypercorn" and not copy.exists():
            shutil.copytree(self.workdir / "data", copy / "data")
        return copy

    def drain(self) -> dict[str, Any]:
        plan = self.plan
        start = plan.live_users
        recipients = self.users[start : start + plan.drain_recipients]
        start += plan.drain_recipients
        senders = self.users[
            start : start + plan.drain_recipients * plan.drain_senders_per_recipient
        ]
        with self.ours() as server:
            endpoint = Endpoint(server.url, "cookie", self.compression)
            result = run_drain(
                self.pool,
                server,
                endpoint,
                recipients,
                senders,
                per_sender=plan.drain_per_sender,
                quiet=self.quiet,
            )
        return {"scenario": "drain", **result}

    def login(self) -> dict[str, Any]:
        plan = self.plan
        # A server of its own with the default configuration: nothing turned down.
        # Its data directory is its own, removed when it stops.
        with Server(ServerSpec("ours-hypercorn-defaults", "ours-hypercorn")) as server:
            result = run_login(
                server,
                self.materials[0].identity,
                users=plan.login_users,
                lanes=plan.login_lanes,
                seconds=plan.login_seconds,
                hash_samples=plan.login_hash_samples,
            )
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
    return round(float(numerator["delivered_per_s"]) / float(denominator["delivered_per_s"]), 3)


def _plan(args: argparse.Namespace) -> Plan:
    plan = QUICK if args.quick else FULL
    servers = args.live_servers.split(",") if args.live_servers else list(plan.live_servers)
    if importlib.util.find_spec("uvicorn") is None or importlib.util.find_spec("uvloop") is None:
        # `make bench` installs the bench extra; `make test` does not, and still runs --quick.
        log("uvicorn/uvloop not installed (pip install -e '.[bench]'): skipping ours-uvicorn")
        servers = [s for s in servers if s != "ours-uvicorn"]
    return dataclasses.replace(plan, live_servers=tuple(servers))


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m tools.bench",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
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
