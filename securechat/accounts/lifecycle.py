"""An account's end and the operator's hold on it (issue 12, items 3 and 4).

- Deletion, by its owner (``POST /api/v1/account/delete``, after the password is checked as a
  login checks it) or by the operator (``python -m securechat users delete``): one store
  transaction logs a tombstone in the key directory, keeps the name from registration for
  ``username_quarantine`` seconds and removes the account with everything that refers to it;
  the sockets of its sessions are closed.
- The operator's actions (securechat/operator.py): disable and enable, end sessions, withdraw
  keys, delete. Each is logged twice: an audit line through ``logging`` and a row in the
  ``operator_actions`` table.
- :class:`OperatorWatch`: how a running server learns of them. The command line is another
  process, maybe on another machine; it changes the database only. Every server process
  follows the ``operator_actions`` table (every ``operator_poll_interval`` seconds, one indexed
  query) and closes its own sockets of the accounts an action ended. Their sessions are
  already revoked in the database, so every HTTP request of theirs is refused at once; the
  watch bounds how long an open socket outlives them.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncGenerator, Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Final

from securechat.config import Config
from securechat.directory.transparency import is_tombstone, user_hash
from securechat.errors import Close
from securechat.runtime import Clock, cancel_and_wait
from securechat.store import LifecycleStore, Store

if TYPE_CHECKING:
    from quart import Quart

    from securechat.state import AppState

log = logging.getLogger(__name__)
# The audit trail's logger: an operator may route it to its own file.
audit_log = logging.getLogger("securechat.accounts.audit")

# The operator's actions after which none of the account's sockets may stay open.
ENDING_ACTIONS: Final = frozenset({"disable", "delete", "reset-keys", "sessions-end"})
# Audit-trail rows a watch reads per query.
_WATCH_BATCH: Final = 100
# A tree size larger than any log: latest_entry over the whole log.
_WHOLE_LOG: Final = 2**62


@dataclass(frozen=True)
class Deletion:
    """A deleted account: the sessions that ended with it and when its name is free again."""

    username: str
    sessions: list[str]
    reusable_at_ms: int


@dataclass
class AccountLifecycle:
    """Deletion, disabling, ending sessions and withdrawing keys, decided over the store."""

    config: Config
    store: Store
    clock: Clock

    async def delete(self, username: str, *, by: str) -> Deletion:
        """Delete the account (NotFound if none); ``by`` says who asked, for the audit line."""
        now = self.clock.now_ms()
        until = now + self.config.username_quarantine * 1000
        sessions = await self.store.lifecycle.delete_user(username, until, now)
        audit_log.warning(
            "account %r deleted by %s; %d session(s) ended; name quarantined until %d",
            username,
            by,
            len(sessions),
            until,
        )
        return Deletion(username, sessions, until)

    async def disable(self, username: str) -> list[str]:
        """Disable the account and end its sessions; their ids."""
        return await self.store.lifecycle.set_disabled(username, True, self.clock.now_ms())

    async def enable(self, username: str) -> None:
        """Let a disabled account log in again."""
        await self.store.lifecycle.set_disabled(username, False, self.clock.now_ms())

    async def end_sessions(self, username: str) -> list[str]:
        """End every live session of the account; their ids."""
        return await self.store.lifecycle.revoke_all(username, self.clock.now_ms())

    async def withdraw_keys(self, username: str) -> list[str]:
        """Log the withdrawal of the account's keys and end its sessions; their ids."""
        return await self.store.lifecycle.withdraw_keys(username, self.clock.now_ms())

    async def record(self, action: str, username: str, detail: str = "") -> int:
        """The operator's audit trail: one log line and one row (which running servers follow)."""
        action_id = await self.store.lifecycle.record_action(
            action, username, detail, self.clock.now_ms()
        )
        audit_log.warning("operator action %d: %s %r %s", action_id, action, username, detail)
        return action_id


async def keys_withdrawn(store: Store, username: str) -> bool:
    """Whether the user's newest key-log entry is a tombstone: the operator withdrew the keys
    (``users reset-keys``), and nobody can write to the user until they publish new ones."""
    entry = await store.directory.latest_entry(user_hash(username), _WHOLE_LOG)
    return entry is not None and is_tombstone(entry)


def for_app(app_state: AppState) -> AccountLifecycle:
    """The running app's lifecycle service (stateless: built on demand)."""
    return AccountLifecycle(app_state.config, app_state.store, app_state.clock)


class OperatorWatch:
    """Follows the operator's audit trail and closes this process's sockets of the accounts an
    action ended (see the module's docstring)."""

    def __init__(
        self, actions: LifecycleStore, close_user: Callable[[str], int], interval: float
    ) -> None:
        self.actions = actions
        self.close_user = close_user
        self.interval = interval
        self.last_id = 0
        self.closed = 0  # sockets closed, for tests and health
        self._task: asyncio.Task[None] | None = None

    async def start(self) -> None:
        """Start after the newest action already recorded (those were dealt with before)."""
        self.last_id = await self.actions.last_action_id()
        self._task = asyncio.create_task(self._run(), name="operator-watch")

    async def stop(self) -> None:
        await cancel_and_wait(self._task)
        self._task = None

    async def check(self) -> int:
        """Act on the actions recorded since the last check; how many sockets were closed."""
        closed = 0
        while True:
            rows = await self.actions.actions_after(self.last_id, _WATCH_BATCH)
            for row in rows:
                if row.action in ENDING_ACTIONS:
                    closed += self.close_user(row.username)
                self.last_id = row.id
            if len(rows) < _WATCH_BATCH:
                break
        self.closed += closed
        return closed

    async def _run(self) -> None:
        while True:
            await asyncio.sleep(self.interval)
            try:
                await self.check()
            except Exception:  # the database may be away; the next round tries again
                log.exception("reading the operator's actions failed")


def install(app: Quart, app_state: AppState) -> OperatorWatch:
    """Follow the operator's actions while the app serves (after the store has opened)."""
    hub = app_state.chat.hub
    code, reason = Close.SESSION_ENDED.code, Close.SESSION_ENDED.reason
    watch = OperatorWatch(
        app_state.store.lifecycle,
        lambda user: hub.close_user(user, code, reason),
        app_state.config.operator_poll_interval,
    )

    async def serving() -> AsyncGenerator[None, None]:
        await watch.start()
        yield
        await watch.stop()

    app.while_serving(serving)
    app.extensions["securechat.operator_watch"] = watch
    return watch


__all__ = [
    "ENDING_ACTIONS",
    "AccountLifecycle",
    "Deletion",
    "OperatorWatch",
    "for_app",
    "install",
    "keys_withdrawn",
]
