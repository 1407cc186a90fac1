"""SecureChat: a self-hostable, end-to-end encrypted web chat server.

``create_app`` (securechat/app.py) builds the Quart app; nothing happens at import time.
Importing this package loads no web framework, so the auditor (``python -m securechat.audit``)
and the Python client run without it: ``create_app`` is imported on first use.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from securechat.version import __version__

if TYPE_CHECKING:
    from securechat.app import create_app


def __getattr__(name: str) -> Any:
    """``securechat.create_app`` without an eager import of Quart (PEP 562). Servers name the
    factory ``securechat.app:create_app()``: Hypercorn looks it up in the module's namespace."""
    if name == "create_app":
        from securechat.app import create_app

        return create_app
    raise AttributeError(f"module 'securechat' has no attribute {name!r}")


__all__ = ["__version__", "create_app"]
