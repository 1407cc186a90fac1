"""Password change, the recovery key and key reset over HTTP on a real server
(docs/protocol.md "Password change, recovery key and key reset"), bad input included."""

from __future__ import annotations

import base64
import os
from typing import Any

import pytest

from securechat import e2e
from securechat.accounts.service import PasswordMaterial
from securechat.client import (
    ChatClosed,
    ChatConnection,
    ClientError,
    SecureChatClient,
    change_password,
    derive_recovery_keys,
    parse_recovery_key,
    recover,
    reset_keys,
    set_recovery_key,
)
from securechat.store import NewKeys
from tests.conftest import FAST_ITERATIONS, MakeClient, SignUp, identity_of
from tests.livesrv import LiveServer

PASSWORD = "correct horse battery"
NEW_PASSWORD = "a new and longer passphrase"


def _b64(data: bytes) -> str:
    return base64.b64encode(data).decode()


async def _closed(chat: ChatConnection) -> tuple[int | None, str]:
    with pytest.raises(ChatClosed) as closed:
        while True:
            await chat.receive(wait=10.0)
    return closed.value.code, closed.value.reason


async def _error(client: SecureChatClient, path: str, body: dict[str, Any]) -> tuple[int, str]:
    response = await client.request("POST", path, body)
    return response.status_code, response.json().get("error", "")


# --- password change ---------------------------------------------------------------------------


async def test_password_change_keeps_keys_and_ends_other_sessions(
    signed_up: SignUp, make_client: MakeClient
) -> None:
    """After a change the new password logs in with the same keys, the old one does not,
    the other session's socket closes and this one stays."""
    phone = await signed_up("alice")
    laptop = make_client()
    await laptop.login("alice", PASSWORD)
    laptop_chat, phone_chat = await laptop.connect(), await phone.connect()
    assert await change_password(phone, PASSWORD, NEW_PASSWORD, iterations=FAST_ITERATIONS) == 1
    assert await _closed(laptop_chat) == (1008, "session ended")
    assert await phone_chat.ping() == {"type": "pong"}
    assert await phone.me() == "alice"
    fresh = make_client()
    with pytest.raises(ClientError) as refused:
        await fresh.login("alice", PASSWORD)
    assert refused.value.code == "invalid_credentials"
    account = await fresh.login("alice", NEW_PASSWORD)
    assert account.identity.sign_public_spki == identity_of(phone).sign_public_spki


async def test_password_change_gets_a_new_salt(signed_up: SignUp) -> None:
    """The prelogin salt changes with the password."""
    alice = await signed_up("alice")
    salt, _ = await alice.prelogin("alice")
    await change_password(alice, PASSWORD, NEW_PASSWORD, iterations=FAST_ITERATIONS)
    assert (await alice.prelogin("alice"))[0] != salt


async def _password_body(client: SecureChatClient, old_auth_key: bytes) -> dict[str, Any]:
    salt = os.urandom(16)
    keys = e2e.derive_keys(NEW_PASSWORD, salt, FAST_ITERATIONS, min_iterations=1)
    return {
        "old_auth_key": _b64(old_auth_key),
        "salt": _b64(salt),
        "iterations": FAST_ITERATIONS,
        "auth_key": _b64(keys.auth_key),
        "key_backup": e2e.seal_key_backup(identity_of(client), keys.wrap_key),
    }


async def test_password_change_with_a_wrong_old_password_is_401_and_changes_nothing(
    signed_up: SignUp, make_client: MakeClient
) -> None:
    """A wrong old auth_key: 401 invalid_credentials, the session lives, the password stays."""
    alice = await signed_up("alice")
    body = await _password_body(alice, os.urandom(32))
    assert await _error(alice, "/api/v1/account/password", body) == (401, "invalid_credentials")
    assert await alice.me() == "alice"
    await make_client().login("alice", PASSWORD)


async def test_wrong_old_passwords_are_throttled_like_logins(signed_up: SignUp) -> None:
    """Guessing the old password through the change endpoint meets the login throttle."""
    alice = await signed_up("alice")
    body = await _password_body(alice, os.urandom(32))
    statuses = [(await _error(alice, "/api/v1/account/password", body))[0] for _ in range(11)]
    assert statuses[-1] == 429 and set(statuses) <= {401, 429}


@pytest.mark.parametrize(
    ("field", "value"),
    [
        ("old_auth_key", _b64(b"x" * 31)),
        ("auth_key", _b64(b"x" * 33)),
        ("salt", _b64(b"x" * 8)),
        ("iterations", 1),
        ("key_backup", _b64(b"x" * 10)),
        ("key_backup", "not base64!"),
    ],
)
async def test_password_change_refuses_bad_fields(
    signed_up: SignUp, field: str, value: object
) -> None:
    """Each malformed field answers 400 invalid naming it, before any argon2 work."""
    alice = await signed_up("alice")
    body = await _password_body(alice, os.urandom(32))
    body[field] = value
    response = await alice.request("POST", "/api/v1/account/password", body)
    assert response.status_code == 400
    assert response.json()["field"] == field


async def test_credential_endpoints_need_a_session(make_client: MakeClient) -> None:
    """Without a session: 401 unauthenticated for the signed-in endpoints."""
    client = make_client()
    for path in (
        "/api/v1/account/password",
        "/api/v1/account/recovery-key",
        "/api/v1/account/keys",
    ):
        assert await _error(client, path, {}) == (401, "unauthenticated")
    response = await client.request("GET", "/api/v1/account/key-backup")
    assert response.status_code == 401


# --- recovery key ------------------------------------------------------------------------------


async def test_recovery_sets_a_new_password_keeping_keys_and_ends_every_session(
    signed_up: SignUp, make_client: MakeClient
) -> None:
    """Forgot the password: the recovery key sets a new one; the keys are the same, every
    session ends, and a new recovery key replaces the used one."""
    alice = await signed_up("alice")
    code = await set_recovery_key(alice, PASSWORD)
    chat = await alice.connect()
    stranger = make_client()
    new_code = await recover(stranger, "alice", code, NEW_PASSWORD, iterations=FAST_ITERATIONS)
    assert new_code != code
    assert await _closed(chat) == (1008, "session ended")
    account = await stranger.login("alice", NEW_PASSWORD)
    assert account.identity.enc_public_spki == identity_of(alice).enc_public_spki
    # The new recovery key works in its turn.
    again = make_client()
    await recover(again, "alice", new_code, PASSWORD, iterations=FAST_ITERATIONS)
    await again.login("alice", PASSWORD)


async def test_a_replayed_recovery_key_is_told_it_was_used(
    signed_up: SignUp, make_client: MakeClient
) -> None:
    """The used key answers 409 recovery_key_used at both steps; a made-up one 401."""
    alice = await signed_up("alice")
    code = await set_recovery_key(alice, PASSWORD)
    await recover(make_client(), "alice", code, NEW_PASSWORD, iterations=FAST_ITERATIONS)
    client = make_client()
    with pytest.raises(ClientError) as used:
        await recover(client, "alice", code, "yet another password", iterations=FAST_ITERATIONS)
    assert used.value.status == 409 and used.value.code == "recovery_key_used"
    proof = {"username": "alice", "recovery_auth": _b64(os.urandom(32))}
    assert await _error(client, "/api/v1/recovery/backup", proof) == (401, "invalid_recovery_key")
    await make_client().login("alice", NEW_PASSWORD)


async def test_a_replaced_recovery_key_no_longer_works(signed_up: SignUp) -> None:
    """Setting a new recovery key from settings retires the old one."""
    alice = await signed_up("alice")
    first = await set_recovery_key(alice, PASSWORD)
    await set_recovery_key(alice, PASSWORD)
    auth = derive_recovery_keys(parse_recovery_key(first)).auth_key
    proof = {"username": "alice", "recovery_auth": _b64(auth)}
    assert await _error(alice, "/api/v1/recovery/backup", proof) == (409, "recovery_key_used")


async def test_no_recovery_key_and_unknown_user_answer_alike(
    signed_up: SignUp, make_client: MakeClient
) -> None:
    """An account without a recovery key and a name without an account: the same 401."""
    await signed_up("alice")
    client = make_client()
    auth = _b64(os.urandom(32))
    first = await client.request(
        "POST", "/api/v1/recovery/backup", {"username": "alice", "recovery_auth": auth}
    )
    second = await client.request(
        "POST", "/api/v1/recovery/backup", {"username": "nobody", "recovery_auth": auth}
    )
    assert first.status_code == second.status_code == 401
    assert first.content == second.content


async def test_setting_a_recovery_key_needs_the_password(signed_up: SignUp) -> None:
    """A stolen session alone cannot set a recovery key (and then take the account over)."""
    alice = await signed_up("alice")
    body = {
        "auth_key": _b64(os.urandom(32)),
        "recovery_auth": _b64(os.urandom(32)),
        "recovery_backup": _b64(os.urandom(64)),
    }
    assert await _error(alice, "/api/v1/account/recovery-key", body) == (
        401,
        "invalid_credentials",
    )
    response = await alice.call("GET", "/api/v1/account/key-backup")
    assert response["recovery_key_set_at"] is None


async def test_recovery_attempts_are_throttled(signed_up: SignUp, make_client: MakeClient) -> None:
    """Guessing recovery keys for a name meets the login throttle (429 with Retry-After)."""
    await signed_up("alice")
    client = make_client()
    statuses = []
    for _ in range(11):
        proof = {"username": "alice", "recovery_auth": _b64(os.urandom(32))}
        statuses.append((await _error(client, "/api/v1/recovery/backup", proof))[0])
    assert statuses[-1] == 429 and set(statuses) <= {401, 429}


async def test_recovery_refuses_the_same_key_as_its_replacement(signed_up: SignUp) -> None:
    """complete must bring a new recovery key: the used one again is 400 invalid."""
    alice = await signed_up("alice")
    code = await set_recovery_key(alice, PASSWORD)
    recovery = derive_recovery_keys(parse_recovery_key(code))
    body = await _password_body(alice, b"")
    del body["old_auth_key"]
    body.update(
        username="alice",
        recovery_auth=_b64(recovery.auth_key),
        new_recovery_auth=_b64(recovery.auth_key),
        new_recovery_backup=e2e.seal_key_backup(identity_of(alice), recovery.wrap_key),
    )
    response = await alice.request("POST", "/api/v1/recovery/complete", body)
    assert response.status_code == 400
    assert response.json()["field"] == "new_recovery_auth"


@pytest.mark.parametrize(
    ("field", "value"),
    [
        ("recovery_auth", _b64(b"x" * 16)),
        ("recovery_auth", 12),
        ("username", "a"),
        ("username", None),
    ],
)
async def test_recovery_refuses_bad_fields(
    make_client: MakeClient, field: str, value: object
) -> None:
    """Malformed recovery requests answer 400 invalid naming the field."""
    body: dict[str, object] = {"username": "alice", "recovery_auth": _b64(b"x" * 32)}
    body[field] = value
    response = await make_client().request("POST", "/api/v1/recovery/backup", body)
    assert response.status_code == 400
    assert response.json()["field"] == field


def test_recovery_keys_parse_as_typed() -> None:
    """Any case, spaces and dashes anywhere; not 32 hex digits is refused."""
    key = bytes(range(16))
    assert parse_recovery_key("0001-0203-0405-0607-0809-0a0b-0c0d-0e0f") == key
    assert parse_recovery_key(" 00010203 0405060708090A0B0C0D0E0F ") == key
    for bad in ("", "0001", "G001-0203-0405-0607-0809-0a0b-0c0d-0e0f", "00" * 17):
        with pytest.raises(ValueError):
            parse_recovery_key(bad)


# --- key reset ---------------------------------------------------------------------------------


async def test_key_reset_publishes_new_keys_logged_in_the_directory(
    signed_up: SignUp, make_client: MakeClient
) -> None:
    """New keys: a contact's verified lookup reports the change, the recovery key goes, and
    the other sessions end."""
    alice = await signed_up("alice")
    bob = await signed_up("bob")
    before = await bob.fetch_verified_keys("alice")
    await set_recovery_key(alice, PASSWORD)
    laptop = make_client()
    await laptop.login("alice", PASSWORD)
    laptop_chat = await laptop.connect()
    new_identity = await reset_keys(alice, PASSWORD, rsa_bits=2048)
    assert await _closed(laptop_chat) == (1008, "session ended")
    after = await bob.fetch_verified_keys("alice")
    assert (before.state, after.state) == ("new", "changed")
    assert after.enc_public_key == new_identity.enc_public_spki != before.enc_public_key
    backup = await alice.call("GET", "/api/v1/account/key-backup")
    assert backup["recovery_key_set_at"] is None
    account = await make_client().login("alice", PASSWORD)
    assert account.identity.sign_public_spki == new_identity.sign_public_spki


async def test_key_reset_with_a_wrong_password_is_401(
    signed_up: SignUp, identities: list[e2e.Identity]
) -> None:
    """The password proves the account; a wrong one changes nothing."""
    alice = await signed_up("alice")
    identity = identities[3]
    body = {
        "auth_key": _b64(os.urandom(32)),
        "enc_public_key": _b64(identity.enc_public_spki),
        "sign_public_key": _b64(identity.sign_public_spki),
        "key_backup": e2e.seal_key_backup(identity, os.urandom(32)),
    }
    assert await _error(alice, "/api/v1/account/keys", body) == (401, "invalid_credentials")
    body["enc_public_key"] = _b64(identity.sign_public_spki)
    response = await alice.request("POST", "/api/v1/account/keys", body)
    assert response.status_code == 400 and response.json()["field"] == "enc_public_key"


async def test_the_operators_reset_sets_keys_and_password(
    live_server: LiveServer, make_client: MakeClient, identities: list[e2e.Identity]
) -> None:
    """Accounts.reset_keys, as the operator's command calls it, with a new password: the old
    password fails, the new one opens the new keys."""
    client = make_client()
    await client.register("alice", PASSWORD, iterations=FAST_ITERATIONS, identity=identities[0])
    identity = identities[1]
    salt = os.urandom(16)
    keys = e2e.derive_keys(NEW_PASSWORD, salt, FAST_ITERATIONS, min_iterations=1)
    backup = e2e.seal_key_backup(identity, keys.wrap_key)
    password = PasswordMaterial(salt, FAST_ITERATIONS, keys.auth_key, backup)
    new_keys = NewKeys(identity.enc_public_spki, identity.sign_public_spki, backup)
    accounts = live_server.app.extensions["securechat"].accounts
    live_server.run_in_server_loop(accounts.reset_keys("alice", new_keys, password))
    with pytest.raises(ClientError):
        await client.login("alice", PASSWORD)
    account = await client.login("alice", NEW_PASSWORD)
    assert account.identity.enc_public_spki == identity.enc_public_spki


async def test_a_key_reset_publishes_keys_again_after_the_operator_withdrew_them(
    live_server: LiveServer, signed_up: SignUp
) -> None:
    """After the operator's reset-keys (a tombstone), the owner's own key reset publishes new
    keys that contacts can use again."""
    alice = await signed_up("alice")
    bob = await signed_up("bob")
    lifecycle = live_server.app.extensions["securechat"].store.lifecycle
    live_server.run_in_server_loop(lifecycle.withdraw_keys("alice", 2**40))
    with pytest.raises(Exception, match="withdrawn"):
        await bob.fetch_verified_keys("alice")
    await alice.login("alice", PASSWORD)
    identity = await reset_keys(alice, PASSWORD, rsa_bits=2048)
    keys = await bob.fetch_verified_keys("alice")
    assert keys.enc_public_key == identity.enc_public_spki
