"""start_session answers a session insert that found the account changed as a failed login."""

from __future__ import annotations

import dataclasses
from pathlib import Path

import pytest

from securechat import create_app
from securechat.accounts.sessions import start_session
from securechat.errors import AccountDisabled, InvalidCredentials
from securechat.state import state
from tests.conftest import fast_config
from tests.store.conftest import new_user


async def test_a_login_whose_account_changed_meanwhile_gets_no_session(tmp_path: Path) -> None:
    app = create_app(fast_config(tmp_path / "data"))
    async with app.test_app(), app.test_request_context("/api/v1/login", method="POST"):
        store = state().store
        user_id = await store.accounts.add_user(new_user("alice"), 1)
        user = await store.accounts.user_by_name("alice")
        assert user is not None and user.id == user_id
        with pytest.raises(InvalidCredentials):
            await start_session(dataclasses.replace(user, auth_hash="the one verified before"))
        await store.lifecycle.set_disabled("alice", True, 5)
        with pytest.raises(AccountDisabled):
            await start_session(user)
        assert await store.sessions.live_sessions(user_id, 2, 10**15) == []
