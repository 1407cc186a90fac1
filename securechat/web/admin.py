"""Operator endpoints: a bare liveness probe, a detailed health report and Prometheus metrics.

/admin/health and /metrics both want the admin bearer token.
"""

from __future__ import annotations

import hmac
import time
from collections.abc import Iterator
from typing import Any

from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, ProcessCollector
from prometheus_client import generate_latest as render_metrics
from prometheus_client.core import (
    CounterMetricFamily,
    GaugeMetricFamily,
    HistogramMetricFamily,
    Metric,
    SummaryMetricFamily,
)
from quart import Blueprint, Response, jsonify, request

from securechat import gcpolicy
from securechat.accounts.sessions import store
from securechat.chat.service import ChatService
from securechat.errors import NotAuthenticated, NotFound
from securechat.runtime import Timings
from securechat.state import AppState, state
from securechat.store import CheckpointStats
from securechat.version import __version__

blueprint = Blueprint("admin", __name__)


@blueprint.get("/healthz")
async def healthz() -> Response:
    """For load balancers: 200 and nothing else."""
    return jsonify({"status": "ok"})


def require_admin() -> None:
    """404 when no token is configured (the endpoint is off); 401 for a missing or wrong one."""
    config = state().config
    if not config.admin_token:
        raise NotFound()
    header = request.headers.get("Authorization", "")
    scheme, _, token = header.partition(" ")
    expected = config.admin_token.encode()
    # Constant-time comparison: timing reveals nothing about the token.
    if scheme.lower() != "bearer" or not hmac.compare_digest(token.strip().encode(), expected):
        raise NotAuthenticated("A valid admin bearer token is required.")


@blueprint.get("/admin/health")
async def health() -> Response:
    """Version, uptime, database latency and counts, for the operator."""
    require_admin()
    config = state().config
    started = time.perf_counter()
    database = {"status": "ok"}
    try:
        await store().ping()
    except Exception:
        database = {"status": "error"}
    database["latency_ms"] = round((time.perf_counter() - started) * 1000, 3)  # type: ignore[assignment]
    # A cluster's node whose Redis does not answer counts its limits alone: say so.
    shared = state().limits
    limits = {"limits": "local"} if shared is None else await shared.health()
    degraded = database["status"] != "ok" or limits["limits"] == "local (fallback)"
    body = {
        "status": "degraded" if degraded else "ok",
        "version": __version__,
        "uptime_s": round(time.monotonic() - state().started, 3),
        "database": database,
        **await _counts(config.session_idle_timeout * 1000),
    }
    body.update(limits)
    chat = await state().chat.health()
    if chat["broker"]["status"] != "ok":
        body["status"] = "degraded"  # delivery across nodes waits for the resync
    body.update(chat)
    directory = await state().directory.health()
    if directory["directory"]["status"] != "ok":
        body["status"] = "degraded"  # equivocation (no further head signed), or no database
    body.update(directory)
    return jsonify(body)


async def _counts(idle_ms: int) -> dict[str, int | None]:
    """Users and live sessions; None each while the database does not answer (the report
    still comes, saying ``degraded``, rather than a 500)."""
    try:
        users = await store().accounts.count_users()
        sessions = await store().sessions.count_active(state().clock.now_ms(), idle_ms)
    except Exception:
        return {"users": None, "sessions_active": None}
    return {"users": users, "sessions_active": sessions}


# --- Prometheus ---------------------------------------------------------------------------------
# Each app has a registry of its own (not prometheus_client's global one), so two apps in one
# process (the tests) never share or double-register metrics. The collector reads the live
# counters the app keeps anyway (the writer's, the hub's, the chat's) at scrape time: nothing
# is counted twice and the hot paths pay nothing for metrics.


@blueprint.get("/metrics")
async def metrics() -> Response:
    """The Prometheus text exposition of this process's counters."""
    require_admin()
    app_state = state()
    registry = app_state.metrics_registry
    if registry is None:
        registry = app_state.metrics_registry = _registry(app_state)
    return Response(render_metrics(registry), content_type=CONTENT_TYPE_LATEST)


def _registry(app_state: AppState) -> CollectorRegistry:
    registry = CollectorRegistry(auto_describe=False)
    registry.register(AppCollector(app_state))
    # CPU seconds, resident memory and open file descriptors of this process.
    ProcessCollector(namespace="securechat", registry=registry)
    return registry


class AppCollector:
    """Turns the app's own counters into metric families, each time it is scraped."""

    def __init__(self, app_state: AppState) -> None:
        self.state = app_state

    def collect(self) -> Iterator[Metric]:
        yield from _writer_metrics(self.state)
        yield from _hub_metrics(self.state.chat.hub)
        yield from _chat_metrics(self.state.chat)
        yield CounterMetricFamily(
            "securechat_argon2_operations",
            "argon2id hashes and verifications computed",
            value=self.state.accounts.hasher.operations,
        )
        yield CounterMetricFamily(
            "securechat_directory_equivocations",
            "Tree sizes whose Merkle root differs from the root recorded in the database",
            value=self.state.directory.equivocations,
        )
        policy = gcpolicy.current()
        if policy is not None:
            yield from _collector_metrics(policy)


def _writer_metrics(app_state: AppState) -> Iterator[Metric]:
    stats = app_state.store.commit_stats
    yield SummaryMetricFamily(
        "securechat_db_commit_batch_jobs",
        "Write jobs per committed transaction (group commit): count is transactions",
        count_value=stats.transactions,
        sum_value=stats.jobs,
    )
    yield _histogram(
        "securechat_db_commit_seconds",
        "Time from BEGIN to the end of COMMIT of each write transaction, fsync included",
        stats.commit_seconds,
    )
    checkpoints = app_state.store.checkpoint_stats
    if checkpoints is not None:  # a store that checkpoints its engine's log itself (SQLite)
        yield from _checkpoint_metrics(checkpoints)
    yield GaugeMetricFamily(
        "securechat_db_commit_batch_last", "Jobs in the latest transaction", value=stats.last_batch
    )
    yield GaugeMetricFamily(
        "securechat_db_commit_batch_largest",
        "Most jobs committed in one transaction since start",
        value=stats.largest_batch,
    )


def _checkpoint_metrics(stats: CheckpointStats) -> Iterator[Metric]:
    yield SummaryMetricFamily(
        "securechat_db_checkpoint_seconds",
        "Checkpoints of the write-ahead log (off the commit path) and the time they took",
        count_value=stats.checkpoints,
        sum_value=stats.seconds_total,
    )
    yield GaugeMetricFamily(
        "securechat_db_wal_frames",
        "Pages in the write-ahead log at the latest checkpoint",
        value=stats.wal_frames,
    )
    yield GaugeMetricFamily(
        "securechat_db_wal_frames_left",
        "Pages the latest checkpoint could not copy yet (a reader still needed them)",
        value=stats.wal_frames_left,
    )


def _histogram(name: str, documentation: str, timings: Timings) -> HistogramMetricFamily:
    """A Prometheus histogram of durations the app has kept in ``timings``."""
    return HistogramMetricFamily(
        name, documentation, buckets=timings.cumulative(), sum_value=timings.total
    )


def _collector_metrics(policy: gcpolicy.FreezeSurvivors) -> Iterator[Metric]:
    stats = policy.stats
    yield _histogram(
        "securechat_gc_pause_seconds",
        "Pauses of Python's cyclic garbage collector (all generations) since the policy started",
        stats.pauses,
    )
    yield GaugeMetricFamily(
        "securechat_gc_longest_pause_seconds",
        "Longest garbage collector pause since the policy started",
        value=stats.pauses.longest,
    )
    yield GaugeMetricFamily(
        "securechat_gc_frozen_objects",
        "Objects frozen after surviving a full collection (skipped by later collections)",
        value=policy.frozen,
    )
    yield CounterMetricFamily(
        "securechat_gc_complete_collections",
        "Full collections that examined every object, frozen ones included",
        value=stats.complete_collections,
    )


def _hub_metrics(hub: Any) -> Iterator[Metric]:
    stats = hub.stats()
    yield GaugeMetricFamily(
        "securechat_ws_connections", "Live WebSocket connections", value=stats.connections
    )
    yield GaugeMetricFamily(
        "securechat_users_online",
        "Users with at least one live connection",
        value=stats.users_online,
    )
    yield GaugeMetricFamily(
        "securechat_ws_queued_frames",
        "Frames waiting in the per-connection send queues, all connections together",
        value=stats.queued_frames,
    )
    yield CounterMetricFamily(
        "securechat_ws_slow_reader_closes",
        "Connections closed (1013) because their send queue overflowed",
        value=stats.slow_reader_closes,
    )


# ChatStats field -> (metric name without _total, help). Counters only; gauges are below.
_CHAT_COUNTERS = {
    "connections_opened": ("securechat_ws_connections_opened", "WebSocket connections accepted"),
    "frames_in": ("securechat_ws_frames_received", "Frames received from clients"),
    "frames_out": ("securechat_ws_frames_sent", "Frames sent to clients"),
    "messages_in": ("securechat_messages_received", "send frames accepted for storing"),
    "messages_stored": ("securechat_messages_stored", "Messages committed (new ids)"),
    "messages_duplicate": (
        "securechat_messages_duplicate",
        "Resends of an id already stored (acked again, stored once)",
    ),
    "messages_out": ("securechat_messages_published", "Messages fanned out after their commit"),
    "acks": ("securechat_acks", "ack frames queued (each after its commit)"),
    "receipts": ("securechat_receipts", "delivered/read receipts fanned out"),
    "typing_relayed": ("securechat_typing_relayed", "typing notifications relayed"),
    "typing_dropped": ("securechat_typing_dropped", "typing notifications over the rate, dropped"),
    "presence_events": ("securechat_presence_events", "Presence changes announced"),
    "commit_failures": (
        "securechat_chat_commit_failures",
        "Chat commits that failed (nothing stored)",
    ),
}


def _chat_metrics(chat: ChatService) -> Iterator[Metric]:
    stats = chat.stats
    for field, (name, text) in _CHAT_COUNTERS.items():
        yield CounterMetricFamily(name, text, value=getattr(stats, field))
    yield SummaryMetricFamily(
        "securechat_chat_commit_batch_items",
        "Sends and marks per grouped chat commit: count is commits, sum is items",
        count_value=stats.commit_batches,
        sum_value=stats.commit_items,
    )
    yield GaugeMetricFamily(
        "securechat_chat_commit_batch_largest",
        "Most sends and marks committed together since start",
        value=stats.commit_largest_batch,
    )
    yield GaugeMetricFamily(
        "securechat_chat_commit_pending",
        "Sends and marks waiting for the committer",
        value=chat.delivery.pending(),
    )
    rejected = CounterMetricFamily(
        "securechat_rejected_frames",
        "Frames and handshakes refused, by reason (error code, flood, handshake_...)",
        labels=["reason"],
    )
    for reason, count in sorted(stats.rejected.items()):
        rejected.add_metric([reason], count)
    yield rejected
    closes = CounterMetricFamily(
        "securechat_ws_server_closes",
        "Sockets closed by the server, by close code",
        labels=["code"],
    )
    for code, count in sorted(stats.closes.items()):
        closes.add_metric([str(code)], count)
    yield closes
