"""The accounts API on a real server: the contract of docs/protocol.md, checked over HTTP."""

from __future__ import annotations

import asyncio
import base64
import contextlib
import os
import sqlite3
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import rsa

from securechat import e2e
from securechat.client import SecureChatClient, registration_body
from securechat.runtime import WALL_CLOCK, Clock
from tests.clockkit import ManualClock
from tests.conftest import FAST_ITERATIONS, MakeClient, SignUp, fast_config
from tests.livesrv import LiveServer

PASSWORD = "correct horse battery"


def _body(username: str, identity: e2e.Identity, /, **changes: object) -> dict[str, object]:
    keys = e2e.derive_keys(PASSWORD, b"\x01" * 16, FAST_ITERATIONS, min_iterations=1)
    body = registration_body(username, b"\x01" * 16, FAST_ITERATIONS, keys, identity)
    body.update(changes)
    return body


def _user_count(live_server: LiveServer) -> int:
    with sqlite3.connect(live_server.database_path) as db:
        return int(db.execute("SELECT count(*) FROM users").fetchone()[0])


@contextlib.asynccontextmanager
async def _client_of_server_with(
    tmp_path: Path, clock: Clock = WALL_CLOCK, **overrides: Any
) -> AsyncIterator[SecureChatClient]:
    """A client of a server of its own on ``clock``, started with some settings changed."""
    with LiveServer(fast_config(tmp_path / "data", **overrides), clock=clock).start() as server:
        async with SecureChatClient(server.url, min_iterations=FAST_ITERATIONS) as client:
            yield client


def _argon2_runs(live_server: LiveServer) -> int:
    return int(live_server.app.extensions["securechat"].accounts.hasher.operations)


async def test_account_lifecycle(make_client: MakeClient, identities: list[e2e.Identity]) -> None:
    """Register, log in, who-am-I, log out: each answers as the contract says."""
    client = make_client()
    await client.register("alice", PASSWORD, iterations=FAST_ITERATIONS, identity=identities[0])
    account = await client.login("alice", PASSWORD)
    assert account.username == "alice"
    assert account.identity.enc_public_spki == identities[0].enc_public_spki
    assert await client.me() == "alice"
    response = await client.request("POST", "/api/v1/logout", {})
    assert response.status_code == 204
    response = await client.request("GET", "/api/v1/me")
    assert response.status_code == 401
    assert response.json()["error"] == "unauthenticated"


async def test_register_answers_201_with_username(
    make_client: MakeClient, identities: list[e2e.Identity]
) -> None:
    """A registration answers 201 {"username"} with the normalised name."""
    response = await make_client().request(
        "POST", "/api/v1/register", _body("ＡＬＩＣＥ", identities[0])
    )
    assert response.status_code == 201
    assert response.json() == {"username": "alice"}


async def test_duplicate_username_is_409(
    make_client: MakeClient, identities: list[e2e.Identity]
) -> None:
    """A second registration of a name answers 409 username_taken."""
    client = make_client()
    await client.call("POST", "/api/v1/register", _body("alice", identities[0]))
    response = await client.request("POST", "/api/v1/register", _body("Alice", identities[1]))
    assert response.status_code == 409
    assert response.json()["error"] == "username_taken"
    assert response.json()["message"]


async def test_unknown_user_and_wrong_key_fail_identically(
    signed_up: SignUp, make_client: MakeClient
) -> None:
    """An unknown user and a wrong key get byte-identical 401 answers."""
    await signed_up("alice")
    client = make_client()
    wrong = base64.b64encode(os.urandom(32)).decode()
    unknown = await client.request(
        "POST", "/api/v1/login", {"username": "nobody", "auth_key": wrong}
    )
    mismatch = await client.request(
        "POST", "/api/v1/login", {"username": "alice", "auth_key": wrong}
    )
    assert unknown.status_code == mismatch.status_code == 401
    assert unknown.content == mismatch.content
    assert unknown.json()["error"] == "invalid_credentials"


async def test_unknown_user_costs_one_argon2_run_like_a_wrong_key(
    signed_up: SignUp, make_client: MakeClient, live_server: LiveServer
) -> None:
    """Every login of an unknown name runs argon2 once, the server's first one included, as
    a wrong key for a real name does: the time taken says nothing about who exists."""
    await signed_up("alice")
    client = make_client()
    wrong = {"auth_key": base64.b64encode(os.urandom(32)).decode()}
    for username in ("nobody", "nobody", "alice"):
        before = _argon2_runs(live_server)
        response = await client.request("POST", "/api/v1/login", {"username": username, **wrong})
        assert response.status_code == 401
        assert _argon2_runs(live_server) - before == 1


async def test_prelogin_decoy_is_stable_and_shaped_like_a_real_answer(
    signed_up: SignUp, make_client: MakeClient
) -> None:
    """An unknown name gets a stable 16-byte decoy salt and the default iterations."""
    await signed_up("alice")
    client = make_client()
    real = await client.call("POST", "/api/v1/prelogin", {"username": "alice"})
    first = await client.call("POST", "/api/v1/prelogin", {"username": "nobody"})
    second = await client.call("POST", "/api/v1/prelogin", {"username": "nobody"})
    assert first == second
    assert set(first) == set(real) == {"salt", "iterations"}
    assert len(base64.b64decode(first["salt"])) == 16
    other = await client.call("POST", "/api/v1/prelogin", {"username": "nobody2"})
    assert other["salt"] != first["salt"]


async def test_prelogin_returns_the_registered_salt(
    make_client: MakeClient, identities: list[e2e.Identity]
) -> None:
    """A real user's prelogin returns the salt and iterations chosen at registration."""
    client = make_client()
    await client.call("POST", "/api/v1/register", _body("alice", identities[0]))
    answer = await client.call("POST", "/api/v1/prelogin", {"username": "alice"})
    assert answer == {
        "salt": base64.b64encode(b"\x01" * 16).decode(),
        "iterations": FAST_ITERATIONS,
    }


async def test_megabyte_auth_key_is_refused_without_argon2(
    live_server: LiveServer, make_client: MakeClient
) -> None:
    """A 1 MB auth_key answers 400 before any argon2 work."""
    before = _argon2_runs(live_server)
    huge = base64.b64encode(os.urandom(1024 * 1024)).decode()
    response = await make_client().request(
        "POST", "/api/v1/login", {"username": "alice", "auth_key": huge}
    )
    assert response.status_code == 400
    assert response.json()["error"] == "invalid"
    assert _argon2_runs(live_server) == before


async def test_wrong_length_auth_key_is_refused_without_argon2(
    live_server: LiveServer, make_client: MakeClient
) -> None:
    """An auth_key of 31 bytes answers 400 naming the field, before any argon2 work."""
    before = _argon2_runs(live_server)
    short = base64.b64encode(os.urandom(31)).decode()
    response = await make_client().request(
        "POST", "/api/v1/login", {"username": "alice", "auth_key": short}
    )
    assert response.status_code == 400
    assert response.json()["field"] == "auth_key"
    assert _argon2_runs(live_server) == before


async def test_1024_bit_rsa_key_is_refused(
    live_server: LiveServer, make_client: MakeClient, identities: list[e2e.Identity]
) -> None:
    """An RSA key under 2048 bits answers 400 on enc_public_key and stores nothing."""
    weak = rsa.generate_private_key(public_exponent=65537, key_size=1024).public_key()
    der = weak.public_bytes(
        serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo
    )
    before = _argon2_runs(live_server)
    body = _body("alice", identities[0], enc_public_key=base64.b64encode(der).decode())
    response = await make_client().request("POST", "/api/v1/register", body)
    assert response.status_code == 400
    assert response.json()["field"] == "enc_public_key"
    assert _argon2_runs(live_server) == before
    assert _user_count(live_server) == 0


@pytest.mark.parametrize(
    ("field", "value"),
    [
        ("enc_public_key", base64.b64encode(b"not a key").decode()),
        ("sign_public_key", base64.b64encode(b"\x30\x03\x02\x01\x00").decode()),
        ("salt", base64.b64encode(b"short").decode()),
        ("salt", "not base64!"),
        ("iterations", 599_999),
        ("iterations", True),
        ("iterations", "600000"),
        ("key_backup", base64.b64encode(os.urandom(16 * 1024 + 1)).decode()),
        ("key_backup", base64.b64encode(b"tiny").decode()),
        ("auth_key", None),
        ("username", 42),
    ],
)
async def test_malformed_registration_field_is_400(
    live_server: LiveServer, identities: list[e2e.Identity], field: str, value: object
) -> None:
    """Each malformed registration field answers 400 naming it, before argon2."""
    client = SecureChatClient(live_server.url)
    try:
        before = _argon2_runs(live_server)
        changes = {field: value}
        if field == "iterations" and value == 599_999:
            # The server's floor is the configured minimum; ask below it.
            changes[field] = live_server.config.kdf_min_iterations - 1
        response = await client.request(
            "POST", "/api/v1/register", _body("alice", identities[0], **changes)
        )
        assert response.status_code == 400
        assert response.json() == {
            "error": "invalid",
            "field": field,
            "message": response.json()["message"],
        }
        assert _argon2_runs(live_server) == before
    finally:
        await client.close()


async def test_rsa_signing_key_in_place_of_ed25519_is_refused(
    make_client: MakeClient, identities: list[e2e.Identity]
) -> None:
    """The signing key must be Ed25519: an RSA key there answers 400."""
    body = _body(
        "alice", identities[0], sign_public_key=_body("x", identities[1])["enc_public_key"]
    )
    response = await make_client().request("POST", "/api/v1/register", body)
    assert response.status_code == 400
    assert response.json()["field"] == "sign_public_key"


@pytest.mark.parametrize(
    "username",
    [
        "alice'; DROP TABLE users;--",
        "x' OR '1'='1",
        "bob\u202eevil",
        "nul\x00byte",
        "ab",
        "a" * 33,
        "ali ce",
        "é" * 5,
        "",
    ],
)
async def test_hostile_usernames_are_refused(
    live_server: LiveServer, make_client: MakeClient, identities: list[e2e.Identity], username: str
) -> None:
    """SQL metacharacters, RTL overrides, NUL and bad lengths answer 400 and store nothing."""
    response = await make_client().request(
        "POST", "/api/v1/register", _body(username, identities[0])
    )
    assert response.status_code == 400
    assert response.json()["field"] == "username"
    assert _user_count(live_server) == 0


async def test_fullwidth_name_collides_with_its_nfkc_form(
    make_client: MakeClient, identities: list[e2e.Identity]
) -> None:
    """'ａｌｉｃｅ' is 'alice' after NFKC, so it cannot be registered twice."""
    client = make_client()
    await client.call("POST", "/api/v1/register", _body("alice", identities[0]))
    response = await client.request("POST", "/api/v1/register", _body("ａｌｉｃｅ", identities[1]))
    assert response.status_code == 409


async def test_cross_site_post_is_403_and_changes_nothing(
    live_server: LiveServer, identities: list[e2e.Identity]
) -> None:
    """A POST from a foreign Origin answers 403 and creates no account."""
    client = SecureChatClient(live_server.url)
    try:
        response = await client.http.post(
            "/api/v1/register",
            json=_body("alice", identities[0]),
            headers={"Origin": "https://evil.example"},
        )
        assert response.status_code == 403
        assert response.json()["error"] == "cross_site"
        assert _user_count(live_server) == 0
    finally:
        await client.close()


async def test_cross_site_fetch_metadata_is_403(
    live_server: LiveServer, identities: list[e2e.Identity]
) -> None:
    """Sec-Fetch-Site: cross-site without an allowed Origin answers 403."""
    client = SecureChatClient(live_server.url)
    try:
        response = await client.http.post(
            "/api/v1/register",
            json=_body("alice", identities[0]),
            headers={"Sec-Fetch-Site": "cross-site"},
        )
        assert response.status_code == 403
        assert _user_count(live_server) == 0
    finally:
        await client.close()


async def test_form_post_is_415(live_server: LiveServer) -> None:
    """A state-changing request that is not JSON (a cross-site form) answers 415."""
    client = SecureChatClient(live_server.url)
    try:
        response = await client.http.post(
            "/api/v1/logout", data={"a": "b"}, headers={"Origin": client.origin}
        )
        assert response.status_code == 415
    finally:
        await client.close()


async def test_cross_site_logout_leaves_the_session_alive(signed_up: SignUp) -> None:
    """A foreign-Origin logout with a valid cookie answers 403 and the session survives."""
    client = await signed_up("alice")
    response = await client.http.post(
        "/api/v1/logout", json={}, headers={**client.headers(), "Origin": "https://evil.example"}
    )
    assert response.status_code == 403
    assert await client.me() == "alice"


async def test_cookie_from_before_logout_is_refused_afterwards(signed_up: SignUp) -> None:
    """The old cookie answers 401 once its session has been logged out."""
    client = await signed_up("alice")
    old_cookie = client.session_cookie
    await client.logout()
    client.session_cookie = old_cookie
    response = await client.request("GET", "/api/v1/me")
    assert response.status_code == 401


async def test_each_login_gets_a_new_session_id(signed_up: SignUp) -> None:
    """Logging in again issues a different session cookie."""
    client = await signed_up("alice")
    first = client.session_cookie
    await client.login("alice", PASSWORD)
    assert client.session_cookie and client.session_cookie != first


async def test_session_cookie_attributes(
    make_client: MakeClient, identities: list[e2e.Identity]
) -> None:
    """The cookie is __Host-, Secure, HttpOnly, SameSite=Strict, Path=/ and has no Domain."""
    client = make_client()
    await client.register("alice", PASSWORD, iterations=FAST_ITERATIONS, identity=identities[0])
    salt, iterations = await client.prelogin("alice")
    keys = e2e.derive_keys(PASSWORD, salt, iterations, min_iterations=1)
    response = await client.request(
        "POST", "/api/v1/login", {"username": "alice", "auth_key": e2e.b64encode(keys.auth_key)}
    )
    [header] = [
        h for h in response.headers.get_list("set-cookie") if h.startswith("__Host-securechat=")
    ]
    lowered = header.lower()
    for attribute in ("secure", "httponly", "samesite=strict", "path=/"):
        assert attribute in lowered
    assert "domain=" not in lowered


async def test_eleven_wrong_logins_are_throttled(
    signed_up: SignUp, make_client: MakeClient
) -> None:
    """After at most ten failures, attempts answer 429 with Retry-After, even the right key."""
    await signed_up("alice")
    client = make_client()
    wrong = base64.b64encode(os.urandom(32)).decode()
    statuses = []
    for _ in range(11):
        response = await client.request(
            "POST", "/api/v1/login", {"username": "alice", "auth_key": wrong}
        )
        statuses.append(response.status_code)
    assert statuses[-1] == 429
    assert set(statuses) <= {401, 429}
    assert int(response.headers["Retry-After"]) >= 1
    assert response.json()["error"] == "throttled"
    with pytest.raises(Exception, match="429"):
        await client.login("alice", PASSWORD)


async def test_registration_is_throttled_per_address(
    tmp_path: Path, identities: list[e2e.Identity]
) -> None:
    """Registrations beyond the per-address bound answer 429."""
    async with _client_of_server_with(tmp_path, registrations_per_address=2) as client:
        for name in ("alice", "bob"):
            assert (
                await client.request("POST", "/api/v1/register", _body(name, identities[0]))
            ).status_code == 201
        response = await client.request("POST", "/api/v1/register", _body("carol", identities[0]))
    assert response.status_code == 429
    assert "Retry-After" in response.headers


async def test_revoke_other_sessions(signed_up: SignUp, make_client: MakeClient) -> None:
    """ "Log out other sessions" ends every session but this one, at once."""
    laptop = await signed_up("alice")
    phone = make_client()
    phone.min_iterations = FAST_ITERATIONS
    await phone.login("alice", PASSWORD)
    sessions = (await laptop.call("GET", "/api/v1/sessions"))["sessions"]
    assert len(sessions) == 2
    assert sum(s["current"] for s in sessions) == 1
    assert (await laptop.call("POST", "/api/v1/sessions/revoke-others", {}))["revoked"] == 1
    assert (await phone.request("GET", "/api/v1/me")).status_code == 401
    assert await laptop.me() == "alice"


async def test_revoke_one_session_by_public_id(signed_up: SignUp, make_client: MakeClient) -> None:
    """A session can be ended from another one by its public id; unknown ids are 404."""
    laptop = await signed_up("alice")
    phone = make_client()
    phone.min_iterations = FAST_ITERATIONS
    await phone.login("alice", PASSWORD)
    sessions = (await laptop.call("GET", "/api/v1/sessions"))["sessions"]
    other = next(s["id"] for s in sessions if not s["current"])
    assert (await laptop.request("POST", f"/api/v1/sessions/{other}/revoke", {})).status_code == 204
    assert (await phone.request("GET", "/api/v1/me")).status_code == 401
    assert (await laptop.request("POST", "/api/v1/sessions/nope/revoke", {})).status_code == 404


async def test_idle_session_expires(tmp_path: Path, identities: list[e2e.Identity]) -> None:
    """A session answers until it has been idle for the idle timeout, and 401 once it has."""
    clock = ManualClock()
    async with _client_of_server_with(tmp_path, clock, session_idle_timeout=3600) as client:
        await client.register("alice", PASSWORD, iterations=FAST_ITERATIONS, identity=identities[0])
        await client.login("alice", PASSWORD)
        clock.advance(3600 - 0.001)
        assert await client.me() == "alice"  # and this request is activity: idle from here
        clock.advance(3600)
        assert (await client.request("GET", "/api/v1/me")).status_code == 401


async def test_absolute_timeout_ends_an_active_session(
    tmp_path: Path, identities: list[e2e.Identity]
) -> None:
    """A session past its absolute lifetime answers 401 even while in use: asked every 61 s,
    never idle for its 120 s, it answers every request until 600 s after login and none after."""
    clock = ManualClock()
    timeouts = {"session_idle_timeout": 120, "session_absolute_timeout": 600}
    async with _client_of_server_with(tmp_path, clock, **timeouts) as client:
        await client.register("alice", PASSWORD, iterations=FAST_ITERATIONS, identity=identities[0])
        await client.login("alice", PASSWORD)
        answers = []
        for at in range(0, 900, 61):
            answers.append((at, (await client.request("GET", "/api/v1/me")).status_code))
            clock.advance(61)
    in_use = [status for at, status in answers if at < 600]
    after_lifetime = [status for at, status in answers if at >= 600]
    assert in_use and set(in_use) == {200}
    assert after_lifetime and set(after_lifetime) == {401}


async def test_password_never_reaches_the_server(
    live_server: LiveServer, make_client: MakeClient, identities: list[e2e.Identity]
) -> None:
    """After register and login, the database holds neither the password nor wrap_key."""
    client = make_client()
    await client.register("alice", PASSWORD, iterations=FAST_ITERATIONS, identity=identities[0])
    await client.login("alice", PASSWORD)
    salt, iterations = await client.prelogin("alice")
    keys = e2e.derive_keys(PASSWORD, salt, iterations, min_iterations=1)
    enc_pkcs8, sign_pkcs8 = identities[0].to_pkcs8()
    data = b"".join(
        path.read_bytes() for path in live_server.database_path.parent.glob("securechat.db*")
    )
    for secret in (PASSWORD.encode(), keys.wrap_key, keys.auth_key, enc_pkcs8, sign_pkcs8):
        assert secret not in data
        assert base64.b64encode(secret) not in data


async def test_concurrent_wrong_logins_are_throttled_like_sequential_ones(
    signed_up: SignUp, make_client: MakeClient
) -> None:
    """Guesses sent all at once are counted before argon2 runs: at most ten are checked."""
    await signed_up("alice")
    client = make_client()
    wrong = base64.b64encode(os.urandom(32)).decode()
    responses = await asyncio.gather(
        *(
            client.request("POST", "/api/v1/login", {"username": "alice", "auth_key": wrong})
            for _ in range(30)
        )
    )
    statuses = [r.status_code for r in responses]
    assert statuses.count(401) <= 10
    assert statuses.count(429) >= 20


async def test_concurrent_registrations_are_throttled_per_address(
    tmp_path: Path, identities: list[e2e.Identity]
) -> None:
    """Registrations sent all at once still stop at the per-address bound."""
    async with _client_of_server_with(tmp_path, registrations_per_address=3) as client:
        responses = await asyncio.gather(
            *(
                client.request("POST", "/api/v1/register", _body(f"user{i}", identities[0]))
                for i in range(12)
            )
        )
    statuses = [r.status_code for r in responses]
    assert statuses.count(201) == 3
    assert statuses.count(429) == 9


@pytest.mark.parametrize(
    "body",
    [b"[" * 60_000, b'{"username": "\xff\xfe"}', '{"username": "alice"}'.encode("utf-16")],
)
async def test_hostile_json_bodies_answer_400(base_url: str, body: bytes) -> None:
    """Deeply nested JSON, invalid UTF-8 and UTF-16 answer 400, never 500."""
    import httpx

    async with httpx.AsyncClient(base_url=base_url) as http:
        response = await http.post(
            "/api/v1/prelogin",
            content=body,
            headers={"Content-Type": "application/json", "Origin": base_url},
        )
    assert response.status_code == 400
    assert response.json()["error"] == "invalid"


async def test_duplicate_json_keys_are_refused(base_url: str) -> None:
    """A body with a key given twice answers 400 (parsers disagree on which one wins)."""
    import httpx

    async with httpx.AsyncClient(base_url=base_url) as http:
        response = await http.post(
            "/api/v1/prelogin",
            content=b'{"username": "alice", "username": "bob"}',
            headers={"Content-Type": "application/json", "Origin": base_url},
        )
    assert response.status_code == 400
