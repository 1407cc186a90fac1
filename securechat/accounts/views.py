"""The accounts API: pre-login, registration, login, logout, and my sessions.

The shapes are a contract (docs/protocol.md). The password never arrives here: the browser
sends ``auth_key``, derived from the password, and an opaque ``key_backup`` it encrypted
with a key that never leaves it.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import time
from typing import Any

from quart import Blueprint, Response, jsonify

from securechat.accounts import validation
from securechat.accounts.hashing import AuthKeyHasher
from securechat.accounts.sessions import (
    end_session,
    notify_session_ended,
    require_session,
    start_session,
    store,
)
from securechat.accounts.throttle import Throttle
from securechat.config import Config
from securechat.errors import InvalidCredentials, NotFound, Throttled
from securechat.runtime import now_ms
from securechat.state import state
from securechat.store import NewUser, Session
from securechat.web.api import client_address, json_body

blueprint = Blueprint("accounts", __name__, url_prefix="/api/v1")


def _config() -> Config:
    return state().config


def _hasher() -> AuthKeyHasher:
    return state().hasher


@blueprint.post("/prelogin")
async def prelogin() -> Response:
    """The salt and iterations to derive ``auth_key`` with; a stable decoy for unknown names."""
    username = validation.username_field(await json_body())
    user = await store().accounts.user_by_name(username)
    if user is not None:
        salt, iterations = user.salt, user.iterations
    else:
        salt, iterations = _decoy_salt(username), _config().kdf_min_iterations
    return jsonify({"salt": _b64(salt), "iterations": iterations})


def _decoy_salt(username: str) -> bytes:
    """A salt for a name that has no account: stable, and indistinguishable from a real one."""
    key = state().secrets.decoy_salt_key
    digest = hmac.new(key, b"prelogin\x00" + username.encode(), hashlib.sha256).digest()
    return digest[: validation.SALT_BYTES]


@blueprint.post("/register")
async def register() -> tuple[Response, int]:
    """Create an account from client-derived material; every field is checked before argon2."""
    config = _config()
    # Counted before the first await, so requests sent all at once are each counted.
    _count_attempt(state().registration_throttle, "register:" + client_address())
    new_user = _parse_registration(await json_body(), config)
    auth_hash = await _hasher().hash(new_user["auth_key"])
    await store().accounts.add_user(
        NewUser(auth_hash=auth_hash, **{k: v for k, v in new_user.items() if k != "auth_key"}),
        now_ms(),
    )
    return jsonify({"username": new_user["username"]}), 201


def _parse_registration(body: dict[str, Any], config: Config) -> dict[str, Any]:
    return {
        "username": validation.username_field(body),
        "salt": validation.exact_bytes_field(body, "salt", validation.SALT_BYTES),
        "iterations": validation.iterations_field(body, config),
        "auth_key": validation.exact_bytes_field(body, "auth_key", validation.AUTH_KEY_BYTES),
        "enc_public_key": validation.rsa_public_key_field(body, "enc_public_key", config),
        "sign_public_key": validation.ed25519_public_key_field(body, "sign_public_key", config),
        "key_backup": validation.key_backup_field(body, config),
    }


@blueprint.post("/login")
async def login() -> Response:
    """Check ``auth_key``; on success open a new session and return the keys and backup."""
    body = await json_body()
    username = validation.username_field(body)
    auth_key = validation.exact_bytes_field(body, "auth_key", validation.AUTH_KEY_BYTES)
    # Each attempt counts as a failure from the start (before the first await), so guesses sent
    # all at once are throttled like guesses sent one by one; a success takes its count back.
    attempts = (
        (state().login_user_throttle, username),
        (state().login_address_throttle, client_address()),
    )
    started = time.monotonic()
    for throttle, key in attempts:
        _refuse_if_throttled(throttle, key)
    for throttle, key in attempts:
        throttle.record_failure(key, started)
    user = await store().accounts.user_by_name(username)
    if user is None:
        await _hasher().waste_time(auth_key)
        raise InvalidCredentials()
    result = await _hasher().verify(user.auth_hash, auth_key)
    if not result.ok:
        raise InvalidCredentials()
    state().login_user_throttle.reset(username)
    state().login_address_throttle.refund(client_address(), started)
    if result.new_hash is not None:
        await store().accounts.update_auth_hash(user.id, result.new_hash)
    await start_session(user)
    return jsonify(
        {
            "username": user.username,
            "enc_public_key": _b64(user.enc_public_key),
            "sign_public_key": _b64(user.sign_public_key),
            "key_backup": user.key_backup,
        }
    )


def _refuse_if_throttled(throttle: Throttle, key: str) -> None:
    wait = throttle.retry_after(key, time.monotonic())
    if wait > 0:
        raise Throttled(wait)


def _count_attempt(throttle: Throttle, key: str) -> None:
    """Refuse if ``key`` is throttled, else count this attempt."""
    _refuse_if_throttled(throttle, key)
    throttle.record_attempt(key, time.monotonic())


@blueprint.post("/logout")
async def logout() -> tuple[str, int]:
    """Revoke this session on the server and clear the cookie."""
    await end_session()
    return "", 204


@blueprint.get("/me")
async def me() -> Response:
    """Who am I."""
    session = await require_session()
    return jsonify({"username": session.username})


@blueprint.get("/sessions")
async def list_sessions() -> Response:
    """My live sessions, newest first, marking this one."""
    session = await require_session()
    config = _config()
    sessions = await store().sessions.live_sessions(
        session.user_id, now_ms(), config.session_idle_timeout * 1000
    )
    return jsonify({"sessions": [_session_json(s, current=s.id == session.id) for s in sessions]})


@blueprint.post("/sessions/revoke-others")
async def revoke_other_sessions() -> Response:
    """Log out every other session of mine."""
    session = await require_session()
    ended = await store().sessions.revoke_others(session.user_id, session.id, now_ms())
    await _notify_ended(ended)
    return jsonify({"revoked": len(ended)})


@blueprint.post("/sessions/<public_id>/revoke")
async def revoke_session(public_id: str) -> tuple[str, int]:
    """Log out one session of mine by its public id."""
    session = await require_session()
    if len(public_id) > 64:
        raise NotFound()
    ended = await store().sessions.revoke_by_public_id(session.user_id, public_id, now_ms())
    if ended is None:
        raise NotFound("No such session.")
    await _notify_ended([ended])
    if ended == session.id:
        await end_session()
    return "", 204


async def _notify_ended(session_ids: list[str]) -> None:
    for session_id in session_ids:
        await notify_session_ended(session_id)


def _session_json(session: Session, *, current: bool) -> dict[str, Any]:
    return {
        "id": session.public_id,
        "current": current,
        "created_at": session.created_at,
        "last_seen_at": session.last_seen_at,
        "user_agent": session.user_agent,
        "address": session.address,
    }


def _b64(data: bytes) -> str:
    return base64.b64encode(data).decode("ascii")
