"""Tests for securechat.directory.merkle: RFC 9162 section 2.1 hashing, proofs and verification."""

from __future__ import annotations

import hashlib
import importlib.util
from pathlib import Path
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from securechat.directory.merkle import (
    EMPTY_ROOT,
    MerkleTree,
    consistency_proof,
    inclusion_proof,
    leaf_hash,
    node_hash,
    root_hash,
    verify_consistency,
    verify_inclusion,
)
from tests import vectorkit

VECTORS_DIR = Path(__file__).parent.parent / "vectors"
MAX_SIZE = 300
LEAVES = [leaf_hash(i.to_bytes(4, "big")) for i in range(MAX_SIZE)]
TREE = MerkleTree(LEAVES)
OTHER = bytes(range(32))


@pytest.fixture(name="vectors", scope="module")
def _vectors() -> dict[str, Any]:
    """The known-answer vectors of tests/vectors/merkle.json."""
    return vectorkit.load("merkle")


@pytest.fixture(name="ref_tree", scope="module")
def _ref_tree(vectors: dict[str, Any]) -> MerkleTree:
    """The RFC 6962 8-leaf test tree."""
    return MerkleTree(leaf_hash(bytes.fromhex(x)) for x in vectors["rfc6962"]["leaves"])


def _unhex(hexes: list[str]) -> list[bytes]:
    """Decode a list of hex strings."""
    return [bytes.fromhex(h) for h in hexes]


# --- A literal transcription of the RFC 9162 section 2.1 definitions, to cross-check. ---


def _k(n: int) -> int:
    """Return the largest power of two smaller than n."""
    k = 1
    while k * 2 < n:
        k *= 2
    return k


def naive_mth(d: list[bytes]) -> bytes:
    """MTH(D[n]) of RFC 9162 section 2.1.1, over leaf hashes."""
    if not d:
        return hashlib.sha256(b"").digest()
    if len(d) == 1:
        return d[0]
    k = _k(len(d))
    return node_hash(naive_mth(d[:k]), naive_mth(d[k:]))


def naive_path(m: int, d: list[bytes]) -> list[bytes]:
    """PATH(m, D[n]) of RFC 9162 section 2.1.3.1."""
    if len(d) == 1:
        return []
    k = _k(len(d))
    if m < k:
        return [*naive_path(m, d[:k]), naive_mth(d[k:])]
    return [*naive_path(m - k, d[k:]), naive_mth(d[:k])]


def naive_subproof(m: int, d: list[bytes], b: bool) -> list[bytes]:
    """SUBPROOF(m, D[n], b) of RFC 9162 section 2.1.4.1."""
    if m == len(d):
        return [] if b else [naive_mth(d)]
    k = _k(len(d))
    if m <= k:
        return [*naive_subproof(m, d[:k], b), naive_mth(d[k:])]
    return [*naive_subproof(m - k, d[k:], False), naive_mth(d[:k])]


# --- Known answers. ---


def test_empty_root_is_hash_of_empty_string() -> None:
    """The empty tree's root is SHA-256 of nothing."""
    assert EMPTY_ROOT == hashlib.sha256(b"").digest() == MerkleTree().root()


def test_leaf_hashes_match_reference(vectors: dict[str, Any]) -> None:
    """Leaf hashes of the RFC 6962 test data match the reference."""
    ref = vectors["rfc6962"]
    assert [leaf_hash(bytes.fromhex(x)).hex() for x in ref["leaves"]] == ref["leaf_hashes"]


def test_roots_match_reference(vectors: dict[str, Any]) -> None:
    """root_hash of the first n test leaves matches the reference for n = 0..8."""
    leaves = _unhex(vectors["rfc6962"]["leaf_hashes"])
    roots = [root_hash(leaves[:n]).hex() for n in range(len(leaves) + 1)]
    assert roots == vectors["rfc6962"]["roots"]


def test_historical_roots_match_reference(vectors: dict[str, Any], ref_tree: MerkleTree) -> None:
    """One 8-leaf tree gives the reference root of every earlier size."""
    roots = [ref_tree.root(n).hex() for n in range(len(ref_tree) + 1)]
    assert roots == vectors["rfc6962"]["roots"]


def test_inclusion_proofs_match_reference(vectors: dict[str, Any]) -> None:
    """inclusion_proof reproduces each published RFC 6962 inclusion proof."""
    leaves = _unhex(vectors["rfc6962"]["leaf_hashes"])
    for case in vectors["rfc6962"]["inclusion"]:
        proof = inclusion_proof(leaves[: case["size"]], case["index"])
        assert [p.hex() for p in proof] == case["proof"], case


def test_reference_inclusion_proofs_verify(vectors: dict[str, Any]) -> None:
    """Each published inclusion proof verifies against the published root."""
    ref = vectors["rfc6962"]
    for case in ref["inclusion"]:
        leaf = bytes.fromhex(ref["leaf_hashes"][case["index"]])
        root = bytes.fromhex(ref["roots"][case["size"]])
        assert verify_inclusion(leaf, case["index"], case["size"], _unhex(case["proof"]), root)


def test_consistency_proofs_match_reference(vectors: dict[str, Any]) -> None:
    """consistency_proof reproduces each published RFC 6962 consistency proof."""
    leaves = _unhex(vectors["rfc6962"]["leaf_hashes"])
    for case in vectors["rfc6962"]["consistency"]:
        proof = consistency_proof(leaves, case["old_size"], case["new_size"])
        assert [p.hex() for p in proof] == case["proof"], case


def test_reference_consistency_proofs_verify(vectors: dict[str, Any]) -> None:
    """Each published consistency proof verifies between the published roots."""
    roots = _unhex(vectors["rfc6962"]["roots"])
    for case in vectors["rfc6962"]["consistency"]:
        m, n = case["old_size"], case["new_size"]
        assert verify_consistency(m, n, roots[m], roots[n], _unhex(case["proof"]))


def test_computed_proofs_match_vectors(vectors: dict[str, Any], ref_tree: MerkleTree) -> None:
    """Every proof of the 8-leaf tree equals the one pinned in the vector file."""
    for case in vectors["computed"]["inclusion"]:
        proof = ref_tree.inclusion_proof(case["index"], case["size"])
        assert [p.hex() for p in proof] == case["proof"], case
    for case in vectors["computed"]["consistency"]:
        proof = ref_tree.consistency_proof(case["old_size"], case["new_size"])
        assert [p.hex() for p in proof] == case["proof"], case


def test_vector_file_is_up_to_date(vectors: dict[str, Any]) -> None:
    """tests/vectors/merkle.json is exactly what make_merkle_vectors.py writes today."""
    spec = importlib.util.spec_from_file_location(
        "make_merkle_vectors", VECTORS_DIR / "make_merkle_vectors.py"
    )
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    assert module.build() == vectors


# --- The tree itself. ---


def test_append_returns_the_new_index() -> None:
    """append returns 0, 1, 2, ... in order."""
    tree = MerkleTree()
    assert [tree.append(h) for h in LEAVES[:5]] == [0, 1, 2, 3, 4]


@pytest.mark.parametrize("bad", [b"", b"\x00" * 31, b"\x00" * 33, "00" * 32, None])
def test_append_rejects_a_non_hash(bad: Any) -> None:
    """append refuses anything but 32 bytes."""
    with pytest.raises(ValueError, match="32 bytes"):
        MerkleTree().append(bad)


@pytest.mark.parametrize(("index", "size"), [(-1, 5), (5, 5), (0, 0), (0, 301), (0, -1)])
def test_inclusion_proof_rejects_bad_arguments(index: int, size: int) -> None:
    """inclusion_proof raises ValueError for an index or size outside the tree."""
    with pytest.raises(ValueError, match="out of range"):
        TREE.inclusion_proof(index, size)


@pytest.mark.parametrize(("old", "new"), [(-1, 5), (6, 5), (0, 301), (3, -1)])
def test_consistency_proof_rejects_bad_arguments(old: int, new: int) -> None:
    """consistency_proof raises ValueError for sizes out of order or outside the tree."""
    with pytest.raises(ValueError, match="size"):
        TREE.consistency_proof(old, new)


@pytest.mark.parametrize(("old", "new"), [(0, 0), (0, 7), (7, 7)])
def test_trivial_consistency_proofs_are_empty(old: int, new: int) -> None:
    """From the empty tree, or between equal sizes, the proof is empty and verifies."""
    assert TREE.consistency_proof(old, new) == []
    assert verify_consistency(old, new, TREE.root(old), TREE.root(new), [])


def test_large_tree_proofs_verify() -> None:
    """A 100,000-leaf tree builds and serves proofs that verify."""
    leaves = [leaf_hash(i.to_bytes(4, "big")) for i in range(100_000)]
    tree = MerkleTree(leaves)
    root = tree.root()
    assert verify_inclusion(leaves[77_777], 77_777, 100_000, tree.inclusion_proof(77_777), root)
    old = tree.root(65_537)
    assert verify_consistency(65_537, 100_000, old, root, tree.consistency_proof(65_537))


# --- Properties over random trees of up to 300 leaves. ---

sizes = st.integers(min_value=1, max_value=MAX_SIZE)


@given(sizes)
def test_tree_root_matches_rfc_definition(n: int) -> None:
    """The cached tree's root equals a literal MTH, for fresh and historical trees."""
    assert root_hash(LEAVES[:n]) == TREE.root(n) == naive_mth(LEAVES[:n])


@given(st.data())
def test_inclusion_proof_matches_rfc_definition(data: st.DataObject) -> None:
    """inclusion_proof equals a literal PATH(m, D[n])."""
    n = data.draw(sizes)
    m = data.draw(st.integers(0, n - 1))
    assert TREE.inclusion_proof(m, n) == naive_path(m, LEAVES[:n])


@given(st.data())
def test_consistency_proof_matches_rfc_definition(data: st.DataObject) -> None:
    """consistency_proof equals a literal SUBPROOF(m, D[n], true) for 0 < m < n."""
    n = data.draw(st.integers(2, MAX_SIZE))
    m = data.draw(st.integers(1, n - 1))
    assert consistency_proof(LEAVES, m, n) == naive_subproof(m, LEAVES[:n], True)


@given(sizes)
def test_every_inclusion_proof_verifies(n: int) -> None:
    """Every leaf's inclusion proof in a tree of size n verifies."""
    root = TREE.root(n)
    for m in range(n):
        assert verify_inclusion(LEAVES[m], m, n, TREE.inclusion_proof(m, n), root)


@given(sizes)
def test_every_consistency_proof_verifies(n: int) -> None:
    """Every earlier size's consistency proof to size n verifies."""
    root = TREE.root(n)
    for m in range(n + 1):
        assert verify_consistency(m, n, TREE.root(m), root, TREE.consistency_proof(m, n))


@given(st.data())
def test_inclusion_proof_fails_for_another_index(data: st.DataObject) -> None:
    """An inclusion proof does not verify the same leaf at another index."""
    n = data.draw(st.integers(2, MAX_SIZE))
    m, other = data.draw(st.lists(st.integers(0, n - 1), min_size=2, max_size=2, unique=True))
    proof = TREE.inclusion_proof(m, n)
    assert not verify_inclusion(LEAVES[m], other, n, proof, TREE.root(n))


@given(st.data())
def test_inclusion_proof_fails_for_another_size(data: st.DataObject) -> None:
    """An inclusion proof does not verify against the root of another tree size.

    With the root held fixed a proof can fit a larger size whose path has the same
    shape (index 0 of 3 and of 4); the signed tree head binds size to root.
    """
    n, other = data.draw(st.lists(sizes, min_size=2, max_size=2, unique=True))
    m = data.draw(st.integers(0, min(n, other) - 1))
    proof = TREE.inclusion_proof(m, n)
    assert not verify_inclusion(LEAVES[m], m, other, proof, TREE.root(other))


@given(st.data())
def test_inclusion_proof_fails_for_another_root(data: st.DataObject) -> None:
    """An inclusion proof does not verify against a different root or leaf."""
    n = data.draw(sizes)
    m = data.draw(st.integers(0, n - 1))
    proof = TREE.inclusion_proof(m, n)
    assert not verify_inclusion(LEAVES[m], m, n, proof, OTHER)
    assert not verify_inclusion(OTHER, m, n, proof, TREE.root(n))


@given(st.data())
def test_consistency_proof_fails_for_other_sizes(data: st.DataObject) -> None:
    """A consistency proof does not verify between the true roots of other sizes."""
    n = data.draw(st.integers(2, MAX_SIZE))
    m = data.draw(st.integers(1, n - 1))
    n2 = data.draw(st.integers(2, MAX_SIZE))
    m2 = data.draw(st.integers(1, n2 - 1).filter(lambda x: (x, n2) != (m, n)))
    proof = TREE.consistency_proof(m, n)
    assert not verify_consistency(m2, n2, TREE.root(m2), TREE.root(n2), proof)


@given(st.data())
def test_consistency_proof_fails_for_other_roots(data: st.DataObject) -> None:
    """A consistency proof does not verify with either root replaced or the two swapped."""
    n = data.draw(st.integers(2, MAX_SIZE))
    m = data.draw(st.integers(1, n - 1))
    old, new, proof = TREE.root(m), TREE.root(n), TREE.consistency_proof(m, n)
    assert not verify_consistency(m, n, OTHER, new, proof)
    assert not verify_consistency(m, n, old, OTHER, proof)
    assert not verify_consistency(m, n, new, old, proof)


@given(st.data())
def test_inclusion_proof_fails_for_double_the_size(data: st.DataObject) -> None:
    """A proof checked against its own root but twice the size fails (step 5's sn == 0)."""
    n = data.draw(st.integers(1, MAX_SIZE // 2))
    m = data.draw(st.integers(0, n - 1))
    assert not verify_inclusion(LEAVES[m], m, 2 * n, TREE.inclusion_proof(m, n), TREE.root(n))


@given(st.data())
def test_consistency_proof_fails_for_double_the_new_size(data: st.DataObject) -> None:
    """A proof checked against its own roots but twice the new size fails (step 7's sn == 0)."""
    n = data.draw(st.integers(2, MAX_SIZE // 2))
    m = data.draw(st.integers(1, n - 1))
    proof = TREE.consistency_proof(m, n)
    assert not verify_consistency(m, 2 * n, TREE.root(m), TREE.root(n), proof)


def test_overlong_inclusion_proof_fails_even_if_it_hashes_to_the_root() -> None:
    """Elements past the top of the tree are refused (RFC 9162 2.1.3.2 step 4a)."""
    extra = OTHER
    root = node_hash(extra, TREE.root(2))
    assert not verify_inclusion(LEAVES[0], 0, 2, [LEAVES[1], extra], root)


def test_overlong_consistency_proof_fails_even_if_it_hashes_to_the_roots() -> None:
    """Elements past the top of the tree are refused (RFC 9162 2.1.4.2 step 6a)."""
    extra = OTHER
    proof = [*TREE.consistency_proof(3, 4), extra]
    old, new = node_hash(extra, TREE.root(3)), node_hash(extra, TREE.root(4))
    assert not verify_consistency(3, 4, old, new, proof)


# --- Forged proofs. ---


@given(st.data())
def test_inclusion_proof_with_a_flipped_byte_fails(data: st.DataObject) -> None:
    """Changing one byte of one inclusion proof element breaks it."""
    n = data.draw(st.integers(2, MAX_SIZE))
    m = data.draw(st.integers(0, n - 1))
    proof = TREE.inclusion_proof(m, n)
    i = data.draw(st.integers(0, len(proof) - 1))
    pos = data.draw(st.integers(0, 31))
    mask = data.draw(st.integers(1, 255))
    element = bytearray(proof[i])
    element[pos] ^= mask
    forged = [*proof[:i], bytes(element), *proof[i + 1 :]]
    assert not verify_inclusion(LEAVES[m], m, n, forged, TREE.root(n))


@given(st.data())
def test_inclusion_proof_with_an_extra_element_fails(data: st.DataObject) -> None:
    """Inserting any element anywhere in an inclusion proof breaks it."""
    n = data.draw(sizes)
    m = data.draw(st.integers(0, n - 1))
    proof = TREE.inclusion_proof(m, n)
    at = data.draw(st.integers(0, len(proof)))
    extra = data.draw(st.sampled_from([OTHER, TREE.root(n), LEAVES[m], *proof]))
    forged = [*proof[:at], extra, *proof[at:]]
    assert not verify_inclusion(LEAVES[m], m, n, forged, TREE.root(n))


@given(st.data())
def test_inclusion_proof_with_a_missing_element_fails(data: st.DataObject) -> None:
    """Dropping any element of an inclusion proof breaks it."""
    n = data.draw(st.integers(2, MAX_SIZE))
    m = data.draw(st.integers(0, n - 1))
    proof = TREE.inclusion_proof(m, n)
    at = data.draw(st.integers(0, len(proof) - 1))
    forged = proof[:at] + proof[at + 1 :]
    assert not verify_inclusion(LEAVES[m], m, n, forged, TREE.root(n))


@given(st.data())
def test_consistency_proof_with_a_flipped_byte_fails(data: st.DataObject) -> None:
    """Changing one byte of one consistency proof element breaks it."""
    n = data.draw(st.integers(2, MAX_SIZE))
    m = data.draw(st.integers(1, n - 1))
    proof = TREE.consistency_proof(m, n)
    i = data.draw(st.integers(0, len(proof) - 1))
    element = bytearray(proof[i])
    element[data.draw(st.integers(0, 31))] ^= data.draw(st.integers(1, 255))
    forged = [*proof[:i], bytes(element), *proof[i + 1 :]]
    assert not verify_consistency(m, n, TREE.root(m), TREE.root(n), forged)


@given(st.data())
def test_consistency_proof_with_an_extra_or_missing_element_fails(data: st.DataObject) -> None:
    """Inserting or dropping an element of a consistency proof breaks it."""
    n = data.draw(st.integers(2, MAX_SIZE))
    m = data.draw(st.integers(1, n - 1))
    proof = TREE.consistency_proof(m, n)
    at = data.draw(st.integers(0, len(proof) - 1))
    old, new = TREE.root(m), TREE.root(n)
    assert not verify_consistency(m, n, old, new, [*proof[:at], old, *proof[at:]])
    assert not verify_consistency(m, n, old, new, [*proof, new])
    assert not verify_consistency(m, n, old, new, proof[:at] + proof[at + 1 :])


# --- Hostile input. ---

H = LEAVES[0]
R3 = TREE.root(3)
P3 = TREE.inclusion_proof(0, 3)


@pytest.mark.parametrize(
    "args",
    [
        (H, 3, 3, P3, R3),  # index == size
        (H, -1, 3, P3, R3),
        (H, 0, 0, [], EMPTY_ROOT),
        (H, True, 3, P3, R3),  # a bool is not an index
        (H, 0.0, 3, P3, R3),
        (H, 0, "3", P3, R3),
        (H, 0, 2**64, P3, R3),
        (H[:31], 0, 3, P3, R3),
        (H, 0, 3, P3, R3 + b"\x00"),
        (H.hex(), 0, 3, P3, R3),
        (H, 0, 3, [P3[0], "x" * 32], R3),
        (H, 0, 3, [P3[0], None], R3),
        (H, 0, 3, [P3[0], P3[1][:31]], R3),
        (H, 0, 3, iter(P3), R3),
        (H, 0, 3, None, R3),
        (H, 0, 3, b"".join(P3), R3),
    ],
)
def test_verify_inclusion_rejects_malformed_input(args: tuple[Any, ...]) -> None:
    """Malformed inclusion arguments give False, not an exception."""
    assert verify_inclusion(*args) is False


R1, R5 = TREE.root(1), TREE.root(5)
C15 = TREE.consistency_proof(1, 5)


@pytest.mark.parametrize(
    "args",
    [
        (5, 1, R5, R1, C15),  # sizes out of order
        (-1, 5, R1, R5, C15),
        (1, 2**64, R1, R5, C15),
        (False, 5, R1, R5, C15),
        (1, 5.0, R1, R5, C15),
        (1, 5, R1[:16], R5, C15),
        (1, 5, R1, None, C15),
        (1, 5, R1, R5, []),
        (1, 5, R1, R5, None),
        (1, 5, R1, R5, [C15[0], 7, C15[2]]),
        (1, 5, R1, R5, [*C15[:2], C15[2] + b"\x00"]),
        (3, 5, TREE.root(3), R5, [b"", *TREE.consistency_proof(3, 5)[1:]]),
        (0, 5, R1, R5, []),  # size 0 has the empty root
        (0, 5, EMPTY_ROOT, R5, [EMPTY_ROOT]),
        (5, 5, R5, R5, [R5]),
        (5, 5, R1, R5, []),
    ],
)
def test_verify_consistency_rejects_malformed_input(args: tuple[Any, ...]) -> None:
    """Malformed consistency arguments give False, not an exception."""
    assert verify_consistency(*args) is False


junk = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(-(2**70), 2**70),
    st.floats(),
    st.text(max_size=40),
    st.binary(max_size=40),
    st.lists(st.one_of(st.binary(min_size=30, max_size=34), st.integers()), max_size=5),
)


@given(junk, junk, junk, junk, junk)
def test_verify_inclusion_never_raises(a: Any, b: Any, c: Any, d: Any, e: Any) -> None:
    """verify_inclusion answers a bool for any arguments at all."""
    assert isinstance(verify_inclusion(a, b, c, d, e), bool)


@given(junk, junk, junk, junk, junk)
def test_verify_consistency_never_raises(a: Any, b: Any, c: Any, d: Any, e: Any) -> None:
    """verify_consistency answers a bool for any arguments at all."""
    assert isinstance(verify_consistency(a, b, c, d, e), bool)
