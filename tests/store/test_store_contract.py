"""The store's accounts, sessions and key log, the same on both backends (``any_store``):
results, errors, races and the log's order."""

from __future__ import annotations

import asyncio
import hashlib

import pytest

from securechat.directory.transparency import user_hash
from securechat.errors import NotFound, UsernameTaken
from securechat.store import Session, Store, User
from tests.store.conftest import MakeStore, new_user

DAY = 86_400_000


def session(sid: str, user_id: int, created: int, seen: int, expires: int) -> Session:
    return Session(sid, f"pub-{sid}", user_id, "alice", created, seen, expires, None, "ua", "ip")


# --- accounts ----------------------------------------------------------------------------------


async def test_a_user_reads_back_as_stored(any_store: Store) -> None:
    """add_user returns the id user_by_name finds, with every field as given."""
    user_id = await any_store.accounts.add_user(new_user("alice"), 1234)
    assert await any_store.accounts.user_by_name("alice") == User(
        user_id, "alice", b"s" * 16, 600_000, "hash", b"enc", b"sign", "backup", 1234, 1234
    )
    assert await any_store.accounts.user_by_name("bob") is None
    assert await any_store.accounts.count_users() == 1


async def test_a_rehash_is_stored(any_store: Store) -> None:
    """update_auth_hash replaces the hash and nothing else."""
    user_id = await any_store.accounts.add_user(new_user("alice"), 1)
    before = await any_store.accounts.user_by_name("alice")
    assert before is not None
    assert await any_store.accounts.update_auth_hash(user_id, before.auth_hash, "new hash")
    user = await any_store.accounts.user_by_name("alice")
    assert user is not None and user.auth_hash == "new hash" and user.salt == b"s" * 16


async def test_a_rehash_never_undoes_a_password_change(any_store: Store) -> None:
    """A rehash computed from the hash read before a password change does not overwrite the
    new password's hash (compare and set): the old password must not come back."""
    user_id = await any_store.accounts.add_user(new_user("alice"), 1)
    before = await any_store.accounts.user_by_name("alice")
    assert before is not None
    assert await any_store.accounts.update_auth_hash(user_id, before.auth_hash, "new password")
    assert not await any_store.accounts.update_auth_hash(user_id, before.auth_hash, "old rehash")
    user = await any_store.accounts.user_by_name("alice")
    assert user is not None and user.auth_hash == "new password"


async def test_registration_race_has_one_winner(any_store: Store) -> None:
    """Two concurrent registrations of one name: one succeeds, one gets UsernameTaken."""
    results = await asyncio.gather(
        any_store.accounts.add_user(new_user("alice"), 1),
        any_store.accounts.add_user(new_user("alice"), 2),
        return_exceptions=True,
    )
    assert sum(isinstance(r, UsernameTaken) for r in results) == 1
    assert await any_store.accounts.count_users() == 1


async def test_search_users_escapes_like_wildcards(any_store: Store) -> None:
    """A prefix with % or _ matches literally, not as a LIKE wildcard."""
    for name in ("a_b", "axb", "alice"):
        await any_store.accounts.add_user(new_user(name), 1)
    assert await any_store.accounts.search_users("a_", 10, exclude="") == ["a_b"]
    assert await any_store.accounts.search_users("%", 10, exclude="") == []
    assert await any_store.accounts.search_users("a", 10, exclude="alice") == ["a_b", "axb"]


async def test_search_users_orders_by_bytes_and_stops_at_the_limit(any_store: Store) -> None:
    """Names come in byte order (not a locale's), a backslash is literal, the limit holds."""
    for name in ("a.b", "a-b", "ab", "a_b", "a\\b", "aé", "b"):
        await any_store.accounts.add_user(new_user(name), 1)
    assert await any_store.accounts.search_users("a", 10, exclude="") == sorted(
        ["a.b", "a-b", "ab", "a_b", "a\\b", "aé"], key=lambda name: name.encode()
    )
    assert await any_store.accounts.search_users("a\\", 10, exclude="") == ["a\\b"]
    assert await any_store.accounts.search_users("a", 2, exclude="") == ["a-b", "a.b"]


async def test_commit_times_are_counted_in_buckets(any_store: Store) -> None:
    """The commit-time histogram counts every transaction once."""
    for i in range(3):
        await any_store.accounts.add_user(new_user(f"user{i}"), i)
    stats = any_store.commit_stats
    assert sum(stats.commit_seconds.counts) == stats.transactions >= 3
    assert stats.commit_seconds.total > 0


async def test_reopening_keeps_data(make_any_store: MakeStore) -> None:
    """Opening an existing database applies nothing twice and keeps its rows."""
    for _ in range(2):
        store = make_any_store()
        await store.open()
        try:
            if await store.accounts.user_by_name("alice") is None:
                await store.accounts.add_user(new_user("alice"), 1)
            assert await store.accounts.count_users() == 1
            await store.ping()
        finally:
            await store.close()


# --- sessions ----------------------------------------------------------------------------------


async def test_a_session_reads_back_with_its_user_name(any_store: Store) -> None:
    """add_session stores the row; session_by_id joins the user's name."""
    user_id = await any_store.accounts.add_user(new_user("alice"), 1)
    stored = session("s1", user_id, 10, 20, 30)
    await any_store.sessions.add_session(stored)
    assert await any_store.sessions.session_by_id("s1") == stored
    assert await any_store.sessions.session_by_id("nope") is None


async def test_touch_and_revoke_change_only_live_sessions(any_store: Store) -> None:
    """touch moves last_seen_at; revoke ends once (a second revoke keeps the first time)."""
    user_id = await any_store.accounts.add_user(new_user("alice"), 1)
    await any_store.sessions.add_session(session("s1", user_id, 10, 20, 10 * DAY))
    await any_store.sessions.touch("s1", 50)
    await any_store.sessions.revoke("s1", 60)
    await any_store.sessions.revoke("s1", 70)
    await any_store.sessions.touch("s1", 80)
    ended = await any_store.sessions.session_by_id("s1")
    assert ended is not None and (ended.last_seen_at, ended.revoked_at) == (50, 60)


async def test_unrevoked_sessions_answers_for_a_batch_in_one_query(any_store: Store) -> None:
    """Of the ids asked, those of stored sessions not revoked (the cluster's session check)."""
    user_id = await any_store.accounts.add_user(new_user("alice"), 1)
    for sid in ("s1", "s2", "s3"):
        await any_store.sessions.add_session(session(sid, user_id, 1, 1, DAY))
    await any_store.sessions.revoke("s2", 5)
    asked = ["s1", "s2", "s3", "gone"]
    assert await any_store.sessions.unrevoked_sessions(asked) == {"s1", "s3"}
    assert await any_store.sessions.unrevoked_sessions([]) == set()


async def test_revoke_others_keeps_one_and_reports_the_rest(any_store: Store) -> None:
    """Every live session of the user but the one kept ends; other users' stay."""
    alice = await any_store.accounts.add_user(new_user("alice"), 1)
    bob = await any_store.accounts.add_user(new_user("bob"), 1)
    for sid in ("a1", "a2", "a3"):
        await any_store.sessions.add_session(session(sid, alice, 1, 1, DAY))
    await any_store.sessions.add_session(session("b1", bob, 1, 1, DAY))
    await any_store.sessions.revoke("a3", 5)
    assert await any_store.sessions.revoke_others(alice, "a1", 9) == ["a2"]
    assert await any_store.sessions.revoke_others(alice, "a1", 10) == []
    live = await any_store.sessions.live_sessions(alice, 100, DAY)
    assert [s.id for s in live] == ["a1"]
    assert [s.id for s in await any_store.sessions.live_sessions(bob, 100, DAY)] == ["b1"]


async def test_revoke_by_public_id_is_the_owners_alone(any_store: Store) -> None:
    """A public id ends its session for its owner only, and only once."""
    alice = await any_store.accounts.add_user(new_user("alice"), 1)
    bob = await any_store.accounts.add_user(new_user("bob"), 1)
    await any_store.sessions.add_session(session("a1", alice, 1, 1, DAY))
    assert await any_store.sessions.revoke_by_public_id(bob, "pub-a1", 5) is None
    assert await any_store.sessions.revoke_by_public_id(alice, "pub-a1", 5) == "a1"
    assert await any_store.sessions.revoke_by_public_id(alice, "pub-a1", 6) is None


async def test_live_sessions_and_count_leave_out_the_ended(any_store: Store) -> None:
    """Revoked, absolutely expired and idle sessions are not live; the rest, newest first."""
    user_id = await any_store.accounts.add_user(new_user("alice"), 1)
    now, idle = 100 * DAY, 7 * DAY
    rows = [
        ("old", 1, now, now + DAY),
        ("new", 3, now, now + DAY),
        ("expired", 4, now, now - 1),
        ("idle", 5, now - idle, now + DAY),
        ("revoked", 6, now, now + DAY),
    ]
    for sid, created, seen, expires in rows:
        await any_store.sessions.add_session(session(sid, user_id, created, seen, expires))
    await any_store.sessions.revoke("revoked", now)
    live = await any_store.sessions.live_sessions(user_id, now, idle)
    assert [s.id for s in live] == ["new", "old"]
    assert await any_store.sessions.count_active(now, idle) == 2


async def test_prune_revokes_the_oldest_beyond_the_bound(any_store: Store) -> None:
    """The newest ``keep`` live sessions stay; the older ones end, reported newest first."""
    user_id = await any_store.accounts.add_user(new_user("alice"), 1)
    for created in range(1, 6):
        await any_store.sessions.add_session(session(f"s{created}", user_id, created, 1, DAY))
    await any_store.sessions.revoke("s4", 2)
    assert await any_store.sessions.prune_oldest_beyond(user_id, 2, 9) == ["s2", "s1"]
    assert await any_store.sessions.prune_oldest_beyond(user_id, 2, 9) == []
    live = await any_store.sessions.live_sessions(user_id, 10, DAY)
    assert [s.id for s in live] == ["s5", "s3"]


async def test_purge_deletes_only_sessions_that_ended_before_the_cutoff(any_store: Store) -> None:
    """Revoked, absolutely expired or idle-expired before the cutoff: deleted; the rest stay."""
    user_id = await any_store.accounts.add_user(new_user("alice"), 1)
    now, idle = 100 * DAY, 7 * DAY
    cutoff = now - 30 * DAY
    # (id, last_seen_at, expires_at, revoked_at)
    rows = [
        ("live", now, now + DAY, None),
        ("revoked-long-ago", now - 40 * DAY, now + DAY, now - 40 * DAY),
        ("revoked-lately", now - 5 * DAY, now + DAY, now - 5 * DAY),
        ("expired-long-ago", now - 40 * DAY, now - 35 * DAY, None),
        ("expired-lately", now - 3 * DAY, now - 2 * DAY, None),
        ("idle-long-ago", now - 40 * DAY, now + DAY, None),
        ("idle-lately", now - 10 * DAY, now + DAY, None),
    ]
    for sid, seen, expires, _revoked in rows:
        await any_store.sessions.add_session(session(sid, user_id, 0, seen, expires))
    for sid, _seen, _expires, revoked in rows:
        if revoked is not None:
            await any_store.sessions.revoke(sid, revoked)
    assert await any_store.sessions.purge_dead(cutoff, idle) == 3
    left = {sid for sid, *_ in rows if await any_store.sessions.session_by_id(sid) is not None}
    assert left == {"live", "revoked-lately", "expired-lately", "idle-lately"}
    assert await any_store.sessions.purge_dead(cutoff, idle) == 0


# --- the key log -------------------------------------------------------------------------------


async def test_registration_logs_the_users_keys(any_store: Store) -> None:
    """Each registration appends its user's hash and key fingerprints at the next index."""
    await any_store.accounts.add_user(new_user("alice", b"ea", b"sa"), 100)
    await any_store.accounts.add_user(new_user("bob", b"eb", b"sb"), 200)
    entries = await any_store.directory.entries(0, 10)
    assert [(e.index, e.timestamp_ms, e.user_hash) for e in entries] == [
        (0, 100, user_hash("alice")),
        (1, 200, user_hash("bob")),
    ]
    assert entries[1].enc_fingerprint == hashlib.sha256(b"eb").digest()
    assert entries[1].sign_fingerprint == hashlib.sha256(b"sb").digest()
    assert await any_store.directory.entries(1, 2) == entries[1:]


async def test_a_taken_name_logs_nothing(any_store: Store) -> None:
    """A registration refused as taken rolls back whole: no second entry."""
    await any_store.accounts.add_user(new_user("alice"), 1)
    with pytest.raises(UsernameTaken):
        await any_store.accounts.add_user(new_user("alice", b"other"), 2)
    assert len(await any_store.directory.entries(0, 10)) == 1


async def test_key_change_logs_the_new_keys_and_time_never_goes_back(any_store: Store) -> None:
    """replace_keys updates the user and appends; a clock that went back gives the last time."""
    await any_store.accounts.add_user(new_user("alice"), 500)
    entry = await any_store.directory.replace_keys("alice", b"e2", b"s2", "backup2", 400)
    assert (entry.index, entry.timestamp_ms) == (1, 500)
    assert entry.enc_fingerprint == hashlib.sha256(b"e2").digest()
    assert (await any_store.directory.entries(1, 2)) == [entry]
    user = await any_store.accounts.user_by_name("alice")
    assert user is not None
    assert (user.enc_public_key, user.key_backup, user.keys_updated_at) == (b"e2", "backup2", 400)


async def test_key_change_of_an_unknown_user_is_not_found(any_store: Store) -> None:
    """No user, no change and no entry."""
    with pytest.raises(NotFound):
        await any_store.directory.replace_keys("nobody", b"e", b"s", "b", 1)
    assert await any_store.directory.entries(0, 10) == []


async def test_latest_entry_is_the_users_newest_below_the_size(any_store: Store) -> None:
    """latest_entry looks only at the first ``below`` entries, and only at that user's."""
    await any_store.accounts.add_user(new_user("alice"), 1)
    await any_store.accounts.add_user(new_user("bob"), 2)
    changed = await any_store.directory.replace_keys("alice", b"e2", b"s2", "b", 3)
    alice = user_hash("alice")
    first = await any_store.directory.latest_entry(alice, 2)
    assert first is not None and first.index == 0
    assert await any_store.directory.latest_entry(alice, 3) == changed
    assert await any_store.directory.latest_entry(alice, 0) is None
    assert await any_store.directory.latest_entry(user_hash("carol"), 3) is None


async def test_concurrent_registrations_make_a_gapless_log(any_store: Store) -> None:
    """Registrations at once, some for one name: each user once, indexes 0..n-1 in order,
    timestamps never decreasing."""
    names = [f"user{i % 15}" for i in range(20)]
    results = await asyncio.gather(
        *(any_store.accounts.add_user(new_user(n), 1000 - i) for i, n in enumerate(names)),
        return_exceptions=True,
    )
    assert sum(isinstance(r, UsernameTaken) for r in results) == 5
    entries = await any_store.directory.entries(0, 100)
    assert [e.index for e in entries] == list(range(15))
    assert sorted(e.user_hash for e in entries) == sorted(user_hash(f"user{i}") for i in range(15))
    times = [e.timestamp_ms for e in entries]
    assert times == sorted(times)
