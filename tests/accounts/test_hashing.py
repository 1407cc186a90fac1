"""securechat.accounts.hashing: the decoy an unknown user's login is verified against."""

from __future__ import annotations

import pytest
from argon2 import extract_parameters
from argon2.exceptions import VerifyMismatchError

from securechat.accounts.hashing import AuthKeyHasher


def test_the_decoy_is_a_well_formed_hash_in_the_configured_parameters() -> None:
    """argon2 really runs on the decoy (a malformed one would fail at once, a timing tell), it
    matches no key, and its parameters are the ones real hashes get (no rehash, no tell)."""
    hasher = AuthKeyHasher(time_cost=2, memory_kib=1024, parallelism=1, max_concurrent=1)
    decoy = hasher._decoy_hash
    with pytest.raises(VerifyMismatchError):
        hasher.hasher.verify(decoy, b"\x00" * 32)
    assert extract_parameters(decoy) == extract_parameters(hasher.hasher.hash(b"real"))
    assert not hasher.hasher.check_needs_rehash(decoy)


def test_each_hasher_has_its_own_random_decoy() -> None:
    """Two servers' decoys differ: nothing fixed in the code to precompute against."""
    first, second = (
        AuthKeyHasher(time_cost=1, memory_kib=64, parallelism=1, max_concurrent=1) for _ in range(2)
    )
    assert first._decoy_hash != second._decoy_hash
