"""The app's long-lived services, kept on the app (not on ``g``) and reached through ``state()``.

These are the typed seams between the packages: a view asks ``state()`` for the service it
needs (the chat, the key directory, the accounts) and never imports another
package's endpoint module to find it.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from quart import current_app

from securechat.config import Config
from securechat.datadir import ServerSecrets
from securechat.runtime import Clock
from securechat.store import Store

if TYPE_CHECKING:
    from prometheus_client import CollectorRegistry

    from securechat.accounts.service import Accounts
    from securechat.chat.service import ChatService
    from securechat.cluster.limits import SharedLimits
    from securechat.cluster.redis import RedisLink
    from securechat.directory.service import KeyDirectory
    from securechat.groups.service import GroupService

SessionListener = Callable[[str], Awaitable[None]]


@dataclass
class AppState:
    """Everything a request may need besides the request itself."""

    config: Config
    # The time of day for sessions, messages and log entries (the wall clock but in tests).
    clock: Clock
    secrets: ServerSecrets
    store: Store
    accounts: Accounts
    chat: ChatService
    directory: KeyDirectory
    # Groups (issue 13): their entries, posts and marks.
    groups: GroupService
    started: float
    # Called with a session id when it ends, so the chat can close that session's sockets.
    session_listeners: list[SessionListener] = field(default_factory=list)
    # /metrics' registry, built at the first scrape.
    metrics_registry: CollectorRegistry | None = None
    # A cluster's node (SECURECHAT_REDIS_URL set): its one Redis link, and the limits counted
    # there; None in a single process.
    redis: RedisLink | None = None
    limits: SharedLimits | None = None


def state() -> AppState:
    """The running app's state."""
    result: AppState = current_app.extensions["securechat"]
    return result
