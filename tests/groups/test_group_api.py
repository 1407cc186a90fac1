"""Groups on a live server (securechat/groups/service.py, views.py; the group frames of
chat/session.py): membership entries signed with the users' real Ed25519 keys, every refusal
docs/protocol.md "Groups" names, acks, fan-out, sync and receipts. The core paths run on
SQLite and PostgreSQL."""

from __future__ import annotations

import asyncio
import hashlib
import os
import uuid
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ed25519

from securechat import e2e
from securechat.app import create_app
from securechat.client import ChatConnection, SecureChatClient
from securechat.groups import membership
from securechat.groups.membership import Action, Subject
from tests.chatkit import FAKE_ENVELOPE, Accounts, ServerWith
from tests.chatkit import _accounts as _accounts
from tests.chatkit import _server_with as _server_with
from tests.chatkit import _shared_server as _shared_server
from tests.conftest import fast_config
from tests.livesrv import LiveServer

GROUP_ENVELOPE: dict[str, Any] = {
    "v": 1,
    "cid": e2e.b64encode(bytes(16)),
    "it": 0,
    "iv": e2e.b64encode(bytes(12)),
    "ct": e2e.b64encode(bytes(32)),
    "sig": e2e.b64encode(bytes(64)),
}
# Long enough for a frame that should not come to have come, on a loaded machine.
QUIET = 0.5


@dataclass
class Member:
    """A signed-up user with the private sign key its client holds."""

    client: SecureChatClient

    @property
    def name(self) -> str:
        assert self.client.account is not None
        return self.client.account.username

    @property
    def key(self) -> ed25519.Ed25519PrivateKey:
        assert self.client.account is not None
        key = serialization.load_der_private_key(
            self.client.account.identity.to_pkcs8()[1], password=None
        )
        assert isinstance(key, ed25519.Ed25519PrivateKey)
        return key

    @property
    def subject(self) -> Subject:
        assert self.client.account is not None
        spki = self.client.account.identity.sign_public_spki
        return Subject(self.name, hashlib.sha256(spki).digest())

    async def post(self, path: str, entry: bytes) -> httpx.Response:
        return await self.client.request("POST", path, {"entry": e2e.b64encode(entry)})


@dataclass
class Group:
    """A group's chain as its honest members hold it."""

    group_id: bytes = field(default_factory=lambda: os.urandom(16))
    entries: list[bytes] = field(default_factory=list)

    @property
    def hex(self) -> str:
        return self.group_id.hex()

    @property
    def head(self) -> str:
        return e2e.b64encode(membership.entry_hash(self.entries[-1]))

    def sign(
        self,
        actor: Member,
        action: Action,
        subjects: list[Member] | None = None,
        *,
        detail: bytes = b"",
        seq: int | None = None,
    ) -> bytes:
        """An entry by ``actor`` at the chain's end (or at ``seq``, linked to entry seq - 1)."""
        at = len(self.entries) if seq is None else seq
        prev = membership.entry_hash(self.entries[at - 1]) if at else membership.ZERO_HASH
        return membership.sign_entry(
            group_id=self.group_id,
            seq=at,
            prev_hash=prev,
            action=action,
            written_ms=1_795_771_200_000,
            actor=actor.name,
            subjects=[s.subject for s in subjects or []],
            detail=detail,
            sign_key=actor.key,
        )

    async def create(self, actor: Member, subjects: list[Member]) -> dict[str, Any]:
        entry = self.sign(actor, Action.CREATE, subjects, detail=b"name")
        response = await actor.post("/api/v1/groups", entry)
        assert response.status_code == 201, response.text
        self.entries.append(entry)
        body: dict[str, Any] = response.json()
        return body

    async def change(
        self, actor: Member, action: Action, subjects: list[Member] | None = None
    ) -> dict[str, Any]:
        entry = self.sign(actor, action, subjects)
        response = await actor.post(f"/api/v1/groups/{self.hex}/entries", entry)
        assert response.status_code == 200, response.text
        self.entries.append(entry)
        body: dict[str, Any] = response.json()
        return body

    async def refusal(self, actor: Member, entry: bytes, path: str | None = None) -> Any:
        """The (status, body) the server answers ``actor``'s entry with."""
        response = await actor.post(path or f"/api/v1/groups/{self.hex}/entries", entry)
        return response.status_code, response.json()


def send_frame(
    group: Group, *, frame_id: str | None = None, head: str | None = None
) -> dict[str, Any]:
    return {
        "type": "send",
        "id": frame_id or str(uuid.uuid4()),
        "group": group.hex,
        "head": head or group.head,
        "envelope": GROUP_ENVELOPE,
    }


async def sign_up(accounts: Accounts, count: int) -> list[Member]:
    return [
        Member(await accounts.sign_up(prefix))
        for prefix in ["alice", "bob", "carol", "dave"][:count]
    ]


async def live(member: Member) -> ChatConnection:
    """A socket with no replay: only what happens from now on."""
    return await member.client.connect(after=None)


async def ack_of(chat: ChatConnection, frame: dict[str, Any]) -> dict[str, Any]:
    await chat.send_frame(frame)
    answer = await chat.wait_for_any(("ack", "error"))
    assert answer.get("id") == frame["id"], answer
    return answer


async def nothing_but_pong(chat: ChatConnection, kinds: tuple[str, ...]) -> None:
    """Read up to the answer of a ping: no frame of ``kinds`` came before it."""
    await asyncio.sleep(QUIET)
    await chat.send_frame({"type": "ping"})
    while (frame := await chat.receive()).get("type") != "pong":
        assert frame.get("type") not in kinds, frame


async def shown(member: Member, group: Group) -> dict[str, Any]:
    body: dict[str, Any] = await member.client.call("GET", f"/api/v1/groups/{group.hex}")
    return body


# --- Both backends ------------------------------------------------------------------------------


@pytest.fixture(name="backend", params=["sqlite", "postgres"])
def _backend(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[LiveServer]:
    """A server on SQLite, or on a fresh PostgreSQL database."""
    overrides: dict[str, object] = {}
    if request.param == "postgres":
        engine = request.getfixturevalue("postgres_engine")
        database = request.getfixturevalue("postgres_database")
        overrides = {"database_url": engine.url(database), "db_pool_min": 1, "db_pool_max": 3}
    server = LiveServer(fast_config(tmp_path / "data", **overrides)).start()
    yield server
    server.stop()


@pytest.fixture(name="backend_accounts")
async def _backend_accounts(
    backend: LiveServer, identities: list[e2e.Identity]
) -> AsyncIterator[Accounts]:
    accounts = Accounts(backend.url, identities)
    yield accounts
    await accounts.close()


async def test_every_change_is_checked_stored_and_shown(backend_accounts: Accounts) -> None:
    """Create, add, rename, make admin, remove and leave, each a real signed entry: the
    server's chain and member list follow, and its head is the chain's."""
    alice, bob, carol, dave = await sign_up(backend_accounts, 4)
    group = Group()
    created = await group.create(alice, [bob])
    assert (created["group"], created["head"]) == (group.hex, group.head)
    await group.change(alice, Action.ADD, [carol, dave])
    await group.change(alice, Action.RENAME)
    await group.change(alice, Action.MAKE_ADMIN, [carol])
    await group.change(carol, Action.REMOVE, [dave])
    last = await group.change(bob, Action.LEAVE)
    assert last["seq"] > created["seq"]
    view = await shown(alice, group)
    assert view["entries"] == [e2e.b64encode(entry) for entry in group.entries]
    assert (view["head"], view["members"], view["admins"]) == (
        group.head,
        sorted([alice.name, carol.name]),
        sorted([alice.name, carol.name]),
    )
    listed = await alice.client.call("GET", "/api/v1/groups")
    assert [(g["group"], g["head"], g["members"]) for g in listed["groups"]] == [
        (group.hex, group.head, 2)
    ]


async def test_posts_fan_out_and_sync_replays_in_order(backend_accounts: Accounts) -> None:
    """A group message reaches every member's sockets (the sender's other one too) after its
    ack; a member who syncs later gets the entry, the keys and the message in order."""
    alice, bob, carol = await sign_up(backend_accounts, 3)
    group = Group()
    await group.create(alice, [bob, carol])
    a1, a2, b = await live(alice), await live(alice), await live(bob)
    keys = {bob.name: FAKE_ENVELOPE, carol.name: FAKE_ENVELOPE | {"iv": "B" * 16}}
    keys_frame = {
        "type": "group_keys",
        "id": str(uuid.uuid4()),
        "group": group.hex,
        "head": group.head,
        "keys": keys,
    }
    keys_ack = await ack_of(a1, keys_frame)
    assert keys_ack["type"] == "ack", keys_ack
    message = send_frame(group)
    ack = await ack_of(a1, message)
    assert ack["type"] == "ack", ack
    for chat in (a2, b):
        got = await chat.wait_for("group_message", id=message["id"])
        assert (got["seq"], got["from"], got["group"], got["head"]) == (
            ack["seq"],
            alice.name,
            group.hex,
            group.head,
        )
        assert got["envelope"] == GROUP_ENVELOPE
    assert (await b.wait_for("group_keys", id=keys_frame["id"]))["envelope"] == keys[bob.name]
    mine = await a2.wait_for("group_keys", id=keys_frame["id"])
    assert (mine["to"], mine["envelope"]) == (min(keys), keys[min(keys)])
    c = await carol.client.connect(after=None)
    await c.send_frame({"type": "sync", "after": 0})
    replay = []
    while (frame := await c.receive())["type"] != "synced":
        replay.append(frame)
    assert [f["type"] for f in replay] == ["group_entry", "group_keys", "group_message"]
    assert [f["seq"] for f in replay] == sorted(f["seq"] for f in replay)
    assert replay[0]["entry"] == e2e.b64encode(group.entries[0]) and replay[0]["index"] == 0
    assert replay[1]["envelope"] == keys[carol.name] and "to" not in replay[1]
    assert replay[2]["id"] == message["id"]
    # Alice's other devices replay her distribution once, as the first recipient's envelope.
    a3 = await alice.client.connect(after=None)
    await a3.send_frame({"type": "sync", "after": 0})
    while (frame := await a3.receive())["type"] != "group_keys":
        assert frame["type"] != "synced"
    assert (frame["id"], frame["to"], frame["envelope"]) == (
        keys_frame["id"],
        min(keys),
        keys[min(keys)],
    )


async def test_marks_make_receipt_counts(backend_accounts: Accounts) -> None:
    """Members' delivered and read marks reach the sender as group_receipt counts, and the
    history answers the same counts."""
    alice, bob, carol = await sign_up(backend_accounts, 3)
    group = Group()
    await group.create(alice, [bob, carol])
    a, b, c = await live(alice), await live(bob), await live(carol)
    message = send_frame(group)
    ack = await ack_of(a, message)
    await b.wait_for("group_message", id=message["id"])
    await b.send_frame({"type": "read", "seq": ack["seq"], "group": group.hex})
    first = await a.wait_for("group_receipt", id=message["id"])
    assert (first["group"], first["delivered"], first["read"], first["members"]) == (
        group.hex,
        1,
        1,
        2,
    )
    await c.send_frame({"type": "delivered", "seq": ack["seq"], "group": group.hex})
    second = await a.wait_for("group_receipt", id=message["id"])
    assert (second["delivered"], second["read"], second["members"]) == (2, 1, 2)
    history = await bob.client.call("GET", f"/api/v1/groups/{group.hex}/messages")
    item = history["messages"][0]
    assert (item["id"], item["from"], item["delivered"], item["read"], item["members"]) == (
        message["id"], alice.name, 2, 1, 2,
    )  # fmt: skip
    assert history["more"] is False
    await a.send_frame({"type": "read", "seq": ack["seq"], "group": group.hex})
    assert (await a.wait_for("error"))["code"] == "unknown_message"  # my own message


# --- One SQLite server for the rest --------------------------------------------------------------


async def test_a_removed_member_gets_the_removal_and_nothing_after(accounts: Accounts) -> None:
    """Carol's socket gets the entry that removes her, then no message; she no longer sees
    the group."""
    alice, bob, carol = await sign_up(accounts, 3)
    group = Group()
    await group.create(alice, [bob, carol])
    a, c = await live(alice), await live(carol)
    removal = await group.change(alice, Action.REMOVE, [carol])
    got = await c.wait_for("group_entry", group=group.hex)
    assert (got["seq"], got["index"], got["entry"]) == (
        removal["seq"],
        1,
        e2e.b64encode(group.entries[1]),
    )
    assert (await ack_of(a, send_frame(group)))["type"] == "ack"
    await nothing_but_pong(c, ("group_message", "group_entry"))
    response = await carol.client.request("GET", f"/api/v1/groups/{group.hex}")
    assert (response.status_code, response.json()["error"]) == (404, "unknown_group")


async def test_resend_gets_the_first_ack_and_no_second_copy(accounts: Accounts) -> None:
    """The same id sent twice is stored once: the same ack, one frame to the others."""
    alice, bob = await sign_up(accounts, 2)
    group = Group()
    await group.create(alice, [bob])
    a, b = await live(alice), await live(bob)
    message = send_frame(group)
    first, again = await ack_of(a, message), await ack_of(a, message)
    assert (again["seq"], again["ts"]) == (first["seq"], first["ts"])
    await b.wait_for("group_message", id=message["id"])
    await nothing_but_pong(b, ("group_message",))


async def test_acks_keep_the_order_of_the_frames(accounts: Accounts) -> None:
    """Pair sends and group sends written in a row are acknowledged in that order."""
    alice, bob = await sign_up(accounts, 2)
    group = Group()
    await group.create(alice, [bob])
    a = await live(alice)
    frames = []
    for i in range(10):
        frames.append(
            send_frame(group)
            if i % 2
            else {
                "type": "send",
                "id": str(uuid.uuid4()),
                "to": bob.name,
                "envelope": FAKE_ENVELOPE,
            }
        )
        await a.send_frame(frames[-1])
    acks = [await a.wait_for_any(("ack", "error")) for _ in frames]
    assert [ack["id"] for ack in acks] == [frame["id"] for frame in frames]
    assert [ack["seq"] for ack in acks] == sorted(ack["seq"] for ack in acks)


async def test_socket_refusals(accounts: Accounts) -> None:
    """A non-member's send, a stale head, keys for a non-member or myself, an unknown group."""
    alice, bob, carol = await sign_up(accounts, 3)
    group = Group()
    await group.create(alice, [bob])
    old_head = group.head
    await group.change(alice, Action.RENAME)
    a, c = await live(alice), await live(carol)
    assert (await ack_of(c, send_frame(group)))["code"] == "unknown_group"
    assert (await ack_of(a, send_frame(group, head=old_head)))["code"] == "stale_head"
    assert (await ack_of(a, send_frame(Group(entries=group.entries))))["code"] == "unknown_group"
    for name in (carol.name, alice.name):
        keys = {
            "type": "group_keys",
            "id": str(uuid.uuid4()),
            "group": group.hex,
            "head": group.head,
            "keys": {name: FAKE_ENVELOPE},
        }
        assert (await ack_of(a, keys))["code"] == "not_a_member"


async def test_entry_refusals(accounts: Accounts) -> None:
    """Each wrong entry gets its documented answer, and the chain does not move."""
    alice, bob, carol = await sign_up(accounts, 3)
    group = Group()
    await group.create(alice, [bob])
    path = f"/api/v1/groups/{group.hex}/entries"
    flipped = bytearray(group.sign(alice, Action.ADD, [carol]))
    flipped[-5] ^= 1
    wrong_key = group.sign(alice, Action.ADD, [carol])
    wrong_key = wrong_key.replace(carol.subject.fingerprint, bytes(32))
    expected = [
        (bob, group.sign(bob, Action.ADD, [carol]), 400, "invalid_entry", "not_admin"),
        (alice, bytes(flipped), 400, "invalid_entry", "bad_signature"),
        (alice, group.sign(alice, Action.ADD, [bob]), 400, "invalid_entry", "bad_change"),
        (alice, b"not an entry", 400, "invalid_entry", "malformed"),
        (alice, wrong_key, 400, "invalid_entry", "unknown_key"),
        (bob, group.sign(alice, Action.ADD, [carol]), 403, "not_your_entry", None),
        (carol, group.sign(carol, Action.LEAVE), 404, "unknown_group", None),
    ]
    for actor, entry, status, code, reason in expected:
        got_status, body = await group.refusal(actor, entry, path)
        assert (got_status, body["error"], body.get("reason")) == (status, code, reason), body
    # An entry signed after an old head, and one whose position is not the next.
    await group.change(alice, Action.RENAME)
    stale = group.sign(alice, Action.ADD, [carol], seq=1)
    status, body = await group.refusal(alice, stale)
    assert (status, body["error"], body["head"]) == (409, "stale_head", group.head)
    reordered = bytearray(group.sign(alice, Action.ADD, [carol]))
    reordered[len(membership.ENTRY_LABEL) + 16 + 7] += 1  # seq 3, linked to entry 1
    assert (await group.refusal(alice, bytes(reordered)))[1].get("reason") == "reordered"
    other = Group(entries=group.entries).sign(alice, Action.RENAME)
    assert (await group.refusal(alice, other))[1].get("reason") == "reordered"
    response = await alice.client.request("GET", "/api/v1/groups/NOT-A-GROUP")
    assert (response.status_code, response.json().get("field")) == (400, "group")
    ghost_entry = group.sign(alice, Action.ADD, [carol]).replace(
        e2e.lp(carol.name.encode()), e2e.lp(b"nobody-" + os.urandom(4).hex().encode()[:8])
    )
    status, body = await group.refusal(alice, ghost_entry)
    assert (status, body["error"]) == (404, "not_found")
    assert (await shown(alice, group))["entries"] == [e2e.b64encode(e) for e in group.entries]
    unknown = Group()
    response = await alice.post(
        f"/api/v1/groups/{unknown.hex}/entries", unknown.sign(alice, Action.RENAME, seq=0)
    )
    assert (response.status_code, response.json()["error"]) == (404, "unknown_group")
    response = await alice.client.request("GET", f"/api/v1/groups/{unknown.hex}/messages")
    assert (response.status_code, response.json()["error"]) == (404, "unknown_group")


async def test_creation_refusals(accounts: Accounts) -> None:
    """A creation by someone else, naming nobody with an account, or with a taken id."""
    alice, bob = await sign_up(accounts, 2)
    group = Group()
    status, body = await group.refusal(
        bob, group.sign(alice, Action.CREATE, [bob]), "/api/v1/groups"
    )
    assert (status, body["error"]) == (403, "not_your_entry")
    await group.create(alice, [bob])
    status, body = await group.refusal(alice, group.entries[0], "/api/v1/groups")
    assert (status, body["error"]) == (409, "group_exists")
    response = await alice.client.request("POST", "/api/v1/groups", {"entry": "not base64!"})
    assert (response.status_code, response.json()["field"]) == (400, "entry")


async def test_bounds(server_with: ServerWith) -> None:
    """Members, groups per user and the send rate are bounded with clear errors."""
    _, accounts = server_with(
        group_members_max=3,
        groups_per_user_max=1,
        sends_per_user_burst=4,
        sends_per_user_per_s=0.01,
    )
    alice, bob, carol, dave = await sign_up(accounts, 4)
    group = Group()
    status, body = await group.refusal(
        alice, group.sign(alice, Action.CREATE, [bob, carol, dave]), "/api/v1/groups"
    )
    assert (status, body["error"]) == (400, "group_too_large")
    await group.create(alice, [bob])
    status, body = await group.refusal(alice, group.sign(alice, Action.ADD, [carol, dave]))
    assert (status, body["error"]) == (400, "group_too_large")
    second = Group()
    status, body = await second.refusal(
        carol, second.sign(carol, Action.CREATE, [bob]), "/api/v1/groups"
    )
    assert (status, body["error"]) == (409, "too_many_groups")
    # Alice's fourth entry is her burst's last; the fifth waits for the rate.
    await group.change(alice, Action.RENAME)
    response = await alice.post(
        f"/api/v1/groups/{group.hex}/entries", group.sign(alice, Action.RENAME)
    )
    assert (response.status_code, response.json()["error"]) == (429, "rate_limited")
    assert int(response.headers["Retry-After"]) >= 1


async def test_chain_bound(server_with: ServerWith) -> None:
    """An entry past group_entries_max is refused as bad_change, and the chain stays."""
    _, accounts = server_with(group_entries_max=2)
    alice, bob = await sign_up(accounts, 2)
    group = Group()
    await group.create(alice, [bob])
    await group.change(alice, Action.RENAME)
    status, body = await group.refusal(alice, group.sign(alice, Action.RENAME))
    assert (status, body["error"], body["reason"]) == (400, "invalid_entry", "bad_change")
    assert len((await shown(alice, group))["entries"]) == 2


@pytest.mark.parametrize(
    "bound",
    [
        {"group_members_max": 1},
        {"group_members_max": 257},
        {"groups_per_user_max": 0},
        {"group_entries_max": 0},
        {"group_chain_bytes_max": 65535},
    ],
)
def test_unworkable_bounds_stop_the_start(tmp_path: Path, bound: dict[str, int]) -> None:
    """A group bound that cannot work is refused when the app is built (ValueError)."""
    with pytest.raises(ValueError, match="SECURECHAT_GROUP"):
        create_app(fast_config(tmp_path / "data", **bound))
