"""The backlog bounds inside MessageStore.commit, on both engines: what a sender may leave
stored that no device of its recipient has received (messages per recipient, envelope bytes
over all), counted in the database under the commit's lock, so that nodes sharing one database
never exceed them together."""

from __future__ import annotations

import asyncio
import itertools
import sqlite3
from pathlib import Path

import pytest

from securechat.config import PROJECT_ROOT
from securechat.store import (
    QUEUE_FULL,
    BacklogBounds,
    CommitResult,
    NewMark,
    NewMessage,
    Store,
    Stored,
)
from securechat.store.sqlite import SQLiteStore
from tests.store.conftest import MakeStore, new_user
from tests.store.test_store_messages import ENVELOPE, NOW

WIDE = 1 << 30
_ids = itertools.count(1)


@pytest.fixture(name="store")
async def _store(any_store: Store) -> Store:
    """The store on each backend in turn, with alice, bob, carol and dave (ids 1 to 4)."""
    for name in ("alice", "bob", "carol", "dave"):
        await any_store.accounts.add_user(new_user(name), 1)
    return any_store


async def send(
    store: Store, bounds: BacklogBounds, *recipients: str, ids: list[str] | None = None
) -> CommitResult:
    """One commit of a send from alice to each recipient, under ``bounds``."""
    ids = ids or [f"m-{next(_ids)}" for _ in recipients]
    sends = [NewMessage(1, i, r, ENVELOPE) for i, r in zip(ids, recipients, strict=True)]
    return await store.messages.commit(sends, [], NOW, bounds)


async def counts(store: Store) -> list[tuple[int, int, int]]:
    """The kept counts: (sender, recipient, messages) of each pair with any."""
    sql = "SELECT * FROM undelivered_pairs WHERE messages > 0 ORDER BY 1, 2"
    return [tuple(row) for row in await store.db.fetch_all(sql)]  # type: ignore[attr-defined]


def codes(result: CommitResult) -> list[str]:
    return ["stored" if isinstance(o, Stored) else o for o in result.sends]


async def test_past_the_pair_bound_a_send_is_refused_and_takes_no_position(
    store: Store,
) -> None:
    """The 4th undelivered message to bob is refused in the batch that would pass the bound,
    without a position; carol still gets one; once bob has received two, the same id goes."""
    bounds = BacklogBounds(3, WIDE)
    first = await send(store, bounds, "bob", "bob")
    result = await send(store, bounds, "bob", "bob", "carol", ids=["a", "waiting", "c"])
    assert codes(result) == ["stored", QUEUE_FULL, "stored"]
    assert [o.seq for o in result.sends if isinstance(o, Stored)] == [3, 4]
    assert result.last_seq == 4
    seqs = [o.seq for o in first.sends if isinstance(o, Stored)]
    marks = [NewMark(2, seqs[0], "read"), NewMark(2, seqs[1], "delivered")]
    await store.messages.commit([], marks, NOW)
    assert codes(await send(store, bounds, "bob", ids=["waiting"])) == ["stored"]
    assert codes(await send(store, bounds, "bob", "bob")) == ["stored", QUEUE_FULL]
    assert await counts(store) == [(1, 2, 3), (1, 3, 1)]
    assert [row[2:] for row in await store.messages.undelivered()] == [
        (3, 3 * len(ENVELOPE)),
        (1, len(ENVELOPE)),
    ]


async def test_the_byte_bound_counts_every_recipient_together(store: Store) -> None:
    """Room for three envelopes in all: two to bob and one to carol fill it for everyone."""
    bounds = BacklogBounds(WIDE, 3 * len(ENVELOPE) + 10)
    result = await send(store, bounds, "bob", "bob", "carol", "carol", "dave")
    assert codes(result) == ["stored", "stored", "stored", QUEUE_FULL, QUEUE_FULL]
    # Bob's own backlog is his own.
    bobs = NewMessage(2, "from-bob", "alice", ENVELOPE)
    assert codes(await store.messages.commit([bobs], [], NOW, bounds)) == ["stored"]


async def test_a_resend_of_a_stored_id_is_acknowledged_and_counted_once(store: Store) -> None:
    """A resend is reported with its first position whether or not the bound is reached, in
    its own batch or in the first's, and takes no room: three ids fill a bound of three."""
    bounds = BacklogBounds(3, WIDE)
    first = await send(store, bounds, "bob", "bob", ids=["first", "first"])
    assert first.sends == [Stored(1, NOW, True), Stored(1, NOW, False)]
    again = await send(store, bounds, "bob", "bob", "bob", ids=["first", "second", "third"])
    assert codes(again) == ["stored"] * 3
    assert again.sends[0] == Stored(1, NOW, False)
    full = await send(store, bounds, "bob", "bob", ids=["fourth", "first"])
    assert codes(full) == [QUEUE_FULL, "stored"]
    assert full.sends[1] == Stored(1, NOW, False)
    assert await counts(store) == [(1, 2, 3)]


async def test_the_counts_outlive_the_store(make_any_store: MakeStore) -> None:
    """Two messages wait for bob; the store opened again, with room for three, takes exactly
    one more."""
    store = make_any_store()
    await store.open()
    try:
        for name in ("alice", "bob"):
            await store.accounts.add_user(new_user(name), 1)
        await send(store, BacklogBounds(2, WIDE), "bob", "bob")
    finally:
        await store.close()
    store = make_any_store()
    await store.open()
    try:
        result = await send(store, BacklogBounds(3, WIDE), "bob", "bob")
        assert codes(result) == ["stored", QUEUE_FULL]
    finally:
        await store.close()


async def test_two_nodes_sending_at_once_never_pass_the_bound(make_any_store: MakeStore) -> None:
    """Two stores over one database (two nodes), each committing several batches at once, all
    from alice to bob: exactly the bound is stored, every other send is ``queue_full``."""
    bound, per_batch, batches = 7, 3, 8
    nodes = [make_any_store(), make_any_store()]
    for node in nodes:
        await node.open()
    try:
        for name in ("alice", "bob"):
            await nodes[0].accounts.add_user(new_user(name), 1)
        bounds = BacklogBounds(bound, WIDE)
        results = await asyncio.gather(
            *(send(node, bounds, *["bob"] * per_batch) for node in nodes for _ in range(batches))
        )
        outcomes = [code for result in results for code in codes(result)]
        assert outcomes.count("stored") == bound
        assert outcomes.count(QUEUE_FULL) == 2 * batches * per_batch - bound
        assert await counts(nodes[1]) == [(1, 2, bound)]
        assert [row[2] for row in await nodes[1].messages.undelivered()] == [bound]
    finally:
        for node in nodes:
            await node.close()


async def test_an_older_sqlite_database_gets_counts_of_what_waits(tmp_path: Path) -> None:
    """The upgrade step that adds the counts fills them in from the undelivered messages."""
    path = tmp_path / "old.db"
    with sqlite3.connect(path) as db:
        db.executescript((PROJECT_ROOT / "schema.sql").read_text(encoding="utf-8"))
        db.executescript(
            "DROP TABLE undelivered_pairs; DROP TABLE undelivered_senders;"
            "DROP TABLE stream_heads;"
            "INSERT INTO users (id, username, salt, iterations, auth_hash, enc_public_key,"
            " sign_public_key, key_backup, created_at, keys_updated_at) VALUES"
            " (1, 'alice', x'00', 1, 'h', x'00', x'00', 'b', 0, 0),"
            " (2, 'bob', x'00', 1, 'h', x'00', x'00', 'b', 0, 0);"
            "INSERT INTO messages (seq, sender_id, recipient_id, client_id, ts, envelope,"
            " delivered_seq, delivered_at) VALUES"
            " (1, 1, 2, 'a', 0, '{\"x\":1}', NULL, NULL), (2, 1, 2, 'b', 0, '{}', 3, 5),"
            " (4, 1, 2, 'c', 0, '{}', NULL, NULL);"
            "UPDATE chat_sequence SET last = 4;"
            "PRAGMA user_version = 4;"
        )
    store = SQLiteStore.for_file(path, PROJECT_ROOT / "schema.sql")
    await store.open()
    try:
        assert await counts(store) == [(1, 2, 2)]
        senders = await store.db.fetch_all("SELECT * FROM undelivered_senders")
        assert [tuple(row) for row in senders] == [(1, 9)]
        result = await send(store, BacklogBounds(3, WIDE), "bob", "bob")
        assert codes(result) == ["stored", QUEUE_FULL]
    finally:
        await store.close()
