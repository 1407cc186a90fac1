"""Password change, recovery key and key reset in the store, the same on both backends
(``any_store``): each is one transaction that also ends sessions, and the compare-and-set
settles races."""

from __future__ import annotations

import asyncio

import pytest

from securechat.errors import NotFound
from securechat.store import NewKeys, NewPassword, RecoveryRecord, Session, Store
from tests.store.conftest import new_user

FAR = 10**15
NEW_PASSWORD = NewPassword(b"n" * 16, 700_000, "new hash", "new backup")


async def add_sessions(store: Store, user_id: int, *ids: str) -> None:
    for sid in ids:
        session = Session(sid, f"pub-{sid}", user_id, "alice", 1, 1, FAR, None, "ua", "ip")
        await store.sessions.add_session(session)


async def live_ids(store: Store, user_id: int) -> set[str]:
    return {s.id for s in await store.sessions.live_sessions(user_id, 2, FAR)}


async def test_password_change_replaces_the_material_and_ends_other_sessions(
    any_store: Store,
) -> None:
    """Salt, iterations, hash and backup change together; only the kept session lives."""
    user_id = await any_store.accounts.add_user(new_user("alice"), 1)
    await add_sessions(any_store, user_id, "s1", "s2", "s3")
    ended = await any_store.accounts.change_password(user_id, "hash", NEW_PASSWORD, "s1", 5)
    assert sorted(ended or []) == ["s2", "s3"]
    user = await any_store.accounts.user_by_name("alice")
    assert user is not None
    assert (user.salt, user.iterations, user.auth_hash, user.key_backup) == (
        b"n" * 16,
        700_000,
        "new hash",
        "new backup",
    )
    assert user.enc_public_key == b"enc"  # the keys stay
    assert await live_ids(any_store, user_id) == {"s1"}


async def test_password_change_against_a_stale_hash_changes_nothing(any_store: Store) -> None:
    """A change whose expected hash is no longer stored returns None and ends no session."""
    user_id = await any_store.accounts.add_user(new_user("alice"), 1)
    await add_sessions(any_store, user_id, "s1", "s2")
    assert await any_store.accounts.change_password(user_id, "stale", NEW_PASSWORD, "s1", 5) is None
    user = await any_store.accounts.user_by_name("alice")
    assert user is not None and user.auth_hash == "hash" and user.key_backup == "backup"
    assert await live_ids(any_store, user_id) == {"s1", "s2"}


async def test_two_racing_password_changes_have_one_winner(any_store: Store) -> None:
    """Both proved the old password; the compare-and-set lets exactly one through."""
    user_id = await any_store.accounts.add_user(new_user("alice"), 1)
    other = NewPassword(b"o" * 16, 600_000, "other hash", "other backup")
    results = await asyncio.gather(
        any_store.accounts.change_password(user_id, "hash", NEW_PASSWORD, None, 5),
        any_store.accounts.change_password(user_id, "hash", other, None, 5),
    )
    assert sum(r is None for r in results) == 1


async def test_a_recovery_key_is_set_then_replaced_keeping_the_previous_hash(
    any_store: Store,
) -> None:
    """set_recovery stores the key; setting another keeps the first's hash as previous."""
    user_id = await any_store.accounts.add_user(new_user("alice"), 1)
    assert await any_store.accounts.recovery(user_id) is None
    await any_store.accounts.set_recovery(user_id, "r1", "rb1", 10)
    assert await any_store.accounts.recovery(user_id) == RecoveryRecord("r1", None, "rb1", 10)
    await any_store.accounts.set_recovery(user_id, "r2", "rb2", 20)
    assert await any_store.accounts.recovery(user_id) == RecoveryRecord("r2", "r1", "rb2", 20)


async def test_recovery_replaces_password_and_key_and_ends_every_session(
    any_store: Store,
) -> None:
    """recover: new password material, the used key becomes previous, no session lives."""
    user_id = await any_store.accounts.add_user(new_user("alice"), 1)
    await add_sessions(any_store, user_id, "s1", "s2")
    await any_store.accounts.set_recovery(user_id, "r1", "rb1", 10)
    ended = await any_store.accounts.recover(user_id, "r1", NEW_PASSWORD, ("r2", "rb2"), 30)
    assert sorted(ended or []) == ["s1", "s2"]
    assert await any_store.accounts.recovery(user_id) == RecoveryRecord("r2", "r1", "rb2", 30)
    user = await any_store.accounts.user_by_name("alice")
    assert user is not None and user.auth_hash == "new hash" and user.key_backup == "new backup"
    assert await live_ids(any_store, user_id) == set()


async def test_a_used_recovery_key_cannot_be_used_again(any_store: Store) -> None:
    """A second recover with the same expected hash changes nothing (concurrent or replayed)."""
    user_id = await any_store.accounts.add_user(new_user("alice"), 1)
    await any_store.accounts.set_recovery(user_id, "r1", "rb1", 10)
    results = await asyncio.gather(
        any_store.accounts.recover(user_id, "r1", NEW_PASSWORD, ("r2", "rb2"), 30),
        any_store.accounts.recover(user_id, "r1", NEW_PASSWORD, ("r3", "rb3"), 30),
    )
    assert sum(r is None for r in results) == 1
    assert await any_store.accounts.recover(user_id, "r1", NEW_PASSWORD, ("r4", "b"), 40) is None


async def test_key_reset_logs_the_keys_drops_the_recovery_key_and_ends_sessions(
    any_store: Store,
) -> None:
    """reset_keys: new public keys and backup, a key log entry, no recovery key, one session."""
    user_id = await any_store.accounts.add_user(new_user("alice"), 1)
    await add_sessions(any_store, user_id, "s1", "s2")
    await any_store.accounts.set_recovery(user_id, "r1", "rb1", 10)
    keys = NewKeys(b"enc2", b"sign2", "backup2")
    ended = await any_store.accounts.reset_keys("alice", keys, None, "s1", 50)
    assert ended == ["s2"]
    user = await any_store.accounts.user_by_name("alice")
    assert user is not None
    assert (user.enc_public_key, user.sign_public_key, user.key_backup) == (
        b"enc2",
        b"sign2",
        "backup2",
    )
    assert user.keys_updated_at == 50 and user.auth_hash == "hash"
    assert await any_store.accounts.recovery(user_id) is None
    entries = await any_store.directory.entries(0, 10)
    assert [e.timestamp_ms for e in entries] == [1, 50]


async def test_key_reset_with_a_password_replaces_it_too(any_store: Store) -> None:
    """The operator's reset gives the account a new password with its new keys."""
    user_id = await any_store.accounts.add_user(new_user("alice"), 1)
    await add_sessions(any_store, user_id, "s1")
    keys = NewKeys(b"enc2", b"sign2", "backup2")
    ended = await any_store.accounts.reset_keys("alice", keys, NEW_PASSWORD, None, 50)
    assert ended == ["s1"]
    user = await any_store.accounts.user_by_name("alice")
    assert user is not None and user.auth_hash == "new hash" and user.salt == b"n" * 16
    assert user.key_backup == "backup2"  # the backup of the new keys, not the password's


async def test_key_reset_of_an_unknown_user_is_not_found(any_store: Store) -> None:
    """No user, no log entry."""
    with pytest.raises(NotFound):
        await any_store.accounts.reset_keys("nobody", NewKeys(b"e", b"s", "b"), None, None, 1)
    assert await any_store.directory.entries(0, 10) == []
