"""What-if patches, applied inside a server process only for an experiment, never by default.

Each proposal in docs/performance.md ("Proposed optimisations") that touches another
engineer's code is measured here first, by patching the running server instead of editing its
files. A server kind with ``+name`` suffixes (``ours-hypercorn+gclog``) starts with
``tools/bench/whatif`` on ``PYTHONPATH``, whose ``sitecustomize`` calls :func:`apply` with the
names before the app is imported.

- ``gclog``: log the garbage collector's pauses (how securechat/gcpolicy.py was found
  needed: full collections paused our server and the relays 100-175 ms every 15-20 s).
- ``procwriter``: the chat's commits in a process of their own, so the writer never waits
  for the event loop's GIL. Its commits took as long as on the writer thread: what the writer
  waits for under load is a core, not the GIL (docs/performance.md).

Earlier experiments measured here and since made real: ``fastsend`` (frames written without
Quart's per-frame ``accept()`` and ``sleep(0)``: securechat/chat/endpoint.py) and ``onehop`` (one
hand-over to SQLite's thread per commit: securechat/store/sqlite/database.py).
"""

from __future__ import annotations

import asyncio
import sqlite3
from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from securechat.store import BacklogBounds, CommitResult, NewMark, NewMessage
    from securechat.store.sqlite.messages import MessageStore

PATCHES: dict[str, Callable[[], None]] = {}


def patch(name: str) -> Callable[[Callable[[], None]], Callable[[], None]]:
    def register(function: Callable[[], None]) -> Callable[[], None]:
        PATCHES[name] = function
        return function

    return register


def apply(names: str) -> None:
    """Apply the ``+``-separated patches named (unknown names are an error)."""
    for name in filter(None, names.split("+")):
        PATCHES[name]()


@patch("gclog")
def _gc_log() -> None:
    """Append every garbage collection of 2 ms or more (with the objects tracked, after a
    full one) to securechat-gc-<pid>.log in the temporary directory."""
    import gc
    import os
    import tempfile
    import time

    path = os.path.join(tempfile.gettempdir(), f"securechat-gc-{os.getpid()}.log")

    started: list[float] = [0.0]

    def callback(phase: str, info: dict[str, int]) -> None:
        if phase == "start":
            started[0] = time.perf_counter()
            return
        ms = (time.perf_counter() - started[0]) * 1000
        if ms >= 2:
            with open(path, "a") as out:
                tracked = len(gc.get_objects()) if info["generation"] == 2 else 0
                out.write(
                    f"{time.time():.3f} gen{info['generation']} {ms:.1f} ms "
                    f"collected={info['collected']} tracked={tracked}\n"
                )

    gc.callbacks.append(callback)


@patch("switch")
def _switch_interval() -> None:
    """Hand the GIL over every 0.5 ms instead of 5 ms when another thread waits for it."""
    import sys

    sys.setswitchinterval(0.0005)


@patch("stalls")
def _stall_log() -> None:
    """Log the event loop thread's stack whenever the loop has not run a callback for 30 ms
    (to securechat-stalls-<pid>.log in the temporary directory)."""
    import os
    import sys
    import tempfile
    import threading
    import time
    import traceback

    path = os.path.join(tempfile.gettempdir(), f"securechat-stalls-{os.getpid()}.log")
    beat = [time.monotonic()]
    main = threading.main_thread()

    def heartbeat(loop: asyncio.AbstractEventLoop) -> None:
        beat[0] = time.monotonic()
        loop.call_later(0.005, heartbeat, loop)

    def watch() -> None:
        reported = 0.0
        while True:
            time.sleep(0.005)
            lag = time.monotonic() - beat[0]
            if lag > 0.03 and beat[0] != reported:
                reported = beat[0]
                frame = sys._current_frames().get(main.ident or 0)
                stack = "".join(traceback.format_stack(frame)[-12:]) if frame else "?"
                with open(path, "a") as out:
                    out.write(f"--- {time.time():.3f} lag {lag * 1000:.0f} ms\n{stack}\n")

    original = asyncio.BaseEventLoop.run_forever

    def run_forever(self: asyncio.BaseEventLoop) -> None:
        self.call_soon(heartbeat, self)
        threading.Thread(target=watch, daemon=True).start()
        original(self)

    asyncio.BaseEventLoop.run_forever = run_forever  # type: ignore[method-assign]


@patch("gcfreeze")
def _gc_freeze() -> None:
    """Run securechat/gcpolicy.py's collector policy in this process (for the bare relays:
    the same treatment of the garbage collector as our server gets)."""
    from securechat import gcpolicy

    gcpolicy.start(growth=1.0)


# procwriter: the writer process's own connection, opened by the pool's initializer.
_CHILD_CONNECTION: sqlite3.Connection | None = None


def _child_open(path: str, synchronous: str) -> None:
    global _CHILD_CONNECTION
    connection = sqlite3.connect(path, isolation_level=None)
    for pragma in (
        "PRAGMA journal_mode = WAL",
        f"PRAGMA synchronous = {synchronous}",
        "PRAGMA busy_timeout = 5000",
        "PRAGMA foreign_keys = ON",
        "PRAGMA wal_autocheckpoint = 0",
    ):
        connection.execute(pragma)
    _CHILD_CONNECTION = connection


def _child_commit(
    sends: Sequence[NewMessage],
    marks: Sequence[NewMark],
    now_ms: int,
    bounds: BacklogBounds | None,
) -> tuple[CommitResult, float]:
    import time

    from securechat.store import CommitResult
    from securechat.store.batch import Positions, backlog_changes
    from securechat.store.sqlite import messages as m

    connection = _CHILD_CONNECTION
    if connection is None:  # only a pool whose initializer is _child_open may call this
        raise RuntimeError("procwriter: the writer process has no connection (_child_open)")
    started = time.perf_counter()
    connection.execute("BEGIN IMMEDIATE")
    try:
        last_seq = int(connection.execute("SELECT last FROM chat_sequence").fetchone()[0])
        counter = Positions(last_seq)
        send_outcomes, created = m._store_sends(connection, sends, counter, now_ms, bounds)
        mark_outcomes, _ = m._apply_marks(connection, marks, counter, now_ms)
        m._write_backlog(connection, backlog_changes(created, marks, mark_outcomes))
        if counter.value != last_seq:
            connection.execute("UPDATE chat_sequence SET last = ? WHERE id = 1", (counter.value,))
        connection.execute("COMMIT")
    except BaseException:
        connection.execute("ROLLBACK")
        raise
    return CommitResult(counter.value, send_outcomes, mark_outcomes), time.perf_counter() - started


@patch("procwriter")
def _process_writer() -> None:
    """The chat's commits in a process of their own (its own GIL), through a
    ProcessPoolExecutor of one worker; every other write stays on the writer thread."""
    import multiprocessing
    from concurrent.futures import ProcessPoolExecutor

    from securechat.store.sqlite import messages as m

    pools: dict[str, ProcessPoolExecutor] = {}

    async def commit(
        self: MessageStore,
        sends: Sequence[NewMessage],
        marks: Sequence[NewMark],
        now_ms: int,
        bounds: BacklogBounds | None = None,
    ) -> CommitResult:
        pool = pools.get("pool")
        if pool is None:
            # Hypercorn's worker is a daemon, and a daemon may not start processes; the public
            # setter works in the child, where its own process object has no Popen.
            multiprocessing.current_process().daemon = False
            pool = pools["pool"] = ProcessPoolExecutor(
                1,
                mp_context=multiprocessing.get_context("spawn"),
                initializer=_child_open,
                initargs=(str(self.db.path), self.db.synchronous),
            )
        loop = asyncio.get_running_loop()
        result, seconds = await loop.run_in_executor(
            pool, _child_commit, list(sends), list(marks), now_ms, bounds
        )
        self.db.stats.record(1, seconds)
        return result

    m.MessageStore.commit = commit  # type: ignore[method-assign]
