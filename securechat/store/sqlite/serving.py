"""One serving process per SQLite database: an exclusive lock beside the file.

Positions are drawn inside the writer's transaction, so two processes sharing the file would
not collide; but everything else of the chat lives in the serving process (the local broker's
fan-out, presence, the connections-per-user cap, the throttles and the send limiter). Two
processes serving one file, such as ``hypercorn --workers 2`` without ``SECURECHAT_DATABASE_URL``,
would each deliver live only to their own sockets: a message to someone connected to the other
would wait for their reconnect. So a server takes this lock when it starts serving, and a second
one refuses to start, saying what to do instead. Tools that open the database beside a running
server (``python -m securechat init``, the operator's commands) take no lock.

``flock`` is released by the kernel when the process ends, however it ends (a SIGKILLed server
restarts at once), and is independent of the POSIX locks SQLite takes on the database itself.
"""

from __future__ import annotations

import contextlib
import fcntl
import logging
import os
from pathlib import Path

log = logging.getLogger(__name__)


class DatabaseInUse(RuntimeError):
    """Another process is serving this SQLite database."""


class ServingLock:
    """The lock file ``<database>.serving`` (mode 0600), holding the serving process's id."""

    def __init__(self, database: Path) -> None:
        self.database = database
        self.path = database.with_name(database.name + ".serving")
        self._fd: int | None = None

    def acquire(self) -> None:
        """Take the lock or raise :class:`DatabaseInUse` naming the process that holds it."""
        if self._fd is not None:
            return
        fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o600)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            holder = os.pread(fd, 32, 0).decode(errors="replace").strip() or "unknown"
            os.close(fd)
            message = (
                f"another process (pid {holder}) is serving the SQLite database"
                f" {self.database}: one process serves a SQLite database, so run Hypercorn with"
                " one worker (make run), or make every worker a node of a cluster with"
                " SECURECHAT_DATABASE_URL (PostgreSQL) and SECURECHAT_REDIS_URL (README,"
                " 'Running a cluster')."
            )
            log.critical("%s", message)  # the one line an operator reads before the traceback
            raise DatabaseInUse(message) from None
        os.ftruncate(fd, 0)
        os.pwrite(fd, str(os.getpid()).encode(), 0)
        self._fd = fd

    def release(self) -> None:
        """Let another process serve the database (closing the file releases the lock)."""
        if self._fd is not None:
            with contextlib.suppress(OSError):
                os.close(self._fd)
            self._fd = None


__all__ = ["DatabaseInUse", "ServingLock"]
