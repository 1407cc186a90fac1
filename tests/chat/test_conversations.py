"""The chat's HTTP endpoints on a real server: users, conversations, history; bounds and auth."""

from __future__ import annotations

import httpx
import pytest

from securechat.client import ClientError, SecureChatClient
from tests.chatkit import Accounts, unique

# The fixtures these tests use (a server shared by the module, accounts on it).
from tests.chatkit import _accounts as _accounts
from tests.chatkit import _shared_server as _shared_server
from tests.livesrv import LiveServer

ENDPOINTS = ["/api/v1/users?q=a", "/api/v1/conversations", "/api/v1/messages?with=alice"]


def name_of(client: SecureChatClient) -> str:
    assert client.account is not None
    return client.account.username


async def status_of(client: SecureChatClient, path: str) -> int:
    return (await client.request("GET", path)).status_code


@pytest.mark.parametrize("path", ENDPOINTS)
async def test_each_endpoint_needs_a_session(shared_server: LiveServer, path: str) -> None:
    """Without a session every chat endpoint answers 401."""
    async with httpx.AsyncClient(base_url=shared_server.url) as http:
        response = await http.get(path)
    assert response.status_code == 401
    assert response.json()["error"] == "unauthenticated"


# --- /users ----------------------------------------------------------------------------------


async def test_user_search_finds_names_by_prefix_without_me(accounts: Accounts) -> None:
    """A prefix lists matching usernames in order, never the searcher."""
    prefix = unique("zed")
    me = await accounts.login_again(f"{prefix}-me", register=True)
    for suffix in ("b", "a", "c"):
        await accounts.login_again(f"{prefix}-{suffix}", register=True)
    body = await me.call("GET", f"/api/v1/users?q={prefix}")
    assert body == {"users": [f"{prefix}-a", f"{prefix}-b", f"{prefix}-c"]}


async def test_user_search_normalises_the_prefix(accounts: Accounts) -> None:
    """Upper-case and full-width input find the canonical names."""
    prefix = unique("kay")
    me = await accounts.sign_up("me")
    await accounts.login_again(f"{prefix}-x", register=True)
    body = await me.call("GET", f"/api/v1/users?q={prefix.upper()}")
    assert body["users"] == [f"{prefix}-x"]


async def test_user_search_honours_limit(accounts: Accounts) -> None:
    """``limit`` caps the answer."""
    prefix = unique("lim")
    me = await accounts.sign_up("me")
    for i in range(3):
        await accounts.login_again(f"{prefix}-{i}", register=True)
    assert len((await me.call("GET", f"/api/v1/users?q={prefix}&limit=2"))["users"]) == 2


@pytest.mark.parametrize(
    "query", ["q=%25", "q=a*", "q=" + "a" * 33, "q=a&limit=0", "q=a&limit=21", "q=a&limit=x"]
)
async def test_user_search_refuses_bad_input(accounts: Accounts, query: str) -> None:
    """Wildcards, over-long prefixes and out-of-bounds limits answer 400."""
    me = await accounts.sign_up("me")
    assert await status_of(me, f"/api/v1/users?{query}") == 400


async def test_user_search_treats_like_wildcards_as_text(accounts: Accounts) -> None:
    """An underscore matches an underscore only, not any character."""
    prefix = unique("wild")
    me = await accounts.sign_up("me")
    await accounts.login_again(f"{prefix}xy", register=True)
    assert (await me.call("GET", f"/api/v1/users?q={prefix}_"))["users"] == []


# --- /conversations --------------------------------------------------------------------------


async def test_conversations_list_peers_with_last_seq_unread_and_presence(
    accounts: Accounts,
) -> None:
    """Bob sees alice's conversation with its latest seq and two unread; alice, whose request
    he accepted, is online."""
    alice, bob = await accounts.sign_up("alice"), await accounts.sign_up("bob")
    a = await alice.connect()
    await a.send_message(name_of(bob), "one")
    last = await a.send_message(name_of(bob), "two")
    await bob.contact(name_of(alice), "accept")
    body = await bob.call("GET", "/api/v1/conversations")
    assert body == {
        "conversations": [
            {
                "peer": name_of(alice),
                "last_seq": last["seq"],
                "unread": 2,
                "online": True,
                "contact": "accepted",
            }
        ],
        "more": False,
    }


async def test_reading_lowers_the_unread_count(accounts: Accounts) -> None:
    """A read mark takes one off the reader's unread count; the sender's stays at zero."""
    alice, bob = await accounts.sign_up("alice"), await accounts.sign_up("bob")
    a = await alice.connect()
    await a.send_message(name_of(bob), "one")
    await a.send_message(name_of(bob), "two")
    b = await bob.connect()
    await b.mark(b.replayed[0]["seq"], "read")
    await b.send_message(name_of(alice), "barrier")  # its ack: the mark is committed
    (mine,) = (await bob.call("GET", "/api/v1/conversations"))["conversations"]
    (theirs,) = (await alice.call("GET", "/api/v1/conversations"))["conversations"]
    assert (mine["unread"], theirs["unread"]) == (1, 1)


async def test_conversations_are_most_recent_first_and_page(accounts: Accounts) -> None:
    """limit and before page through conversations, most recent first."""
    me = await accounts.sign_up("me")
    peers = [await accounts.sign_up("peer") for _ in range(3)]
    chat = await me.connect()
    for peer in peers:
        await chat.send_message(name_of(peer), "hi")
    first = await me.call("GET", "/api/v1/conversations?limit=2")
    assert [c["peer"] for c in first["conversations"]] == [name_of(peers[2]), name_of(peers[1])]
    assert first["more"] is True
    before = first["conversations"][-1]["last_seq"]
    rest = await me.call("GET", f"/api/v1/conversations?limit=2&before={before}")
    assert [c["peer"] for c in rest["conversations"]] == [name_of(peers[0])]
    assert rest["more"] is False


@pytest.mark.parametrize("query", ["limit=0", "limit=101", "before=-1", "before=x"])
async def test_conversations_refuse_out_of_bounds_paging(accounts: Accounts, query: str) -> None:
    """Page size and cursor are bounded."""
    me = await accounts.sign_up("me")
    assert await status_of(me, f"/api/v1/conversations?{query}") == 400


# --- /messages -------------------------------------------------------------------------------


async def test_history_is_newest_first_with_envelopes_and_status(accounts: Accounts) -> None:
    """Both directions of one conversation, newest first, each with its delivery state."""
    alice, bob = await accounts.sign_up("alice"), await accounts.sign_up("bob")
    a, b = await alice.connect(), await bob.connect()
    first = await a.send_message(name_of(bob), "hello")
    reply = await b.send_message(name_of(alice), "hi back")
    await b.mark(first["seq"], "read")
    await b.send_message(name_of(alice), "barrier")
    body = await alice.call("GET", f"/api/v1/messages?with={name_of(bob)}&limit=2")
    older = await alice.call(
        "GET", f"/api/v1/messages?with={name_of(bob)}&before={body['messages'][-1]['seq']}"
    )
    assert [m["id"] for m in body["messages"]][1] == reply["id"]
    assert body["more"] is True
    (hello,) = older["messages"]
    assert (hello["id"], hello["from"], hello["to"]) == (first["id"], name_of(alice), name_of(bob))
    assert hello["read_ts"] is not None and hello["delivered_ts"] is not None
    assert (await a.open(hello | {"type": "message"})).text == "hello"
    assert older["more"] is False


async def test_history_holds_only_my_conversation_with_that_peer(accounts: Accounts) -> None:
    """Carol asking for her history with bob sees nothing of alice and bob's messages."""
    alice, bob = await accounts.sign_up("alice"), await accounts.sign_up("bob")
    carol = await accounts.sign_up("carol")
    a = await alice.connect()
    await a.send_message(name_of(bob), "for bob only")
    body = await carol.call("GET", f"/api/v1/messages?with={name_of(bob)}")
    assert body == {"messages": [], "more": False}


async def test_history_with_an_unknown_user_is_404(accounts: Accounts) -> None:
    """Asking for the history with a name that has no account answers 404."""
    me = await accounts.sign_up("me")
    with pytest.raises(ClientError) as error:
        await me.call("GET", "/api/v1/messages?with=no-such-user")
    assert error.value.status == 404


@pytest.mark.parametrize(
    "query", ["", "with=", "with=NOT%20A%20NAME", "with=bob&limit=101", "with=bob&before=x"]
)
async def test_history_refuses_bad_parameters(accounts: Accounts, query: str) -> None:
    """A missing or malformed peer and out-of-bounds paging answer 400."""
    me = await accounts.sign_up("me")
    assert await status_of(me, f"/api/v1/messages?{query}") == 400
