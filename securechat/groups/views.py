"""The groups' HTTP side (issue 13; docs/protocol.md "Group HTTP endpoints"): post membership
entries, list my groups, read a group's chain and its messages.

Each needs a live session; the writes are CSRF-checked like every state-changing request
(web/security.py) and draw on the account's send rate. The views parse and answer;
groups/service.py decides.
"""

from __future__ import annotations

import base64
import binascii
from json.encoder import encode_basestring_ascii as quote
from typing import Final

from quart import Blueprint, Response, jsonify

from securechat.accounts.sessions import require_session
from securechat.chat.delivery import Principal
from securechat.chat.protocol import GROUP_RE, SEQ_LIMIT
from securechat.errors import InvalidField
from securechat.groups.service import GroupService, Written, b64
from securechat.state import state
from securechat.store.records import GroupHistoryItem, GroupSummary
from securechat.web.api import int_arg, json_body

blueprint = Blueprint("groups", __name__, url_prefix="/api/v1")

_LAST_SEQ: Final = SEQ_LIMIT - 1


def groups() -> GroupService:
    """The running app's group service."""
    return state().groups


@blueprint.post("/groups")
async def create() -> tuple[Response, int]:
    """``{"entry": b64}``: create a group with its first, signed entry."""
    actor = await _actor_within_rate()
    written = await groups().create(actor, await _entry())
    return _written(written), 201


@blueprint.post("/groups/<group>/entries")
async def append(group: str) -> Response:
    """``{"entry": b64}``: the group's next entry (add, remove, leave, rename, make_admin)."""
    actor = await _actor_within_rate()
    return _written(await groups().change(actor, _group_id(group), await _entry()))


@blueprint.get("/groups")
async def listed() -> Response:
    """The groups I am a member of, the latest activity first."""
    session = await require_session()
    rows = await state().store.groups.groups_of(session.user_id, state().config.groups_per_user_max)
    return jsonify({"groups": [_summary(row) for row in rows]})


@blueprint.get("/groups/<group>")
async def shown(group: str) -> Response:
    """The group's whole chain and the server's member list, for a member, read in one
    snapshot: the chain's members, those whose accounts were deleted since included, and
    those named again in ``gone``."""
    session = await require_session()
    view = await groups().member_view(_group_id(group), session.user_id)
    return jsonify(
        {
            "group": group,
            "head": b64(view.head),
            "entries": [b64(entry) for entry in view.entries],
            "members": view.members,
            "admins": view.admins,
            "gone": view.gone,
        }
    )


@blueprint.get("/groups/<group>/messages")
async def messages(group: str) -> Response:
    """The group's messages since I joined, newest first, ``seq < before``, with the counts
    of those who received and read each."""
    session = await require_session()
    group_id = _group_id(group)
    page = state().config.history_page_max
    limit = int_arg("limit", default=page, minimum=1, maximum=page)
    before = int_arg("before", default=_LAST_SEQ, minimum=0, maximum=_LAST_SEQ)
    await groups().membership(group_id, session.user_id)
    rows = await state().store.groups.history(session.user_id, group_id, before, limit + 1)
    # The envelopes are stored as canonical JSON text and spliced in, never re-parsed.
    items = ",".join(_history_json(group, row) for row in rows[:limit])
    more = "true" if len(rows) > limit else "false"
    return Response(f'{{"messages":[{items}],"more":{more}}}', content_type="application/json")


async def _actor_within_rate() -> Principal:
    session = await require_session()
    await groups().admit(session.user_id)
    return Principal(session.user_id, session.username)


def _group_id(raw: str) -> bytes:
    if not GROUP_RE.match(raw):
        raise InvalidField("group", "group must be 32 lower-case hex digits")
    return bytes.fromhex(raw)


async def _entry() -> bytes:
    """The body's ``entry``: canonical base64 (the request body's bound bounds it)."""
    raw = (await json_body()).get("entry")
    if isinstance(raw, str) and raw.isascii():
        try:
            data = base64.b64decode(raw, validate=True)
        except binascii.Error:
            data = b""
        if data and b64(data) == raw:
            return data
    raise InvalidField("entry", "entry must be a membership entry in canonical base64")


def _written(written: Written) -> Response:
    return jsonify({"group": written.group, "head": written.head, "seq": written.seq})


def _summary(row: GroupSummary) -> dict[str, object]:
    return {
        "group": row.group_id.hex(),
        "head": b64(row.head),
        "members": row.members,
        "last_seq": row.last_seq,
        "unread": row.unread,
    }


def _history_json(group: str, item: GroupHistoryItem) -> str:
    return (
        f'{{"seq":{item.seq:d},"id":{quote(item.client_id)},"group":{quote(group)},'
        f'"from":{quote(item.sender)},"head":{quote(b64(item.head))},"ts":{item.ts:d},'
        f'"envelope":{item.envelope},"delivered":{item.delivered:d},"read":{item.read:d},'
        f'"members":{item.members:d}}}'
    )


__all__ = ["blueprint", "groups"]
