"""The accounts API: pre-login, registration, login, logout, and my sessions.

The shapes are a contract (docs/protocol.md). The password never arrives here: the browser
sends ``auth_key``, derived from the password, and an opaque ``key_backup`` it encrypted
with a key that never leaves it. A login reads and sets the device cookie, which carries the
browser's device token (accounts/devices.py); logout leaves it, for it is not a session.
"""

from __future__ import annotations

import base64
from typing import Any

from quart import Blueprint, Response, jsonify, request

from securechat.accounts import lifecycle, validation
from securechat.accounts.service import Accounts, Registration
from securechat.accounts.sessions import (
    end_session,
    notify_session_ended,
    require_session,
    start_session,
)
from securechat.config import Config
from securechat.errors import InvalidField
from securechat.state import state
from securechat.store import Session
from securechat.web.api import client_address, json_body

blueprint = Blueprint("accounts", __name__, url_prefix="/api/v1")


def _config() -> Config:
    return state().config


def _accounts() -> Accounts:
    return state().accounts


@blueprint.post("/prelogin")
async def prelogin() -> Response:
    """The salt and iterations to derive ``auth_key`` with; a stable decoy for unknown names."""
    username = validation.username_field(await json_body())
    kdf = await _accounts().prelogin(username)
    return jsonify({"salt": _b64(kdf.salt), "iterations": kdf.iterations})


@blueprint.post("/register")
async def register() -> tuple[Response, int]:
    """Create an account from client-derived material; every field is checked before argon2."""
    accounts = _accounts()
    # Counted before the body is read (and, without shared limits, before the first await),
    # so requests sent all at once are each counted.
    await accounts.admit_registration(client_address())
    registration = _parse_registration(await json_body(), _config())
    await accounts.register(registration)
    return jsonify({"username": registration.username}), 201


def _parse_registration(body: dict[str, Any], config: Config) -> Registration:
    return Registration(
        username=validation.username_field(body),
        salt=validation.exact_bytes_field(body, "salt", validation.SALT_BYTES),
        iterations=validation.iterations_field(body, config),
        auth_key=validation.exact_bytes_field(body, "auth_key", validation.AUTH_KEY_BYTES),
        enc_public_key=validation.rsa_public_key_field(body, "enc_public_key", config),
        sign_public_key=validation.ed25519_public_key_field(body, "sign_public_key", config),
        key_backup=validation.key_backup_field(body, config),
    )


@blueprint.post("/register/check")
async def register_check() -> Response:
    """Whether ``username`` could be registered now: 200, or the 409 ``/register`` would give.

    The sign-up page asks before it spends seconds on key generation. It reveals what a
    registration attempt reveals, on the same per-address budget, and nothing more.
    """
    accounts = _accounts()
    await accounts.admit_registration(client_address())  # counted as a registration attempt
    username = validation.username_field(await json_body())
    await accounts.check_available(username)
    return jsonify({"username": username, "available": True})


@blueprint.post("/login")
async def login() -> Response:
    """Check ``auth_key``; on success open a new session and return the keys and backup."""
    body = await json_body()
    username = validation.username_field(body)
    auth_key = validation.exact_bytes_field(body, "auth_key", validation.AUTH_KEY_BYTES)
    accounts, config = _accounts(), _config()
    device_token = request.cookies.get(config.device_cookie_name)
    user = await accounts.login(username, auth_key, client_address(), device_token)
    await start_session(user)
    response = jsonify(
        {
            "username": user.username,
            "enc_public_key": _b64(user.enc_public_key),
            "sign_public_key": _b64(user.sign_public_key),
            "key_backup": user.key_backup,
            "keys_withdrawn": await lifecycle.keys_withdrawn(state().store, user.username),
        }
    )
    _set_device_cookie(response, accounts.issue_device_token(user), config)
    return response


def _set_device_cookie(response: Response, token: str, config: Config) -> None:
    """The browser's device cookie: like the session's (``__Host-``, Secure, HttpOnly,
    SameSite=Strict, Path=/), but it outlives the session and logout."""
    response.set_cookie(
        config.device_cookie_name,
        token,
        max_age=config.device_cookie_max_age,
        path="/",
        secure=True,
        httponly=True,
        samesite="Strict",
    )


@blueprint.post("/logout")
async def logout() -> Response:
    """Revoke this session on the server and clear the cookie; with ``forget_device`` clear the
    device cookie too, so a shared computer keeps no login budget of the person who left."""
    forget_device = False
    if request.content_length:
        forget_device = validation.bool_field(await json_body(), "forget_device")
    await end_session()
    response = Response("", status=204)
    if forget_device:
        response.delete_cookie(
            _config().device_cookie_name, path="/", secure=True, httponly=True, samesite="Strict"
        )
    return response


@blueprint.get("/me")
async def me() -> Response:
    """Who am I."""
    session = await require_session()
    return jsonify({"username": session.username})


@blueprint.get("/sessions")
async def list_sessions() -> Response:
    """My live sessions, newest first, marking this one."""
    session = await require_session()
    sessions = await _accounts().live_sessions(session.user_id)
    return jsonify({"sessions": [_session_json(s, current=s.id == session.id) for s in sessions]})


@blueprint.post("/sessions/revoke-others")
async def revoke_other_sessions() -> Response:
    """Log out every other session of mine."""
    session = await require_session()
    ended = await _accounts().revoke_other_sessions(session)
    await _notify_ended(ended)
    return jsonify({"revoked": len(ended)})


@blueprint.post("/sessions/<public_id>/revoke")
async def revoke_session(public_id: str) -> tuple[str, int]:
    """Log out one session of mine by its public id."""
    session = await require_session()
    ended = await _accounts().revoke_session(session, public_id)
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


@blueprint.post("/account/delete")
async def delete_account() -> Response:
    """Delete my account, once ``auth_key`` is checked as a login checks it (accounts/lifecycle)."""
    session = await require_session()
    body = await json_body()
    username = validation.username_field(body)
    auth_key = validation.exact_bytes_field(body, "auth_key", validation.AUTH_KEY_BYTES)
    if username != session.username:
        raise InvalidField("username", "You can only delete your own account.")
    device_token = request.cookies.get(_config().device_cookie_name)
    await _accounts().login(username, auth_key, client_address(), device_token)
    deletion = await lifecycle.for_app(state()).delete(username, by="its owner")
    await _notify_ended(deletion.sessions)
    await end_session()
    return jsonify({"username": username, "name_reusable_at": deletion.reusable_at_ms})
