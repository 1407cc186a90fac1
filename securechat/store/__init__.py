"""The store: the only code that talks to the database.

``Store`` groups one object per domain, each holding named queries, over one ``Database``
(the writer task and the reader connection).
"""

from __future__ import annotations

from pathlib import Path

from securechat.config import Config
from securechat.store.accounts import AccountStore, NewUser, Session, SessionStore, User
from securechat.store.database import Database
from securechat.store.directory import DirectoryStore
from securechat.store.messages import MessageStore


class Store:
    """All the named queries, by domain."""

    def __init__(self, db: Database) -> None:
        self.db = db
        self.accounts = AccountStore(db)
        self.sessions = SessionStore(db)
        self.directory = DirectoryStore(db)
        self.messages = MessageStore(db)

    @classmethod
    def for_file(cls, path: Path, schema_path: Path) -> Store:
        """A store over the SQLite file at ``path`` with the default settings (open before use)."""
        return cls(Database(path, schema_path))

    @classmethod
    def from_config(cls, config: Config) -> Store:
        """The server's store: the configured SQLite file and settings (open before use)."""
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

    async def open(self) -> None:
        await self.db.open()

    async def close(self) -> None:
        await self.db.close()


__all__ = ["Database", "NewUser", "Session", "Store", "User"]
