"""Nodes' shared limits over a real Redis, and a Redis of a test's own to stop and start again."""

from __future__ import annotations

import signal
import subprocess
import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

from redis.asyncio import Redis

from securechat.cluster.limits import SharedLimits
from securechat.cluster.redis import RedisLink
from securechat.config import Config
from securechat.runtime import WALL_CLOCK, Clock
from tests.engines import RedisEngine

# Longer than the server's own: under `make test` (coverage, browsers, two cores) an answer can
# take longer than 0.25 s, and a slow answer taken for an outage would count an attempt locally,
# which is the fallback these tests are not about.
LINK_TIMEOUT = 2.0


@asynccontextmanager
async def node_limits(
    url: str, config: Config, clock: Clock = WALL_CLOCK
) -> AsyncIterator[SharedLimits]:
    """One node's shared limits (its own link and node id, as a separate process would have)."""
    limits = SharedLimits(RedisLink(url, timeout=LINK_TIMEOUT), config, clock)
    try:
        yield limits
    finally:
        await limits.stop()
        await limits.link.close()


@asynccontextmanager
async def redis_client(url: str, *, fresh: bool = True) -> AsyncIterator[Redis]:
    """A plain client, to look at what the limits left in Redis; the database emptied first
    when ``fresh``."""
    client: Redis = Redis.from_url(url, decode_responses=True)
    if fresh:
        await client.flushdb()
    try:
        yield client
    finally:
        await client.aclose()


def kill(engine: RedisEngine) -> None:
    """SIGKILL the server, leaving its directory (and the socket's path) for :func:`revive`."""
    engine.process.kill()
    engine.process.wait()
    engine.socket_path.unlink(missing_ok=True)


def revive(engine: RedisEngine) -> None:
    """Start the server again as it was started, on the same socket, empty."""
    engine.process = subprocess.Popen(
        engine.process.args, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL
    )
    deadline = time.monotonic() + 30
    while not engine.ping():
        assert time.monotonic() < deadline, "redis-server did not come back"
        time.sleep(0.02)


def pause(engine: RedisEngine) -> None:
    """Stop the server answering without closing its sockets (calls time out)."""
    engine.process.send_signal(signal.SIGSTOP)


def resume(engine: RedisEngine) -> None:
    """Let a paused server answer again."""
    engine.process.send_signal(signal.SIGCONT)
