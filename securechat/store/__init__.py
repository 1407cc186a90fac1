"""The store: the only code that talks to the database.

Callers see its interface (``interface``: one Protocol per domain, grouped by ``Store``) and
the records it takes and returns (``records``), all importable from here. A backend implements
the interface: ``sqlite/`` (embedded, one process) today. ``create_store`` is the one place
that picks the backend.
"""

from __future__ import annotations

from securechat.config import Config
from securechat.store.interface import (
    AccountStore,
    DirectoryStore,
    MessageStore,
    SessionStore,
    Store,
)
from securechat.store.records import (
    UNKNOWN_MESSAGE,
    UNKNOWN_RECIPIENT,
    Change,
    ChangeKind,
    CheckpointStats,
    CommitResult,
    CommitStats,
    ConversationRow,
    HistoryItem,
    LogEntry,
    MarkOutcome,
    MarkRefusal,
    MarkStatus,
    NewMark,
    NewMessage,
    NewUser,
    Receipt,
    SendOutcome,
    SendRefusal,
    Session,
    Stored,
    User,
)


def create_store(config: Config) -> Store:
    """The server's store as ``config`` asks (open before use): the SQLite file, for now.

    Typed as the interface, so mypy checks the backend against every Protocol here.
    """
    # Imported here: only the backend chosen is loaded, and with it its driver.
    from securechat.store.sqlite import SQLiteStore

    return SQLiteStore.from_config(config)


__all__ = [
    "UNKNOWN_MESSAGE",
    "UNKNOWN_RECIPIENT",
    "AccountStore",
    "Change",
    "ChangeKind",
    "CheckpointStats",
    "CommitResult",
    "CommitStats",
    "ConversationRow",
    "DirectoryStore",
    "HistoryItem",
    "LogEntry",
    "MarkOutcome",
    "MarkRefusal",
    "MarkStatus",
    "MessageStore",
    "NewMark",
    "NewMessage",
    "NewUser",
    "Receipt",
    "SendOutcome",
    "SendRefusal",
    "Session",
    "SessionStore",
    "Store",
    "Stored",
    "User",
    "create_store",
]
