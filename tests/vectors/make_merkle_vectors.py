"""Regenerate tests/vectors/merkle.json, the known answers for the transparency log.

Run from the repository root:  .venv/bin/python -m tests.vectors.make_merkle_vectors

Two kinds of data go into the file:

* ``rfc6962`` and ``rfc8032`` are external known answers, copied by hand below and
  never computed here.  The RFC 6962 8-leaf test data (leaf inputs, leaf hashes, roots
  for sizes 0..8, inclusion and consistency proofs) come from transparency-dev/merkle,
  which took them from the RFC 6962 reference implementation (google/certificate-
  transparency):
    - testonly/constants.go  LeafInputs, NodeHashes()[0], RootHashes()
      https://github.com/transparency-dev/merkle/blob/582a6ad190b6848f1d26f8bf08ddef29955d9db1/testonly/constants.go
    - testonly/reference_test.go  TestRefInclusionProof, TestRefConsistencyProof
      https://github.com/transparency-dev/merkle/blob/141d627eab770a7e9a2514f46a8b6338e6d90874/testonly/reference_test.go
    - proof/verify_test.go  inclusionProofs (1-based leaf there, 0-based here), consistencyProofs
      https://github.com/transparency-dev/merkle/blob/02194e9afb6c1d95b5381350007963aa70fff472/proof/verify_test.go
  The signing key is RFC 8032 section 7.1, TEST 1 (and TEST 2 as "some other key").
* ``computed`` and ``log`` are made by our own code (securechat.directory.merkle and
  securechat.directory.transparency).  They pin today's behaviour for the JavaScript twin and
  for regressions; this script refuses to write them unless our code first reproduces
  every external answer above.
"""

from __future__ import annotations

import base64
import hashlib
import json
from pathlib import Path
from typing import Any

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from cryptography.hazmat.primitives.serialization import Encoding, PublicFormat

from securechat.directory import merkle, transparency

OUTPUT = Path(__file__).with_name("merkle.json")
_B64_ALPHABET = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/"

# --- External known answers (see the module docstring for sources). ---

LEAF_INPUTS = [
    "",
    "00",
    "10",
    "2021",
    "3031",
    "40414243",
    "5051525354555657",
    "606162636465666768696a6b6c6d6e6f",
]
LEAF_HASHES = [
    "6e340b9cffb37a989ca544e6bb780a2c78901d3fb33738768511a30617afa01d",
    "96a296d224f285c67bee93c30f8a309157f0daa35dc5b87e410b78630a09cfc7",
    "0298d122906dcfc10892cb53a73992fc5b9f493ea4c9badb27b791b4127a7fe7",
    "07506a85fd9dd2f120eb694f86011e5bb4662e5c415a62917033d4a9624487e7",
    "bc1a0643b12e4d2d7c77918f44e0f4f79a838b6cf9ec5b5c283e1f4d88599e6b",
    "4271a26be0d8a84f0bd54c8c302e7cb3a3b5d1fa6780a40bcce2873477dab658",
    "b08693ec2e721597130641e8211e7eedccb4c26413963eee6c1e2ed16ffb1a5f",
    "46f6ffadd3d06a09ff3c5860d2755c8b9819db7df44251788c7d8e3180de8eb1",
]
ROOTS = [  # indexed by tree size, 0..8
    "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855",
    "6e340b9cffb37a989ca544e6bb780a2c78901d3fb33738768511a30617afa01d",
    "fac54203e7cc696cf0dfcb42c92a1d9dbaf70ad9e621f4bd8d98662f00e3c125",
    "aeb6bcfe274b70a14fb067a5e5578264db0fa9b51af5e0ba159158f329e06e77",
    "d37ee418976dd95753c1c73862b9398fa2a2cf9b4ff0fdfe8b30cd95209614b7",
    "4e3bbb1f7b478dcfe71fb631631519a3bca12c9aefca1612bfce4c13a86264d4",
    "76e67dadbcdf1e10e1b74ddc608abd2f98dfb16fbce75277b5232a127f2087ef",
    "ddb89be403809e325750d3d263cd78929c2942b7942a34b77e122c9594a74c8c",
    "5dc9da79a70659a9ad559cb701ded9a2ab9d823aad2f4960cfe370eff4604328",
]
_H = {  # the subtree hashes that appear in the published proofs
    "l0": "6e340b9cffb37a989ca544e6bb780a2c78901d3fb33738768511a30617afa01d",
    "l1": "96a296d224f285c67bee93c30f8a309157f0daa35dc5b87e410b78630a09cfc7",
    "l4": "bc1a0643b12e4d2d7c77918f44e0f4f79a838b6cf9ec5b5c283e1f4d88599e6b",
    "l6": "b08693ec2e721597130641e8211e7eedccb4c26413963eee6c1e2ed16ffb1a5f",
    "n01": "fac54203e7cc696cf0dfcb42c92a1d9dbaf70ad9e621f4bd8d98662f00e3c125",
    "n23": "5f083f0a1a33ca076a95279832580db3e0ef4584bdff1f54c8a360f50de3031e",
    "n45": "0ebc5d3437fbe2db158b9f126a1d118e308181031d0a949f8dededebc558ef6a",
    "n67": "ca854ea128ed050b41b35ffc1b87b8eb2bde461e9e3b5596ece6b9d5975a0ae0",
    "n03": "d37ee418976dd95753c1c73862b9398fa2a2cf9b4ff0fdfe8b30cd95209614b7",
    "n47": "6b47aaf29ee3c2af9af889bc1fb9254dabd31177f16232dd6aab035ca39bf6e4",
}
INCLUSION = [  # (index, size, proof)
    (0, 1, []),
    (0, 2, ["l1"]),
    (1, 2, ["l0"]),
    (2, 3, ["n01"]),
    (1, 5, ["l0", "n23", "l4"]),
    (0, 8, ["l1", "n23", "n47"]),
    (5, 8, ["l4", "n67", "n03"]),
]
CONSISTENCY = [  # (old_size, new_size, proof)
    (1, 1, []),
    (1, 8, ["l1", "n23", "n47"]),
    (2, 5, ["n23", "l4"]),
    (6, 8, ["n45", "n67", "n03"]),
    (6, 7, ["n45", "l6", "n03"]),
]
# RFC 8032 section 7.1: TEST 1 and TEST 2 (SECRET KEY is the 32-byte seed).
RFC8032_TEST1 = {
    "seed": "9d61b19deffd5a60ba844af492ec2cc44449c5697b326919703bac031cae7f60",
    "public_key": "d75a980182b10ab7d54bfed3c964073a0ee172f3daa62325af021a68f707511a",
}
RFC8032_TEST2 = {
    "seed": "4ccd089b28ff96da9db6c346ec114e0f5b8a319f35aba624da8cf6ed4fb8a6fb",
    "public_key": "3d4017c3e843895a92b70aa74d1b7ebc9c982ccf2ec4968cc0cd55f12af4660c",
}

# --- Inputs of our own log vectors. ---

LOG_TIMESTAMP_MS = 1_700_000_000_000
LOG_ENTRIES = [  # (username, label of the stand-in encryption key, of the signing key)
    ("alice", "alice enc 1", "alice sign 1"),
    ("bob", "bob enc 1", "bob sign 1"),
    ("alice", "alice enc 2", "alice sign 2"),
]


def _hexes(names: list[str]) -> list[str]:
    """Return the hashes behind the short names used in the proof tables."""
    return [_H[name] for name in names]


def _hex_list(hashes: list[bytes]) -> list[str]:
    """Return hashes as hex strings."""
    return [h.hex() for h in hashes]


def _b64(data: bytes) -> str:
    """Return standard padded base64."""
    return base64.b64encode(data).decode("ascii")


def _reference() -> dict[str, Any]:
    """Return the external RFC 6962 test data in the file's layout."""
    return {
        "leaves": LEAF_INPUTS,
        "leaf_hashes": LEAF_HASHES,
        "roots": ROOTS,
        "inclusion": [{"index": i, "size": n, "proof": _hexes(p)} for i, n, p in INCLUSION],
        "consistency": [
            {"old_size": m, "new_size": n, "proof": _hexes(p)} for m, n, p in CONSISTENCY
        ],
    }


def _check_reference(tree: merkle.MerkleTree) -> None:
    """Raise SystemExit unless our Merkle code reproduces every external answer."""
    leaf_hashes = [merkle.leaf_hash(bytes.fromhex(x)).hex() for x in LEAF_INPUTS]
    problems = [] if leaf_hashes == LEAF_HASHES else ["leaf hashes"]
    problems += [f"root {n}" for n, r in enumerate(ROOTS) if tree.root(n).hex() != r]
    problems += [
        f"inclusion {i}/{n}"
        for i, n, p in INCLUSION
        if _hex_list(tree.inclusion_proof(i, n)) != _hexes(p)
    ]
    problems += [
        f"consistency {m}/{n}"
        for m, n, p in CONSISTENCY
        if _hex_list(tree.consistency_proof(m, n)) != _hexes(p)
    ]
    if problems:
        raise SystemExit(f"our code disagrees with the reference: {', '.join(problems)}")


def _computed(tree: merkle.MerkleTree) -> dict[str, Any]:
    """Return every inclusion and consistency proof of the 8-leaf tree, made by our code."""
    size = len(tree)
    return {
        "inclusion": [
            {"index": i, "size": n, "proof": _hex_list(tree.inclusion_proof(i, n))}
            for n in range(1, size + 1)
            for i in range(n)
        ],
        "consistency": [
            {"old_size": m, "new_size": n, "proof": _hex_list(tree.consistency_proof(m, n))}
            for n in range(size + 1)
            for m in range(n + 1)
        ],
    }


def _spki(seed_hex: str) -> bytes:
    """Return the SPKI DER of the Ed25519 public key for a seed."""
    key = Ed25519PrivateKey.from_private_bytes(bytes.fromhex(seed_hex)).public_key()
    return key.public_bytes(Encoding.DER, PublicFormat.SubjectPublicKeyInfo)


def _check_rfc8032() -> None:
    """Raise SystemExit unless each RFC 8032 seed gives its published public key."""
    for test in (RFC8032_TEST1, RFC8032_TEST2):
        if _spki(test["seed"])[-32:].hex() != test["public_key"]:
            raise SystemExit("an RFC 8032 seed does not give its public key")


def _entries() -> list[dict[str, Any]]:
    """Return the log entries with their leaf bytes and hashes."""
    entries = []
    for index, (username, enc_label, sign_label) in enumerate(LOG_ENTRIES):
        # Stand-ins for SHA-256(SPKI): the log only ever sees the 32-byte fingerprint.
        enc_fp = hashlib.sha256(enc_label.encode()).digest()
        sign_fp = hashlib.sha256(sign_label.encode()).digest()
        ts = LOG_TIMESTAMP_MS + index
        uh = transparency.user_hash(username)
        leaf = transparency.entry_leaf_bytes(index, ts, uh, enc_fp, sign_fp)
        entries.append(
            {
                "index": index,
                "timestamp_ms": ts,
                "username": username,
                "user_hash": uh.hex(),
                "enc_fingerprint": enc_fp.hex(),
                "sign_fingerprint": sign_fp.hex(),
                "leaf_bytes": leaf.hex(),
                "leaf_hash": merkle.leaf_hash(leaf).hex(),
            }
        )
    return entries


def _non_canonical(b64_32: str) -> str:
    """Return another spelling of 32 bytes' base64: its two unused low bits set."""
    # 32 bytes take 43 characters (258 bits), so the last one carries 2 spare bits.
    last = _B64_ALPHABET.index(b64_32[42]) | 1
    return b64_32[:42] + _B64_ALPHABET[last] + "="


def _bad_tree_heads(good: dict[str, Any], other_root: bytes) -> list[dict[str, Any]]:
    """Return tree heads a verifier must reject: "parse" ones are malformed, "signature" ones forged."""
    sig = bytearray(base64.b64decode(good["signature"]))
    sig[0] ^= 1
    root = good["root_hash"]

    def bad(why: str, kind: str, **changes: Any) -> dict[str, Any]:
        sth = {k: v for k, v in {**good, **changes}.items() if v is not None}
        return {"why": why, "kind": kind, "sth": sth}

    return [
        bad("signature bit flipped", "signature", signature=_b64(bytes(sig))),
        bad("tree size changed", "signature", tree_size=good["tree_size"] + 1),
        bad("timestamp changed", "signature", timestamp=good["timestamp"] + 1),
        bad("another root", "signature", root_hash=_b64(other_root)),
        bad("tree size as a string", "parse", tree_size=str(good["tree_size"])),
        bad("tree size as a boolean", "parse", tree_size=True),
        bad("tree size not an integer", "parse", tree_size=3.5),
        bad("negative timestamp", "parse", timestamp=-1),
        bad("timestamp beyond 2**53 - 1", "parse", timestamp=2**53),
        bad("signature key missing", "parse", signature=None),
        bad("extra key", "parse", extra=1),
        bad("root hash unpadded", "parse", root_hash=root.rstrip("=")),
        bad("root hash non-canonical base64", "parse", root_hash=_non_canonical(root)),
        bad("root hash with a stray character", "parse", root_hash=root.replace("=", "-")),
        bad("signature 63 bytes", "parse", signature=_b64(bytes(sig[:63]))),
        {"why": "not an object", "kind": "parse", "sth": [good]},
    ]


def _log() -> dict[str, Any]:
    """Return a three-entry log, its inclusion proofs and a signed tree head over it."""
    entries = _entries()
    tree = merkle.MerkleTree(bytes.fromhex(e["leaf_hash"]) for e in entries)
    key = Ed25519PrivateKey.from_private_bytes(bytes.fromhex(RFC8032_TEST1["seed"]))
    ts = LOG_TIMESTAMP_MS + 60_000
    sth = transparency.sign_tree_head(key, len(tree), ts, tree.root())
    return {
        "entries": entries,
        "root": tree.root().hex(),
        "inclusion": [
            {"index": i, "proof": _hex_list(tree.inclusion_proof(i))} for i in range(len(tree))
        ],
        "tree_head_bytes": sth.signed_bytes().hex(),
        "sth": sth.to_json(),
        "bad_tree_heads": _bad_tree_heads(sth.to_json(), tree.root(2)),
    }


def build() -> dict[str, Any]:
    """Return the whole vector file as a JSON-ready dict, after checking the references."""
    tree = merkle.MerkleTree(merkle.leaf_hash(bytes.fromhex(x)) for x in LEAF_INPUTS)
    _check_reference(tree)
    _check_rfc8032()
    return {
        "about": "Generated by tests/vectors/make_merkle_vectors.py (sources in its docstring); "
        "do not edit by hand. Bytes are hex, except the STH JSON wire form (base64).",
        "rfc6962": _reference(),
        "computed": _computed(tree),
        "signing_key": {
            "rfc8032_test1": RFC8032_TEST1,
            "spki": _b64(_spki(RFC8032_TEST1["seed"])),
            "other_spki": _b64(_spki(RFC8032_TEST2["seed"])),
        },
        "log": _log(),
    }


def render() -> str:
    """Return the vector file's text."""
    return json.dumps(build(), indent=2) + "\n"


if __name__ == "__main__":
    OUTPUT.write_text(render(), encoding="utf-8")
    print(f"wrote {OUTPUT}")
