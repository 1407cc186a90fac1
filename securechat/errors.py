"""One catalogue of what a client may be told went wrong, and the tree of errors views raise.

Every code a client can read is an entry here, documented in docs/protocol.md ("Error codes",
"error" frames and "Close codes"; tests/test_errors.py holds the two to each other):

- :class:`HttpCode`: the ``"error"`` of a JSON error body, with its HTTP status;
- :class:`FrameCode`: the ``"code"`` of a WebSocket ``error`` frame (the socket stays open);
- :class:`Close`: each WebSocket close the server sends, its code (:class:`CloseCode`, RFC 6455
  section 7.4.1) and reason text.

Other modules name an entry (``HttpCode.NOT_FOUND``), never spell a code. Views raise a
:class:`SecureChatError` subclass, which carries its ``HttpCode``. Anything else that goes wrong
is logged on the server and answered with ``internal`` (500): no traceback ever reaches a client.
"""

from __future__ import annotations

import enum
from typing import Any


@enum.unique
class HttpCode(enum.Enum):
    """The code of a JSON error body ``{"error": code, "message": ...}``, its status, its message."""

    BAD_REQUEST = ("bad_request", 400, "The request could not be processed.")
    INVALID = ("invalid", 400, "The request is not valid.")
    # A group's membership entry refused (``reason``: docs/CONTRACTS.md's membership error code).
    INVALID_ENTRY = ("invalid_entry", 400, "The membership entry is not valid.")
    GROUP_TOO_LARGE = ("group_too_large", 400, "The group would have too many members.")
    INVALID_CREDENTIALS = ("invalid_credentials", 401, "Wrong username or password.")
    UNAUTHENTICATED = ("unauthenticated", 401, "Log in first.")
    INVALID_RECOVERY_KEY = ("invalid_recovery_key", 401, "Wrong username or recovery key.")
    CROSS_SITE = ("cross_site", 403, "Cross-site requests are not allowed.")
    ACCOUNT_DISABLED = (
        "account_disabled",
        403,
        "This account has been disabled by the server's operator.",
    )
    NOT_YOUR_ENTRY = (
        "not_your_entry",
        403,
        "A membership entry you post must be signed as you.",
    )
    NOT_FOUND = ("not_found", 404, "Not found.")
    UNKNOWN_GROUP = ("unknown_group", 404, "There is no such group of yours.")
    REQUEST_TIMEOUT = ("request_timeout", 408, "The request body did not arrive in time.")
    USERNAME_TAKEN = ("username_taken", 409, "Username already exists.")
    RECOVERY_KEY_USED = (
        "recovery_key_used",
        409,
        "This recovery key has been used or replaced. Use the newest recovery key you saved.",
    )
    GROUP_EXISTS = ("group_exists", 409, "A group with this id exists already.")
    TOO_MANY_GROUPS = (
        "too_many_groups",
        409,
        "Someone named would be in more groups than the server allows.",
    )
    STALE_HEAD = (
        "stale_head",
        409,
        "The group changed meanwhile: fetch it, check the change, sign it again.",
    )
    UNSUPPORTED_MEDIA_TYPE = (
        "unsupported_media_type",
        415,
        "Send the request body as application/json.",
    )
    MISDIRECTED_REQUEST = (
        "misdirected_request",
        421,
        "This server does not answer for that host name.",
    )
    THROTTLED = ("throttled", 429, "Too many attempts. Try again later.")
    SEARCH_LIMITED = ("search_limited", 429, "Too many searches. Try again in a moment.")
    CONTACTS_LIMITED = (
        "contacts_limited",
        429,
        "Too many contact requests. Try again in a moment.",
    )
    RATE_LIMITED = (
        "rate_limited",
        429,
        "Too many messages and changes from this account. Try again in a moment.",
    )
    INTERNAL = ("internal", 500, "Internal server error.")
    BUSY = ("busy", 503, "The server is busy. Try again in a moment.")

    def __init__(self, code: str, status: int, message: str) -> None:
        self.code = code
        self.status = status
        self.message = message

    def body(self, message: str | None = None, **details: Any) -> dict[str, Any]:
        """The JSON error body: ``{"error": code, "message": ..., **details}``."""
        return {"error": self.code, "message": message or self.message, **details}


@enum.unique
class FrameCode(enum.Enum):
    """The code of an ``error`` frame ``{"type": "error", "code", "message"}``, its message."""

    # The frame itself (securechat/chat/protocol.py).
    BAD_JSON = ("bad_json", "a frame must be valid JSON")
    NOT_AN_OBJECT = ("not_an_object", "a frame must be a JSON object")
    UNKNOWN_TYPE = ("unknown_type", "unknown frame type")
    BAD_FIELD = ("bad_field", "a field is missing or malformed")
    BINARY_FRAME = ("binary_frame", "frames are JSON text; binary frames are not accepted")
    ENVELOPE_TOO_LARGE = ("envelope_too_large", "the envelope is too large")
    # What it asks for (securechat/chat/session.py, securechat/chat/delivery.py).
    SELF_RECIPIENT = ("self_recipient", "You cannot send a message to yourself.")
    UNKNOWN_RECIPIENT = ("unknown_recipient", "There is no user by that name.")
    UNKNOWN_MESSAGE = ("unknown_message", "There is no message {seq} addressed to you.")
    UNAVAILABLE = (
        "unavailable",
        "The message could not be stored; send it again with the same id.",
    )
    RATE_LIMITED = (
        "rate_limited",
        "Too many messages from this account; send it again later with the same id.",
    )
    QUEUE_FULL = (
        "queue_full",
        "Too many of your messages are waiting to be received; send it again later with"
        " the same id, once the recipient has caught up.",
    )
    # Groups (securechat/groups/service.py).
    UNKNOWN_GROUP = ("unknown_group", "There is no such group of yours.")
    NOT_A_MEMBER = (
        "not_a_member",
        "A key distribution names someone who is not another member of the group.",
    )
    STALE_HEAD = (
        "stale_head",
        "The group changed since that head: fetch it, then encrypt and send again with the"
        " same id.",
    )
    # Delete for everyone (the ``delete`` frame; an unknown id answers UNKNOWN_MESSAGE).
    DELETE_EXPIRED = (
        "delete_expired",
        "This message is too old to delete for everyone; you can still delete it for yourself.",
    )

    def __init__(self, code: str, message: str) -> None:
        self.code = code
        self.message = message


class CloseCode(enum.IntEnum):
    """WebSocket close codes the server sends (RFC 6455 section 7.4.1).

    No private 4000-4999 codes (RFC 6455 section 7.4.2) are needed: the close reason text tells
    the reasons sharing 1008 apart. A client reconnects (with backoff) after 1001 and 1013, and
    catches up with ``sync``; after 1008 it does not reconnect on its own.
    """

    NORMAL = 1000  # 7.4.1: normal closure (the client logged out, the socket is done)
    GOING_AWAY = 1001  # 7.4.1: "going away", the server is shutting down
    POLICY_VIOLATION = 1008  # 7.4.1: flooding, session revoked, too many connections
    MESSAGE_TOO_BIG = 1009  # 7.4.1: a frame larger than the server will process
    INTERNAL_ERROR = 1011  # 7.4.1: an unexpected condition on the server; this socket only
    TRY_AGAIN_LATER = 1013  # IANA registry (RFC 6455 11.7): a slow reader whose queue overflowed


@enum.unique
class Close(enum.Enum):
    """A close the server sends on ``/ws``: its code and its reason text."""

    NORMAL = (CloseCode.NORMAL, "")
    SERVER_SHUTDOWN = (CloseCode.GOING_AWAY, "server shutdown")
    SESSION_ENDED = (CloseCode.POLICY_VIOLATION, "session ended")
    SESSION_EXPIRED = (CloseCode.POLICY_VIOLATION, "session expired")
    FLOOD = (CloseCode.POLICY_VIOLATION, "too many frames; slow down")
    TOO_MANY_CONNECTIONS = (CloseCode.POLICY_VIOLATION, "too many connections")
    # Sent by Hypercorn (websocket_max_message_size in hypercorn.toml), not by our code.
    MESSAGE_TOO_BIG = (CloseCode.MESSAGE_TOO_BIG, "")
    INTERNAL_ERROR = (CloseCode.INTERNAL_ERROR, "internal error")
    SLOW_READER = (CloseCode.TRY_AGAIN_LATER, "too slow to read; reconnect and sync")
    SERVER_BUSY = (CloseCode.TRY_AGAIN_LATER, "server busy")
    STALLED_READER = (CloseCode.TRY_AGAIN_LATER, "stopped reading; reconnect and sync")
    SILENT_PEER = (CloseCode.TRY_AGAIN_LATER, "nothing heard; reconnect and sync")

    def __init__(self, code: CloseCode, reason: str) -> None:
        self.code = code
        self.reason = reason


# --- The tree views raise -----------------------------------------------------------------------


class SecureChatError(Exception):
    """Base of every error a client may see in an HTTP answer; ``error`` is its entry."""

    error: HttpCode = HttpCode.BAD_REQUEST

    def __init__(self, message: str | None = None, **details: Any) -> None:
        self.message = message or self.error.message
        self.details = details
        super().__init__(self.message)

    @property
    def status(self) -> int:
        """The HTTP status of the answer."""
        return self.error.status

    @property
    def code(self) -> str:
        """The stable machine-readable code."""
        return self.error.code

    def to_json(self) -> dict[str, Any]:
        """The JSON error body: ``{"error": code, "message": ..., **details}``."""
        return self.error.body(self.message, **self.details)

    def headers(self) -> dict[str, str]:
        """Extra response headers (Retry-After, WWW-Authenticate)."""
        return {}


class InvalidField(SecureChatError):
    """A request field is missing, of the wrong type, or out of its bound."""

    error = HttpCode.INVALID

    def __init__(self, field: str, message: str) -> None:
        super().__init__(message, field=field)
        self.field = field


class BadJson(SecureChatError):
    """The body is not a JSON object."""

    error = HttpCode.INVALID

    def __init__(self) -> None:
        super().__init__("The request body must be a JSON object.")


class UnsupportedMediaType(SecureChatError):
    """A state-changing request that is not ``application/json``."""

    error = HttpCode.UNSUPPORTED_MEDIA_TYPE


class UsernameTaken(SecureChatError):
    """Registration of a name that already exists."""

    error = HttpCode.USERNAME_TAKEN


class InvalidCredentials(SecureChatError):
    """Unknown user or wrong key: deliberately indistinguishable."""

    error = HttpCode.INVALID_CREDENTIALS


class AccountDisabled(SecureChatError):
    """A login to an account the operator disabled (``python -m securechat users disable``)."""

    error = HttpCode.ACCOUNT_DISABLED


class InvalidRecoveryKey(SecureChatError):
    """Unknown user, no recovery key, or a wrong one: deliberately indistinguishable."""

    error = HttpCode.INVALID_RECOVERY_KEY


class RecoveryKeyUsed(SecureChatError):
    """A recovery key that was already used (or replaced): the newest one is needed."""

    error = HttpCode.RECOVERY_KEY_USED


class NotAuthenticated(SecureChatError):
    """No valid session: missing, expired or revoked."""

    error = HttpCode.UNAUTHENTICATED


class CrossSiteRequest(SecureChatError):
    """A state-changing request from another origin (CSRF) or a foreign WebSocket Origin."""

    error = HttpCode.CROSS_SITE


class NotFound(SecureChatError):
    """The resource does not exist (or is not visible to the caller)."""

    error = HttpCode.NOT_FOUND


class Throttled(SecureChatError):
    """Too many attempts; try again after ``retry_after`` seconds."""

    error = HttpCode.THROTTLED

    def __init__(self, retry_after: int, message: str | None = None) -> None:
        super().__init__(message, retry_after=retry_after)
        self.retry_after = retry_after

    def headers(self) -> dict[str, str]:
        return {"Retry-After": str(self.retry_after)}


class SearchLimited(Throttled):
    """Searches for users faster than a person types (securechat/chat/conversations.py)."""

    error = HttpCode.SEARCH_LIMITED


class ContactsLimited(Throttled):
    """Contact decisions and lists faster than a person makes them (securechat/chat/contacts.py)."""

    error = HttpCode.CONTACTS_LIMITED


class RateLimited(Throttled):
    """Group entries past the account's send rate (securechat/groups/views.py)."""

    error = HttpCode.RATE_LIMITED


class GroupError(SecureChatError):
    """A group write or read refused (securechat/groups/service.py); raised with the
    ``HttpCode`` that names why, and any details of its body (``reason``, ``head``)."""

    def __init__(self, error: HttpCode, message: str | None = None, **details: Any) -> None:
        self.error = error
        super().__init__(message, **details)


class ServerBusy(SecureChatError):
    """The server is at a bound it protects itself with; retry shortly."""

    error = HttpCode.BUSY

    def headers(self) -> dict[str, str]:
        return {"Retry-After": "1"}


class ClosesConnection(SecureChatError):
    """An error after which the connection is closed: on HTTP/1 the answer says
    ``Connection: close`` and Hypercorn ends the connection after it (HTTP/2 has no such
    header: web/gate.py drops it there, and the stream alone ends)."""

    def headers(self) -> dict[str, str]:
        return {"Connection": "close"}


class BadHost(ClosesConnection):
    """A request without exactly one Host header (RFC 9112 section 3.2)."""

    error = HttpCode.BAD_REQUEST

    def __init__(self) -> None:
        super().__init__("Send exactly one Host header.")


class MisdirectedRequest(ClosesConnection):
    """A Host the server does not answer for (DNS rebinding; SECURECHAT_PUBLIC_ORIGIN)."""

    error = HttpCode.MISDIRECTED_REQUEST


class AmbiguousFraming(ClosesConnection):
    """A body framed by both Content-Length and Transfer-Encoding (RFC 9112 section 6.1)."""

    error = HttpCode.BAD_REQUEST

    def __init__(self) -> None:
        super().__init__("Send Content-Length or Transfer-Encoding, not both.")


class RequestBodyTimeout(ClosesConnection):
    """The body did not arrive within SECURECHAT_REQUEST_BODY_TIMEOUT seconds."""

    error = HttpCode.REQUEST_TIMEOUT
