"""The release, in a module of its own so anything may import it without the app."""

from __future__ import annotations

__version__ = "0.1.0"
