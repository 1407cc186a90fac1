"""A socket the client has gone silent on (it vanished without a TCP close) is closed after
``ws_idle_timeout`` on a real server, and its user goes offline for their contacts."""

from __future__ import annotations

import asyncio
from pathlib import Path

from securechat import e2e
from securechat.client import SecureChatClient
from securechat.runtime import cancel_and_wait
from tests.chat.test_chat import closed_with
from tests.conftest import FAST_ITERATIONS, fast_config
from tests.livesrv import LiveServer


async def test_a_silent_socket_is_closed_and_its_user_goes_offline(
    tmp_path: Path, identities: list[e2e.Identity]
) -> None:
    """Bob says nothing for the idle window: his socket is closed with 1013 "nothing heard" and
    alice, who pings within the window, is told he is offline and stays connected."""
    config = fast_config(tmp_path / "data", ws_idle_timeout=2.0)
    with LiveServer(config).start() as server:
        async with (
            SecureChatClient(server.url, min_iterations=FAST_ITERATIONS) as alice,
            SecureChatClient(server.url, min_iterations=FAST_ITERATIONS) as bob,
        ):
            for client, name, identity in (
                (alice, "alice", identities[0]),
                (bob, "bob", identities[1]),
            ):
                await client.register(
                    name, "correct horse battery", iterations=FAST_ITERATIONS, identity=identity
                )
                await client.login(name, "correct horse battery")
            watcher = await alice.connect()

            async def keep_alice_heard() -> None:
                while True:
                    await watcher.send_frame({"type": "ping"})
                    await asyncio.sleep(0.2)

            pinger = asyncio.create_task(keep_alice_heard())
            try:
                first = await bob.connect()
                await first.send_message("alice", "hello")  # a conversation: presence is shared
                await watcher.send_message("bob", "hi")
                await first.close()
                silent = await bob.connect()
                await watcher.wait_for("presence", user="bob", status="online")
                assert await closed_with(silent) == (1013, "nothing heard; reconnect and sync")
                await watcher.wait_for("presence", user="bob", status="offline")
            finally:
                await cancel_and_wait(pinger)
            assert (await watcher.ping())["type"] == "pong"  # alice, heard from, is still here
            await watcher.close()


async def test_the_python_clients_keepalive_holds_a_quiet_socket_open(
    tmp_path: Path, identities: list[e2e.Identity]
) -> None:
    """A bot that only listens stays connected past ws_idle_timeout: its client pings after
    ``keepalive`` seconds of silence and drops the pongs, so reading still sees only the
    frames the server meant for it; the same client with no keepalive is closed with 1013."""
    config = fast_config(tmp_path / "data", ws_idle_timeout=1.0)
    with LiveServer(config).start() as server:
        async with (
            SecureChatClient(server.url, min_iterations=FAST_ITERATIONS) as alice,
            SecureChatClient(server.url, min_iterations=FAST_ITERATIONS) as bob,
        ):
            for client, name, identity in (
                (alice, "alice", identities[0]),
                (bob, "bob", identities[1]),
            ):
                await client.register(
                    name, "correct horse battery", iterations=FAST_ITERATIONS, identity=identity
                )
                await client.login(name, "correct horse battery")
            quiet = await bob.connect(keepalive=0.3)
            unkept = await bob.connect(keepalive=None)
            assert await closed_with(unkept) == (1013, "nothing heard; reconnect and sync")
            await asyncio.sleep(1.5)  # past the idle window again, for the kept socket
            sender = await alice.connect(keepalive=None)
            await sender.send_message("bob", "still there?")
            frame = await quiet.receive()  # no keepalive pong comes first
            assert frame["type"] == "message"
            assert (await quiet.open(frame)).text == "still there?"
            assert (await quiet.ping())["type"] == "pong"  # the caller's own ping is answered
            await quiet.close()
            await sender.close()
