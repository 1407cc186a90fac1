"""Bounded, in-memory attempt counters with growing delays (OWASP Authentication Cheat Sheet).

A key (a username or a client address) may fail ``free_failures`` times freely; after that,
each further attempt must wait twice as long as the one before (1 s, 2 s, 4 s ...), and at
``max_failures`` within ``window`` seconds the key is refused until its oldest failure leaves
the window. So nobody can lock an account for longer than the window, and a guesser gets at
most ``max_failures`` tries per window. The table holds at most ``max_keys`` keys, forgetting
the least recently used, so a flood of addresses cannot exhaust memory. Counters reset on
restart: they slow guessing; they are not a ledger.
"""

from __future__ import annotations

import math
from collections import OrderedDict, deque


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


def _ceil(seconds: float) -> int:
    return max(1, math.ceil(seconds)) if seconds > 0 else 0
