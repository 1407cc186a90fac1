"""Helpers shared by the chat tests: servers with their own settings, accounts, raw sockets."""

from __future__ import annotations

import asyncio
import itertools
import json
import uuid
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any, Protocol

import pytest
from websockets.asyncio.client import ClientConnection, connect
from websockets.typing import Origin

from securechat import e2e
from securechat.client import COOKIE_NAME, SecureChatClient
from securechat.runtime import WALL_CLOCK, Clock
from tests.conftest import FAST_ITERATIONS, fast_config
from tests.livesrv import LiveServer

PASSWORD = "correct horse battery"
_names = itertools.count(1)
# A well-formed envelope for tests about transport, not crypto (the server checks only shape).
FAKE_ENVELOPE: dict[str, Any] = {
    "v": 1,
    "iv": "A" * 16,
    "ct": "B" * 24,
    "rk": "C" * 344,
    "sk": "D" * 344,
    "sig": "E" * 85 + "A==",
}


def unique(prefix: str) -> str:
    """A username no other test on the same server uses."""
    return f"{prefix}{next(_names)}"


def send_text(to: str, *, frame_id: str | None = None, envelope: Any = None) -> str:
    """A ``send`` frame with the fake envelope (or the one given)."""
    return json.dumps(
        {
            "type": "send",
            "id": frame_id or str(uuid.uuid4()),
            "to": to,
            "envelope": FAKE_ENVELOPE if envelope is None else envelope,
        }
    )


def raw_socket(
    base_url: str,
    *,
    cookie: str | None,
    origin: str | None = "same",
    path: str = "/ws",
    **options: Any,
) -> connect:
    """``websockets.connect`` to ``path`` with the given cookie and Origin ("same": the
    server's own)."""
    headers = {"Cookie": f"{COOKIE_NAME}={cookie}"} if cookie else {}
    return connect(
        "ws" + base_url.removeprefix("http") + path.removeprefix(base_url),
        origin=Origin(base_url if origin == "same" else origin) if origin else None,
        additional_headers=headers,
        proxy=None,
        open_timeout=10,
        **options,
    )


async def next_frame(socket: ClientConnection, wait: float = 10.0) -> dict[str, Any]:
    """The next text frame from a raw socket, parsed."""
    async with asyncio.timeout(wait):
        frame: dict[str, Any] = json.loads(await socket.recv())
    return frame


class Accounts:
    """Signs up users on one server; closes their clients at the end."""

    def __init__(self, base_url: str, identities: list[e2e.Identity]) -> None:
        self.base_url = base_url
        self.identities = identities
        self.clients: list[SecureChatClient] = []

    async def sign_up(self, prefix: str = "user") -> SecureChatClient:
        """A new account with a pooled identity, logged in."""
        name = unique(prefix)
        client = await self.login_again(name, register=True)
        return client

    async def login_again(self, name: str, *, register: bool = False) -> SecureChatClient:
        """Another client (a new session) for ``name``."""
        client = SecureChatClient(self.base_url, min_iterations=FAST_ITERATIONS)
        self.clients.append(client)
        if register:
            identity = self.identities[len(self.clients) % len(self.identities)]
            await client.register(name, PASSWORD, iterations=FAST_ITERATIONS, identity=identity)
        await client.login(name, PASSWORD)
        return client

    async def close(self) -> None:
        for client in self.clients:
            await client.close()


class ServerWith(Protocol):
    """The fixture `server_with`: a server on ``clock`` with some settings (Config fields)
    changed."""

    def __call__(
        self, *, clock: Clock = WALL_CLOCK, **overrides: object
    ) -> tuple[LiveServer, Accounts]: ...


@pytest.fixture(name="shared_server", scope="module")
def _shared_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LiveServer]:
    """One server for a whole module (each test uses its own users): fast and realistic."""
    server = LiveServer(fast_config(tmp_path_factory.mktemp("chat") / "data")).start()
    yield server
    server.stop()


@pytest.fixture(name="accounts")
async def _accounts(
    shared_server: LiveServer, identities: list[e2e.Identity]
) -> AsyncIterator[Accounts]:
    accounts = Accounts(shared_server.url, identities)
    yield accounts
    await accounts.close()


@pytest.fixture(name="server_with")
async def _server_with(tmp_path: Path, identities: list[e2e.Identity]) -> AsyncIterator[ServerWith]:
    """Start a server with some settings changed; returns it and an Accounts for it."""
    started: list[tuple[LiveServer, Accounts]] = []

    def start(*, clock: Clock = WALL_CLOCK, **overrides: object) -> tuple[LiveServer, Accounts]:
        config = fast_config(tmp_path / f"data{len(started)}", **overrides)
        server = LiveServer(config, clock=clock).start()
        started.append((server, Accounts(server.url, identities)))
        return started[-1]

    yield start
    for server, accounts in started:
        await accounts.close()
        server.stop()
