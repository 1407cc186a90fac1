"""The cluster backend, for many processes and machines on one PostgreSQL (issue 11): coming.

Today this package holds its schema only, ``schema.sql``: the PostgreSQL dialect of the
SQLite ``schema.sql`` at the top of the checkout, the same tables, columns and constraints
(tests/store/test_schemas.py compares the two catalogues). The store itself, on asyncpg with
its own pool and migrations applied under ``pg_advisory_lock``, is the next step.
"""

from __future__ import annotations

from pathlib import Path

SCHEMA_PATH = Path(__file__).with_name("schema.sql")

__all__ = ["SCHEMA_PATH"]
