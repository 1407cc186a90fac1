"""A bare relay written directly on the ``websockets`` library: no ASGI, no auth, no storage.

    python -m tools.bench.websockets_relay --port 8002      (or --fd N: an inherited socket)

Same frames, same limits (64 KiB frames, pings every 20 s, permessage-deflate declined, as
SecureChat declines it) and the same relay logic as ``quart_relay``; the user is named in the
query string.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import signal
import socket
from urllib.parse import parse_qs, urlsplit

from websockets.asyncio.server import ServerConnection, serve
from websockets.exceptions import ConnectionClosed
from websockets.http11 import Request, Response

from tools.bench.relay import QUEUE_FRAMES, Relay

relay = Relay()


async def handler(ws: ServerConnection) -> None:
    if ws.request is None:  # websockets calls the handler only after the handshake
        raise RuntimeError("websockets relay: a handler called before the handshake")
    query = parse_qs(urlsplit(ws.request.path).query)
    user = query.get("user", [""])[0]
    queue: asyncio.Queue[str] = asyncio.Queue(QUEUE_FRAMES)
    overflowed = asyncio.Event()

    def deliver(text: str) -> bool:
        try:
            queue.put_nowait(text)
        except asyncio.QueueFull:
            overflowed.set()
            return False
        return True

    async def send_loop() -> None:
        while True:
            await ws.send(await queue.get())

    async def receive_loop() -> None:
        async for text in ws:
            relay.handle(user, text, deliver)

    relay.join(user, deliver)
    tasks = [
        asyncio.create_task(send_loop()),
        asyncio.create_task(receive_loop()),
        asyncio.create_task(overflowed.wait()),
    ]
    try:
        await asyncio.wait(tasks, return_when=asyncio.FIRST_COMPLETED)
        if overflowed.is_set():
            await ws.close(1013, "too slow")
    finally:
        relay.leave(user, deliver)
        for task in tasks:
            task.cancel()
        for task in tasks:
            with contextlib.suppress(asyncio.CancelledError, ConnectionClosed, Exception):
                await task


async def main(sock: socket.socket) -> None:
    stop = asyncio.get_running_loop().create_future()
    for signum in (signal.SIGTERM, signal.SIGINT):
        asyncio.get_running_loop().add_signal_handler(signum, stop.set_result, None)
    async with serve(
        handler,
        sock=sock,
        max_size=65536,
        ping_interval=20,
        compression=None,
        process_request=_plain_get,
    ):
        await stop


def _plain_get(connection: ServerConnection, request: Request) -> Response | None:
    """Answer a plain GET / (the harness's readiness probe) without an upgrade."""
    if request.path == "/":
        return connection.respond(200, "websockets relay\n")
    return None


def _socket(args: argparse.Namespace) -> socket.socket:
    if args.fd is not None:
        return socket.socket(fileno=args.fd)
    sock = socket.create_server(("127.0.0.1", args.port), backlog=4096)
    return sock


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description="bare websockets relay")
    parser.add_argument("--fd", type=int)
    parser.add_argument("--port", type=int, default=8002)
    asyncio.run(main(_socket(parser.parse_args())))
