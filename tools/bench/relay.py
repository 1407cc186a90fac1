"""The logic both bare relays share: no auth, no storage, the same frames as the real server.

A relay numbers each ``send`` and answers it with an ``ack`` to the sender and a ``message`` to
every socket of the recipient, through a bounded queue per socket (a full queue closes that
socket with 1013, as the real hub does). ``sync`` answers ``synced`` at once (a relay keeps no
history) and ``ping`` answers ``pong``. Frames are parsed with ``json`` and built as compact
text, as the real server does. This is the ceiling for a Python server on the same stack.
"""

from __future__ import annotations

import itertools
import json
import time
from collections.abc import Callable
from json.encoder import encode_basestring_ascii as quote
from typing import Any

QUEUE_FRAMES = 512
_COMPACT = json.JSONEncoder(separators=(",", ":"), sort_keys=True)


class Relay:
    """Who is connected, and what to do with each frame received."""

    def __init__(self) -> None:
        self.by_user: dict[str, set[Callable[[str], bool]]] = {}
        self.seq = itertools.count(1)

    def join(self, user: str, deliver: Callable[[str], bool]) -> None:
        self.by_user.setdefault(user, set()).add(deliver)

    def leave(self, user: str, deliver: Callable[[str], bool]) -> None:
        group = self.by_user.get(user)
        if group is not None:
            group.discard(deliver)
            if not group:
                del self.by_user[user]

    def handle(self, user: str, text: str | bytes, reply: Callable[[str], bool]) -> None:
        """React to one received frame."""
        try:
            frame: dict[str, Any] = json.loads(text)
            kind = frame["type"]
        except (ValueError, KeyError, TypeError):
            reply('{"type":"error","code":"bad_json","message":"bad frame"}')
            return
        if kind == "send":
            seq = next(self.seq)
            ts = time.time_ns() // 1_000_000
            message_id, to = quote(frame["id"]), frame["to"]
            reply(f'{{"type":"ack","id":{message_id},"seq":{seq},"ts":{ts}}}')
            text = (
                f'{{"type":"message","seq":{seq},"id":{message_id},"from":{quote(user)},'
                f'"to":{quote(to)},"ts":{ts},"envelope":{_COMPACT.encode(frame["envelope"])}}}'
            )
            for deliver in tuple(self.by_user.get(to, ())):
                deliver(text)
        elif kind == "sync":
            reply(f'{{"type":"synced","seq":{frame.get("after", 0)}}}')
        elif kind == "ping":
            reply('{"type":"pong"}')
