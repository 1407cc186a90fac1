"""The cluster's broker: frames and control orders relayed between nodes by Redis pub/sub.

Channels (one pub/sub connection per node, owned by a supervisor task):

- ``securechat:u:<username>`` - frames for that user's sockets. A node subscribes while it
  holds at least one socket of the user (the hub's presence listener) and unsubscribes when
  the last goes.
- ``securechat:control`` - every node: "close this session's sockets" (logout, revocation;
  1008 ``session ended``), "close this user's sockets", and "check these users' sockets
  against the database" (frames a node could not publish).
- ``securechat:canary:<node id>`` - this node only: the health check's round trip.

Envelope of a user frame: ``<origin node id>\\n<seq or empty>\\n<prev or empty>\\n<frame
text>`` (cheaper than a JSON wrapper around a JSON frame). Control messages are JSON
``{"o": node, "op": ..., "id": ...}`` (a resync order: ``{"o", "op": "resync", "users": [...]
or null for all}``).

No double delivery: ``publish`` puts the frame on this node's sockets at once (skipping
``except_conn``, which is always local) and queues it for Redis; every node drops what its own
id sent. A positioned frame (``delivery.Sequenced``) keeps its seq and prev across, so the
receiving socket de-duplicates it against a sync exactly as a local one, and sees when it
overtook a frame another node published before it (it then catches up from the database:
``ChatSession.forward``).

Redis is never awaited on the send path: one publisher task drains an outbox bounded in
frames and bytes (``broker_outbox_max``, ``broker_outbox_max_bytes``) in pipelines bounded the
same way (``broker_pipeline_max``, ``broker_pipeline_max_bytes``: one pipeline stays well inside
the link's call timeout), in order. When Redis is down or slower than the chat, frames are
dropped and counted (pub/sub loses messages by design), and the users they were for are
remembered: once Redis answers again, a resync order names them (or, past
``broker_control_retry_max`` users, everyone) and every node catches those users' sockets up
from the database (chat/resync.py). A node whose own pub/sub connection was lost catches all
its sockets up when it comes back, and every few seconds some anyway.

A control order Redis did not take is kept (the newest ``broker_control_retry_max``) and sent
again once the link's rest is over and Redis answers; one lost on the way to a node whose
subscription was down is made up for by that node's session check (chat/cluster.SessionCheck),
on reconnect and every ``session_check_interval`` seconds.
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import json
import logging
import secrets
from collections.abc import Callable, Collection
from functools import partial
from typing import Any, Final

from redis.asyncio.client import PubSub
from redis.exceptions import RedisError

from securechat.chat.delivery import Sequenced
from securechat.chat.hub import Connection, Hub
from securechat.chat.protocol import PresenceStatus
from securechat.cluster.redis import RedisDown, RedisLink, as_text, stop_if_cancelled
from securechat.config import Config
from securechat.errors import Close
from securechat.runtime import cancel_and_wait

log = logging.getLogger(__name__)

USER_PREFIX: Final = "securechat:u:"
CONTROL_CHANNEL: Final = "securechat:control"
CANARY_PREFIX: Final = "securechat:canary:"


def encode_frame(node_id: str, text: str) -> str:
    """The envelope of a user frame (module docstring)."""
    seq, prev = "", ""
    if isinstance(text, Sequenced):
        seq, prev = str(text.seq), "" if text.prev is None else str(text.prev)
    return f"{node_id}\n{seq}\n{prev}\n{text}"


def decode_frame(data: str) -> tuple[str, str]:
    """(origin node id, the frame as the hub takes it: Sequenced when it had a position)."""
    origin, seq, prev, text = data.split("\n", 3)
    if not seq:
        return origin, text
    return origin, Sequenced(text, int(seq), int(prev) if prev else None)


class RedisBroker:
    """Publishes to every node through Redis; delivers what the other nodes publish."""

    def __init__(
        self,
        hub: Hub,
        link: RedisLink,
        node_id: str,
        config: Config,
        *,
        on_reconnect: Callable[[], None] = lambda: None,
        on_subscribed: Callable[[str], None] = lambda user: None,
        on_resync: Callable[[Collection[str] | None], None] = lambda users: None,
    ) -> None:
        """``on_resync`` gets the users another node could not publish to (None: all)."""
        self.hub = hub
        self.link = link
        self.node_id = node_id
        self.config = config
        self.canary_channel = CANARY_PREFIX + node_id
        self._on_reconnect = on_reconnect
        self._on_subscribed = on_subscribed
        self._on_resync = on_resync
        self._outbox: collections.deque[tuple[str, str]] = collections.deque()
        self._outbox_bytes = 0
        self._outbox_ready = asyncio.Event()
        # Control orders Redis did not take, oldest first, to send again when it answers.
        self._orders: collections.deque[str] = collections.deque()
        # Users some of whose frames were dropped since the last resync order went out.
        self._lost: set[str] = set()
        self._lost_all = False
        self._wanted_changed = asyncio.Event()
        self._subscribed: set[str] = set()  # users whose channel was asked for
        self._listening: set[str] = set()  # users whose subscription Redis confirmed
        self._canaries: dict[str, asyncio.Future[None]] = {}
        self._heard = 0.0
        self._tasks: list[asyncio.Task[None]] = []
        self.connected = False
        self.published = 0
        self.dropped = 0
        self.orders_resent = 0
        self.orders_dropped = 0
        self.resync_orders = 0
        self.received = 0
        self.reconnects = 0
        hub.add_presence_listener(self._presence_changed)

    # The Broker protocol ------------------------------------------------------------------

    async def publish(self, user: str, text: str, *, except_conn: Connection | None = None) -> None:
        """Deliver to this node's sockets of ``user`` now, and to the other nodes' via Redis."""
        self.hub.send_to_user(user, text, except_conn=except_conn)
        self._queue(USER_PREFIX + user, encode_frame(self.node_id, text))

    # Control ------------------------------------------------------------------------------

    async def end_session(self, session_id: str) -> None:
        """Close that session's sockets on every node (1008, session ended)."""
        self.hub.close_session(session_id, Close.SESSION_ENDED.code, Close.SESSION_ENDED.reason)
        await self._control("end_session", session_id)

    async def close_user(self, user: str, code: int, reason: str) -> None:
        """Close every socket of ``user`` on every node."""
        self.hub.close_user(user, code, reason)
        await self._control("close_user", user, code=code, reason=reason)

    async def _control(self, op: str, target: str, **extra: Any) -> None:
        message = json.dumps({"o": self.node_id, "op": op, "id": target, **extra})
        try:
            await self._publish_control(message)
        except RedisDown:
            # Sent again once Redis answers (the publisher's next round after the link's rest).
            log.warning("control %s could not reach the other nodes yet: Redis is down", op)
            self._keep_order(message)

    def _keep_order(self, message: str) -> None:
        if len(self._orders) >= self.config.broker_control_retry_max:
            self._orders.popleft()  # the session check makes up for the oldest
            self.orders_dropped += 1
        self._orders.append(message)
        self._outbox_ready.set()

    async def _publish_control(self, message: str) -> None:
        await self.link.call(lambda: self.link.client.publish(CONTROL_CHANNEL, message), "control")

    def orders_waiting(self) -> int:
        """Control orders kept until Redis answers again."""
        return len(self._orders)

    # Health -------------------------------------------------------------------------------

    async def canary(self, wait: float) -> float | None:
        """Seconds a message took to come back to this node through Redis; None if it did
        not within ``wait`` seconds (pub/sub is broken, whatever PING says)."""
        nonce = secrets.token_hex(8)
        arrived: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self._canaries[nonce] = arrived
        loop = asyncio.get_running_loop()
        began = loop.time()
        try:
            async with asyncio.timeout(wait):
                await self.link.client.publish(self.canary_channel, nonce)
                await arrived
        except (TimeoutError, RedisError, OSError):
            return None
        finally:
            self._canaries.pop(nonce, None)
        return loop.time() - began

    def outbox(self) -> int:
        """Frames waiting to be published."""
        return len(self._outbox)

    # Lifecycle ----------------------------------------------------------------------------

    def start(self) -> None:
        """Start the publisher and the subscriber."""
        if not self._tasks:
            self._tasks = [
                asyncio.create_task(self._publish_loop(), name="broker-publish"),
                asyncio.create_task(self._supervise(), name="broker-subscribe"),
            ]

    async def stop(self) -> None:
        """Stop both; frames still in the outbox are dropped (the database has them)."""
        for task in self._tasks:
            await cancel_and_wait(task)
        self._tasks = []
        self.connected = False

    # Publishing ---------------------------------------------------------------------------

    def _queue(self, channel: str, data: str) -> None:
        size = len(channel) + len(data)
        if (
            len(self._outbox) >= self.config.broker_outbox_max
            or self._outbox_bytes + size > self.config.broker_outbox_max_bytes
        ):
            self._dropped([(channel, data)])  # Redis is slower than the chat
            return
        self._outbox.append((channel, data))
        self._outbox_bytes += size
        self._outbox_ready.set()

    def _dropped(self, frames: list[tuple[str, str]]) -> None:
        """Count frames that will not be published, and remember whom they were for."""
        self.dropped += len(frames)
        for channel, _ in frames:
            if len(self._lost) >= self.config.broker_control_retry_max:
                self._lost_all = True
                break
            self._lost.add(channel.removeprefix(USER_PREFIX))
        self._outbox_ready.set()  # the resync order waits for Redis' next answer

    def _next_batch(self) -> list[tuple[str, str]]:
        """The frames of one pipeline: at least one, then up to the frame and byte bounds."""
        batch: list[tuple[str, str]] = []
        size = 0
        while self._outbox and len(batch) < self.config.broker_pipeline_max:
            channel, data = self._outbox[0]
            frame_size = len(channel) + len(data)
            if batch and size + frame_size > self.config.broker_pipeline_max_bytes:
                break
            batch.append(self._outbox.popleft())
            self._outbox_bytes -= frame_size
            size += frame_size
        return batch

    async def _publish_loop(self) -> None:
        while True:
            await self._next_round()
            await self._send_orders()
            while self._outbox:
                batch = self._next_batch()
                try:
                    await self.link.call(partial(self._publish_batch, batch), "publish")
                    self.published += len(batch)
                except RedisDown:
                    self._dropped(batch)
            stop_if_cancelled()

    async def _next_round(self) -> None:
        """Wait for frames to publish or, while orders wait for Redis, for its rest to end."""
        if self._orders or self._lost or self._lost_all:
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(self.link.retry_interval):
                    await self._outbox_ready.wait()
        else:
            await self._outbox_ready.wait()
        self._outbox_ready.clear()

    async def _send_orders(self) -> None:
        """Send the kept control orders, oldest first, then a resync order for the users whose
        frames were dropped; whatever Redis does not take waits for the next round."""
        while self._orders:
            try:
                await self._publish_control(self._orders[0])
            except RedisDown:
                return
            self._orders.popleft()
            self.orders_resent += 1
        if not (self._lost or self._lost_all):
            return
        lost, everyone = self._lost, self._lost_all
        self._lost, self._lost_all = set(), False
        users = None if everyone else sorted(lost)
        order = json.dumps({"o": self.node_id, "op": "resync", "users": users})
        try:
            await self._publish_control(order)
        except RedisDown:
            self._lost |= lost
            self._lost_all = self._lost_all or everyone
            return
        self.resync_orders += 1

    async def _publish_batch(self, batch: list[tuple[str, str]]) -> Any:
        async with self.link.client.pipeline(transaction=False) as pipe:
            for channel, data in batch:
                pipe.publish(channel, data)
            return await pipe.execute()

    # Subscribing --------------------------------------------------------------------------

    def _presence_changed(self, user: str, status: PresenceStatus) -> None:
        self._wanted_changed.set()  # the reconciler subscribes or unsubscribes

    async def _supervise(self) -> None:
        """Keep one pub/sub connection; after a loss, connect again and have every local
        socket checked against the database."""
        lost = False
        while True:
            pubsub = self.link.client.pubsub()
            try:
                await pubsub.subscribe(CONTROL_CHANNEL, self.canary_channel)
                self._subscribed, self._listening = set(), set()
                self._heard = asyncio.get_running_loop().time()
                self.connected = True
                if lost:
                    self.reconnects += 1
                    log.warning("Redis pub/sub is back; checking every socket")
                    self._on_reconnect()
                lost = False
                await self._serve(pubsub)
            except (RedisError, OSError, TimeoutError, ConnectionError) as error:
                if not lost:
                    log.warning("Redis pub/sub lost (%r); delivering on this node only", error)
                lost = True
                self.connected = False
            finally:
                # The reader is stopped: close the socket for good (aclose alone does not wait
                # for it, and a connection Redis killed would be left to the collector).
                with contextlib.suppress(Exception):
                    if pubsub.connection is not None:
                        await pubsub.connection.disconnect()
                with contextlib.suppress(Exception):
                    await pubsub.aclose()  # type: ignore[no-untyped-call]
            await asyncio.sleep(self.config.broker_reconnect_delay)

    async def _serve(self, pubsub: PubSub) -> None:
        tasks = [
            asyncio.create_task(self._read(pubsub), name="broker-read"),
            asyncio.create_task(self._reconcile(pubsub), name="broker-reconcile"),
        ]
        try:
            done, _ = await asyncio.wait(tasks, return_when=asyncio.FIRST_COMPLETED)
            for task in done:
                task.result()
        finally:
            for task in tasks:
                task.cancel()
            # Wait for both and take what each ended with: the first failure is raised above,
            # and the other's must not be left unretrieved for asyncio to log when collected.
            await asyncio.gather(*tasks, return_exceptions=True)

    async def _reconcile(self, pubsub: PubSub) -> None:
        """Subscribe to the channels of the users with a local socket, and only those."""
        self._wanted_changed.set()
        while True:
            await self._wanted_changed.wait()
            self._wanted_changed.clear()
            wanted = set(self.hub.online_users())
            new, gone = wanted - self._subscribed, self._subscribed - wanted
            self._subscribed = wanted
            if new:
                await pubsub.subscribe(*(USER_PREFIX + user for user in new))
            if gone:
                await pubsub.unsubscribe(*(USER_PREFIX + user for user in gone))

    async def _read(self, pubsub: PubSub) -> None:
        """Hand what arrives to the hub; PING when quiet, and give the connection up when it
        stays silent (a peer gone without closing it)."""
        loop = asyncio.get_running_loop()
        keepalive = self.config.broker_keepalive
        while True:
            message = await pubsub.get_message(timeout=keepalive)
            if message is None:
                if loop.time() - self._heard > 3 * keepalive:
                    raise ConnectionError("the pub/sub connection went silent")
                await pubsub.ping()
                continue
            self._heard = loop.time()
            try:
                self._handle(message)
            except Exception:  # one odd message must not end the subscription
                log.exception("a pub/sub message could not be handled")

    def _handle(self, message: dict[str, Any]) -> None:
        kind = message["type"]
        channel = as_text(message.get("channel") or b"")
        if kind == "subscribe" and channel.startswith(USER_PREFIX):
            # From here on the channel hears every publish; earlier ones the database has.
            self._listening.add(channel.removeprefix(USER_PREFIX))
            self._on_subscribed(channel.removeprefix(USER_PREFIX))
        elif kind == "unsubscribe":
            self._listening.discard(channel.removeprefix(USER_PREFIX))
        if kind != "message":
            return
        data = as_text(message["data"])
        if channel.startswith(USER_PREFIX):
            origin, text = decode_frame(data)
            if origin != self.node_id:
                self.received += 1
                self.hub.send_to_user(channel.removeprefix(USER_PREFIX), text)
        elif channel == CONTROL_CHANNEL:
            self._handle_control(json.loads(data))
        elif channel == self.canary_channel:
            arrived = self._canaries.get(data)
            if arrived is not None and not arrived.done():
                arrived.set_result(None)

    def _handle_control(self, order: dict[str, Any]) -> None:
        if order.get("o") == self.node_id:
            return  # done locally when it was sent
        if order.get("op") == "end_session":
            self.hub.close_session(
                str(order["id"]), Close.SESSION_ENDED.code, Close.SESSION_ENDED.reason
            )
        elif order.get("op") == "close_user":
            self.hub.close_user(str(order["id"]), int(order["code"]), str(order["reason"]))
        elif order.get("op") == "resync":
            users = order.get("users")
            self._on_resync(None if users is None else [str(user) for user in users])

    def subscribed_users(self) -> frozenset[str]:
        """The users whose channel this node listens on (Redis confirmed the subscription)."""
        return frozenset(self._listening)


__all__ = ["CONTROL_CHANNEL", "RedisBroker", "decode_frame", "encode_frame"]
