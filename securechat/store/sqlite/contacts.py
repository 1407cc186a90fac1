"""Who may message whom on SQLite: every SQL statement about ``contacts`` (issue 12, item 5).

The rows the commit reads and writes itself (blocks, "accepted" by sending) are in
``messages.py``, inside its transaction; these are the owner's own decisions and the reads
the chat's rules make (securechat/chat/contacts.py).
"""

from __future__ import annotations

import sqlite3
from collections.abc import Sequence

from securechat.store.records import ContactState, ConversationRow
from securechat.store.sqlite.database import Database


class ContactStore:
    """Named queries over ``contacts`` (and the requests among ``conversations``)."""

    def __init__(self, db: Database) -> None:
        self.db = db

    async def set_state(
        self, owner_id: int, peer_id: int, state: ContactState, now_ms: int
    ) -> None:
        """Record the owner's decision about the peer (replacing any earlier one)."""
        await self.db.execute(
            "INSERT INTO contacts (owner_id, peer_id, state, changed_at) VALUES (?, ?, ?, ?)"
            " ON CONFLICT (owner_id, peer_id) DO UPDATE SET state = excluded.state,"
            " changed_at = excluded.changed_at",
            (owner_id, peer_id, state, now_ms),
        )

    async def unblock(self, owner_id: int, peer_id: int) -> bool:
        """Forget the owner's block of the peer; whether there was one."""
        changed = await self.db.execute(
            "DELETE FROM contacts WHERE owner_id = ? AND peer_id = ? AND state = 'blocked'",
            (owner_id, peer_id),
        )
        return changed > 0

    async def dismiss(self, owner_id: int, peer_id: int) -> bool:
        """Delete the owner's conversation with a peer they decided nothing about."""

        def job(connection: sqlite3.Connection) -> bool:
            return (
                connection.execute(
                    "DELETE FROM conversations WHERE user_id = ?1 AND peer_id = ?2"
                    " AND NOT EXISTS (SELECT 1 FROM contacts WHERE owner_id = ?1 AND peer_id = ?2)",
                    (owner_id, peer_id),
                ).rowcount
                > 0
            )

        return await self.db.write(job)

    async def relations(
        self, owner_id: int, peers: Sequence[str]
    ) -> dict[str, tuple[ContactState | None, ContactState | None]]:
        """For each of ``peers`` that exists: the owner's state for them, and theirs."""
        if not peers:
            return {}
        marks = ",".join("?" * len(peers))
        rows = await self.db.fetch_all(
            "SELECT p.username, mine.state, theirs.state FROM users p"
            " LEFT JOIN contacts mine ON mine.owner_id = ? AND mine.peer_id = p.id"
            " LEFT JOIN contacts theirs ON theirs.owner_id = p.id AND theirs.peer_id = ?"
            f" WHERE p.username IN ({marks})",
            (owner_id, owner_id, *peers),
        )
        return {str(row[0]): (row[1], row[2]) for row in rows}

    async def sharing(self, user: str, peer: str) -> bool:
        """Whether both have accepted the other."""
        row = await self.db.fetch_one(
            "SELECT count(*) FROM users u JOIN users p ON p.username = ?"
            " JOIN contacts c ON (c.owner_id = u.id AND c.peer_id = p.id)"
            " OR (c.owner_id = p.id AND c.peer_id = u.id)"
            " WHERE u.username = ? AND c.state = 'accepted'",
            (peer, user),
        )
        return row is not None and int(row[0]) == 2

    async def listed(self, owner_id: int, state: ContactState, limit: int) -> list[str]:
        """The peers the owner has given ``state``, most recently decided first."""
        rows = await self.db.fetch_all(
            "SELECT p.username FROM contacts c JOIN users p ON p.id = c.peer_id"
            " WHERE c.owner_id = ? AND c.state = ? ORDER BY c.changed_at DESC, p.username"
            " LIMIT ?",
            (owner_id, state, limit),
        )
        return [str(row[0]) for row in rows]

    async def requests(self, owner_id: int, before: int, limit: int) -> list[ConversationRow]:
        """The owner's conversations with peers they decided nothing about, most recent first."""
        rows = await self.db.fetch_all(
            "SELECT p.username, c.last_seq, c.unread FROM conversations c"
            " JOIN users p ON p.id = c.peer_id"
            " WHERE c.user_id = ?1 AND c.last_seq < ?2 AND NOT EXISTS"
            " (SELECT 1 FROM contacts k WHERE k.owner_id = ?1 AND k.peer_id = c.peer_id)"
            " ORDER BY c.last_seq DESC LIMIT ?3",
            (owner_id, before, limit),
        )
        return [ConversationRow(*row) for row in rows]


__all__ = ["ContactStore"]
