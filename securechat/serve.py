"""``python -m securechat serve``: the app on Hypercorn, as ``make run`` starts it, with a quiet
shutdown.

Hypercorn's own command line stops on Ctrl-C (or SIGTERM) by closing its listeners and waiting
up to ``graceful_timeout`` (hypercorn.toml: 10 s) for the connections to end, and only then runs
the app's shutdown, which is where the chat closes its WebSockets. An open chat socket never
ends by itself, so every browser left connected held the server for the whole grace and was
then cancelled: the browser saw 1011 instead of "server shutdown", and Python 3.11's asyncio
logged a CancelledError traceback per connection (its start_server callback calls
``task.exception()`` on a cancelled task: CPython gh-113538, fixed in 3.12.2).

Here the signal first closes every chat socket with 1001 ``server shutdown`` (what the page
reconnects after), so the grace ends as soon as the browsers answer; a connection that still
has to be cancelled after it is a silent, expected end, and the one log record asyncio 3.11
makes of it (that bug's, and only it) is dropped. A second Ctrl-C stops at once.
"""

from __future__ import annotations

import asyncio
import signal
import warnings
from pathlib import Path
from typing import Any

from hypercorn.asyncio import serve as hypercorn_serve
from hypercorn.config import Config as HypercornConfig
from quart import Quart

from securechat.errors import Close

_SIGNALS = (signal.SIGINT, signal.SIGTERM)
# How asyncio's Handle names that callback in the record it logs (asyncio/events.py).
_STREAM_CALLBACK = "Exception in callback StreamReaderProtocol.connection_made.<locals>.callback"


def serve(app: Quart, hypercorn_toml: Path, bind: str) -> None:
    """Serve ``app`` on ``bind`` with the settings of ``hypercorn_toml`` until SIGINT or SIGTERM."""
    # quart-auth warns at every login over plain HTTP that the Secure session cookie "will be
    # ignored". Over loopback it is not: browsers treat http://127.0.0.1 and localhost as
    # secure contexts and keep Secure cookies there (W3C Secure Contexts, "potentially
    # trustworthy"), which is the only plain HTTP this server answers unless a public origin
    # says otherwise, and `init` says at start-up when one does (securechat/__main__.py).
    warnings.filterwarnings(
        "ignore", "Secure cookies will be ignored on insecure requests", UserWarning, "quart_auth"
    )
    config = HypercornConfig.from_toml(hypercorn_toml)
    config.bind = [bind]
    asyncio.run(_serve(app, config))


async def _serve(app: Quart, config: HypercornConfig) -> None:
    loop = asyncio.get_running_loop()
    loop.set_exception_handler(_without_cancelled_connections)
    stopping = asyncio.Event()

    def stop() -> None:
        stopping.set()
        for number in _SIGNALS:  # a second signal acts as it would without us: at once
            loop.remove_signal_handler(number)

    for number in _SIGNALS:
        loop.add_signal_handler(number, stop)

    async def shutdown_trigger() -> None:
        await stopping.wait()
        closed = close_chat_sockets(app)
        await config.log.info(
            f"Shutting down: {closed} chat socket(s) closed; waiting up to"
            f" {config.graceful_timeout:g} s for connections to end (Ctrl-C again: at once)"
        )

    await hypercorn_serve(app, config, shutdown_trigger=shutdown_trigger)


def close_chat_sockets(app: Quart) -> int:
    """Close every chat socket of ``app`` with 1001 "server shutdown"; how many."""
    hub = app.extensions["securechat"].chat.hub
    closed: int = hub.close_all(Close.SERVER_SHUTDOWN.code, Close.SERVER_SHUTDOWN.reason)
    return closed


def _without_cancelled_connections(
    loop: asyncio.AbstractEventLoop, context: dict[str, Any]
) -> None:
    """The loop's exception handler: everything as usual but gh-113538's record, a connection
    task cancelled at shutdown reported as an error by asyncio's own stream callback."""
    cancelled = isinstance(context.get("exception"), asyncio.CancelledError)
    if cancelled and str(context.get("message", "")).startswith(_STREAM_CALLBACK):
        return
    loop.default_exception_handler(context)


__all__ = ["close_chat_sockets", "serve"]
