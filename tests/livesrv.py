"""A real SecureChat app on a real Hypercorn port, in a thread of its own, for the tests."""

from __future__ import annotations

import asyncio
import socket
import threading
import time
import urllib.request
from collections.abc import Coroutine
from pathlib import Path
from typing import Any, TypeVar

from hypercorn.asyncio import serve
from hypercorn.config import Config as HypercornConfig

from securechat import create_app
from securechat.config import PROJECT_ROOT, Config
from securechat.runtime import WALL_CLOCK, Clock

T = TypeVar("T")


class LiveServer:
    """Serve ``create_app(config, clock=clock)`` on 127.0.0.1 with the project's hypercorn.toml."""

    def __init__(self, config: Config, *, clock: Clock = WALL_CLOCK) -> None:
        self.config = config
        self.clock = clock
        self.app = create_app(config, clock=clock)
        self._listener = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        self._listener.bind(("127.0.0.1", 0))
        # Listening from here, a request made before Hypercorn accepts waits in the backlog
        # instead of being refused: start() needs no polling interval.
        self._listener.listen()
        self.port = self._listener.getsockname()[1]
        self.url = f"http://127.0.0.1:{self.port}"
        self._loop: asyncio.AbstractEventLoop | None = None
        self._stop: asyncio.Event | None = None
        self._thread = threading.Thread(target=self._run, name=f"live-server-{self.port}")
        self._error: BaseException | None = None

    @property
    def database_path(self) -> Path:
        return self.config.database_path

    def hypercorn_config(self) -> HypercornConfig:
        """The project's hypercorn.toml, bound to our socket, without access logs."""
        hyper = HypercornConfig.from_toml(PROJECT_ROOT / "hypercorn.toml")
        hyper.bind = [f"fd://{self._listener.detach()}"]
        hyper.accesslog = None
        # Hypercorn keeps a closed WebSocket's connection task until its ping loop next wakes
        # (websocket_ping_interval, 20 s), and a graceful shutdown waits for such tasks up to
        # graceful_timeout: with any WebSocket used, stop() took the whole grace (it was 1 s).
        # A test has no request in flight when it stops its server, so a short grace will do.
        hyper.graceful_timeout = 0.05
        return hyper

    def start(self) -> LiveServer:
        self._thread.start()
        self._wait_until_serving()
        return self

    def __enter__(self) -> LiveServer:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.stop()

    def stop(self) -> None:
        if self._loop is not None and self._stop is not None:
            self._loop.call_soon_threadsafe(self._stop.set)
        self._thread.join(timeout=30)
        if self._thread.is_alive():
            raise RuntimeError("live server did not stop")

    def run_in_server_loop(self, coroutine: Coroutine[Any, Any, T], timeout: float = 30) -> T:
        """Run a coroutine in the server's event loop (to reach the app's own objects)."""
        if self._loop is None:
            coroutine.close()  # never awaited: say so quietly, not as a RuntimeWarning
            raise RuntimeError("live server not started: it has no event loop yet")
        return asyncio.run_coroutine_threadsafe(coroutine, self._loop).result(timeout)

    def _run(self) -> None:
        try:
            asyncio.run(self._serve())
        except BaseException as error:
            self._error = error

    async def _serve(self) -> None:
        self._loop = asyncio.get_running_loop()
        self._stop = asyncio.Event()
        await serve(self.app, self.hypercorn_config(), shutdown_trigger=self._stop.wait)

    def _wait_until_serving(self, timeout: float = 20.0) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self._error is not None:
                raise RuntimeError("live server failed to start") from self._error
            try:
                with urllib.request.urlopen(self.url + "/healthz", timeout=1) as response:
                    if response.status == 200:
                        return
            except OSError:
                time.sleep(0.05)
        raise RuntimeError("live server did not start in time")
