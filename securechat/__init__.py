"""SecureChat: a self-hostable, end-to-end encrypted web chat server.

``create_app`` builds the Quart app; nothing happens at import time.
"""

from __future__ import annotations

import asyncio
import logging
import time
from typing import TYPE_CHECKING

from quart import Quart
from quart_auth import QuartAuth

from securechat import gcpolicy
from securechat.clock import now_ms
from securechat.config import PROJECT_ROOT, Config
from securechat.proxy import TrustedProxies
from securechat.tasks import cancel_and_wait

if TYPE_CHECKING:
    from securechat.state import AppState

__version__ = "0.1.0"

log = logging.getLogger(__name__)


def create_app(config: Config | None = None) -> Quart:
    """Build the app from ``config`` (default: the environment). Resources open at serving time."""
    from securechat import accounts, admin, chat, conversations, datadir, directory, pages, security
    from securechat.hashing import AuthKeyHasher
    from securechat.state import AppState
    from securechat.store import Store
    from securechat.throttle import Throttle

    config = config or Config.from_env()
    app = Quart(
        __name__,
        template_folder=str(PROJECT_ROOT / "templates"),
        static_folder=str(PROJECT_ROOT / "static"),
        static_url_path="/static",
    )
    secrets = datadir.prepare(config.data_dir)
    app.secret_key = secrets.cookie_key
    app.config.update(_quart_settings(config))
    QuartAuth(app)
    app.extensions["securechat"] = AppState(
        config=config,
        secrets=secrets,
        store=Store.for_file(
            config.database_path,
            PROJECT_ROOT / "schema.sql",
            synchronous=config.db_synchronous,
            busy_timeout_ms=config.db_busy_timeout_ms,
            batch_max=config.commit_batch_max,
            checkpoint_interval=config.db_checkpoint_interval,
        ),
        hasher=AuthKeyHasher(
            time_cost=config.argon2_time_cost,
            memory_kib=config.argon2_memory_kib,
            parallelism=config.argon2_parallelism,
            max_concurrent=config.argon2_max_concurrent,
            max_waiting=config.argon2_max_waiting,
        ),
        login_user_throttle=Throttle(
            max_failures=config.login_failures_max,
            window=config.login_failure_window,
            max_keys=config.throttle_table_max,
        ),
        login_address_throttle=Throttle(
            max_failures=config.login_failures_max,
            window=config.login_failure_window,
            max_keys=config.throttle_table_max,
        ),
        registration_throttle=Throttle(
            max_failures=config.registrations_per_address,
            window=config.registration_window,
            max_keys=config.throttle_table_max,
            free_failures=config.registrations_per_address,
        ),
        started=time.monotonic(),
    )
    security.install(app)
    app.register_blueprint(accounts.blueprint)
    app.register_blueprint(admin.blueprint)
    app.register_blueprint(pages.blueprint)
    _install_lifecycle(app)
    directory.install(app)  # after the lifecycle: its start-up needs the open store
    chat.install(app)  # /ws, its committer and presence: started while serving
    app.register_blueprint(conversations.blueprint)
    _trust_proxies(app, config.trusted_proxy_hops)
    return app


def _trust_proxies(app: Quart, hops: int) -> None:
    """Behind ``hops`` reverse proxies, the client is who their X-Forwarded-* headers say
    (TrustedProxies refuses a count out of range, a negative one included)."""
    if hops:
        app.asgi_app = TrustedProxies(app.asgi_app, hops)  # type: ignore[method-assign]


def _quart_settings(config: Config) -> dict[str, object]:
    return {
        # Bodies are bounded by security.refuse_oversized_bodies, which answers 400 cleanly.
        "MAX_CONTENT_LENGTH": None,
        "QUART_AUTH_COOKIE_NAME": config.cookie_name,
        "QUART_AUTH_COOKIE_SECURE": True,
        "QUART_AUTH_COOKIE_HTTP_ONLY": True,
        "QUART_AUTH_COOKIE_SAMESITE": "Strict",
        "QUART_AUTH_COOKIE_PATH": "/",
        "QUART_AUTH_COOKIE_DOMAIN": None,
        "QUART_AUTH_DURATION": config.session_absolute_timeout,
        "QUART_AUTH_SALT": "securechat/v1/session-cookie",
        "PROPAGATE_EXCEPTIONS": False,
        "TEMPLATES_AUTO_RELOAD": False,
    }


def _install_lifecycle(app: Quart) -> None:
    purger: list[asyncio.Task[None]] = []

    @app.before_serving
    async def open_resources() -> None:
        state: AppState = app.extensions["securechat"]
        await state.store.open()
        state.started = time.monotonic()
        await purge_dead_sessions(state)
        purger.append(asyncio.create_task(_purge_periodically(state), name="session-purge"))
        if state.config.gc_freeze_growth > 0:
            gcpolicy.start(state.config.gc_freeze_growth)

    @app.after_serving
    async def close_resources() -> None:
        state: AppState = app.extensions["securechat"]
        for task in purger:
            await cancel_and_wait(task)
        purger.clear()
        if state.config.gc_freeze_growth > 0:
            gcpolicy.stop()
        await state.store.close()


async def purge_dead_sessions(state: AppState) -> int:
    """Delete sessions revoked or expired more than ``session_retention_days`` ago.

    Housekeeping: a failure is logged and the server carries on (the next run tries again).
    """
    config = state.config
    now = now_ms()
    try:
        deleted = await state.store.sessions.purge_dead(
            now - config.session_retention_days * 86_400_000,
            config.session_idle_timeout * 1000,
        )
    except Exception:
        log.exception("purging dead sessions failed")
        return 0
    if deleted:
        log.info("purged %d dead sessions", deleted)
    return deleted


async def _purge_periodically(state: AppState) -> None:
    while True:
        await asyncio.sleep(state.config.session_purge_interval)
        await purge_dead_sessions(state)
