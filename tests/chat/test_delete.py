"""Delete for everyone: the ``delete`` frame on a real server, over SQLite and PostgreSQL.

The sender removes its stored message within ``delete_window``; the server answers ``deleted``
and the message is gone from both users' history and sync. The other devices learn of it from
the sender's encrypted tombstone, an ordinary message (tested in the browser test).
"""

from __future__ import annotations

import json
import uuid
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from securechat import e2e
from securechat.client import SecureChatClient
from securechat.client.chat import ChatError
from tests.chatkit import Accounts
from tests.clockkit import ManualClock
from tests.conftest import fast_config
from tests.livesrv import LiveServer

WINDOW = 60  # seconds, short so the test's clock can pass it well inside the session timeouts


@dataclass
class Pair:
    """Alice and Bob on one server whose clock the test moves."""

    clock: ManualClock
    alice: SecureChatClient
    bob: SecureChatClient
    accounts: Accounts


@pytest.fixture(name="backend_server", params=["sqlite", "postgres"])
def _backend_server(
    request: pytest.FixtureRequest, tmp_path: Path
) -> Iterator[tuple[LiveServer, ManualClock]]:
    """A server on SQLite, or on a fresh PostgreSQL database, with a manual clock."""
    overrides: dict[str, object] = {"delete_window": WINDOW}
    # A test may tighten the server's bounds: @pytest.mark.parametrize("bounds", [{...}]).
    if "bounds" in request.fixturenames:
        overrides |= request.getfixturevalue("bounds")
    if request.param == "postgres":
        engine = request.getfixturevalue("postgres_engine")
        database = request.getfixturevalue("postgres_database")
        overrides |= {"database_url": engine.url(database), "db_pool_min": 1, "db_pool_max": 3}
    clock = ManualClock()
    server = LiveServer(fast_config(tmp_path / "data", **overrides), clock=clock).start()
    yield server, clock
    server.stop()


@pytest.fixture(name="pair")
async def _pair(
    backend_server: tuple[LiveServer, ManualClock], identities: list[e2e.Identity]
) -> AsyncIterator[Pair]:
    server, clock = backend_server
    accounts = Accounts(server.url, identities)
    alice = await accounts.sign_up("alice")
    bob = await accounts.sign_up("bob")
    yield Pair(clock, alice, bob, accounts)
    await accounts.close()


async def history(client: SecureChatClient, peer: str) -> list[str]:
    """The ids of the conversation with ``peer`` the server holds, newest first."""
    page = await client.call("GET", f"/api/v1/messages?with={peer}")
    return [item["id"] for item in page["messages"]]


async def test_sender_deletes_a_message_for_everyone(pair: Pair) -> None:
    """The sender's delete is answered ``deleted``; the message leaves both histories and
    both users' sync, and the recipient's unread count."""
    alice, bob = pair.alice, pair.bob
    assert alice.account is not None and bob.account is not None
    alice_chat = await alice.connect()
    kept = await alice_chat.send_message(bob.account.username, "kept")
    gone_id = str(uuid.uuid4())
    await alice_chat.send_message(bob.account.username, "oops", message_id=gone_id)
    assert await alice_chat.delete(gone_id) == {"type": "deleted", "id": gone_id}
    assert await history(bob, alice.account.username) == [kept["id"]]
    assert await history(alice, bob.account.username) == [kept["id"]]
    bob_chat = await bob.connect(after=0)
    assert [frame["id"] for frame in bob_chat.replayed] == [kept["id"]]
    conversations = await bob.call("GET", "/api/v1/conversations")
    assert conversations["conversations"][0]["unread"] == 1


async def test_a_delete_reaches_an_offline_recipient_in_order(pair: Pair) -> None:
    """A recipient offline during the delete syncs past its cursor and gets the tombstone
    (an ordinary message) without the deleted message."""
    alice, bob = pair.alice, pair.bob
    assert alice.account is not None and bob.account is not None
    bob_chat = await bob.connect(after=0)
    cursor = bob_chat.cursor
    await bob_chat.close()
    alice_chat = await alice.connect()
    gone_id = str(uuid.uuid4())
    await alice_chat.send_message(bob.account.username, "oops", message_id=gone_id)
    await alice_chat.delete(gone_id)
    tombstone = await alice_chat.send_message(bob.account.username, "")
    bob_again = await bob.connect(after=cursor)
    assert [frame["id"] for frame in bob_again.replayed] == [tombstone["id"]]


async def test_the_tombstone_reaches_every_live_session_of_both(pair: Pair) -> None:
    """Bob's socket and alice's other session get the tombstone live, as a message they open;
    the sender's deleting socket gets its ack."""
    alice, bob = pair.alice, pair.bob
    assert alice.account is not None and bob.account is not None
    laptop = await alice.connect()
    phone = await (await pair.accounts.login_again(alice.account.username)).connect()
    bob_chat = await bob.connect()
    sent = await laptop.send_message(bob.account.username, "oops")
    for chat in (phone, bob_chat):
        await chat.wait_for("message", id=sent["id"])
    await laptop.delete(sent["id"])
    tombstone = await laptop.send_tombstone(bob.account.username, sent["id"])
    for chat in (phone, bob_chat):
        frame = await chat.wait_for("message", id=tombstone["id"])
        assert frame["seq"] == tombstone["seq"]
        assert (await chat.open(frame)).text == ""


async def test_nobody_deletes_someone_elses_message(pair: Pair) -> None:
    """The recipient cannot delete the sender's message: ``unknown_message``, and it stays."""
    alice, bob = pair.alice, pair.bob
    assert alice.account is not None and bob.account is not None
    alice_chat = await alice.connect()
    sent = await alice_chat.send_message(bob.account.username, "mine")
    bob_chat = await bob.connect()
    with pytest.raises(ChatError) as refused:
        await bob_chat.delete(sent["id"])
    assert refused.value.code == "unknown_message"
    assert refused.value.frame["id"] == sent["id"]
    assert await history(bob, alice.account.username) == [sent["id"]]


async def test_unknown_and_repeated_deletes_are_refused(pair: Pair) -> None:
    """An id never sent, and a second delete of the same message, answer ``unknown_message``."""
    alice, bob = pair.alice, pair.bob
    assert bob.account is not None
    alice_chat = await alice.connect()
    with pytest.raises(ChatError) as unknown:
        await alice_chat.delete(str(uuid.uuid4()))
    assert unknown.value.code == "unknown_message"
    sent = await alice_chat.send_message(bob.account.username, "once")
    await alice_chat.delete(sent["id"])
    with pytest.raises(ChatError) as again:
        await alice_chat.delete(sent["id"])
    assert again.value.code == "unknown_message"
    assert await alice_chat.ping() == {"type": "pong"}  # the socket stays open


async def test_a_delete_after_the_window_is_refused(pair: Pair) -> None:
    """At the window's end the message may still be deleted; a moment later
    ``delete_expired``, and the message stays."""
    alice, bob = pair.alice, pair.bob
    assert alice.account is not None and bob.account is not None
    alice_chat = await alice.connect()
    first = await alice_chat.send_message(bob.account.username, "first")
    second = await alice_chat.send_message(bob.account.username, "second")
    pair.clock.advance(WINDOW)
    await alice_chat.delete(first["id"])
    pair.clock.advance(0.001)
    with pytest.raises(ChatError) as late:
        await alice_chat.delete(second["id"])
    assert late.value.code == "delete_expired"
    assert await history(bob, alice.account.username) == [second["id"]]


async def test_a_malformed_delete_is_a_bad_field(pair: Pair) -> None:
    """A delete without a canonical UUID ``id`` is answered ``bad_field`` naming it."""
    chat = await pair.alice.connect()
    for bad_id in [None, "not-a-uuid", str(uuid.uuid4()).upper(), 7]:
        frame = {"type": "delete"} if bad_id is None else {"type": "delete", "id": bad_id}
        await chat.send_raw(json.dumps(frame))
        error = await chat.wait_for("error")
        assert error["code"] == "bad_field"
        assert "'id'" in error["message"]


@pytest.mark.parametrize("bounds", [{"sends_per_user_per_s": 0.001, "sends_per_user_burst": 3}])
async def test_deletes_draw_on_the_send_rate(pair: Pair, bounds: dict[str, object]) -> None:
    """A burst of deletes (of unknown ids, each a database look-up) is refused past the
    account's send budget with the error a send gets, and the budget is shared with sends."""
    alice, bob = pair.alice, pair.bob
    assert bob.account is not None
    alice_chat = await alice.connect()
    await alice_chat.send_message(bob.account.username, "one")
    codes = []
    for _ in range(3):
        with pytest.raises(ChatError) as refused:
            await alice_chat.delete(str(uuid.uuid4()))
        codes.append(refused.value.code)
    assert codes == ["unknown_message", "unknown_message", "rate_limited"]
    with pytest.raises(ChatError) as refused:
        await alice_chat.send_message(bob.account.username, "two")
    assert refused.value.code == "rate_limited"
    assert await alice_chat.ping() == {"type": "pong"}
