"""MessageStore.delete_message on both backends: what a delete for everyone takes with it."""

from __future__ import annotations

import uuid

from securechat.store import DELETE_EXPIRED, UNKNOWN_MESSAGE, Deleted, NewMark, NewMessage, Store
from tests.store.conftest import new_user

ENVELOPE = '{"ct":"x"}'


async def two_users(store: Store) -> tuple[int, int]:
    return (
        await store.accounts.add_user(new_user("alice"), 1),
        await store.accounts.add_user(new_user("bob"), 1),
    )


async def send(store: Store, sender: int, to: str, now_ms: int) -> tuple[str, int]:
    """Store one message; its client id and position."""
    client_id = str(uuid.uuid4())
    result = await store.messages.commit([NewMessage(sender, client_id, to, ENVELOPE)], [], now_ms)
    outcome = result.sends[0]
    assert not isinstance(outcome, str)
    return client_id, outcome.seq


async def test_a_delete_takes_the_message_its_counts_and_its_positions(any_store: Store) -> None:
    """The deleted message leaves both streams, the backlog and the unread count, and each
    user's head goes back to the position before it."""
    alice, bob = await two_users(any_store)
    kept, kept_seq = await send(any_store, alice, "bob", 1000)
    gone, gone_seq = await send(any_store, alice, "bob", 1001)
    assert await any_store.messages.head(bob) == gone_seq

    assert await any_store.messages.delete_message(alice, gone, 1000) == Deleted(gone_seq, "bob")

    for user in (alice, bob):
        changes, _ = await any_store.messages.changes_after(user, 0, 100, 1 << 20)
        assert [change.client_id for change in changes] == [kept]
        assert await any_store.messages.head(user) == kept_seq
    assert await any_store.messages.undelivered() == [(alice, "bob", 1, len(ENVELOPE))]
    conversations = await any_store.messages.conversations(bob, 2**62, 10)
    assert [row.unread for row in conversations] == [1]


async def test_a_delete_keeps_what_was_already_received_right(any_store: Store) -> None:
    """A message bob already read leaves nothing behind in his unread count or the backlog."""
    alice, bob = await two_users(any_store)
    gone, gone_seq = await send(any_store, alice, "bob", 1000)
    await any_store.messages.commit([], [NewMark(bob, gone_seq, "read")], 1001)
    assert isinstance(await any_store.messages.delete_message(alice, gone, 0), Deleted)
    conversations = await any_store.messages.conversations(bob, 2**62, 10)
    assert [row.unread for row in conversations] == [0]
    assert await any_store.messages.undelivered() == []
    # The read receipt went with the message: alice's stream holds nothing.
    changes, _ = await any_store.messages.changes_after(alice, 0, 100, 1 << 20)
    assert changes == []


async def test_refusals(any_store: Store) -> None:
    """Someone else's message, an unknown id and a second delete are unknown; an old one is
    expired and stays."""
    alice, bob = await two_users(any_store)
    message, seq = await send(any_store, alice, "bob", 1000)
    assert await any_store.messages.delete_message(bob, message, 0) == UNKNOWN_MESSAGE
    assert await any_store.messages.delete_message(alice, str(uuid.uuid4()), 0) == UNKNOWN_MESSAGE
    assert await any_store.messages.delete_message(alice, message, 1001) == DELETE_EXPIRED
    assert await any_store.messages.head(bob) == seq
    assert await any_store.messages.delete_message(alice, message, 1000) == Deleted(seq, "bob")
    assert await any_store.messages.delete_message(alice, message, 0) == UNKNOWN_MESSAGE
