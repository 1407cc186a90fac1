"""Garbage collection for a server whose heap is mostly long-lived connection state.

CPython's cyclic collector examines every tracked object in a full (generation 2) collection,
with the event loop stopped. A chat server holds hundreds of tracked objects per open socket,
nearly all of them alive for as long as the socket, so with many sockets open a full collection
pauses the loop for a long time while freeing nothing (``collected=0``), and every message in
flight waits out the pause (the measurements: docs/performance.md).

:class:`FreezeSurvivors` moves what survives a full collection into the permanent generation
(``gc.freeze()``), which later collections skip: a full collection then examines only what was
made since the one before. A frozen object that later becomes cyclic garbage (the state of a
closed connection) is not freed while frozen, so when the frozen set has grown by ``growth``
times its size after the last complete collection, the policy unfreezes everything and the next
full collection examines the whole heap again. That long pause comes once per such growth (as
connections come and go), not every few seconds, and memory stays bounded.

The policy is process-wide (the collector is): apps in one process share one, started by the
first that serves and stopped by the last.
"""

from __future__ import annotations

import gc
import time
from dataclasses import dataclass, field
from typing import Any

from securechat.runtime import Timings


@dataclass
class CollectorStats:
    """What the collector did since the policy started, for /metrics."""

    complete_collections: int = 0
    # Every collection's pause, all generations.
    pauses: Timings = field(default_factory=Timings)


class FreezeSurvivors:
    """Freeze the survivors of every full collection; thaw them when they have grown by
    ``growth`` times their size after the last complete one."""

    def __init__(self, growth: float) -> None:
        if growth <= 0:
            raise ValueError("growth must be positive")
        self.growth = growth
        self.stats = CollectorStats()
        self._baseline = 0  # frozen objects after the last complete collection
        self._complete_next = False  # everything was thawed: the next full one sees all
        self._started = 0.0

    @property
    def frozen(self) -> int:
        """Objects now in the permanent generation."""
        return gc.get_freeze_count()

    def start(self) -> None:
        """Collect everything once, freeze the survivors, and follow every collection."""
        gc.collect()
        gc.freeze()
        self._baseline = gc.get_freeze_count()
        self.stats.complete_collections += 1
        gc.callbacks.append(self._on_collection)

    def stop(self) -> None:
        """Stop following collections and give the frozen objects back to the collector."""
        if self._on_collection in gc.callbacks:
            gc.callbacks.remove(self._on_collection)
        gc.unfreeze()

    def _on_collection(self, phase: str, info: dict[str, Any]) -> None:
        # Runs inside the collector, on whichever thread allocated: only cheap bookkeeping and
        # moving lists (freeze/unfreeze), never a collection of its own.
        if phase == "start":
            self._started = time.perf_counter()
            return
        self.stats.pauses.observe(time.perf_counter() - self._started)
        if info["generation"] != 2:
            return
        # A full collection has just merged every younger generation into the oldest, so
        # everything tracked now survived it: freeze it all.
        gc.freeze()
        frozen = gc.get_freeze_count()
        if self._complete_next:
            self._complete_next = False
            self._baseline = frozen
            self.stats.complete_collections += 1
        elif frozen > self._baseline * (1 + self.growth):
            gc.unfreeze()
            self._complete_next = True


_policy: FreezeSurvivors | None = None
_users = 0


def start(growth: float) -> FreezeSurvivors:
    """Start the process's policy (or join the one running); pair with :func:`stop`."""
    global _policy, _users
    if _policy is None:
        _policy = FreezeSurvivors(growth)
        _policy.start()
    _users += 1
    return _policy


def stop() -> None:
    """Leave the process's policy; the last to leave stops it."""
    global _policy, _users
    _users = max(_users - 1, 0)
    if _users == 0 and _policy is not None:
        _policy.stop()
        _policy = None


def current() -> FreezeSurvivors | None:
    """The process's running policy, if any."""
    return _policy


__all__ = ["CollectorStats", "FreezeSurvivors", "current", "start", "stop"]
