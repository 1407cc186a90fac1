"""The group fan-out scenario: one group with every member connected, a ramp of group sends.

Issue 13's target: a 100-member group with every member's socket open; the rate of group
messages the server holds with p99 < 50 ms from a send to its arrival at the *last* member, and
the server's CPU per delivered copy beside the same figure for pairwise messages.

The group is created with a real signed creation entry (the server checks it as a client
would). The messages are shaped like real ones (a group wire object of about 1 KiB) but carry
random bytes: the server checks shape and size, never content, and a load generator sharing the
server's two cores must not spend them on AES and Ed25519. Senders are ten members taking turns,
each far under the per-account send rate the scenario's server is given. The member sockets read
frames as text and look only for the message id, so the generator spends as little as it can
per copy; its CPU is reported beside the server's.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import hashlib
import json
import os
import time
import uuid
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import websockets
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ed25519

from securechat.client import ChatConnection, SecureChatClient
from securechat.groups.membership import Action, Subject, entry_hash, sign_entry
from tools.bench.accounts import KeyMaterial
from tools.bench.procs import Server
from tools.bench.wsclient import Endpoint, open_chat

# The target: p99 from a send to its arrival at the last member.
P99_TARGET_MS = 50.0
SENDERS = 10
# A group message as the page sends one: about 1 KiB of ciphertext once base64'd.
CIPHERTEXT_BYTES = 760
# The pairwise reference's rate cap, in messages (copies) per second.
PAIR_REFERENCE_MAX = 1000.0


@dataclass(frozen=True)
class Step:
    """One rate held for ``seconds``: what arrived, and when."""

    rate: float
    sent: int
    copies: int
    lost: int
    duplicated: int
    p50_ms: float
    p99_ms: float
    server_cpu_us_per_copy: float
    generator_cpu_s: float
    # The first error frames the senders got (a refused send is lost to the count above).
    errors: list[str]

    @property
    def held(self) -> bool:
        return self.lost == 0 and self.p99_ms < P99_TARGET_MS


def sign_key(material: KeyMaterial) -> ed25519.Ed25519PrivateKey:
    """The identity's Ed25519 private key (the bench shares identities among accounts)."""
    _enc, sign = material.identity.to_pkcs8()
    key = serialization.load_der_private_key(sign, password=None)
    assert isinstance(key, ed25519.Ed25519PrivateKey)
    return key


def fingerprint(material: KeyMaterial) -> bytes:
    return hashlib.sha256(material.identity.sign_public_spki).digest()


def creation_entry(
    group_id: bytes, names: Sequence[str], materials: Sequence[KeyMaterial]
) -> bytes:
    """The first name creates the group with every other name (account ``i`` holds the
    identity ``materials[i % len(materials)]``, as tools/bench/accounts.py registers them)."""
    subjects = [
        Subject(name, fingerprint(materials[index % len(materials)]))
        for index, name in enumerate(names)
        if index
    ]
    return sign_entry(
        group_id=group_id,
        seq=0,
        prev_hash=bytes(32),
        action=Action.CREATE,
        written_ms=int(time.time() * 1000),
        actor=names[0],
        subjects=subjects,
        detail=os.urandom(48),  # stands for the encrypted name
        sign_key=sign_key(materials[0]),
    )


def wire_envelope(iteration: int) -> dict[str, Any]:
    """A group wire object of the real shape and size (random bytes: see the module doc)."""

    def b64(size: int) -> str:
        return base64.b64encode(os.urandom(size)).decode()

    return {
        "v": 1,
        "cid": b64(16),
        "it": iteration,
        "iv": b64(12),
        "ct": b64(CIPHERTEXT_BYTES),
        "sig": b64(64),
    }


class Member:
    """One member's socket, noting when each message id first arrives (and repeats)."""

    def __init__(self, chat: ChatConnection) -> None:
        self.chat = chat
        self.arrived: dict[str, float] = {}
        self.repeats = 0
        # Error frames this socket got (a refused send): the first few, for the report.
        self.errors: list[str] = []
        self.task = asyncio.create_task(self._read())

    async def _read(self) -> None:
        """Note each message's first arrival; a socket the server closes just stops (what
        it did not receive counts as lost)."""
        with contextlib.suppress(websockets.ConnectionClosed):
            await self._note_arrivals()

    async def _note_arrivals(self) -> None:
        socket = self.chat.socket
        async for text in socket:
            assert isinstance(text, str)
            if '"type":"error"' in text and len(self.errors) < 3:
                self.errors.append(text)
            if '"type":"group_message"' not in text and '"type":"message"' not in text:
                continue
            start = text.index('"id":"') + 6
            message_id = text[start : start + 36]
            if message_id in self.arrived:
                self.repeats += 1
            else:
                self.arrived[message_id] = time.perf_counter()


async def run_group_fanout(
    server: Server,
    users: Sequence[tuple[str, str]],
    materials: Sequence[KeyMaterial],
    envelope: str,
    rates: Sequence[float],
    step_seconds: float,
) -> dict[str, Any]:
    """Create one group of every user, open every member's socket, then hold each rate of
    ``rates`` for ``step_seconds`` until one misses the target. The pairwise reference runs
    at the copies per second last held (at most PAIR_REFERENCE_MAX messages/s, well under
    what one process holds pairwise: docs/performance.md), on the same sockets."""
    names = [name for name, _ in users]
    endpoint = Endpoint(server.url, "cookie", compression=False)
    client = SecureChatClient(server.url)
    try:
        client.session_cookie = users[0][1]
        entry = creation_entry(os.urandom(16), names, materials)
        created = await client.call(
            "POST", "/api/v1/groups", {"entry": base64.b64encode(entry).decode()}
        )
        group = str(created["group"])
        head = base64.b64encode(entry_hash(entry)).decode()
        members = [
            Member(await open_chat(client, endpoint, name, cookie)) for name, cookie in users
        ]
        steps: list[Step] = []
        for rate in rates:
            step = await _group_step(server, members, group, head, rate, step_seconds)
            steps.append(step)
            if not step.held:
                break
        held = [s for s in steps if s.held]
        best = held[-1] if held else None
        copies_per_s = (best.rate if best else rates[0]) * (len(users) - 1)
        pairwise = await _pair_step(
            server,
            members,
            names,
            json.loads(envelope),
            min(copies_per_s, PAIR_REFERENCE_MAX),
            step_seconds,
        )
        for member in members:
            member.task.cancel()
            await member.chat.close()
    finally:
        await client.close()
    return {
        "members": len(users),
        "held_msgs_per_s": best.rate if best else 0.0,
        "held_copies_per_s": best.rate * (len(users) - 1) if best else 0.0,
        "p50_ms_at_held": best.p50_ms if best else None,
        "p99_ms_at_held": best.p99_ms if best else None,
        "server_cpu_us_per_group_copy": best.server_cpu_us_per_copy if best else None,
        "server_cpu_us_per_pair_copy": pairwise.server_cpu_us_per_copy,
        "pairwise_reference": vars(pairwise),
        "lost": sum(s.lost for s in steps) + pairwise.lost,
        "duplicated": sum(s.duplicated for s in steps) + pairwise.duplicated,
        "steps": [vars(s) for s in steps],
    }


async def _group_step(
    server: Server, members: list[Member], group: str, head: str, rate: float, seconds: float
) -> Step:
    """Group sends at ``rate`` by the first SENDERS members in turn; every other member must
    receive each (a sender's own sockets get no copy of what it sent)."""
    senders = members[: _senders(members)]
    frames = []
    sender_of: dict[str, Member] = {}
    for index in range(max(1, int(rate * seconds))):
        message_id = str(uuid.uuid4())
        sender = senders[index % len(senders)]
        sender_of[message_id] = sender
        frame = {
            "type": "send",
            "id": message_id,
            "group": group,
            "head": head,
            "envelope": wire_envelope(index),
        }
        frames.append((message_id, sender, _text(frame)))

    def receivers(message_id: str) -> list[Member]:
        return [m for m in members if m is not sender_of[message_id]]

    return await _measure(server, members, frames, rate, seconds, receivers)


async def _pair_step(
    server: Server,
    members: list[Member],
    names: list[str],
    envelope: dict[str, Any],
    rate: float,
    seconds: float,
) -> Step:
    """The reference: pairwise messages (one copy each, a real envelope of about the same
    size) at ``rate`` from the senders to the other members in turn."""
    senders = members[: _senders(members)]
    frames = []
    recipient_of: dict[str, Member] = {}
    for index in range(max(1, int(rate * seconds))):
        message_id = str(uuid.uuid4())
        target = len(senders) + index % (len(members) - len(senders))
        recipient_of[message_id] = members[target]
        frame = {"type": "send", "id": message_id, "to": names[target], "envelope": envelope}
        frames.append((message_id, senders[index % len(senders)], _text(frame)))
    return await _measure(
        server, members, frames, rate, seconds, lambda message_id: [recipient_of[message_id]]
    )


async def _measure(
    server: Server,
    members: list[Member],
    frames: list[tuple[str, Member, str]],
    rate: float,
    seconds: float,
    receivers: Callable[[str], list[Member]],
) -> Step:
    """Send ``frames`` at ``rate``, wait for every copy (at most ``seconds`` more), and take
    each message's latency to its last receiver, and the server's CPU per copy."""
    sent_at: dict[str, float] = {}
    cpu_before = server.cpu_seconds()
    generator_before = time.process_time()
    await _paced(frames, rate, sent_at)
    await _settle(sent_at, receivers, seconds)
    server_cpu = server.cpu_seconds() - cpu_before
    latencies: list[float] = []
    lost = copies = 0
    for message_id, started in sent_at.items():
        arrivals = [m.arrived.get(message_id) for m in receivers(message_id)]
        present = [a for a in arrivals if a is not None]
        copies += len(present)
        if len(present) < len(arrivals):
            lost += 1
        elif present:
            latencies.append((max(present) - started) * 1000)
    duplicated = sum(m.repeats for m in members)
    errors = [text for m in members for text in m.errors][:3]
    for member in members:
        member.errors.clear()
        member.arrived.clear()
        member.repeats = 0
    return Step(
        rate=rate,
        sent=len(frames),
        copies=copies,
        lost=lost,
        duplicated=duplicated,
        p50_ms=_percentile(latencies, 50),
        p99_ms=_percentile(latencies, 99),
        server_cpu_us_per_copy=round(server_cpu / max(copies, 1) * 1e6, 1),
        generator_cpu_s=round(time.process_time() - generator_before, 2),
        errors=errors,
    )


async def _paced(
    frames: list[tuple[str, Member, str]], rate: float, sent_at: dict[str, float]
) -> None:
    """Send the frames at ``rate``, on schedule (a late one is sent at once, not skipped)."""
    start = time.perf_counter()
    for index, (message_id, sender, text) in enumerate(frames):
        delay = start + index / rate - time.perf_counter()
        if delay > 0:
            await asyncio.sleep(delay)
        sent_at[message_id] = time.perf_counter()
        await sender.chat.socket.send(text)


async def _settle(
    sent_at: dict[str, float], receivers: Callable[[str], list[Member]], seconds: float
) -> None:
    """Wait until every receiver holds every message, at most ``seconds`` (then what is
    missing counts as lost)."""
    deadline = time.perf_counter() + seconds
    waiting = list(sent_at)
    while waiting and time.perf_counter() < deadline:
        waiting = [mid for mid in waiting if any(mid not in m.arrived for m in receivers(mid))]
        if waiting:
            await asyncio.sleep(0.05)


def _senders(members: list[Member]) -> int:
    """How many members send: SENDERS, or half of a small group."""
    return max(1, min(SENDERS, len(members) // 2))


def _text(frame: dict[str, Any]) -> str:
    return json.dumps(frame, separators=(",", ":"))


def _percentile(values: list[float], pct: float) -> float:
    if not values:
        return float("nan")
    ordered = sorted(values)
    index = min(len(ordered) - 1, round(pct / 100 * (len(ordered) - 1)))
    return round(ordered[index], 2)


__all__ = ["P99_TARGET_MS", "run_group_fanout"]
