"""Byte formats and signatures of the key transparency log.

Each change to a user's published keys becomes one log entry; the entry's leaf bytes
are hashed into the Merkle tree of `securechat.directory.merkle`, and the directory signs the
tree head (size, time, root) with its Ed25519 key, as a CT log signs its STH
(RFC 9162 section 4.10).  Every format starts with a NUL-terminated ASCII label, so
bytes signed or hashed for one purpose can never be read as another.

Integers are uint64 big-endian, as in TLS presentation language (RFC 8446 section 3.3).
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from typing import Any, Protocol

from cryptography.exceptions import InvalidSignature, UnsupportedAlgorithm
from cryptography.hazmat.primitives.asymmetric.ed25519 import (
    Ed25519PrivateKey,
    Ed25519PublicKey,
)
from cryptography.hazmat.primitives.serialization import load_der_public_key

from securechat.directory.merkle import leaf_hash
from securechat.e2e import b64decode, b64encode

# One fingerprint everywhere: the directory key's is shown like a user's (SHA-256 of SPKI, hex).
from securechat.e2e import fingerprint as key_fingerprint

__all__ = [
    "ENTRY_LABEL",
    "TOMBSTONE_FINGERPRINT",
    "TREE_HEAD_LABEL",
    "USERNAME_LABEL",
    "SignedTreeHead",
    "entry_leaf_bytes",
    "entry_leaf_hash",
    "is_tombstone",
    "json_b64",
    "json_uint",
    "key_fingerprint",
    "sign_tree_head",
    "tree_head_bytes",
    "user_hash",
    "verify_tree_head",
]

ENTRY_LABEL = b"securechat/v1/key-entry\x00"
USERNAME_LABEL = b"securechat/v1/username\x00"
TREE_HEAD_LABEL = b"securechat/v1/tree-head\x00"

_HASH_SIZE = 32
_SIGNATURE_SIZE = 64  # Ed25519 (RFC 8032 section 5.1.6)
_U64_MAX = 2**64 - 1
# I-JSON (RFC 7493 section 2.2): integers beyond 2**53 - 1 do not survive a JSON
# parser that uses IEEE doubles, such as the browser's.
_JSON_INT_MAX = 2**53 - 1
_STH_KEYS = frozenset({"tree_size", "timestamp", "root_hash", "signature"})


def _u64(value: int, name: str) -> bytes:
    """Encode ``value`` as a uint64, big-endian."""
    if type(value) is not int or not 0 <= value <= _U64_MAX:
        raise ValueError(f"{name} must be an integer in [0, 2**64)")
    return value.to_bytes(8, "big")


def _hash32(value: bytes, name: str) -> bytes:
    """Return ``value`` after checking it is a 32-byte hash."""
    if not isinstance(value, bytes) or len(value) != _HASH_SIZE:
        raise ValueError(f"{name} must be 32 bytes")
    return value


def user_hash(username: str) -> bytes:
    """Return SHA-256(label || UTF-8(username)), the name under which the log lists a user.

    The public log carries this hash, not the name, but anyone who knows (or guesses)
    a username can find its entries.
    """
    return hashlib.sha256(USERNAME_LABEL + username.encode("utf-8")).digest()


class LogEntryFields(Protocol):
    """What a log entry's leaf is made of, whichever side parsed it (store or client)."""

    @property
    def index(self) -> int: ...
    @property
    def timestamp_ms(self) -> int: ...
    @property
    def user_hash(self) -> bytes: ...
    @property
    def enc_fingerprint(self) -> bytes: ...
    @property
    def sign_fingerprint(self) -> bytes: ...


# A tombstone: the entry logged when an account is deleted (securechat/accounts/lifecycle.py).
# Both its fingerprints are 32 zero bytes, which no key's SHA-256 is (finding one would be a
# SHA-256 preimage), so the leaf format stays as it is and an old leaf can never read as one.
# A client that finds a tombstone as a user's latest entry stops encrypting to them.
TOMBSTONE_FINGERPRINT = bytes(_HASH_SIZE)


def is_tombstone(entry: LogEntryFields) -> bool:
    """Whether ``entry`` records the deletion of its user's account."""
    return entry.enc_fingerprint == TOMBSTONE_FINGERPRINT == entry.sign_fingerprint


def entry_leaf_hash(entry: LogEntryFields) -> bytes:
    """The RFC 9162 leaf hash of a log entry: of :func:`entry_leaf_bytes`."""
    return leaf_hash(
        entry_leaf_bytes(
            entry.index,
            entry.timestamp_ms,
            entry.user_hash,
            entry.enc_fingerprint,
            entry.sign_fingerprint,
        )
    )


def entry_leaf_bytes(
    index: int,
    timestamp_ms: int,
    user_hash: bytes,
    enc_fingerprint: bytes,
    sign_fingerprint: bytes,
) -> bytes:
    """Return the leaf bytes of log entry ``index``, the input to the RFC 9162 leaf hash.

    Layout: label || u64(index) || u64(timestamp_ms) || user_hash(32)
    || enc_fingerprint(32) || sign_fingerprint(32); fingerprints are raw SHA-256 of SPKI.
    """
    return b"".join(
        (
            ENTRY_LABEL,
            _u64(index, "index"),
            _u64(timestamp_ms, "timestamp_ms"),
            _hash32(user_hash, "user_hash"),
            _hash32(enc_fingerprint, "enc_fingerprint"),
            _hash32(sign_fingerprint, "sign_fingerprint"),
        )
    )


def tree_head_bytes(tree_size: int, timestamp_ms: int, root_hash: bytes) -> bytes:
    """Return the signed bytes of a tree head: label || u64(size) || u64(ms) || root(32)."""
    return b"".join(
        (
            TREE_HEAD_LABEL,
            _u64(tree_size, "tree_size"),
            _u64(timestamp_ms, "timestamp_ms"),
            _hash32(root_hash, "root_hash"),
        )
    )


def json_uint(data: dict[str, Any], key: str) -> int:
    """Return ``data[key]`` if it is a non-negative I-JSON integer, else raise ValueError."""
    value = data[key]
    if type(value) is not int or not 0 <= value <= _JSON_INT_MAX:
        raise ValueError(f"{key} must be an integer in [0, 2**53)")
    return value


def json_b64(data: dict[str, Any], key: str, size: int) -> bytes:
    """Return ``data[key]`` decoded from canonical padded base64 of ``size`` bytes."""
    try:
        raw = b64decode(data[key])
    except ValueError as exc:
        raise ValueError(f"{key} must be canonical padded base64") from exc
    if len(raw) != size:
        raise ValueError(f"{key} must be the base64 of {size} bytes")
    return raw


@dataclass(frozen=True)
class SignedTreeHead:
    """A tree head and the directory's Ed25519 signature over `tree_head_bytes`."""

    tree_size: int
    timestamp_ms: int
    root_hash: bytes
    signature: bytes

    def __post_init__(self) -> None:
        """Check the field types and sizes."""
        _u64(self.tree_size, "tree_size")
        _u64(self.timestamp_ms, "timestamp_ms")
        _hash32(self.root_hash, "root_hash")
        if not isinstance(self.signature, bytes) or len(self.signature) != _SIGNATURE_SIZE:
            raise ValueError("signature must be 64 bytes")

    def signed_bytes(self) -> bytes:
        """Return the bytes the signature covers."""
        return tree_head_bytes(self.tree_size, self.timestamp_ms, self.root_hash)

    def to_json(self) -> dict[str, Any]:
        """Return the JSON form: sizes as numbers, hash and signature as base64."""
        return {
            "tree_size": self.tree_size,
            "timestamp": self.timestamp_ms,
            "root_hash": b64encode(self.root_hash),
            "signature": b64encode(self.signature),
        }

    @classmethod
    def from_json(cls, data: object) -> SignedTreeHead:
        """Parse the JSON form strictly (exact keys, types and lengths); raise ValueError."""
        if not isinstance(data, dict) or set(data) != _STH_KEYS:
            raise ValueError(f"a tree head is an object with exactly {sorted(_STH_KEYS)}")
        return cls(
            tree_size=json_uint(data, "tree_size"),
            timestamp_ms=json_uint(data, "timestamp"),
            root_hash=json_b64(data, "root_hash", _HASH_SIZE),
            signature=json_b64(data, "signature", _SIGNATURE_SIZE),
        )


def sign_tree_head(
    private_key: Ed25519PrivateKey, tree_size: int, timestamp_ms: int, root_hash: bytes
) -> SignedTreeHead:
    """Sign a tree head with the directory's Ed25519 key (RFC 8032 section 5.1.6)."""
    message = tree_head_bytes(tree_size, timestamp_ms, root_hash)
    return SignedTreeHead(tree_size, timestamp_ms, root_hash, private_key.sign(message))


def verify_tree_head(public_key_spki: bytes, sth: SignedTreeHead) -> bool:
    """Tell whether ``sth`` carries a valid signature by the Ed25519 key in ``public_key_spki``.

    Returns False, never raises, for a malformed key or a key of another type.
    """
    try:
        key = load_der_public_key(public_key_spki)
    except (ValueError, TypeError, UnsupportedAlgorithm):
        return False
    if not isinstance(key, Ed25519PublicKey):
        return False
    try:
        key.verify(sth.signature, sth.signed_bytes())
    except InvalidSignature:
        return False
    return True
