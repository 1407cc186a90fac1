"""The parent's side of the load generator: start worker processes, call them, stop them."""

from __future__ import annotations

import multiprocessing
import threading
from multiprocessing.connection import Connection as Pipe
from multiprocessing.process import BaseProcess
from typing import Any

from tools.bench.loadgen import worker_main
from tools.bench.wsclient import Endpoint


class WorkerError(RuntimeError):
    """A worker's RPC raised."""


class Pool:
    """``size`` load-generator processes; ``call`` runs one method on each, in parallel.

    The processes live for the whole run; ``target`` points them at the next server.
    """

    def __init__(self, size: int, envelope_json: str, cpus: list[int] | None = None) -> None:
        # fork is much quicker than spawn (nothing to import again); it is only safe while this
        # process has no other thread, which is the case: the parent does nothing concurrent.
        context = (
            multiprocessing.get_context("fork")
            if threading.active_count() == 1
            else multiprocessing.get_context("spawn")
        )
        self.pipes: list[Pipe] = []
        self.procs: list[BaseProcess] = []
        for index in range(size):
            parent_end, child_end = context.Pipe()
            cpu = cpus[index % len(cpus)] if cpus else None
            proc = context.Process(
                target=worker_main,
                args=(child_end, envelope_json, cpu),
                name=f"bench-worker-{index}",
                daemon=True,
            )
            proc.start()
            child_end.close()
            self.pipes.append(parent_end)
            self.procs.append(proc)

    @property
    def size(self) -> int:
        return len(self.pipes)

    def pids(self) -> list[int]:
        return [proc.pid for proc in self.procs if proc.pid is not None]

    def target(self, endpoint: Endpoint) -> None:
        """Close every socket, forget everything, and aim at ``endpoint`` from now on."""
        self.call_all("target", endpoint=endpoint)

    def call(
        self, method: str, per_worker: list[dict[str, Any]], timeout: float = 600
    ) -> list[Any]:
        """Call ``method`` on every worker with its own kwargs; return their results in order."""
        for pipe, kwargs in zip(self.pipes, per_worker, strict=True):
            pipe.send((method, kwargs))
        results = []
        for index, pipe in enumerate(self.pipes):
            if not pipe.poll(timeout):
                raise WorkerError(f"worker {index}: {method} timed out after {timeout} s")
            status, value = pipe.recv()
            if status != "ok":
                raise WorkerError(f"worker {index}: {method}: {value}")
            results.append(value)
        return results

    def call_all(self, method: str, timeout: float = 600, **kwargs: Any) -> list[Any]:
        """Call ``method`` with the same kwargs on every worker."""
        return self.call(method, [kwargs] * self.size, timeout)

    def close(self) -> None:
        """Ask each worker to close its sockets and exit; kill any that does not."""
        for pipe in self.pipes:
            try:
                pipe.send(("exit", {}))
            except OSError:
                continue
        for pipe, proc in zip(self.pipes, self.procs, strict=True):
            try:
                if pipe.poll(60):
                    pipe.recv()
            except (OSError, EOFError):
                pass
            proc.join(10)
            if proc.is_alive():
                proc.kill()
                proc.join(5)
            pipe.close()

    def __enter__(self) -> Pool:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()


def split(items: list[Any], parts: int) -> list[list[Any]]:
    """``items`` dealt into ``parts`` lists, round-robin."""
    return [items[index::parts] for index in range(parts)]
