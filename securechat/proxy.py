"""Behind reverse proxies: the client's address, scheme and host from their X-Forwarded-* headers.

Hypercorn's ProxyFixMiddleware does the reading ("legacy" mode: X-Forwarded-For, -Proto and
-Host, the value ``hops`` from the end). It copies X-Forwarded-Proto into the scope as it is,
so a WebSocket handshake behind a TLS proxy would carry the scheme ``https``, which routing
refuses for a socket: the scheme is given back in WebSocket terms (``wss``/``ws``) here.
"""

from __future__ import annotations

from typing import cast

from hypercorn.middleware import ProxyFixMiddleware
from hypercorn.typing import ASGIFramework, ASGIReceiveCallable, ASGISendCallable, Scope

# More hops than any sane deployment has: a larger number is a mistake in the configuration.
HOPS_MAX = 5
_SOCKET_SCHEME = {"https": "wss", "http": "ws"}


class TrustedProxies:
    """ASGI middleware: believe the X-Forwarded-* headers of ``hops`` reverse proxies."""

    def __init__(self, app: ASGIFramework, hops: int) -> None:
        if not 1 <= hops <= HOPS_MAX:
            raise ValueError(f"trusted_proxy_hops must be between 0 and {HOPS_MAX}")
        self._app = app
        self._forwarded = ProxyFixMiddleware(self._with_socket_scheme, "legacy", hops)

    async def __call__(
        self, scope: Scope, receive: ASGIReceiveCallable, send: ASGISendCallable
    ) -> None:
        await self._forwarded(scope, receive, send)

    async def _with_socket_scheme(
        self, scope: Scope, receive: ASGIReceiveCallable, send: ASGISendCallable
    ) -> None:
        if scope["type"] == "websocket" and scope["scheme"] in _SOCKET_SCHEME:
            scope = cast(Scope, {**scope, "scheme": _SOCKET_SCHEME[scope["scheme"]]})
        await self._app(scope, receive, send)


__all__ = ["HOPS_MAX", "TrustedProxies"]
