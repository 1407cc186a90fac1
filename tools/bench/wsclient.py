"""How the load generator opens a chat socket: through ``securechat.client``, for every server.

Our server authenticates the handshake with the session cookie and checks ``Origin``: the
socket is opened by ``SecureChatClient.connect``, exactly as the tests and bots do (it offers
permessage-deflate, as browsers do). For the capacity scenario without compression, and for the
bare relays (which take the user name from the query string), the socket is opened here with
the same options and handed to the same ``ChatConnection``. Everything after the handshake (the
frames, their sizes, the parsing) is the client's code for all of them.
"""

from __future__ import annotations

from dataclasses import dataclass
from urllib.parse import quote

from websockets.asyncio.client import connect
from websockets.typing import Origin

from securechat.client import CHAT_MAX_FRAME, COOKIE_NAME, ChatConnection, SecureChatClient

OPEN_TIMEOUT = 60.0
# Reads wait this long before the client's own timeout fires (idle sockets wait a long time).
READ_WAIT = 3600.0


@dataclass(frozen=True)
class Endpoint:
    """Where the chat socket is and how to authenticate to it."""

    base_url: str  # http://127.0.0.1:port
    auth: str  # "cookie" (our server) or "query" (the relays)
    compression: bool = True  # offer permessage-deflate, as browsers always do
    # More nodes of the same cluster (http://127.0.0.1:port each). Users are dealt over
    # base_url and these in turn, so the two users of a pair land on different nodes.
    other_nodes: tuple[str, ...] = ()

    @property
    def nodes(self) -> tuple[str, ...]:
        """Every node's base URL, base_url first."""
        return (self.base_url, *self.other_nodes)


async def open_chat(
    client: SecureChatClient, endpoint: Endpoint, user: str, cookie: str
) -> ChatConnection:
    """An open chat socket as ``user`` (no sync yet) on ``client``'s node; raises what
    ``websockets`` raises."""
    if endpoint.auth == "cookie" and endpoint.compression:
        # No await between setting the cookie and connect() reading it: safe to share one
        # client (and its HTTP pool) among thousands of sockets.
        client.session_cookie = cookie
        chat = await client.connect(after=None, wait=OPEN_TIMEOUT)
        client.chats.clear()  # the worker keeps its sockets itself
    else:
        url = "ws" + client.base_url.removeprefix("http") + "/ws"
        headers = {}
        if endpoint.auth == "cookie":
            headers["Cookie"] = f"{COOKIE_NAME}={cookie}"
        else:
            url += "?user=" + quote(user)
        socket = await connect(
            url,
            origin=Origin(client.base_url),
            additional_headers=headers,
            compression="deflate" if endpoint.compression else None,
            max_size=CHAT_MAX_FRAME,
            open_timeout=OPEN_TIMEOUT,
            proxy=None,
        )
        chat = ChatConnection(client, socket, wait=OPEN_TIMEOUT)
    return chat
