"""``python -m securechat serve`` (what ``make run`` starts), stopped as a person stops it: SIGINT
to a real server with a chat socket open. The socket is told "server shutdown" (1001) and the
process exits 0 without a traceback (issue 12, item 9)."""

from __future__ import annotations

import asyncio
import os
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import pytest

from securechat.client import SecureChatClient
from securechat.config import PROJECT_ROOT
from tests.chat.test_chat import closed_with
from tests.conftest import FAST_ITERATIONS

PASSWORD = "correct horse battery"
# Fast settings for a test server (tests/conftest.py fast_config), as its environment.
FAST = {
    "SECURECHAT_ARGON2_TIME_COST": "1",
    "SECURECHAT_ARGON2_MEMORY_KIB": "1024",
    "SECURECHAT_ARGON2_PARALLELISM": "1",
    "SECURECHAT_KDF_MIN_ITERATIONS": str(FAST_ITERATIONS),
}


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


def wait_until_serving(url: str, process: subprocess.Popen[str]) -> None:
    """Poll /healthz until it answers (bounded: the server's start-up, at most 60 s)."""
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        assert process.poll() is None, process.communicate()
        try:
            with urllib.request.urlopen(url + "/healthz", timeout=2):
                return
        except OSError:
            time.sleep(0.1)
    raise AssertionError("the server did not start")


def start_server(tmp_path: Path) -> tuple[subprocess.Popen[str], str]:
    """``python -m securechat serve`` on a free port with the project's hypercorn.toml, but a
    grace of 1 s; returns the process once it answers, and its URL."""
    toml = tmp_path / "hypercorn.toml"
    settings = (PROJECT_ROOT / "hypercorn.toml").read_text("utf-8")
    toml.write_text(settings.replace("graceful_timeout = 10", "graceful_timeout = 1"), "utf-8")
    port = free_port()
    env = {k: v for k, v in os.environ.items() if not k.startswith("SECURECHAT_")}
    env.update(FAST, SECURECHAT_DATA_DIR=str(tmp_path / "var"))
    command = ["serve", "--bind", f"127.0.0.1:{port}", "--config", str(toml)]
    process = subprocess.Popen(
        [sys.executable, "-m", "securechat", *command],
        cwd=PROJECT_ROOT,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    url = f"http://127.0.0.1:{port}"
    try:
        wait_until_serving(url, process)
    except BaseException:
        process.kill()
        process.communicate()
        raise
    return process, url


@pytest.mark.slow
async def test_ctrl_c_with_a_chat_socket_open_shuts_down_quietly(tmp_path: Path) -> None:
    """SIGINT: the socket is closed 1001 "server shutdown", the process exits 0, and stderr
    holds no traceback (Hypercorn cancels the lingering connection after the grace, 1 s here)
    nor quart-auth's warning about Secure cookies, which browsers keep on loopback."""
    process, url = start_server(tmp_path)
    try:
        async with SecureChatClient(url, min_iterations=FAST_ITERATIONS) as alice:
            await alice.register("alice", PASSWORD, iterations=FAST_ITERATIONS)
            await alice.login("alice", PASSWORD)
            chat = await alice.connect()
            process.send_signal(signal.SIGINT)
            assert await closed_with(chat) == (1001, "server shutdown")
        _, stderr = await asyncio.to_thread(process.communicate, timeout=60)
    finally:
        if process.poll() is None:
            process.kill()
            process.communicate()
    assert process.returncode == 0, stderr
    assert "1 chat socket(s) closed" in stderr
    assert "Traceback" not in stderr and "CancelledError" not in stderr, stderr
    assert "Secure cookies will be ignored" not in stderr, stderr


def test_make_says_what_it_does_while_the_venv_builds(tmp_path: Path) -> None:
    """The first `make run` builds .venv for about half a minute: it says so before it starts."""
    venv = tmp_path / "venv"
    shown = subprocess.run(
        ["make", "-n", "--no-print-directory", f"VENV={venv}", f"{venv}/.installed"],
        cwd=PROJECT_ROOT,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert shown.returncode == 0, shown.stderr
    lines = shown.stdout.splitlines()
    assert lines[0].startswith('echo "Setting up'), lines
    assert any("is ready" in line for line in lines)


def test_init_warns_of_plain_http_origins_beyond_loopback(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    """Browsers keep the Secure cookie on http://127.0.0.1, not on http://10.0.0.5: only the
    latter is warned about, before serving."""
    from securechat import __main__ as cli

    monkeypatch.setenv("SECURECHAT_DATA_DIR", str(tmp_path / "data"))
    monkeypatch.setenv("SECURECHAT_PUBLIC_ORIGIN", "http://10.0.0.5:8000, http://127.0.0.1:8000")
    assert cli.main(["init"]) == 0
    warnings = [line for line in capsys.readouterr().out.splitlines() if "WARNING" in line]
    assert len(warnings) == 1 and "http://10.0.0.5:8000 is plain HTTP" in warnings[0]
