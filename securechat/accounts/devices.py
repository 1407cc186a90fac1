"""Device tokens: what a browser that has logged in to an account before holds for it.

One failure count per username lets anyone who knows a name lock its owner out. OWASP's "Slow
Down Online Guessing Attacks with Device Cookies" gives each browser that has logged in to an
account a signed token for it; a login that presents one is counted against that device's own
budget (accounts/service.py), so guessers, who hold none, use up the name's shared budget
without touching the owner's. The views carry the token in a cookie; this module knows no
request and no cookie.

A token is ``<nonce>.<expires>.<mac>``: 128 random bits, its expiry in seconds since the
epoch, and HMAC-SHA256, under a key derived for this purpose alone (datadir.py), of a label,
the username, the nonce and the expiry. The username is bound by the MAC, not written in the
token: whoever reads the cookie learns no account name from it, and only the server, asked
about one name, can tell whether a token is for it.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import re
import secrets
from dataclasses import dataclass, field

NONCE_BYTES = 16
_LABEL = b"securechat/v1/device-token\x00"
# The shape of a token this server issues (base64url without padding; at most 12 digits of
# seconds); anything else is refused before any MAC is computed.
_TOKEN = re.compile(r"([A-Za-z0-9_-]{22})\.([0-9]{1,12})\.([A-Za-z0-9_-]{43})", re.ASCII)
TOKEN_MAX = 22 + 1 + 12 + 1 + 43


@dataclass(frozen=True)
class Device:
    """A browser that has logged in to ``username`` before, known by its token's nonce."""

    username: str
    nonce: str


@dataclass(frozen=True)
class DeviceTokens:
    """Issues device tokens valid for ``max_age`` seconds, and checks them, under ``key``."""

    key: bytes = field(repr=False)
    max_age: int

    def issue(self, username: str, now_ms: int) -> str:
        """A fresh token for a browser that has just logged in as ``username``."""
        nonce = secrets.token_urlsafe(NONCE_BYTES)
        expires = now_ms // 1000 + self.max_age
        return f"{nonce}.{expires}.{self._mac(username, nonce, expires)}"

    def read(self, token: str, username: str, now_ms: int) -> Device | None:
        """The device ``token`` stands for, if this server issued it for ``username`` and it
        has not expired; None for anything else (another name's, forged, altered, expired)."""
        match = _TOKEN.fullmatch(token) if len(token) <= TOKEN_MAX else None
        if match is None:
            return None
        nonce, expires, mac = match[1], int(match[2]), match[3]
        if not hmac.compare_digest(mac, self._mac(username, nonce, expires)):
            return None
        if expires * 1000 <= now_ms:
            return None
        return Device(username, nonce)

    def _mac(self, username: str, nonce: str, expires: int) -> str:
        # NUL-separated: a username (validation.py) and a nonce never contain one.
        message = _LABEL + b"\x00".join((username.encode(), nonce.encode(), b"%d" % expires))
        digest = hmac.new(self.key, message, hashlib.sha256).digest()
        return base64.urlsafe_b64encode(digest).rstrip(b"=").decode("ascii")


__all__ = ["NONCE_BYTES", "TOKEN_MAX", "Device", "DeviceTokens"]
