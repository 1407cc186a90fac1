"""Small helpers shared by the JSON API views."""

from __future__ import annotations

from typing import Any

from quart import request

from securechat.errors import BadJson, InvalidField


async def json_body() -> dict[str, Any]:
    """The request body as a JSON object, or BadJson (400)."""
    body = await request.get_json(silent=True)
    if not isinstance(body, dict):
        raise BadJson()
    return body


def client_address() -> str:
    """The peer address of this request (see README: behind a proxy, configure Hypercorn)."""
    return request.remote_addr or "unknown"


def int_arg(name: str, *, default: int, minimum: int, maximum: int) -> int:
    """An integer query parameter within bounds."""
    raw = request.args.get(name)
    if raw is None or raw == "":
        return default
    if not raw.isdigit() or len(raw) > 19:
        raise InvalidField(name, f"{name} must be a non-negative integer")
    value = int(raw)
    if not minimum <= value <= maximum:
        raise InvalidField(name, f"{name} must be between {minimum} and {maximum}")
    return value
