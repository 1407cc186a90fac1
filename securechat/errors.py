"""One tree of errors that mean something to a client.

Each error knows its HTTP status, its stable machine-readable ``code`` and, for the WebSocket,
the close code it maps to (RFC 6455 section 7.4.1). Anything else that goes wrong is logged on
the server and answered with a bare 500 body: no traceback ever reaches a client.
"""

from __future__ import annotations

from typing import Any


class SecureChatError(Exception):
    """Base of every error a client may see."""

    status: int = 400
    code: str = "bad_request"
    close_code: int = 1008  # RFC 6455 7.4.1: policy violation
    default_message: str = "The request could not be processed."

    def __init__(self, message: str | None = None, **details: Any) -> None:
        self.message = message or self.default_message
        self.details = details
        super().__init__(self.message)

    def to_json(self) -> dict[str, Any]:
        """The JSON error body: ``{"error": code, "message": ..., **details}``."""
        return {"error": self.code, "message": self.message, **self.details}

    def headers(self) -> dict[str, str]:
        """Extra response headers (Retry-After, WWW-Authenticate)."""
        return {}


class InvalidField(SecureChatError):
    """A request field is missing, of the wrong type, or out of its bound."""

    code = "invalid"

    def __init__(self, field: str, message: str) -> None:
        super().__init__(message, field=field)
        self.field = field


class BadJson(SecureChatError):
    """The body is not a JSON object."""

    code = "invalid"
    default_message = "The request body must be a JSON object."


class UnsupportedMediaType(SecureChatError):
    """A state-changing request that is not ``application/json``."""

    status = 415
    code = "unsupported_media_type"
    default_message = "Send the request body as application/json."


class UsernameTaken(SecureChatError):
    """Registration of a name that already exists."""

    status = 409
    code = "username_taken"
    default_message = "Username already exists."


class InvalidCredentials(SecureChatError):
    """Unknown user or wrong key: deliberately indistinguishable."""

    status = 401
    code = "invalid_credentials"
    default_message = "Wrong username or password."


class NotAuthenticated(SecureChatError):
    """No valid session: missing, expired or revoked."""

    status = 401
    code = "unauthenticated"
    default_message = "Log in first."


class CrossSiteRequest(SecureChatError):
    """A state-changing request from another origin (CSRF) or a foreign WebSocket Origin."""

    status = 403
    code = "cross_site"
    default_message = "Cross-site requests are not allowed."


class Forbidden(SecureChatError):
    """Authenticated, but not allowed to do this."""

    status = 403
    code = "forbidden"
    default_message = "Not allowed."


class NotFound(SecureChatError):
    """The resource does not exist (or is not visible to the caller)."""

    status = 404
    code = "not_found"
    default_message = "Not found."


class Throttled(SecureChatError):
    """Too many attempts; try again after ``retry_after`` seconds."""

    status = 429
    code = "throttled"
    close_code = 1008
    default_message = "Too many attempts. Try again later."

    def __init__(self, retry_after: int, message: str | None = None) -> None:
        super().__init__(message, retry_after=retry_after)
        self.retry_after = retry_after

    def headers(self) -> dict[str, str]:
        return {"Retry-After": str(self.retry_after)}


class ServerBusy(SecureChatError):
    """The server is at a bound it protects itself with; retry shortly."""

    status = 503
    code = "busy"
    close_code = 1013  # RFC 6455 7.4.1: try again later
    default_message = "The server is busy. Try again in a moment."

    def headers(self) -> dict[str, str]:
        return {"Retry-After": "1"}
