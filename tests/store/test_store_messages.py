"""The MessageStore on both engines (a real SQLite file, a throwaway PostgreSQL): sequence,
idempotency, marks, sync, pages."""

from __future__ import annotations

import itertools

import pytest

from securechat.store import (
    UNKNOWN_MESSAGE,
    UNKNOWN_RECIPIENT,
    CommitResult,
    MarkOutcome,
    MarkStatus,
    NewMark,
    NewMessage,
    Receipt,
    Store,
    Stored,
)
from securechat.store.postgres import PostgresStore
from securechat.store.sqlite import SQLiteStore
from tests.store.conftest import MakeStore, new_user

ENVELOPE = '{"ct":"AAAA","iv":"BBBB","rk":"CC","sig":"DD","sk":"EE","v":1}'
NOW = 1_700_000_000_000
_ids = itertools.count(1)


@pytest.fixture(name="store")
async def _store(any_store: Store) -> Store:
    """The store on each backend in turn, with alice, bob and carol."""
    for name in ("alice", "bob", "carol"):
        await any_store.accounts.add_user(new_user(name), 1)
    return any_store


async def uid(store: Store, name: str) -> int:
    user = await store.accounts.user_by_name(name)
    assert user is not None
    return user.id


async def send(
    store: Store, sender: str, *recipients: str, ids: list[str] | None = None
) -> CommitResult:
    """Commit one send per recipient from ``sender``; return the result."""
    sender_id = await uid(store, sender)
    ids = ids or [f"{sender}-{next(_ids)}" for _ in recipients]
    sends = [NewMessage(sender_id, i, r, ENVELOPE) for i, r in zip(ids, recipients, strict=True)]
    return await store.messages.commit(sends, [], NOW)


async def mark(store: Store, reader: str, seq: int, status: MarkStatus) -> MarkOutcome:
    marks = [NewMark(await uid(store, reader), seq, status)]
    result = await store.messages.commit([], marks, NOW + 5)
    return result.marks[0]


async def test_sends_get_increasing_seqs_and_the_sequence_row_follows(store: Store) -> None:
    """A batch's messages get consecutive seqs and chat_sequence records the last."""
    result = await send(store, "alice", "bob", "bob", "carol")
    seqs = [o.seq for o in result.sends if isinstance(o, Stored)]
    assert seqs == [1, 2, 3]
    assert result.last_seq == 3 == await store.messages.last_seq()


async def test_a_second_committer_never_reuses_a_position(
    store: Store, make_any_store: MakeStore
) -> None:
    """Positions continue from the stored last, whoever moved it: a second store over the
    same database (another process or node) and this one take turns, and none is reused."""
    other = make_any_store()
    await other.open()
    try:
        await send(store, "alice", "bob", "bob")
        late = await send(other, "alice", "bob")
        after = await send(store, "alice", "bob")
    finally:
        await other.close()
    assert [o.seq for o in late.sends if isinstance(o, Stored)] == [3]
    assert [o.seq for o in after.sends if isinstance(o, Stored)] == [4]
    assert after.last_seq == 4 == await store.messages.last_seq()


async def test_resend_of_an_id_returns_the_original_and_stores_nothing(store: Store) -> None:
    """The UNIQUE (sender, id) index turns a resend into the original seq and ts."""
    await send(store, "alice", "bob", ids=["m1"])
    sender_id = await uid(store, "alice")
    again = await store.messages.commit(
        [NewMessage(sender_id, "m1", "bob", ENVELOPE)], [], NOW + 1000
    )
    assert again.sends == [Stored(1, NOW, False)]
    changes, _ = await store.messages.changes_after(await uid(store, "bob"), 0, 100, 1 << 20)
    assert [c.seq for c in changes] == [1]


async def test_two_copies_of_one_id_in_a_batch_store_one(store: Store) -> None:
    """The same id twice in one batch: both answer the first copy's seq."""
    result = await send(store, "alice", "bob", "bob", ids=["dup", "dup"])
    assert result.sends == [Stored(1, NOW, True), Stored(1, NOW, False)]


async def test_same_id_from_two_senders_are_two_messages(store: Store) -> None:
    """Ids are per sender: another sender's message with the same id is stored."""
    await send(store, "alice", "carol", ids=["same"])
    result = await send(store, "bob", "carol", ids=["same"])
    assert isinstance(result.sends[0], Stored) and result.sends[0].created


async def test_unknown_recipient_is_refused_without_using_a_seq(store: Store) -> None:
    """A send to a name without an account is refused; the rest of the batch is stored."""
    result = await send(store, "alice", "nobody", "bob")
    assert result.sends[0] == UNKNOWN_RECIPIENT
    assert result.sends[1] == Stored(1, NOW, True)


async def test_only_the_recipient_may_mark_a_message(store: Store) -> None:
    """Marks by the sender or a third party are refused like marks of nothing."""
    await send(store, "alice", "bob")
    assert await mark(store, "alice", 1, "delivered") == UNKNOWN_MESSAGE
    assert await mark(store, "carol", 1, "read") == UNKNOWN_MESSAGE
    assert await mark(store, "bob", 999, "read") == UNKNOWN_MESSAGE


async def test_marks_take_positions_from_the_message_sequence(store: Store) -> None:
    """A receipt gets the next seq after the messages, for its sender to sync."""
    await send(store, "alice", "bob", ids=["m1"])
    receipt = await mark(store, "bob", 1, "delivered")
    delivered = (await uid(store, "alice"), len(ENVELOPE))
    # prev=1: message 1 came before it in alice's stream.
    assert receipt == Receipt(2, 1, "m1", "delivered", "alice", NOW + 5, delivered, prev=1)


async def test_only_the_first_delivering_mark_reports_the_sender_and_size(store: Store) -> None:
    """Read after delivered, or a second message read first, each deliver once (backlog)."""
    await send(store, "alice", "bob", "bob")
    alice = await uid(store, "alice")
    first = await mark(store, "bob", 1, "delivered")
    read_after = await mark(store, "bob", 1, "read")
    read_first = await mark(store, "bob", 2, "read")
    assert isinstance(first, Receipt) and isinstance(read_after, Receipt)
    assert isinstance(read_first, Receipt)
    assert (first.delivered, read_after.delivered) == ((alice, len(ENVELOPE)), None)
    assert read_first.delivered == (alice, len(ENVELOPE))
    assert await store.messages.undelivered() == []


async def test_marks_are_monotonic(store: Store) -> None:
    """Delivered twice, or after read, changes nothing; read twice changes nothing."""
    await send(store, "alice", "bob")
    assert isinstance(await mark(store, "bob", 1, "read"), Receipt)
    assert await mark(store, "bob", 1, "delivered") is None
    assert await mark(store, "bob", 1, "read") is None


async def test_read_implies_delivered(store: Store) -> None:
    """Reading an undelivered message fills in its delivered time too."""
    await send(store, "alice", "bob")
    await mark(store, "bob", 1, "read")
    history = await store.messages.history(
        await uid(store, "alice"), await uid(store, "bob"), 99, 10
    )
    assert history[0].delivered_at == history[0].read_at == NOW + 5


async def test_changes_replay_messages_both_ways_and_receipts_in_order(store: Store) -> None:
    """Sync sees messages to and from the user and receipts for what the user sent."""
    await send(store, "alice", "bob")  # 1
    await send(store, "bob", "alice")  # 2
    await send(store, "carol", "bob")  # 3: not alice's
    await mark(store, "bob", 1, "read")  # 4
    changes, more = await store.messages.changes_after(await uid(store, "alice"), 0, 100, 1 << 20)
    assert [(c.pos, c.kind) for c in changes] == [(1, "message"), (2, "message"), (4, "read")]
    assert not more


async def test_receipt_replays_after_a_cursor_past_its_message(store: Store) -> None:
    """A sender synced past the message still gets the later receipt."""
    await send(store, "alice", "bob")  # 1
    await send(store, "alice", "carol")  # 2
    await mark(store, "bob", 1, "delivered")  # 3
    changes, _ = await store.messages.changes_after(await uid(store, "alice"), 2, 100, 1 << 20)
    assert [(c.pos, c.kind, c.seq, c.recipient) for c in changes] == [(3, "delivered", 1, "bob")]


async def test_changes_stop_at_the_limit_and_say_more(store: Store) -> None:
    """A full batch says more may follow; the next batch continues after it."""
    await send(store, "alice", *["bob"] * 5)
    bob = await uid(store, "bob")
    first, more = await store.messages.changes_after(bob, 0, 3, 1 << 20)
    rest, more_after = await store.messages.changes_after(bob, first[-1].pos, 3, 1 << 20)
    assert [c.pos for c in first] == [1, 2, 3] and more
    assert [c.pos for c in rest] == [4, 5] and not more_after


async def test_changes_stop_at_the_byte_budget_but_always_move(store: Store) -> None:
    """A batch ends near max_bytes of envelopes, and always holds at least one item."""
    await send(store, "alice", *["bob"] * 4)
    bob = await uid(store, "bob")
    one, more = await store.messages.changes_after(bob, 0, 100, 1)
    two, _ = await store.messages.changes_after(bob, 0, 100, len(ENVELOPE) + 1)
    assert [c.pos for c in one] == [1] and more
    assert [c.pos for c in two] == [1, 2]


async def test_conversations_count_unread_and_order_by_recency(store: Store) -> None:
    """Each side has a conversation row; unread counts what the user has not read."""
    await send(store, "alice", "bob", "bob")  # 1, 2
    await send(store, "carol", "bob")  # 3
    await mark(store, "bob", 1, "read")
    rows = await store.messages.conversations(await uid(store, "bob"), 2**63 - 1, 10)
    assert [(r.peer, r.last_seq, r.unread) for r in rows] == [("carol", 3, 1), ("alice", 2, 1)]
    mine = await store.messages.conversations(await uid(store, "alice"), 2**63 - 1, 10)
    assert [(r.peer, r.unread) for r in mine] == [("bob", 0)]


async def test_history_is_one_conversation_newest_first_and_pages(store: Store) -> None:
    """History holds both directions of one pair only, newest first, before a seq."""
    await send(store, "alice", "bob")  # 1
    await send(store, "bob", "alice")  # 2
    await send(store, "carol", "alice")  # 3
    await send(store, "alice", "bob")  # 4
    alice, bob = await uid(store, "alice"), await uid(store, "bob")
    assert [h.seq for h in await store.messages.history(alice, bob, 2**62, 10)] == [4, 2, 1]
    assert [h.seq for h in await store.messages.history(bob, alice, 4, 1)] == [2]


async def test_peer_names_lists_conversation_partners(store: Store) -> None:
    """The people a user has talked with both ways (each accepted the other), most recent
    first."""
    await send(store, "alice", "bob")
    await send(store, "bob", "alice")
    await send(store, "carol", "alice")
    await send(store, "alice", "carol")
    assert await store.messages.peer_names("alice", 10) == ["carol", "bob"]
    assert await store.messages.peer_names("bob", 10) == ["alice"]


async def test_a_batch_is_one_transaction(store: Store) -> None:
    """Many sends and marks commit in one write job, whatever the batch size."""
    before = store.commit_stats.transactions
    await send(store, "alice", *["bob"] * 200)
    assert store.commit_stats.transactions == before + 1


async def test_envelope_is_stored_as_text(store: Store) -> None:
    """The envelope is kept verbatim as TEXT (spliced into frames without re-parsing)."""
    await send(store, "alice", "bob")
    if isinstance(store, SQLiteStore):
        row = await store.db.fetch_one("SELECT envelope, typeof(envelope) FROM messages")
    else:
        assert isinstance(store, PostgresStore)
        row = await store.db.fetch_one("SELECT envelope, pg_typeof(envelope)::text FROM messages")
    assert row is not None and tuple(row) == (ENVELOPE, "text")
