"""One chat connection's side of the protocol, apart from the socket.

``chat.py`` owns the WebSocket and runs two tasks over a :class:`ChatSession`: the receive task
feeds every incoming frame to :meth:`ChatSession.receive`, the send task runs
:meth:`ChatSession.run_sender`, which takes frames from the connection's bounded hub queue and
hands them to ``transmit`` (the socket's send). Tests drive the same class in-process with a
list as the socket.

Ordering (docs/protocol.md, "Order and the cursor"): a sync holds the send lock for its whole
replay, so no live frame interleaves with it; afterwards a live ``message`` or ``receipt`` at or
below the last position this connection sent is dropped (the replay carried it). So from a
``synced`` frame on (or from the start with ``/ws?after=N``), the positions of the ``message``
and ``receipt`` frames a client reads are strictly increasing and leave out none of its own
(its own sends from this socket come back as acks), unless it asks for a replay of what it
already has by syncing from an older cursor.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable

from securechat.config import Config
from securechat.delivery import SELF_RECIPIENT, ChatStats, Delivery, Principal, Sequenced
from securechat.hub import Broker, Connection
from securechat.protocol import (
    CloseCode,
    Delivered,
    Ping,
    ProtocolError,
    RateLimiter,
    Read,
    Send,
    Sync,
    Typing,
    error_frame,
    parse_client_frame,
    pong_frame,
    synced_frame,
    typing_frame,
)

Transmit = Callable[[str], Awaitable[None]]
Clock = Callable[[], float]

_FLOOD_REASON = "too many frames; slow down"
# Frames written in a row before letting the other connections run: ``transmit`` returns without
# yielding while the socket takes data (chat.py), so a long replay would hold the event loop.
_YIELD_EVERY = 32
_STALLED_REASON = "stopped reading; reconnect and sync"


class ChatSession:
    """The protocol state of one connection: rate limits, the send lock, the last position."""

    def __init__(
        self,
        *,
        conn: Connection,
        user: Principal,
        delivery: Delivery,
        broker: Broker,
        config: Config,
        transmit: Transmit,
        clock: Clock | None = None,
    ) -> None:
        self.conn = conn
        self.user = user
        self.delivery = delivery
        self.broker = broker
        self.stats: ChatStats = delivery.stats
        self._transmit = transmit
        self._clock = clock or asyncio.get_running_loop().time
        self._max_envelope = config.envelope_max_bytes
        self._frames = RateLimiter(config.ws_frames_per_s, config.ws_frames_burst)
        self._typing = RateLimiter(config.ws_typing_per_s, config.ws_typing_burst)
        self._send_lock = asyncio.Lock()
        self._send_timeout = config.ws_send_timeout
        # The highest position sent on this connection by a sync or live.
        self.last_pos = 0

    # Incoming ---------------------------------------------------------------------------

    async def receive(self, data: str | bytes) -> None:
        """Handle one client frame: a mistake is answered with an error frame, a flood closes."""
        if self.conn.closed.is_set():
            return  # closing: the rest of what the client sent is read and dropped
        self.stats.frames_in += 1
        if not self._frames.allow(self._clock()):
            self.stats.rejected["flood"] += 1
            self.conn.close(CloseCode.POLICY_VIOLATION, _FLOOD_REASON)
            return
        try:
            frame = parse_client_frame(data, max_envelope_bytes=self._max_envelope)
        except ProtocolError as error:
            self.stats.rejected[error.code] += 1
            self.reply(error.to_frame())
            return
        if isinstance(frame, Send):
            await self._send(frame)
        elif isinstance(frame, Sync):
            await self.sync(frame.after)
        elif isinstance(frame, Delivered):
            await self.delivery.mark(self.conn, self.user, frame.seq, "delivered")
        elif isinstance(frame, Read):
            await self.delivery.mark(self.conn, self.user, frame.seq, "read")
        elif isinstance(frame, Typing):
            await self._typing_to(frame.to)
        elif isinstance(frame, Ping):
            self.reply(pong_frame())

    def reply(self, text: str) -> None:
        """Queue a frame for this connection only (behind what is already queued)."""
        self.conn.deliver(text)

    async def _send(self, frame: Send) -> None:
        if frame.to == self.user.name:
            self._refuse(SELF_RECIPIENT, "You cannot send a message to yourself.", frame.id)
            return
        if self.delivery.admit(self.conn, self.user, frame, self._clock()):
            await self.delivery.send(self.conn, self.user, frame)

    async def _typing_to(self, to: str) -> None:
        # Never stored, never an error when dropped: typing is a hint, relayed while it is fresh.
        if to == self.user.name:
            self._refuse(SELF_RECIPIENT, "You cannot type to yourself.", None)
        elif self._typing.allow(self._clock()):
            await self.broker.publish(to, typing_frame(self.user.name))
            self.stats.typing_relayed += 1
        else:
            self.stats.typing_dropped += 1

    def _refuse(self, code: str, message: str, frame_id: str | None) -> None:
        self.stats.rejected[code] += 1
        self.reply(error_frame(code, message, frame_id))

    # Sync -------------------------------------------------------------------------------

    async def sync(self, after: int) -> None:
        """Replay every position above ``after`` in batches, then ``synced``; live frames wait."""
        async with self._send_lock:
            position = after
            more = True
            while more:
                frames, more = await self.delivery.changes(self.user, position)
                for index, text in enumerate(frames, 1):
                    if not await self._write(text):
                        return
                    self.stats.frames_out += 1
                    if index % _YIELD_EVERY == 0:
                        await asyncio.sleep(0)
                if frames:
                    position = frames[-1].seq
            self.last_pos = max(self.last_pos, position)
            if await self._write(synced_frame(position)):
                self.stats.frames_out += 1

    # Outgoing ---------------------------------------------------------------------------

    @property
    def writing(self) -> bool:
        """Whether a sync or a frame is being written to the socket right now."""
        return self._send_lock.locked()

    async def forward(self, text: str) -> None:
        """Send one queued frame, unless it is a position this connection already sent."""
        async with self._send_lock:
            if type(text) is Sequenced:
                if text.seq <= self.last_pos:
                    return  # a sync already sent it
                self.last_pos = text.seq
            if await self._write(text):
                self.stats.frames_out += 1

    async def _write(self, text: str) -> bool:
        """Transmit one frame within ``ws_send_timeout``; a peer that does not read it in time
        (its socket buffers full) is closed with 1013, and False tells the caller to stop."""
        try:
            async with asyncio.timeout(self._send_timeout):
                await self._transmit(text)
        except TimeoutError:
            self.stats.rejected["stalled_reader"] += 1
            self.conn.close(CloseCode.TRY_AGAIN_LATER, _STALLED_REASON)
            return False
        return True

    async def run_sender(self) -> None:
        """The send task: forward the connection's queue until cancelled."""
        queue = self.conn.queue
        written = 0
        while True:
            text = await queue.get()
            try:
                await self.forward(text)
            finally:
                queue.task_done()
            written += 1
            if written % _YIELD_EVERY == 0:
                await asyncio.sleep(0)  # a long queue does not hold the loop either


__all__ = ["ChatSession"]
