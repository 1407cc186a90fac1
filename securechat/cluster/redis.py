"""The node's one link to Redis (``SECURECHAT_REDIS_URL``) and whether Redis answers.

Everything a node shares through Redis (the limits in cluster/limits.py, and the broker,
presence and control channel when they come) goes through one :class:`RedisLink`, so there is
one connection pool, one timeout and one view of Redis' health per process. Every call is
bounded by a short timeout (``redis_call_timeout``) and never retried inside the client: a
caller that sees :class:`RedisDown` does what it does without Redis (the limits fall back to
in-process ones), and after a failure the link is not asked again for ``redis_retry_interval``
seconds, so an outage costs each request one fast refusal rather than a timeout. What must
reach the other nodes all the same (control orders) the broker keeps and sends again once
the link answers (chat/redisbroker.py).
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

from securechat.config import Config

log = logging.getLogger(__name__)

T = TypeVar("T")

URL_SCHEMES: Final = ("redis://", "rediss://", "unix://")


class RedisDown(Exception):
    """Redis did not answer in time, or answered with an error: go without it."""


class RedisLink:
    """A ``redis.asyncio.Redis`` client and the state of the link: up, or down since when."""

    def __init__(
        self,
        url: str,
        *,
        timeout: float = Config.redis_call_timeout,
        retry_interval: float = Config.redis_retry_interval,
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

    @classmethod
    def from_config(cls, config: Config) -> RedisLink:
        """The link to ``config.redis_url`` with the configured timeout and rest."""
        if config.redis_url is None:
            raise ValueError("no SECURECHAT_REDIS_URL")
        return cls(
            config.redis_url,
            timeout=config.redis_call_timeout,
            retry_interval=config.redis_retry_interval,
        )

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


def stop_if_cancelled() -> None:
    """Raise CancelledError if this task was asked to stop, whatever a call made of it.

    A loop that goes on after :class:`RedisDown` calls this each round: a cancellation that
    lands inside redis-py can come out as an error or not at all (seen under Python 3.11 when
    a node stopped just after its link failed), and the loop would never end."""
    task = asyncio.current_task()
    if task is not None and task.cancelling():
        raise asyncio.CancelledError


def as_text(value: bytes | str) -> str:
    """A value Redis answered with, as text (the client returns bytes unless told otherwise)."""
    return value.decode() if isinstance(value, bytes) else value


__all__ = ["URL_SCHEMES", "RedisDown", "RedisLink", "as_text", "stop_if_cancelled"]
