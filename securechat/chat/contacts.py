"""Who may message me (issue 12, item 5): contacts, message requests and blocks.

Someone I have never written to and whose conversation I have not accepted is a stranger: their
first message is a *request* (listed apart by the page), and we share neither presence nor
typing. Writing to someone accepts them (the commit records it, store/batch.py); accepting a
request does too. Presence and typing pass only between two users who each accepted the other.
A block withholds the blocked sender's messages in the commit itself (acknowledged as stored,
stored for no one: docs/security.md, "Contacts and blocking") and ends presence and typing both ways.

The rules live in the database only (``contacts``, read by each commit under its lock and by
each presence announcement and typing frame), so every node of a cluster applies the same
rules at once: there is no cached copy to invalidate. The views here parse and answer; the
service decides and tells the two people's sockets what changed, through the broker (so on
every node).
"""

from __future__ import annotations

import math
from typing import Final, Literal, get_args

from quart import Blueprint, Response, jsonify, request

from securechat.accounts.sessions import require_session
from securechat.chat.delivery import SharedRate
from securechat.chat.presence import Presence
from securechat.chat.protocol import SEQ_LIMIT, KeyedRateLimiter, normalize_username
from securechat.config import Config
from securechat.errors import ContactsLimited, InvalidField, NotFound, SearchLimited
from securechat.runtime import Clock
from securechat.state import state
from securechat.store import ContactState, ContactStore, User
from securechat.web.api import int_arg, json_body

Action = Literal["accept", "block", "unblock", "delete"]
_ACTIONS: Final[dict[object, Action]] = {action: action for action in get_args(Action)}
_STATES: Final[dict[str, ContactState]] = {"accepted": "accepted", "blocked": "blocked"}
_LAST_SEQ: Final = SEQ_LIMIT - 1

blueprint = Blueprint("contacts", __name__, url_prefix="/api/v1")


class AccountRate:
    """Requests of one kind an account may make (a token bucket per account, all its sessions
    together): counted in the cluster's bucket through ``shared`` when it answers, else in
    this process's table. Past it, ``refused`` (a 429 naming the kind) is raised."""

    def __init__(
        self,
        per_s: float,
        burst: int,
        config: Config,
        clock: Clock,
        refused: type[SearchLimited | ContactsLimited],
    ) -> None:
        self._local = KeyedRateLimiter(per_s, burst, config.send_limiter_table_max)
        self._clock = clock
        self._refused = refused
        # Seconds a refused client is told to wait: one token comes back in 1 / rate seconds.
        self._retry_after = max(1, math.ceil(1 / per_s))

    async def check(self, user_id: int, shared: SharedRate | None) -> None:
        """Take one request from the account's bucket, or raise ``refused`` (429)."""
        allowed = None if shared is None else await shared.allow(user_id)
        if allowed is None:  # one process, or Redis down: this node's own count
            allowed = self._local.allow(user_id, self._clock.now_ms() / 1000)
        if not allowed:
            raise self._refused(self._retry_after)


class Contacts:
    """Applies a user's decisions about another and tells both sockets what follows."""

    def __init__(self, store: ContactStore, presence: Presence, config: Config, clock: Clock):
        self.store = store
        self.presence = presence
        self.clock = clock
        self.searches = AccountRate(
            config.user_search_per_s, config.user_search_burst, config, clock, SearchLimited
        )
        self.rate = AccountRate(
            config.contacts_per_user_per_s,
            config.contacts_per_user_burst,
            config,
            clock,
            ContactsLimited,
        )

    async def decide(
        self, me: int, my_name: str, peer: User, action: Action
    ) -> ContactState | None:
        """Apply ``action`` to ``peer``; my state for them afterwards (None: a stranger).

        Raises NotFound for ``delete`` when the peer's conversation is not a request."""
        now = self.clock.now_ms()
        if action == "accept":
            await self.store.set_state(me, peer.id, "accepted", now)
            if await self.store.sharing(my_name, peer.username):
                await self.presence.introduce(my_name, peer.username)
            return "accepted"
        if action == "block":
            await self.store.set_state(me, peer.id, "blocked", now)
            await self.presence.part(my_name, peer.username)
            return "blocked"
        if action == "unblock":
            await self.store.unblock(me, peer.id)
        elif not await self.store.dismiss(me, peer.id):
            raise NotFound("There is no message request from that user.")
        mine, _ = (await self.store.relations(me, [peer.username]))[peer.username]
        return mine


def contacts() -> Contacts:
    """The running app's contacts service."""
    return state().chat.contacts


async def _count_request(user_id: int) -> None:
    """Count one contacts request against the account's rate, over every node in a cluster."""
    limits = state().limits
    await contacts().rate.check(user_id, None if limits is None else limits.contacts_rate)


# --- Views --------------------------------------------------------------------------------


@blueprint.post("/contacts")
async def decide() -> Response:
    """``{"user", "action"}``: accept, block, unblock a user, or delete their request."""
    session = await require_session()
    await _count_request(session.user_id)
    body = await json_body()
    raw = body.get("action")
    action = _ACTIONS.get(raw) if isinstance(raw, str) else None
    if action is None:
        raise InvalidField("action", "action is one of accept, block, unblock, delete")
    peer = await _peer(body.get("user"), session.username)
    result = await contacts().decide(session.user_id, session.username, peer, action)
    return jsonify({"user": peer.username, "state": result})


@blueprint.get("/contacts")
async def listed() -> Response:
    """The users I accepted (``?state=accepted``, the default) or blocked, latest first."""
    session = await require_session()
    await _count_request(session.user_id)
    wanted = _STATES.get(request.args.get("state", "accepted"))
    if wanted is None:
        raise InvalidField("state", "state is accepted or blocked")
    page = state().config.contacts_page_max
    limit = int_arg("limit", default=page, minimum=1, maximum=page)
    names = await contacts().store.listed(session.user_id, wanted, limit)
    return jsonify({"contacts": names})


@blueprint.get("/requests")
async def requests() -> Response:
    """My message requests (conversations with strangers), most recent first; ``before``
    pages on with the ``last_seq`` of the last one."""
    session = await require_session()
    await _count_request(session.user_id)
    page = state().config.contacts_page_max
    limit = int_arg("limit", default=page, minimum=1, maximum=page)
    before = int_arg("before", default=_LAST_SEQ, minimum=0, maximum=_LAST_SEQ)
    rows = await contacts().store.requests(session.user_id, before, limit + 1)
    return jsonify(
        {
            "requests": [
                {"peer": row.peer, "last_seq": row.last_seq, "unread": row.unread}
                for row in rows[:limit]
            ],
            "more": len(rows) > limit,
        }
    )


async def _peer(raw: object, me: str) -> User:
    """The user named ``raw``: InvalidField if it is no username or mine, NotFound if nobody."""
    try:
        name = normalize_username(raw)  # type: ignore[arg-type]
    except ValueError:
        raise InvalidField("user", "user must be a username") from None
    if name == me:
        raise InvalidField("user", "You cannot decide about yourself.")
    peer = await state().store.accounts.user_by_name(name)
    if peer is None:
        raise NotFound("No such user.")
    return peer


__all__ = ["AccountRate", "Action", "Contacts", "blueprint"]
