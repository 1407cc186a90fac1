"""Cross-site request protection, security headers, and error pages without tracebacks.

CSRF (OWASP CSRF Prevention Cheat Sheet): every state-changing request must come from an
allowed origin, judged by ``Sec-Fetch-Site`` and ``Origin``, and must be ``application/json``
(which a cross-site form cannot send without a CORS preflight we never answer). The session
cookie is also ``SameSite=Strict``: three independent locks.
"""

from __future__ import annotations

import functools
import logging

from quart import Quart, Response, has_request_context, jsonify, render_template, request
from werkzeug.exceptions import HTTPException

from securechat.config import Config
from securechat.errors import (
    CrossSiteRequest,
    HttpCode,
    InvalidField,
    SecureChatError,
    UnsupportedMediaType,
)
from securechat.state import state
from securechat.web.api import receiving_body
from securechat.web.origins import parse_origin, public_origins

log = logging.getLogger(__name__)

SAFE_METHODS = frozenset({"GET", "HEAD", "OPTIONS"})
CONTENT_SECURITY_POLICY = "; ".join(
    [
        "default-src 'self'",
        "script-src 'self'",
        "style-src 'self'",
        "img-src 'self' data:",
        "connect-src 'self'",
        "font-src 'self'",
        "object-src 'none'",
        "base-uri 'none'",
        "frame-ancestors 'none'",
        "form-action 'self'",
    ]
)
SECURITY_HEADERS = {
    "Content-Security-Policy": CONTENT_SECURITY_POLICY,
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "no-referrer",
    "Cross-Origin-Opener-Policy": "same-origin",
    "Cross-Origin-Resource-Policy": "same-origin",
    "X-Frame-Options": "DENY",
    "Permissions-Policy": "camera=(), microphone=(), geolocation=(), interest-cohort=()",
}
HSTS = "max-age=63072000; includeSubDomains"


def is_allowed_origin(origin: str, scheme: str, host: str, config: Config) -> bool:
    """One of the server's own origins, or one the operator listed in
    ``SECURECHAT_ALLOWED_ORIGINS``.

    The own origins are ``SECURECHAT_PUBLIC_ORIGIN``'s; unset, the loopback address a request to
    ``scheme://host`` came to. Never ``Host`` taken on trust: a rebound name would pass
    (web/origins.py; web/gate.py has refused a request for any other host already).
    """
    origin = _normal_origin(origin)
    own = public_origins(config.public_origin).own_origins(scheme, host)
    return origin in own or origin in _listed(config.allowed_origins)


def _normal_origin(origin: str) -> str:
    return origin.lower().rstrip("/")


@functools.cache
def _listed(origins: tuple[str, ...]) -> frozenset[str]:
    """The operator's list of origins, normalised once per configuration as a browser writes
    them (``https://x:443`` is ``https://x``); ValueError if one is malformed."""
    return frozenset(parse_origin(origin, "allowed_origins")[0] for origin in origins)


async def refuse_cross_site_writes() -> None:
    """before_request: 403 for a state-changing request from elsewhere, 415 for non-JSON."""
    if request.method in SAFE_METHODS:
        return
    fetch_site = request.headers.get("Sec-Fetch-Site")
    cross_site = fetch_site is not None and fetch_site not in ("same-origin", "none")
    # A request the browser calls cross-site, or one that names its origin, must come from an
    # allowed origin (a cross-site one without Origin is refused).
    if (cross_site or "Origin" in request.headers) and not _origin_ok(state().config):
        raise CrossSiteRequest()
    if request.mimetype != "application/json":
        raise UnsupportedMediaType()


async def refuse_oversized_bodies() -> None:
    """before_request: read the body; over the bound, or without a Content-Length, answer 400;
    not all there within ``request_body_timeout``, answer 408 and close the connection.

    The body is drained first (up to a cap, discarding it): answering before it has been read
    would make the server close a connection the client is still writing to, and the client
    would see a reset instead of the answer.
    """
    if request.method in SAFE_METHODS:
        return
    config = state().config
    async with receiving_body(config):
        await _read_or_drain(config)


async def _read_or_drain(config: Config) -> None:
    declared = request.content_length
    if declared is not None and declared <= config.request_max_bytes:
        # Read it now (Quart caches it for the view): an answer given before the body has been
        # read, such as a 403, would otherwise close the connection under the client.
        await request.get_data()
        return
    # Without a Content-Length an HTTP/1 request has a body only if it is chunked, but an HTTP/2
    # one may have one anyway: only reading tells, so it is read (and bounded) all the same.
    received = 0
    async for chunk in request.body:
        received += len(chunk)
        if received > config.request_drain_max_bytes:
            break
    if declared is None:
        if received == 0:
            return  # no body at all
        raise InvalidField("body", "Send the request body with a Content-Length header.")
    raise InvalidField("body", f"The request body is larger than {config.request_max_bytes} bytes.")


def _origin_ok(config: Config) -> bool:
    origin = request.headers.get("Origin")
    if origin is None:
        return False
    return is_allowed_origin(origin, request.scheme, request.host, config)


async def add_security_headers(response: Response) -> Response:
    """after_request: the strict headers on every response, pages, API and errors alike."""
    for name, value in SECURITY_HEADERS.items():
        response.headers.setdefault(name, value)
    if request.scheme == "https":
        response.headers.setdefault("Strict-Transport-Security", HSTS)
    if request.path.startswith(("/api/", "/admin/", "/metrics")):
        response.headers.setdefault("Cache-Control", "no-store")
    return response


def wants_json() -> bool:
    """API and admin paths answer errors in JSON, and so does a refused WebSocket handshake
    (a program reads it, and there is no request to look at); pages answer in HTML."""
    if not has_request_context():
        return True
    return request.path.startswith(("/api/", "/admin/", "/metrics", "/healthz"))


async def handle_app_error(error: SecureChatError) -> tuple[Response, int, dict[str, str]]:
    """A known error: its JSON body and status."""
    return jsonify(error.to_json()), error.status, error.headers()


async def handle_http_error(error: HTTPException) -> tuple[Response | str, int]:
    """Werkzeug's errors (404, 405, 413 ...) as JSON or a plain page, never a traceback."""
    status = error.code or 500
    if status == 413:
        # The contract answers an oversized body like any other invalid field: 400.
        too_large = InvalidField("body", "The request body is too large.")
        return jsonify(too_large.to_json()), too_large.status
    # The framework's own errors carry their reason phrase as the code: 404 not_found (as
    # HttpCode.NOT_FOUND), 405 method_not_allowed ... (docs/protocol.md, "Error codes").
    code = (error.name or "error").lower().replace(" ", "_")
    if wants_json():
        return jsonify({"error": code, "message": error.description or error.name}), status
    return await render_template("error.html", status=status, title=error.name), status


async def handle_unexpected(error: Exception) -> tuple[Response | str, int]:
    """Anything else: logged here, a bare 500 there."""
    if isinstance(error, HTTPException):
        return await handle_http_error(error)
    log.exception("unhandled error", exc_info=error)
    if wants_json():
        return jsonify(HttpCode.INTERNAL.body()), HttpCode.INTERNAL.status
    return await render_template("error.html", status=500, title="Internal server error"), 500


def install(app: Quart, config: Config) -> None:
    """Wire the checks, headers and error handlers into ``app``; ValueError if an allowed
    origin is malformed (found now, not at the first request)."""
    _listed(config.allowed_origins)
    app.before_request(refuse_oversized_bodies)
    app.before_request(refuse_cross_site_writes)
    app.after_request(add_security_headers)
    app.register_error_handler(SecureChatError, handle_app_error)
    app.register_error_handler(HTTPException, handle_http_error)
    app.register_error_handler(Exception, handle_unexpected)
