"""The key directory: its Ed25519 signing key and its append-only log (the API: views.py).

Every key publication (a registration, a later key change) appends one entry to ``key_log`` in
the same transaction as the change itself (securechat/store/interface.py). This module keeps
the RFC 9162 Merkle tree over those entries in memory, catching up from the store before each
answer, so several worker processes over one database all serve the same log. It signs one tree
head per tree size: the head of size n carries the timestamp of entry n - 1 (0 for the empty
log) and Ed25519 signatures are deterministic (RFC 8032 section 5.1.6), so two different signed
heads for one size can only mean equivocation. Formats: securechat/directory/transparency.py and
docs/protocol.md, "Key directory".

Nodes check one another through the store: the first node to sign a head for a size records
its Merkle root (``tree_heads``); every node that catches up to that size compares the root it
computes. A difference (a rewritten log, or a node that builds leaves differently) raises the
equivocation alarm: logged at ERROR, counted in /metrics, shown in /admin/health, and this node
signs no further head (its log answers 503) until an operator has looked.
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

from securechat.config import Config
from securechat.datadir import DIRECTORY_KEY_FILE, write_private_file
from securechat.directory.merkle import MerkleTree
from securechat.directory.transparency import (
    SignedTreeHead,
    entry_leaf_hash,
    key_fingerprint,
    sign_tree_head,
    user_hash,
)
from securechat.e2e import b64encode
from securechat.errors import ServerBusy
from securechat.runtime import WALL_CLOCK
from securechat.store import DirectoryStore, LogEntry

log = logging.getLogger(__name__)

KEY_FILE = DIRECTORY_KEY_FILE
# The PEM's PBKDF2 runs only 2048 rounds (cryptography's BestAvailableEncryption for PKCS#8), so
# the passphrase itself must resist guessing: a long random one, as a generated secret would be.
PASSPHRASE_MIN = 16
# Entries read from the store per query while catching up (bounds memory at start-up).
_CATCH_UP_BATCH = 10_000


class DirectoryKeyError(RuntimeError):
    """The directory key file cannot be used (wrong passphrase, damaged, too open)."""


class DirectoryHalted(ServerBusy):
    """This node found a root that differs from the one recorded for a size: it signs no more."""

    def __init__(self) -> None:
        super().__init__("The key directory is unavailable.")


# --- the signing key ---------------------------------------------------------------------------


def load_or_create_key(data_dir: Path, passphrase: str | None = None) -> Ed25519PrivateKey:
    """The directory's Ed25519 key from ``data_dir``, generated there on first use (mode 0600)."""
    return load_or_create_key_file(data_dir / KEY_FILE, passphrase)


def directory_key(config: Config) -> Ed25519PrivateKey:
    """The directory key of ``config``: ``directory_key_file``, else the data directory's."""
    return load_or_create_key_file(config.directory_key_path, config.directory_key_passphrase)


def load_or_create_key_file(path: Path, passphrase: str | None = None) -> Ed25519PrivateKey:
    """The directory's Ed25519 key from ``path``, generated there on first use (mode 0600)."""
    if passphrase and len(passphrase) < PASSPHRASE_MIN:
        raise DirectoryKeyError(
            f"SECURECHAT_DIRECTORY_KEY_PASSPHRASE must have at least {PASSPHRASE_MIN} characters"
        )
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
    return key_fingerprint(public_spki(directory_key(config)))


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
        # Equivocations found (for /metrics); once one is, no further head is signed.
        self.equivocations = 0
        self._history_checked = False

    async def refresh(self) -> SignedTreeHead:
        """Append the entries committed since the last call; return the latest signed head."""
        async with self._lock:
            if self.equivocations:
                raise DirectoryHalted()
            while True:
                size = len(self._tree)
                batch = await self._store.entries(size, size + _CATCH_UP_BATCH)
                for entry in batch:
                    self._append(entry)
                if len(batch) < _CATCH_UP_BATCH:
                    break
            if self._head.tree_size != len(self._tree):
                await self._check_roots(len(self._tree))
                self._head = sign_tree_head(
                    self._key, len(self._tree), self._last_timestamp, self._tree.root()
                )
            return self._head

    async def _check_roots(self, size: int) -> None:
        """Compare the root of ``size`` (and, on the first catch-up, of the largest size
        recorded below it) with the store's record, recording it if none; DirectoryHalted
        on a difference."""
        if not self._history_checked:
            self._history_checked = True
            earlier = await self._store.latest_root(size - 1)
            if earlier is not None and self._tree.root(earlier[0]) != earlier[1]:
                self._equivocation(earlier[0], earlier[1])
        root = self._tree.root()
        recorded = await self._store.record_root(size, root, WALL_CLOCK.now_ms())
        if recorded != root:
            self._equivocation(size, recorded)

    def _equivocation(self, size: int, recorded: bytes) -> None:
        self.equivocations += 1
        log.error(
            "KEY DIRECTORY EQUIVOCATION: for tree size %d this node computes root %s but the"
            " database records %s (signed first by another node or an earlier start). This"
            " node signs no further tree head. Compare key_log with a backup and with the"
            " heads auditors hold, and every node's version (docs/security.md).",
            size,
            self._tree.root(size).hex(),
            recorded.hex(),
        )
        raise DirectoryHalted()

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

    async def prove_history(self, username: str, limit: int) -> list[Proved]:
        """The user's entries in the latest head, newest first (at most ``limit``), each with
        its inclusion proof against that one head."""
        head = await self.refresh()
        proved: list[Proved] = []
        below = head.tree_size
        while len(proved) < limit:
            entry = await self._store.latest_entry(user_hash(username), below)
            if entry is None:
                break
            proved.append(
                Proved(entry, self._tree.inclusion_proof(entry.index, head.tree_size), head)
            )
            below = entry.index
        return proved

    async def consistency(self, old_size: int, new_size: int) -> list[bytes]:
        """PROOF(old_size, D[new_size]); ValueError when the sizes are not in the log."""
        await self.refresh()
        return self._tree.consistency_proof(old_size, new_size)

    async def health(self) -> dict[str, Any]:
        """The /admin/health section: what an operator publishes, the log's size, and
        ``equivocation`` once this node has found a root that differs from the recorded one
        (``error`` while the log cannot be read)."""
        try:
            head = await self.refresh()
        except DirectoryHalted:
            head, status = self._head, "equivocation"
        except Exception:  # the database does not answer: the last head this node signed
            head, status = self._head, "error"
        else:
            status = "ok"
        return {
            "directory": {
                "status": status,
                "fingerprint": self.fingerprint,
                "tree_size": head.tree_size,
            }
        }


def entry_json(entry: LogEntry) -> dict[str, Any]:
    """An entry as served: hashes in base64, fingerprints in lower-case hex as shown to people."""
    return {
        "index": entry.index,
        "timestamp": entry.timestamp_ms,
        "user_hash": b64encode(entry.user_hash),
        "enc_fingerprint": entry.enc_fingerprint.hex(),
        "sign_fingerprint": entry.sign_fingerprint.hex(),
    }
