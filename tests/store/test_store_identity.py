"""The cluster's identity and the roots of signed tree heads, on both backends: the first
writer wins and every later one reads its record back (securechat/store/interface.py)."""

from __future__ import annotations

import asyncio

from securechat.store import ClusterIdentity, Store
from tests.store.conftest import MakeStore

FIRST = ClusterIdentity("a" * 64, "b" * 64)
OTHER = ClusterIdentity("c" * 64, "d" * 64)


async def test_the_first_identity_is_recorded(any_store: Store) -> None:
    """An empty database records the identity it is offered and returns it."""
    assert await any_store.identity.claim_identity(FIRST, 1) == FIRST


async def test_a_later_identity_reads_the_first(any_store: Store) -> None:
    """Once one is recorded, another is not: the first comes back."""
    await any_store.identity.claim_identity(FIRST, 1)
    assert await any_store.identity.claim_identity(OTHER, 2) == FIRST
    assert await any_store.identity.claim_identity(FIRST, 3) == FIRST


async def test_two_nodes_claiming_at_once_agree(make_any_store: MakeStore) -> None:
    """Two stores over one database claim together: both read the one identity recorded."""
    stores = [make_any_store(), make_any_store()]
    for store in stores:
        await store.open()
    try:
        claims = await asyncio.gather(
            stores[0].identity.claim_identity(FIRST, 1),
            stores[1].identity.claim_identity(OTHER, 1),
        )
        assert claims[0] == claims[1] and claims[0] in (FIRST, OTHER)
    finally:
        for store in stores:
            await store.close()


async def test_the_first_root_of_a_size_stays(any_store: Store) -> None:
    """A size's first recorded root is returned to every later recorder."""
    directory = any_store.directory
    assert await directory.record_root(3, b"\x01" * 32, 1) == b"\x01" * 32
    assert await directory.record_root(3, b"\x02" * 32, 2) == b"\x01" * 32
    assert await directory.record_root(5, b"\x03" * 32, 3) == b"\x03" * 32


async def test_latest_root_is_the_largest_size_not_above(any_store: Store) -> None:
    """latest_root finds the largest recorded size at most the one asked, or None."""
    directory = any_store.directory
    assert await directory.latest_root(10) is None
    await directory.record_root(2, b"\x02" * 32, 1)
    await directory.record_root(6, b"\x06" * 32, 1)
    assert await directory.latest_root(1) is None
    assert await directory.latest_root(5) == (2, b"\x02" * 32)
    assert await directory.latest_root(6) == (6, b"\x06" * 32)
