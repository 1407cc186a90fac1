"""The client's side of docs/protocol.md "Real-time chat (WebSocket)".

The same frames, cursor and de-duplication rules the page follows, and the same end-to-end
crypto (securechat.e2e). ``SecureChatClient.connect`` (api.py) opens a ``ChatConnection``.
"""

from __future__ import annotations

import asyncio
import json
import time
import uuid
from collections import deque
from collections.abc import Callable, Collection
from typing import TYPE_CHECKING, Any, Literal

from websockets.asyncio.client import ClientConnection
from websockets.exceptions import ConnectionClosed

from securechat import e2e
from securechat.client.keys import KeyDirectoryError, VerifiedKeys

if TYPE_CHECKING:
    # Only for annotations: api.py imports this module, so a runtime import would be a cycle.
    from securechat.client.api import Account, SecureChatClient

# Frames from the server are at most an envelope (56 KiB) and a little JSON around it.
CHAT_MAX_FRAME = 1 << 20

# The frames that carry a position of my stream (``seq``): the cursor moves with them.
POSITIONED_FRAMES = frozenset(
    {"message", "receipt", "ack", "group_message", "group_keys", "group_entry"}
)

# Seconds of silence from the client after which it pings: the server closes a socket it has
# heard nothing from for ws_idle_timeout (90 s by default) with 1013, as it does for a peer
# that vanished. A third of the default keeps a quiet bot's socket open, as the page does.
KEEPALIVE_INTERVAL = 30.0


class ChatClosed(Exception):
    """The chat socket is closed; ``code`` and ``reason`` are the server's (None: no close frame)."""

    def __init__(self, code: int | None, reason: str) -> None:
        super().__init__(f"chat closed: {code} {reason}")
        self.code = code
        self.reason = reason


class ChatError(Exception):
    """The server answered a frame with an ``error`` frame."""

    def __init__(self, frame: dict[str, Any]) -> None:
        super().__init__(f"{frame.get('code')}: {frame.get('message')}")
        self.code = str(frame.get("code"))
        self.frame = frame


class ChatConnection:
    """One chat socket: send frames, read them in order, keep the cursor, open messages.

    Frames read while waiting for something else are kept (``receive`` returns them first), so
    no frame is ever lost to a ``wait_for``. ``cursor`` follows the protocol's rule: it moves
    with a ``synced`` frame and with each ``message``, ``receipt`` and ``ack`` read while
    positions arrive in order: on a socket opened with ``?after=``, or after a ``synced``.
    """

    def __init__(
        self,
        client: SecureChatClient,
        socket: ClientConnection,
        *,
        wait: float,
        keepalive: float | None = KEEPALIVE_INTERVAL,
    ) -> None:
        self.client = client
        self.socket = socket
        # Seconds any one wait for the server may take before TimeoutError.
        self.wait = wait
        self.cursor = 0
        # Whether positions on this socket arrive in order, without gaps (docs/protocol.md).
        self.in_order = False
        # Frames of the last sync, in order; every message seen, by id (de-duplicated).
        self.replayed: list[dict[str, Any]] = []
        self.messages: dict[str, dict[str, Any]] = {}
        self._backlog: deque[dict[str, Any]] = deque()
        self._keys: dict[str, VerifiedKeys] = {}
        # Pongs owed to the keepalive's own pings: read and dropped, never handed out.
        self._keepalive_pongs = 0
        self._last_sent = time.monotonic()
        self._keepalive = (
            None
            if keepalive is None
            else asyncio.create_task(self._keep_alive(keepalive), name="chat-keepalive")
        )

    @property
    def username(self) -> str:
        if self.client.account is None:
            raise RuntimeError("log in first")
        return self.client.account.username

    @property
    def close_code(self) -> int | None:
        """The close code received from the server, once closed."""
        return self.socket.close_code

    async def close(self) -> None:
        """Close the socket (normal closure)."""
        if self._keepalive is not None:
            self._keepalive.cancel()
        await self.socket.close()

    async def _keep_alive(self, interval: float) -> None:
        """Ping whenever nothing was sent for ``interval`` seconds, until the socket closes."""
        try:
            while True:
                await asyncio.sleep(max(0.0, self._last_sent + interval - time.monotonic()))
                if time.monotonic() - self._last_sent >= interval:
                    self._keepalive_pongs += 1
                    await self.send_frame({"type": "ping"})
        except ConnectionClosed:
            return

    # Frames ------------------------------------------------------------------------------

    async def send_frame(self, frame: dict[str, Any]) -> None:
        """Send one frame as compact JSON."""
        self._last_sent = time.monotonic()
        await self.socket.send(json.dumps(frame, separators=(",", ":")))

    async def send_raw(self, data: str | bytes) -> None:
        """Send a text (str) or binary (bytes) frame exactly as given."""
        self._last_sent = time.monotonic()
        await self.socket.send(data)

    async def receive(self, *, wait: float | None = None) -> dict[str, Any]:
        """The next frame, oldest kept first; ChatClosed once the socket is closed."""
        if self._backlog:
            return self._backlog.popleft()
        return await self._read(self.wait if wait is None else wait)

    async def wait_for(
        self, kind: str, *, wait: float | None = None, **fields: Any
    ) -> dict[str, Any]:
        """The first frame of type ``kind`` whose fields equal ``fields``; others are kept."""
        match = {"type": kind, **fields}
        return await self._take(
            lambda frame: all(frame.get(k) == v for k, v in match.items()),
            self.wait if wait is None else wait,
        )

    async def wait_for_any(
        self, kinds: Collection[str], *, wait: float | None = None
    ) -> dict[str, Any]:
        """The first frame whose type is one of ``kinds`` (groups.py reads its frames so);
        others are kept."""
        return await self._take(
            lambda frame: frame.get("type") in kinds, self.wait if wait is None else wait
        )

    async def _take(self, wanted: Callable[[dict[str, Any]], bool], wait: float) -> dict[str, Any]:
        """The first frame ``wanted`` accepts, kept ones first; the others stay kept, in order."""
        for frame in self._backlog:
            if wanted(frame):
                self._backlog.remove(frame)
                return frame
        async with asyncio.timeout(wait):
            while True:
                frame = await self._read(None)
                if wanted(frame):
                    return frame
                self._backlog.append(frame)

    async def _read(self, wait: float | None) -> dict[str, Any]:
        try:
            async with asyncio.timeout(wait):
                while True:
                    frame: dict[str, Any] = json.loads(await self.socket.recv())
                    if frame.get("type") == "pong" and self._keepalive_pongs > 0:
                        self._keepalive_pongs -= 1  # the keepalive's, not the caller's
                        continue
                    break
        except ConnectionClosed as closed:
            rcvd = closed.rcvd
            raise ChatClosed(rcvd.code if rcvd else None, rcvd.reason if rcvd else "") from None
        self._note(frame)
        return frame

    def _note(self, frame: dict[str, Any]) -> None:
        kind = frame.get("type")
        if kind == "synced":
            self.in_order = True
            self.cursor = max(self.cursor, int(frame["seq"]))
        elif kind in POSITIONED_FRAMES and self.in_order:
            self.cursor = max(self.cursor, int(frame["seq"]))
        if kind == "message":
            self.messages.setdefault(frame["id"], frame)

    # The protocol ------------------------------------------------------------------------

    async def sync(self, after: int | None = None) -> list[dict[str, Any]]:
        """Ask for everything after ``after`` (default: the cursor); return the messages and
        receipts until ``synced``. Other frames meanwhile are kept for ``receive``."""
        await self.send_frame({"type": "sync", "after": self.cursor if after is None else after})
        return await self.collect_replay()

    async def collect_replay(self) -> list[dict[str, Any]]:
        """Read a replay up to its ``synced``; keep its messages and receipts in ``replayed``."""
        replayed: list[dict[str, Any]] = []
        async with asyncio.timeout(self.wait):
            while True:
                frame = await self._read(None)
                if frame["type"] == "synced":
                    break
                if frame["type"] in ("message", "receipt"):
                    replayed.append(frame)
                else:
                    self._backlog.append(frame)
        self.replayed = replayed
        return replayed

    async def send_message(
        self, to: str, text: str, *, message_id: str | None = None
    ) -> dict[str, Any]:
        """Encrypt ``text`` for ``to`` (and for my other devices), send it, return the ack.

        Raises ChatError if the server answers with an error frame for this id.
        """
        message_id = message_id or str(uuid.uuid4())
        envelope = await self.seal(to, text, message_id)
        await self.send_frame({"type": "send", "id": message_id, "to": to, "envelope": envelope})
        return await self.wait_ack(message_id)

    async def send_tombstone(self, to: str, deleted_id: str) -> dict[str, Any]:
        """Tell ``to``'s devices (and mine) that my message ``deleted_id`` is taken back: an
        encrypted, signed message whose body names it (after :meth:`delete`); return its ack."""
        message_id = str(uuid.uuid4())
        envelope = await self.seal(to, "", message_id, extra={"delete": deleted_id})
        await self.send_frame({"type": "send", "id": message_id, "to": to, "envelope": envelope})
        return await self.wait_ack(message_id)

    async def seal(
        self, to: str, text: str, message_id: str, *, extra: dict[str, Any] | None = None
    ) -> dict[str, Any]:
        """The envelope of ``text`` (and ``extra`` body fields) from me to ``to``."""
        account = self._account()
        keys = await self.keys(to)
        if not keys.may_send:
            raise KeyDirectoryError("key_changed", f"{to}'s verified keys changed")
        return e2e.encrypt_message(
            message_id=message_id,
            sender=account.username,
            recipient=to,
            text=text,
            written_ms=time.time_ns() // 1_000_000,
            sender_identity=account.identity,
            recipient_enc_spki=keys.enc_public_key,
            extra=extra,
        )

    async def wait_ack(self, message_id: str) -> dict[str, Any]:
        """The ack for ``message_id``; ChatError if an error frame for it comes first."""
        frame = await self._take(
            lambda frame: frame.get("id") == message_id and frame["type"] in ("ack", "error"),
            self.wait,
        )
        return _ack_or_raise(frame)

    async def open(self, frame: dict[str, Any]) -> e2e.Plaintext:
        """Verify and decrypt a ``message`` frame (mine or someone else's)."""
        account = self._account()
        sender = frame["from"]
        mine = sender == account.username
        sign_key = (
            account.identity.sign_public_spki if mine else (await self.keys(sender)).sign_public_key
        )
        return e2e.open_message(
            frame["envelope"],
            message_id=frame["id"],
            sender=sender,
            recipient=frame["to"],
            reader=account.identity,
            sender_sign_spki=sign_key,
            as_sender=mine,
        )

    async def keys(self, username: str) -> VerifiedKeys:
        """A user's keys, verified through the key directory once per connection."""
        if username not in self._keys:
            self._keys[username] = await self.client.fetch_verified_keys(username)
        return self._keys[username]

    async def mark(self, seq: int, status: Literal["delivered", "read"]) -> None:
        """Tell the sender that message ``seq`` was delivered to me or read."""
        await self.send_frame({"type": status, "seq": seq})

    async def delete(self, message_id: str) -> dict[str, Any]:
        """Delete my stored message ``message_id`` from the server (delete for everyone);
        return the ``deleted`` answer. ChatError if an error frame for it comes first.

        The other devices learn of it from an encrypted tombstone, a message of its own whose
        payload names this one (:meth:`send_tombstone`)."""
        await self.send_frame({"type": "delete", "id": message_id})
        frame = await self._take(
            lambda frame: frame.get("id") == message_id and frame["type"] in ("deleted", "error"),
            self.wait,
        )
        return _ack_or_raise(frame)

    async def typing(self, to: str) -> None:
        """Tell ``to`` that I am typing."""
        await self.send_frame({"type": "typing", "to": to})

    async def ping(self) -> dict[str, Any]:
        """Ping the server; return its pong."""
        await self.send_frame({"type": "ping"})
        return await self.wait_for("pong")

    def _account(self) -> Account:
        if self.client.account is None:
            raise RuntimeError("log in first")
        return self.client.account


def _ack_or_raise(frame: dict[str, Any]) -> dict[str, Any]:
    if frame["type"] == "error":
        raise ChatError(frame)
    return frame
