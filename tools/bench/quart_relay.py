"""A bare relay on the same stack as SecureChat: Quart on Hypercorn, no auth, no storage.

    hypercorn --config hypercorn.toml --bind 127.0.0.1:8001 tools.bench.quart_relay:app

The user is named in the query string (``/ws?user=alice``). The socket handler has the same
shape as a good Quart chat handler: a receive loop and a send task fed by a bounded queue.

Like SecureChat, the relay declines permessage-deflate, which Hypercorn would otherwise always
accept, through wsguard's own switch: every server in the comparison carries the same bytes.
"""

from __future__ import annotations

import asyncio
import contextlib

from quart import Quart, websocket

from securechat.chat.wsguard import decline_permessage_deflate
from tools.bench.relay import QUEUE_FRAMES, Relay

decline_permessage_deflate()
app = Quart(__name__)
relay = Relay()


@app.get("/")
async def index() -> str:
    return "quart relay"


@app.websocket("/ws")
async def ws() -> None:
    user = websocket.args.get("user", "")
    await websocket.accept()
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
            await websocket.send(await queue.get())

    async def receive_loop() -> None:
        while True:
            relay.handle(user, await websocket.receive(), deliver)

    relay.join(user, deliver)
    tasks = [
        asyncio.create_task(send_loop()),
        asyncio.create_task(receive_loop()),
        asyncio.create_task(overflowed.wait()),
    ]
    try:
        await asyncio.wait(tasks, return_when=asyncio.FIRST_COMPLETED)
        if overflowed.is_set():
            await websocket.close(1013, "too slow")
    finally:
        relay.leave(user, deliver)
        for task in tasks:
            task.cancel()
        for task in tasks:
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await task
