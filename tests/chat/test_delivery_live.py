"""Delivery over a real Hypercorn port with real WebSocket clients (securechat.client).

Live and offline delivery, idempotent resends, receipts (also to a sender who was offline),
presence, typing, multi-device, and the end-to-end crypto around all of it.
"""

from __future__ import annotations

import uuid

from securechat.client import ChatConnection, SecureChatClient
from tests.chatkit import Accounts, ServerWith, unique

# The fixtures these tests use (a server shared by the module, accounts on it).
from tests.chatkit import _accounts as _accounts
from tests.chatkit import _server_with as _server_with
from tests.chatkit import _shared_server as _shared_server


async def pair(accounts: Accounts) -> tuple[SecureChatClient, SecureChatClient]:
    return await accounts.sign_up("alice"), await accounts.sign_up("bob")


def name_of(client: SecureChatClient) -> str:
    assert client.account is not None
    return client.account.username


async def test_message_arrives_live_and_decrypts(accounts: Accounts) -> None:
    """Bob, online, receives alice's message at once and reads her text."""
    alice, bob = await pair(accounts)
    a, b = await alice.connect(), await bob.connect()
    ack = await a.send_message(name_of(bob), "hello bob")
    frame = await b.wait_for("message", id=ack["id"])
    assert (frame["seq"], frame["from"], frame["to"]) == (ack["seq"], name_of(alice), name_of(bob))
    assert (await b.open(frame)).text == "hello bob"


async def test_ack_carries_the_servers_seq_and_time(accounts: Accounts) -> None:
    """The ack names the client's id with a server seq and a millisecond timestamp."""
    alice, bob = await pair(accounts)
    a = await alice.connect()
    first = await a.send_message(name_of(bob), "one")
    second = await a.send_message(name_of(bob), "two")
    assert second["seq"] > first["seq"] > 0
    assert second["ts"] >= first["ts"] > 1_600_000_000_000


async def test_offline_recipient_gets_every_message_in_order_on_reconnect(
    accounts: Accounts,
) -> None:
    """Three messages sent while bob is away arrive in order when he syncs."""
    alice, bob = await pair(accounts)
    a = await alice.connect()
    acks = [await a.send_message(name_of(bob), f"message {i}") for i in range(3)]
    b = await bob.connect(after=0)
    assert [f["id"] for f in b.replayed] == [ack["id"] for ack in acks]
    assert [(await b.open(f)).text for f in b.replayed] == ["message 0", "message 1", "message 2"]


async def test_sync_after_a_cursor_returns_only_what_is_newer(accounts: Accounts) -> None:
    """A reconnecting client that syncs from its cursor gets only what it missed."""
    alice, bob = await pair(accounts)
    a, b = await alice.connect(), await bob.connect()
    await a.send_message(name_of(bob), "seen")
    await b.wait_for("message")
    cursor = b.cursor
    await b.close()
    missed = await a.send_message(name_of(bob), "missed")
    again = await bob.connect(after=cursor)
    assert [f["id"] for f in again.replayed] == [missed["id"]]


async def test_sync_comes_in_batches_and_ends_with_synced(server_with: ServerWith) -> None:
    """With a small sync batch, a long backlog still arrives whole and in order."""
    _server, accounts = server_with(sync_batch=2)
    alice, bob = await pair(accounts)
    a = await alice.connect()
    acks = [await a.send_message(name_of(bob), str(i)) for i in range(5)]
    b = await bob.connect(after=None)
    replayed = await b.sync(0)
    assert [f["seq"] for f in replayed] == [ack["seq"] for ack in acks]
    assert b.cursor == acks[-1]["seq"]


async def test_resending_an_id_returns_the_same_ack_and_stores_nothing(accounts: Accounts) -> None:
    """A retry after a lost ack is acknowledged with the original seq and ts, and stored once."""
    alice, bob = await pair(accounts)
    a = await alice.connect()
    message_id = str(uuid.uuid4())
    first = await a.send_message(name_of(bob), "once", message_id=message_id)
    retry = await a.send_message(name_of(bob), "once", message_id=message_id)
    assert retry == first
    b = await bob.connect()
    assert [f["id"] for f in b.replayed] == [message_id]


async def test_receipts_reach_the_sender_live(accounts: Accounts) -> None:
    """Bob's delivered then read marks reach alice as receipts with their own positions."""
    alice, bob = await pair(accounts)
    a, b = await alice.connect(), await bob.connect()
    ack = await a.send_message(name_of(bob), "tick tick")
    frame = await b.wait_for("message", id=ack["id"])
    await b.mark(frame["seq"], "delivered")
    delivered = await a.wait_for("receipt", id=ack["id"], status="delivered")
    await b.mark(frame["seq"], "read")
    read = await a.wait_for("receipt", id=ack["id"], status="read")
    assert delivered["by"] == read["by"] == name_of(bob)
    assert ack["seq"] < delivered["seq"] < read["seq"]


async def test_receipts_replay_to_a_sender_who_was_offline(accounts: Accounts) -> None:
    """Alice syncs past her message, goes away; bob reads it; alice's next sync says so."""
    alice, bob = await pair(accounts)
    a = await alice.connect()
    ack = await a.send_message(name_of(bob), "did you read this?")
    await a.sync()
    cursor = a.cursor
    assert cursor >= ack["seq"]
    await a.close()
    b = await bob.connect()
    await b.mark(b.replayed[0]["seq"], "read")
    # A connection's frames are committed in order: this ack means the read mark is stored.
    reply = await b.send_message(name_of(alice), "yes")
    again = await alice.connect(after=cursor)
    replayed = {(f["type"], f["id"], f.get("status")) for f in again.replayed}
    assert replayed == {("receipt", ack["id"], "read"), ("message", reply["id"], None)}


async def test_a_second_mark_sends_no_second_receipt(accounts: Accounts) -> None:
    """Marks only move forward: delivered after read is silent."""
    alice, bob = await pair(accounts)
    a, b = await alice.connect(), await bob.connect()
    ack = await a.send_message(name_of(bob), "x")
    frame = await b.wait_for("message", id=ack["id"])
    await b.mark(frame["seq"], "read")
    await a.wait_for("receipt", status="read")
    await b.mark(frame["seq"], "delivered")
    await b.mark(frame["seq"], "read")
    # Bob's frames commit in order: once the first ack is back, the marks are committed, and
    # the second message is in a later commit, so any receipt would reach alice before it.
    await b.send_message(name_of(alice), "first")
    later = await b.send_message(name_of(alice), "second")
    await a.wait_for("message", id=later["id"])
    assert [f for f in a._backlog if f["type"] == "receipt"] == []


async def test_presence_tells_conversation_partners_online_and_offline(accounts: Accounts) -> None:
    """Alice, talking with bob, sees him come online and go offline."""
    alice, bob = await pair(accounts)
    a = await alice.connect()
    await a.send_message(name_of(bob), "are you there?")
    await bob.contact(name_of(alice), "accept")  # presence is shared between contacts only
    b = await bob.connect()
    await a.wait_for("presence", user=name_of(bob), status="online")
    await b.close()
    await a.wait_for("presence", user=name_of(bob), status="offline")


async def test_connecting_tells_me_which_partners_are_online(accounts: Accounts) -> None:
    """On connect, I get an online presence frame for each partner already online."""
    alice, bob = await pair(accounts)
    a = await alice.connect()
    await a.send_message(name_of(bob), "hi")
    await bob.contact(name_of(alice), "accept")  # presence is shared between contacts only
    b = await bob.connect()
    assert await b.wait_for("presence", user=name_of(alice)) == {
        "type": "presence",
        "user": name_of(alice),
        "status": "online",
    }


async def test_presence_is_not_told_to_strangers(accounts: Accounts) -> None:
    """Someone with no conversation with bob hears nothing of him."""
    alice, bob, carol = (
        await accounts.sign_up("alice"),
        await accounts.sign_up("bob"),
        (await accounts.sign_up("carol")),
    )
    c = await carol.connect()
    a = await alice.connect()
    await a.send_message(name_of(bob), "hi")
    await bob.contact(name_of(alice), "accept")
    b = await bob.connect()
    await a.wait_for("presence", user=name_of(bob))
    await b.close()
    await a.wait_for("presence", user=name_of(bob), status="offline")
    await c.ping()
    assert [f for f in c._backlog if f["type"] == "presence"] == []


async def test_senders_other_device_gets_the_message_and_the_sending_one_only_the_ack(
    accounts: Accounts,
) -> None:
    """Multi-device: alice's second session receives what her first one sent."""
    alice, bob = await pair(accounts)
    phone = await alice.connect()
    laptop = await (await accounts.login_again(name_of(alice))).connect()
    ack = await phone.send_message(name_of(bob), "from my phone")
    copy = await laptop.wait_for("message", id=ack["id"])
    assert (await laptop.open(copy)).text == "from my phone"
    await phone.ping()
    assert [f for f in phone._backlog if f["type"] == "message"] == []


async def test_typing_reaches_the_recipient(accounts: Accounts) -> None:
    """A typing frame is relayed to the recipient's live session with the sender's name."""
    alice, bob = await pair(accounts)
    await alice.contact(name_of(bob), "accept")  # typing is shared between contacts only
    await bob.contact(name_of(alice), "accept")
    a, b = await alice.connect(), await bob.connect()
    await a.typing(name_of(bob))
    assert await b.wait_for("typing") == {"type": "typing", "from": name_of(alice)}


async def test_a_4000_character_emoji_message_round_trips(accounts: Accounts) -> None:
    """4,000 characters with emoji and markup survive encryption, the server and decryption."""
    alice, bob = await pair(accounts)
    text = ("héllo 😀👩‍👩‍👧 <script>alert(1)</script> " * 200)[:4000]
    assert len(text) == 4000
    a, b = await alice.connect(), await bob.connect()
    ack = await a.send_message(name_of(bob), text)
    frame = await b.wait_for("message", id=ack["id"])
    assert (await b.open(frame)).text == text
    history = await alice.call("GET", f"/api/v1/messages?with={name_of(bob)}")
    assert (await a.open(history["messages"][0] | {"type": "message"})).text == text


async def test_a_message_can_be_sent_before_the_recipient_ever_connects(accounts: Accounts) -> None:
    """A brand-new account receives what was sent to it before its first connection."""
    alice = await accounts.sign_up("alice")
    newcomer_name = unique("new")
    newcomer = await accounts.login_again(newcomer_name, register=True)
    a: ChatConnection = await alice.connect()
    ack = await a.send_message(newcomer_name, "welcome")
    n = await newcomer.connect()
    assert [f["id"] for f in n.replayed] == [ack["id"]]
