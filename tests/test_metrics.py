"""/metrics on a real server: behind the admin token, Prometheus text, counters that move."""

from __future__ import annotations

from pathlib import Path

import httpx
import pytest
from prometheus_client.parser import text_string_to_metric_families

from securechat import e2e
from securechat.client import SecureChatClient
from tests.conftest import FAST_ITERATIONS, fast_config
from tests.livesrv import LiveServer

TOKEN = "metrics-token-for-tests"
AUTH = {"Authorization": f"Bearer {TOKEN}"}


@pytest.fixture(name="metrics_server")
def _metrics_server(tmp_path: Path):  # type: ignore[no-untyped-def]
    server = LiveServer(fast_config(tmp_path / "data", admin_token=TOKEN)).start()
    yield server
    server.stop()


async def scrape(url: str) -> dict[str, float]:
    """Every sample of /metrics by name (labels folded into the name, sorted)."""
    async with httpx.AsyncClient(base_url=url) as http:
        response = await http.get("/metrics", headers=AUTH)
    assert response.status_code == 200
    samples: dict[str, float] = {}
    for family in text_string_to_metric_families(response.text):
        for sample in family.samples:
            labels = ",".join(f"{k}={v}" for k, v in sorted(sample.labels.items()))
            samples[f"{sample.name}{{{labels}}}" if labels else sample.name] = sample.value
    return samples


async def test_metrics_are_off_without_a_token(base_url: str):
    """With no admin token configured, /metrics answers 404, like /admin/health."""
    async with httpx.AsyncClient(base_url=base_url) as http:
        response = await http.get("/metrics", headers={"Authorization": "Bearer x"})
    assert response.status_code == 404


@pytest.mark.parametrize("header", [None, "Bearer wrong", f"Basic {TOKEN}", f"Bearer {TOKEN}x"])
async def test_metrics_refuse_a_missing_or_wrong_token(metrics_server: LiveServer, header):
    """A missing or wrong bearer token answers 401 and no metrics."""
    headers = {"Authorization": header} if header else {}
    async with httpx.AsyncClient(base_url=metrics_server.url) as http:
        response = await http.get("/metrics", headers=headers)
    assert response.status_code == 401
    assert "securechat_" not in response.text


async def test_metrics_speak_the_prometheus_text_format(metrics_server: LiveServer):
    """The content type is Prometheus text and the body parses, with our families in it."""
    async with httpx.AsyncClient(base_url=metrics_server.url) as http:
        response = await http.get("/metrics", headers=AUTH)
    assert response.status_code == 200
    assert response.headers["content-type"].startswith("text/plain; version=")
    names = {family.name for family in text_string_to_metric_families(response.text)}
    assert {
        "securechat_db_commit_batch_jobs",
        "securechat_db_commit_seconds",
        "securechat_argon2_operations",
        "securechat_process_resident_memory_bytes",
    } <= names


async def test_each_app_has_its_own_registry(
    tmp_path: Path, metrics_server: LiveServer, identities: list[e2e.Identity]
):
    """Two apps in one process each count their own work, not a shared global registry's."""
    other = LiveServer(fast_config(tmp_path / "other", admin_token=TOKEN)).start()
    try:
        async with SecureChatClient(metrics_server.url, min_iterations=FAST_ITERATIONS) as client:
            await client.register(
                "metered", "pass phrase here", iterations=FAST_ITERATIONS, identity=identities[0]
            )
        first, second = await scrape(metrics_server.url), await scrape(other.url)
    finally:
        other.stop()
    assert first["securechat_argon2_operations_total"] == 1
    assert second["securechat_argon2_operations_total"] == 0
    assert (
        first["securechat_db_commit_batch_jobs_count"]
        > second["securechat_db_commit_batch_jobs_count"]
    )
