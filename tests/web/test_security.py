"""Headers and error pages: every response is hardened; no error shows a traceback."""

from __future__ import annotations

import json
import time
from collections.abc import AsyncIterator
from pathlib import Path

import httpx
import pytest

from tests.conftest import fast_config
from tests.livesrv import LiveServer
from tests.rawhttp import trickle

REQUIRED = {
    "content-security-policy",
    "x-content-type-options",
    "referrer-policy",
    "cross-origin-opener-policy",
}


@pytest.mark.parametrize(
    ("method", "path"),
    [
        ("GET", "/"),
        ("GET", "/login"),
        ("GET", "/signup"),
        ("GET", "/healthz"),
        ("GET", "/api/v1/me"),
        ("GET", "/no/such/page"),
        ("GET", "/api/v1/no-such-endpoint"),
        ("POST", "/api/v1/login"),
        ("GET", "/static/js/crypto.js"),
    ],
)
async def test_every_response_carries_the_security_headers(
    base_url: str, method: str, path: str
) -> None:
    """Pages, API answers, static files and errors all carry the strict headers."""
    async with httpx.AsyncClient(base_url=base_url) as http:
        body: dict[str, object] | None = {} if method == "POST" else None
        response = await http.request(method, path, headers={"Origin": base_url}, json=body)
    assert set(response.headers) >= REQUIRED
    csp = response.headers["content-security-policy"]
    for directive in (
        "script-src 'self'",
        "object-src 'none'",
        "base-uri 'none'",
        "frame-ancestors 'none'",
    ):
        assert directive in csp
    assert "unsafe-inline" not in csp
    assert response.headers["x-content-type-options"] == "nosniff"
    assert response.headers["referrer-policy"] == "no-referrer"


async def test_no_hsts_over_plain_http(base_url: str) -> None:
    """HSTS is sent only over TLS (it would be ignored, and misleading, over HTTP)."""
    async with httpx.AsyncClient(base_url=base_url) as http:
        response = await http.get("/")
    assert "strict-transport-security" not in response.headers


async def test_api_errors_are_json_without_traceback(base_url: str) -> None:
    """A bad API request gets a JSON error body, never a traceback."""
    async with httpx.AsyncClient(base_url=base_url) as http:
        response = await http.post(
            "/api/v1/login",
            content=b"{not json",
            headers={"Content-Type": "application/json", "Origin": base_url},
        )
    assert response.status_code == 400
    assert response.json()["error"] == "invalid"
    assert "Traceback" not in response.text


async def test_wrong_method_is_a_json_405(base_url: str) -> None:
    """An unsupported method on an API path answers a JSON 405."""
    async with httpx.AsyncClient(base_url=base_url) as http:
        response = await http.get("/api/v1/login")
    assert response.status_code == 405
    assert response.json()["error"] == "method_not_allowed"


async def test_page_404_is_html(base_url: str) -> None:
    """A missing page answers an HTML 404 page."""
    async with httpx.AsyncClient(base_url=base_url) as http:
        response = await http.get("/nowhere")
    assert response.status_code == 404
    assert response.headers["content-type"].startswith("text/html")


async def test_oversized_body_answers_400_and_the_connection_survives(base_url: str) -> None:
    """A 200 KiB body answers 400 on "body", and the same connection serves the next request."""
    async with httpx.AsyncClient(base_url=base_url) as http:
        response = await http.post(
            "/api/v1/prelogin",
            content=b'{"username": "' + b"a" * 200_000 + b'"}',
            headers={"Content-Type": "application/json", "Origin": base_url},
        )
        assert response.status_code == 400
        assert response.json()["field"] == "body"
        assert (await http.get("/healthz")).status_code == 200


async def test_chunked_body_is_refused(base_url: str) -> None:
    """A body without a Content-Length (chunked) answers 400 on "body"."""

    async def chunks() -> AsyncIterator[bytes]:
        yield b'{"username": "alice"}'

    async with httpx.AsyncClient(base_url=base_url) as http:
        response = await http.post(
            "/api/v1/prelogin",
            content=chunks(),
            headers={"Content-Type": "application/json", "Origin": base_url},
        )
    assert response.status_code == 400
    assert response.json()["field"] == "body"


async def test_over_http2_a_body_without_content_length_is_refused(base_url: str) -> None:
    """Over HTTP/2 a body needs no framing header: a 2 MB one without a Content-Length answers
    400 on "body", as over HTTP/1, instead of slipping past the 64 KiB bound."""

    async def chunks() -> AsyncIterator[bytes]:
        yield b'{"username": "' + b"a" * 2_000_000 + b'"}'

    async with httpx.AsyncClient(base_url=base_url, http1=False, http2=True) as http:
        response = await http.post(
            "/api/v1/prelogin",
            content=chunks(),
            headers={"Content-Type": "application/json", "Origin": base_url},
        )
    assert (response.http_version, response.status_code) == ("HTTP/2", 400)
    assert response.json()["field"] == "body"


@pytest.mark.parametrize("value", ["%C2%B2", "%D9%A1", "-1", "1e3", "9" * 25])
async def test_non_ascii_digits_in_query_answer_400(base_url: str, value: str) -> None:
    """Unicode digits and other non-numbers in integer query parameters answer 400, not 500."""
    async with httpx.AsyncClient(base_url=base_url) as http:
        response = await http.get(f"/api/v1/directory/entries?start={value}&end=1")
    assert response.status_code == 400
    assert response.json()["error"] == "invalid"


def test_a_trickled_body_is_cut_off_at_the_body_timeout(tmp_path: Path) -> None:
    """A body sent a byte at a time answers 408 and its connection is closed once
    request_body_timeout has passed, not after hypercorn.toml's read_timeout (60 s)."""
    with LiveServer(fast_config(tmp_path / "data", request_body_timeout=0.3)).start() as server:
        head = (
            f"POST /api/v1/prelogin HTTP/1.1\r\nHost: 127.0.0.1:{server.port}\r\n"
            "Content-Type: application/json\r\nContent-Length: 64\r\n\r\n"
        ).encode()
        started = time.monotonic()
        answer = trickle(server.port, head, b"x" * 64, interval=0.05, timeout=15)  # 3.2 s
        took = time.monotonic() - started
    assert (answer.statuses, answer.closed) == ([408], True)
    assert json.loads(answer.last_body)["error"] == "request_timeout"
    assert took < 5
