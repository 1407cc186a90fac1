"""A Python client that speaks the same protocol and crypto as the browser.

It is what the tests, the benchmark and any bot use. The password never leaves it: it derives
``auth_key`` (sent) and ``wrap_key`` (kept) exactly as the page does (docs/protocol.md).

The session cookie is ``Secure``; browsers send it to http://localhost, but Python's cookie jar
will not send a Secure cookie over plain HTTP, so the client keeps the cookie itself.

Which module holds what:

- ``api.py``: the HTTP side: ``SecureChatClient`` (accounts, sessions, the key directory's
  requests), ``Account``, ``ClientError`` and ``registration_body``;
- ``keys.py``: the key directory checks, the twin of static/js/directory.js: proofs, heads,
  contacts' pins and the watch for keys under my name (``KeyDirectoryView``), with no network;
- ``chat.py``: the WebSocket side: ``ChatConnection`` (frames, cursor, end-to-end messages),
  ``ChatClosed`` and ``ChatError``;
- ``groups.py``: groups (issue 13): ``Groups`` (create, add, remove, leave, rename, make_admin,
  send, receive over a ``ChatConnection``) and ``GroupSession``, one group's verified state.

Import from here (``from securechat.client import SecureChatClient``); every public name is
re-exported.
"""

# httpx and websockets come with the `client` extra, not with the server: say so when missing.
try:
    import httpx  # noqa: F401
    import websockets  # noqa: F401
except ModuleNotFoundError as missing:
    raise ModuleNotFoundError(
        f"No module named {missing.name!r}: securechat.client and the auditor"
        " (python -m securechat.audit) need the client extra: pip install 'securechat[client]'",
        name=missing.name,
    ) from missing

from securechat.client.api import (
    COOKIE_NAME,
    DEFAULT_ITERATIONS,
    DEVICE_COOKIE_NAME,
    Account,
    ClientError,
    SecureChatClient,
    registration_body,
)
from securechat.client.chat import CHAT_MAX_FRAME, ChatClosed, ChatConnection, ChatError
from securechat.client.credentials import (
    change_password,
    derive_recovery_keys,
    format_recovery_key,
    new_recovery_key,
    parse_recovery_key,
    recover,
    reset_keys,
    set_recovery_key,
)
from securechat.client.groups import (
    GroupMessage,
    GroupMessageRefused,
    GroupRefused,
    Groups,
    GroupSession,
    NotAMember,
)
from securechat.client.keys import (
    ContactPin,
    DirectoryEntry,
    KeyDirectoryError,
    KeyDirectoryView,
    NoKeys,
    PinState,
    ProvedKeys,
    ProvedTombstone,
    SelfScan,
    VerifiedKeys,
    foreign_entries,
    verify_key_response,
    verify_tombstone,
)

__all__ = [
    "CHAT_MAX_FRAME",
    "COOKIE_NAME",
    "DEFAULT_ITERATIONS",
    "DEVICE_COOKIE_NAME",
    "Account",
    "ChatClosed",
    "ChatConnection",
    "ChatError",
    "ClientError",
    "ContactPin",
    "DirectoryEntry",
    "GroupMessage",
    "GroupMessageRefused",
    "GroupRefused",
    "GroupSession",
    "Groups",
    "KeyDirectoryError",
    "KeyDirectoryView",
    "NoKeys",
    "NotAMember",
    "PinState",
    "ProvedKeys",
    "ProvedTombstone",
    "SecureChatClient",
    "SelfScan",
    "VerifiedKeys",
    "change_password",
    "derive_recovery_keys",
    "foreign_entries",
    "format_recovery_key",
    "new_recovery_key",
    "parse_recovery_key",
    "recover",
    "registration_body",
    "reset_keys",
    "set_recovery_key",
    "verify_key_response",
    "verify_tombstone",
]
