"""How the load generator opens a chat socket, for our server and for the relays alike.

Our server authenticates the handshake with the session cookie and checks ``Origin``; the bare
relays take the user name from the query string. Everything after the handshake (the frames,
their sizes, compression) is the same for all of them.
"""

from __future__ import annotations

from dataclasses import dataclass
from urllib.parse import quote

from websockets.asyncio.client import ClientConnection, connect

from securechat.client import COOKIE_NAME

# Frames from the server are small (about 1.3 KiB); sync backlogs come one message per frame.
MAX_FRAME = 1 << 20


@dataclass(frozen=True)
class Endpoint:
    """Where the chat socket is and how to authenticate to it."""

    base_url: str  # http://127.0.0.1:port
    auth: str  # "cookie" (our server) or "query" (the relays)
    compression: bool = True  # browsers always offer permessage-deflate


async def open_socket(
    endpoint: Endpoint, user: str, cookie: str, *, open_timeout: float = 30.0
) -> ClientConnection:
    """An open WebSocket as ``user``; raises what ``websockets`` raises if refused."""
    ws_url = "ws" + endpoint.base_url.removeprefix("http") + "/ws"
    headers = {}
    if endpoint.auth == "cookie":
        headers["Cookie"] = f"{COOKIE_NAME}={cookie}"
    else:
        ws_url += "?user=" + quote(user)
    return await connect(
        ws_url,
        origin=endpoint.base_url,  # type: ignore[arg-type]
        additional_headers=headers,
        compression="deflate" if endpoint.compression else None,
        proxy=None,  # loopback only, whatever the environment says
        open_timeout=open_timeout,
        ping_interval=None,  # the server pings; the client answers
        max_size=MAX_FRAME,
        max_queue=64,
        user_agent_header="securechat-bench",
    )
