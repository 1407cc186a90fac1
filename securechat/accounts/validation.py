"""Checks of every field a client sends to the accounts API.

Each check is cheap and runs before any argon2 work, so an oversized or malformed request
costs the server almost nothing. Each failure names the field.
"""

from __future__ import annotations

import base64
import binascii
from typing import Any

from cryptography.hazmat.primitives.asymmetric import ed25519, rsa
from cryptography.hazmat.primitives.serialization import load_der_public_key

from securechat.chat.protocol import normalize_username
from securechat.config import Config
from securechat.errors import InvalidField

SALT_BYTES = 16
AUTH_KEY_BYTES = 32


def username_field(body: dict[str, Any], name: str = "username") -> str:
    """The normalised username in ``body[name]``."""
    value = body.get(name)
    if not isinstance(value, str):
        raise InvalidField(name, "username must be a string")
    try:
        return normalize_username(value)
    except ValueError as error:
        raise InvalidField(name, str(error)) from None


def bool_field(body: dict[str, Any], name: str) -> bool:
    """``body[name]`` if it is true or false; absent is false."""
    value = body.get(name, False)
    if not isinstance(value, bool):
        raise InvalidField(name, f"{name} must be true or false")
    return value


def base64_field(body: dict[str, Any], name: str, *, max_bytes: int) -> bytes:
    """Decode a standard, padded base64 field, refusing anything over ``max_bytes`` first."""
    value = body.get(name)
    if not isinstance(value, str) or not value:
        raise InvalidField(name, f"{name} must be a base64 string")
    if len(value) > 4 * ((max_bytes + 2) // 3):
        raise InvalidField(name, f"{name} must be at most {max_bytes} bytes")
    try:
        decoded = base64.b64decode(value, validate=True)
    except (binascii.Error, ValueError):
        raise InvalidField(name, f"{name} must be standard base64 with padding") from None
    if len(decoded) > max_bytes:
        raise InvalidField(name, f"{name} must be at most {max_bytes} bytes")
    return decoded


def exact_bytes_field(body: dict[str, Any], name: str, size: int) -> bytes:
    """A base64 field that must decode to exactly ``size`` bytes."""
    decoded = base64_field(body, name, max_bytes=size)
    if len(decoded) != size:
        raise InvalidField(name, f"{name} must be exactly {size} bytes")
    return decoded


def iterations_field(body: dict[str, Any], config: Config) -> int:
    """PBKDF2 iterations within the configured bounds."""
    value = body.get("iterations")
    if not isinstance(value, int) or isinstance(value, bool):
        raise InvalidField("iterations", "iterations must be an integer")
    if not config.kdf_min_iterations <= value <= config.kdf_max_iterations:
        raise InvalidField(
            "iterations",
            f"iterations must be between {config.kdf_min_iterations}"
            f" and {config.kdf_max_iterations}",
        )
    return value


def rsa_public_key_field(body: dict[str, Any], name: str, config: Config) -> bytes:
    """An RSA SPKI DER key of an allowed size, returned as sent."""
    der = base64_field(body, name, max_bytes=config.public_key_max_bytes)
    key = _load_public_key(der, name)
    if not isinstance(key, rsa.RSAPublicKey):
        raise InvalidField(name, f"{name} must be an RSA public key")
    if not config.rsa_min_bits <= key.key_size <= config.rsa_max_bits:
        raise InvalidField(
            name, f"{name} must be {config.rsa_min_bits} to {config.rsa_max_bits} bits"
        )
    if key.public_numbers().e != 65537:
        raise InvalidField(name, f"{name} must use the public exponent 65537")
    return der


def ed25519_public_key_field(body: dict[str, Any], name: str, config: Config) -> bytes:
    """An Ed25519 SPKI DER key, returned as sent."""
    der = base64_field(body, name, max_bytes=config.public_key_max_bytes)
    if not isinstance(_load_public_key(der, name), ed25519.Ed25519PublicKey):
        raise InvalidField(name, f"{name} must be an Ed25519 public key")
    return der


def key_backup_field(body: dict[str, Any], config: Config, name: str = "key_backup") -> str:
    """The opaque key backup: base64 of at least an IV and a GCM tag, within its bound."""
    decoded = base64_field(body, name, max_bytes=config.key_backup_max_bytes)
    if len(decoded) < 12 + 16:
        raise InvalidField(name, f"{name} is too short to be an AES-GCM blob")
    return str(body[name])


def _load_public_key(der: bytes, name: str) -> object:
    try:
        return load_der_public_key(der)
    except (ValueError, TypeError):
        raise InvalidField(name, f"{name} must be a DER SubjectPublicKeyInfo") from None
