"""SecureChat: a self-hostable, end-to-end encrypted web chat server.

``create_app`` (securechat/app.py) builds the Quart app; nothing happens at import time.
Importing this package loads no web framework, so the auditor (``python -m securechat.audit``)
and the Python client run without it: ``create_app`` is imported on first use.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from securechat.version import __version__

if TYPE_CHECKING:
    from securechat.app import create_app
else:

    def create_app(*args, **kwargs):
        """The app factory of securechat/app.py, imported when first called so that importing
        the package loads no web framework. Hypercorn finds it here as
        ``'securechat:create_app()'`` as well as ``'securechat.app:create_app()'``."""
        from securechat.app import create_app as build

        return build(*args, **kwargs)


__all__ = ["__version__", "create_app"]
