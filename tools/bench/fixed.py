"""Fixed-rate live steps against server variants, one after another: for an A/B of a setting.

    python -m tools.bench.fixed ours-hypercorn \\
        ours-hypercorn@SECURECHAT_DB_CHECKPOINT_INTERVAL=1 --rates 2500,2800 --rounds 3

A variant is a server kind (as ``--live-servers`` names them, what-if patches included:
``ours-hypercorn+gclog``), optionally followed by ``@NAME=VALUE;NAME=VALUE`` settings for its
environment. Each variant gets a fresh server with fresh accounts; its steps run the rates in
order, ``--rounds`` times, as the live scenario runs a step (tools/bench/live.py); each step
prints one JSON line. Where `make bench` looks for the edge, this holds the load fixed, so two
settings can be compared at the rates where they differ. Later rounds run on a bigger database
than earlier ones (every step stores its messages): compare variants round by round.
"""

from __future__ import annotations

import argparse
import json
import shutil
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from tools.bench import accounts
from tools.bench.live import Ramp, step
from tools.bench.pool import Pool
from tools.bench.procs import LIGHT_ITERATIONS, LIGHT_SETTINGS, Server, ServerSpec, raise_nofile
from tools.bench.wsclient import Endpoint

STEP_KEYS = ("offered_per_s", "delivered_per_s", "p50_ms", "p99_ms", "max_ms", "server_cpu",
             "loadgen_cpu", "other_cpu", "held")  # fmt: skip


def main(argv: list[str] | None = None) -> None:
    # __doc__ is None under python -OO.
    parser = argparse.ArgumentParser(description=(__doc__ or "").split("\n")[0])
    parser.add_argument("variants", nargs="+", help="kind[@NAME=VALUE;NAME=VALUE]")
    parser.add_argument("--rates", default="2500,2800", help="offered msgs/s, comma-separated")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--seconds", type=float, default=4.0, help="per step")
    parser.add_argument("--users", type=int, default=1000)
    args = parser.parse_args(argv)
    raise_nofile()
    rates = [float(rate) for rate in args.rates.split(",")]
    for variant in args.variants:
        for line in run_variant(variant, rates, args.rounds, args.seconds, args.users):
            print(json.dumps(line, separators=(",", ":")), flush=True)


def run_variant(
    variant: str, rates: list[float], rounds: int, seconds: float, users: int
) -> Iterator[dict[str, Any]]:
    """Every step of one variant, on a server of its own, as each ends."""
    kind, _, settings = variant.partition("@")
    env = dict(LIGHT_SETTINGS)
    env.update(dict(pair.split("=", 1) for pair in settings.split(";") if pair))
    spec = ServerSpec(kind, kind, env)
    materials = accounts.key_material(2, LIGHT_ITERATIONS)
    names = [f"fixed-{index:05d}" for index in range(users)]
    workdir = Path(tempfile.mkdtemp(prefix="securechat-fixed-"))
    ours = kind.startswith("ours")
    try:
        people = accounts.people(spec, workdir, names, materials)
        with Server(spec, workdir) as server, Pool(2, accounts.make_envelope(materials[0])) as pool:
            endpoint = Endpoint(server.url, "cookie" if ours else "query")
            ramp = Ramp(pool, server, endpoint, people, ramp=rates, step_seconds=seconds)
            for round_ in range(rounds):
                for index, rate in enumerate(rates):
                    measured = step(
                        pool, server, round_ * len(rates) + index, rate, seconds,
                        ramp.worker_pairs, None,
                    )  # fmt: skip
                    line = {"variant": variant, "round": round_}
                    line.update({key: measured[key] for key in STEP_KEYS})
                    yield line
            ramp.finish()
    finally:
        shutil.rmtree(workdir, ignore_errors=True)


if __name__ == "__main__":
    main()
