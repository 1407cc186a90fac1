"""The ContactStore and the commit's rules on both engines (issue 12, item 5): writing to
someone accepts them, a block withholds the blocked sender's messages, requests, sharing."""

from __future__ import annotations

import sqlite3

import pytest

from securechat.store import NewMessage, Store, Stored
from securechat.store.postgres import PostgresStore
from securechat.store.sqlite import SQLiteStore
from tests.store.conftest import MakeStore, new_user
from tests.store.test_store_messages import ENVELOPE, NOW, send, uid


@pytest.fixture(name="store")
async def _store(any_store: Store) -> Store:
    """The store on each backend in turn, with alice, bob and carol."""
    for name in ("alice", "bob", "carol"):
        await any_store.accounts.add_user(new_user(name), 1)
    return any_store


async def test_writing_to_someone_accepts_them(store: Store) -> None:
    """Alice's first message makes bob her contact; bob has decided nothing yet."""
    await send(store, "alice", "bob")
    alice, bob = await uid(store, "alice"), await uid(store, "bob")
    assert await store.contacts.relations(alice, ["bob"]) == {"bob": ("accepted", None)}
    assert await store.contacts.relations(bob, ["alice", "nobody"]) == {"alice": (None, "accepted")}
    assert not await store.contacts.sharing("alice", "bob")


async def test_a_first_message_is_a_request_until_accepted(store: Store) -> None:
    """Bob sees alice's conversation among his requests until he accepts it; then both share."""
    result = await send(store, "alice", "bob")
    bob, alice = await uid(store, "bob"), await uid(store, "alice")
    [request] = await store.contacts.requests(bob, 2**62, 10)
    assert (request.peer, request.unread) == ("alice", 1)
    assert isinstance(result.sends[0], Stored)
    assert request.last_seq == result.sends[0].seq
    assert await store.contacts.requests(alice, 2**62, 10) == []
    await store.contacts.set_state(bob, alice, "accepted", NOW)
    assert await store.contacts.requests(bob, 2**62, 10) == []
    assert await store.contacts.sharing("alice", "bob")
    assert await store.contacts.sharing("bob", "alice")
    assert await store.messages.peer_names("bob", 10) == ["alice"]


async def test_replying_accepts_too(store: Store) -> None:
    """A reply is an acceptance: presence is shared from then on."""
    await send(store, "alice", "bob")
    await send(store, "bob", "alice")
    assert await store.contacts.sharing("bob", "alice")
    assert await store.messages.peer_names("alice", 10) == ["bob"]


async def test_a_blocked_senders_message_is_acknowledged_and_stored_for_no_one(
    store: Store,
) -> None:
    """Bob blocks alice: her send takes a position and is reported stored, but no row, no
    conversation, nothing in bob's stream; her other sends to carol go on."""
    await send(store, "alice", "bob")
    alice, bob = await uid(store, "alice"), await uid(store, "bob")
    await store.contacts.set_state(bob, alice, "blocked", NOW)
    head_before = await store.messages.head(bob)
    result = await send(store, "alice", "bob", "carol")
    withheld, to_carol = result.sends
    assert isinstance(withheld, Stored) and withheld.withheld and not withheld.created
    assert isinstance(to_carol, Stored) and to_carol.created and to_carol.seq > withheld.seq
    assert await store.messages.head(bob) == head_before
    changes, _ = await store.messages.changes_after(bob, 0, 100, 1 << 20)
    assert withheld.seq not in {change.seq for change in changes}
    assert [h.seq for h in await store.messages.history(alice, bob, 2**62, 10)] == [changes[0].seq]
    assert not await store.contacts.sharing("alice", "bob")
    assert await store.contacts.listed(bob, "blocked", 10) == ["alice"]


async def test_withheld_messages_take_no_backlog_room(store: Store) -> None:
    """A blocked sender's messages are not waiting for anyone: they count in no bound."""
    alice, bob = await uid(store, "alice"), await uid(store, "bob")
    await store.contacts.set_state(bob, alice, "blocked", NOW)
    await send(store, "alice", "bob")
    assert await store.messages.undelivered() == []


async def test_unblocking_makes_a_stranger_again(store: Store) -> None:
    """After an unblock alice's next message is delivered, as a request; a second unblock
    finds nothing."""
    alice, bob = await uid(store, "alice"), await uid(store, "bob")
    await store.contacts.set_state(bob, alice, "blocked", NOW)
    assert await store.contacts.unblock(bob, alice)
    assert not await store.contacts.unblock(bob, alice)
    [outcome] = (await send(store, "alice", "bob")).sends
    assert isinstance(outcome, Stored) and outcome.created and not outcome.withheld
    assert [r.peer for r in await store.contacts.requests(bob, 2**62, 10)] == ["alice"]


async def test_blocking_stays_when_the_blocker_writes(store: Store) -> None:
    """Bob writing to alice after blocking her does not lift the block (unblock first)."""
    alice, bob = await uid(store, "alice"), await uid(store, "bob")
    await store.contacts.set_state(bob, alice, "blocked", NOW)
    await send(store, "bob", "alice")
    assert (await store.contacts.relations(bob, ["alice"]))["alice"][0] == "blocked"


async def test_dismissing_a_request_removes_it_until_the_next_message(store: Store) -> None:
    """Deleting a request drops the conversation from bob's list; a contact's is kept."""
    alice, bob = await uid(store, "alice"), await uid(store, "bob")
    await send(store, "alice", "bob")
    await send(store, "carol", "bob")
    await send(store, "bob", "carol")
    assert await store.contacts.dismiss(bob, alice)
    assert not await store.contacts.dismiss(bob, alice)
    assert not await store.contacts.dismiss(bob, await uid(store, "carol"))
    assert [c.peer for c in await store.messages.conversations(bob, 2**62, 10)] == ["carol"]
    await send(store, "alice", "bob")
    assert [r.peer for r in await store.contacts.requests(bob, 2**62, 10)] == ["alice"]


async def test_listed_is_most_recent_decision_first(store: Store) -> None:
    """Contacts by state, the latest decision first."""
    alice = await uid(store, "alice")
    await store.contacts.set_state(alice, await uid(store, "bob"), "accepted", NOW)
    await store.contacts.set_state(alice, await uid(store, "carol"), "accepted", NOW + 1)
    assert await store.contacts.listed(alice, "accepted", 10) == ["carol", "bob"]
    assert await store.contacts.listed(alice, "accepted", 1) == ["carol"]
    assert await store.contacts.listed(alice, "blocked", 10) == []


async def test_a_block_in_the_same_batch_as_other_sends(store: Store) -> None:
    """A batch mixing a withheld send with stored ones numbers all, stores only the others."""
    alice, bob, carol = [await uid(store, n) for n in ("alice", "bob", "carol")]
    await store.contacts.set_state(bob, alice, "blocked", NOW)
    sends = [
        NewMessage(alice, "a-1", "bob", ENVELOPE),
        NewMessage(carol, "c-1", "bob", ENVELOPE),
        NewMessage(alice, "a-2", "carol", ENVELOPE),
    ]
    result = await store.messages.commit(sends, [], NOW)
    assert [isinstance(o, Stored) and o.created for o in result.sends] == [False, True, True]
    changes, _ = await store.messages.changes_after(bob, 0, 100, 1 << 20)
    assert [c.sender for c in changes] == ["carol"]


async def test_search_ranks_exact_then_prefix_then_substring(store: Store) -> None:
    """ "al" finds al, then alan/alice, then kalle; never the searcher; literal characters."""
    for name in ("al", "alan", "kalle", "a_l"):
        await store.accounts.add_user(new_user(name), 1)
    assert await store.accounts.search_users("al", 10, "carol") == [
        "al",
        "alan",
        "alice",
        "kalle",
    ]
    assert await store.accounts.search_users("al", 2, "al") == ["alan", "alice"]
    assert await store.accounts.search_users("_", 10, "x") == ["a_l"]
    assert await store.accounts.search_users("%", 10, "x") == []


async def test_an_older_database_starts_with_every_pair_that_wrote_accepted(
    make_any_store: MakeStore,
) -> None:
    """A database from before contacts (schema version 7) is upgraded with "accepted" for each
    sender of a stored message, so existing conversations are no requests and keep presence."""
    store = make_any_store()
    await store.open()
    for name in ("alice", "bob", "carol"):
        await store.accounts.add_user(new_user(name), 1)
    await send(store, "alice", "bob")
    await send(store, "bob", "alice")
    await send(store, "carol", "alice")
    await _before_contacts(store)
    await store.close()
    if isinstance(store, SQLiteStore):
        with sqlite3.connect(store.db.path) as db:
            db.executescript("DROP TABLE contacts; PRAGMA user_version = 7;")
    upgraded = make_any_store()
    await upgraded.open()
    try:
        alice = await uid(upgraded, "alice")
        assert await upgraded.contacts.relations(alice, ["bob", "carol"]) == {
            "bob": ("accepted", "accepted"),
            "carol": (None, "accepted"),
        }
        assert await upgraded.messages.peer_names("alice", 10) == ["bob"]
    finally:
        await upgraded.close()


async def _before_contacts(store: Store) -> None:
    """Take a PostgreSQL database back to before the contacts table (SQLite's is taken back
    once closed, on the file)."""
    if isinstance(store, PostgresStore):
        async with store.db.pool.acquire() as connection:
            await connection.execute(
                "DROP TABLE contacts; UPDATE schema_version SET version = 7 WHERE id = 1"
            )
