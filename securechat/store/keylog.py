"""The key log's next entry, computed the same way by every backend.

A backend reads the log's last row (index and timestamp) inside the transaction that changes
``users``, while nothing else may append, and inserts what :func:`next_entry` returns.
"""

from __future__ import annotations

import hashlib

from securechat.directory.transparency import TOMBSTONE_FINGERPRINT, user_hash
from securechat.store.records import LogEntry


def next_entry(
    last: tuple[int, int] | None,
    username: str,
    enc_public_key: bytes,
    sign_public_key: bytes,
    now_ms: int,
) -> LogEntry:
    """The entry after ``last`` (its index and timestamp; None for an empty log)."""
    return _after(
        last,
        username,
        hashlib.sha256(enc_public_key).digest(),
        hashlib.sha256(sign_public_key).digest(),
        now_ms,
    )


def next_tombstone(last: tuple[int, int] | None, username: str, now_ms: int) -> LogEntry:
    """The tombstone after ``last``: the deletion of ``username``'s account."""
    return _after(last, username, TOMBSTONE_FINGERPRINT, TOMBSTONE_FINGERPRINT, now_ms)


def _after(
    last: tuple[int, int] | None,
    username: str,
    enc_fingerprint: bytes,
    sign_fingerprint: bytes,
    now_ms: int,
) -> LogEntry:
    index = 0 if last is None else last[0] + 1
    # Timestamps never go back, so each signed tree head is at least as late as the one before.
    timestamp = now_ms if last is None else max(now_ms, last[1])
    return LogEntry(
        index=index,
        timestamp_ms=timestamp,
        user_hash=user_hash(username),
        enc_fingerprint=enc_fingerprint,
        sign_fingerprint=sign_fingerprint,
    )
