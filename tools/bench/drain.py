"""The offline-drain scenario: messages queued for users who are offline, then everyone syncs.

Senders are online and send to partners who are not; every message is acknowledged (so it is
committed). The senders leave, and at one instant every recipient connects and syncs from the
start. The clock runs from that instant until the last recipient holds every message it is owed:
the handshake, the session check, the query and the push are all inside it.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any

from tools.bench.pool import Pool, split
from tools.bench.procs import Server
from tools.bench.wsclient import Endpoint

# The server allows 50 frames/s per connection (burst 100); fill a little below that.
FILL_RATE_PER_SOCKET = 40.0


def run_drain(
    pool: Pool,
    server: Server,
    endpoint: Endpoint,
    pairs: list[tuple[tuple[str, str], tuple[str, str]]],
    *,
    per_pair: int,
    on_measure: Callable[[], object] | None = None,
) -> dict[str, Any]:
    """Queue ``per_pair`` messages from each pair's sender to its offline recipient, then sync.

    ``on_measure`` is called when the queue is full, just before everyone reconnects.
    """
    shares = split(pairs, pool.size)
    pool.target(endpoint)
    pool.call("connect", [{"users": [sender for sender, _ in share]} for share in shares])
    pool.call("remember_cookies", [{"users": [rcpt for _, rcpt in share]} for share in shares])
    filled = pool.call(
        "fill",
        [
            {
                "pairs": [[s[0], r[0]] for s, r in share],
                "per_pair": per_pair,
                "rate_per_socket": FILL_RATE_PER_SOCKET,
            }
            for share in shares
        ],
    )
    pool.call_all("close_all")  # the senders go offline too
    if on_measure is not None:
        on_measure()
    start_at = time.monotonic() + 0.5
    cpu0 = server.cpu_seconds()
    synced = pool.call(
        "sync_all", [{"expected": f["expected"], "start_at": start_at} for f in filled]
    )
    server_cpu = server.cpu_seconds() - cpu0
    pool.call_all("close_all")
    sent = sum(f["sent"] for f in filled)
    acked = sum(f["acked"] for f in filled)
    delivered = sum(s["delivered"] for s in synced)
    seconds = max(s["last_done"] for s in synced) - start_at
    return {
        "server": server.spec.name,
        "recipients": len(pairs),
        "queued": acked,
        "delivered": delivered,
        "delivered_per_s": round(delivered / seconds) if seconds > 0 else 0,
        "seconds_until_all_have_all": round(seconds, 3),
        "fill_seconds": round(max(f["seconds"] for f in filled), 2),
        "lost": sum(s["lost"] for s in synced),
        "duplicated": sum(s["duplicated"] for s in synced),
        "unacked": sent - acked,
        "errors": sum(sum(s["errors"].values()) for s in synced)
        + sum(sum(f["errors"].values()) for f in filled),
        "server_cpu_s": round(server_cpu, 2),
        "loadgen_cpu_s": round(sum(s["cpu_s"] for s in synced), 2),
    }
