"""What each sender has stored that no device of its recipient has received yet.

The send rate bounds how fast an account can make the server store messages, not how much:
a sender whose recipients never come online could fill the disk. The committer
(securechat/chat/delivery.py) keeps these counts in memory, as the only writer of messages: a
message counts from the commit that stores it until the first mark that delivers it (a read
mark implies delivered). At start-up they are loaded with one query over the undelivered
messages (``MessageStore.undelivered``), which is itself bounded by these limits.

Pure bookkeeping, no I/O: the committer asks :meth:`Backlog.take` before a send goes into a
batch, and gives back what a commit did not store.
"""

from __future__ import annotations

from collections.abc import Iterable

# (sender id, recipient's canonical username): the name is what a send carries, and a
# username never changes, so no lookup is needed to check a send.
Pair = tuple[int, str]


class Backlog:
    """Undelivered messages per (sender, recipient) and their envelope bytes per sender."""

    def __init__(self, per_pair_max: int, bytes_per_sender_max: int) -> None:
        self.per_pair_max = per_pair_max
        self.bytes_per_sender_max = bytes_per_sender_max
        self._pairs: dict[Pair, int] = {}
        self._bytes: dict[int, int] = {}

    def load(self, rows: Iterable[tuple[int, str, int, int]]) -> None:
        """Start from ``(sender_id, recipient, count, bytes)`` rows (replacing any counts)."""
        self._pairs.clear()
        self._bytes.clear()
        for sender_id, recipient, count, size in rows:
            self._add((sender_id, recipient), count, size)

    def take(self, pair: Pair, size: int) -> bool:
        """Count one more message of ``size`` bytes for ``pair`` if both bounds allow it."""
        if self._pairs.get(pair, 0) + 1 > self.per_pair_max:
            return False
        if self._bytes.get(pair[0], 0) + size > self.bytes_per_sender_max:
            return False
        self.add(pair, size)
        return True

    def add(self, pair: Pair, size: int) -> None:
        """Count one more message of ``size`` bytes for ``pair``, bounds or not: it is stored."""
        self._add(pair, 1, size)

    def give_back(self, pair: Pair, size: int) -> None:
        """Uncount one message: it was not stored after all, or it has been delivered."""
        self._add(pair, -1, -size)

    def count(self, pair: Pair) -> int:
        """Undelivered messages of this pair."""
        return self._pairs.get(pair, 0)

    def bytes_of(self, sender_id: int) -> int:
        """Undelivered envelope bytes of this sender, over all recipients."""
        return self._bytes.get(sender_id, 0)

    def _add(self, pair: Pair, count: int, size: int) -> None:
        # Entries at zero are dropped, so memory follows the backlog, not the history.
        pairs = self._pairs.get(pair, 0) + count
        if pairs > 0:
            self._pairs[pair] = pairs
        else:
            self._pairs.pop(pair, None)
        sender_bytes = self._bytes.get(pair[0], 0) + size
        if sender_bytes > 0:
            self._bytes[pair[0]] = sender_bytes
        else:
            self._bytes.pop(pair[0], None)


__all__ = ["Backlog", "Pair"]
