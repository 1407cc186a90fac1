"""Server-side sessions on top of quart-auth.

quart-auth keeps a signed ``auth_id`` in a ``__Host-`` cookie. The ``auth_id`` is 256 random
bits that name a row of the sessions table; the table stores only its SHA-256, so a copy of
the database opens no session. Every request and every WebSocket handshake looks the row up,
so logout, "log out other sessions", idle and absolute expiry take effect at once.
"""

from __future__ import annotations

import dataclasses
import hashlib
import logging
import secrets

from quart import g, has_request_context, request, websocket
from quart_auth import AuthUser, current_user, login_user, logout_user

from securechat.errors import AccountDisabled, InvalidCredentials, NotAuthenticated
from securechat.state import AppState, state
from securechat.store import Session, Store, User

log = logging.getLogger(__name__)

# Activity is written back at most this often per session, not on every request.
TOUCH_INTERVAL_MS = 60_000
USER_AGENT_MAX = 200


def hash_session_id(auth_id: str) -> str:
    """The database key of a session: SHA-256 of the secret cookie value."""
    return hashlib.sha256(auth_id.encode("ascii", "replace")).hexdigest()


def store() -> Store:
    """The app's store."""
    return state().store


async def start_session(user: User) -> Session:
    """Open a fresh session for ``user`` (a new id at every login) and set its cookie;
    AccountDisabled or InvalidCredentials if the account was disabled, or its password
    changed, since ``user`` was read."""
    config = state().config
    auth_id = secrets.token_urlsafe(32)
    now = state().clock.now_ms()
    context = request if has_request_context() else websocket
    session = Session(
        id=hash_session_id(auth_id),
        public_id=secrets.token_urlsafe(9),
        user_id=user.id,
        username=user.username,
        created_at=now,
        last_seen_at=now,
        expires_at=now + config.session_absolute_timeout * 1000,
        revoked_at=None,
        user_agent=(context.headers.get("User-Agent") or "")[:USER_AGENT_MAX],
        address=context.remote_addr or "",
    )
    # Only while the account still has the password the login verified and is not disabled:
    # a change, recovery, disable or deletion that committed meanwhile refuses the login.
    if not await store().sessions.add_session(session, auth_hash=user.auth_hash):
        if await store().lifecycle.is_disabled(user.id):
            raise AccountDisabled()
        raise InvalidCredentials()
    login_user(AuthUser(auth_id), remember=True)
    g.securechat_session = session
    await _revoke_beyond_limit(user.id, config.sessions_per_user_max, now)
    return session


async def _revoke_beyond_limit(user_id: int, limit: int, now: int) -> None:
    revoked = await store().sessions.prune_oldest_beyond(user_id, limit, now)
    for session_id in revoked:
        await notify_session_ended(session_id)


async def current_session() -> Session | None:
    """The live session of this request or handshake, or None."""
    if "securechat_session" in g:
        cached: Session | None = g.securechat_session
        return cached
    session = await _load_session()
    g.securechat_session = session
    return session


async def _load_session() -> Session | None:
    auth_id = current_user.auth_id
    if not auth_id:
        return None
    session = await store().sessions.session_by_id(hash_session_id(auth_id))
    now = state().clock.now_ms()
    if session is None or not is_live(session, now):
        return None
    if now - session.last_seen_at > TOUCH_INTERVAL_MS:
        await store().sessions.touch(session.id, now)
        session = dataclasses.replace(session, last_seen_at=now)
    return session


def is_live(session: Session, now: int) -> bool:
    """Not revoked, not past its absolute expiry, not idle too long."""
    idle_ms = state().config.session_idle_timeout * 1000
    return (
        session.revoked_at is None
        and session.expires_at > now
        and session.last_seen_at > now - idle_ms
    )


async def require_session() -> Session:
    """The live session, or NotAuthenticated (401)."""
    session = await current_session()
    if session is None:
        raise NotAuthenticated()
    return session


async def end_session() -> None:
    """Revoke this session on the server and clear its cookie."""
    session = await current_session()
    if session is not None:
        await store().sessions.revoke(session.id, state().clock.now_ms())
        await notify_session_ended(session.id)
    logout_user()
    g.securechat_session = None


async def notify_session_ended(session_id: str) -> None:
    """Tell the rest of the app (the chat hub) that a session is over."""
    for listener in state().session_listeners:
        await listener(session_id)


async def purge_dead_sessions(app_state: AppState) -> int:
    """Delete sessions revoked or expired more than ``session_retention_days`` ago.

    Housekeeping: a failure is logged and the server carries on (the next run tries again).
    """
    config = app_state.config
    now = app_state.clock.now_ms()
    try:
        deleted = await app_state.store.sessions.purge_dead(
            now - config.session_retention_days * 86_400_000,
            config.session_idle_timeout * 1000,
        )
    except Exception:
        log.exception("purging dead sessions failed")
        return 0
    if deleted:
        log.info("purged %d dead sessions", deleted)
    return deleted
