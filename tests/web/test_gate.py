"""The request gate: a foreign Host (DNS rebinding) and ambiguous framing never reach the app."""

from __future__ import annotations

import json
import socket
from pathlib import Path

import httpx
import pytest
from websockets.asyncio.client import connect
from websockets.exceptions import InvalidStatus
from websockets.typing import Origin

from securechat import create_app, e2e
from securechat.client import COOKIE_NAME, SecureChatClient
from tests.conftest import FAST_ITERATIONS, SignUp, fast_config
from tests.livesrv import LiveServer
from tests.rawhttp import exchange

PASSWORD = "correct horse battery"
PUBLIC = "https://chat.example"


def addressed_to(server: LiveServer, name: str, *, scheme: str = "http") -> dict[str, str]:
    """Host and Origin as a browser on ``scheme://name:port`` sends them."""
    host = f"{name}:{server.port}"
    return {"Host": host, "Origin": f"{scheme}://{host}"}


def serving_as(tmp_path: Path, *origins: str) -> LiveServer:
    """A live server with SECURECHAT_PUBLIC_ORIGIN set to ``origins`` and its own 127.0.0.1
    address (which the readiness probe and the test clients use)."""
    server = LiveServer(fast_config(tmp_path / "data"))
    server.config = fast_config(tmp_path / "data", public_origin=(*origins, server.url))
    server.app = create_app(server.config)
    return server.start()


async def login_body(client: SecureChatClient, username: str) -> dict[str, str]:
    """The body of POST /login for ``username``, as a browser derives it."""
    salt, iterations = await client.prelogin(username)
    keys = e2e.derive_keys(PASSWORD, salt, iterations, min_iterations=FAST_ITERATIONS)
    return {"username": username, "auth_key": e2e.b64encode(keys.auth_key)}


async def open_socket(
    server: LiveServer, name: str, origin: str, cookie: str | None
) -> tuple[int, str | None]:
    """Open /ws addressed to ``name`` (on the server's own address): the handshake's status and
    its error code."""
    sock = socket.create_connection(("127.0.0.1", server.port))
    headers = {"Cookie": f"{COOKIE_NAME}={cookie}"} if cookie else {}
    try:
        async with connect(
            f"ws://{name}/ws",
            sock=sock,
            origin=Origin(origin),
            additional_headers=headers,
            proxy=None,
            open_timeout=10,
        ):
            return 101, None
    except InvalidStatus as refused:
        return refused.response.status_code, json.loads(refused.response.body)["error"]


async def test_a_rebound_login_is_refused_and_a_loopback_one_passes(
    live_server: LiveServer, signed_up: SignUp
) -> None:
    """Login with Host and Origin both a foreign name answers 421 and sets no cookie; the same
    request addressed to localhost logs in."""
    body = await login_body(await signed_up("alice"), "alice")
    async with httpx.AsyncClient(base_url=live_server.url) as http:
        rebound = await http.post(
            "/api/v1/login", json=body, headers=addressed_to(live_server, "evil.example")
        )
        local = await http.post(
            "/api/v1/login", json=body, headers=addressed_to(live_server, "localhost")
        )
    assert rebound.status_code == 421
    assert rebound.json()["error"] == "misdirected_request"
    assert "SECURECHAT_PUBLIC_ORIGIN" in rebound.json()["message"]
    assert "set-cookie" not in rebound.headers
    assert rebound.headers["connection"] == "close"
    assert local.status_code == 200
    assert COOKIE_NAME in local.headers["set-cookie"]


async def test_a_rebound_logout_is_refused_and_the_session_survives(
    live_server: LiveServer, signed_up: SignUp
) -> None:
    """Logout addressed to a foreign name answers 421 and ends nothing; addressed to the
    server's own address, it ends the session."""
    alice = await signed_up("alice")
    headers = {
        **addressed_to(live_server, "evil.example"),
        "Cookie": f"{COOKIE_NAME}={alice.session_cookie}",
    }
    async with httpx.AsyncClient(base_url=live_server.url) as http:
        rebound = await http.post("/api/v1/logout", json={}, headers=headers)
    assert rebound.status_code == 421
    assert await alice.me() == "alice"
    assert (await alice.request("POST", "/api/v1/logout", {})).status_code == 204


async def test_a_rebound_chat_socket_is_refused_and_a_loopback_one_opens(
    live_server: LiveServer, signed_up: SignUp
) -> None:
    """The /ws handshake addressed to a foreign name answers 421 in JSON, cookie and matching
    Origin notwithstanding; addressed to localhost it opens."""
    alice = await signed_up("alice")
    rebound = addressed_to(live_server, "evil.example")
    local = addressed_to(live_server, "localhost")
    statuses = [
        await open_socket(live_server, rebound["Host"], rebound["Origin"], alice.session_cookie),
        await open_socket(live_server, local["Host"], local["Origin"], alice.session_cookie),
    ]
    assert statuses == [(421, "misdirected_request"), (101, None)]


async def test_a_rebound_page_is_refused_and_redirects_are_relative(
    live_server: LiveServer,
) -> None:
    """A page addressed to a foreign name answers 421; addressed to the server, the redirect
    to /login is a relative path, never built from Host."""
    async with httpx.AsyncClient(base_url=live_server.url) as http:
        rebound = await http.get("/chat", headers=addressed_to(live_server, "evil.example"))
        local = await http.get("/chat", headers=addressed_to(live_server, "127.0.0.1"))
    assert rebound.status_code == 421
    assert rebound.headers["content-type"] == "application/json"
    assert (local.status_code, local.headers["location"]) == (302, "/login")


async def test_behind_a_trusted_proxy_forwarded_host_does_not_help(tmp_path: Path) -> None:
    """Behind a trusted proxy the Host it passes on is judged: X-Forwarded-Host naming the
    server's own address does not let a foreign Host through."""
    with LiveServer(fast_config(tmp_path / "data", trusted_proxy_hops=1)).start() as server:
        async with httpx.AsyncClient(base_url=server.url) as http:
            response = await http.get(
                "/",
                headers={
                    "Host": f"evil.example:{server.port}",
                    "X-Forwarded-Host": f"127.0.0.1:{server.port}",
                    "X-Forwarded-For": "198.51.100.7",
                    "X-Forwarded-Proto": "https",
                },
            )
    assert response.status_code == 421


@pytest.mark.parametrize(
    ("head", "body"),
    [
        # HTTP/1.0 may omit Host; the gate refuses it, in JSON.
        (b"GET /healthz HTTP/1.0\r\n\r\n", b'"error":"bad_request"'),
        # h11 refuses two before the app runs, with an empty 400.
        (b"GET /healthz HTTP/1.1\r\nHost: {host}\r\nHost: {host}\r\n\r\n", b""),
    ],
    ids=["none", "two"],
)
def test_a_request_without_exactly_one_host_is_refused(
    live_server: LiveServer, head: bytes, body: bytes
) -> None:
    """No Host, or two, answers 400 (RFC 9112 section 3.2) and closes the connection."""
    host = f"127.0.0.1:{live_server.port}".encode()
    answer = exchange(live_server.port, head.replace(b"{host}", host))
    assert (answer.statuses, answer.closed) == ([400], True)
    assert body in answer.last_body


async def test_over_http2_a_foreign_authority_is_refused_without_connection_headers(
    live_server: LiveServer,
) -> None:
    """Over HTTP/2 the gate judges :authority the same way, and its answers carry no
    Connection header (HTTP/2 forbids it)."""
    async with httpx.AsyncClient(base_url=live_server.url, http1=False, http2=True) as http:
        rebound = await http.get("/", headers={"Host": f"evil.example:{live_server.port}"})
        local = await http.get("/")
    assert (rebound.http_version, rebound.status_code) == ("HTTP/2", 421)
    assert "connection" not in rebound.headers
    assert (local.http_version, local.status_code) == ("HTTP/2", 200)


def test_content_length_with_chunked_is_refused_and_the_connection_closed(
    live_server: LiveServer,
) -> None:
    """A body framed both ways answers 400 and the connection is closed (RFC 9112 section
    6.1): what follows the chunks is never served as a second request."""
    host = f"127.0.0.1:{live_server.port}"
    body = b'{"username": "alice"}'
    smuggled = f"GET /healthz HTTP/1.1\r\nHost: {host}\r\n\r\n".encode()
    request = (
        f"POST /api/v1/prelogin HTTP/1.1\r\nHost: {host}\r\nContent-Type: application/json\r\n"
        f"Content-Length: 4\r\nTransfer-Encoding: chunked\r\n\r\n"
    ).encode()
    request += b"%x\r\n%s\r\n0\r\n\r\n" % (len(body), body) + smuggled
    answer = exchange(live_server.port, request)
    assert (answer.statuses, answer.closed) == ([400], True)
    assert json.loads(answer.last_body)["error"] == "bad_request"


async def test_with_a_public_origin_only_its_hosts_are_answered(tmp_path: Path) -> None:
    """With SECURECHAT_PUBLIC_ORIGIN set, the hosts of its origins are answered (the default
    port written or not) and nothing else, loopback names included."""
    with serving_as(tmp_path, PUBLIC) as server:
        async with httpx.AsyncClient(base_url=server.url) as http:
            statuses = [
                (await http.get("/", headers={"Host": host})).status_code
                for host in ("chat.example", "CHAT.example:443", "chat.example:8443")
            ]
            loopback = await http.get("/", headers={"Host": f"localhost:{server.port}"})
    assert statuses == [200, 200, 421]
    assert loopback.status_code == 421
    # A page on a rebound name reads this answer: it must not learn the server's real name.
    assert "chat.example" not in loopback.text


async def test_with_a_public_origin_the_origin_checks_use_it_not_host(tmp_path: Path) -> None:
    """The server's own origin is the configured one: a request for chat.example from
    https://chat.example passes over the server's plain HTTP, one from http://chat.example is
    cross-site; the /ws handshake is judged alike (and then stops at the missing session)."""
    with serving_as(tmp_path, PUBLIC) as server:
        async with httpx.AsyncClient(base_url=server.url) as http:
            statuses = [
                (
                    await http.post(
                        "/api/v1/prelogin",
                        json={"username": "alice"},
                        headers={"Host": "chat.example", "Origin": origin},
                    )
                ).status_code
                for origin in (PUBLIC, "http://chat.example", server.url)
            ]
        sockets = [
            await open_socket(server, "chat.example", origin, None)
            for origin in (PUBLIC, "http://chat.example")
        ]
    assert statuses == [200, 403, 200]
    assert sockets == [(403, "unauthenticated"), (403, "cross_site")]


@pytest.mark.parametrize(
    "value",
    [
        "chat.example",
        "https://chat.example/app",
        "ftp://chat.example",
        "https://u@chat.example",
        "http://0.0.0.0:8000",
        "http://[::]:8000",
    ],
)
def test_a_malformed_public_origin_stops_the_app(tmp_path: Path, value: str) -> None:
    """A public origin that is not scheme://host[:port] is a configuration mistake: no app."""
    with pytest.raises(ValueError, match="public_origin"):
        create_app(fast_config(tmp_path / "data", public_origin=(value,)))


def test_a_malformed_allowed_origin_stops_the_app(tmp_path: Path) -> None:
    """SECURECHAT_ALLOWED_ORIGINS is checked when the app is built, not at the first request."""
    with pytest.raises(ValueError, match="allowed_origins"):
        create_app(fast_config(tmp_path / "data", allowed_origins=("chat.example",)))


async def test_an_allowed_origin_written_with_its_default_port_matches_the_browsers(
    tmp_path: Path,
) -> None:
    """``https://partner.example:443`` in the list is the ``https://partner.example`` a browser
    sends as Origin."""
    config = fast_config(tmp_path / "data", allowed_origins=("https://partner.example:443",))
    with LiveServer(config).start() as server:
        async with httpx.AsyncClient(base_url=server.url) as http:
            response = await http.post(
                "/api/v1/prelogin",
                json={"username": "alice"},
                headers={"Origin": "https://partner.example"},
            )
    assert response.status_code == 200


def test_proxy_hops_without_a_public_origin_are_warned_about(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """Behind a proxy the loopback default may answer every name: the operator is told."""
    with caplog.at_level("WARNING", logger="securechat.web.gate"):
        create_app(fast_config(tmp_path / "data", trusted_proxy_hops=1))
    assert "SECURECHAT_PUBLIC_ORIGIN" in caplog.text
