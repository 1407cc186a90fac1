"""The key directory: its Ed25519 signing key, its append-only log, and its API.

Every key publication (a registration, a later key change) appends one entry to ``key_log`` in
the same transaction as the change itself (securechat/store/directory.py). This module keeps
the RFC 9162 Merkle tree over those entries in memory, catching up from the store before each
answer, so several worker processes over one database all serve the same log. It signs one tree
head per tree size: the head of size n carries the timestamp of entry n - 1 (0 for the empty
log) and Ed25519 signatures are deterministic (RFC 8032 section 5.1.6), so two different signed
heads for one size can only mean equivocation. Formats: securechat/transparency.py and
docs/protocol.md, "Key directory".
"""

from __future__ import annotations

import asyncio
import logging
import os
import secrets
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from cryptography.hazmat.primitives.serialization import (
    BestAvailableEncryption,
    Encoding,
    KeySerializationEncryption,
    NoEncryption,
    PrivateFormat,
    PublicFormat,
    load_pem_private_key,
)
from quart import Blueprint, Quart, Response, jsonify, request

from securechat.api import int_arg
from securechat.config import Config
from securechat.datadir import write_private_file
from securechat.e2e import b64encode
from securechat.errors import InvalidField, NotFound
from securechat.merkle import MerkleTree
from securechat.protocol import normalize_username
from securechat.sessions import require_session
from securechat.state import AppState, state
from securechat.store.directory import DirectoryStore, LogEntry
from securechat.transparency import (
    SignedTreeHead,
    entry_leaf_hash,
    key_fingerprint,
    sign_tree_head,
    user_hash,
)

log = logging.getLogger(__name__)

KEY_FILE = "directory.key"
# The PEM's PBKDF2 runs only 2048 rounds (cryptography's BestAvailableEncryption for PKCS#8), so
# the passphrase itself must resist guessing: a long random one, as a generated secret would be.
PASSPHRASE_MIN = 16
EXTRA = "directory"
# Entries read from the store per query while catching up (bounds memory at start-up).
_CATCH_UP_BATCH = 10_000
_SIZE_MAX = 2**53 - 1  # I-JSON integers (RFC 7493 section 2.2)

blueprint = Blueprint("directory", __name__, url_prefix="/api/v1")


class DirectoryKeyError(RuntimeError):
    """The directory key file cannot be used (wrong passphrase, damaged, too open)."""


# --- the signing key ---------------------------------------------------------------------------


def load_or_create_key(data_dir: Path, passphrase: str | None = None) -> Ed25519PrivateKey:
    """The directory's Ed25519 key from ``data_dir``, generated there on first use (mode 0600)."""
    if passphrase and len(passphrase) < PASSPHRASE_MIN:
        raise DirectoryKeyError(
            f"SECURECHAT_DIRECTORY_KEY_PASSPHRASE must have at least {PASSPHRASE_MIN} characters"
        )
    path = data_dir / KEY_FILE
    if not path.exists():
        _create_key(path, passphrase)
    return _load_key(path, passphrase)


def _create_key(path: Path, passphrase: str | None) -> None:
    """Write a new key, PKCS#8 PEM, encrypted when a passphrase is given."""
    encryption: KeySerializationEncryption = (
        BestAvailableEncryption(passphrase.encode("utf-8")) if passphrase else NoEncryption()
    )
    pem = Ed25519PrivateKey.generate().private_bytes(Encoding.PEM, PrivateFormat.PKCS8, encryption)
    # Written whole under a temporary name, then linked into place: link fails if the name
    # exists, so two processes starting at once agree on one key and none reads half a file.
    temporary = path.with_name(f".{path.name}.{os.getpid()}.{secrets.token_hex(8)}")
    write_private_file(temporary, pem)
    try:
        os.link(temporary, path)
    except FileExistsError:
        pass
    finally:
        temporary.unlink()


def _load_key(path: Path, passphrase: str | None) -> Ed25519PrivateKey:
    """Read the key, refusing a file others can read (as OpenSSH does) or a wrong passphrase."""
    if path.stat().st_mode & 0o077:
        raise DirectoryKeyError(f"{path} is readable by others: run chmod 600 {path}")
    password = passphrase.encode("utf-8") if passphrase else None
    try:
        key = load_pem_private_key(path.read_bytes(), password=password)
    except TypeError as error:
        raise DirectoryKeyError(
            f"{path}: set SECURECHAT_DIRECTORY_KEY_PASSPHRASE to the key's passphrase"
            if password is None
            else f"{path} is not encrypted: unset SECURECHAT_DIRECTORY_KEY_PASSPHRASE"
        ) from error
    except ValueError as error:
        raise DirectoryKeyError(f"{path}: wrong passphrase, or the file is damaged") from error
    if not isinstance(key, Ed25519PrivateKey):
        raise DirectoryKeyError(f"{path} does not hold an Ed25519 key")
    return key


def public_spki(key: Ed25519PrivateKey) -> bytes:
    """The directory's public key as SPKI DER (44 bytes)."""
    return key.public_key().public_bytes(Encoding.DER, PublicFormat.SubjectPublicKeyInfo)


def key_fingerprint_for(config: Config) -> str:
    """The fingerprint of the directory key of ``config`` (creating the key if needed)."""
    key = load_or_create_key(config.data_dir, config.directory_key_passphrase)
    return key_fingerprint(public_spki(key))


# --- the log -----------------------------------------------------------------------------------


@dataclass(frozen=True)
class Proved:
    """A user's latest log entry, its inclusion proof, and the head it is proved against."""

    entry: LogEntry
    proof: list[bytes]
    head: SignedTreeHead


class KeyDirectory:
    """The signing key and the in-memory Merkle tree over the store's log."""

    def __init__(self, key: Ed25519PrivateKey, store: DirectoryStore) -> None:
        self.spki = public_spki(key)
        self.fingerprint = key_fingerprint(self.spki)
        self._key = key
        self._store = store
        self._tree = MerkleTree()
        self._last_timestamp = 0
        self._head = sign_tree_head(key, 0, 0, self._tree.root())
        self._lock = asyncio.Lock()

    async def refresh(self) -> SignedTreeHead:
        """Append the entries committed since the last call; return the latest signed head."""
        async with self._lock:
            while True:
                size = len(self._tree)
                batch = await self._store.entries(size, size + _CATCH_UP_BATCH)
                for entry in batch:
                    self._append(entry)
                if len(batch) < _CATCH_UP_BATCH:
                    break
            if self._head.tree_size != len(self._tree):
                self._head = sign_tree_head(
                    self._key, len(self._tree), self._last_timestamp, self._tree.root()
                )
            return self._head

    def _append(self, entry: LogEntry) -> None:
        if entry.index != len(self._tree):  # the schema's triggers make this impossible
            raise RuntimeError(f"key_log has a gap at {len(self._tree)}")
        self._tree.append(entry_leaf_hash(entry))
        self._last_timestamp = entry.timestamp_ms

    async def prove_latest(self, username: str) -> Proved | None:
        """The user's newest entry in the latest head, with its inclusion proof."""
        head = await self.refresh()
        entry = await self._store.latest_entry(user_hash(username), head.tree_size)
        if entry is None:
            return None
        return Proved(entry, self._tree.inclusion_proof(entry.index, head.tree_size), head)

    async def consistency(self, old_size: int, new_size: int) -> list[bytes]:
        """PROOF(old_size, D[new_size]); ValueError when the sizes are not in the log."""
        await self.refresh()
        return self._tree.consistency_proof(old_size, new_size)

    async def health(self) -> dict[str, Any]:
        """The /admin/health section: what an operator publishes, and the log's size."""
        head = await self.refresh()
        return {"directory": {"fingerprint": self.fingerprint, "tree_size": head.tree_size}}


def entry_json(entry: LogEntry) -> dict[str, Any]:
    """An entry as served: hashes in base64, fingerprints in lower-case hex as shown to people."""
    return {
        "index": entry.index,
        "timestamp": entry.timestamp_ms,
        "user_hash": b64encode(entry.user_hash),
        "enc_fingerprint": entry.enc_fingerprint.hex(),
        "sign_fingerprint": entry.sign_fingerprint.hex(),
    }


# --- wiring ------------------------------------------------------------------------------------


def install(app: Quart) -> None:
    """Load (or create) the key, attach the directory, and rebuild the tree at start-up.

    Call after the store's own ``before_serving`` is registered: this one needs it open.
    """
    app_state: AppState = app.extensions["securechat"]
    config = app_state.config
    directory = KeyDirectory(
        load_or_create_key(config.data_dir, config.directory_key_passphrase),
        app_state.store.directory,
    )
    app_state.extras[EXTRA] = directory
    app_state.health_contributors.append(directory.health)
    app.register_blueprint(blueprint)

    @app.before_serving
    async def rebuild_log() -> None:
        head = await directory.refresh()
        log.info("key directory %s, tree size %d", directory.fingerprint, head.tree_size)


def directory() -> KeyDirectory:
    """The running app's key directory."""
    result: KeyDirectory = state().extras[EXTRA]
    return result


# --- the API -----------------------------------------------------------------------------------


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
    proved = await directory().prove_latest(name) if user is not None else None
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
            "username": user.username,
            "enc_public_key": b64encode(user.enc_public_key),
            "sign_public_key": b64encode(user.sign_public_key),
            "enc_fingerprint": enc_fp,
            "sign_fingerprint": sign_fp,
            "entry": entry_json(proved.entry),
            "inclusion_proof": [b64encode(p) for p in proved.proof],
            "tree_head": proved.head.to_json(),
        }
    )


def _required_size(name: str) -> int:
    """A required tree-size query parameter."""
    if not request.args.get(name):
        raise InvalidField(name, f"{name} is required")
    return int_arg(name, default=0, minimum=0, maximum=_SIZE_MAX)
