"""The app's long-lived services, kept on the app (not on ``g``) and reached through ``state()``."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any

from quart import current_app

from securechat.config import Config
from securechat.datadir import ServerSecrets
from securechat.hashing import AuthKeyHasher
from securechat.store import Store
from securechat.throttle import Throttle

SessionListener = Callable[[str], Awaitable[None]]
HealthContributor = Callable[[], Awaitable[dict[str, Any]]]


@dataclass
class AppState:
    """Everything a request may need besides the request itself."""

    config: Config
    secrets: ServerSecrets
    store: Store
    hasher: AuthKeyHasher
    # Separate tables, so a flood of addresses cannot push a username's count out.
    login_user_throttle: Throttle
    login_address_throttle: Throttle
    registration_throttle: Throttle
    started: float
    # Called with a session id when it ends, so the chat can close that session's sockets.
    session_listeners: list[SessionListener] = field(default_factory=list)
    # Each adds its section to /admin/health.
    health_contributors: list[HealthContributor] = field(default_factory=list)
    # Services later layers attach by name (the chat hub, the key directory).
    extras: dict[str, Any] = field(default_factory=dict)


def state() -> AppState:
    """The running app's state."""
    result: AppState = current_app.extensions["securechat"]
    return result
