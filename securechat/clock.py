"""The one wall clock of the server: integer milliseconds since the epoch."""

from __future__ import annotations

import time


def now_ms() -> int:
    """Wall-clock milliseconds since the epoch (message ``ts``, session times, log entries)."""
    return time.time_ns() // 1_000_000
