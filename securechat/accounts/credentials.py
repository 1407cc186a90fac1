"""The credentials API: password change, the recovery key, and key reset (issue 12, items 1-2).

The shapes are a contract (docs/protocol.md "Password change, recovery key and key reset").
As at registration, no password or key reaches the server: the browser sends ``auth_key``
values derived from the passwords, a ``recovery_auth`` derived from the recovery key, and key
backups it wrapped itself. Every change that makes other sessions stale ends them here and
tells the chat hub, which closes their sockets on every node.
"""

from __future__ import annotations

import base64
from typing import Any

from quart import Blueprint, Response, jsonify, request

from securechat.accounts import validation
from securechat.accounts.service import Accounts, PasswordMaterial, RecoveryMaterial
from securechat.accounts.sessions import notify_session_ended, require_session
from securechat.config import Config
from securechat.errors import NotAuthenticated
from securechat.state import state
from securechat.store import NewKeys
from securechat.web.api import client_address, json_body

blueprint = Blueprint("credentials", __name__, url_prefix="/api/v1")


def _config() -> Config:
    return state().config


def _accounts() -> Accounts:
    return state().accounts


def _device_token() -> str | None:
    return request.cookies.get(_config().device_cookie_name)


@blueprint.get("/account/key-backup")
async def key_backup() -> Response:
    """My salt, iterations and key backup (to re-wrap), and whether a recovery key is set."""
    session = await require_session()
    user = await _accounts().store.accounts.user_by_name(session.username)
    if user is None or user.id != session.user_id:  # the account is gone
        raise NotAuthenticated()
    set_at = await _accounts().recovery_key_set_at(user.id)
    return jsonify(
        {
            "salt": base64.b64encode(user.salt).decode("ascii"),
            "iterations": user.iterations,
            "key_backup": user.key_backup,
            "recovery_key_set_at": set_at,
        }
    )


@blueprint.post("/account/password")
async def change_password() -> Response:
    """Change my password: the old ``auth_key`` proves it; every other session ends."""
    session = await require_session()
    body = await json_body()
    old_auth_key = validation.exact_bytes_field(body, "old_auth_key", validation.AUTH_KEY_BYTES)
    new = _password_material(body, _config())
    ended = await _accounts().change_password(
        session, old_auth_key, new, client_address(), _device_token()
    )
    await _notify_ended(ended)
    return jsonify({"revoked": len(ended)})


@blueprint.post("/account/recovery-key")
async def set_recovery_key() -> tuple[str, int]:
    """Set or replace my recovery key; the password's ``auth_key`` proves it is me."""
    session = await require_session()
    body = await json_body()
    auth_key = validation.exact_bytes_field(body, "auth_key", validation.AUTH_KEY_BYTES)
    recovery = _recovery_material(body, _config(), "recovery_auth", "recovery_backup")
    await _accounts().set_recovery_key(
        session, auth_key, recovery, client_address(), _device_token()
    )
    return "", 204


@blueprint.post("/account/keys")
async def reset_keys() -> Response:
    """Publish new keys for my account (a key reset); every other session ends."""
    session = await require_session()
    body = await json_body()
    config = _config()
    auth_key = validation.exact_bytes_field(body, "auth_key", validation.AUTH_KEY_BYTES)
    keys = NewKeys(
        enc_public_key=validation.rsa_public_key_field(body, "enc_public_key", config),
        sign_public_key=validation.ed25519_public_key_field(body, "sign_public_key", config),
        key_backup=validation.key_backup_field(body, config),
    )
    ended = await _accounts().reset_own_keys(
        session, auth_key, keys, client_address(), _device_token()
    )
    await _notify_ended(ended)
    return jsonify({"revoked": len(ended)})


@blueprint.post("/recovery/backup")
async def recovery_backup() -> Response:
    """The recovery-wrapped key backup, to whoever proves the recovery key (throttled)."""
    body = await json_body()
    username = validation.username_field(body)
    recovery_auth = validation.exact_bytes_field(body, "recovery_auth", validation.AUTH_KEY_BYTES)
    backup = await _accounts().recovery_backup(username, recovery_auth, client_address())
    return jsonify({"recovery_backup": backup})


@blueprint.post("/recovery/complete")
async def complete_recovery() -> Response:
    """A new password and recovery key for whoever proves the recovery key; every session of
    the account ends, and the key used never works again."""
    body = await json_body()
    config = _config()
    username = validation.username_field(body)
    recovery_auth = validation.exact_bytes_field(body, "recovery_auth", validation.AUTH_KEY_BYTES)
    new = _password_material(body, config)
    new_recovery = _recovery_material(body, config, "new_recovery_auth", "new_recovery_backup")
    ended = await _accounts().recover(username, recovery_auth, new, new_recovery, client_address())
    await _notify_ended(ended)
    return jsonify({"username": username, "revoked": len(ended)})


def _password_material(body: dict[str, Any], config: Config) -> PasswordMaterial:
    """The new password's fields, named as at registration."""
    return PasswordMaterial(
        salt=validation.exact_bytes_field(body, "salt", validation.SALT_BYTES),
        iterations=validation.iterations_field(body, config),
        auth_key=validation.exact_bytes_field(body, "auth_key", validation.AUTH_KEY_BYTES),
        key_backup=validation.key_backup_field(body, config),
    )


def _recovery_material(
    body: dict[str, Any], config: Config, auth_name: str, backup_name: str
) -> RecoveryMaterial:
    return RecoveryMaterial(
        recovery_auth=validation.exact_bytes_field(body, auth_name, validation.AUTH_KEY_BYTES),
        key_backup=validation.key_backup_field(body, config, backup_name),
    )


async def _notify_ended(session_ids: list[str]) -> None:
    for session_id in session_ids:
        await notify_session_ended(session_id)
