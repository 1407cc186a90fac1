"""Each user's stream head, kept by MessageStore.commit on both engines: every new position
comes back with ``prev``, the position before it in the stream of each user it enters (what
``changes_after`` shows them), so a socket can tell a frame that overtook another."""

from __future__ import annotations

import sqlite3
from pathlib import Path

import pytest

from securechat.config import PROJECT_ROOT
from securechat.store import MarkStatus, NewMark, NewMessage, Receipt, Store, Stored
from securechat.store.sqlite import SQLiteStore
from tests.store.conftest import new_user

ENVELOPE = '{"ct":"AAAA","iv":"BBBB","rk":"CC","sig":"DD","sk":"EE","v":1}'
NOW = 1_700_000_000_000


@pytest.fixture(name="store")
async def _store(any_store: Store) -> Store:
    """The store on each backend in turn, with alice, bob and carol."""
    for name in ("alice", "bob", "carol"):
        await any_store.accounts.add_user(new_user(name), 1)
    return any_store


async def ids(store: Store) -> dict[str, int]:
    found = {}
    for name in ("alice", "bob", "carol"):
        user = await store.accounts.user_by_name(name)
        assert user is not None
        found[name] = user.id
    return found


async def commit(
    store: Store, sends: list[tuple[str, str, str]], marks: list[tuple[str, int, MarkStatus]]
) -> tuple[list[Stored], list[Receipt]]:
    """Commit (sender, client id, recipient) sends and (reader, seq, status) marks as one
    batch; the outcomes, which must all be stored messages and receipts."""
    users = await ids(store)
    result = await store.messages.commit(
        [NewMessage(users[s], c, r, ENVELOPE) for s, c, r in sends],
        [NewMark(users[reader], seq, status) for reader, seq, status in marks],
        NOW,
    )
    stored = [o for o in result.sends if isinstance(o, Stored)]
    receipts = [o for o in result.marks if isinstance(o, Receipt)]
    assert len(stored) == len(sends) and len(receipts) == len(marks)
    return stored, receipts


async def test_messages_both_ways_carry_each_streams_prev(store: Store) -> None:
    """A message's prevs are its recipient's and its sender's last positions before it."""
    (first,), _ = await commit(store, [("alice", "a1", "bob")], [])
    (reply,), _ = await commit(store, [("bob", "b1", "alice")], [])
    (other,), _ = await commit(store, [("carol", "c1", "bob")], [])
    assert (first.seq, first.prev_recipient, first.prev_sender) == (1, 0, 0)
    assert (reply.seq, reply.prev_recipient, reply.prev_sender) == (2, 1, 1)
    assert (other.seq, other.prev_recipient, other.prev_sender) == (3, 2, 0)


async def test_receipts_carry_the_message_senders_prev(store: Store) -> None:
    """A receipt enters its message's sender's stream only: its prev is theirs."""
    await commit(store, [("alice", "a1", "bob"), ("carol", "c1", "alice")], [])
    _, (delivered,) = await commit(store, [], [("bob", 1, "delivered")])
    (later,), (read,) = await commit(store, [("bob", "b1", "carol")], [("bob", 1, "read")])
    assert (delivered.seq, delivered.prev) == (3, 2)  # alice: 1 (hers), 2 (from carol)
    assert (later.seq, later.prev_recipient, later.prev_sender) == (4, 2, 1)
    assert (read.seq, read.prev) == (5, 3)  # bob's message to carol is not in alice's stream


async def test_positions_of_one_batch_chain_in_order(store: Store) -> None:
    """Within a batch each position's prev is the one before it in the same batch."""
    await commit(store, [("alice", "a0", "bob")], [])
    sends, (read,) = await commit(
        store, [("alice", "a1", "bob"), ("alice", "a2", "bob")], [("bob", 1, "read")]
    )
    assert [(s.seq, s.prev_recipient, s.prev_sender) for s in sends] == [(2, 1, 1), (3, 2, 2)]
    assert (read.seq, read.prev) == (4, 3)


async def test_a_resend_takes_no_position_and_moves_no_head(store: Store) -> None:
    """A resend answers the original with no prevs, and the next message chains past it."""
    await commit(store, [("alice", "a1", "bob")], [])
    (again,), _ = await commit(store, [("alice", "a1", "bob")], [])
    (after,), _ = await commit(store, [("alice", "a2", "bob")], [])
    assert again == Stored(1, NOW, False)
    assert (after.prev_recipient, after.prev_sender) == (1, 1)


async def test_every_prev_is_the_position_before_it_in_the_sync(store: Store) -> None:
    """For each user, the prevs handed out are the order changes_after replays."""
    stored: list[Stored] = []
    receipts: list[Receipt] = []
    for batch in range(3):
        s, r = await commit(
            store,
            [("alice", f"a{batch}", "bob"), ("bob", f"b{batch}", "carol")],
            [("bob", 1, "delivered")] if batch == 1 else [("carol", 2, "read")] if batch else [],
        )
        stored += s
        receipts += r
    before: dict[str, dict[int, int]] = {}  # user -> position -> the one before it
    parties: dict[int, tuple[str, str]] = {}  # message seq -> (sender, recipient)
    for name, user in (await ids(store)).items():
        changes, _ = await store.messages.changes_after(user, 0, 100, 1 << 20)
        positions = [c.pos for c in changes]
        before[name] = dict(zip(positions, [0, *positions[:-1]], strict=True))
        parties.update({c.seq: (c.sender, c.recipient) for c in changes if c.kind == "message"})
        assert await store.messages.head(user) == positions[-1], name
    assert len(stored) == 6 and len(receipts) == 2
    for message in stored:
        sender, recipient = parties[message.seq]
        assert before[recipient][message.seq] == message.prev_recipient, message
        assert before[sender][message.seq] == message.prev_sender, message
    for receipt in receipts:
        assert before[receipt.sender][receipt.seq] == receipt.prev, receipt


async def test_head_reads_the_stream_heads_row_and_zero_without_one(store: Store) -> None:
    """head() is the user's stream_heads row as the commits left it (a receipt moves only its
    message's sender's), and 0 for a user with no position yet."""
    users = await ids(store)
    assert await store.messages.head(users["carol"]) == 0
    await commit(store, [("alice", "a1", "bob")], [])
    await commit(store, [], [("bob", 1, "read")])
    assert [await store.messages.head(users[n]) for n in ("alice", "bob", "carol")] == [2, 1, 0]
    rows = await store.db.fetch_all("SELECT user_id, head FROM stream_heads")  # type: ignore[attr-defined]
    assert {(int(row[0]), int(row[1])) for row in rows} == {(users["alice"], 2), (users["bob"], 1)}


async def test_deleting_an_account_brings_its_peers_heads_down_to_their_sync(
    store: Store,
) -> None:
    """Carol's deletion takes her messages both ways out of bob's stream: his head falls to
    the last position his sync still shows (else his sockets would be told to catch up on
    nothing at every check), and the next message to him chains on from there."""
    users = await ids(store)
    await commit(store, [("alice", "a1", "bob"), ("carol", "c1", "bob")], [])  # 1, 2
    await commit(store, [("bob", "b1", "carol")], [("bob", 2, "read")])  # 3; receipt 4: carol's
    assert await store.messages.head(users["bob"]) == 3
    await store.lifecycle.delete_user("carol", NOW + 1000, NOW)
    for name in ("alice", "bob"):
        changes, _ = await store.messages.changes_after(users[name], 0, 100, 1 << 20)
        assert await store.messages.head(users[name]) == changes[-1].pos == 1, name
    result = await store.messages.commit(
        [NewMessage(users["alice"], "a2", "bob", ENVELOPE)], [], NOW
    )
    assert result.sends == [Stored(5, NOW, True, prev_recipient=1, prev_sender=1)]


async def test_an_older_sqlite_database_gets_the_heads_of_what_it_holds(tmp_path: Path) -> None:
    """The upgrade step that adds the heads fills them in from the stored positions, so the
    next commit's prevs are right."""
    path = tmp_path / "v5.db"
    with sqlite3.connect(path) as db:
        db.executescript((PROJECT_ROOT / "schema.sql").read_text(encoding="utf-8"))
        db.executescript(
            "DROP TABLE stream_heads;"
            "INSERT INTO users (id, username, salt, iterations, auth_hash, enc_public_key,"
            " sign_public_key, key_backup, created_at, keys_updated_at) VALUES"
            " (1, 'alice', x'00', 1, 'h', x'00', x'00', 'b', 0, 0),"
            " (2, 'bob', x'00', 1, 'h', x'00', x'00', 'b', 0, 0),"
            " (3, 'carol', x'00', 1, 'h', x'00', x'00', 'b', 0, 0);"
            "INSERT INTO messages (seq, sender_id, recipient_id, client_id, ts, envelope,"
            " delivered_seq, delivered_at, read_seq, read_at) VALUES"
            " (1, 1, 2, 'a', 0, '{}', 3, 5, 6, 7), (2, 2, 3, 'b', 0, '{}', NULL, NULL, NULL, NULL),"
            " (4, 3, 2, 'c', 0, '{}', NULL, NULL, NULL, NULL);"
            "UPDATE chat_sequence SET last = 6;"
            "PRAGMA user_version = 5;"
        )
    store = SQLiteStore.for_file(path, PROJECT_ROOT / "schema.sql")
    await store.open()
    try:
        heads = await store.db.fetch_all("SELECT user_id, head FROM stream_heads ORDER BY 1")
        assert [tuple(row) for row in heads] == [(1, 6), (2, 4), (3, 4)]
        (to_alice,), _ = await commit(store, [("carol", "c2", "alice")], [])
        assert (to_alice.seq, to_alice.prev_recipient, to_alice.prev_sender) == (7, 6, 4)
    finally:
        await store.close()
