"""``create_app``: the app factory. It builds the services and wires the packages together;
nothing happens at import time and resources open only when serving starts."""

from __future__ import annotations

import asyncio
import logging
import time
from typing import TYPE_CHECKING

from quart import Quart
from quart_auth import QuartAuth

from securechat import datadir, gcpolicy
from securechat.accounts import credentials, lifecycle
from securechat.accounts import views as accounts_views
from securechat.accounts.service import Accounts
from securechat.accounts.sessions import purge_dead_sessions
from securechat.chat import contacts, conversations
from securechat.chat import endpoint as chat_endpoint
from securechat.chat.service import ChatService, new_node_id
from securechat.config import RESOURCES, Config
from securechat.directory import views as directory_views
from securechat.directory.service import KeyDirectory, directory_key
from securechat.groups import views as group_views
from securechat.groups.service import GroupService
from securechat.runtime import WALL_CLOCK, Clock, cancel_and_wait
from securechat.state import AppState
from securechat.store import create_store
from securechat.web import admin, pages, security
from securechat.web.gate import RequestGate
from securechat.web.proxy import TrustedProxies

if TYPE_CHECKING:
    from securechat.cluster.limits import SharedLimits

log = logging.getLogger(__name__)


def create_app(config: Config | None = None, *, clock: Clock = WALL_CLOCK) -> Quart:
    """Build the app from ``config`` (default: the environment) on ``clock`` (a test may pass
    one it moves itself). Resources open at serving time."""
    config = config or Config.from_env()
    app = Quart(
        "securechat",
        template_folder=str(RESOURCES / "templates"),
        static_folder=str(RESOURCES / "static"),
        static_url_path="/static",
    )
    secrets = datadir.prepare(config.data_dir, config.server_secret_path)
    app.secret_key = secrets.cookie_key
    app.config.update(_quart_settings(config))
    QuartAuth(app)
    state = _build_state(config, secrets, clock)
    app.extensions["securechat"] = state
    security.install(app, config)
    app.register_blueprint(accounts_views.blueprint)
    app.register_blueprint(credentials.blueprint)
    app.register_blueprint(admin.blueprint)
    app.register_blueprint(pages.blueprint)
    _install_lifecycle(app, state)
    directory_views.install(app, state.directory)  # after the lifecycle: needs the open store
    state.chat.install(app)  # its committer and presence start while serving
    lifecycle.install(app, state)  # follows the operator's actions while serving
    app.register_blueprint(chat_endpoint.blueprint)
    app.register_blueprint(conversations.blueprint)
    app.register_blueprint(contacts.blueprint)
    app.register_blueprint(group_views.blueprint)
    _trust_proxies(app, config.trusted_proxy_hops)
    # Outermost: a foreign Host or ambiguous framing is refused before anything else runs.
    app.asgi_app = RequestGate(app.asgi_app, config)  # type: ignore[method-assign]
    return app


def _build_state(config: Config, secrets: datadir.ServerSecrets, clock: Clock) -> AppState:
    store = create_store(config)
    node_id = new_node_id()  # this process's one name: the broker, the lease, the socket cap
    limits = _shared_limits(config, clock, node_id)
    chat = ChatService.create(
        config,
        store,
        clock,
        shared_rate=None if limits is None else limits.send_rate,
        shared_sockets=None if limits is None else limits.sockets,
        redis=None if limits is None else limits.link,
        node_id=node_id,
    )
    return AppState(
        config=config,
        clock=clock,
        secrets=secrets,
        store=store,
        accounts=Accounts.create(
            config,
            store,
            secrets.decoy_salt_key,
            clock,
            device_token_key=secrets.device_token_key,
            shared=None if limits is None else limits.throttles,
        ),
        chat=chat,
        directory=KeyDirectory(directory_key(config), store.directory),
        groups=GroupService(store, chat.broker, config, clock, chat.delivery, chat.stats),
        started=time.monotonic(),
        session_listeners=[chat.session_ended],
        redis=None if limits is None else limits.link,
        limits=limits,
    )


def _shared_limits(config: Config, clock: Clock, node_id: str) -> SharedLimits | None:
    """A cluster node's limits, counted in the Redis ``redis_url`` names; None without one.

    Imported here: only a cluster's nodes need redis-py, and ``make run`` never loads it."""
    if config.redis_url is None:
        return None
    from securechat.cluster.limits import SharedLimits
    from securechat.cluster.redis import RedisLink

    return SharedLimits(RedisLink.from_config(config), config, clock, node_id=node_id)


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


def _install_lifecycle(app: Quart, state: AppState) -> None:
    purger: list[asyncio.Task[None]] = []

    @app.before_serving
    async def open_resources() -> None:
        # First: a refused claim leaves nothing open (no thread would keep the process up).
        await state.store.claim_serving()  # one process per SQLite file (--workers: a cluster)
        await state.store.open()
        state.started = time.monotonic()
        await purge_dead_sessions(state)
        purger.append(asyncio.create_task(_purge_periodically(state), name="session-purge"))
        if state.config.gc_freeze_growth > 0:
            gcpolicy.start(state.config.gc_freeze_growth)
        if state.limits is not None:
            state.limits.start()

    @app.after_serving
    async def close_resources() -> None:
        for task in purger:
            await cancel_and_wait(task)
        purger.clear()
        if state.config.gc_freeze_growth > 0:
            gcpolicy.stop()
        if state.limits is not None:
            await state.limits.stop()
        if state.redis is not None:
            await state.redis.close()
        await state.store.close()


async def _purge_periodically(state: AppState) -> None:
    while True:
        await asyncio.sleep(state.config.session_purge_interval)
        await purge_dead_sessions(state)
