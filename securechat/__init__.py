"""SecureChat: a self-hostable, end-to-end encrypted web chat server.

``create_app`` builds the Quart app; nothing happens at import time.
"""

from __future__ import annotations

import time

from quart import Quart
from quart_auth import QuartAuth

from securechat.config import PROJECT_ROOT, Config

__version__ = "0.1.0"


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
    return app


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
    from securechat.state import AppState

    @app.before_serving
    async def open_resources() -> None:
        state: AppState = app.extensions["securechat"]
        await state.store.open()
        state.started = time.monotonic()

    @app.after_serving
    async def close_resources() -> None:
        state: AppState = app.extensions["securechat"]
        await state.store.close()
