"""Who may message me, over a real server (issue 12, items 5 and 6): message requests, accept,
delete, block and unblock; presence and typing only between contacts; the ranked, bounded and
rate-limited user search."""

from __future__ import annotations

from typing import Any

import httpx
import pytest

from securechat.client import ChatConnection, ClientError, SecureChatClient
from tests.chatkit import Accounts, ServerWith, unique

# The fixtures these tests use (a server shared by the module, accounts on it).
from tests.chatkit import _accounts as _accounts
from tests.chatkit import _server_with as _server_with
from tests.chatkit import _shared_server as _shared_server
from tests.livesrv import LiveServer


def name_of(client: SecureChatClient) -> str:
    assert client.account is not None
    return client.account.username


def kinds(chat: ChatConnection, kind: str) -> list[dict[str, Any]]:
    """The frames of ``kind`` the connection has read and kept."""
    return [frame for frame in chat._backlog if frame["type"] == kind]


async def contacts_pair(accounts: Accounts) -> tuple[SecureChatClient, SecureChatClient]:
    """Alice and bob, who each accepted the other (alice wrote, bob accepted)."""
    alice, bob = await accounts.sign_up("alice"), await accounts.sign_up("bob")
    a = await alice.connect()
    await a.send_message(name_of(bob), "hello")
    assert await bob.contact(name_of(alice), "accept") == "accepted"
    return alice, bob


# --- Requests ------------------------------------------------------------------------------


async def test_a_first_message_is_a_request_until_accepted(accounts: Accounts) -> None:
    """Alice's first message reaches bob and is listed as a request; once bob accepts, it is
    not, and his conversation list says "accepted"."""
    alice, bob = await accounts.sign_up("alice"), await accounts.sign_up("bob")
    a, b = await alice.connect(), await bob.connect()
    ack = await a.send_message(name_of(bob), "hi, we have not met")
    assert (await b.open(await b.wait_for("message", id=ack["id"]))).text == "hi, we have not met"
    assert await bob.requests() == [{"peer": name_of(alice), "last_seq": ack["seq"], "unread": 1}]
    listed = (await bob.call("GET", "/api/v1/conversations"))["conversations"]
    assert [(c["peer"], c["contact"], c["online"]) for c in listed] == [
        (name_of(alice), "request", False)
    ]
    assert await alice.requests() == []
    assert await bob.contact(name_of(alice), "accept") == "accepted"
    assert await bob.requests() == []
    assert await bob.contacts() == [name_of(alice)]
    listed = (await bob.call("GET", "/api/v1/conversations"))["conversations"]
    assert [(c["contact"], c["online"]) for c in listed] == [("accepted", True)]


async def test_deleting_a_request_drops_it(accounts: Accounts) -> None:
    """Bob deletes alice's request: it leaves his list; a second delete is 404."""
    alice, bob = await accounts.sign_up("alice"), await accounts.sign_up("bob")
    await (await alice.connect()).send_message(name_of(bob), "buy my stuff")
    assert await bob.contact(name_of(alice), "delete") is None
    assert await bob.requests() == []
    assert (await bob.call("GET", "/api/v1/conversations"))["conversations"] == []
    with pytest.raises(ClientError) as refused:
        await bob.contact(name_of(alice), "delete")
    assert (refused.value.status, refused.value.body["error"]) == (404, "not_found")


async def test_deleting_a_contacts_conversation_is_refused(accounts: Accounts) -> None:
    """Only a request can be deleted: a conversation bob accepted answers 404."""
    alice, bob = await contacts_pair(accounts)
    with pytest.raises(ClientError) as refused:
        await bob.contact(name_of(alice), "delete")
    assert refused.value.status == 404


# --- Blocking ------------------------------------------------------------------------------


async def test_a_blocked_senders_frames_are_acked_but_nothing_arrives(accounts: Accounts) -> None:
    """Bob blocks alice: her sends get acks like any other, bob's socket, his sync and his
    history get none of them, while carol's message after them arrives."""
    alice, bob = await accounts.sign_up("alice"), await accounts.sign_up("bob")
    carol = await accounts.sign_up("carol")
    a, b, c = await alice.connect(), await bob.connect(), await carol.connect()
    assert await bob.contact(name_of(alice), "block") == "blocked"
    acks = [await a.send_message(name_of(bob), f"let me in {n}") for n in range(3)]
    assert [set(ack) for ack in acks] == [{"type", "id", "seq", "ts"}] * 3
    assert acks[0]["seq"] < acks[1]["seq"] < acks[2]["seq"]
    later = await c.send_message(name_of(bob), "after them")
    await b.wait_for("message", id=later["id"])
    assert [f for f in kinds(b, "message") if f["from"] == name_of(alice)] == []
    replay = await b.sync(0)
    assert [frame["from"] for frame in replay] == [name_of(carol)]
    history = await bob.call("GET", f"/api/v1/messages?with={name_of(alice)}")
    assert history == {"messages": [], "more": False}
    assert await bob.requests() == [{"peer": name_of(carol), "last_seq": later["seq"], "unread": 1}]
    assert await bob.contacts("blocked") == [name_of(alice)]


async def test_a_resend_to_a_blocker_is_acked_again(accounts: Accounts) -> None:
    """The same id sent twice to someone who blocked the sender is acknowledged both times."""
    alice, bob = await accounts.sign_up("alice"), await accounts.sign_up("bob")
    await bob.contact(name_of(alice), "block")
    a = await alice.connect()
    frame_id = "5a3c6a3e-7f3e-4a51-9c7e-2f1a0b9d4e11"
    envelope = await a.seal(name_of(bob), "again", frame_id)
    for _ in range(2):
        await a.send_frame(
            {"type": "send", "id": frame_id, "to": name_of(bob), "envelope": envelope}
        )
        assert (await a.wait_ack(frame_id))["id"] == frame_id


async def test_unblocking_lets_the_next_message_through_as_a_request(accounts: Accounts) -> None:
    """After an unblock alice is a stranger again: her next message arrives, as a request."""
    alice, bob = await accounts.sign_up("alice"), await accounts.sign_up("bob")
    await bob.contact(name_of(alice), "block")
    assert await bob.contact(name_of(alice), "unblock") is None
    assert await bob.contacts("blocked") == []
    a, b = await alice.connect(), await bob.connect()
    ack = await a.send_message(name_of(bob), "sorry")
    await b.wait_for("message", id=ack["id"])
    assert [r["peer"] for r in await bob.requests()] == [name_of(alice)]


async def test_blocking_a_contact_hides_presence_and_typing_both_ways(accounts: Accounts) -> None:
    """Contacts see each other online and typing; after bob blocks alice each sees the other
    go offline, and neither presence nor typing passes any more."""
    alice, bob = await contacts_pair(accounts)
    a = alice.chats[0]
    b = await bob.connect()
    await a.wait_for("presence", user=name_of(bob), status="online")
    await a.typing(name_of(bob))
    assert await b.wait_for("typing") == {"type": "typing", "from": name_of(alice)}
    a._backlog.clear()  # what came before the block (the accept told alice bob was offline)
    await bob.contact(name_of(alice), "block")
    await a.wait_for("presence", user=name_of(bob), status="offline")
    await b.wait_for("presence", user=name_of(alice), status="offline")
    await a.typing(name_of(bob))
    await b.typing(name_of(alice))
    await a.ping()
    await b.ping()
    await b.close()
    bob_again = await bob.connect()
    await bob_again.ping()
    await a.ping()
    assert kinds(b, "typing") == [] and kinds(a, "typing") == []
    assert kinds(a, "presence") == [] and kinds(bob_again, "presence") == []


@pytest.mark.parametrize(
    ("body", "status", "field"),
    [
        ({"user": "nobody-at-all", "action": "block"}, 404, None),
        ({"user": "x", "action": "block"}, 400, "user"),
        ({"user": 7, "action": "accept"}, 400, "user"),
        ({"action": "accept"}, 400, "user"),
        ({"user": "someone", "action": "befriend"}, 400, "action"),
        ({"user": "someone", "action": ["block"]}, 400, "action"),
        ({"user": "someone"}, 400, "action"),
    ],
)
async def test_contact_decisions_refuse_bad_input(
    accounts: Accounts, body: dict[str, Any], status: int, field: str | None
) -> None:
    """An unknown user is 404, a malformed name or action 400 naming the field."""
    me = await accounts.sign_up("me")
    response = await me.request("POST", "/api/v1/contacts", body)
    assert response.status_code == status
    assert response.json()["error"] == ("not_found" if status == 404 else "invalid")
    assert response.json().get("field") == field


async def test_i_cannot_block_myself(accounts: Accounts) -> None:
    """Deciding about myself is a 400 on the user field."""
    me = await accounts.sign_up("me")
    response = await me.request(
        "POST", "/api/v1/contacts", {"user": name_of(me), "action": "block"}
    )
    assert (response.status_code, response.json()["field"]) == (400, "user")


@pytest.mark.parametrize(
    "path",
    ["/api/v1/contacts?state=friends", "/api/v1/contacts?limit=0", "/api/v1/requests?before=x"],
)
async def test_listings_refuse_bad_input(accounts: Accounts, path: str) -> None:
    """Unknown states and out-of-bounds pages answer 400."""
    me = await accounts.sign_up("me")
    assert (await me.request("GET", path)).status_code == 400


@pytest.mark.parametrize("path", ["/api/v1/contacts", "/api/v1/requests"])
async def test_listings_need_a_session(shared_server: LiveServer, path: str) -> None:
    """Without a session: 401."""
    async with httpx.AsyncClient(base_url=shared_server.url) as http:
        assert (await http.get(path)).status_code == 401


# --- Presence and typing between strangers ----------------------------------------------------


async def test_presence_and_typing_are_not_shared_with_a_stranger(accounts: Accounts) -> None:
    """Alice wrote to bob, who has not accepted: neither hears the other come online or type;
    once bob accepts, each is told the other is online."""
    alice, bob = await accounts.sign_up("alice"), await accounts.sign_up("bob")
    a = await alice.connect()
    await a.send_message(name_of(bob), "hi")
    b = await bob.connect()
    await a.typing(name_of(bob))
    await b.typing(name_of(alice))
    await a.ping()
    await b.ping()
    assert kinds(a, "presence") == [] and kinds(b, "presence") == []
    assert kinds(a, "typing") == [] and kinds(b, "typing") == []
    await bob.contact(name_of(alice), "accept")
    await a.wait_for("presence", user=name_of(bob), status="online")
    await b.wait_for("presence", user=name_of(alice), status="online")


# --- Finding people ---------------------------------------------------------------------------


async def test_search_ranks_exact_then_prefix_then_substring(accounts: Accounts) -> None:
    """The exact name first, then names starting with the query, then names containing it."""
    stem = unique("rank")
    me = await accounts.sign_up("me")
    for name in (f"x{stem}", f"{stem}b", stem, f"{stem}a"):
        await accounts.login_again(name, register=True)
    assert await me.search_users(stem) == [stem, f"{stem}a", f"{stem}b", f"x{stem}"]


async def test_search_needs_at_least_one_character(accounts: Accounts) -> None:
    """An empty query would list everyone: 400."""
    me = await accounts.sign_up("me")
    assert (await me.request("GET", "/api/v1/users?q=")).status_code == 400


async def test_a_scraping_client_is_refused_past_the_search_rate(server_with: ServerWith) -> None:
    """Past the burst, a search answers 429 search_limited with Retry-After, whatever the
    session: the bucket is the account's."""
    _, accounts = server_with(user_search_per_s=0.001, user_search_burst=3)
    me = await accounts.sign_up("me")
    for letter in "abc":
        await me.search_users(letter)
    refused = await me.request("GET", "/api/v1/users?q=d")
    assert refused.status_code == 429
    assert refused.json()["error"] == "search_limited"
    assert refused.headers["Retry-After"] == "1000"  # one search back per 1 / 0.001 s
    again = await accounts.login_again(name_of(me))
    assert (await again.request("GET", "/api/v1/users?q=e")).status_code == 429
    other = await accounts.sign_up("other")
    assert await other.search_users("me") == [name_of(me)]


async def test_contact_calls_past_the_accounts_rate_are_refused(server_with: ServerWith) -> None:
    """Decisions and lists share one bucket per account: past the burst each of them answers
    429 contacts_limited with Retry-After, in any session; another account is not slowed."""
    _, accounts = server_with(contacts_per_user_per_s=0.001, contacts_per_user_burst=3)
    me, peer = await accounts.sign_up("me"), await accounts.sign_up("peer")
    decision = {"user": name_of(peer), "action": "block"}
    assert (await me.request("POST", "/api/v1/contacts", decision)).status_code == 200
    assert (await me.request("GET", "/api/v1/contacts")).status_code == 200
    assert (await me.request("GET", "/api/v1/requests")).status_code == 200
    again = await accounts.login_again(name_of(me))
    for method, path, body in [
        ("POST", "/api/v1/contacts", decision),
        ("GET", "/api/v1/contacts", None),
        ("GET", "/api/v1/requests", None),
    ]:
        refused = await again.request(method, path, body)
        assert refused.status_code == 429
        assert refused.json()["error"] == "contacts_limited"
        assert refused.headers["Retry-After"] == "1000"
    assert (await peer.request("GET", "/api/v1/contacts")).status_code == 200
