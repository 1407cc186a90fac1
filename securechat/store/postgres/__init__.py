"""The cluster backend, for many processes and machines on one PostgreSQL (issue 11).

``schema.sql`` is the PostgreSQL dialect of the SQLite ``schema.sql`` at the top of the
checkout: the same tables, columns and constraints (tests/store/test_schemas.py compares the
two catalogues). ``database`` holds the asyncpg pool, applies the schema under an advisory lock
(skipping it when its ``schema_version`` row is current) and runs writes in transactions that
retry once. ``PostgresStore`` groups one object per domain over it, each holding named queries,
as ``SQLiteStore`` does over its file; every node of a cluster opens its own.
"""

from __future__ import annotations

from securechat.config import Config
from securechat.store.postgres.accounts import AccountStore, SessionStore
from securechat.store.postgres.contacts import ContactStore
from securechat.store.postgres.database import (
    SCHEMA_PATH,
    SCHEMA_VERSION,
    Database,
    SchemaLockTimeout,
    Unavailable,
)
from securechat.store.postgres.directory import DirectoryStore, IdentityStore
from securechat.store.postgres.groups import GroupStore
from securechat.store.postgres.lifecycle import LifecycleStore
from securechat.store.postgres.messages import MessageStore
from securechat.store.records import CommitStats


class PostgresStore:
    """All the named queries, by domain, over one PostgreSQL database (a ``Store``)."""

    def __init__(self, db: Database) -> None:
        self.db = db
        self.accounts = AccountStore(db)
        self.sessions = SessionStore(db)
        self.directory = DirectoryStore(db)
        self.identity = IdentityStore(db)
        self.contacts = ContactStore(db)
        self.lifecycle = LifecycleStore(db)
        self.messages = MessageStore(db)
        self.groups = GroupStore(db)

    @classmethod
    def from_config(cls, config: Config) -> PostgresStore:
        """The configured database (``database_url``) and pool bounds (open before use)."""
        if not config.database_url:
            raise ValueError("the PostgreSQL store needs database_url")
        return cls(
            Database(
                config.database_url,
                pool_min=config.db_pool_min,
                pool_max=config.db_pool_max,
                command_timeout=config.db_command_timeout,
                schema_lock_timeout=config.db_schema_lock_timeout,
            )
        )

    @property
    def commit_stats(self) -> CommitStats:
        return self.db.stats

    @property
    def checkpoint_stats(self) -> None:
        """None: PostgreSQL checkpoints its own write-ahead log."""
        return None

    async def open(self) -> None:
        await self.db.open()

    async def close(self) -> None:
        await self.db.close()

    async def claim_serving(self) -> None:
        """Nothing to claim: any number of nodes serve one PostgreSQL database."""

    async def ping(self) -> None:
        await self.db.ping()


__all__ = [
    "SCHEMA_PATH",
    "SCHEMA_VERSION",
    "Database",
    "PostgresStore",
    "SchemaLockTimeout",
    "Unavailable",
]
