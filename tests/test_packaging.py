"""`pip install .` without the checkout: the sdist and the wheel carry schema.sql, templates/ and
static/ (setup.py, MANIFEST.in), and the installed package serves them from a directory that is
not the checkout. The client extra's absence is reported with the command that installs it."""

from __future__ import annotations

import importlib
import os
import shutil
import site
import socket
import sqlite3
import subprocess
import sys
import tarfile
import time
import urllib.request
import zipfile
from collections.abc import Iterator
from contextlib import closing
from pathlib import Path

import pytest

from securechat.config import PROJECT_ROOT

RESOURCES = ("schema.sql", "templates/index.html", "static/css/app.css", "static/js/crypto.js")
APP = "securechat.app:create_app()"


def run(
    *command: str | Path, cwd: Path, env: dict[str, str] | None = None, timeout: float = 120
) -> subprocess.CompletedProcess[str]:
    """Run ``command``; fail the test with its output unless it exits 0."""
    result = subprocess.run(
        [str(part) for part in command],
        cwd=cwd,
        env=env,
        capture_output=True,
        text=True,
        timeout=timeout,
        check=False,
    )
    assert result.returncode == 0, f"{command}\n{result.stdout}\n{result.stderr}"
    return result


def clean_checkout(target: Path) -> Path:
    """Copy the checkout's files (tracked, and new ones not ignored) as a fresh clone would have
    them, so the build cannot lean on, or leave anything in, the working tree."""
    listing = run(
        "git", "ls-files", "-z", "--cached", "--others", "--exclude-standard", cwd=PROJECT_ROOT
    )
    for name in listing.stdout.split("\0"):
        source = PROJECT_ROOT / name
        if not name or not source.is_file():
            continue
        (target / name).parent.mkdir(parents=True, exist_ok=True)
        shutil.copy2(source, target / name)
    return target


@pytest.fixture(name="source", scope="module")
def _source(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return clean_checkout(tmp_path_factory.mktemp("checkout"))


@pytest.fixture(name="dist", scope="module")
def _dist(source: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """``python -m build``: the sdist from the checkout, then the wheel from the sdist."""
    dist = tmp_path_factory.mktemp("dist")
    run(sys.executable, "-m", "build", "--outdir", dist, source, cwd=source, timeout=300)
    return dist


@pytest.fixture(name="venv", scope="module")
def _venv(dist: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A new virtual environment with the wheel alone installed; the runtime dependencies come
    from this interpreter's site-packages through a .pth file, so no download is needed (the
    project's own editable install there is not activated: .pth files are read only in the
    environment's own site directories)."""
    venv = tmp_path_factory.mktemp("venv")
    run(sys.executable, "-m", "venv", "--without-pip", venv, cwd=venv)
    python = venv / "bin" / "python"
    (wheel,) = dist.glob("securechat-*.whl")
    run(
        sys.executable,
        "-m",
        "pip",
        "--python",
        python,
        "install",
        "--no-deps",
        "--no-index",
        wheel,
        cwd=venv,
    )
    purelib = run(python, "-c", "import sysconfig; print(sysconfig.get_path('purelib'))", cwd=venv)
    dependencies = "\n".join(site.getsitepackages())
    (Path(purelib.stdout.strip()) / "securechat-test-dependencies.pth").write_text(
        dependencies + "\n"
    )
    return venv


@pytest.fixture(name="env")
def _env(tmp_path: Path) -> dict[str, str]:
    """The environment less anything that would point Python back at the checkout."""
    env = {k: v for k, v in os.environ.items() if k not in {"PYTHONPATH", "VIRTUAL_ENV"}}
    env["SECURECHAT_DATA_DIR"] = str(tmp_path / "data")
    return env


@pytest.fixture(name="server")
def _server(venv: Path, env: dict[str, str], tmp_path: Path) -> Iterator[str]:
    """``securechat init``, then Hypercorn serving ``create_app()`` on 127.0.0.1, port 0."""
    run(venv / "bin" / "python", "-m", "securechat", "init", cwd=tmp_path, env=env)
    listener = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    listener.bind(("127.0.0.1", 0))
    url = f"http://127.0.0.1:{listener.getsockname()[1]}"
    fd = listener.fileno()
    with (tmp_path / "hypercorn.log").open("w") as log:
        process = subprocess.Popen(
            [venv / "bin" / "python", "-m", "hypercorn", "--bind", f"fd://{fd}", APP],
            cwd=tmp_path,
            env=env,
            pass_fds=[fd],
            stdout=log,
            stderr=subprocess.STDOUT,
        )
    listener.close()
    try:
        wait_until_serving(url, process, tmp_path / "hypercorn.log")
        yield url
    finally:
        process.terminate()
        try:
            process.wait(timeout=15)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()


def wait_until_serving(url: str, process: subprocess.Popen[bytes], log: Path) -> None:
    """Return once /healthz answers 200; fail with the server's log if it exits or never does."""
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        assert process.poll() is None, log.read_text()
        try:
            with urllib.request.urlopen(url + "/healthz", timeout=1) as response:
                if response.status == 200:
                    return
        except OSError:
            time.sleep(0.1)
    pytest.fail(f"the installed server did not answer in time\n{log.read_text()}")


def fetch(url: str) -> tuple[str, bytes]:
    """The content type and the body of a 200 answer."""
    with urllib.request.urlopen(url, timeout=10) as response:
        assert response.status == 200
        return response.headers["Content-Type"], response.read()


@pytest.mark.slow
def test_sdist_carries_the_resources(dist: Path) -> None:
    """The sdist has schema.sql, templates/ and static/ at its top, for the wheel built from it."""
    (sdist,) = dist.glob("securechat-*.tar.gz")
    with tarfile.open(sdist) as archive:
        names = {name.split("/", 1)[1] for name in archive.getnames() if "/" in name}
    assert {"setup.py", "hypercorn.toml", *RESOURCES} <= names


@pytest.mark.slow
def test_wheel_carries_the_resources_inside_the_package(dist: Path) -> None:
    """The wheel has every template and static file under securechat/resources/."""
    (wheel,) = dist.glob("securechat-*.whl")
    with zipfile.ZipFile(wheel) as archive:
        names = set(archive.namelist())
    expected = {f"securechat/resources/{name}" for name in RESOURCES}
    for folder in ("templates", "static"):
        expected |= {
            f"securechat/resources/{path.relative_to(PROJECT_ROOT).as_posix()}"
            for path in (PROJECT_ROOT / folder).rglob("*")
            if path.is_file()
        }
    assert expected <= names


@pytest.mark.slow
def test_wheel_declares_the_license_as_spdx(dist: Path) -> None:
    """The metadata names the licence as an SPDX expression (PEP 639), not a free-text table."""
    (wheel,) = dist.glob("securechat-*.whl")
    with zipfile.ZipFile(wheel) as archive:
        (name,) = [n for n in archive.namelist() if n.endswith(".dist-info/METADATA")]
        metadata = archive.read(name).decode().splitlines()
    assert "License-Expression: MIT" in metadata
    assert not [line for line in metadata if line.startswith("License:")]


@pytest.mark.slow
def test_build_leaves_no_resources_in_the_source_tree(source: Path, dist: Path) -> None:
    """Building copies the resources into the build directory only, never into the package."""
    assert list(dist.glob("securechat-*.whl"))
    assert not (source / "securechat" / "resources").exists()


@pytest.mark.slow
def test_installed_package_reads_its_own_resources(venv: Path, tmp_path: Path) -> None:
    """Outside the checkout, the installed securechat finds schema and pages in its own folder."""
    result = run(
        venv / "bin" / "python",
        "-c",
        "import securechat.config as c; print(c.RESOURCES)",
        cwd=tmp_path,
    )
    resources = Path(result.stdout.strip())
    assert resources.is_relative_to(venv)
    assert resources.name == "resources"


@pytest.mark.slow
def test_installed_init_applies_the_schema(venv: Path, env: dict[str, str], tmp_path: Path) -> None:
    """``python -m securechat init`` creates the database from the packaged schema.sql."""
    run(venv / "bin" / "python", "-m", "securechat", "init", cwd=tmp_path, env=env)
    with closing(sqlite3.connect(Path(env["SECURECHAT_DATA_DIR"]) / "securechat.db")) as db:
        tables = {row[0] for row in db.execute("SELECT name FROM sqlite_master WHERE type='table'")}
    assert {"users", "sessions", "key_log"} <= tables


@pytest.mark.slow
def test_installed_server_serves_the_page_and_static_files(server: str) -> None:
    """Hypercorn serving the installed ``create_app()`` answers / and /static/ from the wheel."""
    content_type, page = fetch(server + "/")
    assert content_type.startswith("text/html")
    assert b'<h1 id="hero-title">' in page
    assert b"/static/css/app.css" in page
    content_type, css = fetch(server + "/static/css/app.css")
    assert content_type.startswith("text/css")
    assert css == (PROJECT_ROOT / "static" / "css" / "app.css").read_bytes()


@pytest.mark.slow
def test_installed_auditor_runs(venv: Path, tmp_path: Path) -> None:
    """``python -m securechat.audit --help`` works from the installed package."""
    result = run(venv / "bin" / "python", "-m", "securechat.audit", "--help", cwd=tmp_path)
    assert "--watch" in result.stdout


def test_auditor_loads_no_web_framework(tmp_path: Path) -> None:
    """The auditor imports no Quart: it runs wherever the client extra is installed."""
    run(
        sys.executable,
        "-c",
        "import sys, securechat.directory.audit; assert 'quart' not in sys.modules",
        cwd=tmp_path,
    )


@pytest.mark.parametrize("module", ["httpx", "websockets"])
def test_missing_client_extra_says_how_to_install_it(module: str, tmp_path: Path) -> None:
    """Without httpx or websockets, importing the client or the auditor names the extra."""
    hide = f"import sys; sys.modules[{module!r}] = None; import securechat.directory.audit"
    result = subprocess.run(
        [sys.executable, "-c", hide],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert result.returncode == 1
    last = result.stderr.strip().splitlines()[-1]
    assert last.startswith(f"ModuleNotFoundError: No module named {module!r}")
    assert "pip install 'securechat[client]'" in last


@pytest.mark.parametrize("target", ["securechat:create_app()", "securechat.app:create_app()"])
def test_hypercorn_finds_the_factory_under_both_names(target: str) -> None:
    """Hypercorn evaluates the target in the module's namespace (no module __getattr__), so
    ``securechat:create_app()``, the name operators used first, must be a real attribute."""
    module_name, _, call = target.partition(":")
    module = importlib.import_module(module_name)
    assert callable(eval(call.removesuffix("()"), vars(module)))
