"""The engine-independent half of a chat commit: positions, resends, marks, conversations.

Both backends' ``MessageStore.commit`` read rows, hand them to these functions, and write back
what they return, so a batch has the same outcomes on SQLite and on PostgreSQL. Nothing here
touches a database.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import TypeAlias

from securechat.store.records import (
    UNKNOWN_MESSAGE,
    UNKNOWN_RECIPIENT,
    MarkOutcome,
    NewMark,
    NewMessage,
    Receipt,
    SendOutcome,
    Stored,
)

# A message row to insert: seq, sender_id, recipient_id, client_id, ts, envelope.
MessageRow: TypeAlias = tuple[int, int, int, str, int, str]
# A message's new receipt columns, by seq: delivered_seq, delivered_at, read_seq, read_at, seq.
MarkRow: TypeAlias = tuple[int | None, int | None, int | None, int | None, int]
# Unread messages to take off a conversation: count, user_id, peer_id.
UnreadDrop: TypeAlias = tuple[int, int, int]
# A conversation to move: user_id, peer_id, its new last seq, unread messages to add.
ConversationMove: TypeAlias = tuple[int, int, int, int]


class Positions:
    """Hands out a batch's positions, after the last one drawn before it."""

    __slots__ = ("value",)

    def __init__(self, last: int) -> None:
        self.value = last

    def next(self) -> int:
        self.value += 1
        return self.value


@dataclass(slots=True)
class MarkState:
    """A marked message's receipt columns, as read before the batch and changed by it."""

    sender_id: int
    recipient_id: int
    client_id: str
    sender: str
    size: int
    delivered_seq: int | None
    delivered_at: int | None
    read_seq: int | None
    read_at: int | None
    dirty: bool = False

    def delivers(self) -> tuple[int, int] | None:
        """For a mark that delivers the message now: its sender and envelope length."""
        return None if self.delivered_at is not None else (self.sender_id, self.size)


def number_sends(
    sends: Sequence[NewMessage], ids: Mapping[str, int], positions: Positions, now_ms: int
) -> tuple[list[SendOutcome], list[MessageRow]]:
    """Each send to a known recipient takes the next position; the rest are refused."""
    outcomes: list[SendOutcome] = [UNKNOWN_RECIPIENT] * len(sends)
    rows: list[MessageRow] = []
    for index, send in enumerate(sends):
        recipient_id = ids.get(send.recipient)
        if recipient_id is not None:
            seq = positions.next()
            outcomes[index] = Stored(seq, now_ms, True)
            rows.append((seq, send.sender_id, recipient_id, send.client_id, now_ms, send.envelope))
    return outcomes, rows


def settle_duplicates(
    sends: Sequence[NewMessage],
    outcomes: list[SendOutcome],
    rows: Sequence[MessageRow],
    originals: Mapping[tuple[int, str], tuple[int, int]],
) -> list[MessageRow]:
    """Point each resend at its original message (``originals``: (sender id, client id) to
    (seq, ts), read after the insert); return the rows really inserted."""
    for index, outcome in enumerate(outcomes):
        if isinstance(outcome, Stored):
            seq, ts = originals[(sends[index].sender_id, sends[index].client_id)]
            if seq != outcome.seq:
                outcomes[index] = Stored(seq, ts, False)
    return [row for row in rows if originals[(row[1], row[3])][0] == row[0]]


def conversation_moves(rows: Iterable[MessageRow]) -> list[ConversationMove]:
    """Move both sides' conversation to the new seq; one more unread for the recipient."""
    latest: dict[tuple[int, int], list[int]] = {}
    for seq, sender_id, recipient_id, *_ in rows:
        latest.setdefault((sender_id, recipient_id), [0, 0])[0] = seq
        mine = latest.setdefault((recipient_id, sender_id), [0, 0])
        mine[0] = seq
        mine[1] += 1
    return [(user, peer, seq, unread) for (user, peer), (seq, unread) in latest.items()]


def apply_marks(
    marks: Sequence[NewMark], states: Mapping[int, MarkState], positions: Positions, now_ms: int
) -> tuple[list[MarkOutcome], list[MarkRow], list[UnreadDrop]]:
    """Each mark's outcome, the receipt columns to write and the unread counts to lower.

    ``states`` holds the marked messages that exist, by seq; they are updated in place.
    """
    outcomes: list[MarkOutcome] = []
    unread_drops: dict[tuple[int, int], int] = {}
    for mark in marks:
        state = states.get(mark.seq)
        if state is None or state.recipient_id != mark.reader_id:
            # Not a message to this reader (or no message at all): indistinguishable on purpose.
            outcomes.append(UNKNOWN_MESSAGE)
        elif mark.status == "read":
            outcomes.append(_mark_read(state, mark.seq, positions, now_ms, unread_drops))
        else:
            outcomes.append(_mark_delivered(state, mark.seq, positions, now_ms))
    dirty = [
        (s.delivered_seq, s.delivered_at, s.read_seq, s.read_at, seq)
        for seq, s in states.items()
        if s.dirty
    ]
    drops = [(count, user, peer) for (user, peer), count in unread_drops.items()]
    return outcomes, dirty, drops


def _mark_delivered(state: MarkState, seq: int, positions: Positions, now_ms: int) -> MarkOutcome:
    # Marks only move forward: delivered after delivered or after read changes nothing.
    if state.delivered_at is not None or state.read_at is not None:
        return None
    delivered = state.delivers()
    state.delivered_seq, state.delivered_at, state.dirty = positions.next(), now_ms, True
    return Receipt(
        state.delivered_seq, seq, state.client_id, "delivered", state.sender, now_ms, delivered
    )


def _mark_read(
    state: MarkState,
    seq: int,
    positions: Positions,
    now_ms: int,
    unread_drops: dict[tuple[int, int], int],
) -> MarkOutcome:
    if state.read_at is not None:
        return None
    # Read implies delivered: the delivered time is filled in, but no separate receipt is
    # made; a read receipt tells the sender both.
    delivered = state.delivers()
    state.read_seq, state.read_at, state.dirty = positions.next(), now_ms, True
    if state.delivered_at is None:
        state.delivered_at = now_ms
    key = (state.recipient_id, state.sender_id)
    unread_drops[key] = unread_drops.get(key, 0) + 1
    return Receipt(state.read_seq, seq, state.client_id, "read", state.sender, now_ms, delivered)


__all__ = [
    "ConversationMove",
    "MarkRow",
    "MarkState",
    "MessageRow",
    "Positions",
    "UnreadDrop",
    "apply_marks",
    "conversation_moves",
    "number_sends",
    "settle_duplicates",
]
