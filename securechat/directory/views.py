"""The key directory's HTTP API: the public key, signed heads, proofs, entries and a user's keys.

Formats: docs/protocol.md, "Key directory". The decisions live in
:class:`~securechat.directory.service.KeyDirectory`; this module parses and answers.
"""

from __future__ import annotations

import logging
from typing import Any

from quart import Blueprint, Quart, Response, jsonify, request

from securechat.accounts.sessions import require_session
from securechat.chat.protocol import normalize_username
from securechat.directory.identity import IdentityMismatch, check_identity
from securechat.directory.service import DirectoryHalted, KeyDirectory, Proved, entry_json
from securechat.directory.transparency import is_tombstone, key_fingerprint
from securechat.e2e import b64encode
from securechat.errors import InvalidField, NotFound
from securechat.state import state
from securechat.store import ClusterIdentity, User
from securechat.web.api import int_arg

log = logging.getLogger(__name__)

_SIZE_MAX = 2**53 - 1  # I-JSON integers (RFC 7493 section 2.2)

blueprint = Blueprint("directory", __name__, url_prefix="/api/v1")


def install(app: Quart, directory: KeyDirectory) -> None:
    """Register the API; at start-up, check this node holds the cluster's secret files, then
    rebuild the tree.

    Call after the store's own ``before_serving`` is registered: this one needs it open.
    """
    app.register_blueprint(blueprint)

    @app.before_serving
    async def rebuild_log() -> None:
        app_state = state()
        mine = ClusterIdentity(directory.fingerprint, app_state.secrets.fingerprint)
        try:
            await check_identity(
                app_state.store.identity, mine, app_state.config, app_state.clock.now_ms()
            )
        except IdentityMismatch as mismatch:
            log.critical("%s", mismatch)  # the one line an operator reads before the traceback
            raise
        try:
            head = await directory.refresh()
        except DirectoryHalted:  # logged; the node serves on so /admin/health can say why
            return
        log.info("key directory %s, tree size %d", directory.fingerprint, head.tree_size)


def directory() -> KeyDirectory:
    """The running app's key directory."""
    return state().directory


@blueprint.get("/directory")
async def directory_key() -> Response:
    """The directory's public key, to pin and to compare with what the operator publishes."""
    d = directory()
    return jsonify(
        {"algorithm": "Ed25519", "public_key": b64encode(d.spki), "fingerprint": d.fingerprint}
    )


@blueprint.get("/directory/head")
async def tree_head() -> Response:
    """The latest signed tree head."""
    return jsonify((await directory().refresh()).to_json())


@blueprint.get("/directory/consistency")
async def consistency() -> Response:
    """A consistency proof between two tree sizes (RFC 9162 section 2.1.4)."""
    old_size = _required_size("from")
    new_size = _required_size("to")
    if old_size > new_size:
        raise InvalidField("from", "from must not be larger than to")
    try:
        proof = await directory().consistency(old_size, new_size)
    except ValueError:
        raise InvalidField("to", "to is larger than the log") from None
    return jsonify({"from": old_size, "to": new_size, "proof": [b64encode(p) for p in proof]})


@blueprint.get("/directory/entries")
async def entries() -> Response:
    """Entries ``start <= index < end`` for auditors; at most a page, never past the head."""
    head = await directory().refresh()
    page = state().config.directory_entries_page_max
    start = int_arg("start", default=0, minimum=0, maximum=_SIZE_MAX)
    if start > head.tree_size:
        raise InvalidField("start", "start is beyond the end of the log")
    end = int_arg("end", default=start + page, minimum=start, maximum=_SIZE_MAX)
    end = min(end, start + page, head.tree_size)
    rows = await state().store.directory.entries(start, end)
    return jsonify(
        {
            "start": start,
            "end": end,
            "tree_size": head.tree_size,
            "entries": [entry_json(e) for e in rows],
        }
    )


@blueprint.get("/keys/<username>")
async def user_keys(username: str) -> Response:
    """A user's public keys with the log entry, inclusion proof and head that vouch for them."""
    await require_session()
    try:
        name = normalize_username(username)
    except ValueError:
        raise NotFound("No such user.") from None
    user = await state().store.accounts.user_by_name(name)
    proved = await directory().prove_latest(name)
    if proved is not None and is_tombstone(proved.entry):
        # No keys to encrypt to: the account was deleted, or the operator withdrew its keys
        # until its owner publishes new ones. Proved like keys, so the client can believe it.
        return jsonify(_proved_json(name, proved) | {"status": _no_keys(user)})
    if user is None or proved is None:
        raise NotFound("No such user.")
    enc_fp, sign_fp = key_fingerprint(user.enc_public_key), key_fingerprint(user.sign_public_key)
    if (enc_fp, sign_fp) != (
        proved.entry.enc_fingerprint.hex(),
        proved.entry.sign_fingerprint.hex(),
    ):
        # Only a write that bypassed the store can do this; clients will refuse these keys.
        log.error("keys of %r do not match their latest key directory entry", name)
    return jsonify(
        {
            "enc_public_key": b64encode(user.enc_public_key),
            "sign_public_key": b64encode(user.sign_public_key),
            "enc_fingerprint": enc_fp,
            "sign_fingerprint": sign_fp,
        }
        | _proved_json(user.username, proved)
    )


@blueprint.get("/keys/<username>/history")
async def key_history(username: str) -> Response:
    """Every key publication of a user (newest first, at most ``key_history_max``), each with
    its inclusion proof in one signed head: the keys a group chain's older entries may be
    signed with (a reader checks each proof, as for the latest keys)."""
    await require_session()
    try:
        name = normalize_username(username)
    except ValueError:
        raise NotFound("No such user.") from None
    history = await directory().prove_history(name, state().config.key_history_max)
    if not history:
        raise NotFound("No such user.")
    return jsonify(
        {
            "username": name,
            "entries": [
                {"entry": entry_json(p.entry), "inclusion_proof": [b64encode(x) for x in p.proof]}
                for p in history
            ],
            "tree_head": history[0].head.to_json(),
        }
    )


def _no_keys(user: User | None) -> str:
    """What a tombstone as the latest entry means: ``deleted`` (no account) or ``withdrawn``."""
    return "deleted" if user is None else "withdrawn"


def _proved_json(username: str, proved: Proved) -> dict[str, Any]:
    """The user's latest entry with its inclusion proof and the head it is proved against."""
    return {
        "username": username,
        "entry": entry_json(proved.entry),
        "inclusion_proof": [b64encode(p) for p in proved.proof],
        "tree_head": proved.head.to_json(),
    }


def _required_size(name: str) -> int:
    """A required tree-size query parameter."""
    if not request.args.get(name):
        raise InvalidField(name, f"{name} is required")
    return int_arg(name, default=0, minimum=0, maximum=_SIZE_MAX)
