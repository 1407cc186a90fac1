"""A login's session insert is conditional (``add_session`` with the verified ``auth_hash``),
the same on both backends: a password change, disable or deletion that committed after the
password was checked leaves no live session behind."""

from __future__ import annotations

from securechat.store import NewPassword, Session, Store
from tests.store.conftest import new_user

FAR = 10**15
NEW_PASSWORD = NewPassword(b"n" * 16, 700_000, "new hash", "new backup")


def login_session(sid: str, user_id: int) -> Session:
    return Session(sid, f"pub-{sid}", user_id, "alice", 1, 1, FAR, None, "ua", "ip")


async def live_ids(store: Store, user_id: int) -> set[str]:
    return {s.id for s in await store.sessions.live_sessions(user_id, 2, FAR)}


async def test_a_session_is_inserted_while_the_verified_hash_is_stored(any_store: Store) -> None:
    user_id = await any_store.accounts.add_user(new_user("alice"), 1)
    assert await any_store.sessions.add_session(login_session("s1", user_id), auth_hash="hash")
    assert await live_ids(any_store, user_id) == {"s1"}


async def test_a_password_change_after_the_check_leaves_no_session(any_store: Store) -> None:
    """The change commits between the login's verification and its insert: no session."""
    user_id = await any_store.accounts.add_user(new_user("alice"), 1)
    assert await any_store.accounts.change_password(user_id, "hash", NEW_PASSWORD, None, 5) == []
    inserted = await any_store.sessions.add_session(login_session("s1", user_id), auth_hash="hash")
    assert not inserted
    assert await live_ids(any_store, user_id) == set()


async def test_a_disable_after_the_check_leaves_no_session(any_store: Store) -> None:
    user_id = await any_store.accounts.add_user(new_user("alice"), 1)
    await any_store.lifecycle.set_disabled("alice", True, 5)
    inserted = await any_store.sessions.add_session(login_session("s1", user_id), auth_hash="hash")
    assert not inserted
    assert await live_ids(any_store, user_id) == set()


async def test_a_deletion_after_the_check_inserts_nothing_and_raises_nothing(
    any_store: Store,
) -> None:
    """No foreign-key error: the insert just finds no user with that hash."""
    user_id = await any_store.accounts.add_user(new_user("alice"), 1)
    await any_store.lifecycle.delete_user("alice", 10, 5)
    inserted = await any_store.sessions.add_session(login_session("s1", user_id), auth_hash="hash")
    assert not inserted
    assert await any_store.sessions.session_by_id("s1") is None
