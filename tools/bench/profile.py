"""Profile our server under load with py-spy, and print its hot spots thread by thread.

    python -m tools.bench.profile live --rate 1000 --seconds 15
    python -m tools.bench.profile drain --recipients 200
    python -m tools.bench.profile report FILE            (a raw profile recorded earlier)

Starts the server (``make run``'s configuration) with fresh accounts, brings the load to where
the measurement starts (everyone connected; or the offline queue full), then records the serving
process with ``py-spy record`` (200 samples/s; each sample pauses the process briefly, the price
of stacks that are not torn) for the measured phase only. It prints, for each thread (the event
loop is MainThread; SQLite's connections have one thread each), the share of busy samples by
package, by function (self) and by function (inclusive). The raw collapsed stacks stay in
``--out``, for flame graphs.
"""

from __future__ import annotations

import argparse
import shutil
import subprocess
import tempfile
import time
from pathlib import Path
from typing import Any

from tools.bench import accounts
from tools.bench.drain import run_drain
from tools.bench.hotspots import RANKINGS, load, summarise
from tools.bench.live import run_live
from tools.bench.pool import Pool
from tools.bench.procs import (
    BIN,
    LIGHT_ITERATIONS,
    LIGHT_SETTINGS,
    Server,
    ServerSpec,
    raise_nofile,
)
from tools.bench.wsclient import Endpoint


class Spy:
    """``py-spy record`` of one process, started on demand, for a bounded time."""

    def __init__(self, pid: int, raw: Path, seconds: float) -> None:
        self.pid, self.raw, self.seconds = pid, raw, seconds
        self.proc: subprocess.Popen[bytes] | None = None

    def start(self) -> None:
        self.proc = subprocess.Popen(  # noqa: S603 (our own fixed command line)
            [str(BIN / "py-spy"), "record", "--pid", str(self.pid), "--rate", "200",
             "--duration", str(int(self.seconds)), "--format", "raw", "--threads",
             "--output", str(self.raw)],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )  # fmt: skip
        time.sleep(0.5)  # py-spy attaches

    def wait(self) -> None:
        if self.proc is not None:
            try:
                self.proc.wait(timeout=self.seconds + 30)
            except subprocess.TimeoutExpired:
                self.proc.kill()


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(
        prog="python -m tools.bench.profile",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("scenario", choices=["live", "drain", "report"])
    parser.add_argument("file", nargs="?", type=Path, help="report: the raw profile")
    parser.add_argument("--rate", type=float, default=1000, help="live: offered msgs/s")
    parser.add_argument("--seconds", type=float, default=15, help="live: how long")
    parser.add_argument("--users", type=int, default=1000, help="live: connected users")
    parser.add_argument("--recipients", type=int, default=200, help="drain: offline users")
    parser.add_argument("--kind", default="ours-hypercorn")
    parser.add_argument("--top", type=int, default=25)
    parser.add_argument(
        "--out", type=Path, default=Path(tempfile.gettempdir()) / "securechat-profile"
    )
    args = parser.parse_args(argv)
    if args.scenario == "report":
        report(args.file, args.top)
        return
    raise_nofile()
    args.out.mkdir(parents=True, exist_ok=True)
    raw = args.out / f"{args.kind}-{args.scenario}.txt"
    print(f"{args.kind} {args.scenario}: {profile(args, raw)}")
    report(raw, args.top)


def profile(args: argparse.Namespace, raw: Path) -> dict[str, Any]:
    """Run the scenario with the profiler on its measured phase; return its figures."""
    workdir = Path(tempfile.mkdtemp(prefix="securechat-profile-"))
    materials = accounts.key_material(2, LIGHT_ITERATIONS)
    envelope = accounts.make_envelope(materials[0])
    count = args.users if args.scenario == "live" else 5 * args.recipients
    names = [f"prof-{index:05d}" for index in range(count)]
    spec = ServerSpec(args.kind, args.kind, dict(LIGHT_SETTINGS))
    ours = args.kind.startswith("ours")
    try:
        users = accounts.people(spec, workdir, names, materials)
        with Server(spec, workdir) as server, Pool(2, envelope) as pool:
            endpoint = Endpoint(server.url, "cookie" if ours else "query")
            if args.scenario == "live":
                spy = Spy(server.worker_pid(), raw, args.seconds)
                result = run_live(
                    pool, server, endpoint, users, ramp=[args.rate],
                    step_seconds=args.seconds, refine=0, on_measure=spy.start,
                )  # fmt: skip
                spy.wait()
                measured: dict[str, Any] = result["steps"][0]
                return measured
            spy = Spy(server.worker_pid(), raw, 8)
            recipients, senders = users[: args.recipients], users[args.recipients :]
            drained = run_drain(
                pool, server, endpoint, recipients, senders, per_sender=50, on_measure=spy.start
            )
            spy.wait()
            return drained
    finally:
        shutil.rmtree(workdir, ignore_errors=True)


def report(raw: Path, top: int) -> None:
    """Print the hot spots of each thread of the server (the event loop is MainThread)."""
    threads: dict[str, list[tuple[list[str], int]]] = {}
    for frames, count in load(raw):
        name = frames[0].split(": ", 1)[-1].rstrip(")") if frames[0].startswith("thread (") else "?"
        threads.setdefault(name, []).append((frames[1:], count))
    for name, part in sorted(threads.items(), key=lambda item: -sum(n for _, n in item[1])):
        result = summarise(part, top=top)
        print(f"\n== thread {name}: {result['busy_samples']} busy samples of {result['samples']}")
        for kind in RANKINGS:
            print(f"-- by {kind} (% of this thread's busy samples)")
            for key, pct in result[kind]:
                print(f"{pct:6.1f}  {key}")
    print(f"\nraw stacks: {raw}")


if __name__ == "__main__":
    main()
