"""Device cookies: the token itself, and on a real server that the owner's browser gets in while
guessers have locked the name for everyone else, and that a cookie buys nothing more."""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable, Iterator
from pathlib import Path
from typing import TypeAlias

import pytest

from securechat import e2e
from securechat.accounts.devices import Device, DeviceTokens
from securechat.client import DEVICE_COOKIE_NAME, ClientError, SecureChatClient
from tests.clockkit import ManualClock
from tests.conftest import FAST_ITERATIONS, fast_config
from tests.livesrv import LiveServer

PASSWORD = "correct horse battery"
KEY = b"\x05" * 32
NOW_MS = 1_700_000_000_000
# Small budgets, so that using one up takes a second of growing delays, not half a minute.
FAILURES_MAX = 3
OWNER_ADDRESS = "192.0.2.1"

ClientAt: TypeAlias = Callable[[str], SecureChatClient]


# --- the token ------------------------------------------------------------------------------


def test_a_token_stands_for_a_device_of_its_own_name_only() -> None:
    """A token reads back as its device for the name it was issued for, and as nothing for
    another name; each token has a nonce of its own and does not spell out the name."""
    tokens = DeviceTokens(KEY, max_age=3600)
    token = tokens.issue("alice", NOW_MS)
    assert tokens.read(token, "alice", NOW_MS) == Device("alice", token.split(".")[0])
    assert tokens.read(token, "bob", NOW_MS) is None
    assert tokens.issue("alice", NOW_MS).split(".")[0] != token.split(".")[0]
    assert "alice" not in token


def test_an_altered_or_foreign_token_stands_for_nothing() -> None:
    """A token changed in any part, signed under another key, or not shaped like one is None."""
    tokens = DeviceTokens(KEY, max_age=3600)
    nonce, expires, mac = tokens.issue("alice", NOW_MS).split(".")
    flipped = "A" if nonce[0] != "A" else "B"
    altered = [
        f"{flipped}{nonce[1:]}.{expires}.{mac}",
        f"{nonce}.{int(expires) + 86_400}.{mac}",
        f"{nonce}.{expires}.{mac[:-1]}{'A' if mac[-1] != 'A' else 'B'}",
        DeviceTokens(b"\x06" * 32, max_age=3600).issue("alice", NOW_MS),
        "",
        f"{nonce}.{expires}",
        f"{nonce}.{expires}.{mac}.{mac}",
        f"{nonce}.{'٣' * len(expires)}.{mac}",
        "x" * 100_000,
    ]
    for token in altered:
        assert tokens.read(token, "alice", NOW_MS) is None, token[:100]


def test_a_token_expires_max_age_after_it_was_issued() -> None:
    """Valid up to ``max_age`` seconds after issue, and not from then on."""
    tokens = DeviceTokens(KEY, max_age=3600)
    token = tokens.issue("alice", NOW_MS)
    assert tokens.read(token, "alice", NOW_MS + 3_600_000 - 1) is not None
    assert tokens.read(token, "alice", NOW_MS + 3_600_000) is None


# --- on a real server -----------------------------------------------------------------------


@pytest.fixture(name="clock")
def _clock() -> ManualClock:
    return ManualClock()


@pytest.fixture(name="server")
def _server(tmp_path: Path, clock: ManualClock) -> Iterator[LiveServer]:
    """A server behind one trusted proxy hop, so each client can come from an address of its
    own (X-Forwarded-For): the per-address throttle then stays out of the way."""
    config = fast_config(
        tmp_path / "data",
        trusted_proxy_hops=1,
        login_failures_max=FAILURES_MAX,
        device_failures_max=FAILURES_MAX,
    )
    with LiveServer(config, clock=clock).start() as server:
        yield server


@pytest.fixture(name="client_at")
async def _client_at(server: LiveServer) -> AsyncIterator[ClientAt]:
    """A factory of clients of ``server``, each coming from the address it is given."""
    clients: list[SecureChatClient] = []

    def make(address: str) -> SecureChatClient:
        client = SecureChatClient(server.url, min_iterations=FAST_ITERATIONS)
        client.http.headers["X-Forwarded-For"] = address
        clients.append(client)
        return client

    yield make
    for client in clients:
        await client.close()


@pytest.fixture(name="owner")
async def _owner(client_at: ClientAt, identities: list[e2e.Identity]) -> SecureChatClient:
    """alice's own browser: it has logged in once and logged out, keeping its device cookie."""
    owner = client_at(OWNER_ADDRESS)
    await owner.register("alice", PASSWORD, iterations=FAST_ITERATIONS, identity=identities[0])
    await owner.login("alice", PASSWORD)
    await owner.logout()
    assert owner.device_cookie
    return owner


async def _status(client: SecureChatClient, username: str, password: str) -> int:
    try:
        await client.login(username, password)
    except ClientError as error:
        return error.status
    return 200


async def _fail(
    client: SecureChatClient, username: str, clock: ManualClock, times: int = FAILURES_MAX
) -> None:
    """``times`` wrong logins as ``username``, each once the server's clock has been moved past
    the delay a 429 asks for."""
    failed = 0
    while failed < times:
        try:
            await client.login(username, "wrong " + PASSWORD)
        except ClientError as error:
            if error.status == 401:
                failed += 1
                continue
            assert error.status == 429 and error.body["retry_after"] <= 4, error.body
            clock.advance(error.body["retry_after"])
        else:
            raise AssertionError("a wrong password logged in")


async def test_guessers_lock_the_name_but_not_its_owners_browser(
    owner: SecureChatClient, client_at: ClientAt, clock: ManualClock
) -> None:
    """After a guesser has used up the name's budget, the right password from a browser without
    a device cookie answers 429, and from the owner's browser logs in (with a new cookie)."""
    await _fail(client_at("198.51.100.1"), "alice", clock)
    assert await _status(client_at("203.0.113.1"), "alice", PASSWORD) == 429
    old_cookie = owner.device_cookie
    await owner.login("alice", PASSWORD)
    assert await owner.me() == "alice"
    assert owner.device_cookie and owner.device_cookie != old_cookie


async def test_a_device_cookie_for_another_name_buys_nothing(
    owner: SecureChatClient,
    client_at: ClientAt,
    identities: list[e2e.Identity],
    clock: ManualClock,
) -> None:
    """bob's browser, trusted for bob, is an untrusted client for alice: refused once she is
    locked."""
    bobs = client_at("192.0.2.2")
    await bobs.register("bob", PASSWORD, iterations=FAST_ITERATIONS, identity=identities[1])
    await bobs.login("bob", PASSWORD)
    await _fail(client_at("198.51.100.1"), "alice", clock)
    assert await _status(bobs, "alice", PASSWORD) == 429


async def test_a_forged_or_altered_device_cookie_buys_nothing(
    owner: SecureChatClient, client_at: ClientAt, clock: ManualClock
) -> None:
    """Once the name is locked, the owner's cookie changed in any part, or one made under
    another key, is no device cookie: 429."""
    await _fail(client_at("198.51.100.1"), "alice", clock)
    assert owner.device_cookie
    nonce, expires, mac = owner.device_cookie.split(".")
    forged = [
        f"{nonce[::-1]}.{expires}.{mac}",
        f"{nonce}.{int(expires) + 1}.{mac}",
        f"{nonce}.{expires}.{mac[::-1]}",
        DeviceTokens(b"\x06" * 32, max_age=3600).issue("alice", clock.now_ms()),
    ]
    for number, cookie in enumerate(forged):
        client = client_at(f"203.0.113.{number + 1}")
        client.device_cookie = cookie
        assert await _status(client, "alice", PASSWORD) == 429, cookie


async def test_an_expired_device_cookie_buys_nothing(
    owner: SecureChatClient, client_at: ClientAt, server: LiveServer, clock: ManualClock
) -> None:
    """The owner's cookie, once older than its max age, leaves the browser an untrusted
    client: 429 while the name is locked."""
    clock.advance(server.config.device_cookie_max_age)  # first: the name's lock would not last
    await _fail(client_at("198.51.100.1"), "alice", clock)
    assert await _status(owner, "alice", PASSWORD) == 429


async def test_a_device_that_uses_up_its_own_budget_is_locked_out_alone(
    owner: SecureChatClient, client_at: ClientAt, server: LiveServer, clock: ManualClock
) -> None:
    """A trusted browser that fails its budget is refused for the window, even with the right
    password from elsewhere; its failures are not the name's, which others may still use."""
    owner.http.headers["X-Forwarded-For"] = "192.0.2.10"
    await _fail(owner, "alice", clock)
    owner.http.headers["X-Forwarded-For"] = "192.0.2.11"
    with pytest.raises(ClientError) as refused:
        await owner.login("alice", PASSWORD)
    assert refused.value.status == 429
    assert refused.value.body["retry_after"] > server.config.login_failure_window - 60
    assert await _status(client_at("203.0.113.1"), "alice", PASSWORD) == 200


async def test_the_device_cookie_is_set_like_the_session_cookie_and_outlives_logout(
    owner: SecureChatClient, server: LiveServer
) -> None:
    """__Host-, Secure, HttpOnly, SameSite=Strict, Path=/, no Domain, the configured max age;
    logout clears the session cookie and leaves the device cookie alone."""
    salt, iterations = await owner.prelogin("alice")
    keys = e2e.derive_keys(PASSWORD, salt, iterations, min_iterations=1)
    body = {"username": "alice", "auth_key": e2e.b64encode(keys.auth_key)}
    login = await owner.request("POST", "/api/v1/login", body)
    assert login.status_code == 200
    [header] = [h for h in login.headers.get_list("set-cookie") if h.startswith(DEVICE_COOKIE_NAME)]
    lowered = header.lower()
    for attribute in ("secure", "httponly", "samesite=strict", "path=/"):
        assert attribute in lowered
    assert f"max-age={server.config.device_cookie_max_age}" in lowered
    assert "domain=" not in lowered
    logout = await owner.request("POST", "/api/v1/logout", {})
    assert logout.status_code == 204
    cleared = logout.headers.get_list("set-cookie")
    assert cleared and all(not h.startswith(DEVICE_COOKIE_NAME) for h in cleared)


async def test_logout_that_forgets_the_device_clears_its_cookie_too(
    owner: SecureChatClient, server: LiveServer
) -> None:
    """ "Forget this device" (forget_device: true) expires the device cookie with the same
    attributes it was set with, so a shared computer keeps no login budget of the person who
    left; anything but a boolean is refused before the session ends."""
    await owner.login("alice", PASSWORD)
    assert owner.device_cookie
    refused = await owner.request("POST", "/api/v1/logout", {"forget_device": "yes"})
    assert refused.status_code == 400
    assert refused.json()["field"] == "forget_device"
    assert (await owner.request("GET", "/api/v1/me")).status_code == 200  # still logged in
    logout = await owner.request("POST", "/api/v1/logout", {"forget_device": True})
    assert logout.status_code == 204
    [header] = [
        h for h in logout.headers.get_list("set-cookie") if h.startswith(DEVICE_COOKIE_NAME)
    ]
    lowered = header.lower()
    assert lowered.startswith(f"{DEVICE_COOKIE_NAME.lower()}=;")
    for attribute in ("max-age=0", "secure", "httponly", "samesite=strict", "path=/"):
        assert attribute in lowered
