"""Profile our server under the live load with py-spy, and print its hot spots.

    python -m tools.bench.profile --rate 2000 --seconds 15 [--kind ours-hypercorn] [--out DIR]

Starts the server (``make run``'s configuration), connects the live scenario's users, starts
``py-spy record`` on the serving process (non-blocking sampling, so the server is not paused),
offers ``--rate`` messages/s for ``--seconds``, then prints the functions where the event loop
thread spends its time (self and inclusive) and the same for the other threads (SQLite's,
argon2's). The raw collapsed stacks stay in ``--out`` for flame graphs.
"""

from __future__ import annotations

import argparse
import asyncio
import shutil
import subprocess
import tempfile
import time
from pathlib import Path

from tools.bench import accounts
from tools.bench.hotspots import load, summarise
from tools.bench.live import run_live
from tools.bench.procs import (
    BIN,
    LIGHT_ITERATIONS,
    LIGHT_SETTINGS,
    Server,
    ServerSpec,
    raise_nofile,
)
from tools.bench.wsclient import Endpoint

_LOOP_MARKERS = ("asyncio_worker", "run_forever", "uvicorn")


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    parser.add_argument("--rate", type=float, default=2000)
    parser.add_argument("--seconds", type=float, default=15)
    parser.add_argument("--users", type=int, default=1000)
    parser.add_argument("--kind", default="ours-hypercorn")
    parser.add_argument(
        "--out", type=Path, default=Path(tempfile.gettempdir()) / "securechat-profile"
    )
    parser.add_argument("--top", type=int, default=25)
    parser.add_argument("--no-compression", action="store_true")
    args = parser.parse_args(argv)
    raise_nofile()
    args.out.mkdir(parents=True, exist_ok=True)
    workdir = Path(tempfile.mkdtemp(prefix="securechat-profile-"))
    materials = accounts.key_material(2, LIGHT_ITERATIONS)
    envelope = accounts.make_envelope(materials[0])
    names = [f"prof-{index:05d}" for index in range(args.users)]
    try:
        with Server(ServerSpec(args.kind, args.kind, dict(LIGHT_SETTINGS)), workdir) as server:
            sessions = asyncio.run(accounts.create_users(server.url, names, materials))
        users = [(group[0].name, group[0].cookie) for group in sessions]
        with Server(ServerSpec(args.kind, args.kind, dict(LIGHT_SETTINGS)), workdir) as server:
            raw = args.out / f"{args.kind}-{int(args.rate)}.txt"
            spy = subprocess.Popen(  # noqa: S603
                [
                    str(BIN / "py-spy"),
                    "record",
                    "--pid",
                    str(server.worker_pid()),
                    "--rate",
                    "200",
                    "--duration",
                    str(int(args.seconds) + 2),
                    "--format",
                    "raw",
                    "--threads",
                    "--nonblocking",
                    "--output",
                    str(raw),
                ],
                stdout=subprocess.DEVNULL,
                stderr=subprocess.DEVNULL,
            )
            time.sleep(1.0)
            result = run_live(
                server,
                Endpoint(server.url, "cookie", not args.no_compression),
                users,
                envelope,
                ramp=[args.rate],
                step_seconds=args.seconds,
                refine=0,
            )
            spy.wait(timeout=args.seconds + 60)
        step = result["steps"][0]
        print(f"{args.kind} at {args.rate:.0f} msgs/s offered: {step}")
        report(raw, args.top)
    finally:
        shutil.rmtree(workdir, ignore_errors=True)


def report(raw: Path, top: int) -> None:
    """Print the hot spots of the event-loop thread and of the other threads."""
    stacks = load(raw)
    loop = [(f, n) for f, n in stacks if any(m in ";".join(f) for m in _LOOP_MARKERS)]
    other = [(f, n) for f, n in stacks if not any(m in ";".join(f) for m in _LOOP_MARKERS)]
    for title, part in (("event-loop thread", loop), ("other threads", other)):
        result = summarise(part, top=top)
        print(f"\n== {title}: {result['busy_samples']} busy samples of {result['samples']}")
        for kind in ("self", "total"):
            print(f"-- by {kind} time (% of this thread group's busy samples)")
            for key, pct in result[kind]:  # type: ignore[union-attr]
                print(f"{pct:6.1f}  {key}")
    print(f"\nraw stacks: {raw}")


if __name__ == "__main__":
    main()
