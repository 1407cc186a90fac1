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

from websockets.exceptions import ConnectionClosed, InvalidHandshake, InvalidStatus

from securechat.client import ChatClosed, ChatConnection, SecureChatClient
from tools.bench.procs import raise_nofile
from tools.bench.wsclient import READ_WAIT, Endpoint, open_chat

CONNECT_CONCURRENCY = 64


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


class Worker:
    """One process's share of the users: their sockets and the bookkeeping of every message."""

    def __init__(self, endpoint: Endpoint, envelope_json: str) -> None:
        self.endpoint = endpoint
        self.envelope_json = envelope_json
        # One client (one HTTP pool) per node for all of this worker's sockets there; see
        # wsclient.open_chat.
        self.clients = [SecureChatClient(url, min_iterations=1) for url in endpoint.nodes]
        self.ids = IdSource()
        self.sockets: dict[str, list[ChatConnection]] = {}
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
        self.synced: set[int] = set()  # id() of the sockets that have synced
        self.cookie_of: dict[str, str] = {}

    # Connections ---------------------------------------------------------------------------

    async def connect(
        self, users: list[tuple[str, str]], per_user: int = 1, read: bool = True
    ) -> dict[str, Any]:
        """Open ``per_user`` sockets for each (name, cookie); with ``read``, read them all."""
        limit = asyncio.Semaphore(CONNECT_CONCURRENCY)
        failures: Counter[str] = Counter()
        started = time.monotonic()

        async def one(client: SecureChatClient, name: str, cookie: str) -> None:
            async with limit:
                try:
                    chat = await open_chat(client, self.endpoint, name, cookie)
                except InvalidStatus as error:
                    failures[f"http_{error.response.status_code}"] += 1
                    return
                except (OSError, TimeoutError, InvalidHandshake) as error:
                    failures[type(error).__name__] += 1
                    return
            self.sockets.setdefault(name, []).append(chat)
            self.received.setdefault(name, Counter())
            if read:
                self.readers.append(asyncio.create_task(self._read(name, chat)))

        # The i-th user on the i-th node, in turn: a pair [a, b] is split over two nodes.
        clients = [self.clients[i % len(self.clients)] for i in range(len(users))]
        await asyncio.gather(
            *(
                one(k, n, c)
                for k, (n, c) in zip(clients, users, strict=True)
                for _ in range(per_user)
            )
        )
        opened = sum(len(v) for v in self.sockets.values())
        return {"opened": opened, "failed": dict(failures), "seconds": time.monotonic() - started}

    async def close_all(self) -> dict[str, Any]:
        """Close every socket; report what happened to them along the way."""
        chats = [chat for group in self.sockets.values() for chat in group]
        for start in range(0, len(chats), 500):
            await asyncio.gather(
                *(chat.close() for chat in chats[start : start + 500]), return_exceptions=True
            )
        for task in self.readers:
            task.cancel()
        await asyncio.gather(*self.readers, return_exceptions=True)
        self.sockets.clear()
        self.readers.clear()
        return {"closes": dict(self.closes), "errors": dict(self.errors)}

    async def _read(self, name: str, chat: ChatConnection) -> None:
        try:
            while True:
                frame = await chat.receive(wait=READ_WAIT)
                chat.messages.clear()  # the client keeps every message; the bench need not
                self._on_frame(name, frame)
        except ChatClosed as closed:
            if closed.code != 1000:
                self.closes[f"{closed.code} {closed.reason}"] += 1

    def _on_frame(self, name: str, frame: dict[str, Any]) -> None:
        now = time.monotonic()
        kind = frame.get("type")
        if kind == "message":
            self._arrived(name, frame["id"], now)
        elif kind == "ack":
            self.acked.add(frame["id"])
        elif kind == "error":
            self.errors[str(frame.get("code"))] += 1

    def _arrived(self, name: str, message_id: str, now: float) -> None:
        got = self.received[name]
        got[message_id] += 1
        if got[message_id] > 1:
            return  # a duplicate: counted in the summary
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
        errors0, closes0 = Counter(self.errors), Counter(self.closes)
        end = start_at + duration
        self.window = (index, start_at, end + 0.0)
        sent, turn, max_lag = 0, 0, 0.0
        envelope = self.envelope_json
        while (now := time.monotonic()) < end:
            due = int(rate * (now - start_at)) - sent
            max_lag = max(max_lag, due / rate if rate else 0.0)
            for _ in range(due):
                chat, _sender, to = senders[turn]
                turn = (turn + 1) % len(senders)
                message_id = self.ids.next()
                self.step_of[message_id] = index
                self.sent_at[message_id] = time.monotonic()
                with contextlib.suppress(ConnectionClosed):
                    await chat.send_raw(send_text(message_id, to, envelope))
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
            "errors": dict(self.errors - errors0),
            "closes": dict(self.closes - closes0),
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

    async def fill(
        self, pairs: list[list[str]], per_pair: int, rate_per_socket: float
    ) -> dict[str, Any]:
        """Each pair's first user sends ``per_pair`` messages to the second (who is offline)."""
        started = time.monotonic()

        async def one(sender: str, to: str) -> None:
            chat = self.sockets[sender][0]
            for n in range(per_pair):
                message_id = self.ids.next()
                self.step_of[message_id] = 0
                self.recipient_of[message_id] = to
                await chat.send_raw(send_text(message_id, to, self.envelope_json))
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
        await asyncio.sleep(max(0.0, start_at - time.monotonic()))
        done_at: dict[str, float] = {}
        cpu0 = cpu_now()

        async def one(name: str, cookie: str) -> None:
            await self.connect([(name, cookie)], read=False)
            chat = self.sockets[name][0]
            want, after = len(expected[name]), 0
            for _round in range(100):  # the server may answer a sync in several batches
                for frame in await chat.sync(after):
                    if frame["type"] == "message":
                        self._arrived(name, frame["id"], time.monotonic())
                chat.messages.clear()
                if len(self.received[name]) >= want or chat.cursor <= after:
                    break
                after = chat.cursor
            done_at[name] = time.monotonic()

        await asyncio.gather(*(one(name, self.cookie_of[name]) for name in expected))
        return self._drain_report(expected, start_at, done_at, cpu0)

    def remember_cookies(self, users: list[tuple[str, str]]) -> None:
        self.cookie_of = dict(users)

    def _drain_report(
        self,
        expected: dict[str, list[str]],
        start_at: float,
        done_at: dict[str, float],
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
            "cpu_s": cpu_now() - cpu0,
            "errors": dict(self.errors),
            "closes": dict(self.closes),
        }

    # Capacity ------------------------------------------------------------------------------

    async def sync_each(self) -> dict[str, Any]:
        """Every socket not yet synced syncs once (as a page does on connect)."""
        started = time.monotonic()
        limit = asyncio.Semaphore(CONNECT_CONCURRENCY)

        async def one(chat: ChatConnection) -> bool:
            async with limit:
                try:
                    await chat.sync(0)
                except (ChatClosed, TimeoutError):
                    return False
                chat.messages.clear()
                self.synced.add(id(chat))
                return True

        done = await asyncio.gather(
            *(
                one(chat)
                for group in self.sockets.values()
                for chat in group
                if id(chat) not in self.synced
            )
        )
        return {"synced": sum(done), "seconds": time.monotonic() - started}

    async def alive(self) -> dict[str, Any]:
        """How many sockets are still open."""
        chats = [chat for group in self.sockets.values() for chat in group]
        return {
            "open": sum(1 for chat in chats if chat.close_code is None),
            # Sockets on which the server agreed to permessage-deflate (RFC 7692).
            "deflate": sum(1 for chat in chats if chat.socket.protocol.extensions),
            "closes": dict(self.closes),
        }


async def wait_until(condition: Callable[[], bool], within: float) -> bool:
    """Poll ``condition`` every 50 ms for at most ``within`` s (the bookkeeping has no events)."""
    deadline = time.monotonic() + within
    while not condition():
        if time.monotonic() >= deadline:
            return False
        await asyncio.sleep(0.05)
    return True


def worker_main(pipe: Pipe, envelope_json: str, cpu: int | None) -> None:
    """Process entry point: serve RPCs from the parent until it says ``exit``.

    ``("target", {"endpoint": ...})`` starts afresh against a server (closing any sockets and
    forgetting all bookkeeping); every other RPC is a method of the current :class:`Worker`.
    """
    raise_nofile()
    if cpu is not None:
        os.sched_setaffinity(0, {cpu})
    asyncio.run(_serve(pipe, envelope_json))


async def _serve(pipe: Pipe, envelope_json: str) -> None:
    worker: Worker | None = None
    while True:
        method, kwargs = await asyncio.to_thread(pipe.recv)
        if method in ("exit", "target") and worker is not None:
            await worker.close_all()
            for client in worker.clients:
                await client.close()
            worker = None
        if method == "exit":
            pipe.send(None)
            return
        try:
            if method == "target":
                worker = Worker(kwargs["endpoint"], envelope_json)
                result: Any = None
            elif worker is None:
                raise RuntimeError(f"{method}: no target server yet (call target first)")
            else:
                handler: Callable[..., Any] = getattr(worker, method)
                result = handler(**kwargs)
                if asyncio.iscoroutine(result):
                    result = await result
            pipe.send(("ok", result))
        except Exception as error:  # reported to the parent, which fails the scenario
            pipe.send(("error", f"{type(error).__name__}: {error}"))
