"""The data directory: the database and the server's own secrets, created on first start.

The directory is mode 0700 and every secret file 0600, created with O_EXCL so two starting
processes cannot overwrite each other's secret. The server secret never leaves this
machine; the keys used for cookies, device tokens and decoy salts are derived from it with
HKDF, one per purpose, so no key serves two jobs.
"""

from __future__ import annotations

import hashlib
import hmac
import os
import secrets
from dataclasses import dataclass, field
from pathlib import Path

from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.kdf.hkdf import HKDF

SERVER_SECRET_FILE = "server.secret"  # noqa: S105 (a file name, not a secret)
DIRECTORY_KEY_FILE = "directory.key"
SECRET_BYTES = 32


@dataclass(frozen=True)
class ServerSecrets:
    """Keys derived from the server secret, one per purpose."""

    # repr=False: a log line or traceback showing the app's state never shows a key.
    cookie_key: bytes = field(repr=False)
    decoy_salt_key: bytes = field(repr=False)
    # Signs device tokens (accounts/devices.py): which browsers have logged in before.
    device_token_key: bytes = field(repr=False)
    # Names the secret without revealing it (HMAC of a fixed label): recorded in the database
    # so a node holding another secret refuses to start (securechat/directory/identity.py).
    fingerprint: str


def prepare(data_dir: Path, secret_path: Path | None = None) -> ServerSecrets:
    """Create the data directory and the server secret if needed; return the derived keys.

    The secret lives at ``secret_path`` if given (a cluster's shared file), else in the data
    directory.
    """
    data_dir.mkdir(mode=0o700, parents=True, exist_ok=True)
    os.chmod(data_dir, 0o700)
    master = read_or_create_secret(secret_path or data_dir / SERVER_SECRET_FILE, SECRET_BYTES)
    return ServerSecrets(
        cookie_key=_derive(master, b"securechat/v1/server/cookie"),
        decoy_salt_key=_derive(master, b"securechat/v1/server/decoy-salt"),
        device_token_key=_derive(master, b"securechat/v1/server/device-token"),
        fingerprint=secret_fingerprint(master),
    )


def secret_fingerprint(master: bytes) -> str:
    """A public name for the server secret: HMAC-SHA256 of a fixed label under it, in hex."""
    return hmac.new(master, b"securechat/v1/server/fingerprint", hashlib.sha256).hexdigest()


def read_or_create_secret(path: Path, size: int) -> bytes:
    """Read a secret file, or create it with ``size`` random bytes and mode 0600."""
    write_private_file(path, secrets.token_bytes(size), exist_ok=True)
    data = path.read_bytes()
    if len(data) != size:
        raise RuntimeError(f"{path} is damaged: expected {size} bytes")
    return data


def write_private_file(path: Path, data: bytes, *, exist_ok: bool = False) -> bool:
    """Create ``path`` with mode 0600 holding ``data``; return False if it already existed."""
    try:
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    except FileExistsError:
        if exist_ok:
            return False
        raise
    with os.fdopen(fd, "wb") as handle:
        handle.write(data)
        handle.flush()
        os.fsync(handle.fileno())
    return True


def replace_private_file(path: Path, data: bytes) -> None:
    """Write ``path`` (mode 0600) whole, replacing any file there: a reader, or a crash,
    finds the old content or the new one, never part of either."""
    temporary = path.with_name(path.name + ".tmp")
    temporary.unlink(missing_ok=True)
    write_private_file(temporary, data)
    os.replace(temporary, path)


def _derive(master: bytes, info: bytes) -> bytes:
    return HKDF(algorithm=hashes.SHA256(), length=32, salt=None, info=info).derive(master)
