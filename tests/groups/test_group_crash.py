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

import pytest

from securechat import e2e
from tests.chat.test_crash import start_server
from tests.groups import groupkit
from tests.groups.groupkit import Exchange
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
        sent = Exchange()
        async with asyncio.timeout(120):
            await asyncio.gather(
                *(
                    groupkit.send_until_killed(
                        m, group, PER_SENDER, sent, first.kill, KILL_AFTER_ACKS
                    )
                    for m in people[:SENDERS]
                )
            )
        assert first.process.poll() is not None, "the server was not killed"
        assert len(sent.acks) >= KILL_AFTER_ACKS  # acks already on their way count too
    finally:
        for member in people:
            with contextlib.suppress(Exception):
                await member.client.close()

    processes.append(second := start_server(data_dir, log))
    again = [await groupkit.join(await groupkit.log_in(second.url, name)) for name in names]
    try:
        async with asyncio.timeout(120):
            await groupkit.read_acked(again, sent)
        groupkit.check_acked_once_in_order(again, sent)
    finally:
        await groupkit.close_all(again)
