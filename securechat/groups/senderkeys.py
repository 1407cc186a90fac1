"""Sender keys: one ratcheting chain per member and group (docs/CONTRACTS.md, "Sender chain").

A sender encrypts each group message once, with AES-256-GCM under a key derived from its chain
by HKDF-SHA256, then ratchets the chain forward (a leaked current chain key does not open
earlier messages) and signs with its Ed25519 identity key. Each chain has a random id that
every message names, so a user sending from two devices (each its own chain) is read from
both. Each other member holds a ``ReceiverChain`` made from the sender's distribution message,
sent over the pairwise envelopes of ``securechat/e2e.py``. After a removal every remaining member starts a fresh chain, so a
removed member's old chains open nothing new. Mirrored by ``static/js/groups/senderkeys.js``.
"""

from __future__ import annotations

import os
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, Final

from cryptography.exceptions import InvalidSignature, InvalidTag
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import ed25519
from cryptography.hazmat.primitives.ciphers.aead import AESGCM
from cryptography.hazmat.primitives.kdf.hkdf import HKDF

from securechat import e2e
from securechat.groups.membership import GROUP_ID_BYTES, HASH_BYTES, MAX_NAME_BYTES

VERSION: Final = 1
CHAIN_KEY_BYTES: Final = 32
# A chain names itself on the wire: one user may send from several devices, each its own chain.
CHAIN_ID_BYTES: Final = 16
MESSAGE_KEY_INFO: Final = b"securechat/v1/group-message-key"
CHAIN_KEY_INFO: Final = b"securechat/v1/group-chain-key"
AAD_LABEL: Final = b"securechat/v1/group-aad"
SIG_LABEL: Final = b"securechat/v1/group-sig"
DISTRIBUTION_LABEL: Final = b"securechat/v1/group-keys"
MAX_ITERATION: Final = 2**32 - 1
# How far ahead of its chain a receiver derives in one step, and how many skipped message keys
# (messages still in flight or lost) it keeps: Signal's sender keys use 2000 for both.
MAX_SKIP: Final = 2000
MAX_SKIPPED_KEYS: Final = 2000
WIRE_KEYS: Final = frozenset({"v", "cid", "it", "iv", "ct", "sig"})


class GroupMessageError(Exception):
    """A group message cannot be opened; ``code`` is what a client shows."""

    code: str = "group_message"


class UnverifiableGroupMessage(GroupMessageError):
    """Malformed, or the sender's signature does not verify: no key was derived."""

    code = "unverifiable"


class UndecryptableGroupMessage(GroupMessageError):
    """Signed, but this chain does not open it (a used, too old or too far iteration, a bad tag)."""

    code = "undecryptable"


def _hkdf(chain_key: bytes, info: bytes) -> bytes:
    """HKDF-SHA256 (RFC 5869), no salt, 32 bytes."""
    return HKDF(algorithm=hashes.SHA256(), length=32, salt=None, info=info).derive(chain_key)


def message_key(chain_key: bytes) -> bytes:
    """The AES-256-GCM key of the message at this chain key's iteration."""
    return _hkdf(chain_key, MESSAGE_KEY_INFO)


def next_chain_key(chain_key: bytes) -> bytes:
    """The chain key of the next iteration (one-way: it does not give this one back)."""
    return _hkdf(chain_key, CHAIN_KEY_INFO)


@dataclass
class SenderChain:
    """The sender's own chain: its id, and the key and iteration of its next message.

    The id is random, so each device of a user (each draws its own chain) is told apart."""

    chain_id: bytes
    chain_key: bytes = field(repr=False)
    iteration: int = 0

    @classmethod
    def fresh(cls) -> SenderChain:
        """A new chain (at creation, and after every removal or leave)."""
        return cls(os.urandom(CHAIN_ID_BYTES), os.urandom(CHAIN_KEY_BYTES))

    def step(self) -> tuple[int, bytes]:
        """The next (iteration, message key); the chain moves past it for good."""
        if self.iteration > MAX_ITERATION:
            raise OverflowError("this chain is used up: start a fresh one")
        out = self.iteration, message_key(self.chain_key)
        self.chain_key, self.iteration = next_chain_key(self.chain_key), self.iteration + 1
        return out

    def distribution(self, group_id: bytes, head: bytes, sender: str) -> Distribution:
        """What the other members need to read this chain from its next message on."""
        return Distribution(group_id, head, sender, self.chain_id, self.iteration, self.chain_key)


@dataclass
class ReceiverChain:
    """One sender's chain as a reader holds it, with the keys of skipped iterations."""

    chain_key: bytes = field(repr=False)
    iteration: int = 0
    skipped: OrderedDict[int, bytes] = field(default_factory=OrderedDict, repr=False)

    @classmethod
    def from_distribution(cls, distribution: Distribution) -> ReceiverChain:
        """The chain a distribution message hands over."""
        return cls(distribution.chain_key, distribution.iteration)

    def take(self, iteration: int, attempt: Callable[[bytes], bytes]) -> bytes:
        """Call ``attempt(message_key)`` for ``iteration``; only if it returns is state kept."""
        if iteration < self.iteration:
            key = self.skipped.get(iteration)
            if key is None:
                raise UndecryptableGroupMessage("this message key was used or dropped")
            result = attempt(key)
            del self.skipped[iteration]
            return result
        if iteration - self.iteration > MAX_SKIP:
            raise UndecryptableGroupMessage(f"more than {MAX_SKIP} messages ahead")
        chain, skipped = self.chain_key, []
        for i in range(self.iteration, iteration):
            skipped.append((i, message_key(chain)))
            chain = next_chain_key(chain)
        result = attempt(message_key(chain))
        self.skipped.update(skipped)
        while len(self.skipped) > MAX_SKIPPED_KEYS:
            self.skipped.popitem(last=False)
        self.chain_key, self.iteration = next_chain_key(chain), iteration + 1
        return result


def _uint32(value: int) -> bytes:
    if not 0 <= value <= MAX_ITERATION:
        raise ValueError("iteration out of range")
    return value.to_bytes(4, "big")


def _ids(group_id: bytes, head: bytes) -> bytes:
    if len(group_id) != GROUP_ID_BYTES or len(head) != HASH_BYTES:
        raise ValueError("group_id must be 16 bytes and head 32")
    return group_id + head


def _chain_id(chain_id: bytes) -> bytes:
    if len(chain_id) != CHAIN_ID_BYTES:
        raise ValueError("a chain id is 16 bytes")
    return chain_id


def group_aad(
    group_id: bytes, head: bytes, sender: str, chain_id: bytes, iteration: int, message_id: str
) -> bytes:
    """AES-GCM associated data: group, membership head, sender, chain, iteration, message id."""
    return b"".join(
        [
            AAD_LABEL,
            _ids(group_id, head),
            e2e.lp(sender.encode("utf-8")),
            _chain_id(chain_id),
            _uint32(iteration),
            e2e.lp(message_id.encode("utf-8")),
        ]
    )


def group_signed_bytes(
    group_id: bytes,
    head: bytes,
    message_id: str,
    sender: str,
    chain_id: bytes,
    iteration: int,
    iv: bytes,
    ct: bytes,
) -> bytes:
    """The bytes the sender's Ed25519 identity key signs."""
    return b"".join(
        [
            SIG_LABEL,
            _ids(group_id, head),
            e2e.lp(message_id.encode("utf-8")),
            e2e.lp(sender.encode("utf-8")),
            _chain_id(chain_id),
            _uint32(iteration),
            e2e.lp(iv),
            e2e.lp(ct),
        ]
    )


def encrypt_group_message(
    *,
    chain: SenderChain,
    group_id: bytes,
    head: bytes,
    sender: str,
    message_id: str,
    plaintext: bytes,
    sign_key: ed25519.Ed25519PrivateKey,
    _iv: bytes | None = None,
) -> dict[str, Any]:
    """Encrypt once for the whole group under the chain's next key, ratchet, and sign."""
    iteration, key = chain.step()
    iv = os.urandom(e2e.IV_BYTES) if _iv is None else _iv
    aad = group_aad(group_id, head, sender, chain.chain_id, iteration, message_id)
    ct = AESGCM(key).encrypt(iv, plaintext, aad)
    signed = group_signed_bytes(
        group_id, head, message_id, sender, chain.chain_id, iteration, iv, ct
    )
    sig = sign_key.sign(signed)
    return {
        "v": VERSION,
        "cid": e2e.b64encode(chain.chain_id),
        "it": iteration,
        "iv": e2e.b64encode(iv),
        "ct": e2e.b64encode(ct),
        "sig": e2e.b64encode(sig),
    }


def open_group_message(
    wire: dict[str, Any],
    *,
    chain: ReceiverChain,
    group_id: bytes,
    head: bytes,
    sender: str,
    message_id: str,
    sender_sign_spki: bytes,
) -> bytes:
    """Verify the sender's signature, then decrypt with the chain's key for its iteration.

    ``chain`` is the one the message names (``wire_chain_id``): the caller picks it."""
    chain_id, iteration, iv, ct = _verify(
        wire, group_id, head, sender, message_id, sender_sign_spki
    )
    aad = group_aad(group_id, head, sender, chain_id, iteration, message_id)

    def attempt(key: bytes) -> bytes:
        try:
            return AESGCM(key).decrypt(iv, ct, aad)
        except InvalidTag as exc:
            raise UndecryptableGroupMessage("the message does not decrypt") from exc

    return chain.take(iteration, attempt)


def _verify(
    wire: dict[str, Any],
    group_id: bytes,
    head: bytes,
    sender: str,
    message_id: str,
    sender_sign_spki: bytes,
) -> tuple[bytes, int, bytes, bytes]:
    """Parse the wire object and check its signature; anything wrong is unverifiable."""
    try:
        if not isinstance(wire, dict) or set(wire) != WIRE_KEYS or wire["v"] != VERSION:
            raise ValueError("not a group message")
        iteration = wire["it"]
        if isinstance(iteration, bool) or not isinstance(iteration, int):
            raise ValueError("iteration must be an integer")
        chain_id, iv, ct, sig = (e2e.b64decode(wire[k]) for k in ("cid", "iv", "ct", "sig"))
        if len(iv) != e2e.IV_BYTES or len(ct) < 16 or len(sig) != e2e.SIGNATURE_BYTES:
            raise ValueError("bad field length")
        signed = group_signed_bytes(group_id, head, message_id, sender, chain_id, iteration, iv, ct)
        e2e.load_ed25519_public_spki(sender_sign_spki).verify(sig, signed)
    except (ValueError, TypeError, InvalidSignature) as exc:
        raise UnverifiableGroupMessage("the sender's signature does not verify") from exc
    return chain_id, iteration, iv, ct


def wire_chain_id(wire: Any) -> bytes | None:
    """The chain a wire object names (to pick the reader's chain), or None if it names none.

    Not verified: the signature, checked when the message is opened, covers it."""
    try:
        chain_id = e2e.b64decode(wire["cid"])
    except (KeyError, TypeError, ValueError):
        return None
    return chain_id if len(chain_id) == CHAIN_ID_BYTES else None


@dataclass(frozen=True)
class Distribution:
    """A sender's chain as handed to one other member (inside a pairwise envelope)."""

    group_id: bytes
    head: bytes
    sender: str
    chain_id: bytes
    iteration: int
    chain_key: bytes = field(repr=False)

    def encode(self) -> bytes:
        """The distribution message's bytes (docs/CONTRACTS.md)."""
        name = self.sender.encode("utf-8")
        if not 1 <= len(name) <= MAX_NAME_BYTES or len(self.chain_key) != CHAIN_KEY_BYTES:
            raise ValueError("bad sender or chain key")
        return b"".join(
            [
                DISTRIBUTION_LABEL,
                _ids(self.group_id, self.head),
                e2e.lp(name),
                _chain_id(self.chain_id),
                _uint32(self.iteration),
                self.chain_key,
            ]
        )

    @classmethod
    def decode(cls, data: bytes) -> Distribution:
        """Decode strictly; ``ValueError`` on any deviation."""
        fixed = len(DISTRIBUTION_LABEL) + GROUP_ID_BYTES + HASH_BYTES
        if len(data) < fixed + 4 or not data.startswith(DISTRIBUTION_LABEL):
            raise ValueError("not a sender-key distribution")
        group_id = data[len(DISTRIBUTION_LABEL) : len(DISTRIBUTION_LABEL) + GROUP_ID_BYTES]
        head = data[fixed - HASH_BYTES : fixed]
        size = int.from_bytes(data[fixed : fixed + 4], "big")
        rest = data[fixed + 4 :]
        tail = CHAIN_ID_BYTES + 4 + CHAIN_KEY_BYTES
        if not 1 <= size <= MAX_NAME_BYTES or len(rest) != size + tail:
            raise ValueError("a sender-key distribution has a bad length")
        sender = rest[:size].decode("utf-8")  # UnicodeDecodeError is a ValueError
        chain_id = rest[size : size + CHAIN_ID_BYTES]
        at = size + CHAIN_ID_BYTES
        iteration = int.from_bytes(rest[at : at + 4], "big")
        return cls(group_id, head, sender, chain_id, iteration, rest[at + 4 :])
