"""The capacity scenario: idle authenticated sockets held by one server process, and their cost.

A fresh server process first takes a few warm-up sockets (so one-off allocations such as lazily
imported modules are not charged to the rest), then the rest; each socket syncs once, as a page
does when it connects, so both directions have carried a frame (and, with compression, both
zlib contexts exist). Memory per connection is the growth of the serving process's resident set
divided by the sockets added.
"""

from __future__ import annotations

import time
from typing import Any

from tools.bench.pool import Pool, split
from tools.bench.procs import Server
from tools.bench.wsclient import Endpoint

WARM_UP_USERS = 5


def run_capacity(
    pool: Pool,
    server: Server,
    users: list[tuple[str, str]],
    *,
    per_user: int,
    compression: bool,
    settle: float = 2.0,
) -> dict[str, Any]:
    """Open ``per_user`` sockets for every user and hold them; measure the server's memory."""
    pool.target(Endpoint(server.url, "cookie", compression))
    warm, rest = users[:WARM_UP_USERS], users[WARM_UP_USERS:]
    workers = pool.size
    warmed = pool.call(
        "connect",
        [{"users": share, "per_user": per_user, "read": False} for share in split(warm, workers)],
    )
    pool.call_all("sync_each")
    time.sleep(settle)
    rss_before = server.rss_bytes()
    started = time.monotonic()
    opened = pool.call(
        "connect",
        [{"users": share, "per_user": per_user, "read": False} for share in split(rest, workers)],
    )
    synced = pool.call_all("sync_each")
    connect_seconds = time.monotonic() - started
    time.sleep(settle)
    rss_after = server.rss_bytes()
    alive = pool.call_all("alive")
    pool.call_all("close_all")
    added = sum(r["opened"] for r in opened) - sum(r["opened"] for r in warmed)
    still_open = sum(a["open"] for a in alive)
    failed: dict[str, int] = {}
    for result in opened:
        for reason, count in result["failed"].items():
            failed[reason] = failed.get(reason, 0) + count
    return {
        "server": server.spec.name,
        "compression": compression,
        "target": len(users) * per_user,
        "connections": still_open,
        "deflate_negotiated": sum(a["deflate"] for a in alive),
        "failed": failed,
        "rss_mib": round(rss_after / 2**20, 1),
        "rss_per_conn_kib": round((rss_after - rss_before) / max(1, added) / 1024, 1),
        "connect_and_sync_seconds": round(connect_seconds, 1),
        "synced": sum(s["synced"] for s in synced),
    }
