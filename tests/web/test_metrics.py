"""/metrics on a real server: behind the admin token, Prometheus text, counters that move."""

from __future__ import annotations

from pathlib import Path

import httpx
import pytest
from prometheus_client.parser import text_string_to_metric_families

from securechat import e2e
from securechat.client import SecureChatClient
from securechat.config import Config
from tests.conftest import FAST_ITERATIONS, SignUp, fast_config
from tests.livesrv import LiveServer

TOKEN = "metrics-token-for-tests"
AUTH = {"Authorization": f"Bearer {TOKEN}"}


@pytest.fixture(name="config")
def _config(tmp_path: Path) -> Config:
    """The live server of these tests has an admin token (so /metrics is on)."""
    return fast_config(tmp_path / "data", admin_token=TOKEN)


async def scrape(url: str) -> dict[str, float]:
    """Every sample of /metrics by name, labels folded in: ``name{k=v}``."""
    async with httpx.AsyncClient(base_url=url) as http:
        response = await http.get("/metrics", headers=AUTH)
    assert response.status_code == 200
    samples: dict[str, float] = {}
    for family in text_string_to_metric_families(response.text):
        for sample in family.samples:
            labels = ",".join(f"{k}={v}" for k, v in sorted(sample.labels.items()))
            samples[f"{sample.name}{{{labels}}}" if labels else sample.name] = sample.value
    return samples


async def test_metrics_are_off_without_a_token(tmp_path: Path) -> None:
    """With no admin token configured, /metrics answers 404, like /admin/health."""
    with LiveServer(fast_config(tmp_path / "untokened")).start() as server:
        async with httpx.AsyncClient(base_url=server.url) as http:
            response = await http.get("/metrics", headers={"Authorization": "Bearer x"})
    assert response.status_code == 404


@pytest.mark.parametrize("header", [None, "Bearer wrong", f"Basic {TOKEN}", f"Bearer {TOKEN}x"])
async def test_metrics_refuse_a_missing_or_wrong_token(base_url: str, header: str | None) -> None:
    """A missing or wrong bearer token answers 401 and no metrics."""
    headers = {"Authorization": header} if header else {}
    async with httpx.AsyncClient(base_url=base_url) as http:
        response = await http.get("/metrics", headers=headers)
    assert response.status_code == 401
    assert "securechat_" not in response.text


async def test_metrics_speak_the_prometheus_text_format(base_url: str) -> None:
    """The content type is Prometheus text and the body parses, with our families in it."""
    async with httpx.AsyncClient(base_url=base_url) as http:
        response = await http.get("/metrics", headers=AUTH)
    assert response.status_code == 200
    assert response.headers["content-type"].startswith("text/plain; version=")
    names = {family.name for family in text_string_to_metric_families(response.text)}
    assert {
        "securechat_ws_connections",
        "securechat_messages_received",
        "securechat_acks",
        "securechat_ws_queued_frames",
        "securechat_chat_commit_pending",
        "securechat_chat_commit_batch_items",
        "securechat_db_commit_batch_jobs",
        "securechat_db_commit_seconds",
        "securechat_db_checkpoint_seconds",
        "securechat_db_wal_frames",
        "securechat_rejected_frames",
        "securechat_argon2_operations",
        "securechat_process_resident_memory_bytes",
    } <= names


async def test_counters_move_with_real_traffic(base_url: str, signed_up: SignUp) -> None:
    """A real exchange moves connections, messages in/out, acks, commits and rejections."""
    before = await scrape(base_url)
    alice, bob = await signed_up("alice"), await signed_up("bob")
    alice_chat, bob_chat = await alice.connect(), await bob.connect()
    during = await scrape(base_url)
    await alice_chat.send_message("bob", "hello, metrics")
    await bob_chat.wait_for("message")
    await alice_chat.send_raw("{not json")
    await alice_chat.wait_for("error", code="bad_json")
    after = await scrape(base_url)

    assert during["securechat_ws_connections"] == before["securechat_ws_connections"] + 2
    assert during["securechat_users_online"] == 2
    for name in (
        "securechat_messages_received_total",
        "securechat_messages_stored_total",
        "securechat_messages_published_total",
        "securechat_acks_total",
        "securechat_chat_commit_batch_items_count",
    ):
        assert after[name] == during[name] + 1, name
    assert after["securechat_rejected_frames_total{reason=bad_json}"] == 1
    assert after["securechat_ws_frames_sent_total"] > during["securechat_ws_frames_sent_total"]
    assert (
        after["securechat_db_commit_batch_jobs_count"]
        > before["securechat_db_commit_batch_jobs_count"]
    )
    assert after["securechat_db_commit_seconds_sum"] > before["securechat_db_commit_seconds_sum"]
    # A histogram: cumulative buckets, the last (+Inf) equal to the count of transactions.
    assert (
        after["securechat_db_commit_seconds_bucket{le=+Inf}"]
        == after["securechat_db_commit_seconds_count"]
        == after["securechat_db_commit_batch_jobs_count"]
    )
    assert (
        after["securechat_db_commit_seconds_bucket{le=0.001}"]
        <= after["securechat_db_commit_seconds_bucket{le=0.01}"]
        <= after["securechat_db_commit_seconds_bucket{le=+Inf}"]
    )
    assert after["securechat_argon2_operations_total"] >= 4  # two registrations, two logins


async def test_each_app_has_its_own_registry(
    tmp_path: Path, base_url: str, identities: list[e2e.Identity]
) -> None:
    """Two apps in one process each count their own work, not a shared global registry's."""
    with LiveServer(fast_config(tmp_path / "other", admin_token=TOKEN)).start() as other:
        async with SecureChatClient(base_url, min_iterations=FAST_ITERATIONS) as client:
            await client.register(
                "metered", "pass phrase here", iterations=FAST_ITERATIONS, identity=identities[0]
            )
        first, second = await scrape(base_url), await scrape(other.url)
    assert first["securechat_argon2_operations_total"] == 1
    assert second["securechat_argon2_operations_total"] == 0
