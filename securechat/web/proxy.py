"""Behind reverse proxies: the client's address and scheme from the headers they add.

With ``hops`` trusted proxies in front (``SECURECHAT_TRUSTED_PROXY_HOPS``), each appends the
address it received the request from to ``X-Forwarded-For``, so the value ``hops`` from the
end is the client's, and anything before it is whatever the client wrote. The scheme the client
used is what the proxy next to the server says in ``X-Forwarded-Proto`` (its last value): that
proxy must set it. ``X-Forwarded-Host`` is not read: the proxy passes ``Host`` on unchanged.

(Hypercorn's ProxyFixMiddleware reads all three headers ``hops`` values from the end, although
proxies usually set the scheme rather than append to it, copies ``https`` into a WebSocket's
scope, which routing refuses for a socket, and believes ``X-Forwarded-Host``.)
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any, cast

from hypercorn.typing import (
    ASGIFramework,
    ASGIReceiveCallable,
    ASGISendCallable,
    HTTPScope,
    Scope,
    WebsocketScope,
)

# More hops than any sane deployment has: a larger number is a mistake in the configuration.
HOPS_MAX = 5
# A WebSocket's scope names its scheme in WebSocket terms.
_SOCKET_SCHEME = {"https": "wss", "http": "ws"}


class TrustedProxies:
    """ASGI middleware: take the client's address and scheme from ``hops`` reverse proxies."""

    def __init__(self, app: ASGIFramework, hops: int) -> None:
        if not 1 <= hops <= HOPS_MAX:
            raise ValueError(f"trusted_proxy_hops must be between 0 and {HOPS_MAX}")
        self._app = app
        self.hops = hops

    async def __call__(
        self, scope: Scope, receive: ASGIReceiveCallable, send: ASGISendCallable
    ) -> None:
        if scope["type"] == "http" or scope["type"] == "websocket":
            scope = self._as_the_client_sent_it(scope)
        await self._app(scope, receive, send)

    def _as_the_client_sent_it(self, scope: HTTPScope | WebsocketScope) -> Scope:
        headers = scope["headers"]
        changes: dict[str, Any] = {}
        addresses = _values(headers, b"x-forwarded-for")
        if len(addresses) >= self.hops:
            changes["client"] = (addresses[-self.hops], 0)
        schemes = _values(headers, b"x-forwarded-proto")
        if schemes and schemes[-1].lower() in _SOCKET_SCHEME:
            scheme = schemes[-1].lower()
            changes["scheme"] = _SOCKET_SCHEME[scheme] if scope["type"] == "websocket" else scheme
        return cast(Scope, {**scope, **changes}) if changes else scope


def _values(headers: Iterable[tuple[bytes, bytes]], name: bytes) -> list[str]:
    """The comma-separated values of every header ``name``, in order."""
    return [
        value.strip()
        for header, raw in headers
        if header.lower() == name
        for value in raw.decode("latin-1").split(",")
        if value.strip()
    ]


__all__ = ["HOPS_MAX", "TrustedProxies"]
