"""Bounded, in-memory attempt counters with growing delays (OWASP Authentication Cheat Sheet).

A key (a username or a client address) may fail ``free_failures`` times freely; after that,
each further attempt must wait twice as long as the one before (1 s, 2 s, 4 s ...), and at
``max_failures`` within ``window`` seconds the key is refused until its oldest failure leaves
the window. So nobody can lock an account for longer than the window, and a guesser gets at
most ``max_failures`` tries per window. The table holds at most ``max_keys`` keys, forgetting
the least recently used, so a flood of addresses cannot exhaust memory. Counters reset on
restart: they slow guessing; they are not a ledger.

``Lockouts`` is the list of keys refused outright for a while (a device that has used up its
own budget, accounts/service.py), bounded the same way.

In a cluster the same rules are counted in Redis (``SharedAttempts``, cluster/limits.py), so
an attempt counts once whichever node it reaches; these tables then count only while Redis
does not answer.
"""

from __future__ import annotations

import math
from collections import OrderedDict, deque
from typing import Protocol


class Throttle:
    """Failure counters per key, with clock values passed in (pure, testable)."""

    def __init__(
        self, *, max_failures: int, window: float, max_keys: int, free_failures: int | None = None
    ) -> None:
        self.max_failures = max_failures
        self.window = window
        self.max_keys = max_keys
        self.free_failures = max_failures // 2 if free_failures is None else free_failures
        self._failures: OrderedDict[str, deque[float]] = OrderedDict()

    def retry_after(self, key: str, now: float) -> int:
        """Seconds to wait before ``key`` may try again; 0 when it may try now."""
        failures = self._recent(key, now)
        if not failures:
            return 0
        if len(failures) >= self.max_failures:
            return _ceil(failures[0] + self.window - now)
        extra = len(failures) - self.free_failures
        if extra <= 0:
            return 0
        delay = min(2.0 ** (extra - 1), self.window)
        return _ceil(failures[-1] + delay - now)

    def failures(self, key: str, now: float) -> int:
        """How many failures ``key`` has within the window."""
        failures = self._recent(key, now)
        return 0 if failures is None else len(failures)

    def record_failure(self, key: str, now: float) -> None:
        """Count a failed attempt."""
        failures = self._recent(key, now)
        if failures is None:
            failures = deque()
            self._failures[key] = failures
        failures.append(now)
        self._failures.move_to_end(key)
        while len(self._failures) > self.max_keys:
            self._failures.popitem(last=False)

    def record_attempt(self, key: str, now: float) -> None:
        """Count an attempt that is limited whether or not it succeeds (registration)."""
        self.record_failure(key, now)

    def refund(self, key: str, at: float) -> None:
        """Take back the failure counted at ``at`` (the attempt succeeded)."""
        failures = self._failures.get(key)
        if failures is not None and at in failures:
            failures.remove(at)
            if not failures:
                del self._failures[key]

    def reset(self, key: str) -> None:
        """Forget a key (after a successful login)."""
        self._failures.pop(key, None)

    def __len__(self) -> int:
        return len(self._failures)

    def _recent(self, key: str, now: float) -> deque[float] | None:
        failures = self._failures.get(key)
        if failures is None:
            return None
        while failures and failures[0] <= now - self.window:
            failures.popleft()
        if not failures:
            del self._failures[key]
            return None
        return failures


class Lockouts:
    """Keys refused for ``duration`` seconds from when they were locked, clock passed in.

    At most ``max_keys`` are held. Every lock lasts as long, so the oldest is the first to
    end: that one is forgotten first, and ended ones are dropped from the front as new ones
    come in.
    """

    def __init__(self, *, duration: float, max_keys: int) -> None:
        self.duration = duration
        self.max_keys = max_keys
        self._until: OrderedDict[str, float] = OrderedDict()

    def lock(self, key: str, now: float) -> None:
        """Refuse ``key`` until ``duration`` seconds from ``now``."""
        self._until.pop(key, None)
        self._until[key] = now + self.duration
        while self._until and next(iter(self._until.values())) <= now:
            self._until.popitem(last=False)
        while len(self._until) > self.max_keys:
            self._until.popitem(last=False)

    def retry_after(self, key: str, now: float) -> int:
        """Seconds until ``key`` is let in again; 0 when it is not locked."""
        until = self._until.get(key)
        if until is not None and until <= now:
            del self._until[key]
            until = None
        return 0 if until is None else _ceil(until - now)

    def __len__(self) -> int:
        return len(self._until)


class SharedAttempts(Protocol):
    """Login and registration attempts counted where every node sees them, by the rules of
    the tables above (cluster/limits.SharedThrottles). A method that answers None (False)
    could not reach them: the caller counts in its own tables instead."""

    async def count_login(self, username: str, address: str, device: str | None) -> str | None:
        """Refuse (Throttled) or count a login attempt on its name (``device``, when the
        client has one) and its address; the attempt's id."""
        ...

    async def take_back(
        self, username: str, address: str, device: str | None, attempt: str
    ) -> None:
        """The attempt succeeded: forget the name's (device's) failures and its address count."""
        ...

    async def lock_out_if_spent(self, device: str) -> bool | None:
        """Lock out a device that has failed as often as its budget allows; whether it was."""
        ...

    async def count_registration(self, address: str) -> bool:
        """Refuse (Throttled) or count a registration attempt from ``address``."""
        ...


def _ceil(seconds: float) -> int:
    return max(1, math.ceil(seconds)) if seconds > 0 else 0
