"""What a login or recovery attempt reveals and keeps, on a real SQLite store: a session is
opened only for the password still stored, and every refused recovery costs the same argon2
work whatever the account holds."""

from __future__ import annotations

import os
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from securechat.accounts import validation
from securechat.accounts.service import Accounts, Registration
from securechat.config import PROJECT_ROOT, Config
from securechat.errors import InvalidRecoveryKey
from securechat.runtime import WALL_CLOCK
from securechat.store import NewPassword, Session, Store
from securechat.store.sqlite import SQLiteStore
from tests.conftest import FAST_ITERATIONS, fast_config

AUTH_KEY = b"\x07" * validation.AUTH_KEY_BYTES
RECOVERY_AUTH = b"\x09" * validation.AUTH_KEY_BYTES
SERVER_KEY = b"\x01" * 32
DEVICE_KEY = b"\x02" * 32


@pytest.fixture(name="store")
async def _store(tmp_path: Path) -> AsyncIterator[Store]:
    store = SQLiteStore.for_file(tmp_path / "test.db", PROJECT_ROOT / "schema.sql")
    await store.open()
    yield store
    await store.close()


@pytest.fixture(name="accounts")
def _accounts(tmp_path: Path, store: Store) -> Accounts:
    config: Config = fast_config(tmp_path / "data")
    return Accounts.create(config, store, SERVER_KEY, device_token_key=DEVICE_KEY)


def _registration(username: str) -> Registration:
    return Registration(
        username=username,
        salt=b"\x02" * validation.SALT_BYTES,
        iterations=FAST_ITERATIONS,
        auth_key=AUTH_KEY,
        enc_public_key=b"enc",
        sign_public_key=b"sign",
        key_backup="backup",
    )


def _session(user_id: int) -> Session:
    now = WALL_CLOCK.now_ms()
    return Session("s1", "pub-s1", user_id, "", now, now, now + 3_600_000, None, "", "")


async def test_a_password_changed_after_the_login_checked_it_opens_no_session(
    accounts: Accounts, store: Store
) -> None:
    """The login verified the old password; a change commits before its session insert,
    which then inserts nothing (start_session answers that as a failed login)."""
    await accounts.register(_registration("alice"))
    user = await accounts.login("alice", AUTH_KEY, "10.0.0.1")
    new = NewPassword(b"\x03" * validation.SALT_BYTES, FAST_ITERATIONS, "other", "backup")
    assert await store.accounts.change_password(user.id, user.auth_hash, new, None, 5) == []
    assert not await store.sessions.add_session(_session(user.id), auth_hash=user.auth_hash)
    assert await store.sessions.session_by_id("s1") is None


async def _refusal_cost(accounts: Accounts, username: str, address: str) -> int:
    """How many argon2 operations a wrong recovery key for ``username`` costs."""
    before = accounts.hasher.operations
    with pytest.raises(InvalidRecoveryKey):
        await accounts.recovery_backup(username, os.urandom(len(RECOVERY_AUTH)), address)
    return accounts.hasher.operations - before


async def test_every_refused_recovery_costs_the_same_argon2_work(
    accounts: Accounts, store: Store
) -> None:
    """An unknown name, an account without a recovery key, and a wrong key with and without
    a previous key all run the same number of verifications."""
    now = WALL_CLOCK.now_ms()
    for name in ("nokey", "onekey", "replaced"):
        await accounts.register(_registration(name))
    for name, keys in (("onekey", 1), ("replaced", 2)):
        user = await store.accounts.user_by_name(name)
        assert user is not None
        for _ in range(keys):
            stored = await accounts.hasher.hash(RECOVERY_AUTH)
            await store.accounts.set_recovery(user.id, stored, "recovery backup", now)
        record = await store.accounts.recovery(user.id)
        assert record is not None and (record.previous_hash is not None) == (keys == 2)
    costs = {
        name: await _refusal_cost(accounts, name, f"10.0.0.{i}")
        for i, name in enumerate(("nobody", "nokey", "onekey", "replaced"), start=1)
    }
    assert set(costs.values()) == {2}, costs
