"""The cluster backend, for many processes and machines on one PostgreSQL (issue 11).

``schema.sql`` is the PostgreSQL dialect of the SQLite ``schema.sql`` at the top of the
checkout: the same tables, columns and constraints (tests/store/test_schemas.py compares the
two catalogues). ``database`` holds the asyncpg pool, applies the schema under an advisory lock
and runs writes in transactions that retry once. The domain stores over it are being built.
"""

from __future__ import annotations

from securechat.store.postgres.database import SCHEMA_PATH, Database, Unavailable

__all__ = ["SCHEMA_PATH", "Database", "Unavailable"]
