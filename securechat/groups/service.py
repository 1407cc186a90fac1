"""Groups on the server (issue 13): what it checks before it stores, and whom it then tells.

The server cannot be trusted with membership (clients verify the whole chain themselves,
securechat/groups/membership.py), but it still checks every entry as a client would, with the
keys it publishes (the users' current sign keys), so that a mistaken or forged change gets a
clear error instead of a chain every member's client refuses. Views parse and answer
(groups/views.py, chat/session.py); this service decides; the store persists
(``GroupStore``).

Replaying a stored chain: its signatures were checked when each entry was appended, with the
keys of that time, and are not checked again (a key reset since would refuse an honest chain;
:func:`~securechat.groups.membership.replay_verified`). The state after the last entry this
process appended or replayed is kept per group, keyed by its head, so a change costs one
signature check; a head this process has not seen (another node's change, an evicted group)
is replayed from the stored chain, one decode per entry.
"""

from __future__ import annotations

import asyncio
import base64
import hashlib
import logging
import math
from collections import OrderedDict
from dataclasses import dataclass
from typing import Final, Protocol

from securechat.chat.delivery import Acked, ChatStats, Principal, Sequenced, refuse
from securechat.chat.hub import Broker, Connection
from securechat.chat.protocol import (
    GroupKeys,
    GroupSend,
    ack_frame,
    group_entry_frame,
    group_keys_frame,
    group_message_frame,
    group_receipt_frame,
)
from securechat.config import Config
from securechat.errors import FrameCode, GroupError, HttpCode, RateLimited
from securechat.groups import membership
from securechat.groups.membership import Action, Entry, GroupState, MembershipError
from securechat.runtime import Clock
from securechat.store import Store
from securechat.store.records import (
    GROUP_EXISTS,
    GROUP_QUEUE_FULL,
    NOT_ANOTHER_MEMBER,
    STALE_HEAD,
    TOO_MANY_GROUPS,
    UNKNOWN_GROUP,
    UNKNOWN_MESSAGE,
    GroupMembership,
    GroupReceipt,
    GroupStored,
    GroupView,
    MarkStatus,
    NewEntry,
    NewGroupPost,
)

log = logging.getLogger(__name__)

# Groups whose replayed state this process keeps (the least recently used go first).
_STATES_MAX: Final = 1024
# The most members SECURECHAT_GROUP_MEMBERS_MAX may allow: the bound clients verify chains with
# (a larger group would be refused by every member's client).
_MEMBERS_LIMIT: Final = membership.GROUP_MEMBERS_MAX
# The least SECURECHAT_GROUP_CHAIN_BYTES_MAX may be: room for a creation naming every member.
_CHAIN_BYTES_LEAST: Final = 64 * 1024
# Stored chains replay under the decoder's bound: they were checked at append, under the
# setting of that time.
_REPLAY_LIMIT: Final = membership.MAX_SUBJECTS

# What the store's refusal of an entry answers over HTTP.
_ENTRY_REFUSALS: Final[dict[str, HttpCode]] = {
    UNKNOWN_GROUP: HttpCode.UNKNOWN_GROUP,
    STALE_HEAD: HttpCode.STALE_HEAD,
    GROUP_EXISTS: HttpCode.GROUP_EXISTS,
    TOO_MANY_GROUPS: HttpCode.TOO_MANY_GROUPS,
}
# And of a post, in an error frame.
_POST_REFUSALS: Final[dict[str, FrameCode]] = {
    UNKNOWN_GROUP: FrameCode.UNKNOWN_GROUP,
    STALE_HEAD: FrameCode.STALE_HEAD,
    NOT_ANOTHER_MEMBER: FrameCode.NOT_A_MEMBER,
    GROUP_QUEUE_FULL: FrameCode.QUEUE_FULL,
    UNKNOWN_MESSAGE: FrameCode.UNKNOWN_MESSAGE,
}


class SendBudget(Protocol):
    """The per-account send rate pair sends draw on (chat/delivery.Delivery.allow_send)."""

    async def allow_send(self, user_id: int, now: float) -> bool:
        """Take one send from the account's budget; False when it is spent."""
        ...


@dataclass(frozen=True, slots=True)
class Written:
    """An entry stored: the group (hex), its new head (b64) and the entry's stream position."""

    group: str
    head: str
    seq: int


def b64(data: bytes) -> str:
    """Standard padded base64, the wire's spelling of bytes."""
    return base64.b64encode(data).decode("ascii")


def _entry_error(error: MembershipError) -> GroupError:
    return GroupError(HttpCode.INVALID_ENTRY, str(error), reason=error.code)


def _refused(code: str, message: str) -> GroupError:
    return _entry_error(MembershipError(code, message))


class GroupService:
    """Checks and stores membership entries, posts and marks, and fans them out."""

    def __init__(
        self,
        store: Store,
        broker: Broker,
        config: Config,
        clock: Clock,
        budget: SendBudget,
        stats: ChatStats,
    ) -> None:
        _check_bounds(config)
        self.store = store
        self.broker = broker
        self.config = config
        self.clock = clock
        self.budget = budget
        self.stats = stats
        self._retry_after = max(1, math.ceil(1 / config.sends_per_user_per_s))
        self._states: OrderedDict[bytes, GroupState] = OrderedDict()

    # Entries (HTTP) -----------------------------------------------------------------------

    async def admit(self, user_id: int) -> None:
        """Take one send from the account's budget for an entry, or raise RateLimited (429)."""
        if not await self.budget.allow_send(user_id, asyncio.get_running_loop().time()):
            raise RateLimited(self._retry_after)

    async def create(self, actor: Principal, data: bytes) -> Written:
        """Store a creation entry signed by ``actor``; its members are told."""
        entry = _decode(data)
        _own(entry, actor)
        self._check_size(entry, 0)
        keys = await self._current_keys(entry)
        try:
            state = membership.verify_chain([data], keys, max_members=self.config.group_members_max)
        except MembershipError as error:
            raise _entry_error(error) from None
        return await self._append(actor, entry, data, state, membership.ZERO_HASH, ())

    async def change(self, actor: Principal, group_id: bytes, data: bytes) -> Written:
        """Append ``actor``'s entry to the group's chain; the members before and after it
        are told (so a removed member's devices learn of it)."""
        entry = _decode(data)
        found = await self.membership(group_id, actor.user_id)
        _own(entry, actor)
        if entry.group_id != group_id:
            raise _refused("reordered", "the entry is of another group")
        if entry.prev_hash != found.head:
            raise GroupError(HttpCode.STALE_HEAD, head=b64(found.head))
        if entry.seq != found.entries:
            raise _refused("reordered", f"entry {entry.seq} does not follow this chain")
        if found.entries >= self.config.group_entries_max:
            limit = self.config.group_entries_max
            raise _refused("bad_change", f"the chain holds its bound of {limit} entries")
        if found.chain_bytes + len(data) > self.config.group_chain_bytes_max:
            limit = self.config.group_chain_bytes_max
            raise _refused("bad_change", f"the chain would pass its bound of {limit} bytes")
        adds = self._check_size(entry, found.members)
        keys = await self._current_keys(entry)
        before = await self._state(group_id, found.head)
        # Only an entry that adds is held to today's bound (_check_size said so already); a
        # group the bound was lowered under can still shrink, rename and promote.
        bound = self.config.group_members_max if adds else membership.MAX_SUBJECTS
        try:
            after = membership.verify_next(before, data, keys, max_members=bound)
        except MembershipError as error:
            raise _entry_error(error) from None
        removed = sorted(set(before.members) - set(after.members))
        return await self._append(actor, entry, data, after, found.head, removed)

    async def member_view(self, group_id: bytes, user_id: int) -> GroupView:
        """The group as stored, read in one snapshot, if ``user_id`` is a member; else
        GroupError unknown_group (404), the same answer as for no such group."""
        view = await self.store.groups.group(group_id, user_id)
        if view is None:
            raise GroupError(HttpCode.UNKNOWN_GROUP)
        return view

    async def membership(self, group_id: bytes, user_id: int) -> GroupMembership:
        """The group's head and sizes without its chain, if ``user_id`` is a member; else
        GroupError unknown_group (404)."""
        found = await self.store.groups.membership(group_id, user_id)
        if found is None:
            raise GroupError(HttpCode.UNKNOWN_GROUP)
        return found

    def _check_size(self, entry: Entry, members: int) -> bool:
        """Whether the entry adds members; one that would make the group too large:
        group_too_large (400)."""
        adds = entry.action in (Action.CREATE, Action.ADD)
        size = members + len(entry.subjects) + (entry.action is Action.CREATE)
        if adds and size > self.config.group_members_max:
            raise GroupError(
                HttpCode.GROUP_TOO_LARGE,
                f"A group has at most {self.config.group_members_max} members.",
            )
        return adds

    async def _current_keys(self, entry: Entry) -> dict[str, list[bytes]]:
        """The actor's current sign key, after checking that each subject the entry brings in
        or promotes is named with their current key (the removed need not be: a member who
        deleted their account or reset their keys can still be removed)."""
        if entry.action is not Action.REMOVE:
            for subject in entry.subjects:
                if _fingerprint(await self._sign_key(subject.username)) != subject.fingerprint:
                    raise _refused("unknown_key", f"{subject.username}'s key is not their current")
        return {entry.actor: [await self._sign_key(entry.actor)]}

    async def _sign_key(self, username: str) -> bytes:
        user = await self.store.accounts.user_by_name(username)
        if user is None:
            raise GroupError(HttpCode.NOT_FOUND, "No such user.", user=username[:64])
        return user.sign_public_key

    async def _state(self, group_id: bytes, head: bytes) -> GroupState:
        """The membership the stored chain justifies at ``head``, from this process's cache
        when it holds that head, else replayed from the stored chain (signatures checked at
        append; the decoder's own bound, not today's setting, which may have been lowered
        since). A chain that moved on since ``head`` answers stale_head; one that does not
        replay (never stored so: a damaged database) answers unknown_group, not a 500."""
        state = self._states.get(group_id)
        if state is None or state.head != head:
            view = await self.store.groups.group(group_id)
            if view is None or view.head != head:
                raise GroupError(HttpCode.STALE_HEAD, head=b64(view.head) if view else "")
            try:
                state = membership.replay_verified(view.entries, max_members=_REPLAY_LIMIT)
            except MembershipError:
                log.exception("the stored chain of group %s does not replay", group_id.hex())
                raise GroupError(HttpCode.UNKNOWN_GROUP) from None
        self._remember(state)
        return state

    def _remember(self, state: GroupState) -> None:
        self._states[state.group_id] = state
        self._states.move_to_end(state.group_id)
        while len(self._states) > _STATES_MAX:
            self._states.popitem(last=False)

    async def _append(
        self,
        actor: Principal,
        entry: Entry,
        data: bytes,
        state: GroupState,
        prev_head: bytes,
        removed: list[str] | tuple[()],
    ) -> Written:
        outcome = await self.store.groups.append_entry(
            NewEntry(
                group_id=entry.group_id,
                index=entry.seq,
                prev_head=prev_head,
                entry=data,
                head=state.head,
                actor_id=actor.user_id,
                members=sorted(state.members),
                admins=sorted(state.admins),
                removed=list(removed),
                groups_per_user_max=self.config.groups_per_user_max,
            ),
            self.clock.now_ms(),
        )
        if not isinstance(outcome, GroupStored):
            raise await self._entry_refusal(outcome, entry.group_id)
        self._remember(state)
        group = entry.group_id.hex()
        text = group_entry_frame(outcome.seq, group, entry.seq, b64(data), outcome.ts)
        for user, prev in outcome.prevs.items():
            await self.broker.publish(user, Sequenced(text, outcome.seq, prev))
        return Written(group, b64(state.head), outcome.seq)

    async def _entry_refusal(self, refusal: str, group_id: bytes) -> GroupError:
        if refusal != STALE_HEAD:
            return GroupError(_ENTRY_REFUSALS.get(refusal, HttpCode.UNKNOWN_GROUP))
        # Someone else's entry won the race: say where the chain stands now.
        view = await self.store.groups.group(group_id)
        head = b64(view.head) if view is not None else ""
        return GroupError(HttpCode.STALE_HEAD, head=head)

    # Posts and marks (the socket; run in frame order by chat/delivery.run_in_order) -------

    async def post(self, conn: Connection, author: Principal, frame: GroupSend | GroupKeys) -> None:
        """Store a group message or key distribution; ack on ``conn`` after the commit, then
        hand each member (each recipient) its frame. A resend gets the first copy's ack."""
        keys = frame.keys if isinstance(frame, GroupKeys) else None
        post = NewGroupPost(
            sender_id=author.user_id,
            client_id=frame.id,
            group_id=bytes.fromhex(frame.group),
            head=base64.b64decode(frame.head),
            kind="message" if keys is None else "keys",
            envelope=frame.keys_json if isinstance(frame, GroupKeys) else frame.envelope_json,
            keys=keys,
            bytes_per_sender_max=self.config.undelivered_bytes_per_sender_max,
        )
        try:
            outcome = await self.store.groups.post(post, self.clock.now_ms())
        except Exception:
            log.exception("storing a group post failed")
            refuse(self.stats, conn, FrameCode.UNAVAILABLE, frame.id)
            return
        if not isinstance(outcome, GroupStored):
            refuse(self.stats, conn, _POST_REFUSALS.get(outcome, FrameCode.UNAVAILABLE), frame.id)
            return
        ack = ack_frame(frame.id, outcome.seq, outcome.ts)
        self.stats.acks += 1
        if not outcome.created:
            conn.deliver(ack)  # fanned out when first stored, not again
            return
        conn.deliver(Acked(ack, outcome.seq, outcome.prevs.get(author.name)))
        await self._fan_out(conn, author, frame, outcome)

    async def _fan_out(
        self,
        conn: Connection,
        author: Principal,
        frame: GroupSend | GroupKeys,
        stored: GroupStored,
    ) -> None:
        # A message's frame is the same for every member: built once.
        shared = _message_text(frame, author.name, stored) if isinstance(frame, GroupSend) else None
        for user, prev in stored.prevs.items():
            text = shared
            if isinstance(frame, GroupKeys):
                text = _keys_text(frame, author.name, user, stored)
            if text is not None:
                mine = conn if user == author.name else None
                await self.broker.publish(user, Sequenced(text, stored.seq, prev), except_conn=mine)

    async def mark(self, conn: Connection, author: Principal, seq: int, status: MarkStatus) -> None:
        """A member marks a group message delivered or read; its sender's sockets get the new
        counts (a ``group_receipt``, which holds no position: plain text through the broker,
        like presence, so it never disturbs a socket's gap detection)."""
        try:
            outcome = await self.store.groups.mark(author.user_id, seq, status, self.clock.now_ms())
        except Exception:
            log.exception("storing a group mark failed")
            refuse(self.stats, conn, FrameCode.UNAVAILABLE, None)
            return
        if isinstance(outcome, GroupReceipt):
            text = group_receipt_frame(
                outcome.group_id.hex(),
                outcome.client_id,
                outcome.delivered,
                outcome.read,
                outcome.members,
            )
            await self.broker.publish(outcome.sender, text)
            self.stats.receipts += 1
        elif outcome is not None:
            refuse(self.stats, conn, FrameCode.UNKNOWN_MESSAGE, None, seq=seq)


def _message_text(frame: GroupSend, sender: str, stored: GroupStored) -> str:
    """The ``group_message`` frame every member gets for a message."""
    return group_message_frame(
        stored.seq, frame.id, frame.group, sender, frame.head, stored.ts, frame.envelope_json
    )


def _keys_text(frame: GroupKeys, sender: str, reader: str, stored: GroupStored) -> str | None:
    """The frame ``reader`` gets for a distribution: only the reader's own envelope (the
    sender's other devices: the first recipient's, named)."""
    to = min(frame.keys) if reader == sender and frame.keys else None
    envelope = frame.keys.get(to or reader)
    if envelope is None:
        return None
    return group_keys_frame(
        stored.seq, frame.id, frame.group, sender, frame.head, stored.ts, envelope, to
    )


def _decode(data: bytes) -> Entry:
    try:
        return membership.decode_entry(data)
    except MembershipError as error:
        raise _entry_error(error) from None


def _own(entry: Entry, actor: Principal) -> None:
    if entry.actor != actor.name:
        raise GroupError(HttpCode.NOT_YOUR_ENTRY)


def _fingerprint(spki: bytes) -> bytes:
    return hashlib.sha256(spki).digest()


def _check_bounds(config: Config) -> None:
    """Refuse group bounds that cannot work (ValueError, said before serving)."""
    if not 2 <= config.group_members_max <= _MEMBERS_LIMIT:
        raise ValueError(f"SECURECHAT_GROUP_MEMBERS_MAX must be 2 to {_MEMBERS_LIMIT}")
    if config.groups_per_user_max < 1:
        raise ValueError("SECURECHAT_GROUPS_PER_USER_MAX must be at least 1")
    if config.group_entries_max < 1:
        raise ValueError("SECURECHAT_GROUP_ENTRIES_MAX must be at least 1")
    if config.group_chain_bytes_max < _CHAIN_BYTES_LEAST:
        raise ValueError(f"SECURECHAT_GROUP_CHAIN_BYTES_MAX must be at least {_CHAIN_BYTES_LEAST}")


__all__ = ["GroupService", "SendBudget", "Written", "b64"]
