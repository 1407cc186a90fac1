"""The account service on a real SQLite store: what it decides that the HTTP tests do not pin."""

from __future__ import annotations

import os
import time
from collections.abc import AsyncIterator
from pathlib import Path

import pytest
from argon2 import extract_parameters

from securechat.accounts import validation
from securechat.accounts.service import Accounts, Registration
from securechat.config import PROJECT_ROOT, Config
from securechat.errors import InvalidCredentials, NotFound, Throttled
from securechat.runtime import WALL_CLOCK
from securechat.store import Session, Store
from securechat.store.sqlite import SQLiteStore
from tests.conftest import FAST_ITERATIONS, fast_config

AUTH_KEY = b"\x07" * validation.AUTH_KEY_BYTES
SERVER_KEY = b"\x01" * 32
DEVICE_KEY = b"\x02" * 32


@pytest.fixture(name="store")
async def _store(tmp_path: Path) -> AsyncIterator[Store]:
    store = SQLiteStore.for_file(tmp_path / "test.db", PROJECT_ROOT / "schema.sql")
    await store.open()
    yield store
    await store.close()


@pytest.fixture(name="config")
def _config(tmp_path: Path) -> Config:
    return fast_config(tmp_path / "data")


@pytest.fixture(name="accounts")
def _accounts(config: Config, store: Store) -> Accounts:
    return Accounts.create(config, store, SERVER_KEY, device_token_key=DEVICE_KEY)


def _registration(username: str, auth_key: bytes = AUTH_KEY) -> Registration:
    return Registration(
        username=username,
        salt=b"\x02" * validation.SALT_BYTES,
        iterations=FAST_ITERATIONS,
        auth_key=auth_key,
        enc_public_key=b"enc",
        sign_public_key=b"sign",
        key_backup="backup",
    )


async def _add_session(store: Store, user_id: int, name: str, *, last_seen_at: int) -> Session:
    session = Session(
        id=f"hash-of-{name}",
        public_id=name,
        user_id=user_id,
        username="",
        created_at=last_seen_at,
        last_seen_at=last_seen_at,
        expires_at=WALL_CLOCK.now_ms() + 3_600_000,
        revoked_at=None,
        user_agent="",
        address="",
    )
    await store.sessions.add_session(session)
    return session


async def test_prelogin_gives_a_registered_user_their_own_salt(accounts: Accounts) -> None:
    """A registered name gets the salt and iterations it registered with."""
    await accounts.register(_registration("alice"))
    kdf = await accounts.prelogin("alice")
    assert (kdf.salt, kdf.iterations) == (b"\x02" * validation.SALT_BYTES, FAST_ITERATIONS)


async def test_decoy_salt_is_keyed_by_the_server(config: Config, store: Store) -> None:
    """An unknown name's salt is stable under one server key, another under another key,
    another for another name, and comes with the minimum iterations."""
    one, other = (
        Accounts.create(config, store, SERVER_KEY, device_token_key=DEVICE_KEY),
        Accounts.create(config, store, b"k", device_token_key=DEVICE_KEY),
    )
    first = await one.prelogin("nobody")
    assert first == await one.prelogin("nobody")
    assert first.salt != (await other.prelogin("nobody")).salt
    assert first.salt != (await one.prelogin("somebody")).salt
    assert len(first.salt) == validation.SALT_BYTES
    assert first.iterations == config.kdf_min_iterations


async def test_login_returns_the_user_and_refuses_a_wrong_key(accounts: Accounts) -> None:
    """The right key logs the user in; a wrong one and an unknown name fail alike."""
    await accounts.register(_registration("alice"))
    user = await accounts.login("alice", AUTH_KEY, "10.0.0.1")
    assert user.username == "alice"
    with pytest.raises(InvalidCredentials):
        await accounts.login("alice", os.urandom(validation.AUTH_KEY_BYTES), "10.0.0.1")
    with pytest.raises(InvalidCredentials):
        await accounts.login("nobody", AUTH_KEY, "10.0.0.1")


async def test_login_rehashes_a_key_hashed_with_older_parameters(
    config: Config, store: Store, tmp_path: Path
) -> None:
    """After the argon2 cost is raised, a login stores a new hash at the new cost, once."""
    await Accounts.create(config, store, SERVER_KEY, device_token_key=DEVICE_KEY).register(
        _registration("alice")
    )
    stronger = fast_config(tmp_path / "data", argon2_time_cost=config.argon2_time_cost + 1)
    accounts = Accounts.create(stronger, store, SERVER_KEY, device_token_key=DEVICE_KEY)
    await accounts.login("alice", AUTH_KEY, "10.0.0.1")
    user = await store.accounts.user_by_name("alice")
    assert user is not None
    assert extract_parameters(user.auth_hash).time_cost == stronger.argon2_time_cost
    await accounts.login("alice", AUTH_KEY, "10.0.0.1")
    again = await store.accounts.user_by_name("alice")
    assert again is not None and again.auth_hash == user.auth_hash


async def test_a_login_takes_back_its_own_count_only(accounts: Accounts) -> None:
    """A success forgets the name's failures but keeps its address's earlier ones."""
    await accounts.register(_registration("alice"))
    for _ in range(2):
        with pytest.raises(InvalidCredentials):
            await accounts.login("alice", b"\x00" * validation.AUTH_KEY_BYTES, "10.0.0.1")
    await accounts.login("alice", AUTH_KEY, "10.0.0.1")
    assert len(accounts.login_user_throttle) == 0
    assert len(accounts.login_address_throttle) == 1
    await accounts.login("alice", AUTH_KEY, "10.0.0.2")
    assert len(accounts.login_address_throttle) == 1


async def test_a_throttled_login_runs_no_argon2(accounts: Accounts, config: Config) -> None:
    """At the failure cap, a login is refused before the store or argon2 are asked."""
    for _ in range(config.login_failures_max):
        accounts.login_user_throttle.record_failure("alice", time.monotonic())
    runs = accounts.hasher.operations
    with pytest.raises(Throttled):
        await accounts.login("alice", AUTH_KEY, "10.0.0.1")
    assert accounts.hasher.operations == runs


async def test_registrations_are_counted_per_address(tmp_path: Path, store: Store) -> None:
    """Past the bound an address is refused, whether its attempts stored anything or not;
    another address is not."""
    config = fast_config(tmp_path / "data", registrations_per_address=2)
    accounts = Accounts.create(config, store, SERVER_KEY, device_token_key=DEVICE_KEY)
    accounts.count_registration("10.0.0.1")
    accounts.count_registration("10.0.0.1")
    with pytest.raises(Throttled):
        accounts.count_registration("10.0.0.1")
    accounts.count_registration("10.0.0.2")


async def test_live_sessions_leave_out_idle_and_revoked_ones(
    accounts: Accounts, store: Store, config: Config
) -> None:
    """Listed: live sessions, newest first; not those idle too long or revoked."""
    await accounts.register(_registration("alice"))
    alice = await store.accounts.user_by_name("alice")
    assert alice is not None
    now = WALL_CLOCK.now_ms()
    idle = await _add_session(
        store, alice.id, "idle", last_seen_at=now - config.session_idle_timeout * 1000 - 1
    )
    current = await _add_session(store, alice.id, "current", last_seen_at=now - 2)
    newest = await _add_session(store, alice.id, "newest", last_seen_at=now - 1)
    assert [s.public_id for s in await accounts.live_sessions(alice.id)] == ["newest", "current"]
    assert set(await accounts.revoke_other_sessions(current)) == {idle.id, newest.id}
    assert [s.public_id for s in await accounts.live_sessions(alice.id)] == ["current"]


async def test_nobody_revokes_another_users_session(accounts: Accounts, store: Store) -> None:
    """A public id of someone else's session, or one too long to be an id, is NotFound."""
    for name in ("alice", "bob"):
        await accounts.register(_registration(name))
    alice, bob = [await store.accounts.user_by_name(name) for name in ("alice", "bob")]
    assert alice is not None and bob is not None
    mine = await _add_session(store, alice.id, "mine", last_seen_at=WALL_CLOCK.now_ms())
    theirs = await _add_session(store, bob.id, "theirs", last_seen_at=WALL_CLOCK.now_ms())
    with pytest.raises(NotFound):
        await accounts.revoke_session(mine, "theirs")
    with pytest.raises(NotFound):
        await accounts.revoke_session(mine, "x" * 65)
    assert [s.id for s in await accounts.live_sessions(bob.id)] == [theirs.id]
    assert await accounts.revoke_session(mine, "mine") == mine.id
    assert await accounts.live_sessions(alice.id) == []
