"""The limits a cluster's nodes share, counted in Redis: one attempt counts once, whichever node.

Each limit keeps the rules of its in-process twin exactly (accounts/throttle.py ``Throttle``
and ``Lockouts``, chat/protocol.py ``KeyedRateLimiter``, chat/hub.py's per-user cap); only
where the count lives changes. Every check-and-count is one Lua script, so it is atomic and
one round trip: attempts that arrive together on different nodes are each counted once, and
none slips between another's check and its count.

Keys, all under ``securechat:`` and all with a TTL, so Redis holds only what is still live:

``securechat:login:user:<name>``, ``…:login:addr:<address>``, ``…:login:device:<nonce>``,
``…:register:<address>``
    sorted sets of attempts (member: a unique attempt id, score: when, in seconds of the
    app's wall clock), trimmed to the window on each use and expiring a window after the last
    attempt. A set never holds more than its key's maximum: past it, attempts are refused.
``securechat:lockout:<nonce>``
    a locked-out device: the time its lockout ends, expiring then.
``securechat:send:<user id>``
    the account's token bucket (``tokens``, ``last``, on Redis' own clock), expiring when it
    would have refilled: a full bucket is a new one.
``securechat:search:<user id>``
    the same bucket for the account's user searches (the recipient picker).
``securechat:ws:<user>``
    the user's sockets on every node (member: ``<node>:<connection>``, score: when its lease
    ends, on Redis' clock). Each node renews its own sockets' leases every ``lease / 4``
    seconds; a node that dies (SIGKILL) stops renewing, and its sockets stop counting within
    ``lease`` seconds.

Throttles are timed by the app's wall clock (``Clock.now_ms``, which a test moves; nodes keep
their clocks in step as they must for sessions anyway), the send rate and socket leases by
Redis' ``TIME``. Redis' memory is bounded by the TTLs; an operator who wants a hard bound sets
``maxmemory`` with a ``volatile-*`` policy, which forgets the oldest counters first, as the
in-process tables do.

When Redis does not answer (cluster/redis.py: a short timeout, no retries), each method
returns None and the caller counts in its own in-process tables: the limits then hold per
node. :attr:`SharedLimits.fallbacks` counts those calls and ``/admin/health`` reports
``limits: local (fallback)`` until Redis answers again.
"""

from __future__ import annotations

import asyncio
import logging
import uuid
from collections.abc import Awaitable, Callable
from functools import partial
from typing import Any, Final, TypeVar

from securechat.cluster.redis import RedisDown, RedisLink, stop_if_cancelled
from securechat.config import Config
from securechat.errors import Throttled
from securechat.runtime import Clock, cancel_and_wait

log = logging.getLogger(__name__)

T = TypeVar("T")

PREFIX: Final = "securechat:"
# Socket leases renewed in one script call at most.
_RENEW_CHUNK: Final = 500

# KEYS: [the lockout key, if ARGV[3] is "1"], then the attempt sets to check and count.
# ARGV: now, the attempt's member, "1"/"0", then per set: max failures, free failures, window.
# Returns 0 when counted, else the seconds to wait (nothing counted): Throttle.retry_after
# and Lockouts.retry_after, in the order Accounts checks them.
_COUNT_ATTEMPT: Final = """
local now = tonumber(ARGV[1])
local function wait(seconds)
  if seconds <= 0 then return 0 end
  return math.max(1, math.ceil(seconds))
end
local first = 1
if ARGV[3] == '1' then
  first = 2
  local ends = tonumber(redis.call('GET', KEYS[1]))
  if ends then
    if ends > now then return wait(ends - now) end
    redis.call('DEL', KEYS[1])
  end
end
for i = first, #KEYS do
  local j = 4 + (i - first) * 3
  local max, free, window = tonumber(ARGV[j]), tonumber(ARGV[j + 1]), tonumber(ARGV[j + 2])
  redis.call('ZREMRANGEBYSCORE', KEYS[i], '-inf', now - window)
  local count = redis.call('ZCARD', KEYS[i])
  local seconds = 0
  if count >= max then
    seconds = wait(tonumber(redis.call('ZRANGE', KEYS[i], 0, 0, 'WITHSCORES')[2]) + window - now)
  elseif count - free > 0 then
    local delay = math.min(2 ^ (count - free - 1), window)
    seconds = wait(tonumber(redis.call('ZRANGE', KEYS[i], -1, -1, 'WITHSCORES')[2]) + delay - now)
  end
  if seconds > 0 then return seconds end
end
for i = first, #KEYS do
  redis.call('ZADD', KEYS[i], now, ARGV[2])
  redis.call('PEXPIRE', KEYS[i], math.ceil(tonumber(ARGV[4 + (i - first) * 3 + 2]) * 1000))
end
return 0
"""

# KEYS: the device's attempt set, its lockout key. ARGV: now, window, max failures.
# A device with max failures in the window is forgotten and locked out for the window.
_LOCK_OUT_IF_SPENT: Final = """
local now, window = tonumber(ARGV[1]), tonumber(ARGV[2])
redis.call('ZREMRANGEBYSCORE', KEYS[1], '-inf', now - window)
if redis.call('ZCARD', KEYS[1]) < tonumber(ARGV[3]) then return 0 end
redis.call('DEL', KEYS[1])
redis.call('SET', KEYS[2], tostring(now + window), 'PX', math.ceil(window * 1000))
return 1
"""

# KEYS: the account's bucket. ARGV: rate per second, burst. 1 if a token was taken, else 0.
_TAKE_FROM_BUCKET: Final = """
local time = redis.call('TIME')
local now = tonumber(time[1]) + tonumber(time[2]) / 1000000
local rate, burst = tonumber(ARGV[1]), tonumber(ARGV[2])
local bucket = redis.call('HMGET', KEYS[1], 'tokens', 'last')
local tokens, last = tonumber(bucket[1]), tonumber(bucket[2])
if tokens == nil then
  tokens, last = burst, now
elseif now > last then  -- a clock that steps back never refills the bucket
  tokens, last = math.min(burst, tokens + (now - last) * rate), now
end
local taken = 0
if tokens >= 1 then tokens, taken = tokens - 1, 1 end
redis.call('HSET', KEYS[1], 'tokens', tostring(tokens), 'last', tostring(last))
redis.call('PEXPIRE', KEYS[1], math.ceil(burst / rate * 1000) + 1000)
return taken
"""

# KEYS: the user's socket set. ARGV: this socket's member, the cap, the lease in seconds.
# 1 if the socket now counts (it was under the cap, or already counted), else 0.
_CLAIM_SOCKET: Final = """
local time = redis.call('TIME')
local now = tonumber(time[1]) + tonumber(time[2]) / 1000000
local lease = tonumber(ARGV[3])
redis.call('ZREMRANGEBYSCORE', KEYS[1], '-inf', now)
if not redis.call('ZSCORE', KEYS[1], ARGV[1])
    and redis.call('ZCARD', KEYS[1]) >= tonumber(ARGV[2]) then
  return 0
end
redis.call('ZADD', KEYS[1], now + lease, ARGV[1])
redis.call('PEXPIRE', KEYS[1], math.ceil(lease * 1000))
return 1
"""

# KEYS: socket sets; ARGV: the lease, then the member for each key. Renews (or, after Redis
# lost them, restores) this node's sockets.
_RENEW_SOCKETS: Final = """
local time = redis.call('TIME')
local now = tonumber(time[1]) + tonumber(time[2]) / 1000000
local lease = tonumber(ARGV[1])
for i = 1, #KEYS do
  redis.call('ZADD', KEYS[i], now + lease, ARGV[i + 1])
  redis.call('PEXPIRE', KEYS[i], math.ceil(lease * 1000))
end
return #KEYS
"""


class SharedLimits:
    """This node's shared limits over one Redis link, and how often they fell back."""

    def __init__(
        self, link: RedisLink, config: Config, clock: Clock, *, node_id: str | None = None
    ) -> None:
        """``node_id`` names this process in Redis (the one chat/service.py's ``node_id``
        holds); a fresh one when not given."""
        self.link = link
        self.fallbacks = 0
        client = link.client
        self.scripts = {
            name: client.register_script(source)
            for name, source in (
                ("count", _COUNT_ATTEMPT),
                ("lock_out", _LOCK_OUT_IF_SPENT),
                ("token", _TAKE_FROM_BUCKET),
                ("claim", _CLAIM_SOCKET),
                ("renew", _RENEW_SOCKETS),
            )
        }
        self.throttles = SharedThrottles(self, config, clock)
        self.send_rate = SharedSendRate(self, config)
        self.search_rate = SharedSearchRate(self, config)
        self.contacts_rate = SharedContactsRate(self, config)
        node = node_id or uuid.uuid4().hex[:12]
        self.sockets = SharedSockets(
            self, config.ws_connections_per_user, config.socket_lease, node
        )

    async def run(self, what: str, keys: list[str], args: list[Any]) -> int | None:
        """Run script ``what``; its integer result, or None (counted) if Redis did not answer."""
        script = self.scripts[what]
        return await self.call(lambda: script(keys=keys, args=args), what)

    async def call(self, make: Callable[[], Awaitable[Any]], what: str) -> Any | None:
        """``await make()`` through the link; None (counted as a fallback) if it failed."""
        try:
            return await self.link.call(make, what)
        except RedisDown:
            self.fallbacks += 1
            return None

    def start(self) -> None:
        """Start renewing this node's socket leases."""
        self.sockets.start()

    async def stop(self) -> None:
        """Stop renewing and forget this node's sockets in Redis (the app closes the link)."""
        await self.sockets.stop()

    async def health(self) -> dict[str, Any]:
        """The /admin/health section; asks Redis first, so it tells how things stand now."""
        shared = await self.link.ping()
        return {
            "limits": "shared" if shared else "local (fallback)",
            "limits_fallbacks": self.fallbacks,
        }


class SharedThrottles:
    """Login and registration attempts (accounts/throttle.SharedAttempts), in Redis."""

    def __init__(self, limits: SharedLimits, config: Config, clock: Clock) -> None:
        self._limits = limits
        self._clock = clock
        self._window = float(config.login_failure_window)
        self._user = (config.login_failures_max, config.login_failures_max // 2, self._window)
        self._device = (config.device_failures_max, config.device_failures_max // 2, self._window)
        self._device_max = config.device_failures_max
        count = config.registrations_per_address
        self._registration = (count, count, float(config.registration_window))

    async def count_login(self, username: str, address: str, device: str | None) -> str | None:
        """Refuse (Throttled) or count a login attempt; its id, or None if Redis is down."""
        own = (_key("login:user:", username), self._user)
        if device is not None:
            own = (_key("login:device:", device), self._device)
        address_set = (_key("login:addr:", address), self._user)
        lockout = None if device is None else _key("lockout:", device)
        return await self._count([own, address_set], lockout)

    async def take_back(
        self, username: str, address: str, device: str | None, attempt: str
    ) -> None:
        """A login succeeded: forget its name's (device's) failures and this attempt's count."""
        own = _key("login:user:", username) if device is None else _key("login:device:", device)
        address_set = _key("login:addr:", address)

        async def forget() -> Any:
            async with self._limits.link.client.pipeline(transaction=True) as pipe:
                pipe.delete(own)
                pipe.zrem(address_set, attempt)
                return await pipe.execute()

        await self._limits.call(forget, "take_back")

    async def lock_out_if_spent(self, device: str) -> bool | None:
        """Lock out a device that has used up its budget; None if Redis is down."""
        keys = [_key("login:device:", device), _key("lockout:", device)]
        locked = await self._limits.run(
            "lock_out", keys, [self._now(), self._window, self._device_max]
        )
        return None if locked is None else bool(locked)

    async def count_registration(self, address: str) -> bool:
        """Refuse (Throttled) or count a registration; False if Redis is down."""
        counted = await self._count([(_key("register:", address), self._registration)], None)
        return counted is not None

    async def _count(
        self, sets: list[tuple[str, tuple[int, int, float]]], lockout: str | None
    ) -> str | None:
        attempt = uuid.uuid4().hex
        keys = ([] if lockout is None else [lockout]) + [key for key, _ in sets]
        args: list[Any] = [self._now(), attempt, "0" if lockout is None else "1"]
        for _, rule in sets:
            args.extend(rule)
        wait = await self._limits.run("count", keys, args)
        if wait is None:
            return None
        if wait > 0:
            raise Throttled(int(wait))
        return attempt

    def _now(self) -> str:
        return repr(self._clock.now_ms() / 1000)


class SharedSendRate:
    """Sends per account, all its sockets on every node together (chat/delivery.SharedRate)."""

    kind = "send:"

    def __init__(self, limits: SharedLimits, config: Config) -> None:
        self._limits = limits
        self._args = [repr(float(config.sends_per_user_per_s)), config.sends_per_user_burst]

    async def allow(self, user_id: int) -> bool | None:
        """Take one token from the account's bucket; None if Redis is down."""
        taken = await self._limits.run("token", [_key(self.kind, str(user_id))], self._args)
        return None if taken is None else bool(taken)


class SharedSearchRate(SharedSendRate):
    """User searches per account on every node (chat/conversations.py): the same bucket, under
    ``securechat:search:<user id>``."""

    kind = "search:"

    def __init__(self, limits: SharedLimits, config: Config) -> None:
        self._limits = limits
        self._args = [repr(float(config.user_search_per_s)), config.user_search_burst]


class SharedContactsRate(SharedSendRate):
    """Contact decisions and lists per account on every node (chat/contacts.py), under
    ``securechat:contacts:<user id>``."""

    kind = "contacts:"

    def __init__(self, limits: SharedLimits, config: Config) -> None:
        self._limits = limits
        self._args = [repr(float(config.contacts_per_user_per_s)), config.contacts_per_user_burst]


class SharedSockets:
    """The connections-per-user cap counted over every node (chat/service.SharedSocketCap)."""

    def __init__(self, limits: SharedLimits, cap: int, lease: float, node: str) -> None:
        self._limits = limits
        self._cap = cap
        self.lease = lease
        self.node = node  # a socket's member is "<node>:<connection>"
        # This node's sockets: member -> its user's key, renewed every lease / 4.
        self._held: dict[str, str] = {}
        self._releases: set[asyncio.Task[Any]] = set()
        self._renewer: asyncio.Task[None] | None = None

    def __len__(self) -> int:
        return len(self._held)

    async def claim(self, user: str, conn_id: int) -> bool | None:
        """Count this socket if ``user`` is under the cap on all nodes together: False at the
        cap, None if Redis is down (the socket is counted once Redis is back)."""
        member, key = f"{self.node}:{conn_id}", _key("ws:", user)
        self._held[member] = key
        claimed = await self._limits.run("claim", [key], [member, self._cap, self.lease])
        if claimed == 0:
            del self._held[member]
            return False
        return None if claimed is None else True

    def release(self, user: str, conn_id: int) -> None:
        """Stop counting this socket (idempotent; never waits: its lease ends it if this fails)."""
        member = f"{self.node}:{conn_id}"
        key = self._held.pop(member, None)
        if key is None:
            return
        forget = partial(self._limits.link.client.zrem, key, member)
        task = asyncio.create_task(self._limits.call(forget, "release"))
        self._releases.add(task)
        task.add_done_callback(self._releases.discard)

    def start(self) -> None:
        """Start renewing this node's leases."""
        self._renewer = asyncio.create_task(self._renew_forever(), name="socket-leases")

    async def stop(self) -> None:
        """Stop renewing and forget this node's sockets in Redis."""
        await cancel_and_wait(self._renewer)
        self._renewer = None
        if self._releases:
            await asyncio.gather(*self._releases, return_exceptions=True)
        for member, key in list(self._held.items()):
            self._held.pop(member)
            await self._limits.call(partial(self._limits.link.client.zrem, key, member), "release")

    async def renew(self) -> None:
        """Renew the lease of every socket this node holds (restoring any Redis lost)."""
        held = list(self._held.items())
        for start in range(0, len(held), _RENEW_CHUNK):
            chunk = held[start : start + _RENEW_CHUNK]
            keys = [key for _, key in chunk]
            await self._limits.run("renew", keys, [self.lease, *(member for member, _ in chunk)])

    async def _renew_forever(self) -> None:
        while True:
            await asyncio.sleep(self.lease / 4)
            try:
                await self.renew()
            except Exception:
                log.exception("renewing the socket leases failed")
            stop_if_cancelled()


def _key(kind: str, name: str) -> str:
    return PREFIX + kind + name


__all__ = [
    "PREFIX",
    "SharedContactsRate",
    "SharedLimits",
    "SharedSearchRate",
    "SharedSendRate",
    "SharedSockets",
    "SharedThrottles",
]
