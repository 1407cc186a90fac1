"""The clock the app reads the time from and sets its timers by, and the tests' own clock."""

from __future__ import annotations

import asyncio
import time

from securechat.runtime import WALL_CLOCK
from tests.clockkit import ManualClock


def test_the_wall_clock_reads_milliseconds_since_the_epoch() -> None:
    """now_ms is the system's time of day in milliseconds."""
    before = time.time_ns() // 1_000_000
    now = WALL_CLOCK.now_ms()
    assert before <= now <= time.time_ns() // 1_000_000


async def test_a_wall_clock_timer_fires_at_its_time_unless_cancelled() -> None:
    """A timer fires once its time of day has come; a cancelled one never does."""
    fired: list[str] = []
    done = asyncio.Event()
    start = WALL_CLOCK.now_ms()
    WALL_CLOCK.call_at(start + 20, lambda: fired.append("cancelled")).cancel()
    WALL_CLOCK.call_at(start + 50, done.set)
    async with asyncio.timeout(5):
        await done.wait()
    # The loop's timers run on the monotonic clock: allow its millisecond of rounding.
    assert WALL_CLOCK.now_ms() >= start + 49
    assert fired == []


async def test_a_wall_clock_timer_for_a_past_time_fires_at_once() -> None:
    """A deadline already gone (a session expired while its socket opened) fires at once."""
    done = asyncio.Event()
    WALL_CLOCK.call_at(WALL_CLOCK.now_ms() - 60_000, done.set)
    async with asyncio.timeout(1):
        await done.wait()


async def test_a_manual_clock_moves_and_fires_only_when_advanced() -> None:
    """Time (of day and monotonic) stands still until advanced; each timer fires once when
    advanced to its time."""
    clock = ManualClock(now_ms=1_000)
    fired: list[str] = []
    clock.call_at(2_000, lambda: fired.append("due"))
    clock.call_at(2_500, lambda: fired.append("cancelled")).cancel()
    clock.advance(0.999)
    await asyncio.sleep(0.01)
    assert (clock.now_ms(), fired) == (1_999, [])
    clock.advance(0.001)
    await asyncio.sleep(0.01)
    clock.advance(10)
    await asyncio.sleep(0.01)
    assert (clock.now_ms(), clock.monotonic(), fired) == (12_000, 12.0, ["due"])


async def test_a_manual_clock_advanced_from_another_thread_fires_in_the_timers_loop() -> None:
    """A live server's timer, set in its loop, fires there when the test thread advances."""
    clock = ManualClock()
    loop = asyncio.get_running_loop()
    fired_in: list[asyncio.AbstractEventLoop] = []
    done = asyncio.Event()

    def callback() -> None:
        fired_in.append(asyncio.get_running_loop())
        done.set()

    clock.call_at(clock.now_ms() + 1_000, callback)
    await asyncio.to_thread(clock.advance, 1)
    async with asyncio.timeout(5):
        await done.wait()
    assert fired_in == [loop]
