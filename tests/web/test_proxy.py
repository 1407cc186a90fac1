"""Behind a reverse proxy: whose address the per-address throttles count, and the scheme."""

from __future__ import annotations

import json
from pathlib import Path

import httpx
import pytest
from websockets.asyncio.client import connect
from websockets.exceptions import InvalidStatus
from websockets.typing import Origin

from securechat import create_app, e2e
from securechat.client import registration_body
from tests.conftest import FAST_ITERATIONS, fast_config
from tests.livesrv import LiveServer


async def register(
    client: httpx.AsyncClient, name: str, identity: e2e.Identity, **headers: str
) -> int:
    """POST /register as ``name`` with extra headers; the status."""
    keys = e2e.derive_keys("correct horse battery", b"\x02" * 16, FAST_ITERATIONS, min_iterations=1)
    body = registration_body(name, b"\x02" * 16, FAST_ITERATIONS, keys, identity)
    response = await client.post("/api/v1/register", json=body, headers=headers)
    return response.status_code


async def test_without_trusted_proxies_a_forwarded_address_is_ignored(
    tmp_path: Path, identities: list[e2e.Identity]
) -> None:
    """By default X-Forwarded-For is a header like any other: naming another address in it
    does not buy another registration."""
    config = fast_config(tmp_path / "data", registrations_per_address=1)
    with LiveServer(config).start() as server:
        async with httpx.AsyncClient(base_url=server.url) as client:
            first = await register(
                client, "alice", identities[0], **{"X-Forwarded-For": "198.51.100.1"}
            )
            second = await register(
                client, "bob", identities[1], **{"X-Forwarded-For": "198.51.100.2"}
            )
            https = await client.get("/", headers={"X-Forwarded-Proto": "https"})
    assert (first, second) == (201, 429)
    assert "Strict-Transport-Security" not in https.headers


async def test_a_trusted_proxys_forwarded_address_and_scheme_are_the_clients(
    tmp_path: Path, identities: list[e2e.Identity]
) -> None:
    """With one trusted proxy hop, the last X-Forwarded-For address is the client's: each
    address has its own registration budget; an address the client put
    in front of the proxy's own is not believed; X-Forwarded-Proto: https earns HSTS."""
    config = fast_config(tmp_path / "data", registrations_per_address=1, trusted_proxy_hops=1)
    with LiveServer(config).start() as server:
        async with httpx.AsyncClient(base_url=server.url) as client:
            statuses = [
                await register(
                    client, "alice", identities[0], **{"X-Forwarded-For": "198.51.100.1"}
                ),
                await register(client, "bob", identities[1], **{"X-Forwarded-For": "198.51.100.2"}),
                # A spoofed first hop: the proxy appended the real address, 198.51.100.1.
                await register(
                    client,
                    "carol",
                    identities[2],
                    **{"X-Forwarded-For": "203.0.113.9, 198.51.100.1"},
                ),
            ]
            https = await client.get("/", headers={"X-Forwarded-Proto": "https"})
    assert statuses == [201, 201, 429]
    assert "Strict-Transport-Security" in https.headers


@pytest.mark.parametrize("hops", [-1, 6])
def test_an_impossible_number_of_proxy_hops_is_refused_at_start(tmp_path: Path, hops: int) -> None:
    """A negative or implausibly large hop count is a configuration mistake: no app starts."""
    with pytest.raises(ValueError, match="trusted_proxy_hops"):
        create_app(fast_config(tmp_path / "data", trusted_proxy_hops=hops))


@pytest.mark.parametrize(("hops", "refusal"), [(0, "cross_site"), (1, "unauthenticated")])
async def test_the_chat_socket_behind_a_tls_proxy_needs_the_proxy_trusted(
    tmp_path: Path, hops: int, refusal: str
) -> None:
    """A browser on https:// behind a TLS-terminating proxy opens /ws with an https Origin:
    without the proxy trusted, the server sees plain ws:// and refuses the origin; with it, the
    handshake passes the origin check (and stops at the missing session)."""
    with LiveServer(fast_config(tmp_path / "data", trusted_proxy_hops=hops)).start() as server:
        host = server.url.removeprefix("http://")
        with pytest.raises(InvalidStatus) as refused:
            async with connect(
                f"ws://{host}/ws",
                origin=Origin(f"https://{host}"),
                additional_headers={
                    "X-Forwarded-Proto": "https",
                    "X-Forwarded-For": "198.51.100.7",
                },
                proxy=None,
                open_timeout=10,
            ):
                pass
    assert refused.value.response.status_code == 403
    assert json.loads(refused.value.response.body)["error"] == refusal


async def test_behind_two_proxies_the_scheme_is_the_nearest_ones_and_forwarded_host_is_ignored(
    tmp_path: Path,
) -> None:
    """With two hops the scheme is the one the proxy next to the server sets (proxies set it,
    they do not append to it), and X-Forwarded-Host never replaces Host: a handshake claiming
    another host for itself is still cross-site."""
    with LiveServer(fast_config(tmp_path / "data", trusted_proxy_hops=2)).start() as server:
        host = server.url.removeprefix("http://")
        async with httpx.AsyncClient(base_url=server.url) as client:
            https = await client.get("/", headers={"X-Forwarded-Proto": "https"})
        forwarded = {"X-Forwarded-Proto": "https", "X-Forwarded-For": "198.51.100.7, 10.0.0.2"}
        refusals = []
        for origin, extra in (
            (f"https://{host}", {}),
            ("https://elsewhere.example", {"X-Forwarded-Host": "elsewhere.example"}),
        ):
            with pytest.raises(InvalidStatus) as refused:
                async with connect(
                    f"ws://{host}/ws",
                    origin=Origin(origin),
                    additional_headers={**forwarded, **extra},
                    proxy=None,
                    open_timeout=10,
                ):
                    pass
            refusals.append(json.loads(refused.value.response.body)["error"])
    assert "Strict-Transport-Security" in https.headers
    assert refusals == ["unauthenticated", "cross_site"]
