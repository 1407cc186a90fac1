"""The hosts the server answers for and its own origins, from ``SECURECHAT_PUBLIC_ORIGIN``.

DNS rebinding: a page on ``evil.example`` makes its name resolve to the server's address (one
only the victim's network can reach, say), and the browser then takes the server's answers for
``evil.example``'s own: its script reads them, and its requests carry ``Host: evil.example``
and ``Origin: http://evil.example``. A server taking its own origin from ``Host`` would call
that pair same-origin. So the server answers only for the hosts of its configured origins
(anything else is 421 Misdirected Request, RFC 9110 section 15.5.20: a request for a target it
is not authoritative for), and the Origin checks compare with those origins, never with
``Host``. Unconfigured, it answers only for loopback names: a browser never sends
``Host: 127.0.0.1`` or ``Host: localhost`` for a name of the attacker's, whatever address
that name resolves to.
"""

from __future__ import annotations

import functools
import re
from dataclasses import dataclass
from typing import Final
from urllib.parse import urlsplit

LOOPBACK_HOSTS: Final = frozenset({"127.0.0.1", "localhost", "[::1]"})
_DEFAULT_PORTS: Final = {"http": 80, "https": 443}
# A Host value (RFC 9110 section 7.2): a name or an IPv4 address, or an IPv6 address in
# brackets, and an optional port.
_HOST = re.compile(r"(?P<name>[a-z0-9.-]+|\[[0-9a-f:.]+\])(?::(?P<port>[0-9]{1,5}))?")
_NAME = re.compile(r"[a-z0-9.-]+|[0-9a-f:.]+")
# What a server binds to in order to listen on every address (make run BIND=0.0.0.0:8000).
_WILDCARDS: Final = frozenset({"0.0.0.0", "::"})  # noqa: S104 (refused, not bound)


@dataclass(frozen=True)
class PublicOrigins:
    """The configured origins, normalised as a browser writes them, and the Host values that
    reach each (``chat.example.org`` and ``chat.example.org:443`` for ``https://chat.example.org``).
    With none configured, the loopback hosts, on any port."""

    origins: frozenset[str]
    hosts: frozenset[str]

    def answers_for(self, host: str) -> bool:
        """Whether a request with this ``Host`` value is addressed to this server."""
        host = host.lower()
        if self.origins:
            return host in self.hosts
        match = _HOST.fullmatch(host)
        return match is not None and match["name"] in LOOPBACK_HOSTS

    def own_origins(self, scheme: str, host: str) -> frozenset[str]:
        """The server's own origins for a request to ``scheme://host``: the configured ones, or
        unconfigured, that loopback address itself (none for another host)."""
        if self.origins:
            return self.origins
        if self.answers_for(host):
            return frozenset({f"{scheme}://{host}".lower()})
        return frozenset()

    def refusal(self) -> str:
        """What a request for another host is told."""
        if self.origins:
            # Not naming the configured origins: a page on a rebound name reads this answer.
            return "This server does not answer for that host."
        return (
            "This server answers only at a loopback address (127.0.0.1, localhost, [::1])"
            " until SECURECHAT_PUBLIC_ORIGIN names the origin it is reached at."
        )


@functools.cache
def public_origins(configured: tuple[str, ...]) -> PublicOrigins:
    """``SECURECHAT_PUBLIC_ORIGIN`` parsed once per configuration; ValueError if malformed."""
    origins: set[str] = set()
    hosts: set[str] = set()
    for raw in configured:
        origin, reached_as = parse_origin(raw)
        origins.add(origin)
        hosts |= reached_as
    return PublicOrigins(frozenset(origins), frozenset(hosts))


def parse_origin(raw: str, setting: str = "public_origin") -> tuple[str, frozenset[str]]:
    """``https://chat.example.org`` -> its normal form and the Host values that reach it."""
    mistake = ValueError(
        f"{setting} {raw!r} is not an origin such as https://chat.example.org"
        " (http or https, a host, an optional port, no path)"
    )
    parts = urlsplit(raw.strip())
    scheme = parts.scheme.lower()
    name = parts.hostname or ""
    if (
        scheme not in _DEFAULT_PORTS
        or not _NAME.fullmatch(name)
        or parts.username is not None
        or parts.password is not None
        or parts.path not in ("", "/")
        or parts.query
        or parts.fragment
    ):
        raise mistake
    try:
        port = parts.port
    except ValueError:
        raise mistake from None
    if name in _WILDCARDS:
        raise ValueError(
            f"{setting} {raw!r} names the wildcard address, which no browser is ever sent to:"
            " name the address or host people reach the server at (https://chat.example.org)"
        )
    if ":" in name:
        name = f"[{name}]"
    default = _DEFAULT_PORTS[scheme]
    if port is None or port == default:
        return f"{scheme}://{name}", frozenset({name, f"{name}:{default}"})
    return f"{scheme}://{name}:{port}", frozenset({f"{name}:{port}"})


__all__ = ["LOOPBACK_HOSTS", "PublicOrigins", "parse_origin", "public_origins"]
