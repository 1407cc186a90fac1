"""The throttle with a clock passed in: growing delays, a hard cap, a bounded table; and the
bounded lockout list."""

from __future__ import annotations

import pytest

from securechat.accounts.throttle import Lockouts, Throttle


@pytest.fixture(name="throttle")
def _throttle() -> Throttle:
    return Throttle(max_failures=10, window=900, max_keys=100)


def test_first_failures_are_free(throttle: Throttle) -> None:
    """Up to half the cap, failures impose no wait."""
    for _ in range(5):
        throttle.record_failure("alice", 0.0)
    assert throttle.retry_after("alice", 0.0) == 0


def test_delays_grow_after_the_free_failures(throttle: Throttle) -> None:
    """Each failure past the free ones doubles the wait: 1 s, 2 s, 4 s."""
    waits = []
    now = 0.0
    for _ in range(8):
        throttle.record_failure("alice", now)
        waits.append(throttle.retry_after("alice", now))
        now += waits[-1]
    assert waits[5:] == [1, 2, 4]


def test_cap_blocks_until_the_oldest_failure_leaves_the_window(throttle: Throttle) -> None:
    """At the cap, the key waits until its first failure is older than the window."""
    for second in range(10):
        throttle.record_failure("alice", float(second))
    assert throttle.retry_after("alice", 10.0) == 890
    assert throttle.retry_after("alice", 900.5) == 0


def test_lockout_never_outlasts_the_window(throttle: Throttle) -> None:
    """However many failures, the wait is never longer than the window."""
    for _ in range(1000):
        throttle.record_failure("alice", 0.0)
    assert throttle.retry_after("alice", 0.0) <= 900
    assert throttle.retry_after("alice", 900.0) == 0


def test_reset_forgets_a_key(throttle: Throttle) -> None:
    """A successful login clears the user's failures."""
    for _ in range(10):
        throttle.record_failure("alice", 0.0)
    throttle.reset("alice")
    assert throttle.retry_after("alice", 0.0) == 0


def test_keys_are_independent(throttle: Throttle) -> None:
    """Failures of one key do not slow another."""
    for _ in range(10):
        throttle.record_failure("alice", 0.0)
    assert throttle.retry_after("bob", 0.0) == 0


def test_table_is_bounded() -> None:
    """The table forgets the least recently used keys beyond its size."""
    throttle = Throttle(max_failures=3, window=60, max_keys=10)
    for i in range(1000):
        throttle.record_failure(f"addr{i}", 0.0)
    assert len(throttle) == 10


def test_refund_takes_back_one_counted_failure() -> None:
    """A refunded attempt no longer counts toward the cap; the others still do."""
    throttle = Throttle(max_failures=2, window=60, max_keys=10, free_failures=2)
    throttle.record_failure("addr", 1.0)
    throttle.record_failure("addr", 2.0)
    assert throttle.retry_after("addr", 3.0) > 0
    throttle.refund("addr", 2.0)
    assert throttle.retry_after("addr", 3.0) == 0
    throttle.record_failure("addr", 3.0)
    assert throttle.retry_after("addr", 3.0) > 0


def test_failures_counts_those_within_the_window(throttle: Throttle) -> None:
    """Failures counts a key's failures in the window, none for a key never seen."""
    throttle.record_failure("alice", 0.0)
    throttle.record_failure("alice", 100.0)
    assert throttle.failures("alice", 100.0) == 2
    assert throttle.failures("alice", 900.0) == 1
    assert throttle.failures("bob", 0.0) == 0


def test_a_lockout_lasts_its_duration() -> None:
    """A locked key waits until ``duration`` after it was locked, then is let in and forgotten."""
    lockouts = Lockouts(duration=900, max_keys=10)
    lockouts.lock("device", 10.0)
    assert lockouts.retry_after("device", 20.0) == 890
    assert lockouts.retry_after("other", 20.0) == 0
    assert lockouts.retry_after("device", 910.0) == 0
    assert len(lockouts) == 0


def test_lockouts_are_bounded_forgetting_the_first_to_end() -> None:
    """Beyond its size the list forgets the oldest locks; ended ones leave as new ones come."""
    lockouts = Lockouts(duration=60, max_keys=2)
    for second, key in enumerate(("a", "b", "c")):
        lockouts.lock(key, float(second))
    assert [lockouts.retry_after(key, 3.0) > 0 for key in "abc"] == [False, True, True]
    lockouts.lock("d", 61.5)
    assert len(lockouts) == 2
    assert lockouts.retry_after("c", 61.5) > 0
