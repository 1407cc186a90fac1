"""A group's name, end-to-end encrypted in its create or rename entry (docs/CONTRACTS.md, "Group name").

The server stores a group's membership entries and so sees each entry's ``detail``; the name is
sealed there under a name key that only members hold (it travels in their sender-key
distributions), bound to the group and to the entry's chain index so that the server cannot
move one name to another group or another rename. Mirrored by ``static/js/groups/``.
"""

from __future__ import annotations

import os
from typing import Final

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.ciphers.aead import AESGCM

from securechat import e2e
from securechat.groups.membership import GROUP_ID_BYTES, MAX_DETAIL_BYTES, MAX_SEQ

NAME_LABEL: Final = b"securechat/v1/group-name"
NAME_KEY_BYTES: Final = 32
TAG_BYTES: Final = 16
# The longest name that fits an entry's detail: iv, ciphertext and tag within 4096 bytes.
MAX_NAME_BYTES: Final = MAX_DETAIL_BYTES - e2e.IV_BYTES - TAG_BYTES


class GroupNameError(ValueError):
    """The detail does not open under this name key (wrong key, group, index, or altered)."""


def new_name_key() -> bytes:
    """A fresh name key: one per create and per rename."""
    return os.urandom(NAME_KEY_BYTES)


def name_aad(group_id: bytes, index: int) -> bytes:
    """What a sealed name is bound to: its group and the chain index of its entry."""
    if len(group_id) != GROUP_ID_BYTES or not 0 <= index <= MAX_SEQ:
        raise ValueError("group_id must be 16 bytes and index a chain position")
    return NAME_LABEL + group_id + index.to_bytes(8, "big")


def seal_name(
    name_key: bytes, name: str, group_id: bytes, index: int, *, _iv: bytes | None = None
) -> bytes:
    """The ``detail`` of the create or rename entry at ``index``: iv || AES-256-GCM(name)."""
    raw = name.encode("utf-8")
    if len(name_key) != NAME_KEY_BYTES or len(raw) > MAX_NAME_BYTES:
        raise ValueError(f"a 32-byte name key and a name of at most {MAX_NAME_BYTES} bytes")
    iv = os.urandom(e2e.IV_BYTES) if _iv is None else _iv
    return iv + AESGCM(name_key).encrypt(iv, raw, name_aad(group_id, index))


def open_name(name_key: bytes, detail: bytes, group_id: bytes, index: int) -> str:
    """The name sealed in the entry at ``index``; ``GroupNameError`` if it does not open."""
    if len(name_key) != NAME_KEY_BYTES or len(detail) < e2e.IV_BYTES + TAG_BYTES:
        raise GroupNameError("not a sealed group name")
    iv, sealed = detail[: e2e.IV_BYTES], detail[e2e.IV_BYTES :]
    try:
        return AESGCM(name_key).decrypt(iv, sealed, name_aad(group_id, index)).decode("utf-8")
    except (InvalidTag, UnicodeDecodeError) as exc:
        raise GroupNameError("the group name does not open with this key") from exc
