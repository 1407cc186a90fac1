"""``python -m securechat.audit``: the key directory's independent auditor, under its stable
command name (the code: securechat/directory/audit.py)."""

from __future__ import annotations

import sys

from securechat.directory.audit import main

if __name__ == "__main__":
    sys.exit(main())
