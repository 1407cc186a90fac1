"""The store fixtures of tests/store (``any_store``, ``make_any_store``: each test on SQLite and
on PostgreSQL), for the directory service's tests that need only a store."""

from __future__ import annotations

from tests.store.conftest import _any_store, _make_any_store

__all__ = ["_any_store", "_make_any_store"]
