"""Throwaway PostgreSQL and Redis: for the tests (tests/engines.py) and `make cluster` (tools/cluster.py).

Never the machine's own instances: PostgreSQL is a new cluster (``initdb``) in a temporary
directory, run as the ``postgres`` OS user when we are root (it refuses to run as root), that
listens on a unix socket in that directory and on no TCP port; Redis is a ``redis-server``
child on a unix socket, with ``--port 0`` and nothing saved. ``stop`` ends each and removes its
directory. Debian's ``postgresql`` and ``redis-server`` are installed when missing
(``tools/ensure-engines``, root only); an engine that cannot be had raises EngineUnavailable.
"""

from __future__ import annotations

import contextlib
import itertools
import os
import pwd
import shlex
import shutil
import socket
import subprocess
import tempfile
import time
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import asyncpg

from securechat.config import PROJECT_ROOT

ENSURE_ENGINES = PROJECT_ROOT / "tools" / "ensure-engines"
START_TIMEOUT = 60.0
# Names the socket file (.s.PGSQL.5432) in the engine's own directory: no TCP port is opened,
# so the system's PostgreSQL on 5432 is neither used nor in the way.
POSTGRES_PORT = 5432
POSTGRES_USER = "postgres"
# The throwaway cluster lives in memory where Linux offers a tmpfs: each test's CREATE DATABASE
# copies and logs the template's files, 13 ms there against 80 to 300 ms on this machine's disk.
MEMORY_DIR = Path("/dev/shm")  # noqa: S108 (a private mkdtemp inside it)


class EngineUnavailable(RuntimeError):
    """An engine could not be found, installed or started; the message says why."""


def postgres_bin_dir() -> Path | None:
    """The newest Debian PostgreSQL's ``bin`` (or ``$SECURECHAT_TEST_PG_BIN``), else PATH's."""
    override = os.environ.get("SECURECHAT_TEST_PG_BIN")
    if override:
        return Path(override)
    versions = Path("/usr/lib/postgresql").glob("*/bin/initdb")
    newest = max(versions, key=lambda path: _version(path.parents[1].name), default=None)
    if newest is not None:
        return newest.parent
    initdb = shutil.which("initdb")
    return Path(initdb).parent if initdb else None


def _version(name: str) -> tuple[int, ...]:
    return tuple(int(part) for part in name.split(".") if part.isdigit())


def find_engines() -> tuple[Path, Path]:
    """PostgreSQL's ``bin`` and ``redis-server``, installed by tools/ensure-engines if missing."""
    found = postgres_bin_dir(), shutil.which("redis-server")
    if None in found:
        ensured = subprocess.run(  # noqa: S603 (our own fixed command line)
            [ENSURE_ENGINES], capture_output=True, text=True, timeout=1800, check=False
        )
        if ensured.returncode != 0:
            raise EngineUnavailable(f"{ENSURE_ENGINES} failed:\n{ensured.stdout}{ensured.stderr}")
        found = postgres_bin_dir(), shutil.which("redis-server")
    bin_dir, redis_server = found
    if bin_dir is None or redis_server is None:
        raise EngineUnavailable(f"no PostgreSQL or no redis-server after {ENSURE_ENGINES}")
    return bin_dir, Path(redis_server)


def _run_as() -> dict[str, Any]:
    """``subprocess`` arguments that run PostgreSQL's tools as ``postgres`` when we are root."""
    if os.geteuid() != 0:
        return {}
    try:
        user = pwd.getpwnam(POSTGRES_USER)
    except KeyError:
        raise EngineUnavailable("running as root and there is no `postgres` user") from None
    env = {**os.environ, "HOME": user.pw_dir, "USER": POSTGRES_USER, "LOGNAME": POSTGRES_USER}
    return {"user": user.pw_uid, "group": user.pw_gid, "extra_groups": [], "env": env}


@dataclass
class PostgresEngine:
    """A throwaway PostgreSQL cluster in ``root``: data in ``root/data``, the socket in ``root``."""

    bin_dir: Path
    root: Path
    started_in: float = 0.0
    _numbers: Iterator[int] = field(default_factory=itertools.count)

    @classmethod
    def start(cls, bin_dir: Path) -> PostgresEngine:
        """``initdb`` a new cluster in a new temporary directory and start it (``pg_ctl -w``)."""
        began = time.perf_counter()
        in_memory = str(MEMORY_DIR) if MEMORY_DIR.is_dir() else None
        engine = cls(bin_dir, Path(tempfile.mkdtemp(prefix="securechat-pg-", dir=in_memory)))
        try:
            run_as = _run_as()
            if run_as:
                os.chown(engine.root, run_as["user"], run_as["group"])
            engine._tool(
                "initdb",
                "-D",
                engine.data,
                "-U",
                POSTGRES_USER,
                "--auth=trust",
                "-E",
                "UTF8",
                "--locale=C",
                "--no-sync",
            )
            engine._pg_ctl_start()
        except BaseException:
            engine._remove()
            raise
        engine.started_in = time.perf_counter() - began
        return engine

    def _pg_ctl_start(self) -> None:
        options = f"-c listen_addresses='' -k {shlex.quote(str(self.root))} -p {POSTGRES_PORT}"
        self._tool(
            "pg_ctl",
            "start",
            "-D",
            self.data,
            "-l",
            self.log,
            "-w",
            "-t",
            str(int(START_TIMEOUT)),
            "-o",
            options,
        )

    def crash(self) -> None:
        """Stop at once (``pg_ctl -m immediate``: no checkpoint, crash recovery at the next
        start), keeping the data directory: a fault for tests."""
        self._tool("pg_ctl", "stop", "-D", self.data, "-m", "immediate", "-w")

    def restart(self) -> None:
        """Start again on the same data directory and socket (after ``crash``)."""
        self._pg_ctl_start()

    @property
    def data(self) -> Path:
        return self.root / "data"

    @property
    def log(self) -> Path:
        return self.root / "postgres.log"

    @property
    def pid(self) -> int:
        """The postmaster's process id (its backends are its children)."""
        return int((self.data / "postmaster.pid").read_text().split("\n", 1)[0])

    def connect_args(self, database: str = "postgres") -> dict[str, Any]:
        """Keyword arguments for ``asyncpg.connect`` / ``create_pool`` to ``database``."""
        return {
            "host": str(self.root),
            "port": POSTGRES_PORT,
            "user": POSTGRES_USER,
            "database": database,
        }

    def url(self, database: str = "postgres") -> str:
        """A ``postgresql://`` URL of ``database`` over the unix socket (libpq and asyncpg)."""
        return f"postgresql://{POSTGRES_USER}@/{database}?host={self.root}&port={POSTGRES_PORT}"

    async def connect(self, database: str = "postgres") -> Any:
        """An ``asyncpg.Connection`` to ``database``."""
        return await asyncpg.connect(**self.connect_args(database))

    @contextlib.asynccontextmanager
    async def fresh_database(self) -> AsyncIterator[str]:
        """A new, empty database's name; dropped afterwards, connections and all."""
        name = f"test_{next(self._numbers)}"
        admin = await self.connect()
        try:
            await admin.execute(f'CREATE DATABASE "{name}"')
            yield name
        finally:
            await admin.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
            await admin.close()

    def stop(self) -> None:
        """Stop the server (``pg_ctl -m fast``) and remove its directory."""
        try:
            if (self.data / "postmaster.pid").exists():
                self._tool("pg_ctl", "stop", "-D", self.data, "-m", "fast", "-w")
        finally:
            self._remove()

    def _tool(self, name: str, *args: str | Path) -> None:
        command = [str(self.bin_dir / name), *map(str, args)]
        done = subprocess.run(  # noqa: S603 (PostgreSQL's own tools, our arguments)
            command,
            cwd=self.root,
            stdin=subprocess.DEVNULL,
            capture_output=True,
            text=True,
            timeout=START_TIMEOUT + 30,
            check=False,
            **_run_as(),
        )
        if done.returncode != 0:
            log = self.log.read_text(errors="replace")[-4000:] if self.log.exists() else ""
            raise EngineUnavailable(f"{shlex.join(command)}:\n{done.stdout}{done.stderr}{log}")

    def _remove(self) -> None:
        shutil.rmtree(self.root, ignore_errors=True)


@dataclass
class RedisEngine:
    """A throwaway ``redis-server`` child on the unix socket ``root/redis.sock``."""

    root: Path
    process: subprocess.Popen[bytes]
    redis_server: Path
    started_in: float = 0.0

    @classmethod
    def start(cls, redis_server: Path) -> RedisEngine:
        """Start it with no TCP port and no persistence; return once it answers PING."""
        began = time.perf_counter()
        root = Path(tempfile.mkdtemp(prefix="securechat-redis-"))
        engine = cls(root, _spawn_redis(redis_server, root), redis_server)
        try:
            engine._wait_ready()
        except BaseException:
            engine.stop()
            raise
        engine.started_in = time.perf_counter() - began
        return engine

    def kill(self) -> None:
        """SIGKILL the server (a crash: its socket file stays, nothing answers on it)."""
        self.process.kill()
        self.process.wait()

    def restart(self) -> None:
        """Start a new, empty server on the same socket path (after ``kill``)."""
        self.process = _spawn_redis(self.redis_server, self.root)
        self._wait_ready()

    @property
    def socket_path(self) -> Path:
        return self.root / "redis.sock"

    @property
    def url(self) -> str:
        """A ``unix://`` URL that ``redis.asyncio.Redis.from_url`` takes."""
        return f"unix://{self.socket_path}"

    def ping(self) -> bool:
        """Whether the server answers PING on its socket now (RESP, no client library)."""
        with contextlib.suppress(OSError), socket.socket(socket.AF_UNIX) as probe:
            probe.settimeout(1.0)
            probe.connect(str(self.socket_path))
            probe.sendall(b"PING\r\n")
            return probe.recv(16).startswith(b"+PONG")
        return False

    def stop(self) -> None:
        """End the server (SIGTERM, then SIGKILL) and remove its directory."""
        try:
            self.process.terminate()
            try:
                self.process.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()
        finally:
            shutil.rmtree(self.root, ignore_errors=True)

    def _wait_ready(self) -> None:
        deadline = time.monotonic() + START_TIMEOUT
        while not self.ping():
            if self.process.poll() is not None or time.monotonic() > deadline:
                log = self.root / "redis.log"
                text = log.read_text(errors="replace")[-4000:] if log.exists() else ""
                raise EngineUnavailable(f"redis-server did not start:\n{text}")
            time.sleep(0.02)


def _spawn_redis(redis_server: Path, root: Path) -> subprocess.Popen[bytes]:
    """``redis-server`` on the unix socket ``root/redis.sock``: no TCP port, nothing saved."""
    command = [
        str(redis_server),
        "--port",
        "0",
        "--unixsocket",
        str(root / "redis.sock"),
        "--unixsocketperm",
        "700",
        "--save",
        "",
        "--appendonly",
        "no",
        "--dir",
        str(root),
        "--logfile",
        str(root / "redis.log"),
    ]
    return subprocess.Popen(  # noqa: S603 (our own fixed command line)
        command,
        stdin=subprocess.DEVNULL,
        stdout=subprocess.DEVNULL,
        # Not in our process group: a terminal's Ctrl-C reaches the caller, which stops it.
        start_new_session=True,
    )
