"""Bounds on the memory one WebSocket client can make the server hold.

Four gaps in the stack, three measured with one client against ``python -m hypercorn --config
hypercorn.toml`` (peak RSS of the server process; the figures are in docs/protocol.md):

1. Quart reads every incoming frame as soon as Hypercorn has it and puts it in an unbounded
   ``asyncio.Queue``: a client that sends faster than the handler reads grows that queue without
   limit. :func:`bounded_websocket_class`
   gives the app a queue of a few frames; when it is full Quart stops taking events, Hypercorn's
   own queue (``max_app_queue_size``) fills, Hypercorn stops reading the socket, and TCP pushes
   back on the client. A flooding client then holds at most a few dozen frames of memory.
2. Hypercorn answers a message over ``websocket_max_message_size`` with close 1009 but keeps
   appending the rest of that message to its buffer as it arrives. :class:`_BoundedBuffer`
   refuses a part *before* storing it, and keeps refusing.
3. Hypercorn always agrees to permessage-deflate (RFC 7692), and wsproto inflates each received
   chunk without a bound: one small read can inflate a thousandfold before the size check runs.
   The chat's payloads are ciphertext (base64), which barely compresses, while each compressing
   connection costs hundreds of KB of zlib state and CPU per frame, and mixing attacker-chosen and
   secret bytes in one compression context is a known side channel (CRIME). So the server
   declines the extension; a client that sends compressed frames anyway is dropped by wsproto.

4. When the app returns while the client is still sending (a flooder the server has closed),
   Hypercorn's put of ``websocket.disconnect`` into its full app queue never returns, and the
   connection is never closed, even after the client leaves. :func:`bounded_websocket_class`
   drains the queue after the app returns, until that disconnect.

Hypercorn has no setting for 2 and 3, so :func:`install` replaces two names in
``hypercorn.protocol.ws_stream`` (idempotent, process-wide); ``tests/chat/test_chat.py`` pins both
behaviours, so an upgrade that moves them fails loudly rather than silently unbounding memory.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from typing import Any, Final

from hypercorn.protocol import ws_stream
from hypercorn.typing import ASGIReceiveCallable, ASGIReceiveEvent, ASGISendCallable
from quart import Quart
from quart.asgi import ASGIWebsocketConnection
from wsproto.events import Message
from wsproto.extensions import Extension

log = logging.getLogger(__name__)


def bounded_websocket_class(max_frames: int) -> type[ASGIWebsocketConnection]:
    """Quart's ASGI WebSocket handler with at most ``max_frames`` incoming frames queued."""
    if max_frames < 1:
        raise ValueError("max_frames must be at least 1")  # 0 would mean unbounded

    class BoundedWebsocketConnection(ASGIWebsocketConnection):
        def __init__(self, app: Quart, scope: Any) -> None:
            super().__init__(app, scope)
            self.queue = asyncio.Queue(maxsize=max_frames)

        async def __call__(self, receive: ASGIReceiveCallable, send: ASGISendCallable) -> None:
            disconnected = False

            async def watch() -> ASGIReceiveEvent:
                nonlocal disconnected
                event = await receive()
                disconnected = disconnected or event["type"] == "websocket.disconnect"
                return event

            try:
                await super().__call__(watch, send)
            finally:
                if not disconnected:
                    _drain_after_return(receive)

    return BoundedWebsocketConnection


# Hypercorn puts ``websocket.disconnect`` into its bounded app queue after the app returns. If
# the client had filled that queue (it kept sending after the handler stopped reading), the put
# waits forever: the connection is never closed, even after the client goes. So after the app
# returns, a task keeps taking events until the disconnect (bounded in time, just in case).
_DRAIN_SECONDS: Final = 60.0
_drainers: set[asyncio.Task[None]] = set()


def _drain_after_return(receive: ASGIReceiveCallable) -> None:
    async def drain() -> None:
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(_DRAIN_SECONDS):
                while (await receive())["type"] != "websocket.disconnect":
                    pass

    task = asyncio.ensure_future(drain())
    _drainers.add(task)
    task.add_done_callback(_drainers.discard)


class _BoundedBuffer(ws_stream.WebsocketBuffer):
    """Hypercorn's message buffer, refusing a part before it would pass the limit."""

    def extend(self, event: Message[Any]) -> None:
        if self.length + len(event.data) > self.max_length:
            self.length = self.max_length + 1  # stays over: every later part is refused too
            raise ws_stream.FrameTooLargeError()
        super().extend(event)


class _DeclinedDeflate(Extension):
    """Stands where Hypercorn puts permessage-deflate, and declines every offer of it."""

    name = "permessage-deflate"

    def enabled(self) -> bool:
        return False

    def offer(self) -> bool:
        return False

    def accept(self, offer: str) -> None:
        return None


def install(app: Quart, receive_queue_frames: int) -> None:
    """Bound Quart's incoming queue for ``app`` and harden Hypercorn's WebSocket stream."""
    app.asgi_websocket_class = bounded_websocket_class(receive_queue_frames)
    _require_hypercorn_stream()
    ws_stream.WebsocketBuffer = _BoundedBuffer  # type: ignore[misc]
    decline_permessage_deflate()


def decline_permessage_deflate() -> None:
    """Make Hypercorn decline every permessage-deflate offer in this process (point 3 above)."""
    _require_hypercorn_stream()
    ws_stream.PerMessageDeflate = _DeclinedDeflate  # type: ignore[attr-defined,assignment]


def _require_hypercorn_stream() -> None:
    if not hasattr(ws_stream, "WebsocketBuffer") or not hasattr(ws_stream, "PerMessageDeflate"):
        # Serving without the bounds would let one client take the server's memory: refuse.
        raise RuntimeError(
            "hypercorn.protocol.ws_stream has changed: the WebSocket memory bounds in"
            " securechat/chat/wsguard.py cannot be applied; pin Hypercorn 0.18 or update wsguard"
        )


__all__ = ["bounded_websocket_class", "decline_permessage_deflate", "install"]
