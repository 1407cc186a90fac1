"""Password change, the recovery key and key reset, as the settings page does them
(docs/protocol.md "Password change, recovery key and key reset").

The recovery key's crypto is the twin of static/js/crypto.js's recovery functions.

A recovery key is 128 random bits, written as 32 upper-case hex digits in eight groups of four
(``3F9A-0C21-...``). Being uniformly random and that long, it needs no slow derivation: HKDF
gives the ``recovery_auth`` the server hashes and the wrap key of the second key backup, which
never leaves the client.
"""

from __future__ import annotations

import os
import re
from typing import TYPE_CHECKING

from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.kdf.hkdf import HKDF

from securechat import e2e

if TYPE_CHECKING:
    from securechat.client.api import SecureChatClient

RECOVERY_KEY_BYTES = 16
RECOVERY_AUTH_INFO = b"securechat/v1/recovery-auth"
RECOVERY_WRAP_INFO = b"securechat/v1/recovery-wrap"
_SEPARATORS = re.compile(r"[\s-]+")
_HEX = re.compile(r"[0-9A-F]{32}")


def new_recovery_key() -> str:
    """A fresh recovery key, formatted for a person to write down."""
    return format_recovery_key(os.urandom(RECOVERY_KEY_BYTES))


def format_recovery_key(key: bytes) -> str:
    """``XXXX-XXXX-...``: eight groups of four upper-case hex digits."""
    digits = key.hex().upper()
    return "-".join(digits[i : i + 4] for i in range(0, len(digits), 4))


def parse_recovery_key(text: str) -> bytes:
    """The 16 bytes of a recovery key as typed (any case, spaces and dashes anywhere);
    ValueError if it is not one."""
    digits = _SEPARATORS.sub("", text).upper()
    if not _HEX.fullmatch(digits):
        raise ValueError("a recovery key is 32 hex digits (0-9, A-F)")
    return bytes.fromhex(digits)


def derive_recovery_keys(key: bytes) -> e2e.DerivedKeys:
    """HKDF-SHA256 of the recovery key into ``recovery_auth`` (as ``auth_key``) and the wrap
    key of the recovery backup (as ``wrap_key``)."""
    if len(key) != RECOVERY_KEY_BYTES:
        raise ValueError(f"a recovery key is {RECOVERY_KEY_BYTES} bytes")
    return e2e.DerivedKeys(
        auth_key=_hkdf(key, RECOVERY_AUTH_INFO), wrap_key=_hkdf(key, RECOVERY_WRAP_INFO)
    )


def _hkdf(key: bytes, info: bytes) -> bytes:
    """HKDF-SHA256 (RFC 5869) with no salt, 32 bytes, as e2e.derive_keys uses it."""
    return HKDF(algorithm=hashes.SHA256(), length=32, salt=None, info=info).derive(key)


# --- the flows ------------------------------------------------------------------------------


async def change_password(
    client: SecureChatClient, old_password: str, new_password: str, *, iterations: int | None = None
) -> int:
    """Change the signed-in user's password, keeping the keys (the backup is re-wrapped);
    every other session ends. Returns how many did."""
    username = _username(client)
    salt, old_iterations = await client.prelogin(username)
    old = e2e.derive_keys(old_password, salt, old_iterations, min_iterations=client.min_iterations)
    stored = await client.call("GET", "/api/v1/account/key-backup")
    identity = e2e.open_key_backup(stored["key_backup"], old.wrap_key)
    body: dict[str, object] = {"old_auth_key": e2e.b64encode(old.auth_key)}
    body.update(_password_body(client, new_password, iterations or old_iterations, identity))
    answer = await client.call("POST", "/api/v1/account/password", body)
    return int(answer["revoked"])


async def set_recovery_key(client: SecureChatClient, password: str) -> str:
    """Give the signed-in user a new recovery key (replacing any); return it, formatted."""
    username = _username(client)
    assert client.account is not None
    salt, iterations = await client.prelogin(username)
    keys = e2e.derive_keys(password, salt, iterations, min_iterations=client.min_iterations)
    code = new_recovery_key()
    recovery = derive_recovery_keys(parse_recovery_key(code))
    body = {
        "auth_key": e2e.b64encode(keys.auth_key),
        "recovery_auth": e2e.b64encode(recovery.auth_key),
        "recovery_backup": e2e.seal_key_backup(client.account.identity, recovery.wrap_key),
    }
    await client.call("POST", "/api/v1/account/recovery-key", body)
    return code


async def recover(
    client: SecureChatClient,
    username: str,
    recovery_key: str,
    new_password: str,
    *,
    iterations: int,
) -> str:
    """Set a new password with the recovery key, keeping the keys; every session of the
    account ends. Returns the new recovery key that replaces the used one (log in next)."""
    recovery = derive_recovery_keys(parse_recovery_key(recovery_key))
    proof = {"username": username, "recovery_auth": e2e.b64encode(recovery.auth_key)}
    answer = await client.call("POST", "/api/v1/recovery/backup", proof)
    identity = e2e.open_key_backup(answer["recovery_backup"], recovery.wrap_key)
    code = new_recovery_key()
    fresh = derive_recovery_keys(parse_recovery_key(code))
    body: dict[str, object] = dict(proof)
    body.update(_password_body(client, new_password, iterations, identity))
    body["new_recovery_auth"] = e2e.b64encode(fresh.auth_key)
    body["new_recovery_backup"] = e2e.seal_key_backup(identity, fresh.wrap_key)
    await client.call("POST", "/api/v1/recovery/complete", body)
    return code


async def reset_keys(
    client: SecureChatClient, password: str, *, rsa_bits: int = 3072
) -> e2e.Identity:
    """Publish new keys for the signed-in user (history under the old keys is lost); every
    other session ends and the recovery key goes. Returns the new identity, now the account's."""
    username = _username(client)
    assert client.account is not None
    salt, iterations = await client.prelogin(username)
    keys = e2e.derive_keys(password, salt, iterations, min_iterations=client.min_iterations)
    identity = e2e.Identity.generate(rsa_bits)
    body = {
        "auth_key": e2e.b64encode(keys.auth_key),
        "enc_public_key": e2e.b64encode(identity.enc_public_spki),
        "sign_public_key": e2e.b64encode(identity.sign_public_spki),
        "key_backup": e2e.seal_key_backup(identity, keys.wrap_key),
    }
    await client.call("POST", "/api/v1/account/keys", body)
    client.account.identity = identity
    return identity


def _password_body(
    client: SecureChatClient, password: str, iterations: int, identity: e2e.Identity
) -> dict[str, object]:
    """A new password's fields: a fresh salt, its auth_key, the backup under its wrap key."""
    salt = os.urandom(e2e.SALT_BYTES)
    keys = e2e.derive_keys(password, salt, iterations, min_iterations=client.min_iterations)
    return {
        "salt": e2e.b64encode(salt),
        "iterations": iterations,
        "auth_key": e2e.b64encode(keys.auth_key),
        "key_backup": e2e.seal_key_backup(identity, keys.wrap_key),
    }


def _username(client: SecureChatClient) -> str:
    if client.account is None:
        raise RuntimeError("log in first")
    return client.account.username
