"""Merkle tree hashing and proofs of RFC 9162 (Certificate Transparency 2.0), section 2.1.

Pure and I/O free: the key directory's log keeps its leaf hashes in a `MerkleTree` and
serves roots and proofs from it; clients check them with `verify_inclusion` and
`verify_consistency`, which follow the RFC's verification algorithms step by step.

The hash is SHA-256 with the RFC's domain separation (section 2.1.1): a leaf is hashed
as SHA-256(0x00 || leaf), an interior node as SHA-256(0x01 || left || right), and the
empty tree as SHA-256("").  The tree is the one of RFC 6962, so RFC 6962 test data apply.
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterable, Sequence

__all__ = [
    "EMPTY_ROOT",
    "HASH_SIZE",
    "MerkleTree",
    "consistency_proof",
    "inclusion_proof",
    "leaf_hash",
    "node_hash",
    "root_hash",
    "verify_consistency",
    "verify_inclusion",
]

HASH_SIZE = 32
# RFC 9162 section 2.1.1: MTH({}) = HASH(), the hash of the empty string.
EMPTY_ROOT = hashlib.sha256(b"").digest()
# Tree sizes and indices are uint64 on the wire (RFC 9162 sections 4.1 and 4.10).
_MAX_SIZE = 2**64 - 1


def leaf_hash(data: bytes) -> bytes:
    """Return the leaf hash SHA-256(0x00 || data) (RFC 9162 section 2.1.1)."""
    return hashlib.sha256(b"\x00" + data).digest()


def node_hash(left: bytes, right: bytes) -> bytes:
    """Return the interior node hash SHA-256(0x01 || left || right) (RFC 9162 section 2.1.1)."""
    return hashlib.sha256(b"\x01" + left + right).digest()


def _split(n: int) -> int:
    """Return k, the largest power of two smaller than n (n >= 2), where MTH splits."""
    return 1 << ((n - 1).bit_length() - 1)


class MerkleTree:
    """An append-only Merkle tree of leaf hashes that caches every complete subtree.

    ``_levels[h][i]`` is the hash of the perfect subtree of 2**h leaves starting at
    leaf i * 2**h.  A perfect subtree never changes once complete, so the cache serves
    the root and proofs of every earlier tree size too.  Appending is amortised O(1);
    a root costs O(log n) hashes and a proof O(log(n)**2).
    """

    def __init__(self, leaf_hashes: Iterable[bytes] = ()) -> None:
        """Build a tree holding ``leaf_hashes`` in order."""
        self._levels: list[list[bytes]] = [[]]
        for h in leaf_hashes:
            self.append(h)

    def __len__(self) -> int:
        """Return the number of leaves."""
        return len(self._levels[0])

    def append(self, leaf_hash: bytes) -> int:
        """Append one leaf hash (not the leaf data) and return its index."""
        if not isinstance(leaf_hash, bytes) or len(leaf_hash) != HASH_SIZE:
            raise ValueError("a leaf hash is 32 bytes")
        index = len(self)
        self._levels[0].append(leaf_hash)
        level = 0
        # Each level that now holds an even count has just completed a pair.
        while len(self._levels[level]) % 2 == 0:
            pair = self._levels[level][-2:]
            if level + 1 == len(self._levels):
                self._levels.append([])
            self._levels[level + 1].append(node_hash(pair[0], pair[1]))
            level += 1
        return index

    def root(self, size: int | None = None) -> bytes:
        """Return MTH of the first ``size`` leaves (default: all of them)."""
        size = self._check_size(size)
        return self._mth(0, size) if size else EMPTY_ROOT

    def inclusion_proof(self, index: int, size: int | None = None) -> list[bytes]:
        """Return PATH(index, D[size]) of RFC 9162 section 2.1.3.1, leaf to root."""
        size = self._check_size(size)
        if not 0 <= index < size:
            raise ValueError("leaf index out of range")
        path: list[bytes] = []
        start, end = 0, size
        # Walk down from the root, recording the sibling of each subtree taken; the RFC
        # lists them bottom-up, so the result is reversed.
        while end - start > 1:
            mid = start + _split(end - start)
            if index < mid:
                path.append(self._mth(mid, end))
                end = mid
            else:
                path.append(self._mth(start, mid))
                start = mid
        path.reverse()
        return path

    def consistency_proof(self, old_size: int, new_size: int | None = None) -> list[bytes]:
        """Return PROOF(old_size, D[new_size]) of RFC 9162 section 2.1.4.1.

        The proof is empty when ``old_size`` is 0 or equals ``new_size``: there is
        nothing to prove (RFC 9162 defines PROOF for 0 < m < n only).
        """
        new_size = self._check_size(new_size)
        if not 0 <= old_size <= new_size:
            raise ValueError("old size must be between 0 and the new size")
        if old_size in (0, new_size):
            return []
        return self._subproof(old_size, new_size)

    def _subproof(self, m: int, n: int) -> list[bytes]:
        """Return SUBPROOF(m, D[n], true) (RFC 9162 section 2.1.4.1), for 0 < m < n."""
        path: list[bytes] = []
        start, end, whole = 0, n, True
        while m != end:
            mid = start + _split(end - start)
            if m <= mid:
                path.append(self._mth(mid, end))
                end = mid
            else:
                path.append(self._mth(start, mid))
                start, whole = mid, False
        # SUBPROOF(m, D[m], b) is [] when b is true (the verifier has MTH(D[m])),
        # otherwise [MTH(D[m])] for the subtree reached.
        if not whole:
            path.append(self._mth(start, end))
        path.reverse()
        return path

    def _mth(self, start: int, end: int) -> bytes:
        """Return MTH(D[start:end]) for a range met while descending the tree (end > start).

        Such a range starts on a multiple of a power of two at least as large as the
        range, so it splits left to right into aligned perfect subtrees of decreasing
        size, exactly as MTH splits at k (RFC 9162 section 2.1.1); fold them right to left.
        """
        parts: list[bytes] = []
        pos = start
        while pos < end:
            level = (end - pos).bit_length() - 1
            parts.append(self._levels[level][pos >> level])
            pos += 1 << level
        acc = parts.pop()
        while parts:
            acc = node_hash(parts.pop(), acc)
        return acc

    def _check_size(self, size: int | None) -> int:
        """Return ``size`` (default: the current size) after checking it is within the tree."""
        if size is None:
            return len(self)
        if not 0 <= size <= len(self):
            raise ValueError("tree size out of range")
        return size


def root_hash(leaf_hashes: Sequence[bytes]) -> bytes:
    """Return MTH over the given leaf hashes (RFC 9162 section 2.1.1); O(n)."""
    return MerkleTree(leaf_hashes).root()


def inclusion_proof(leaf_hashes: Sequence[bytes], index: int) -> list[bytes]:
    """Return the inclusion proof of leaf ``index`` in the tree of ``leaf_hashes``; O(n)."""
    return MerkleTree(leaf_hashes).inclusion_proof(index)


def consistency_proof(leaf_hashes: Sequence[bytes], old_size: int, new_size: int) -> list[bytes]:
    """Return the consistency proof between the first ``old_size`` and ``new_size`` leaves; O(n)."""
    return MerkleTree(leaf_hashes[:new_size]).consistency_proof(old_size, new_size)


def _is_hash(value: object) -> bool:
    """Tell whether ``value`` is a 32-byte hash."""
    return isinstance(value, bytes) and len(value) == HASH_SIZE


def _is_size(value: object) -> bool:
    """Tell whether ``value`` is a uint64 (an int, not a bool)."""
    return type(value) is int and 0 <= value <= _MAX_SIZE


def verify_inclusion(
    leaf_hash: bytes, index: int, tree_size: int, proof: Sequence[bytes], root: bytes
) -> bool:
    """Check an inclusion proof with the algorithm of RFC 9162 section 2.1.3.2.

    Returns False, never raises, for any malformed input.
    """
    if not (_is_hash(leaf_hash) and _is_hash(root) and isinstance(proof, list | tuple)):
        return False
    # Step 1: the index must lie inside the tree.
    if not (_is_size(index) and _is_size(tree_size) and index < tree_size):
        return False
    # Steps 2 and 3.
    fn, sn, r = index, tree_size - 1, leaf_hash
    # Step 4.
    for p in proof:
        if sn == 0 or not _is_hash(p):  # 4a: the proof is too long.
            return False
        if fn & 1 or fn == sn:  # 4b
            r = node_hash(p, r)
            # 4b.ii: climb past the levels where this subtree is a lone right edge.
            while fn and not fn & 1:
                fn, sn = fn >> 1, sn >> 1
        else:
            r = node_hash(r, p)
        fn, sn = fn >> 1, sn >> 1  # 4c
    # Step 5: sn == 0 also rejects a proof that is too short.
    return sn == 0 and r == root


def verify_consistency(
    old_size: int, new_size: int, old_root: bytes, new_root: bytes, proof: Sequence[bytes]
) -> bool:
    """Check a consistency proof with the algorithm of RFC 9162 section 2.1.4.2.

    Sizes 0 and equal sizes, which the RFC leaves out, take an empty proof: the empty
    tree (root SHA-256("")) is consistent with every tree, and a tree only with itself.
    Returns False, never raises, for any malformed input.
    """
    if not (_is_hash(old_root) and _is_hash(new_root) and isinstance(proof, list | tuple)):
        return False
    if not (_is_size(old_size) and _is_size(new_size) and old_size <= new_size):
        return False
    if old_size == 0:
        return not proof and old_root == EMPTY_ROOT
    if old_size == new_size:
        return not proof and old_root == new_root
    return _verify_consistency_path(old_size, new_size, old_root, new_root, list(proof))


def _verify_consistency_path(
    first: int, second: int, first_hash: bytes, second_hash: bytes, path: list[bytes]
) -> bool:
    """Run steps 1 to 7 of RFC 9162 section 2.1.4.2 for 0 < first < second."""
    if not path:  # Step 1.
        return False
    if first & (first - 1) == 0:  # Step 2: first is a power of two.
        path.insert(0, first_hash)
    fn, sn = first - 1, second - 1  # Step 3.
    while fn & 1:  # Step 4.
        fn, sn = fn >> 1, sn >> 1
    if not _is_hash(path[0]):
        return False
    fr = sr = path[0]  # Step 5.
    for c in path[1:]:  # Step 6.
        if sn == 0 or not _is_hash(c):  # 6a: the proof is too long.
            return False
        if fn & 1 or fn == sn:  # 6b
            fr, sr = node_hash(c, fr), node_hash(c, sr)
            while fn and not fn & 1:  # 6b.ii
                fn, sn = fn >> 1, sn >> 1
        else:
            sr = node_hash(sr, c)
        fn, sn = fn >> 1, sn >> 1  # 6c
    # Step 7.
    return fr == first_hash and sr == second_hash and sn == 0
