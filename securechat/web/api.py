"""Small helpers shared by the JSON API views."""

from __future__ import annotations

import asyncio
import contextlib
import re
from collections.abc import AsyncIterator
from typing import Any

from quart import request

from securechat.chat.protocol import strict_json_loads
from securechat.config import Config
from securechat.errors import BadJson, InvalidField, RequestBodyTimeout
from securechat.state import state

# str.isdigit() accepts "²" and other Unicode digits that int() then refuses.
_ASCII_DIGITS = re.compile(r"[0-9]{1,19}")


@contextlib.asynccontextmanager
async def receiving_body(config: Config) -> AsyncIterator[None]:
    """Bound the time to receive the whole request body, however slowly it trickles in: past
    ``config.request_body_timeout``, RequestBodyTimeout (408, and the connection is closed)."""
    try:
        async with asyncio.timeout(config.request_body_timeout):
            yield
    except TimeoutError:
        raise RequestBodyTimeout() from None


async def json_body() -> dict[str, Any]:
    """The request body as a strict UTF-8 JSON object, or BadJson (400)."""
    # Read already by security.refuse_oversized_bodies, under the same bound.
    async with receiving_body(state().config):
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
