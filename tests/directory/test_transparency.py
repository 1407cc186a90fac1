"""Tests for securechat.directory.transparency: log entry bytes and signed tree heads."""

from __future__ import annotations

import base64
import dataclasses
import hashlib
import json
from typing import Any

import pytest
from cryptography.hazmat.primitives.asymmetric.ec import SECP256R1, generate_private_key
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from cryptography.hazmat.primitives.serialization import Encoding, PublicFormat

from securechat.directory.merkle import leaf_hash, verify_inclusion
from securechat.directory.transparency import (
    SignedTreeHead,
    entry_leaf_bytes,
    key_fingerprint,
    sign_tree_head,
    tree_head_bytes,
    user_hash,
    verify_tree_head,
)
from tests import vectorkit

ROOT = hashlib.sha256(b"some root").digest()
FP = bytes(32)


@pytest.fixture(name="vectors", scope="module")
def _vectors() -> dict[str, Any]:
    """The known-answer vectors of tests/vectors/merkle.json."""
    return vectorkit.load("merkle")


@pytest.fixture(name="key")
def _key(vectors: dict[str, Any]) -> Ed25519PrivateKey:
    """The directory key of the vectors: RFC 8032 section 7.1 TEST 1."""
    seed = vectors["signing_key"]["rfc8032_test1"]["seed"]
    return Ed25519PrivateKey.from_private_bytes(bytes.fromhex(seed))


@pytest.fixture(name="spki")
def _spki(vectors: dict[str, Any]) -> bytes:
    """The SPKI DER of the directory key."""
    return base64.b64decode(vectors["signing_key"]["spki"])


@pytest.fixture(name="sth")
def _sth(vectors: dict[str, Any]) -> SignedTreeHead:
    """The signed tree head of the vectors' three-entry log."""
    return SignedTreeHead.from_json(vectors["log"]["sth"])


def _flip(data: bytes, bit: int) -> bytes:
    """Return ``data`` with one bit inverted."""
    out = bytearray(data)
    out[bit // 8] ^= 0x80 >> (bit % 8)
    return bytes(out)


# --- Hashes and entry bytes. ---


def test_user_hash_is_labelled_sha256() -> None:
    """user_hash is SHA-256 of the NUL-terminated label and the UTF-8 name."""
    want = hashlib.sha256(b"securechat/v1/username\x00z\xc3\xa9ta").digest()
    assert user_hash("zéta") == want


def test_user_hash_matches_vectors(vectors: dict[str, Any]) -> None:
    """user_hash gives the pinned hash of each vector entry's name."""
    for entry in vectors["log"]["entries"]:
        assert user_hash(entry["username"]).hex() == entry["user_hash"]


def test_key_fingerprint_is_lowercase_hex_sha256() -> None:
    """key_fingerprint is the lower-case hex SHA-256 of the SPKI bytes."""
    assert key_fingerprint(b"abc") == hashlib.sha256(b"abc").hexdigest()
    assert key_fingerprint(b"abc") == key_fingerprint(b"abc").lower()


def test_entry_leaf_bytes_layout() -> None:
    """Entry bytes are the label, two u64 and three 32-byte fields, in that order."""
    data = entry_leaf_bytes(0x0102, 0x0A0B, b"\x11" * 32, b"\x22" * 32, b"\x33" * 32)
    want = (
        b"securechat/v1/key-entry\x00"
        + bytes.fromhex("0000000000000102")
        + bytes.fromhex("0000000000000a0b")
        + b"\x11" * 32
        + b"\x22" * 32
        + b"\x33" * 32
    )
    assert data == want


def test_entry_leaf_bytes_match_vectors(vectors: dict[str, Any]) -> None:
    """entry_leaf_bytes gives the pinned bytes and leaf hash of each vector entry."""
    for e in vectors["log"]["entries"]:
        data = entry_leaf_bytes(
            e["index"],
            e["timestamp_ms"],
            bytes.fromhex(e["user_hash"]),
            bytes.fromhex(e["enc_fingerprint"]),
            bytes.fromhex(e["sign_fingerprint"]),
        )
        assert (data.hex(), leaf_hash(data).hex()) == (e["leaf_bytes"], e["leaf_hash"])


@pytest.mark.parametrize(
    "args",
    [
        (-1, 0, FP, FP, FP),
        (2**64, 0, FP, FP, FP),
        (True, 0, FP, FP, FP),
        (0, 1.0, FP, FP, FP),
        (0, 0, FP[:31], FP, FP),
        (0, 0, FP, FP + b"\x00", FP),
        (0, 0, FP, FP, FP.hex()),
    ],
)
def test_entry_leaf_bytes_rejects_bad_fields(args: tuple[Any, ...]) -> None:
    """entry_leaf_bytes raises ValueError for an out-of-range integer or a wrong-size hash."""
    with pytest.raises(ValueError, match="must be"):
        entry_leaf_bytes(*args)


def test_log_vectors_prove_every_entry(vectors: dict[str, Any]) -> None:
    """Each vector entry's inclusion proof leads to the root in the signed tree head."""
    log = vectors["log"]
    root = base64.b64decode(log["sth"]["root_hash"])
    size = log["sth"]["tree_size"]
    for entry, case in zip(log["entries"], log["inclusion"], strict=True):
        proof = [bytes.fromhex(p) for p in case["proof"]]
        assert verify_inclusion(bytes.fromhex(entry["leaf_hash"]), case["index"], size, proof, root)


# --- Tree heads. ---


def test_tree_head_bytes_layout() -> None:
    """Tree head bytes are the label, u64 size, u64 timestamp and the root."""
    want = b"securechat/v1/tree-head\x00" + (7).to_bytes(8, "big") + (9).to_bytes(8, "big") + ROOT
    assert tree_head_bytes(7, 9, ROOT) == want


def test_tree_head_bytes_use_all_64_bits() -> None:
    """Sizes and timestamps up to 2**64 - 1 encode big-endian."""
    data = tree_head_bytes(2**64 - 1, 2**63, ROOT)
    assert data[24:40] == bytes.fromhex("ffffffffffffffff8000000000000000")


def test_rfc8032_seed_gives_published_public_key(vectors: dict[str, Any], spki: bytes) -> None:
    """The vectors' key is RFC 8032 TEST 1: its seed yields the published public key."""
    assert spki[-32:].hex() == vectors["signing_key"]["rfc8032_test1"]["public_key"]


def test_sth_matches_vectors(vectors: dict[str, Any], key: Ed25519PrivateKey) -> None:
    """Signing the vector log's head reproduces the pinned bytes and JSON (Ed25519 is deterministic)."""
    log = vectors["log"]
    sth = sign_tree_head(key, 3, log["sth"]["timestamp"], bytes.fromhex(log["root"]))
    assert sth.signed_bytes().hex() == log["tree_head_bytes"]
    assert sth.to_json() == log["sth"]


def test_signed_tree_head_verifies(key: Ed25519PrivateKey, spki: bytes) -> None:
    """A freshly signed tree head verifies under the signer's public key."""
    assert verify_tree_head(spki, sign_tree_head(key, 10, 1_700_000_000_000, ROOT))


def test_json_round_trip(sth: SignedTreeHead) -> None:
    """from_json(to_json()) gives back the same tree head."""
    assert SignedTreeHead.from_json(json.loads(json.dumps(sth.to_json()))) == sth


def test_every_signature_bit_flip_is_rejected(sth: SignedTreeHead, spki: bytes) -> None:
    """Flipping any one of the signature's 512 bits makes it fail."""
    assert verify_tree_head(spki, sth)
    for bit in range(512):
        forged = dataclasses.replace(sth, signature=_flip(sth.signature, bit))
        assert not verify_tree_head(spki, forged), bit


def test_every_tree_size_bit_flip_is_rejected(sth: SignedTreeHead, spki: bytes) -> None:
    """Flipping any one of the tree size's 64 bits makes the signature fail."""
    for bit in range(64):
        forged = dataclasses.replace(sth, tree_size=sth.tree_size ^ (1 << bit))
        assert not verify_tree_head(spki, forged), bit


def test_every_timestamp_bit_flip_is_rejected(sth: SignedTreeHead, spki: bytes) -> None:
    """Flipping any one of the timestamp's 64 bits makes the signature fail."""
    for bit in range(64):
        forged = dataclasses.replace(sth, timestamp_ms=sth.timestamp_ms ^ (1 << bit))
        assert not verify_tree_head(spki, forged), bit


def test_every_root_bit_flip_is_rejected(sth: SignedTreeHead, spki: bytes) -> None:
    """Flipping any one of the root hash's 256 bits makes the signature fail."""
    for bit in range(256):
        forged = dataclasses.replace(sth, root_hash=_flip(sth.root_hash, bit))
        assert not verify_tree_head(spki, forged), bit


def test_other_ed25519_key_is_rejected(vectors: dict[str, Any], sth: SignedTreeHead) -> None:
    """A valid tree head does not verify under a different Ed25519 key."""
    assert not verify_tree_head(base64.b64decode(vectors["signing_key"]["other_spki"]), sth)


def test_non_ed25519_key_is_rejected(sth: SignedTreeHead) -> None:
    """A well-formed SPKI of another algorithm is refused, not an error."""
    ec_spki = (
        generate_private_key(SECP256R1())
        .public_key()
        .public_bytes(Encoding.DER, PublicFormat.SubjectPublicKeyInfo)
    )
    assert not verify_tree_head(ec_spki, sth)


@pytest.mark.parametrize("bad", [b"", b"\x30\x00", b"not der at all", "a string"])
def test_malformed_key_is_rejected(bad: Any, sth: SignedTreeHead) -> None:
    """A malformed public key gives False, not an exception."""
    assert not verify_tree_head(bad, sth)


def test_bad_tree_head_vectors_are_rejected(vectors: dict[str, Any], spki: bytes) -> None:
    """Every malformed vector tree head fails to parse, and every forged one to verify."""
    for case in vectors["log"]["bad_tree_heads"]:
        if case["kind"] == "parse":
            with pytest.raises(ValueError, match=r"\w"):
                SignedTreeHead.from_json(case["sth"])
        else:
            assert not verify_tree_head(spki, SignedTreeHead.from_json(case["sth"])), case["why"]


@pytest.mark.parametrize(
    "changes",
    [
        {"tree_size": -1},
        {"timestamp_ms": 2**64},
        {"tree_size": 1.0},
        {"root_hash": ROOT[:31]},
        {"signature": bytes(63)},
        {"signature": "00" * 64},
    ],
)
def test_signed_tree_head_rejects_bad_fields(changes: dict[str, Any]) -> None:
    """SignedTreeHead refuses out-of-range integers and wrong-size byte fields."""
    fields: dict[str, Any] = {
        "tree_size": 1,
        "timestamp_ms": 1,
        "root_hash": ROOT,
        "signature": bytes(64),
    }
    with pytest.raises(ValueError, match="must be"):
        SignedTreeHead(**(fields | changes))
