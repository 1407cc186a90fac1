"""The offline-drain scenario: messages queued for users who are offline, then everyone syncs.

Senders are online and send to partners who are not; every message is acknowledged (so it is
committed). The senders leave, and at one instant every recipient connects and syncs from the
start. The clock runs from that instant until the last recipient holds every message it is owed:
the handshake, the session check, the query and the push are all inside it.
"""

from __future__ import annotations

import time
from collections import Counter
from collections.abc import Callable
from typing import Any

from tools.bench.pool import Pool, split
from tools.bench.procs import QuietWindow, Server
from tools.bench.wsclient import Endpoint

# The server allows 50 frames/s per connection (burst 100); fill a little below that. It also
# allows each account 10 sends/s after a burst of 100 (sends_per_user_*): each sender sends
# fewer than 100, so the queue fills at once and nothing is refused.
FILL_RATE_PER_SOCKET = 40.0


def run_drain(
    pool: Pool,
    server: Server,
    endpoint: Endpoint,
    recipients: list[tuple[str, str]],
    senders: list[tuple[str, str]],
    *,
    per_sender: int,
    on_measure: Callable[[], object] | None = None,
    quiet: QuietWindow | None = None,
) -> dict[str, Any]:
    """Each sender sends ``per_sender`` messages to its (offline) recipient, then all sync.

    Senders are dealt to recipients in turn, so each recipient is owed ``per_sender`` times
    ``len(senders) // len(recipients)`` messages. ``on_measure`` is called when the queue is
    full, just before everyone reconnects. With ``quiet``, the reconnection waits for a quiet
    machine first.
    """
    groups = [(rcpt, senders[i :: len(recipients)]) for i, rcpt in enumerate(recipients)]
    shares = split(groups, pool.size)  # a recipient and its senders in one worker
    pool.target(endpoint)
    pool.call("connect", [{"users": [s for _, group in share for s in group]} for share in shares])
    pool.call("remember_cookies", [{"users": [rcpt for rcpt, _ in share]} for share in shares])
    filled = pool.call(
        "fill",
        [
            {
                "pairs": [[s[0], rcpt[0]] for rcpt, group in share for s in group],
                "per_pair": per_sender,
                "rate_per_socket": FILL_RATE_PER_SOCKET,
            }
            for share in shares
        ],
    )
    pool.call_all("close_all")  # the senders go offline too
    other_before = quiet.wait() if quiet is not None else None
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
        "recipients": len(recipients),
        "senders": len(senders),
        "queued": acked,
        "delivered": delivered,
        "delivered_per_s": round(delivered / seconds) if seconds > 0 else 0,
        "seconds_until_all_have_all": round(seconds, 3),
        "fill_seconds": round(max(f["seconds"] for f in filled), 2),
        "lost": sum(s["lost"] for s in synced),
        "duplicated": sum(s["duplicated"] for s in synced),
        "unacked": sent - acked,
        # Error frames by code, filling and syncing together (each worker counts both).
        "errors": dict(sum((Counter(s["errors"]) for s in synced), Counter())),
        "server_cpu_s": round(server_cpu, 2),
        # The steadiest figure on a shared machine: the server's CPU for each message delivered.
        "server_cpu_us_per_msg": round(server_cpu / max(1, delivered) * 1e6, 1),
        "other_cpu_before": other_before,
        "loadgen_cpu_s": round(sum(s["cpu_s"] for s in synced), 2),
    }
