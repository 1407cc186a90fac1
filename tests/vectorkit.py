"""The shared test vectors of tests/vectors/, as the Python and the browser tests read them."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from securechat import e2e

VECTORS_DIR = Path(__file__).parent / "vectors"


def load(name: str) -> dict[str, Any]:
    """tests/vectors/<name>.json."""
    data: dict[str, Any] = json.loads((VECTORS_DIR / f"{name}.json").read_text("utf-8"))
    return data


def identity(vectors: dict[str, Any], name: str) -> e2e.Identity:
    """One of the fixed identities of e2e.json, with its private keys."""
    keys = vectors["identities"][name]
    return e2e.Identity.from_pkcs8(
        e2e.b64decode(keys["enc_pkcs8"]), e2e.b64decode(keys["sign_pkcs8"])
    )
