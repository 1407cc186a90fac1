"""The chat's HTTP side for the page: find users, list my conversations, page through history.

All three need a live session and answer bounded pages. The real-time part is ``/ws`` (endpoint.py);
shapes are in docs/protocol.md, "Real-time chat".
"""

from __future__ import annotations

import re
import unicodedata
from json.encoder import encode_basestring_ascii as quote
from typing import Final

from quart import Blueprint, Response, jsonify, request

from securechat.accounts.sessions import require_session
from securechat.chat.protocol import SEQ_LIMIT, normalize_username
from securechat.errors import InvalidField, NotFound
from securechat.state import state
from securechat.store import HistoryItem
from securechat.web.api import int_arg

blueprint = Blueprint("conversations", __name__, url_prefix="/api/v1")

# A search: part of a username, after the same NFKC and lower-casing.
_QUERY_RE: Final = re.compile(r"\A[a-z0-9._-]{1,32}\Z")
_QUERY_INPUT_MAX: Final = 128
_LAST_SEQ: Final = SEQ_LIMIT - 1


@blueprint.get("/users")
async def users() -> Response:
    """Usernames containing ``q``, without mine, ranked (the exact name, then those starting
    with it, then the rest): the recipient picker. Bounded in results and, per account, in
    searches a second (429 ``search_limited``), so the list cannot be scraped faster than a
    person types."""
    session = await require_session()
    config = state().config
    query = _search_query(request.args.get("q", ""))
    limit = int_arg(
        "limit", default=config.user_search_max, minimum=1, maximum=config.user_search_max
    )
    limits = state().limits
    await state().chat.contacts.searches.check(
        session.user_id, None if limits is None else limits.search_rate
    )
    names = await state().store.accounts.search_users(query, limit, session.username)
    return jsonify({"users": names})


def _search_query(raw: str) -> str:
    if len(raw) > _QUERY_INPUT_MAX:
        raise InvalidField("q", "q is at most 32 characters")
    query = unicodedata.normalize("NFKC", raw).lower()
    if not _QUERY_RE.match(query):
        raise InvalidField("q", "q is 1 to 32 characters of a-z 0-9 . _ -")
    return query


@blueprint.get("/conversations")
async def conversations() -> Response:
    """My conversations, most recent first: the peer, the latest seq, my unread count, presence.

    ``before`` pages on: pass the ``last_seq`` of the last conversation of the previous page.
    """
    session = await require_session()
    page = state().config.conversations_page_max
    limit = int_arg("limit", default=page, minimum=1, maximum=page)
    before = int_arg("before", default=_LAST_SEQ, minimum=0, maximum=_LAST_SEQ)
    rows = await state().store.messages.conversations(session.user_id, before, limit + 1)
    hub = state().chat.hub
    # "request": I have decided nothing about them; presence only if each accepted the other.
    relations = await state().store.contacts.relations(
        session.user_id, [row.peer for row in rows[:limit]]
    )
    return jsonify(
        {
            "conversations": [
                {
                    "peer": row.peer,
                    "last_seq": row.last_seq,
                    "unread": row.unread,
                    "online": relations.get(row.peer) == ("accepted", "accepted")
                    and hub.is_online(row.peer),
                    "contact": relations.get(row.peer, (None, None))[0] or "request",
                }
                for row in rows[:limit]
            ],
            "more": len(rows) > limit,
        }
    )


@blueprint.get("/messages")
async def messages() -> Response:
    """The conversation with ``with``, newest first, ``seq < before``, at most ``limit``."""
    session = await require_session()
    page = state().config.history_page_max
    peer_name = request.args.get("with", "")
    try:
        peer_name = normalize_username(peer_name)
    except ValueError:
        raise InvalidField("with", "with must be a username") from None
    limit = int_arg("limit", default=page, minimum=1, maximum=page)
    before = int_arg("before", default=_LAST_SEQ, minimum=0, maximum=_LAST_SEQ)
    peer = await state().store.accounts.user_by_name(peer_name)
    if peer is None:
        raise NotFound("No such user.")
    rows = await state().store.messages.history(session.user_id, peer.id, before, limit + 1)
    # The envelopes are stored as canonical JSON text and spliced in, never re-parsed.
    items = ",".join(_history_json(row) for row in rows[:limit])
    more = "true" if len(rows) > limit else "false"
    return Response(f'{{"messages":[{items}],"more":{more}}}', content_type="application/json")


def _history_json(item: HistoryItem) -> str:
    return (
        f'{{"seq":{item.seq:d},"id":{quote(item.client_id)},"from":{quote(item.sender)},'
        f'"to":{quote(item.recipient)},"ts":{item.ts:d},"envelope":{item.envelope},'
        f'"delivered_ts":{_int_or_null(item.delivered_at)},"read_ts":{_int_or_null(item.read_at)}}}'
    )


def _int_or_null(value: int | None) -> str:
    return "null" if value is None else str(int(value))


__all__ = ["blueprint"]
