"""The embedded backend: the store over one SQLite file, for a server of one process.

``SQLiteStore`` groups one object per domain, each holding named queries, over one
``Database`` (the writer thread with its group commit, the checkpointer, the reader).
"""

from __future__ import annotations

from pathlib import Path

from securechat.config import Config
from securechat.store.records import CheckpointStats, CommitStats
from securechat.store.sqlite.accounts import AccountStore, SessionStore
from securechat.store.sqlite.contacts import ContactStore
from securechat.store.sqlite.database import Database
from securechat.store.sqlite.directory import DirectoryStore, IdentityStore
from securechat.store.sqlite.groups import GroupStore
from securechat.store.sqlite.lifecycle import LifecycleStore
from securechat.store.sqlite.messages import MessageStore
from securechat.store.sqlite.serving import ServingLock


class SQLiteStore:
    """All the named queries, by domain, over one SQLite file (a ``Store``)."""

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
        self._serving = ServingLock(db.path)

    @classmethod
    def for_file(cls, path: Path, schema_path: Path) -> SQLiteStore:
        """A store over the SQLite file at ``path`` with the default settings (open before use)."""
        return cls(Database(path, schema_path))

    @classmethod
    def from_config(cls, config: Config) -> SQLiteStore:
        """The configured SQLite file and settings (open before use)."""
        return cls(
            Database(
                config.database_path,
                config.schema_path,
                synchronous=config.db_synchronous,
                busy_timeout_ms=config.db_busy_timeout_ms,
                batch_max=config.commit_batch_max,
                checkpoint_interval=config.db_checkpoint_interval,
            )
        )

    @property
    def commit_stats(self) -> CommitStats:
        return self.db.stats

    @property
    def checkpoint_stats(self) -> CheckpointStats:
        return self.db.checkpoint_stats

    async def open(self) -> None:
        await self.db.open()

    async def close(self) -> None:
        await self.db.close()
        self._serving.release()

    async def claim_serving(self) -> None:
        """Take the file's serving lock, or raise DatabaseInUse: one process serves a SQLite
        database (store/sqlite/serving.py)."""
        self._serving.acquire()

    async def ping(self) -> None:
        await self.db.ping()


__all__ = ["Database", "SQLiteStore"]
