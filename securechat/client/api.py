"""The HTTP side of the client: accounts, sessions and the key directory's requests.

The password never leaves it: it derives ``auth_key`` (sent) and ``wrap_key`` (kept) exactly as
the page does (docs/protocol.md).

The session cookie is ``Secure``; browsers send it to http://localhost, but Python's cookie jar
will not send a Secure cookie over plain HTTP, so the client keeps its cookies itself: the
session's, and the device cookie, which it keeps across logout as a browser does, so that its
logins have a failure budget of their own (docs/protocol.md, "Accounts API").
"""

from __future__ import annotations

import functools
import os
import ssl
from dataclasses import dataclass
from http.cookies import SimpleCookie
from typing import Any
from urllib.parse import quote, urlsplit

import httpx
from websockets.asyncio.client import connect as websockets_connect
from websockets.typing import Origin

from securechat import e2e
from securechat.chat.protocol import normalize_username
from securechat.client.chat import CHAT_MAX_FRAME, KEEPALIVE_INTERVAL, ChatConnection
from securechat.client.keys import (
    DirectoryEntry,
    KeyDirectoryError,
    KeyDirectoryView,
    NoKeys,
    VerifiedKeys,
    verify_key_response,
)
from securechat.directory import transparency

DEFAULT_ITERATIONS = 600_000
COOKIE_NAME = "__Host-securechat"
DEVICE_COOKIE_NAME = "__Host-securechat-device"


@functools.cache
def _tls() -> ssl.SSLContext:
    """httpx's default TLS context, made once: loading the CA certificates takes tens of
    milliseconds, which a bot or a test that makes many clients would pay for each."""
    return httpx.create_ssl_context()


class ClientError(Exception):
    """The server refused a request; ``status`` and ``body`` say why."""

    def __init__(self, status: int, body: dict[str, Any]) -> None:
        super().__init__(f"{status}: {body}")
        self.status = status
        self.body = body

    @property
    def code(self) -> str:
        return str(self.body.get("error", ""))


@dataclass
class Account:
    """A signed-in user's name and private keys (held only by this client)."""

    username: str
    identity: e2e.Identity


class SecureChatClient:
    """One user's connection to a SecureChat server."""

    def __init__(
        self,
        base_url: str,
        *,
        timeout: float = 30.0,
        min_iterations: int = e2e.MIN_ITERATIONS,
        directory: KeyDirectoryView | None = None,
    ) -> None:
        # The floor on PBKDF2 iterations this client accepts from the server at login; only
        # tests lower it, to save time.
        self.min_iterations = min_iterations
        self.base_url = base_url.rstrip("/")
        parts = urlsplit(self.base_url)
        self.origin = f"{parts.scheme}://{parts.netloc}"
        self.http = httpx.AsyncClient(base_url=self.base_url, timeout=timeout, verify=_tls())
        self.session_cookie: str | None = None
        self.device_cookie: str | None = None
        self.account: Account | None = None
        # What this client has seen of the key directory (pins, last head).
        self.directory = directory if directory is not None else KeyDirectoryView()
        # Chat sockets opened by connect(), closed with the client.
        self.chats: list[ChatConnection] = []

    async def __aenter__(self) -> SecureChatClient:
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        await self.close()

    async def close(self) -> None:
        for chat in self.chats:
            await chat.close()
        await self.http.aclose()

    async def connect(
        self,
        *,
        after: int | None = 0,
        wait: float = 10.0,
        keepalive: float | None = KEEPALIVE_INTERVAL,
    ) -> ChatConnection:
        """Open the chat socket with this session (cookie and Origin as a browser sends them).

        With ``after`` (default 0: everything), connect with ``?after=`` so the server replays
        first; the replayed frames are in ``ChatConnection.replayed``. A refused handshake
        raises websockets' ``InvalidStatus``. The socket pings after ``keepalive`` seconds
        of silence (None: never), so the server does not take a quiet client for gone.
        """
        scheme = "wss" if self.base_url.startswith("https:") else "ws"
        cookies = self._cookie_header()
        headers = {"Cookie": cookies} if cookies else {}
        query = "" if after is None else f"?after={int(after)}"
        socket = await websockets_connect(
            f"{scheme}://{urlsplit(self.base_url).netloc}/ws{query}",
            origin=Origin(self.origin),
            additional_headers=headers,
            max_size=CHAT_MAX_FRAME,
            open_timeout=wait,
            proxy=None,
        )
        chat = ChatConnection(self, socket, wait=wait, keepalive=keepalive)
        self.chats.append(chat)
        if after is not None:
            chat.cursor, chat.in_order = int(after), True
            await chat.collect_replay()
        return chat

    # Raw requests -------------------------------------------------------------------------

    def headers(self) -> dict[str, str]:
        """Origin (as a browser sends it) and the session and device cookies, if any."""
        headers = {"Origin": self.origin}
        cookies = self._cookie_header()
        if cookies:
            headers["Cookie"] = cookies
        return headers

    def _cookie_header(self) -> str:
        kept = ((COOKIE_NAME, self.session_cookie), (DEVICE_COOKIE_NAME, self.device_cookie))
        return "; ".join(f"{name}={value}" for name, value in kept if value)

    async def request(self, method: str, path: str, body: Any = None) -> httpx.Response:
        """Send one request as this client; keep the cookies the server sets.

        A GET whose kept-alive connection the server closed just as it was sent (Hypercorn's
        keep_alive_timeout, 5 s) is sent once more on a new one, as a browser does; it
        changes nothing, so sending it twice is safe."""
        try:
            response = await self.http.request(
                method, path, json=body if method != "GET" else None, headers=self.headers()
            )
        except httpx.RemoteProtocolError:
            if method != "GET":
                raise
            response = await self.http.request(method, path, headers=self.headers())
        self._keep_cookie(response)
        return response

    async def call(self, method: str, path: str, body: Any = None) -> Any:
        """A request whose failure raises ClientError; returns the JSON body (or None)."""
        response = await self.request(method, path, body)
        if response.status_code >= 400:
            raise ClientError(response.status_code, _json_or_empty(response))
        return response.json() if response.content else None

    def _keep_cookie(self, response: httpx.Response) -> None:
        for header in response.headers.get_list("set-cookie"):
            cookie: SimpleCookie = SimpleCookie()
            cookie.load(header)
            for name, morsel in cookie.items():
                expired = morsel["max-age"] == "0" or not morsel.value
                value = None if expired else morsel.value
                if name == COOKIE_NAME:
                    self.session_cookie = value
                elif name == DEVICE_COOKIE_NAME:
                    self.device_cookie = value

    # Accounts -----------------------------------------------------------------------------

    async def prelogin(self, username: str) -> tuple[bytes, int]:
        """The salt and iterations for ``username`` (a decoy if it does not exist)."""
        body = await self.call("POST", "/api/v1/prelogin", {"username": username})
        return e2e.b64decode(body["salt"]), int(body["iterations"])

    async def register(
        self,
        username: str,
        password: str,
        *,
        iterations: int = DEFAULT_ITERATIONS,
        identity: e2e.Identity | None = None,
        rsa_bits: int = 3072,
    ) -> e2e.Identity:
        """Create an account; the keys are generated here unless ``identity`` is given."""
        salt = os.urandom(16)
        keys = e2e.derive_keys(password, salt, iterations, min_iterations=self.min_iterations)
        identity = identity or e2e.Identity.generate(rsa_bits)
        await self.call(
            "POST",
            "/api/v1/register",
            registration_body(username, salt, iterations, keys, identity),
        )
        return identity

    async def login(self, username: str, password: str) -> Account:
        """Log in and restore the private keys from the server's opaque backup."""
        salt, iterations = await self.prelogin(username)
        keys = e2e.derive_keys(password, salt, iterations, min_iterations=self.min_iterations)
        body = await self.call(
            "POST",
            "/api/v1/login",
            {"username": username, "auth_key": e2e.b64encode(keys.auth_key)},
        )
        identity = e2e.open_key_backup(body["key_backup"], keys.wrap_key)
        self.account = Account(body["username"], identity)
        return self.account

    async def logout(self) -> None:
        """End this session on the server."""
        await self.call("POST", "/api/v1/logout", {})
        self.session_cookie = None
        self.account = None

    async def delete_account(self, password: str) -> dict[str, Any]:
        """Delete my account for good (the password is checked as a login checks it)."""
        assert self.account is not None, "log in first"
        salt, iterations = await self.prelogin(self.account.username)
        keys = e2e.derive_keys(password, salt, iterations, min_iterations=self.min_iterations)
        body: dict[str, Any] = await self.call(
            "POST",
            "/api/v1/account/delete",
            {"username": self.account.username, "auth_key": e2e.b64encode(keys.auth_key)},
        )
        self.session_cookie = None
        self.account = None
        return body

    async def me(self) -> str:
        """The signed-in username."""
        body = await self.call("GET", "/api/v1/me")
        return str(body["username"])

    # Contacts and message requests (docs/protocol.md "Contacts") --------------------------

    async def search_users(self, query: str) -> list[str]:
        """Usernames containing ``query``: the exact one, then prefixes, then the rest."""
        body = await self.call("GET", f"/api/v1/users?q={quote(query)}")
        return list(body["users"])

    async def contact(self, user: str, action: str) -> str | None:
        """``accept``, ``block`` or ``unblock`` ``user``, or ``delete`` their request; my state
        for them afterwards (None: a stranger)."""
        body = await self.call("POST", "/api/v1/contacts", {"user": user, "action": action})
        state: str | None = body["state"]
        return state

    async def contacts(self, state: str = "accepted") -> list[str]:
        """The users I accepted (or ``blocked``), the latest decision first."""
        body = await self.call("GET", f"/api/v1/contacts?state={quote(state)}")
        return list(body["contacts"])

    async def requests(self) -> list[dict[str, Any]]:
        """My message requests: ``{"peer", "last_seq", "unread"}``, most recent first."""
        body = await self.call("GET", "/api/v1/requests")
        return list(body["requests"])

    # Key directory ------------------------------------------------------------------------

    async def directory_key(self) -> bytes:
        """The directory's public key (SPKI DER), pinned on first use and checked after."""
        body = await self.call("GET", "/api/v1/directory")
        try:
            spki = e2e.b64decode(body["public_key"])
        except (KeyError, TypeError, ValueError) as error:
            raise KeyDirectoryError("bad_response", "no directory key") from error
        self.directory.pin_directory_key(spki)
        return spki

    async def fetch_verified_keys(self, username: str) -> VerifiedKeys:
        """A user's keys, proved in the log, consistent with every head seen, compared to the pin.

        Raises KeyDirectoryError when any check fails: such keys must not be used.
        """
        name = normalize_username(username)
        pinned = self.directory.directory_key or await self.directory_key()
        body = await self.call("GET", f"/api/v1/keys/{quote(name, safe='')}")
        try:
            proved = verify_key_response(body, name, pinned)
        except NoKeys as gone:  # proved: the head it came with must still fit the ones seen
            await self.check_head(gone.tombstone.tree_head)
            raise
        except KeyDirectoryError as error:
            if error.code == "bad_signature":
                await self.directory_key()  # a rotated key says directory_key_changed
            raise
        await self.check_head(proved.tree_head)
        is_self = self.account is not None and self.account.username == name
        return self.directory.pin_contact(proved, is_self=is_self)

    async def check_head(
        self, head: transparency.SignedTreeHead | None = None
    ) -> transparency.SignedTreeHead:
        """Check a head (default: the server's latest) against the last one seen; keep it."""
        if head is None:
            pinned = self.directory.directory_key or await self.directory_key()
            try:
                head = transparency.SignedTreeHead.from_json(
                    await self.call("GET", "/api/v1/directory/head")
                )
            except ValueError as error:
                raise KeyDirectoryError("bad_response", str(error)) from None
            if not transparency.verify_tree_head(pinned, head):
                raise KeyDirectoryError("bad_signature", "the head is not signed by the directory")
        last = self.directory.last_head
        proof = None
        if last is not None and last.tree_size != head.tree_size:
            sizes = sorted((last.tree_size, head.tree_size))
            proof = await self._consistency_proof(sizes[0], sizes[1])
        self.directory.keep_head(self.directory.check_head(head, proof))
        return head

    async def _consistency_proof(self, old_size: int, new_size: int) -> list[bytes]:
        try:
            body = await self.call(
                "GET", f"/api/v1/directory/consistency?from={old_size}&to={new_size}"
            )
            return [e2e.b64decode(p) for p in body["proof"]]
        except ClientError as error:
            # An honest log proves any two sizes it has signed; refusing is evidence too.
            raise KeyDirectoryError(
                "log_forked", f"no consistency proof from {old_size} to {new_size}"
            ) from error
        except (KeyError, TypeError, ValueError) as error:
            raise KeyDirectoryError("bad_response", "malformed consistency proof") from error

    async def check_my_entries(self) -> list[DirectoryEntry]:
        """Watch the log for keys under my name that I do not hold (``KeyDirectoryView``).

        Reads the entries added since the last call up to a freshly checked head and hands them
        to ``self.directory.check_my_entries``; returns my entries among them. Raises
        KeyDirectoryError (``foreign_key_for_me``, ``bad_entries``, or a head check's code).
        """
        if self.account is None:
            raise RuntimeError("log in first")
        head = await self.check_head()
        start = self.directory.scanned_size(self.account.username)
        entries: list[DirectoryEntry] = []
        while start + len(entries) < head.tree_size:
            at = start + len(entries)
            body = await self.call(
                "GET", f"/api/v1/directory/entries?start={at}&end={head.tree_size}"
            )
            page = body.get("entries") if isinstance(body, dict) else None
            if not isinstance(page, list) or not page:
                raise KeyDirectoryError("bad_entries", f"no log entries served from {at}")
            try:
                entries += [DirectoryEntry.from_json(e) for e in page]
            except KeyDirectoryError as error:
                raise KeyDirectoryError("bad_entries", str(error)) from None
        identity = self.account.identity
        return self.directory.check_my_entries(
            self.account.username,
            e2e.fingerprint(identity.enc_public_spki),
            e2e.fingerprint(identity.sign_public_spki),
            head,
            entries[: head.tree_size - start],
        )

    def safety_number(self, keys: VerifiedKeys) -> str:
        """The 60-digit safety number between me and the owner of ``keys``."""
        if self.account is None:
            raise RuntimeError("log in first")
        me = self.account.identity
        return e2e.safety_number(
            self.account.username,
            me.sign_public_spki,
            me.enc_public_spki,
            keys.username,
            keys.sign_public_key,
            keys.enc_public_key,
        )


def registration_body(
    username: str, salt: bytes, iterations: int, keys: e2e.DerivedKeys, identity: e2e.Identity
) -> dict[str, Any]:
    """The JSON of ``POST /api/v1/register``."""
    return {
        "username": username,
        "salt": e2e.b64encode(salt),
        "iterations": iterations,
        "auth_key": e2e.b64encode(keys.auth_key),
        "enc_public_key": e2e.b64encode(identity.enc_public_spki),
        "sign_public_key": e2e.b64encode(identity.sign_public_spki),
        "key_backup": e2e.seal_key_backup(identity, keys.wrap_key),
    }


def _json_or_empty(response: httpx.Response) -> dict[str, Any]:
    try:
        body = response.json()
    except ValueError:
        return {}
    return body if isinstance(body, dict) else {}
