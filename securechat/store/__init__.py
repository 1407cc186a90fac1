"""The store: the only code that talks to the database.

Callers see its interface (``interface``: one Protocol per domain, grouped by ``Store``) and
the records it takes and returns (``records``), all importable from here. A backend implements
the interface: ``sqlite/`` (embedded, one process) and ``postgres/`` (a cluster's nodes).
``create_store`` is the one place that picks the backend.
"""

from __future__ import annotations

from securechat.config import Config
from securechat.store.interface import (
    AccountStore,
    ContactStore,
    DirectoryStore,
    IdentityStore,
    LifecycleStore,
    MessageStore,
    SessionStore,
    Store,
)
from securechat.store.records import (
    DELETE_EXPIRED,
    QUEUE_FULL,
    UNKNOWN_MESSAGE,
    UNKNOWN_RECIPIENT,
    BacklogBounds,
    Change,
    ChangeKind,
    CheckpointStats,
    ClusterIdentity,
    CommitResult,
    CommitStats,
    ContactState,
    ConversationRow,
    Deleted,
    DeleteOutcome,
    HistoryItem,
    LogEntry,
    MarkOutcome,
    MarkRefusal,
    MarkStatus,
    NewKeys,
    NewMark,
    NewMessage,
    NewPassword,
    NewUser,
    OperatorAction,
    Receipt,
    RecoveryRecord,
    SendOutcome,
    SendRefusal,
    Session,
    Stored,
    User,
    UserSummary,
)


def create_store(config: Config) -> Store:
    """The server's store as ``config`` asks (open before use): PostgreSQL when
    ``database_url`` is set (a node of a cluster), else the SQLite file in the data directory.

    Typed as the interface, so mypy checks each backend against every Protocol here.
    """
    # Imported here: only the backend chosen is loaded, and with it its driver (asyncpg is
    # in the `cluster` extra; `make run` needs none of it).
    if config.database_url:
        from securechat.store.postgres import PostgresStore

        return PostgresStore.from_config(config)
    from securechat.store.sqlite import SQLiteStore

    return SQLiteStore.from_config(config)


__all__ = [
    "DELETE_EXPIRED",
    "QUEUE_FULL",
    "UNKNOWN_MESSAGE",
    "UNKNOWN_RECIPIENT",
    "AccountStore",
    "BacklogBounds",
    "Change",
    "ChangeKind",
    "CheckpointStats",
    "ClusterIdentity",
    "CommitResult",
    "CommitStats",
    "ContactState",
    "ContactStore",
    "ConversationRow",
    "DeleteOutcome",
    "Deleted",
    "DirectoryStore",
    "HistoryItem",
    "IdentityStore",
    "LifecycleStore",
    "LogEntry",
    "MarkOutcome",
    "MarkRefusal",
    "MarkStatus",
    "MessageStore",
    "NewKeys",
    "NewMark",
    "NewMessage",
    "NewPassword",
    "NewUser",
    "OperatorAction",
    "Receipt",
    "RecoveryRecord",
    "SendOutcome",
    "SendRefusal",
    "Session",
    "SessionStore",
    "Store",
    "Stored",
    "User",
    "UserSummary",
    "create_store",
]
