"""Operator endpoints on a real server: /healthz, and /admin/health behind a token."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from tests.conftest import fast_config
from tests.livesrv import LiveServer

TOKEN = "s3cret-admin-token-for-tests"


@pytest.fixture(name="admin_server")
def _admin_server(tmp_path: Path) -> Iterator[LiveServer]:
    server = LiveServer(fast_config(tmp_path / "data", admin_token=TOKEN)).start()
    yield server
    server.stop()


async def test_healthz_says_ok_and_nothing_else(base_url: str) -> None:
    """/healthz answers 200 {"status": "ok"} with no details."""
    async with httpx.AsyncClient(base_url=base_url) as http:
        response = await http.get("/healthz")
    assert response.status_code == 200
    assert response.json() == {"status": "ok"}


async def test_admin_health_is_off_without_a_token(base_url: str) -> None:
    """With no admin token configured, /admin/health answers 404."""
    async with httpx.AsyncClient(base_url=base_url) as http:
        response = await http.get("/admin/health", headers={"Authorization": "Bearer x"})
    assert response.status_code == 404


@pytest.mark.parametrize("header", [None, "Bearer wrong", f"Basic {TOKEN}", f"Bearer {TOKEN}x"])
async def test_admin_health_refuses_a_missing_or_wrong_token(
    admin_server: LiveServer, header: str | None
) -> None:
    """A missing or wrong bearer token answers 401."""
    headers = {"Authorization": header} if header else {}
    async with httpx.AsyncClient(base_url=admin_server.url) as http:
        response = await http.get("/admin/health", headers=headers)
    assert response.status_code == 401


async def test_admin_health_reports(admin_server: LiveServer) -> None:
    """With the token: status, version, uptime, database latency, users, sessions."""
    async with httpx.AsyncClient(base_url=admin_server.url) as http:
        response = await http.get("/admin/health", headers={"Authorization": f"Bearer {TOKEN}"})
    assert response.status_code == 200
    body = response.json()
    assert body["status"] == "ok"
    assert body["database"]["status"] == "ok"
    assert body["database"]["latency_ms"] >= 0
    assert body["users"] == 0
    assert body["sessions_active"] == 0
    assert body["uptime_s"] >= 0
    assert body["version"]
