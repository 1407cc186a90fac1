"""Small helpers shared by the JSON API views."""

from __future__ import annotations

import re
from typing import Any

from quart import request

from securechat.chat.protocol import strict_json_loads
from securechat.errors import BadJson, InvalidField

# str.isdigit() accepts "²" and other Unicode digits that int() then refuses.
_ASCII_DIGITS = re.compile(r"[0-9]{1,19}")


async def json_body() -> dict[str, Any]:
    """The request body as a strict UTF-8 JSON object, or BadJson (400)."""
    raw = await request.get_data(as_text=False)
    assert isinstance(raw, bytes)
    try:
        body = strict_json_loads(raw.decode("utf-8"))
    except ValueError:  # UnicodeDecodeError and JSON errors alike
        raise BadJson() from None
    if not isinstance(body, dict):
        raise BadJson()
    return body


def client_address() -> str:
    """The peer address of this request (see README: behind a proxy, configure Hypercorn)."""
    return request.remote_addr or "unknown"


def parse_uint(raw: str) -> int:
    """A non-negative integer of at most 19 ASCII digits; ValueError otherwise."""
    if not _ASCII_DIGITS.fullmatch(raw):
        raise ValueError("not a non-negative integer")
    return int(raw)


def int_arg(name: str, *, default: int, minimum: int, maximum: int) -> int:
    """An integer query parameter within bounds."""
    raw = request.args.get(name)
    if raw is None or raw == "":
        return default
    try:
        value = parse_uint(raw)
    except ValueError:
        raise InvalidField(name, f"{name} must be a non-negative integer") from None
    if not minimum <= value <= maximum:
        raise InvalidField(name, f"{name} must be between {minimum} and {maximum}")
    return value
