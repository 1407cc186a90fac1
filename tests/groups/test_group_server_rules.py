"""Groups on a live server, the rules around them (issue 13): a member who deletes their account
stays listed as gone, a later account with their name is no member, a block holds in a group,
group messages count in the sender's undelivered bytes, and a lowered members bound still serves
the groups stored before it."""

from __future__ import annotations

import asyncio
import json
import uuid
from dataclasses import dataclass
from pathlib import Path

from securechat import e2e
from securechat.client import SecureChatClient
from securechat.groups import membership
from securechat.groups.membership import Action, Subject
from tests.chatkit import FAKE_ENVELOPE, PASSWORD, Accounts, ServerWith
from tests.chatkit import _server_with as _server_with
from tests.conftest import FAST_ITERATIONS, fast_config
from tests.groups.test_group_api import (
    GROUP_ENVELOPE,
    Group,
    Member,
    ack_of,
    live,
    nothing_but_pong,
    send_frame,
    shown,
    sign_up,
)
from tests.livesrv import LiveServer


@dataclass
class Former(Member):
    """A member whose account is deleted: the subject the chain names them by, kept."""

    kept: Subject | None = None

    @property
    def subject(self) -> Subject:
        assert self.kept is not None
        return self.kept


async def delete_account(member: Member) -> Former:
    subject = member.subject
    await member.client.delete_account(PASSWORD)
    return Former(member.client, subject)


def chain_state(view: dict[str, object], creator: Member) -> membership.GroupState:
    """The chain of a GET group answer, verified as a client would (the creator's key)."""
    entries = view["entries"]
    assert isinstance(entries, list)
    assert creator.client.account is not None
    keys = {creator.name: [creator.client.account.identity.sign_public_spki]}
    return membership.verify_chain([e2e.b64decode(e) for e in entries], keys)


def keys_frame(group: Group, *names: str) -> dict[str, object]:
    return {
        "type": "group_keys",
        "id": str(uuid.uuid4()),
        "group": group.hex,
        "head": group.head,
        "keys": dict.fromkeys(names, FAKE_ENVELOPE),
    }


async def test_a_deleted_member_stays_listed_as_gone(server_with: ServerWith) -> None:
    """Carol deletes her account: the member list still names her (the chain does), and
    ``gone`` says she is gone, so a client's roster check passes; a distribution naming her is
    refused not_a_member; once alice removes her, she is off both lists."""
    _, accounts = server_with()
    alice, bob, carol = await sign_up(accounts, 3)
    group = Group()
    await group.create(alice, [bob, carol])
    name = carol.name
    carol = await delete_account(carol)
    view = await shown(bob, group)
    assert view["members"] == sorted([alice.name, bob.name, name])
    assert view["gone"] == [name]
    membership.check_roster(chain_state(view, alice), view["members"])
    listed = await bob.client.call("GET", "/api/v1/groups")
    assert [g["members"] for g in listed["groups"]] == [3]
    a = await live(alice)
    assert (await ack_of(a, keys_frame(group, bob.name, name)))["code"] == "not_a_member"
    assert (await ack_of(a, send_frame(group)))["type"] == "ack"
    await group.change(alice, Action.REMOVE, [carol])
    view = await shown(bob, group)
    assert (view["members"], view["gone"]) == (sorted([alice.name, bob.name]), [])
    membership.check_roster(chain_state(view, alice), view["members"])


async def test_a_new_account_with_a_gone_members_name_is_no_member(
    server_with: ServerWith,
) -> None:
    """A new account takes deleted carol's name: it cannot read the group, is told of none of
    its entries or messages, and lists no group; only alice's removal of the old carol and
    addition of the new one makes it a member."""
    _, accounts = server_with(username_quarantine=0)
    alice, bob, carol = await sign_up(accounts, 3)
    group = Group()
    await group.create(alice, [bob, carol])
    name = carol.name
    carol = await delete_account(carol)
    newcomer = Member(await register(accounts, name))
    path = f"/api/v1/groups/{group.hex}"
    heard = await live(newcomer)
    await group.change(alice, Action.RENAME)
    a = await live(alice)
    assert (await ack_of(a, send_frame(group)))["type"] == "ack"
    assert (await newcomer.client.request("GET", path)).status_code == 404
    assert (await newcomer.client.request("GET", f"{path}/messages")).status_code == 404
    assert (await newcomer.client.call("GET", "/api/v1/groups"))["groups"] == []
    await nothing_but_pong(heard, ("group_entry", "group_message", "group_keys"))
    await group.change(alice, Action.REMOVE, [carol])
    await nothing_but_pong(heard, ("group_entry",))
    await group.change(alice, Action.ADD, [newcomer])
    assert (await asyncio.wait_for(heard.wait_for("group_entry"), 5))["index"] == 3
    view = await shown(newcomer, group)
    assert (view["members"], view["gone"]) == (sorted([alice.name, bob.name, name]), [])


async def register(accounts: Accounts, name: str) -> SecureChatClient:
    """A new account under ``name`` (free again), logged in."""
    client = SecureChatClient(accounts.base_url, min_iterations=FAST_ITERATIONS)
    accounts.clients.append(client)
    identity = accounts.identities[len(accounts.clients) % len(accounts.identities)]
    await client.register(name, PASSWORD, iterations=FAST_ITERATIONS, identity=identity)
    await client.login(name, PASSWORD)
    return client


async def test_a_block_holds_in_a_group(server_with: ServerWith) -> None:
    """Bob blocked alice: her key distribution and message in their group are acked and reach
    carol, never bob; the group's entries still reach him, and his own posts reach alice."""
    _, accounts = server_with()
    alice, bob, carol = await sign_up(accounts, 3)
    response = await bob.client.request(
        "POST", "/api/v1/contacts", {"user": alice.name, "action": "block"}
    )
    assert response.status_code < 300, response.text
    b, c = await live(bob), await live(carol)
    group = Group()
    await group.create(alice, [bob, carol])
    await asyncio.wait_for(b.wait_for("group_entry"), 5)
    a = await live(alice)
    assert (await ack_of(a, keys_frame(group, bob.name, carol.name)))["type"] == "ack"
    sent = await ack_of(a, send_frame(group))
    assert sent["type"] == "ack"
    assert (await asyncio.wait_for(c.wait_for("group_message"), 5))["seq"] == sent["seq"]
    await nothing_but_pong(b, ("group_message", "group_keys"))
    await group.change(alice, Action.RENAME)
    assert (await asyncio.wait_for(b.wait_for("group_entry"), 5))["index"] == 1
    mine = await ack_of(b, send_frame(group))
    assert (await asyncio.wait_for(a.wait_for("group_message"), 5))["seq"] == mine["seq"]
    history = await alice.client.call("GET", f"/api/v1/groups/{group.hex}/messages")
    assert [m["members"] for m in history["messages"]] == [2, 1]


async def test_group_messages_count_in_the_senders_undelivered_bytes(
    server_with: ServerWith,
) -> None:
    """Room for two group messages: the third is queue_full (with its id) until bob receives
    the first; then the same id goes."""
    size = len(json.dumps(GROUP_ENVELOPE, separators=(",", ":"), sort_keys=True))
    _, accounts = server_with(undelivered_bytes_per_sender_max=2 * size + size // 2)
    alice, bob = await sign_up(accounts, 2)
    group = Group()
    await group.create(alice, [bob])
    a, b = await live(alice), await live(bob)
    first = await ack_of(a, send_frame(group))
    assert (await ack_of(a, send_frame(group)))["type"] == "ack"
    waiting = send_frame(group)
    refused = await ack_of(a, waiting)
    assert (refused["type"], refused["code"]) == ("error", "queue_full")
    await b.send_frame({"type": "delivered", "seq": first["seq"], "group": group.hex})
    await asyncio.wait_for(a.wait_for("group_receipt"), 5)
    assert (await ack_of(a, waiting))["type"] == "ack"


async def test_a_lowered_members_bound_still_serves_stored_groups(
    tmp_path: Path, identities: list[e2e.Identity]
) -> None:
    """A group of four stored under the default bound, the server started again with a bound
    of three: the group is shown, shrinks and renames; an addition is group_too_large (not a
    500)."""
    server = LiveServer(fast_config(tmp_path / "data")).start()
    accounts = Accounts(server.url, identities)
    try:
        alice, bob, carol, dave = await sign_up(accounts, 4)
        group = Group()
        await group.create(alice, [bob, carol, dave])
        await group.change(alice, Action.RENAME)
    finally:
        await accounts.close()
        server.stop()
    server = LiveServer(fast_config(tmp_path / "data", group_members_max=3)).start()
    accounts = Accounts(server.url, identities)
    try:
        for member in (alice, bob, carol, dave):
            member.client = await accounts.login_again(member.name)
        assert len((await shown(bob, group))["members"]) == 4
        await group.change(alice, Action.RENAME)
        await group.change(alice, Action.REMOVE, [dave])
        status, body = await group.refusal(alice, group.sign(alice, Action.ADD, [dave]))
        assert (status, body["error"]) == (400, "group_too_large")
    finally:
        await accounts.close()
        server.stop()


async def test_the_chain_bytes_bound(server_with: ServerWith) -> None:
    """Renames carrying 4 KiB of detail each fill a chain bound of 64 KiB: the entry that would
    pass it is refused as bad_change, and the chain stays as it was."""
    _, accounts = server_with(group_chain_bytes_max=65536)
    alice, bob = await sign_up(accounts, 2)
    group = Group()
    await group.create(alice, [bob])
    path = f"/api/v1/groups/{group.hex}/entries"
    while True:
        entry = group.sign(alice, Action.RENAME, detail=bytes(4000))
        response = await alice.post(path, entry)
        if response.status_code != 200:
            break
        group.entries.append(entry)
    body = response.json()
    assert (response.status_code, body["error"], body["reason"]) == (
        400,
        "invalid_entry",
        "bad_change",
    )
    assert sum(len(e) for e in group.entries) + len(entry) > 65536
    assert len((await shown(alice, group))["entries"]) == len(group.entries) > 10
