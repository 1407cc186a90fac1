"""The engine-independent half of a chat commit: positions, resends, marks, conversations,
the senders' undelivered backlogs, stream heads, and the group writes' decisions.

Both backends' ``MessageStore.commit`` read rows, hand them to these functions, and write back
what they return, so a batch has the same outcomes on SQLite and on PostgreSQL. Nothing here
touches a database.
"""

from __future__ import annotations

import base64
from collections.abc import Iterable, Mapping, Sequence, Set
from dataclasses import dataclass, field, replace
from typing import Any, TypeAlias

from securechat.store.records import (
    GROUP_EXISTS,
    QUEUE_FULL,
    STALE_HEAD,
    UNKNOWN_GROUP,
    UNKNOWN_MESSAGE,
    UNKNOWN_RECIPIENT,
    BacklogBounds,
    Change,
    ChangeKind,
    GroupRefusal,
    GroupView,
    MarkOutcome,
    NewEntry,
    NewGroupPost,
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
# A position and the users whose streams it enters (what ``changes_after`` shows each).
StreamEntry: TypeAlias = tuple[int, frozenset[int]]


class Positions:
    """Hands out a batch's positions, after the last one drawn before it."""

    __slots__ = ("value",)

    def __init__(self, last: int) -> None:
        self.value = last

    def next(self) -> int:
        self.value += 1
        return self.value


@dataclass(slots=True)
class Backlog:
    """Undelivered messages per (sender id, recipient id) and their envelope bytes per sender:
    the counts a batch touches as read under the commit's lock, or a commit's changes to them.

    A message counts from the commit that stores it to the first mark that delivers it (a read
    mark implies delivered). Canonical JSON is ASCII, so an envelope's length is its bytes.
    """

    pairs: dict[tuple[int, int], int] = field(default_factory=dict)
    senders: dict[int, int] = field(default_factory=dict)

    def add(self, sender_id: int, recipient_id: int, count: int, size: int) -> None:
        pair = (sender_id, recipient_id)
        self.pairs[pair] = self.pairs.get(pair, 0) + count
        self.senders[sender_id] = self.senders.get(sender_id, 0) + size

    def fits(self, sender_id: int, recipient_id: int, size: int, bounds: BacklogBounds) -> bool:
        """Whether one more message of ``size`` bytes stays within both bounds."""
        return (
            self.pairs.get((sender_id, recipient_id), 0) < bounds.per_pair_max
            and self.senders.get(sender_id, 0) + size <= bounds.bytes_per_sender_max
        )

    def pair_rows(self) -> list[tuple[int, int, int]]:
        """(sender id, recipient id, messages), in key order, the zeros left out."""
        return [(*pair, n) for pair, n in sorted(self.pairs.items()) if n]

    def sender_rows(self) -> list[tuple[int, int]]:
        """(sender id, bytes), in key order, the zeros left out."""
        return [(sender, size) for sender, size in sorted(self.senders.items()) if size]


def over_bounds(
    sends: Sequence[NewMessage],
    ids: Mapping[str, int],
    stored: Set[tuple[int, str]],
    counts: Backlog,
    bounds: BacklogBounds,
    blocked: Set[int] = frozenset(),
) -> set[int]:
    """The indexes of the sends a batch must refuse as ``queue_full``, counted in order against
    ``counts`` (read under the commit's lock, and updated here).

    A resend, of an id in ``stored`` or admitted earlier in the batch, is settled before any
    counting: it is reported with its first position, and takes no room; nor does a send in
    ``blocked`` (withheld: stored for no one).
    """
    full: set[int] = set()
    admitted = set(stored)
    for index, send in enumerate(sends):
        recipient_id = ids.get(send.recipient)
        key = (send.sender_id, send.client_id)
        if recipient_id is None or key in admitted or index in blocked:
            continue
        size = len(send.envelope)
        if counts.fits(send.sender_id, recipient_id, size, bounds):
            counts.add(send.sender_id, recipient_id, 1, size)
            admitted.add(key)
        else:
            full.add(index)
    return full


def backlog_changes(
    created: Iterable[MessageRow], marks: Sequence[NewMark], outcomes: Sequence[MarkOutcome]
) -> Backlog:
    """What a commit does to the counts: each message stored new adds, each mark that delivers
    a message for the first time takes it away again."""
    changes = Backlog()
    for _seq, sender_id, recipient_id, _client_id, _ts, envelope in created:
        changes.add(sender_id, recipient_id, 1, len(envelope))
    for mark, outcome in zip(marks, outcomes, strict=True):
        if isinstance(outcome, Receipt) and outcome.delivered is not None:
            sender_id, size = outcome.delivered
            changes.add(sender_id, mark.reader_id, -1, -size)
    return changes


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
    sends: Sequence[NewMessage],
    ids: Mapping[str, int],
    positions: Positions,
    now_ms: int,
    full: Set[int] = frozenset(),
    blocked: Set[int] = frozenset(),
) -> tuple[list[SendOutcome], list[MessageRow]]:
    """Each send to a known recipient takes the next position, unless its index is in ``full``
    (over a backlog bound); the rest are refused, and take none. One in ``blocked`` (its
    recipient blocked its sender) takes a position too, and is withheld: no row, and the
    position stays unused, as a resend's does."""
    outcomes: list[SendOutcome] = [UNKNOWN_RECIPIENT] * len(sends)
    rows: list[MessageRow] = []
    for index, send in enumerate(sends):
        recipient_id = ids.get(send.recipient)
        if index in full:
            outcomes[index] = QUEUE_FULL
        elif index in blocked:
            outcomes[index] = Stored(positions.next(), now_ms, False, withheld=True)
        elif recipient_id is not None:
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


def contact_keys(sends: Sequence[NewMessage], ids: Mapping[str, int]) -> list[tuple[int, int]]:
    """(recipient id, sender id) of each send to a known recipient: the contacts rows that
    say whether the recipient blocked the sender."""
    return sorted({(ids[s.recipient], s.sender_id) for s in sends if s.recipient in ids})


def blocked_sends(
    sends: Sequence[NewMessage], ids: Mapping[str, int], blocks: Set[tuple[int, int]]
) -> set[int]:
    """The indexes of the sends whose recipient blocked their sender (``blocks``: (owner id,
    peer id) of each block found among ``contact_keys``)."""
    return {
        index
        for index, send in enumerate(sends)
        if send.recipient in ids and (ids[send.recipient], send.sender_id) in blocks
    }


def accepted_by_sending(created: Iterable[MessageRow]) -> list[tuple[int, int]]:
    """(sender id, recipient id) of each message stored new: writing to someone accepts them
    (a contacts row "accepted" unless the sender decided otherwise before)."""
    return sorted({(row[1], row[2]) for row in created})


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


def stream_entries(
    created: Iterable[MessageRow],
    mark_outcomes: Sequence[MarkOutcome],
    states: Mapping[int, MarkState],
) -> list[StreamEntry]:
    """The batch's new positions in order, each with the users whose stream it enters: a
    message its sender's and its recipient's, a receipt its message's sender's."""
    entries = [(row[0], frozenset(row[1:3])) for row in created]
    entries += [
        (outcome.seq, frozenset((states[outcome.message_seq].sender_id,)))
        for outcome in mark_outcomes
        if isinstance(outcome, Receipt)
    ]
    return sorted(entries)


def move_heads(entries: Sequence[StreamEntry], heads: dict[int, int]) -> dict[tuple[int, int], int]:
    """Each (user, position) of ``entries`` with the position before it in that user's stream,
    from ``heads`` (each user's highest position, read under the commit's lock, 0 for none),
    which are moved to the entries' last positions in place. Pairwise commits
    (:func:`link_streams`) and group writes (store/*/groups.py) both number streams so."""
    prevs: dict[tuple[int, int], int] = {}
    for seq, users in entries:
        for user in users:
            prevs[(user, seq)] = heads.get(user, 0)
            heads[user] = seq
    return prevs


def link_streams(
    entries: Sequence[StreamEntry],
    heads: dict[int, int],
    send_outcomes: Sequence[SendOutcome],
    created: Iterable[MessageRow],
    mark_outcomes: Sequence[MarkOutcome],
    states: Mapping[int, MarkState],
) -> tuple[list[SendOutcome], list[MarkOutcome]]:
    """The outcomes with each new position's ``prev``: the position before it in the stream
    of each user it enters, from ``heads`` (each user's highest position, read under the
    commit's lock, 0 for none), which are moved to the batch's last positions in place.

    Positions become visible in commit order, so a socket handed a frame whose ``prev`` it
    has not reached knows the database holds what lies between (chat/session.forward).
    """
    prevs = move_heads(entries, heads)
    parties = {row[0]: (row[1], row[2]) for row in created}
    sends: list[SendOutcome] = []
    for outcome in send_outcomes:
        if isinstance(outcome, Stored) and outcome.created:
            sender_id, recipient_id = parties[outcome.seq]
            outcome = replace(
                outcome,
                prev_recipient=prevs[(recipient_id, outcome.seq)],
                prev_sender=prevs[(sender_id, outcome.seq)],
            )
        sends.append(outcome)
    marks: list[MarkOutcome] = []
    for mark in mark_outcomes:
        if isinstance(mark, Receipt):
            mark = replace(mark, prev=prevs[(states[mark.message_seq].sender_id, mark.seq)])
        marks.append(mark)
    return sends, marks


def change_of(row: Sequence[Any], kind: ChangeKind) -> Change:
    """A row of _CHANGES_SQL (either dialect's) as a Change: a group item's id in hex, the
    head a post was sent under in base64, an entry in base64 as its envelope."""
    sender, recipient = row[4] or "", row[5] or ""
    if kind == "group_entry":
        envelope = base64.b64encode(row[10]).decode("ascii")
        return Change(
            row[0], kind, row[2], "", sender, "", row[6], envelope, row[9].hex(), "", row[11]
        )
    if kind in ("group_message", "group_keys"):
        head = base64.b64encode(row[10]).decode("ascii")
        return Change(
            row[0], kind, row[2], row[3], sender, recipient, row[6], row[7], row[9].hex(), head
        )
    return Change(row[0], kind, row[2], row[3], sender, recipient, row[6], row[7])


# --- Groups (issue 13; store/*/groups.py) -------------------------------------------------------


def entry_refusal(found: Sequence[Any] | None, entry: NewEntry) -> GroupRefusal | None:
    """Why ``entry`` cannot follow the stored chain (``found``: its row id, head and length,
    or None), or None when it can."""
    if entry.index == 0:
        return GROUP_EXISTS if found is not None else None
    if found is None:
        return UNKNOWN_GROUP
    if bytes(found[1]) != entry.prev_head or found[2] != entry.index:
        return STALE_HEAD
    return None


@dataclass(frozen=True, slots=True)
class MemberChange:
    """What an entry does to the stored member rows (``append_entry``). The members it keeps
    are carried forward by user id and the gone by name; only the names it brings in are
    looked up, so a gone member's name never resolves to a later account that took it."""

    kept: dict[int, str]
    added: list[str]
    removed: dict[int, str]
    gone: list[str]


def member_change(entry: NewEntry, current: Mapping[int, str], gone: Set[str]) -> MemberChange:
    """Split ``entry``'s member list against the stored one (``current``: the members' ids
    and names; ``gone``: the names of those whose accounts were deleted)."""
    listed, taken_out = set(entry.members), set(entry.removed)
    known = set(current.values()) | gone
    return MemberChange(
        kept={user: name for user, name in current.items() if name in listed},
        added=sorted(listed - known),
        removed={user: name for user, name in current.items() if name in taken_out},
        gone=sorted(listed & gone),
    )


def withhold_from(envelopes: Mapping[int, str | None], blockers: Set[int]) -> dict[int, str | None]:
    """A post's streams without those of the members who blocked its sender (as a blocked
    pair send, withheld: its sender is acked all the same)."""
    return {user: envelope for user, envelope in envelopes.items() if user not in blockers}


def first_recipient(post: NewGroupPost, members: Mapping[int, str]) -> int | None:
    """A distribution's first recipient (its sender's other devices get their envelope,
    naming them), by id; None for a message."""
    if post.kind != "keys" or not post.keys:
        return None
    first = min(post.keys)
    return next(user for user, name in members.items() if name == first)


def group_view(
    group_id: bytes, rows: Sequence[Sequence[Any]], member_id: int | None
) -> GroupView | None:
    """A GroupView from the rows of either dialect's _VIEW: (0, head), (1, entry) in order,
    (2, name, admin, is the reader) for each member, (3, name, admin) for each gone one."""
    if not rows or (member_id is not None and not any(r[0] == 2 and r[4] for r in rows)):
        return None
    head = bytes(rows[0][1])
    entries = [bytes(r[1]) for r in rows if r[0] == 1]
    names = sorted((str(r[2]), bool(r[3])) for r in rows if r[0] in (2, 3))
    gone = sorted(str(r[2]) for r in rows if r[0] == 3)
    members = [name for name, _ in names]
    admins = [name for name, admin in names if admin]
    return GroupView(group_id, head, entries, members, admins, gone)


def post_envelopes(post: NewGroupPost, members: Mapping[int, str]) -> dict[int, str | None] | None:
    """The streams a post enters, each with its own envelope (None: the post's): a message
    every member's, a distribution its recipients' and its sender's, whose other devices get
    the first recipient's envelope, as live (docs/protocol.md "group_keys"; changes_after names
    that recipient). None when a distribution names someone who is not a member, or the
    sender."""
    if post.kind == "message":
        return dict.fromkeys(members)
    ids = {name: user for user, name in members.items() if user != post.sender_id}
    keys = post.keys or {}
    if not keys.keys() <= ids.keys():
        return None
    first = keys[min(keys)] if keys else None
    return {ids[name]: envelope for name, envelope in keys.items()} | {post.sender_id: first}


__all__ = [
    "Backlog",
    "ConversationMove",
    "MarkRow",
    "MarkState",
    "MemberChange",
    "MessageRow",
    "Positions",
    "StreamEntry",
    "UnreadDrop",
    "accepted_by_sending",
    "apply_marks",
    "backlog_changes",
    "blocked_sends",
    "change_of",
    "contact_keys",
    "conversation_moves",
    "entry_refusal",
    "first_recipient",
    "group_view",
    "link_streams",
    "member_change",
    "move_heads",
    "number_sends",
    "over_bounds",
    "post_envelopes",
    "settle_duplicates",
    "stream_entries",
    "withhold_from",
]
