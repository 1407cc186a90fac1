"""What ``make run`` prints before serving: where things are and how to switch on admin access."""

from __future__ import annotations

from securechat import directory
from securechat.config import Config


def lines(config: Config) -> list[str]:
    """Human-readable notes for the operator."""
    notes = []
    if config.admin_token:
        notes.append("Admin endpoints /admin/health and /metrics: on (bearer token set).")
    else:
        notes.append(
            "Admin endpoints /admin/health and /metrics: off."
            " Set SECURECHAT_ADMIN_TOKEN=<long random string> to turn them on."
        )
    notes.append(
        f"Key directory fingerprint: {directory.key_fingerprint_for(config)}"
        " (publish it, so users and auditors can check the key they pin)."
    )
    return notes
