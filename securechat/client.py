"""A Python client that speaks the same protocol and crypto as the browser.

It is what the tests, the benchmark and any bot use. The password never leaves it: it derives
``auth_key`` (sent) and ``wrap_key`` (kept) exactly as the page does (docs/protocol.md).

The session cookie is ``Secure``; browsers send it to http://localhost, but Python's cookie jar
will not send a Secure cookie over plain HTTP, so the client keeps the cookie itself.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from http.cookies import SimpleCookie
from typing import Any
from urllib.parse import urlsplit

import httpx

from securechat import e2e

DEFAULT_ITERATIONS = 600_000
COOKIE_NAME = "__Host-securechat"


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
        self, base_url: str, *, timeout: float = 30.0, min_iterations: int = e2e.MIN_ITERATIONS
    ) -> None:
        # The floor on PBKDF2 iterations this client accepts from the server at login; only
        # tests lower it, to save time.
        self.min_iterations = min_iterations
        self.base_url = base_url.rstrip("/")
        parts = urlsplit(self.base_url)
        self.origin = f"{parts.scheme}://{parts.netloc}"
        self.http = httpx.AsyncClient(base_url=self.base_url, timeout=timeout)
        self.session_cookie: str | None = None
        self.account: Account | None = None

    async def __aenter__(self) -> SecureChatClient:
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        await self.close()

    async def close(self) -> None:
        await self.http.aclose()

    # Raw requests -------------------------------------------------------------------------

    def headers(self) -> dict[str, str]:
        """Origin (as a browser sends it) and the session cookie, if any."""
        headers = {"Origin": self.origin}
        if self.session_cookie:
            headers["Cookie"] = f"{COOKIE_NAME}={self.session_cookie}"
        return headers

    async def request(self, method: str, path: str, body: Any = None) -> httpx.Response:
        """Send one request as this client; keep the session cookie the server sets."""
        response = await self.http.request(
            method, path, json=body if method != "GET" else None, headers=self.headers()
        )
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
            if COOKIE_NAME in cookie:
                morsel = cookie[COOKIE_NAME]
                expired = morsel["max-age"] == "0" or not morsel.value
                self.session_cookie = None if expired else morsel.value

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

    async def me(self) -> str:
        """The signed-in username."""
        body = await self.call("GET", "/api/v1/me")
        return str(body["username"])


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
