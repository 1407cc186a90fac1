"""The node's one link to Redis (``SECURECHAT_REDIS_URL``) and whether Redis answers.

Everything a node shares through Redis (the limits in cluster/limits.py, and the broker,
presence and control channel when they come) goes through one :class:`RedisLink`, so there is
one connection pool, one timeout and one view of Redis' health per process. Every call is
bounded by a short timeout and never retried inside the client: a caller that sees
:class:`RedisDown` does what it does without Redis (the limits fall back to in-process ones),
and after a failure the link is not asked again for ``retry_interval`` seconds, so an outage
costs each request one fast refusal rather than a timeout.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Awaitable, Callable
from typing import Any, Final, TypeVar

from redis.asyncio import Redis
from redis.backoff import NoBackoff
from redis.exceptions import RedisError
from redis.retry import Retry

log = logging.getLogger(__name__)

T = TypeVar("T")

# Seconds one Redis call may take (connecting included) before the caller goes without it.
CALL_TIMEOUT: Final = 0.25
# Seconds after a failure during which calls go without Redis at once; then it is tried again.
RETRY_INTERVAL: Final = 1.0
URL_SCHEMES: Final = ("redis://", "rediss://", "unix://")


class RedisDown(Exception):
    """Redis did not answer in time, or answered with an error: go without it."""


class RedisLink:
    """A ``redis.asyncio.Redis`` client and the state of the link: up, or down since when."""

    def __init__(
        self,
        url: str,
        *,
        timeout: float = CALL_TIMEOUT,
        retry_interval: float = RETRY_INTERVAL,
    ) -> None:
        if not url.startswith(URL_SCHEMES):
            raise ValueError("SECURECHAT_REDIS_URL must be a redis://, rediss:// or unix:// URL")
        self.url = url
        self.timeout = timeout
        self.retry_interval = retry_interval
        self.client: Redis = Redis.from_url(
            url,
            socket_timeout=timeout,
            socket_connect_timeout=timeout,
            retry=Retry(NoBackoff(), 0),  # the caller falls back; a retry would only add delay
        )
        # Calls that failed (each one fell back), and whether the last one did.
        self.failures = 0
        self.down = False
        self._skip_until = 0.0

    def __repr__(self) -> str:
        return f"<RedisLink down={self.down}>"  # never the URL: it may hold a password

    async def call(self, make: Callable[[], Awaitable[T]], what: str) -> T:
        """``await make()`` within the timeout; RedisDown if it fails or Redis is resting."""
        if self.down and time.monotonic() < self._skip_until:
            self.failures += 1
            raise RedisDown(what)
        try:
            async with asyncio.timeout(self.timeout):
                result = await make()
        except (RedisError, OSError, TimeoutError) as error:
            self._failed(what, error)
            raise RedisDown(what) from error
        self._answered()
        return result

    async def ping(self) -> bool:
        """Whether Redis answers PING now (health reports; it also ends a resting period)."""
        self._skip_until = 0.0
        try:
            await self.call(self.client.ping, "ping")
        except RedisDown:
            return False
        return True

    async def close(self) -> None:
        """Close the client's connections."""
        await self.client.aclose()

    def health(self) -> dict[str, Any]:
        """The link's part of /admin/health."""
        return {"status": "error" if self.down else "ok", "failures": self.failures}

    def _failed(self, what: str, error: BaseException) -> None:
        self.failures += 1
        self._skip_until = time.monotonic() + self.retry_interval
        if not self.down:
            self.down = True
            log.warning("Redis did not answer (%s: %r); going without it", what, error)

    def _answered(self) -> None:
        if self.down:
            self.down = False
            log.warning("Redis answers again")


def as_text(value: bytes | str) -> str:
    """A value Redis answered with, as text (the client returns bytes unless told otherwise)."""
    return value.decode() if isinstance(value, bytes) else value


__all__ = ["CALL_TIMEOUT", "RETRY_INTERVAL", "URL_SCHEMES", "RedisDown", "RedisLink", "as_text"]
