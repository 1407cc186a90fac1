"""Read py-spy's collapsed stacks ("raw" format) into the top functions by self and total time.

    python -m tools.bench.hotspots profile.txt [--top 25] [--idle]

A line of the raw format is ``frame;frame;...;leaf count``; each frame is
``function (file:line)``. Idle samples (the event loop waiting in ``select``/``epoll``) are left
out unless ``--idle`` is given, so the shares are of the CPU the process actually used.
"""

from __future__ import annotations

import argparse
import re
from collections import Counter
from pathlib import Path
from typing import Literal, TypedDict

_IDLE = ("select (selectors.py", "poll (selectors.py", "_run_once (asyncio/base_events.py")
_LINE = re.compile(r":\d+\)")

Ranking = Literal["package", "self", "total"]
RANKINGS: tuple[Ranking, ...] = ("package", "self", "total")


class Summary(TypedDict):
    """Sample counts, and each ranking as (key, % of busy samples), highest first."""

    samples: int
    busy_samples: int
    package: list[tuple[str, float]]
    self: list[tuple[str, float]]
    total: list[tuple[str, float]]


def _frame_key(frame: str) -> str:
    """``function (path/to/file.py:123)`` -> ``function (file.py)``: group a function's lines."""
    name, _, where = frame.partition(" (")
    where = _LINE.sub(")", where)
    parts = where.rstrip(")").split("/")
    short = "/".join(parts[-2:]) if len(parts) > 1 else parts[0]
    return f"{name} ({short})"


def _package(frame: str) -> str:
    """The top-level package (or stdlib module directory) a frame's code lives in."""
    where = frame.partition(" (")[2].rstrip(")")
    path = _LINE.sub("", where + ")").rstrip(")")
    return path.split("/", 1)[0] if "/" in path else path.rsplit(".", 1)[0]


def load(path: Path) -> list[tuple[list[str], int]]:
    """Each stack (root first) with its sample count."""
    stacks = []
    for line in path.read_text().splitlines():
        stack, _, count = line.rpartition(" ")
        if stack and count.isdigit():
            stacks.append((stack.split(";"), int(count)))
    return stacks


def is_idle(frames: list[str]) -> bool:
    """A sample of the loop waiting for I/O, not working."""
    leafish = ";".join(frames[-3:])
    return any(marker in leafish for marker in _IDLE[:2]) or (
        "select (selectors.py" in leafish or "epoll" in frames[-1]
    )


def summarise(stacks: list[tuple[list[str], int]], *, top: int = 25, idle: bool = False) -> Summary:
    """Total samples, busy samples, and the top functions by self and inclusive share."""
    self_time: Counter[str] = Counter()
    total_time: Counter[str] = Counter()
    package_time: Counter[str] = Counter()
    samples = busy = 0
    for frames, count in stacks:
        samples += count
        if not frames or (not idle and is_idle(frames)):
            continue
        busy += count
        self_time[_frame_key(frames[-1])] += count
        package_time[_package(frames[-1])] += count
        for key in {_frame_key(frame) for frame in frames}:
            total_time[key] += count
    share = busy or 1
    return {
        "samples": samples,
        "busy_samples": busy,
        "package": [(key, round(100 * n / share, 1)) for key, n in package_time.most_common(12)],
        "self": [(key, round(100 * n / share, 1)) for key, n in self_time.most_common(top)],
        "total": [(key, round(100 * n / share, 1)) for key, n in total_time.most_common(top)],
    }


def main(argv: list[str] | None = None) -> None:
    # __doc__ is None under python -OO.
    parser = argparse.ArgumentParser(description=(__doc__ or "").split("\n", 1)[0])
    parser.add_argument("profile", type=Path)
    parser.add_argument("--top", type=int, default=25)
    parser.add_argument("--idle", action="store_true", help="count idle samples too")
    args = parser.parse_args(argv)
    result = summarise(load(args.profile), top=args.top, idle=args.idle)
    print(f"samples {result['samples']}, busy {result['busy_samples']}")
    for title in RANKINGS:
        print(f"\n-- by {title} time (% of busy samples)")
        for key, pct in result[title]:
            print(f"{pct:6.1f}  {key}")


if __name__ == "__main__":
    main()
