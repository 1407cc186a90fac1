"""Operator endpoints: a bare liveness probe, and a detailed health report behind a token."""

from __future__ import annotations

import hmac
import time

from quart import Blueprint, Response, jsonify, request

from securechat import __version__
from securechat.errors import NotAuthenticated, NotFound
from securechat.sessions import now_ms, store
from securechat.state import state

blueprint = Blueprint("admin", __name__)


@blueprint.get("/healthz")
async def healthz() -> Response:
    """For load balancers: 200 and nothing else."""
    return jsonify({"status": "ok"})


def require_admin() -> None:
    """404 when no token is configured (the endpoint is off); 401 for a missing or wrong one."""
    config = state().config
    if not config.admin_token:
        raise NotFound()
    header = request.headers.get("Authorization", "")
    scheme, _, token = header.partition(" ")
    expected = config.admin_token.encode()
    # Constant-time comparison: timing reveals nothing about the token.
    if scheme.lower() != "bearer" or not hmac.compare_digest(token.strip().encode(), expected):
        raise NotAuthenticated("A valid admin bearer token is required.")


@blueprint.get("/admin/health")
async def health() -> Response:
    """Version, uptime, database latency and counts, for the operator."""
    require_admin()
    config = state().config
    started = time.perf_counter()
    database = {"status": "ok"}
    try:
        await store().db.ping()
    except Exception:
        database = {"status": "error"}
    database["latency_ms"] = round((time.perf_counter() - started) * 1000, 3)  # type: ignore[assignment]
    body = {
        "status": "ok" if database["status"] == "ok" else "degraded",
        "version": __version__,
        "uptime_s": round(time.monotonic() - state().started, 3),
        "database": database,
        "users": await store().accounts.count_users(),
        "sessions_active": await store().sessions.count_active(
            now_ms(), config.session_idle_timeout * 1000
        ),
    }
    for contributor in state().health_contributors:
        body.update(await contributor())
    return jsonify(body)
