"""Who may message whom on PostgreSQL: every SQL statement about ``contacts`` (issue 12, item 5).

The same queries as ``store/sqlite/contacts.py``, with the same results. The rows the commit
reads and writes itself (blocks, "accepted" by sending) are in ``messages.py``, under its lock
on ``chat_sequence``, so a block committed before a commit takes that lock is seen by it.
"""

from __future__ import annotations

from collections.abc import Sequence

import asyncpg

from securechat.store.postgres.database import Database
from securechat.store.postgres.directory import rows_changed
from securechat.store.records import ContactState, ConversationRow


class ContactStore:
    """Named queries over ``contacts`` (and the requests among ``conversations``)."""

    def __init__(self, db: Database) -> None:
        self.db = db

    async def set_state(
        self, owner_id: int, peer_id: int, state: ContactState, now_ms: int
    ) -> None:
        """Record the owner's decision about the peer (replacing any earlier one)."""

        async def job(connection: asyncpg.Connection) -> None:
            await connection.execute(
                "INSERT INTO contacts (owner_id, peer_id, state, changed_at)"
                " VALUES ($1, $2, $3, $4) ON CONFLICT (owner_id, peer_id) DO UPDATE"
                " SET state = excluded.state, changed_at = excluded.changed_at",
                owner_id,
                peer_id,
                state,
                now_ms,
            )

        await self.db.write(job)

    async def unblock(self, owner_id: int, peer_id: int) -> bool:
        """Forget the owner's block of the peer; whether there was one."""

        async def job(connection: asyncpg.Connection) -> bool:
            status = await connection.execute(
                "DELETE FROM contacts WHERE owner_id = $1 AND peer_id = $2 AND state = 'blocked'",
                owner_id,
                peer_id,
            )
            return rows_changed(status) > 0

        return await self.db.write(job)

    async def dismiss(self, owner_id: int, peer_id: int) -> bool:
        """Delete the owner's conversation with a peer they decided nothing about."""

        async def job(connection: asyncpg.Connection) -> bool:
            status = await connection.execute(
                "DELETE FROM conversations WHERE user_id = $1 AND peer_id = $2"
                " AND NOT EXISTS (SELECT 1 FROM contacts WHERE owner_id = $1 AND peer_id = $2)",
                owner_id,
                peer_id,
            )
            return rows_changed(status) > 0

        return await self.db.write(job)

    async def relations(
        self, owner_id: int, peers: Sequence[str]
    ) -> dict[str, tuple[ContactState | None, ContactState | None]]:
        """For each of ``peers`` that exists: the owner's state for them, and theirs."""
        if not peers:
            return {}
        rows = await self.db.fetch_all(
            "SELECT p.username, mine.state, theirs.state FROM users p"
            " LEFT JOIN contacts mine ON mine.owner_id = $1 AND mine.peer_id = p.id"
            " LEFT JOIN contacts theirs ON theirs.owner_id = p.id AND theirs.peer_id = $1"
            " WHERE p.username = ANY($2::text[])",
            owner_id,
            list(peers),
        )
        return {str(row[0]): (row[1], row[2]) for row in rows}

    async def sharing(self, user: str, peer: str) -> bool:
        """Whether both have accepted the other."""
        value = await self.db.fetch_value(
            "SELECT count(*) FROM users u JOIN users p ON p.username = $1"
            " JOIN contacts c ON (c.owner_id = u.id AND c.peer_id = p.id)"
            " OR (c.owner_id = p.id AND c.peer_id = u.id)"
            " WHERE u.username = $2 AND c.state = 'accepted'",
            peer,
            user,
        )
        return int(value) == 2

    async def listed(self, owner_id: int, state: ContactState, limit: int) -> list[str]:
        """The peers the owner has given ``state``, most recently decided first."""
        rows = await self.db.fetch_all(
            "SELECT p.username FROM contacts c JOIN users p ON p.id = c.peer_id"
            " WHERE c.owner_id = $1 AND c.state = $2 ORDER BY c.changed_at DESC, p.username"
            " LIMIT $3",
            owner_id,
            state,
            limit,
        )
        return [str(row[0]) for row in rows]

    async def requests(self, owner_id: int, before: int, limit: int) -> list[ConversationRow]:
        """The owner's conversations with peers they decided nothing about, most recent first."""
        rows = await self.db.fetch_all(
            "SELECT p.username, c.last_seq, c.unread FROM conversations c"
            " JOIN users p ON p.id = c.peer_id"
            " WHERE c.user_id = $1 AND c.last_seq < $2 AND NOT EXISTS"
            " (SELECT 1 FROM contacts k WHERE k.owner_id = $1 AND k.peer_id = c.peer_id)"
            " ORDER BY c.last_seq DESC LIMIT $3",
            owner_id,
            before,
            limit,
        )
        return [ConversationRow(str(row[0]), int(row[1]), int(row[2])) for row in rows]


__all__ = ["ContactStore"]
