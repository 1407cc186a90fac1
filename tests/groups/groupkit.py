"""Live group tests' helpers: members with a Python client, a chat socket and ``Groups`` each,
and the concurrent exchange that the exactly-once tests run on one server, after a crash, and
across a cluster's nodes."""

from __future__ import annotations

import asyncio
import itertools
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

import httpx

from securechat import e2e
from securechat.client import ChatClosed, ChatConnection, Groups, SecureChatClient
from securechat.client.groups import GROUP_FRAMES, GroupMessage
from tests.chatkit import PASSWORD, unique
from tests.conftest import FAST_ITERATIONS

# The live servers' settings for group tests: senders send as fast as their sockets take it.
FAST_SENDS: dict[str, object] = {
    "ws_frames_per_s": 100_000.0,
    "ws_frames_burst": 100_000,
    "sends_per_user_per_s": 100_000.0,
    "sends_per_user_burst": 100_000,
}
FAST_SENDS_ENV = {f"SECURECHAT_{k.upper()}": str(v) for k, v in FAST_SENDS.items()}
# Sign-ups sent at once: the server answers 503 busy past its password-hashing queue.
SIGN_UPS_AT_ONCE = 4
# Seconds a member waits for the next group message before the test fails.
WAIT = 60.0


@dataclass
class Member:
    """One person: their client, their chat socket and their groups."""

    name: str
    client: SecureChatClient
    chat: ChatConnection
    groups: Groups
    got: list[GroupMessage] = field(default_factory=list)

    async def reconnect(self, after: int | None, *, url: str | None = None) -> None:
        """A new chat socket from ``after`` (replayed first), on ``url`` (another node) if
        given, with the same session; the groups' state is kept."""
        if url is not None:
            moved = SecureChatClient(url, min_iterations=FAST_ITERATIONS)
            moved.session_cookie, moved.device_cookie = (
                self.client.session_cookie,
                self.client.device_cookie,
            )
            moved.account, moved.directory = self.client.account, self.client.directory
            await self.client.close()
            self.client = moved
        self.chat = await self.client.connect(after=after)
        self.groups.chat = self.chat

    async def settle(self, group: str) -> None:
        """Read group frames until the group's name is known (its creation and the chain and
        name key its creator handed me are in)."""
        async with asyncio.timeout(WAIT):
            while self.groups.name(group) is None:
                await self.groups.handle(await self.chat.wait_for_any(GROUP_FRAMES))

    async def read(self, count: int) -> None:
        """Receive until ``count`` group messages are in ``got``."""
        while len(self.got) < count:
            self.got.append(await self.groups.receive(wait=WAIT))


_identity_turn = itertools.count()


async def sign_up(url: str, identities: Sequence[e2e.Identity], prefix: str) -> SecureChatClient:
    """A new account on ``url`` with a pooled identity, logged in."""
    client = SecureChatClient(url, min_iterations=FAST_ITERATIONS)
    name = unique(prefix)
    identity = identities[next(_identity_turn) % len(identities)]
    await client.register(name, PASSWORD, iterations=FAST_ITERATIONS, identity=identity)
    await client.login(name, PASSWORD)
    return client


async def log_in(url: str, name: str) -> SecureChatClient:
    """Another session of ``name`` on ``url``."""
    client = SecureChatClient(url, min_iterations=FAST_ITERATIONS)
    await client.login(name, PASSWORD)
    return client


async def join(client: SecureChatClient) -> Member:
    """Connect ``client`` (from position 0) and give it groups."""
    assert client.account is not None
    chat = await client.connect()
    return Member(client.account.username, client, chat, Groups(chat))


async def members(
    urls: Sequence[str], identities: Sequence[e2e.Identity], count: int, prefix: str
) -> list[Member]:
    """``count`` new people, connected to ``urls`` in turn."""
    people = []
    for start in range(0, count, SIGN_UPS_AT_ONCE):
        batch = range(start, min(count, start + SIGN_UPS_AT_ONCE))
        clients = await asyncio.gather(
            *(sign_up(urls[i % len(urls)], identities, prefix) for i in batch)
        )
        people += await asyncio.gather(*(join(c) for c in clients))
    return people


async def close_all(people: Sequence[Member]) -> None:
    for member in people:
        await member.client.close()


@dataclass
class Exchange:
    """What a concurrent exchange sent: each message's text and the position its ack gave."""

    texts: dict[str, str] = field(default_factory=dict)
    acks: dict[str, int] = field(default_factory=dict)
    senders: dict[str, str] = field(default_factory=dict)


async def exchange(
    people: Sequence[Member],
    group: str,
    *,
    senders: Sequence[Member],
    per_sender: int,
    offline: Sequence[Member] = (),
    back_on: str | None = None,
) -> Exchange:
    """Every sender sends ``per_sender`` messages at once with the others, while everyone
    online reads; ``offline`` members close their socket first (at the cursor they had
    read to) and catch up by reconnecting with ``?after=`` once every send is acked (on the
    node ``back_on``, if given)."""
    cursors = {}
    for member in offline:
        await member.settle(group)
        cursors[member.name] = member.chat.cursor
        await member.chat.close()
    sent = Exchange()
    expected = len(senders) * per_sender

    async def take_part(member: Member) -> None:
        mine = 0
        if member in senders:
            for n in range(per_sender):
                text = f"{member.name} says {n}"
                ack = await member.groups.send(group, text)
                sent.texts[ack["id"]], sent.acks[ack["id"]] = text, int(ack["seq"])
                sent.senders[ack["id"]] = member.name
            mine = per_sender
        await member.read(expected - mine)

    await asyncio.gather(*(take_part(m) for m in people if m not in offline))
    for member in offline:
        await member.reconnect(cursors[member.name], url=back_on)
        await member.read(expected)
    return sent


def check_exactly_once_in_order(people: Sequence[Member], sent: Exchange) -> None:
    """Every member got every message of the others once, with its text, at the position its
    sender's ack gave, in position order: one order for everyone."""
    for member in people:
        ids = [m.id for m in member.got]
        theirs = {i for i, who in sent.senders.items() if who != member.name}
        assert len(ids) == len(set(ids)), f"{member.name} got a message twice"
        missed, extra = theirs - set(ids), set(ids) - theirs
        assert not missed and not extra, (
            f"{member.name} missed {missed}, got extra {extra} "
            f"from {[sent.senders.get(i) for i in extra]}"
        )
        assert [m.text for m in member.got] == [sent.texts[i] for i in ids]
        assert [m.seq for m in member.got] == [sent.acks[i] for i in ids]
        assert [m.seq for m in member.got] == sorted(m.seq for m in member.got)
        assert all(m.sender == sent.senders[m.id] for m in member.got)


def frame_of(item: dict[str, Any], group: str) -> dict[str, Any]:
    """A group_message frame rebuilt from a ``GET .../messages`` item (the same fields)."""
    return {"type": "group_message", "group": group} | {
        k: item[k] for k in ("seq", "id", "from", "head", "ts", "envelope")
    }


async def send_until_killed(
    sender: Member, group: str, count: int, sent: Exchange, kill: Callable[[], None], at: int
) -> None:
    """Send ``count`` messages one after the other; call ``kill`` (a SIGKILL) the moment the
    ``at``-th ack of all senders together is in (the others' sends are then in flight). A
    sender whose server dies under it stops there."""
    try:
        for n in range(count):
            text = f"{sender.name} says {n}"
            ack = await sender.groups.send(group, text)
            sent.texts[ack["id"]], sent.acks[ack["id"]] = text, int(ack["seq"])
            sent.senders[ack["id"]] = sender.name
            if len(sent.acks) == at:
                kill()  # at once: no shutdown, no flush
    except (ChatClosed, OSError, httpx.TransportError):
        return


async def read_acked(people: Sequence[Member], sent: Exchange) -> None:
    """Receive until each member has every acked message of the others."""
    for member in people:
        theirs = {i for i, who in sent.senders.items() if who != member.name}
        while not theirs <= {m.id for m in member.got}:
            member.got.append(await member.groups.receive(wait=WAIT))


def check_acked_once_in_order(people: Sequence[Member], sent: Exchange) -> None:
    """Each acked message (of the others) came once, at its acked position, with its text; all
    in position order (messages stored but never acked may be there too, once)."""
    for member in people:
        acked = [m for m in member.got if m.id in sent.acks]
        assert len({m.id for m in member.got}) == len(member.got)
        assert [m.seq for m in acked] == [sent.acks[m.id] for m in acked]
        assert [m.text for m in acked] == [sent.texts[m.id] for m in acked]
        assert [m.seq for m in member.got] == sorted(m.seq for m in member.got)
