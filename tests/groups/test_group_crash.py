"""Durability of groups: a real server process killed with SIGKILL loses no acknowledged group
message (the group version of tests/chat/test_crash.py).

The server runs as `python -m hypercorn` with the project's config, over SQLite, in a process
group of its own. Three members of a six-member group send at once; the moment the 40th ack is
in, the whole process group is killed, more sends in flight. After a restart on the same data
directory every member, with a fresh client reading from position 0, gets every acknowledged
message of the others exactly once, at its acked position, in position order.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from securechat import e2e
from securechat.client import ChatClosed
from tests.chat.test_crash import start_server
from tests.groups import groupkit
from tests.groups.groupkit import Exchange, Member
from tools.cluster import Node

MEMBERS = 6
SENDERS = 3
PER_SENDER = 40
KILL_AFTER_ACKS = 40


@pytest.fixture(name="processes")
def _processes() -> Iterator[list[Node]]:
    started: list[Node] = []
    yield started
    for server in started:
        server.kill()


async def _send_until_killed(
    sender: Member, group: str, node: Node, sent: Exchange, senders_done: list[str]
) -> None:
    """Send PER_SENDER messages one after the other; kill the server at the KILL_AFTER_ACKS-th
    ack of all senders together (the others' sends are then in flight)."""
    try:
        for n in range(PER_SENDER):
            text = f"{sender.name} says {n}"
            ack = await sender.groups.send(group, text)
            sent.texts[ack["id"]], sent.acks[ack["id"]] = text, int(ack["seq"])
            sent.senders[ack["id"]] = sender.name
            if len(sent.acks) == KILL_AFTER_ACKS:
                node.kill()  # at once: no shutdown, no flush
                return
    except (ChatClosed, OSError, httpx.TransportError):
        return  # the server is gone under this send
    finally:
        senders_done.append(sender.name)


@pytest.mark.slow
async def test_acknowledged_group_messages_survive_sigkill(
    tmp_path: Path, processes: list[Node], identities: list[e2e.Identity]
) -> None:
    """Every group message acked before a SIGKILL is there after restart, once, in order."""
    data_dir, log = tmp_path / "data", tmp_path / "server.log"
    processes.append(first := start_server(data_dir, log))
    people = await groupkit.members([first.url], identities, MEMBERS, "crash")
    names = [m.name for m in people]
    try:
        group = await people[0].groups.create("Durable", names[1:])
        sent, done = Exchange(), list[str]()
        async with asyncio.timeout(120):
            await asyncio.gather(
                *(_send_until_killed(m, group, first, sent, done) for m in people[:SENDERS])
            )
        assert first.process.poll() is not None, "the server was not killed"
        assert len(sent.acks) == KILL_AFTER_ACKS
    finally:
        for member in people:
            with contextlib.suppress(Exception):
                await member.client.close()

    processes.append(second := start_server(data_dir, log))
    again = [await groupkit.join(await groupkit.log_in(second.url, name)) for name in names]
    try:
        async with asyncio.timeout(120):
            for member in again:
                theirs = {i for i, who in sent.senders.items() if who != member.name}
                while not theirs <= {m.id for m in member.got}:
                    member.got.append(await member.groups.receive(wait=groupkit.WAIT))
        for member in again:
            acked = [m for m in member.got if m.id in sent.acks]
            assert len({m.id for m in member.got}) == len(member.got)
            assert [m.seq for m in acked] == [sent.acks[m.id] for m in acked]
            assert [m.text for m in acked] == [sent.texts[m.id] for m in acked]
            assert [m.seq for m in member.got] == sorted(m.seq for m in member.got)
    finally:
        await groupkit.close_all(again)
