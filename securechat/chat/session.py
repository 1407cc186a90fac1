"""One chat connection's side of the protocol, apart from the socket.

``endpoint.py`` owns the WebSocket and runs two tasks over a :class:`ChatSession`: the receive task
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

Frames from several nodes can arrive out of position order (node A commits 10, node B 11,
and B's publish overtakes A's). Each positioned frame carries ``prev``, the position before it
in this user's stream; commits are in position order, so one whose ``prev`` is above
``last_pos`` means a frame in between is still on its way or lost, while the database already
holds it: the connection then catches up from there instead of forwarding the frame, and the
late one is dropped as already sent (issue 11, item 3). One process never reorders its own
publishes, so there the rule never fires.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable, Iterator
from typing import TYPE_CHECKING, Final

from securechat.chat.delivery import Acked, ChatStats, Delivery, Principal, Sequenced
from securechat.chat.hub import Broker, Connection
from securechat.chat.protocol import (
    Delete,
    Delivered,
    GroupKeys,
    GroupSend,
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
from securechat.config import Config
from securechat.errors import Close, FrameCode
from securechat.runtime import cancel_and_wait
from securechat.store import MarkStatus

if TYPE_CHECKING:
    from securechat.groups.service import GroupService

log = logging.getLogger(__name__)

Transmit = Callable[[str], Awaitable[None]]
Clock = Callable[[], float]

# Frames written in a row before letting the other connections run: ``transmit`` returns without
# yielding while the socket takes data (endpoint.py), so a long replay would hold the event loop.
_YIELD_EVERY = 32
# Seconds between two sweeps of StallSweep, at most: the slack on top of ws_send_timeout.
_SWEEP_PERIOD = 1.0


class _Marker(str):
    """A queue item that is no frame: an order for the send task."""


# Queued by :meth:`ChatSession.request_catch_up`: the send task catches up when it reaches it,
# so the replay runs in the socket's own task (cancelled with it) and after what was queued.
CATCH_UP: Final = _Marker("catch-up")


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
        groups: GroupService | None = None,
    ) -> None:
        self.conn = conn
        # Group posts and marks (securechat/groups/service.py); None: pairs only.
        self.groups = groups
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
        self._idle_timeout = config.ws_idle_timeout
        # When the client was last heard from (self._clock()): a frame, a ping.
        self._heard = self._clock()
        # When the write now in progress began (self._clock()), None between writes.
        self._write_started: float | None = None
        # The highest position sent on this connection by a sync or live.
        self.last_pos = 0
        # Whether the client holds every position up to last_pos: true from its first sync
        # (or ``/ws?after=N``) on; only then can a catch-up start from last_pos.
        self.in_order = False
        self._catch_up_queued = False

    # Incoming ---------------------------------------------------------------------------

    async def receive(self, data: str | bytes) -> None:
        """Handle one client frame: a mistake is answered with an error frame, a flood closes."""
        self._heard = self._clock()
        if self.conn.closed.is_set():
            return  # closing: the rest of what the client sent is read and dropped
        self.stats.frames_in += 1
        if not self._frames.allow(self._clock()):
            self.stats.rejected["flood"] += 1
            self.conn.close(Close.FLOOD.code, Close.FLOOD.reason)
            return
        try:
            frame = parse_client_frame(data, max_envelope_bytes=self._max_envelope)
        except ProtocolError as error:
            self.stats.rejected[error.code] += 1
            self.reply(error.to_frame())
            return
        if isinstance(frame, Send):
            await self._send(frame)
        elif isinstance(frame, GroupSend | GroupKeys):
            await self._group_post(frame)
        elif isinstance(frame, Sync):
            await self.sync(frame.after)
        elif isinstance(frame, Delivered | Read):
            await self._mark(frame)
        elif isinstance(frame, Typing):
            await self._typing_to(frame.to)
        elif isinstance(frame, Ping):
            self.reply(pong_frame())
        elif isinstance(frame, Delete):
            await self._delete(frame.id)

    def reply(self, text: str) -> None:
        """Queue a frame for this connection only (behind what is already queued)."""
        self.conn.deliver(text)

    async def _send(self, frame: Send) -> None:
        if frame.to == self.user.name:
            self._refuse(FrameCode.SELF_RECIPIENT, None, frame.id)
            return
        if await self.delivery.admit(self.conn, self.user, frame.id, self._clock()):
            await self.delivery.send(self.conn, self.user, frame)

    async def _group_post(self, frame: GroupSend | GroupKeys) -> None:
        # A group message or key distribution costs a send, and is answered in frame order.
        groups = self.groups
        if groups is None:
            self._refuse(FrameCode.UNKNOWN_GROUP, None, frame.id)
        elif await self.delivery.admit(self.conn, self.user, frame.id, self._clock()):
            await self.delivery.run_in_order(
                self.conn, lambda: groups.post(self.conn, self.user, frame)
            )

    async def _mark(self, frame: Delivered | Read) -> None:
        status: MarkStatus = "delivered" if isinstance(frame, Delivered) else "read"
        groups = self.groups
        if frame.group is None:
            await self.delivery.mark(self.conn, self.user, frame.seq, status)
        elif groups is not None:
            await self.delivery.run_in_order(
                self.conn, lambda: groups.mark(self.conn, self.user, frame.seq, status)
            )
        else:
            self._refuse(FrameCode.UNKNOWN_GROUP, None, None)

    async def _delete(self, frame_id: str) -> None:
        # A delete costs what a send costs: each one is a database write.
        if await self.delivery.admit(self.conn, self.user, frame_id, self._clock()):
            await self.delivery.delete(self.conn, self.user, frame_id)

    async def _typing_to(self, to: str) -> None:
        # Never stored, never an error when dropped: typing is a hint, relayed while it is fresh.
        if to == self.user.name:
            self._refuse(FrameCode.SELF_RECIPIENT, "You cannot type to yourself.", None)
        elif self._typing.allow(self._clock()):
            if not await self.delivery.shares_with(self.user.name, to):
                # Not contacts both ways (or blocked): dropped as silently as any typing.
                self.stats.typing_dropped += 1
                return
            await self.broker.publish(to, typing_frame(self.user.name))
            self.stats.typing_relayed += 1
        else:
            self.stats.typing_dropped += 1

    def _refuse(self, error: FrameCode, message: str | None, frame_id: str | None) -> None:
        self.stats.rejected[error.code] += 1
        self.reply(error_frame(error, message, frame_id))

    # Sync -------------------------------------------------------------------------------

    async def sync(self, after: int) -> None:
        """Replay every position above ``after`` in batches, then ``synced``; live frames wait."""
        async with self._send_lock:
            position, _ = await self._replay(after)
            self.last_pos = max(self.last_pos, position)
            self.in_order = True
            await self._write(synced_frame(position))

    async def catch_up(self) -> int:
        """Send what the database holds above ``last_pos`` (frames a broker lost), as live
        frames would have come: in order, no ``synced``; how many. Nothing before the
        client's first sync, whose cursor it would not match (docs/protocol.md)."""
        async with self._send_lock:
            if not self.in_order or self.conn.closed.is_set():
                return 0
            self.last_pos, written = await self._replay(self.last_pos)
            return written

    def request_catch_up(self) -> bool:
        """Have the send task catch up once it has sent what is queued; False if a request is
        already waiting or could not be queued (a full queue closes the socket: 1013)."""
        if self._catch_up_queued:
            return False
        self._catch_up_queued = self.conn.deliver(CATCH_UP)
        return self._catch_up_queued

    async def _replay(self, after: int) -> tuple[int, int]:
        """Write every position above ``after``, in batches: the last position, how many."""
        position = after
        written = 0
        more = True
        while more:
            frames, more = await self.delivery.changes(self.user, position)
            for index, text in enumerate(frames, 1):
                await self._write(text)
                if index % _YIELD_EVERY == 0:
                    await asyncio.sleep(0)
            if frames:
                position = frames[-1].seq
                written += len(frames)
        return position, written

    # Outgoing ---------------------------------------------------------------------------

    @property
    def writing(self) -> bool:
        """Whether a sync or a frame is being written to the socket right now."""
        return self._send_lock.locked()

    @property
    def write_started(self) -> float | None:
        """When the write in progress began (on this session's clock); None between writes."""
        return self._write_started

    async def forward(self, text: str) -> None:
        """Send one queued frame, unless it is a position this connection already sent; one
        that overtook a frame before it is sent with that one, from the database."""
        async with self._send_lock:
            if type(text) is Sequenced:
                if text.seq <= self.last_pos:
                    return  # a sync (or a catch-up) already sent it
                if self.in_order and text.prev is not None and text.prev > self.last_pos:
                    # Everything up to text.seq is committed (it was published after its
                    # commit, and commits are in position order): replay from last_pos.
                    self.stats.gap_catch_ups += 1
                    self.last_pos, _ = await self._replay(self.last_pos)
                    return
                self.last_pos = text.seq
            elif type(text) is Acked and text.prev is not None and text.prev <= self.last_pos:
                # This connection's own message: the client has it, so it counts as sent when
                # nothing lies between (else the gap stays for the next frame to find).
                self.last_pos = max(self.last_pos, text.seq)
            await self._write(text)

    async def _write(self, text: str) -> None:
        """Transmit one frame, noting when it began for :class:`StallSweep`.

        A peer that stops reading (its socket buffers full) blocks ``transmit``; the sweep then
        closes the connection with 1013 and endpoint.py cancels the task blocked here.
        """
        self._write_started = self._clock()
        try:
            await self._transmit(text)
        finally:
            self._write_started = None
        self.stats.frames_out += 1

    def close_if_stalled(self) -> bool:
        """Close with 1013 if the write in progress has waited ``ws_send_timeout``, or nothing
        has come from the client for ``ws_idle_timeout`` (it vanished without a TCP close, and
        would otherwise be shown online to its contacts until TCP gave up); True if so."""
        if self.conn.closed.is_set():
            return False
        if self._clock() - self._heard >= self._idle_timeout:
            self.stats.rejected["silent_peer"] += 1
            self.conn.close(Close.SILENT_PEER.code, Close.SILENT_PEER.reason)
            return True
        started = self._write_started
        if started is None:
            return False
        if self._clock() - started < self._send_timeout:
            return False
        self.stats.rejected["stalled_reader"] += 1
        self.conn.close(Close.STALLED_READER.code, Close.STALLED_READER.reason)
        return True

    async def run_sender(self) -> None:
        """The send task: forward the connection's queue until cancelled."""
        queue = self.conn.queue
        written = 0
        while True:
            text = await queue.get()
            try:
                if text is CATCH_UP:
                    self._catch_up_queued = False
                    await self.catch_up()
                else:
                    await self.forward(text)
            finally:
                queue.task_done()
            written += 1
            if written % _YIELD_EVERY == 0:
                await asyncio.sleep(0)  # a long queue does not hold the loop either


class StallSweep:
    """One task for the whole app that closes the sessions whose write is stuck.

    A timeout per write (``asyncio.timeout``) arms and cancels a timer for every frame, a visible
    share of the event loop under load (docs/performance.md); here a write costs one clock read
    and two attribute stores, and the sweep looks at each live session once per ``period``
    (one second, or ``ws_send_timeout`` if shorter). So a write that stalls is closed between
    ``ws_send_timeout`` and ``ws_send_timeout + period`` after it began.
    chat/endpoint.py adds each session when its socket is accepted and discards it when it ends.
    """

    def __init__(self, send_timeout: float) -> None:
        self.period = min(_SWEEP_PERIOD, send_timeout)
        self._sessions: set[ChatSession] = set()
        self._task: asyncio.Task[None] | None = None

    def __len__(self) -> int:
        return len(self._sessions)

    def __iter__(self) -> Iterator[ChatSession]:
        return iter(list(self._sessions))  # a copy: sessions come and go while it is used

    def add(self, session: ChatSession) -> None:
        """Watch ``session``'s writes until :meth:`discard`."""
        self._sessions.add(session)

    def discard(self, session: ChatSession) -> None:
        """Stop watching ``session`` (its connection has ended)."""
        self._sessions.discard(session)

    def sweep(self) -> int:
        """Close every session whose write has waited ``ws_send_timeout``; how many were."""
        closed = 0
        for session in self:
            try:
                closed += session.close_if_stalled()
            except Exception:  # housekeeping: one odd session must not stop the others
                log.exception("checking %r for a stalled write failed", session.conn)
        return closed

    def start(self) -> None:
        """Start the sweeping task."""
        if self._task is None:
            self._task = asyncio.create_task(self._run(), name="chat-stall-sweep")

    async def stop(self) -> None:
        """Stop the sweeping task."""
        await cancel_and_wait(self._task)
        self._task = None

    async def _run(self) -> None:
        while True:
            await asyncio.sleep(self.period)
            try:
                self.sweep()
            except Exception:  # never let the guard die: log, and sweep again next period
                log.exception("the stall sweep failed")


__all__ = ["CATCH_UP", "ChatSession", "StallSweep"]
