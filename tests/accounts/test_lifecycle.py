"""Account deletion over HTTP on a real server (issue 12, item 3): the password is checked as a
login checks it, only my own account goes, its sockets close, contacts are shown a proved
tombstone, and the name stays taken for the quarantine."""

from __future__ import annotations

from pathlib import Path

import pytest

from securechat import e2e
from securechat.client import KeyDirectoryError, NoKeys, SecureChatClient, registration_body
from securechat.directory import audit
from tests.chat.test_chat import closed_with
from tests.clockkit import ManualClock
from tests.conftest import FAST_ITERATIONS, SignUp, fast_config
from tests.livesrv import LiveServer

PASSWORD = "correct horse battery"


async def _auth_key(client: SecureChatClient, username: str, password: str) -> str:
    salt, iterations = await client.prelogin(username)
    keys = e2e.derive_keys(password, salt, iterations, min_iterations=FAST_ITERATIONS)
    return e2e.b64encode(keys.auth_key)


async def _register_status(client: SecureChatClient, username: str) -> tuple[int, str]:
    identity = e2e.Identity.generate(2048)
    keys = e2e.derive_keys(PASSWORD, b"\x02" * 16, FAST_ITERATIONS, min_iterations=1)
    body = registration_body(username, b"\x02" * 16, FAST_ITERATIONS, keys, identity)
    response = await client.request("POST", "/api/v1/register", body)
    return response.status_code, response.json().get("error", "")


async def test_deleting_my_account_ends_it_everywhere(
    live_server: LiveServer, signed_up: SignUp, tmp_path: Path
) -> None:
    """My socket closes (1008), my session is gone, I cannot log in, the name answers 409, and
    bob is shown a proved tombstone instead of keys; the auditor names it."""
    alice = await signed_up("alice")
    bob = await signed_up("bob")
    await bob.fetch_verified_keys("alice")
    chat = await alice.connect()
    body = await alice.delete_account(PASSWORD)
    assert body["username"] == "alice" and body["name_reusable_at"] > 0
    assert await closed_with(chat) == (1008, "session ended")
    assert (await alice.request("GET", "/api/v1/me")).status_code == 401
    with pytest.raises(KeyDirectoryError) as refused:
        await bob.fetch_verified_keys("alice")
    assert isinstance(refused.value, NoKeys) and refused.value.code == "account_deleted"
    assert refused.value.tombstone.status == "deleted"
    login = await bob.request(
        "POST",
        "/api/v1/login",
        {"username": "alice", "auth_key": await _auth_key(bob, "alice", PASSWORD)},
    )
    assert (login.status_code, login.json()["error"]) == (401, "invalid_credentials")
    assert await _register_status(bob, "alice") == (409, "username_taken")
    status, lines = audit.run(live_server.url, tmp_path / "audit.json", ["alice"])
    assert status == audit.OK
    assert "tombstone: no keys" in lines[-1] and "(current)" in lines[-1]


async def test_a_wrong_password_deletes_nothing(signed_up: SignUp) -> None:
    """401 invalid_credentials; the account and the session stay."""
    alice = await signed_up("alice")
    response = await alice.request(
        "POST",
        "/api/v1/account/delete",
        {"username": "alice", "auth_key": await _auth_key(alice, "alice", "wrong password!")},
    )
    assert (response.status_code, response.json()["error"]) == (401, "invalid_credentials")
    assert await alice.me() == "alice"


async def test_nobody_can_delete_someone_elses_account(signed_up: SignUp) -> None:
    """Even with bob's right auth_key, alice's session cannot delete bob: 400 on username."""
    alice = await signed_up("alice")
    bob = await signed_up("bob")
    response = await alice.request(
        "POST",
        "/api/v1/account/delete",
        {"username": "bob", "auth_key": await _auth_key(alice, "bob", PASSWORD)},
    )
    assert response.status_code == 400
    assert (response.json()["error"], response.json()["field"]) == ("invalid", "username")
    assert await bob.me() == "bob"
    await alice.fetch_verified_keys("bob")


async def test_without_a_session_deletion_is_refused(signed_up: SignUp) -> None:
    """401 unauthenticated after logout."""
    alice = await signed_up("alice")
    auth_key = await _auth_key(alice, "alice", PASSWORD)
    await alice.logout()
    response = await alice.request(
        "POST", "/api/v1/account/delete", {"username": "alice", "auth_key": auth_key}
    )
    assert response.status_code == 401


async def test_the_name_is_free_again_after_the_quarantine(tmp_path: Path) -> None:
    """409 until SECURECHAT_USERNAME_QUARANTINE has passed; then a new account takes the name
    and its keys, logged after the tombstone, are served again."""
    clock = ManualClock()
    config = fast_config(tmp_path / "data", username_quarantine=3600)
    with LiveServer(config, clock=clock).start() as server:
        async with SecureChatClient(server.url, min_iterations=FAST_ITERATIONS) as alice:
            await alice.register("alice", PASSWORD, iterations=FAST_ITERATIONS)
            await alice.login("alice", PASSWORD)
            await alice.delete_account(PASSWORD)
            clock.advance(3599)
            assert await _register_status(alice, "alice") == (409, "username_taken")
            clock.advance(1)
            assert (await _register_status(alice, "alice"))[0] == 201
            async with SecureChatClient(server.url, min_iterations=FAST_ITERATIONS) as bob:
                await bob.register("bob", PASSWORD, iterations=FAST_ITERATIONS)
                await bob.login("bob", PASSWORD)
                keys = await bob.fetch_verified_keys("alice")
                assert keys.proved.entry.index == 2
