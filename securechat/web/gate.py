"""ASGI middleware in front of everything else: the requests that never reach the app.

- A ``Host`` the server does not answer for (securechat/web/origins.py: DNS rebinding) is
  refused with 421 Misdirected Request: the request is well formed, so not 400, but addressed to
  a host this server is not authoritative for, which is what 421 says (RFC 9110 section
  15.5.20); an HTTP/2 client that reused a connection for another name retries on a new one.
  A request without exactly one ``Host`` is refused with 400 (RFC 9112 section 3.2).
- A body framed by both ``Content-Length`` and ``Transfer-Encoding`` is refused with 400, and
  the connection closed, as RFC 9112 section 6.1 requires: h11 reads such a body by its
  chunks, as the RFC says, but a proxy in front that framed it by ``Content-Length`` would
  take what follows the chunks for a request of the proxy's client (request smuggling).

Both run before the app and the other middleware, for HTTP requests and WebSocket handshakes
alike, and answer in JSON like the app's errors. Each refusal closes the connection: on HTTP/1
the answer says ``Connection: close``, after which h11 marks the connection MUST_CLOSE and
Hypercorn ends it. HTTP/2 forbids connection-specific headers (RFC 9113 section 8.2.2, and the
h2 library raises on one), so on HTTP/2 this middleware drops a ``Connection`` header the app or
a refusal sets.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
from collections.abc import Iterable
from typing import Any, Final, cast

from hypercorn.typing import (
    ASGIFramework,
    ASGIReceiveCallable,
    ASGISendCallable,
    ASGISendEvent,
    HTTPScope,
    Scope,
    WebsocketScope,
)

from securechat.config import Config
from securechat.errors import (
    AmbiguousFraming,
    BadHost,
    CloseCode,
    MisdirectedRequest,
    SecureChatError,
)
from securechat.web.origins import public_origins
from securechat.web.security import SECURITY_HEADERS

log = logging.getLogger(__name__)

_HTTP1: Final = frozenset({"1.0", "1.1"})
PROXY_WITHOUT_ORIGIN: Final = (
    "SECURECHAT_TRUSTED_PROXY_HOPS is set but SECURECHAT_PUBLIC_ORIGIN is not: a proxy that"
    " passes its upstream's loopback address on as Host makes every name reach this server."
    " Set SECURECHAT_PUBLIC_ORIGIN to the origin people use (https://chat.example.org)."
)


class RequestGate:
    """ASGI middleware: refuse a foreign or missing Host and ambiguous framing before the app."""

    def __init__(self, app: ASGIFramework, config: Config) -> None:
        self._app = app
        self._config = config
        self._public = public_origins(config.public_origin)  # ValueError if malformed
        if config.trusted_proxy_hops and not self._public.origins:
            # A proxy may pass its upstream's loopback address on as Host: the loopback default
            # would then answer every name the browser used, and the gate would do nothing.
            log.warning(PROXY_WITHOUT_ORIGIN)

    async def __call__(
        self, scope: Scope, receive: ASGIReceiveCallable, send: ASGISendCallable
    ) -> None:
        if scope["type"] != "http" and scope["type"] != "websocket":
            await self._app(scope, receive, send)
            return
        if scope.get("http_version") not in _HTTP1:
            send = _without_connection_headers(send)
        refusal = self._refusal(scope)
        if refusal is None:
            await self._app(scope, receive, send)
        elif scope["type"] == "http":
            await self._refuse_request(refusal, receive, send)
        else:
            await _refuse_handshake(scope, refusal, receive, send)

    def _refusal(self, scope: HTTPScope | WebsocketScope) -> SecureChatError | None:
        hosts = _values(scope["headers"], b"host")
        if len(hosts) != 1:
            return BadHost()
        if not self._public.answers_for(hosts[0]):
            return MisdirectedRequest(self._public.refusal())
        names = {name.lower() for name, _ in scope["headers"]}
        if b"content-length" in names and b"transfer-encoding" in names:
            return AmbiguousFraming()
        return None

    async def _refuse_request(
        self, error: SecureChatError, receive: ASGIReceiveCallable, send: ASGISendCallable
    ) -> None:
        await self._drain(receive)
        body, headers = _answer(error)
        await send({"type": "http.response.start", "status": error.status, "headers": headers})
        await send({"type": "http.response.body", "body": body, "more_body": False})

    async def _drain(self, receive: ASGIReceiveCallable) -> None:
        """Read and discard the body, within the bounds on bodies, so that the client reads
        the answer rather than a reset (closing a socket with unread data resets it)."""
        received = 0
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(self._config.request_body_timeout):
                while received <= self._config.request_drain_max_bytes:
                    message = await receive()
                    if message["type"] != "http.request":
                        return
                    received += len(message.get("body", b""))
                    if not message.get("more_body", False):
                        return


async def _refuse_handshake(
    scope: WebsocketScope,
    error: SecureChatError,
    receive: ASGIReceiveCallable,
    send: ASGISendCallable,
) -> None:
    """An HTTP answer instead of the upgrade (the websocket.http.response extension)."""
    await receive()  # websocket.connect
    if "websocket.http.response" not in (scope.get("extensions") or {}):
        await send({"type": "websocket.close", "code": CloseCode.POLICY_VIOLATION, "reason": ""})
        return
    body, headers = _answer(error)
    await send(
        {"type": "websocket.http.response.start", "status": error.status, "headers": headers}
    )
    await send({"type": "websocket.http.response.body", "body": body, "more_body": False})


def _answer(error: SecureChatError) -> tuple[bytes, list[tuple[bytes, bytes]]]:
    """The JSON body of ``error`` and its headers, the app's security headers among them."""
    body = json.dumps(error.to_json(), separators=(",", ":")).encode()
    fields = {
        **SECURITY_HEADERS,
        **error.headers(),
        "Content-Type": "application/json",
        "Content-Length": str(len(body)),
        "Cache-Control": "no-store",
    }
    return body, [(name.lower().encode(), value.encode()) for name, value in fields.items()]


def _without_connection_headers(send: ASGISendCallable) -> ASGISendCallable:
    """``send`` without ``Connection`` response headers (for HTTP/2 and later)."""

    async def send_without(message: ASGISendEvent) -> None:
        if message["type"] in ("http.response.start", "websocket.http.response.start"):
            fields: Any = message["headers"]
            headers = [(name, value) for name, value in fields if name.lower() != b"connection"]
            message = cast(ASGISendEvent, {**message, "headers": headers})
        await send(message)

    return send_without


def _values(headers: Iterable[tuple[bytes, bytes]], name: bytes) -> list[str]:
    """The value of every header ``name``, in order."""
    return [raw.decode("latin-1").strip() for header, raw in headers if header.lower() == name]


__all__ = ["RequestGate"]
