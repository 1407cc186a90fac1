"""Server processes under test: started on a free 127.0.0.1 port, measured through /proc, stopped.

Every server is a separate process tree (Hypercorn's supervisor spawns one worker process), given
an already bound listening socket by file descriptor so no port can be taken in between. Each
child gets ``RLIMIT_NOFILE`` raised to its hard limit, so 10,000 sockets fit.
"""

from __future__ import annotations

import contextlib
import os
import resource
import secrets
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
import urllib.request
from dataclasses import dataclass, field
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
BIN = Path(sys.executable).parent
CLK_TCK = os.sysconf("SC_CLK_TCK")
PAGE = os.sysconf("SC_PAGE_SIZE")

# Light key-stretching settings, only for creating many accounts fast (as tests/conftest.py does).
# The login scenario runs a server with the defaults instead.
LIGHT_SETTINGS = {
    "SECURECHAT_ARGON2_TIME_COST": "1",
    "SECURECHAT_ARGON2_MEMORY_KIB": "1024",
    "SECURECHAT_ARGON2_PARALLELISM": "1",
    "SECURECHAT_KDF_MIN_ITERATIONS": "1000",
    "SECURECHAT_REGISTRATIONS_PER_ADDRESS": "1000000",
}
LIGHT_ITERATIONS = 1000


def raise_nofile() -> int:
    """Raise this process's open-file limit to its hard limit; return the new soft limit."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if hard != resource.RLIM_INFINITY and soft < hard:
        resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
        return hard
    return soft


def listening_socket() -> socket.socket:
    """A TCP socket listening on a free port of 127.0.0.1, inheritable by a child process."""
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.bind(("127.0.0.1", 0))
    # A deep backlog: thousands of clients connect at once in the capacity scenario.
    sock.listen(4096)
    sock.set_inheritable(True)
    return sock


@dataclass
class ServerSpec:
    """What to run: a name for the report, how to build the command line, its environment."""

    name: str
    # "ours-hypercorn" | "ours-uvicorn" | "quart-relay" | "websockets-relay" | ..., optionally
    # with what-if patches: "ours-hypercorn+gclog" (tools/bench/experiments.py).
    kind: str
    env: dict[str, str] = field(default_factory=dict)

    @property
    def base(self) -> str:
        """The kind without its experiments."""
        return self.kind.split("+", 1)[0]

    @property
    def experiments(self) -> str:
        return self.kind.partition("+")[2]


def command_for(kind: str, fd: int, port: int) -> list[str]:
    """The command line that serves ``kind`` on the listening socket ``fd`` (bound to ``port``)."""
    if kind in ("ours-hypercorn", "ours-hypercorn-uvloop"):  # `make run`'s command, our socket
        uvloop = ["--worker-class", "uvloop"] if kind.endswith("uvloop") else []
        return [
            str(BIN / "hypercorn"),
            "--config",
            str(ROOT / "hypercorn.toml"),
            *uvloop,
            "--bind",
            f"fd://{fd}",
            "securechat.app:create_app()",
        ]
    if kind in ("ours-uvicorn", "ours-uvicorn-deflate"):  # make run's limits, in Uvicorn's terms
        return [
            str(BIN / "uvicorn"),
            "--factory",
            "securechat.app:create_app",
            # Uvicorn's --fd assumes a Unix socket (wrong peer addresses on TCP), so it binds the
            # port itself: the listening socket is closed just before, a negligible race.
            "--host",
            "127.0.0.1",
            "--port",
            str(port),
            "--loop",
            "uvloop",
            "--http",
            "httptools",
            "--ws",
            "websockets-sansio",
            "--ws-max-size",
            "65536",
            "--ws-ping-interval",
            "20",
            # The app declines permessage-deflate on Hypercorn (securechat/chat/wsguard.py); Uvicorn
            # needs telling. ("-deflate": Uvicorn's default, to measure what it costs.)
            "--ws-per-message-deflate",
            "true" if kind.endswith("deflate") else "false",
            "--timeout-keep-alive",
            "5",
            "--no-server-header",
            "--log-level",
            "warning",
        ]
    if kind == "quart-relay":  # the same Hypercorn configuration as ours
        return [
            str(BIN / "hypercorn"),
            "--config",
            str(ROOT / "hypercorn.toml"),
            "--bind",
            f"fd://{fd}",
            "tools.bench.quart_relay:app",
        ]
    if kind == "websockets-relay":
        return [sys.executable, "-m", "tools.bench.websockets_relay", "--fd", str(fd)]
    raise ValueError(f"unknown server kind {kind!r}")


class Server:
    """One running server process tree, its URL, its data directory and its measurements."""

    def __init__(self, spec: ServerSpec, data_dir: Path | None = None) -> None:
        self.spec = spec
        self.owns_data_dir = data_dir is None
        self.data_dir = data_dir or Path(tempfile.mkdtemp(prefix="securechat-bench-"))
        self.admin_token = secrets.token_urlsafe(24)
        self.proc: subprocess.Popen[bytes] | None = None
        self.url = ""
        self.log_path = self.data_dir / f"{spec.name}.log"

    def environment(self) -> dict[str, str]:
        env = {k: v for k, v in os.environ.items() if not k.startswith("SECURECHAT_")}
        env.update(
            SECURECHAT_DATA_DIR=str(self.data_dir / "data"),
            SECURECHAT_ADMIN_TOKEN=self.admin_token,
            PYTHONPATH=str(ROOT),
        )
        if self.spec.experiments:
            env["PYTHONPATH"] = f"{ROOT / 'tools' / 'bench' / 'whatif'}{os.pathsep}{ROOT}"
            env["BENCH_EXPERIMENTS"] = self.spec.experiments
        env.update(self.spec.env)
        return env

    def start(self, timeout: float = 30.0) -> Server:
        """Initialise the data directory (as `make run` does), start, wait for /healthz."""
        env = self.environment()
        # `make run` initialises the data directory first; once done, it would change nothing.
        if self.spec.kind.startswith("ours") and not (self.data_dir / "data").exists():
            subprocess.run(
                [sys.executable, "-m", "securechat", "init"],
                cwd=ROOT,
                env=env,
                check=True,
                stdout=subprocess.DEVNULL,
                timeout=60,
            )
        sock = listening_socket()
        port = sock.getsockname()[1]
        self.url = f"http://127.0.0.1:{port}"
        command = command_for(self.spec.base, sock.fileno(), port)
        if self.spec.kind.startswith("ours-uvicorn"):
            sock.close()
        with open(self.log_path, "ab") as log:
            self.proc = subprocess.Popen(  # noqa: S603 (our own fixed command line)
                command,
                cwd=ROOT,
                env=env,
                stdout=log,
                stderr=subprocess.STDOUT,
                pass_fds=() if sock.fileno() < 0 else (sock.fileno(),),
                preexec_fn=raise_nofile,  # the parent is single-threaded here
                start_new_session=True,
            )
        sock.close()
        self._wait_healthy(timeout)
        return self

    def _wait_healthy(self, timeout: float) -> None:
        deadline = time.monotonic() + timeout
        path = "/healthz" if self.spec.kind.startswith("ours") else "/"
        proc = self.running()
        while time.monotonic() < deadline:
            if proc.poll() is not None:
                raise RuntimeError(f"{self.spec.name} exited: see {self.log_path}")
            try:
                with urllib.request.urlopen(self.url + path, timeout=2):  # noqa: S310
                    return
            except urllib.error.HTTPError:
                return  # it answers: that is all we wait for
            except OSError:
                time.sleep(0.05)
        raise RuntimeError(f"{self.spec.name} did not start within {timeout} s")

    def worker_pid(self) -> int:
        """The process that serves: Hypercorn's spawned worker, or the process itself."""
        proc = self.running()
        if self.spec.kind.startswith("ours-hypercorn") or self.spec.kind == "quart-relay":
            for child in _children(proc.pid):  # skip multiprocessing's resource tracker
                with contextlib.suppress(OSError):
                    if b"spawn_main" in Path(f"/proc/{child}/cmdline").read_bytes():
                        return child
        return proc.pid

    def running(self) -> subprocess.Popen[bytes]:
        """The server's top process; an error before :meth:`start` (nothing to measure yet)."""
        if self.proc is None:
            raise RuntimeError(f"{self.spec.name} has not been started")
        return self.proc

    def rss_bytes(self) -> int:
        return rss_bytes(self.worker_pid())

    def cpu_seconds(self) -> float:
        return cpu_seconds(self.worker_pid())

    def stop(self, timeout: float = 20.0) -> None:
        """SIGTERM the process group, then SIGKILL whatever is left."""
        if self.proc is None or self.proc.poll() is not None:
            return
        with contextlib.suppress(ProcessLookupError):
            os.killpg(self.proc.pid, signal.SIGTERM)
        try:
            self.proc.wait(timeout)
        except subprocess.TimeoutExpired:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(self.proc.pid, signal.SIGKILL)
            self.proc.wait(5)

    def __enter__(self) -> Server:
        return self.start()

    def __exit__(self, *exc_info: object) -> None:
        self.stop()
        if self.owns_data_dir:
            shutil.rmtree(self.data_dir, ignore_errors=True)


def _children(pid: int) -> list[int]:
    found: list[int] = []
    with contextlib.suppress(OSError):
        for task in os.listdir(f"/proc/{pid}/task"):
            text = Path(f"/proc/{pid}/task/{task}/children").read_text()
            found.extend(int(part) for part in text.split())
    return found


def rss_bytes(pid: int) -> int:
    """Resident set size of one process."""
    fields = Path(f"/proc/{pid}/statm").read_text().split()
    return int(fields[1]) * PAGE


def cpu_seconds(pid: int) -> float:
    """User plus system CPU time of one process (all its threads) so far."""
    text = Path(f"/proc/{pid}/stat").read_text()
    fields = text[text.rindex(")") + 2 :].split()
    return (int(fields[11]) + int(fields[12])) / CLK_TCK


def tree_cpu_seconds(pid: int) -> float:
    """CPU time of a process and all its descendants, those that ended included: each live
    process's user + system time plus what its ended children used (cutime + cstime), so a
    PostgreSQL backend that exits between two readings is still counted, in its parent."""
    try:
        text = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return 0.0  # ended between listing and reading: its parent's cutime has it now
    fields = text[text.rindex(")") + 2 :].split()
    own = sum(int(value) for value in fields[11:15]) / CLK_TCK
    return own + sum(tree_cpu_seconds(child) for child in _children(pid))


def machine_busy_seconds() -> float:
    """CPU seconds the whole machine has spent busy (all processes, all cores) since boot."""
    fields = Path("/proc/stat").read_text().split("\n", 1)[0].split()[1:]
    user, nice, system, _idle, _iowait, irq, softirq, steal = (int(v) for v in fields[:8])
    return (user + nice + system + irq + softirq + steal) / CLK_TCK


class QuietWindow:
    """Waits, within a budget of seconds for the whole run, until the rest of the machine is quiet.

    The machine is shared (other people's tests run on it). Before a measurement, the CPU used
    by everything but ``ours`` (the server and the load generator, idle at that moment) is
    sampled over half a second; above ``threshold`` cores, it waits and samples again, until
    the budget is spent. What was found is returned, to be reported with the measurement.
    """

    def __init__(self, budget: float = 60.0, threshold: float = 0.3) -> None:
        self.budget = budget
        self.threshold = threshold

    def wait(self) -> float:
        """Block until quiet (or out of budget); return the other CPU load last seen, in cores."""
        while True:
            started, busy0 = time.monotonic(), machine_busy_seconds()
            time.sleep(0.5)
            elapsed = time.monotonic() - started
            other = (machine_busy_seconds() - busy0) / elapsed
            if other <= self.threshold or self.budget <= 0:
                return round(other, 2)
            self.budget -= elapsed


def machine() -> dict[str, object]:
    """What this ran on, for the report."""
    model = ""
    with contextlib.suppress(OSError):
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                model = line.split(":", 1)[1].strip()
                break
    mem_kib = 0
    with contextlib.suppress(OSError, ValueError, IndexError):
        mem_kib = int(Path("/proc/meminfo").read_text().split()[1])
    return {
        "cpus": os.cpu_count(),
        "cpu_model": model,
        "memory_gib": round(mem_kib / 1024 / 1024, 1),
        "python": sys.version.split()[0],
        "kernel": os.uname().release,
        "load_avg": [round(x, 2) for x in os.getloadavg()],
    }
