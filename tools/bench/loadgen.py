"""The load generator: worker processes that hold sockets, send on a schedule and time arrivals.

Each worker is a separate process with its own event loop, so the generator can use both cores.
Both users of a pair live in the same worker, so the send time and the arrival time of a message
are read from the same clock (CLOCK_MONOTONIC, which is also what lets the parent start every
worker's step at the same instant). The parent drives a worker with small RPCs over a pipe:
``("method", {kwargs})`` -> result, one at a time.

Every message id is accounted for: sent, acknowledged, arrived (once, or more: a duplicate),
so each scenario can report ``lost`` (acknowledged but never arrived) and ``duplicated``.
"""

from __future__ import annotations

import array
import asyncio
import contextlib
import os
import resource
import secrets
import time
from collections import Counter
from collections.abc import Callable
from multiprocessing.connection import Connection as Pipe
from typing import Any

from websockets.asyncio.client import ClientConnection
from websockets.exceptions import ConnectionClosed, InvalidStatus

from tools.bench.procs import raise_nofile
from tools.bench.wsclient import Endpoint, open_socket

CONNECT_CONCURRENCY = 64
_FAST_TYPES = ('{"type":"message"', '{"type":"ack"')


def cpu_now() -> float:
    """This process's CPU seconds so far."""
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


class IdSource:
    """Canonical UUID-shaped ids, unique per worker and run: a random prefix and a counter."""

    def __init__(self) -> None:
        raw = secrets.token_hex(10)
        self.prefix = f"{raw[:8]}-{raw[8:12]}-{raw[12:16]}-{raw[16:20]}-"
        self.count = 0

    def next(self) -> str:
        self.count += 1
        return f"{self.prefix}{self.count:012x}"


def send_text(message_id: str, to: str, envelope_json: str) -> str:
    """The client's ``send`` frame, built as text (the envelope is canonical JSON already)."""
    return f'{{"type":"send","id":"{message_id}","to":"{to}","envelope":{envelope_json}}}'


def frame_kind_and_id(text: str) -> tuple[str, str | None, dict[str, Any] | None]:
    """The frame's type and id; the two hot frame types are read without a full JSON parse."""
    if text.startswith(_FAST_TYPES):
        at = text.find('"id":"')
        if at > 0:
            kind = "message" if text[9] == "m" else "ack"
            return kind, text[at + 6 : at + 42], None
    import json

    frame = json.loads(text)
    return str(frame.get("type")), frame.get("id"), frame


class Worker:
    """One process's share of the users: their sockets and the bookkeeping of every message."""

    def __init__(self, endpoint: Endpoint, envelope_json: str) -> None:
        self.endpoint = endpoint
        self.envelope_json = envelope_json
        self.ids = IdSource()
        self.sockets: dict[str, list[ClientConnection]] = {}
        self.readers: list[asyncio.Task[None]] = []
        self.sent_at: dict[str, float] = {}
        self.step_of: dict[str, int] = {}
        self.recipient_of: dict[str, str] = {}
        self.acked: set[str] = set()
        self.received: dict[str, Counter[str]] = {}
        self.latencies: dict[int, array.array[float]] = {}
        self.window: tuple[int, float, float] = (-1, 0.0, 0.0)
        self.in_window: Counter[int] = Counter()
        self.errors: Counter[str] = Counter()
        self.closes: Counter[str] = Counter()
        self.synced: dict[int, asyncio.Event] = {}  # by id() of the socket
        self.last_seq: dict[str, int] = {}
        self.cookie_of: dict[str, str] = {}

    # Connections ---------------------------------------------------------------------------

    async def connect(self, users: list[tuple[str, str]], per_user: int = 1) -> dict[str, Any]:
        """Open ``per_user`` sockets for each (name, cookie); return how many opened, failed."""
        limit = asyncio.Semaphore(CONNECT_CONCURRENCY)
        failures: Counter[str] = Counter()
        started = time.monotonic()

        async def one(name: str, cookie: str) -> None:
            async with limit:
                try:
                    ws = await open_socket(self.endpoint, name, cookie)
                except InvalidStatus as error:
                    failures[f"http_{error.response.status_code}"] += 1
                    return
                except (OSError, TimeoutError) as error:
                    failures[type(error).__name__] += 1
                    return
            self.sockets.setdefault(name, []).append(ws)
            self.received.setdefault(name, Counter())
            self.readers.append(asyncio.create_task(self._read(name, ws)))

        await asyncio.gather(*(one(n, c) for n, c in users for _ in range(per_user)))
        opened = sum(len(v) for v in self.sockets.values())
        return {"opened": opened, "failed": dict(failures), "seconds": time.monotonic() - started}

    async def close_all(self) -> dict[str, Any]:
        """Close every socket; report what happened to them along the way."""
        sockets = [ws for group in self.sockets.values() for ws in group]
        for start in range(0, len(sockets), 500):
            await asyncio.gather(
                *(ws.close() for ws in sockets[start : start + 500]), return_exceptions=True
            )
        for task in self.readers:
            task.cancel()
        await asyncio.gather(*self.readers, return_exceptions=True)
        self.sockets.clear()
        self.readers.clear()
        return {"closes": dict(self.closes), "errors": dict(self.errors)}

    async def _read(self, name: str, ws: ClientConnection) -> None:
        try:
            async for text in ws:
                self._on_frame(name, text, id(ws))  # type: ignore[arg-type]
        except ConnectionClosed as closed:
            if closed.rcvd is not None and closed.rcvd.code != 1000:
                self.closes[f"{closed.rcvd.code} {closed.rcvd.reason}"] += 1

    def _on_frame(self, name: str, text: str, socket_id: int) -> None:
        now = time.monotonic()
        kind, frame_id, frame = frame_kind_and_id(text)
        if kind == "message" and frame_id is not None:
            self._arrived(name, frame_id, now, text if frame is None else None, frame)
        elif kind == "ack" and frame_id is not None:
            self.acked.add(frame_id)
        elif kind == "synced" and frame is not None:
            self.last_seq[name] = max(self.last_seq.get(name, 0), int(frame.get("seq") or 0))
            event = self.synced.get(socket_id)
            if event is not None:
                event.set()
        elif kind == "error" and frame is not None:
            self.errors[str(frame.get("code"))] += 1

    def _arrived(
        self, name: str, message_id: str, now: float, text: str | None, frame: Any
    ) -> None:
        got = self.received[name]
        got[message_id] += 1
        if got[message_id] > 1:
            return  # a duplicate: counted in the summary
        seq = _seq_of(text) if text is not None else int(frame.get("seq", 0))
        if seq > self.last_seq.get(name, 0):
            self.last_seq[name] = seq
        sent = self.sent_at.pop(message_id, None)
        if sent is None:
            return
        step = self.step_of.get(message_id, -1)
        self.latencies.setdefault(step, array.array("d")).append((now - sent) * 1000.0)
        index, start, end = self.window
        if step == index and start <= now <= end:
            self.in_window[step] += 1

    # Live ----------------------------------------------------------------------------------

    async def step(
        self, index: int, rate: float, start_at: float, duration: float, pairs: list[list[str]]
    ) -> dict[str, Any]:
        """Send at ``rate`` msgs/s from ``start_at`` for ``duration`` s, round-robin over pairs.

        Open loop: the schedule does not wait for acks. Each pair [a, b] sends a->b and b->a
        alternately. Returns what was sent and what arrived by the end of the drain wait.
        """
        senders = [(self.sockets[a][0], a, b) for a, b in pairs] + [
            (self.sockets[b][0], b, a) for a, b in pairs
        ]
        await asyncio.sleep(max(0.0, start_at - time.monotonic()))
        cpu0 = cpu_now()
        end = start_at + duration
        self.window = (index, start_at, end + 0.0)
        sent, turn, max_lag = 0, 0, 0.0
        envelope = self.envelope_json
        while (now := time.monotonic()) < end:
            due = int(rate * (now - start_at)) - sent
            max_lag = max(max_lag, due / rate if rate else 0.0)
            for _ in range(due):
                ws, _sender, to = senders[turn]
                turn = (turn + 1) % len(senders)
                message_id = self.ids.next()
                self.step_of[message_id] = index
                self.recipient_of[message_id] = to
                self.sent_at[message_id] = time.monotonic()
                with contextlib.suppress(ConnectionClosed):
                    await ws.send(send_text(message_id, to, envelope))
                sent += 1
            await asyncio.sleep(0.001)
        step_ids = [m for m, s in self.step_of.items() if s == index]
        await wait_until(lambda: not any(m in self.sent_at for m in step_ids), within=10.0)
        latencies = self.latencies.get(index, array.array("d"))
        return {
            "sent": sent,
            "acked": sum(1 for m in step_ids if m in self.acked),
            "arrived": len(latencies),
            "in_window": self.in_window[index],
            "latencies_ms": latencies.tobytes(),
            "max_lag_s": max_lag,
            "cpu_s": cpu_now() - cpu0,
            "errors": dict(self.errors),
            "closes": dict(self.closes),
        }

    def accounting(self) -> dict[str, Any]:
        """Across everything sent: acked, arrived once, lost (acked, never arrived), duplicated."""
        arrived = {m for got in self.received.values() for m in got}
        duplicated = sum(n - 1 for got in self.received.values() for n in got.values() if n > 1)
        sent_ids = set(self.step_of)
        lost = sum(1 for m in self.acked if m in sent_ids and m not in arrived)
        return {
            "sent": len(sent_ids),
            "acked": len(self.acked & sent_ids),
            "arrived": len(arrived & sent_ids),
            "lost": lost,
            "duplicated": duplicated,
            "unacked": len(sent_ids - self.acked),
        }

    # Offline drain -------------------------------------------------------------------------

    async def fill(self, pairs: list[list[str]], per_pair: int, rate_per_socket: float) -> dict:
        """Each pair's first user sends ``per_pair`` messages to the second (who is offline)."""
        started = time.monotonic()

        async def one(sender: str, to: str) -> None:
            ws = self.sockets[sender][0]
            for n in range(per_pair):
                message_id = self.ids.next()
                self.step_of[message_id] = 0
                self.recipient_of[message_id] = to
                await ws.send(send_text(message_id, to, self.envelope_json))
                # Stay under the server's per-connection flood limit.
                await asyncio.sleep(
                    max(0.0, started + (n + 1) / rate_per_socket - time.monotonic())
                )

        await asyncio.gather(*(one(a, b) for a, b in pairs))
        ids = list(self.step_of)
        await wait_until(lambda: all(m in self.acked for m in ids), within=30.0)
        expected: dict[str, list[str]] = {}
        for message_id in ids:
            if message_id in self.acked:
                expected.setdefault(self.recipient_of[message_id], []).append(message_id)
        return {
            "sent": len(ids),
            "acked": sum(1 for m in ids if m in self.acked),
            "seconds": time.monotonic() - started,
            "expected": expected,
            "errors": dict(self.errors),
            "closes": dict(self.closes),
        }

    async def sync_all(self, expected: dict[str, list[str]], start_at: float) -> dict[str, Any]:
        """Connect each recipient at ``start_at``, sync from 0 until it has all it expects."""
        users = list(expected)
        await asyncio.sleep(max(0.0, start_at - time.monotonic()))
        done_at: dict[str, float] = {}
        sync_started: dict[str, float] = {}
        cpu0 = cpu_now()

        async def one(name: str, cookie: str) -> None:
            await self.connect([(name, cookie)])
            ws = self.sockets[name][0]
            sync_started[name] = time.monotonic()
            want = len(expected[name])
            after = 0
            for _round in range(100):
                event = self.synced[id(ws)] = asyncio.Event()
                await ws.send(f'{{"type":"sync","after":{after}}}')
                await asyncio.wait_for(event.wait(), timeout=60)
                have = len(self.received[name])
                if have >= want or self.last_seq.get(name, 0) <= after:
                    break
                after = self.last_seq[name]
            done_at[name] = time.monotonic()

        await asyncio.gather(*(one(name, cookie) for name, cookie in self.cookies(users)))
        return self._drain_report(expected, start_at, done_at, sync_started, cpu0)

    def cookies(self, names: list[str]) -> list[tuple[str, str]]:
        return [(name, self.cookie_of[name]) for name in names]

    def remember_cookies(self, users: list[tuple[str, str]]) -> None:
        self.cookie_of = dict(users)

    def _drain_report(
        self,
        expected: dict[str, list[str]],
        start_at: float,
        done_at: dict[str, float],
        sync_started: dict[str, float],
        cpu0: float,
    ) -> dict[str, Any]:
        lost = duplicated = delivered = 0
        for name, ids in expected.items():
            got = self.received.get(name, Counter())
            lost += sum(1 for m in ids if m not in got)
            duplicated += sum(n - 1 for n in got.values() if n > 1)
            delivered += sum(1 for m in ids if m in got)
        return {
            "delivered": delivered,
            "lost": lost,
            "duplicated": duplicated,
            "last_done": max(done_at.values(), default=start_at),
            "first_sync": min(sync_started.values(), default=start_at),
            "cpu_s": cpu_now() - cpu0,
            "errors": dict(self.errors),
            "closes": dict(self.closes),
        }

    # Capacity ------------------------------------------------------------------------------

    async def sync_each(self) -> dict[str, Any]:
        """Every socket syncs once (as a page does on connect) and waits for ``synced``."""
        started = time.monotonic()
        limit = asyncio.Semaphore(CONNECT_CONCURRENCY)

        async def one(ws: ClientConnection) -> bool:
            async with limit:
                event = self.synced[id(ws)] = asyncio.Event()
                try:
                    await ws.send('{"type":"sync","after":0}')
                    await asyncio.wait_for(event.wait(), timeout=30)
                except (ConnectionClosed, TimeoutError):
                    return False
                return True

        done = await asyncio.gather(
            *(
                one(ws)
                for group in self.sockets.values()
                for ws in group
                if id(ws) not in self.synced
            )
        )
        return {"synced": sum(done), "seconds": time.monotonic() - started}

    async def alive(self) -> dict[str, Any]:
        """How many sockets are still open."""
        open_count = sum(
            1 for group in self.sockets.values() for ws in group if ws.close_code is None
        )
        return {"open": open_count, "closes": dict(self.closes)}


async def wait_until(condition: Callable[[], bool], within: float) -> bool:
    """Poll ``condition`` every 50 ms for at most ``within`` s (the bookkeeping has no events)."""
    deadline = time.monotonic() + within
    while not condition():
        if time.monotonic() >= deadline:
            return False
        await asyncio.sleep(0.05)
    return True


def _seq_of(text: str) -> int:
    at = text.find('"seq":')
    if at < 0:
        return 0
    end = text.find(",", at)
    try:
        return int(text[at + 6 : end])
    except ValueError:
        return 0


def worker_main(pipe: Pipe, endpoint: Endpoint, envelope_json: str, cpu: int | None) -> None:
    """Process entry point: serve RPCs from the parent until it says ``exit``."""
    raise_nofile()
    if cpu is not None:
        os.sched_setaffinity(0, {cpu})
    asyncio.run(_serve(pipe, Worker(endpoint, envelope_json)))


async def _serve(pipe: Pipe, worker: Worker) -> None:
    while True:
        method, kwargs = await asyncio.to_thread(pipe.recv)
        if method == "exit":
            await worker.close_all()
            pipe.send(None)
            return
        handler: Callable[..., Any] = getattr(worker, method)
        try:
            result = handler(**kwargs)
            if asyncio.iscoroutine(result):
                result = await result
            pipe.send(("ok", result))
        except Exception as error:  # reported to the parent, which fails the scenario
            pipe.send(("error", f"{type(error).__name__}: {error}"))
