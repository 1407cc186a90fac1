"""`make cluster`: a throwaway two-node SecureChat cluster on this machine, for a local try.

It starts a PostgreSQL and a Redis of their own (tools/engines.py: temporary directories, unix
sockets, no TCP port), prepares the shared secrets once with ``python -m securechat init
--cluster``, and starts two Hypercorn nodes on 127.0.0.1:8001 and 127.0.0.1:8002 over that
database and that Redis, each with a data directory of its own and the same two secret files,
as two machines would be. Both nodes answer for both origins. Ctrl-C (or SIGTERM, or the end of
``--duration``) stops the nodes, Redis and PostgreSQL and removes every directory it made.

The tests (tests/test_cluster.py) start their nodes through the same ``Cluster`` and ``Node``, and
so do the single-process tests that need a real server process (tests/chat/test_crash.py,
tests/test_workers.py).
"""

from __future__ import annotations

import argparse
import contextlib
import os
import secrets
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from types import FrameType

from securechat.config import PROJECT_ROOT
from tools.engines import EngineUnavailable, PostgresEngine, RedisEngine, find_engines

PORTS = (8001, 8002)
HOST = "127.0.0.1"
START_TIMEOUT = 30.0
# Hypercorn's graceful_timeout (hypercorn.toml) is 10 s; a node still up after this is killed.
STOP_TIMEOUT = 15.0


def hypercorn_command(port: int, options: Sequence[str] = ()) -> list[str]:
    """``python -m hypercorn`` with the project's config on ``127.0.0.1:port``, as `make run`
    runs it (``options``: more Hypercorn arguments, such as ``--workers 2``)."""
    return [
        sys.executable,
        "-m",
        "hypercorn",
        "--config",
        str(PROJECT_ROOT / "hypercorn.toml"),
        "--bind",
        f"{HOST}:{port}",
        *options,
        "securechat.app:create_app()",
    ]


@dataclass
class Node:
    """One node: ``python -m hypercorn`` with the project's config, in a process group of its
    own (so a terminal's Ctrl-C reaches only the script, which stops it in order)."""

    url: str
    process: subprocess.Popen[bytes]
    log: Path

    @classmethod
    def start(
        cls, port: int, environment: Mapping[str, str], log: Path, options: Sequence[str] = ()
    ) -> Node:
        """Start a node on ``127.0.0.1:port`` (``options``: more Hypercorn arguments, such as
        ``--workers 2``); return once its /healthz answers."""
        with log.open("ab") as output:
            process = subprocess.Popen(  # noqa: S603 (our own fixed command line)
                hypercorn_command(port, options),
                cwd=PROJECT_ROOT,
                env=dict(environment),
                stdin=subprocess.DEVNULL,
                stdout=output,
                stderr=subprocess.STDOUT,
                start_new_session=True,
            )
        node = cls(f"http://{HOST}:{port}", process, log)
        try:
            node._wait_until_serving()
        except BaseException:
            node.kill()
            raise
        return node

    def _wait_until_serving(self) -> None:
        deadline = time.monotonic() + START_TIMEOUT
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                tail = self.log.read_text(errors="replace")[-4000:]
                raise RuntimeError(
                    f"node {self.url} exited with {self.process.returncode}:\n{tail}"
                )
            try:
                with urllib.request.urlopen(self.url + "/healthz", timeout=1):  # noqa: S310
                    return
            except (urllib.error.URLError, OSError):
                time.sleep(0.05)  # polling a process that is starting: nothing to await
        raise RuntimeError(f"node {self.url} did not answer within {START_TIMEOUT} s")

    def stop(self) -> None:
        """SIGTERM the group (Hypercorn's graceful shutdown), then SIGKILL what is left."""
        if self.process.poll() is None:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(self.process.pid, signal.SIGTERM)
            try:
                self.process.wait(STOP_TIMEOUT)
            except subprocess.TimeoutExpired:
                self.kill()
        self.process.wait()

    def kill(self) -> None:
        """SIGKILL the whole group: a crash, not a shutdown."""
        if self.process.poll() is None:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(self.process.pid, signal.SIGKILL)
        self.process.wait()


@dataclass
class Cluster:
    """Nodes over one database and one Redis, sharing the secret files in ``root/secrets``."""

    root: Path
    environment: dict[str, str]
    init_output: str = ""
    nodes: list[Node] = field(default_factory=list)

    @classmethod
    def prepare(
        cls,
        database_url: str,
        redis_url: str,
        origins: list[str],
        settings: Mapping[str, str] = {},
    ) -> Cluster:
        """A temporary root with the shared secrets, created and recorded in the database by
        ``init --cluster``; ``settings`` are more SECURECHAT_* variables for every node."""
        root = Path(tempfile.mkdtemp(prefix="securechat-cluster-"))
        shared = root / "secrets"
        shared.mkdir(mode=0o700)
        environment = os.environ | {
            "SECURECHAT_DATABASE_URL": database_url,
            "SECURECHAT_REDIS_URL": redis_url,
            "SECURECHAT_SERVER_SECRET_FILE": str(shared / "server.secret"),
            "SECURECHAT_DIRECTORY_KEY_FILE": str(shared / "directory.key"),
            "SECURECHAT_PUBLIC_ORIGIN": ",".join(origins),
            **settings,
        }
        cluster = cls(root, environment)
        try:
            cluster.init_output = cluster._init()
        except BaseException:
            cluster.stop()
            raise
        return cluster

    def _init(self) -> str:
        done = subprocess.run(
            [sys.executable, "-m", "securechat", "init", "--cluster"],
            cwd=PROJECT_ROOT,
            env=self.node_environment("init"),
            stdin=subprocess.DEVNULL,
            capture_output=True,
            text=True,
            timeout=120,
            check=False,
        )
        if done.returncode != 0:
            raise RuntimeError(f"securechat init --cluster failed:\n{done.stdout}{done.stderr}")
        return done.stdout

    def node_environment(self, name: str) -> dict[str, str]:
        """A node's environment: the cluster's, with a data directory of its own."""
        return self.environment | {"SECURECHAT_DATA_DIR": str(self.root / name / "data")}

    def start_node(self, port: int, options: Sequence[str] = ()) -> Node:
        """Start a node on ``127.0.0.1:port`` (``options``: more Hypercorn arguments); it is
        stopped with the cluster."""
        name = f"node-{port}"
        (self.root / name).mkdir(mode=0o700, exist_ok=True)
        log = self.root / name / "hypercorn.log"
        node = Node.start(port, self.node_environment(name), log, options)
        self.nodes.append(node)
        return node

    def stop(self) -> None:
        """Stop every node, then remove the root (secrets, data directories, logs)."""
        try:
            for node in self.nodes:
                node.stop()
        finally:
            shutil.rmtree(self.root, ignore_errors=True)


def free_port() -> int:
    """A port of 127.0.0.1 that nothing listens on now (a node binds it by number)."""
    with socket.socket() as probe:
        probe.bind((HOST, 0))
        return int(probe.getsockname()[1])


@dataclass
class LocalCluster:
    """A cluster and the throwaway engines it runs on (the benchmark measures all three)."""

    cluster: Cluster
    postgres: PostgresEngine
    redis: RedisEngine


@contextlib.contextmanager
def local_cluster(
    ports: tuple[int, ...], settings: Mapping[str, str] = {}
) -> Iterator[LocalCluster]:
    """Throwaway PostgreSQL and Redis, and a node on each port; all stopped on exit.
    ``settings`` are more SECURECHAT_* variables for every node."""
    bin_dir, redis_server = find_engines()
    with contextlib.ExitStack() as stack:
        postgres = PostgresEngine.start(bin_dir)
        stack.callback(postgres.stop)
        redis = RedisEngine.start(redis_server)
        stack.callback(redis.stop)
        origins = [f"http://{HOST}:{port}" for port in ports]
        cluster = Cluster.prepare(postgres.url(), redis.url, origins, settings)
        stack.callback(cluster.stop)
        for port in ports:
            cluster.start_node(port)
        yield LocalCluster(cluster, postgres, redis)


def _stop_on_sigterm(signum: int, frame: FrameType | None) -> None:
    raise KeyboardInterrupt  # the same orderly stop as Ctrl-C


def _announce(cluster: Cluster, admin_token: str) -> None:
    print(cluster.init_output.rstrip())
    print("\nSecureChat cluster: two nodes sharing one PostgreSQL, one Redis and the secrets.")
    for node in cluster.nodes:
        print(f"  {node.url}/   (log: {node.log})")
    print(
        "Sign up on one, chat with someone signed in on the other (a separate browser or a"
        " private window: each node's origin has its own cookies)."
    )
    print(
        f"Admin: curl -H 'Authorization: Bearer {admin_token}' {cluster.nodes[0].url}/admin/health"
    )
    print("Ctrl-C stops everything and removes its files.", flush=True)


def main(argv: list[str] | None = None) -> int:
    """Run the cluster until Ctrl-C, SIGTERM, ``--duration`` or a node's exit."""
    parser = argparse.ArgumentParser(prog="python -m tools.cluster", description=__doc__)
    parser.add_argument("--ports", type=int, nargs="+", default=list(PORTS))
    parser.add_argument("--duration", type=float, default=None, help="stop after this many s")
    args = parser.parse_args(argv)
    signal.signal(signal.SIGTERM, _stop_on_sigterm)
    admin_token = secrets.token_urlsafe(24)
    deadline = None if args.duration is None else time.monotonic() + args.duration
    try:
        settings = {"SECURECHAT_ADMIN_TOKEN": admin_token}
        with local_cluster(tuple(args.ports), settings) as local:
            cluster = local.cluster
            _announce(cluster, admin_token)
            while deadline is None or time.monotonic() < deadline:
                exited = [node for node in cluster.nodes if node.process.poll() is not None]
                if exited:
                    tail = exited[0].log.read_text(errors="replace")[-4000:]
                    print(f"node {exited[0].url} exited:\n{tail}", file=sys.stderr)
                    return 1
                time.sleep(0.5)
    except KeyboardInterrupt:
        pass
    except (EngineUnavailable, RuntimeError) as error:
        print(error, file=sys.stderr)
        return 1
    finally:
        print("Stopped: nodes, Redis and PostgreSQL; their files removed.", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
