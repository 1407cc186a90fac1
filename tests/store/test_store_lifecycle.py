"""LifecycleStore on both engines: an account's deletion (tombstone, quarantine, what goes with
it), disabling, and the operator's audit trail."""

from __future__ import annotations

import pytest

from securechat.directory.transparency import TOMBSTONE_FINGERPRINT, is_tombstone, user_hash
from securechat.errors import NotFound, UsernameTaken
from securechat.store import BacklogBounds, NewMark, NewMessage, Store, Stored
from tests.store.conftest import new_user
from tests.store.test_store_contract import session
from tests.store.test_store_messages import ENVELOPE, NOW

DAY = 86_400_000
WIDE = BacklogBounds(1000, 1 << 30)


async def undelivered_bytes(store: Store, sender_id: int) -> int:
    sql = "SELECT bytes FROM undelivered_senders WHERE sender_id = " + str(sender_id)
    row = await store.db.fetch_one(sql)  # type: ignore[attr-defined]
    return 0 if row is None else int(row[0])


async def test_deletion_logs_a_tombstone_and_removes_the_user(any_store: Store) -> None:
    """The user is gone, its live sessions are reported, and the log ends with its tombstone."""
    alice = await any_store.accounts.add_user(new_user("alice"), NOW)
    await any_store.sessions.add_session(session("s1", alice, NOW, NOW, NOW + DAY))
    await any_store.sessions.add_session(session("s2", alice, NOW, NOW, NOW + DAY))
    await any_store.sessions.revoke("s2", NOW)
    ended = await any_store.lifecycle.delete_user("alice", NOW + 30 * DAY, NOW + 5)
    assert ended == ["s1"]
    assert await any_store.accounts.user_by_name("alice") is None
    assert await any_store.sessions.session_by_id("s1") is None
    entries = await any_store.directory.entries(0, 10)
    assert [is_tombstone(e) for e in entries] == [False, True]
    tombstone = entries[1]
    assert tombstone.user_hash == user_hash("alice")
    assert tombstone.enc_fingerprint == TOMBSTONE_FINGERPRINT
    assert tombstone.timestamp_ms == NOW + 5
    assert await any_store.directory.latest_entry(user_hash("alice"), 2) == tombstone


async def test_deleting_an_unknown_user_changes_nothing(any_store: Store) -> None:
    """NotFound, and no tombstone is logged."""
    with pytest.raises(NotFound):
        await any_store.lifecycle.delete_user("nobody", NOW + DAY, NOW)
    assert await any_store.directory.entries(0, 10) == []


async def test_the_name_is_quarantined_until_it_expires(any_store: Store) -> None:
    """Registration of a deleted name is UsernameTaken until the quarantine ends; then it works
    and the new account's keys follow the tombstone in the log."""
    await any_store.accounts.add_user(new_user("alice"), NOW)
    until = NOW + 30 * DAY
    await any_store.lifecycle.delete_user("alice", until, NOW)
    assert await any_store.lifecycle.quarantine_until("alice", NOW + 1) == until
    with pytest.raises(UsernameTaken):
        await any_store.accounts.add_user(new_user("alice", enc=b"enc2"), until - 1)
    assert await any_store.lifecycle.quarantine_until("alice", until) is None
    await any_store.accounts.add_user(new_user("alice", enc=b"enc2"), until)
    entries = await any_store.directory.entries(0, 10)
    assert [is_tombstone(e) for e in entries] == [False, True, False]


async def test_deletion_takes_messages_both_ways_and_gives_back_the_senders_backlog(
    any_store: Store,
) -> None:
    """Messages to and from the deleted account go; bob's undelivered bytes to it are given
    back, his bytes to carol stay; carol's conversation with bob is untouched."""
    await any_store.accounts.add_user(new_user("alice"), 1)
    bob = await any_store.accounts.add_user(new_user("bob"), 1)
    carol = await any_store.accounts.add_user(new_user("carol"), 1)
    sends = [
        NewMessage(bob, "b1", "alice", ENVELOPE),
        NewMessage(bob, "b2", "alice", ENVELOPE),
        NewMessage(bob, "b3", "carol", ENVELOPE),
        NewMessage(carol, "c1", "bob", ENVELOPE),
    ]
    result = await any_store.messages.commit(sends, [], NOW, WIDE)
    first = result.sends[0]
    assert isinstance(first, Stored)
    # alice received b1: it no longer counts in bob's backlog.
    alice = (await any_store.accounts.user_by_name("alice")).id  # type: ignore[union-attr]
    await any_store.messages.commit([], [NewMark(alice, first.seq, "delivered")], NOW, WIDE)
    assert await undelivered_bytes(any_store, bob) == 2 * len(ENVELOPE)
    await any_store.lifecycle.delete_user("alice", NOW + DAY, NOW)
    assert await undelivered_bytes(any_store, bob) == len(ENVELOPE)
    assert [c.peer for c in await any_store.messages.conversations(bob, 1 << 60, 10)] == ["carol"]
    history = await any_store.messages.history(carol, bob, 1 << 60, 10)
    assert sorted(h.client_id for h in history) == ["b3", "c1"]


async def test_disabling_revokes_sessions_and_enabling_lifts_it(any_store: Store) -> None:
    """A disabled account's sessions end and it reads as disabled until enabled again."""
    alice = await any_store.accounts.add_user(new_user("alice"), NOW)
    await any_store.sessions.add_session(session("s1", alice, NOW, NOW, NOW + DAY))
    assert await any_store.lifecycle.set_disabled("alice", True, NOW + 1) == ["s1"]
    assert await any_store.lifecycle.is_disabled(alice)
    revoked = await any_store.sessions.session_by_id("s1")
    assert revoked is not None and revoked.revoked_at == NOW + 1
    summary = await any_store.lifecycle.user_summary("alice", NOW)
    assert summary is not None and (summary.disabled_at, summary.live_sessions) == (NOW + 1, 0)
    assert await any_store.lifecycle.set_disabled("alice", True, NOW + 2) == []
    await any_store.lifecycle.set_disabled("alice", False, NOW + 3)
    assert not await any_store.lifecycle.is_disabled(alice)
    with pytest.raises(NotFound):
        await any_store.lifecycle.set_disabled("nobody", True, NOW)


async def test_revoke_all_and_the_user_list(any_store: Store) -> None:
    """revoke_all ends every live session; users pages in name order after a name."""
    for name in ("carol", "alice", "bob"):
        user_id = await any_store.accounts.add_user(new_user(name), NOW)
        await any_store.sessions.add_session(session(f"s-{name}", user_id, NOW, NOW, NOW + DAY))
    assert await any_store.lifecycle.revoke_all("bob", NOW + 1) == ["s-bob"]
    assert await any_store.lifecycle.revoke_all("bob", NOW + 2) == []
    listed = await any_store.lifecycle.users("", 2, NOW)
    assert [(u.username, u.live_sessions) for u in listed] == [("alice", 1), ("bob", 0)]
    rest = await any_store.lifecycle.users("bob", 10, NOW)
    assert [u.username for u in rest] == ["carol"]
    with pytest.raises(NotFound):
        await any_store.lifecycle.revoke_all("nobody", NOW)


async def test_the_audit_trail_reads_back_in_order(any_store: Store) -> None:
    """Actions get increasing ids; actions_after follows them from any point."""
    assert await any_store.lifecycle.last_action_id() == 0
    first = await any_store.lifecycle.record_action("disable", "alice", "", NOW)
    second = await any_store.lifecycle.record_action("delete", "bob", "tombstone 3", NOW + 1)
    assert second > first
    assert await any_store.lifecycle.last_action_id() == second
    rows = await any_store.lifecycle.actions_after(0, 10)
    assert [(r.action, r.username, r.detail, r.at_ms) for r in rows] == [
        ("disable", "alice", "", NOW),
        ("delete", "bob", "tombstone 3", NOW + 1),
    ]
    assert [r.id for r in await any_store.lifecycle.actions_after(first, 10)] == [second]
