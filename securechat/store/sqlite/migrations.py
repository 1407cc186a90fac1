"""Schema creation and upgrades, keyed on SQLite's ``PRAGMA user_version``.

A new database gets ``schema.sql`` whole. An existing one at an older version runs the
upgrade steps below in order, each in one transaction. To change the schema: edit
``schema.sql`` (the shape of a new database), bump its ``user_version``, and add the step
that takes the previous version there to ``UPGRADES``.
"""

from __future__ import annotations

import sqlite3
from pathlib import Path

# version reached -> SQL that takes a database from (version - 1) to version.
UPGRADES: dict[int, str] = {
    # The committer rewrote this index twice per message; conversations are read by key.
    2: "DROP INDEX IF EXISTS conversations_recent;",
    # Each sender's undelivered backlog, read along it (MessageStore.undelivered).
    3: "CREATE INDEX IF NOT EXISTS messages_undelivered"
    " ON messages (sender_id, recipient_id) WHERE delivered_at IS NULL;",
    # The cluster's identity and the roots of signed tree heads (securechat/directory).
    4: "CREATE TABLE IF NOT EXISTS cluster_identity (id INTEGER PRIMARY KEY CHECK (id = 1),"
    " directory_fingerprint TEXT NOT NULL, secret_fingerprint TEXT NOT NULL,"
    " recorded_at INTEGER NOT NULL);"
    " CREATE TABLE IF NOT EXISTS tree_heads (tree_size INTEGER PRIMARY KEY,"
    " root BLOB NOT NULL CHECK (length(root) = 32), signed_at INTEGER NOT NULL);",
    # The undelivered counts move into the database, kept by each commit (store/batch.py),
    # starting from the messages not yet delivered.
    5: "CREATE TABLE IF NOT EXISTS undelivered_pairs (sender_id INTEGER NOT NULL"
    " REFERENCES users (id) ON DELETE CASCADE, recipient_id INTEGER NOT NULL REFERENCES users"
    " (id) ON DELETE CASCADE, messages INTEGER NOT NULL, PRIMARY KEY (sender_id, recipient_id))"
    " WITHOUT ROWID;"
    " CREATE TABLE IF NOT EXISTS undelivered_senders (sender_id INTEGER PRIMARY KEY"
    " REFERENCES users (id) ON DELETE CASCADE, bytes INTEGER NOT NULL);"
    " INSERT INTO undelivered_pairs (sender_id, recipient_id, messages)"
    " SELECT sender_id, recipient_id, count(*) FROM messages WHERE delivered_at IS NULL"
    " GROUP BY sender_id, recipient_id;"
    " INSERT INTO undelivered_senders (sender_id, bytes)"
    " SELECT sender_id, sum(length(envelope)) FROM messages WHERE delivered_at IS NULL"
    " GROUP BY sender_id;",
    # Each user's stream head, moved by each commit (store/batch.py link_streams), starting
    # from the positions stored.
    6: "CREATE TABLE IF NOT EXISTS stream_heads (user_id INTEGER PRIMARY KEY"
    " REFERENCES users (id) ON DELETE CASCADE, head INTEGER NOT NULL);"
    " INSERT INTO stream_heads (user_id, head) SELECT user_id, max(pos) FROM ("
    " SELECT sender_id AS user_id, seq AS pos FROM messages"
    " UNION ALL SELECT recipient_id, seq FROM messages"
    " UNION ALL SELECT sender_id, delivered_seq FROM messages WHERE delivered_seq IS NOT NULL"
    " UNION ALL SELECT sender_id, read_seq FROM messages WHERE read_seq IS NOT NULL"
    ") AS positions GROUP BY user_id;",
    # An account's end and the operator's hold on it (securechat/accounts/lifecycle.py).
    7: "CREATE TABLE IF NOT EXISTS username_quarantine (username TEXT PRIMARY KEY,"
    " deleted_at INTEGER NOT NULL, until_ms INTEGER NOT NULL);"
    " CREATE TABLE IF NOT EXISTS disabled_users (user_id INTEGER PRIMARY KEY"
    " REFERENCES users (id) ON DELETE CASCADE, disabled_at INTEGER NOT NULL);"
    " CREATE TABLE IF NOT EXISTS operator_actions (id INTEGER PRIMARY KEY,"
    " at_ms INTEGER NOT NULL, action TEXT NOT NULL, username TEXT NOT NULL,"
    " detail TEXT NOT NULL DEFAULT '');",
    # Who may message whom (issue 12, item 5): every pair that wrote has accepted.
    8: "CREATE TABLE IF NOT EXISTS contacts (owner_id INTEGER NOT NULL REFERENCES users (id)"
    " ON DELETE CASCADE, peer_id INTEGER NOT NULL REFERENCES users (id) ON DELETE CASCADE,"
    " state TEXT NOT NULL CHECK (state IN ('accepted', 'blocked')),"
    " changed_at INTEGER NOT NULL, PRIMARY KEY (owner_id, peer_id)) WITHOUT ROWID;"
    " CREATE INDEX IF NOT EXISTS contacts_by_peer ON contacts (peer_id, owner_id);"
    " INSERT OR IGNORE INTO contacts (owner_id, peer_id, state, changed_at)"
    " SELECT sender_id, recipient_id, 'accepted', max(ts) FROM messages"
    " GROUP BY sender_id, recipient_id;",
    # The recovery key (issue 12, item 2; accounts/service.py).
    9: "CREATE TABLE IF NOT EXISTS recovery_keys (user_id INTEGER PRIMARY KEY"
    " REFERENCES users (id) ON DELETE CASCADE, auth_hash TEXT NOT NULL, previous_hash TEXT,"
    " key_backup TEXT NOT NULL, created_at INTEGER NOT NULL);",
    # Groups (issue 13; store/sqlite/groups.py): chains, members, posts and their streams.
    10: "CREATE TABLE IF NOT EXISTS groups (id INTEGER PRIMARY KEY, group_id BLOB NOT NULL"
    " UNIQUE CHECK (length(group_id) = 16), head BLOB NOT NULL CHECK (length(head) = 32),"
    " entries INTEGER NOT NULL, bytes INTEGER NOT NULL, created_at INTEGER NOT NULL);"
    " CREATE TABLE IF NOT EXISTS group_entries (group_row INTEGER NOT NULL REFERENCES groups"
    " (id) ON DELETE CASCADE, idx INTEGER NOT NULL, position INTEGER NOT NULL UNIQUE,"
    " entry BLOB NOT NULL, ts INTEGER NOT NULL, PRIMARY KEY (group_row, idx));"
    " CREATE TABLE IF NOT EXISTS group_members (group_row INTEGER NOT NULL REFERENCES groups"
    " (id) ON DELETE CASCADE, user_id INTEGER NOT NULL REFERENCES users (id) ON DELETE CASCADE,"
    " admin INTEGER NOT NULL CHECK (admin IN (0, 1)), PRIMARY KEY (group_row, user_id))"
    " WITHOUT ROWID;"
    " CREATE INDEX IF NOT EXISTS group_members_by_user ON group_members (user_id, group_row);"
    " CREATE TABLE IF NOT EXISTS group_gone (group_row INTEGER NOT NULL REFERENCES groups (id)"
    " ON DELETE CASCADE, username TEXT NOT NULL, admin INTEGER NOT NULL CHECK (admin IN (0, 1)),"
    " PRIMARY KEY (group_row, username)) WITHOUT ROWID;"
    " CREATE TABLE IF NOT EXISTS group_posts (position INTEGER PRIMARY KEY, group_row INTEGER"
    " NOT NULL REFERENCES groups (id) ON DELETE CASCADE, sender_id INTEGER NOT NULL REFERENCES"
    " users (id) ON DELETE CASCADE, client_id TEXT NOT NULL, kind TEXT NOT NULL CHECK (kind IN"
    " ('message', 'keys')), head BLOB NOT NULL CHECK (length(head) = 32), ts INTEGER NOT NULL,"
    " envelope TEXT NOT NULL, to_id INTEGER REFERENCES users (id) ON DELETE SET NULL,"
    " readers INTEGER NOT NULL, delivered INTEGER NOT NULL DEFAULT 0,"
    " seen INTEGER NOT NULL DEFAULT 0, UNIQUE (sender_id, client_id));"
    " CREATE INDEX IF NOT EXISTS group_posts_to ON group_posts (to_id) WHERE to_id IS NOT NULL;"
    " CREATE TABLE IF NOT EXISTS group_inbox (user_id INTEGER NOT NULL REFERENCES users (id)"
    " ON DELETE CASCADE, position INTEGER NOT NULL, group_row INTEGER NOT NULL REFERENCES"
    " groups (id) ON DELETE CASCADE, kind TEXT NOT NULL CHECK (kind IN ('message', 'keys',"
    " 'entry')), envelope TEXT, delivered_at INTEGER, read_at INTEGER,"
    " PRIMARY KEY (user_id, position)) WITHOUT ROWID;"
    " CREATE INDEX IF NOT EXISTS group_inbox_history"
    " ON group_inbox (user_id, group_row, position);"
    " CREATE INDEX IF NOT EXISTS group_inbox_by_position ON group_inbox (position);"
    " CREATE INDEX IF NOT EXISTS group_inbox_unread ON group_inbox (user_id, group_row)"
    " WHERE read_at IS NULL AND kind = 'message';",
}


def schema_version(connection: sqlite3.Connection) -> int:
    """The database's ``user_version`` (0 for a new file)."""
    row = connection.execute("PRAGMA user_version").fetchone()
    return int(row[0]) if row else 0


def migrate(connection: sqlite3.Connection, schema_path: Path) -> int:
    """Bring the database to the current schema; return the version it ends at.

    Blocking: the store runs it on its writer thread, before any other write.
    """
    version = schema_version(connection)
    if version == 0:
        connection.executescript(_in_transaction(schema_path.read_text(encoding="utf-8")))
        return schema_version(connection)
    for target in sorted(v for v in UPGRADES if v > version):
        script = UPGRADES[target] + f"\nPRAGMA user_version = {target};"
        connection.executescript(_in_transaction(script))
    return schema_version(connection)


def _in_transaction(script: str) -> str:
    return f"BEGIN IMMEDIATE;\n{script}\nCOMMIT;"
