"""`python -m securechat.audit` against honest, forked and rewritten logs."""

from __future__ import annotations

import sqlite3
import stat
import subprocess
import sys
from pathlib import Path

import pytest

from securechat import e2e
from securechat.config import PROJECT_ROOT
from securechat.directory import audit
from tests.conftest import SignUp, fast_config, identity_of
from tests.directory.test_directory import (
    change_keys,
    directory_spki,
    forge_log_entry,
    fork_server,
    served_head,
)
from tests.livesrv import LiveServer


def run(server: LiveServer, state: Path, *watch: str) -> tuple[int, str]:
    """Audit ``server`` once; return the exit status and the report."""
    status, lines = audit.run(server.url, state, watch)
    return status, "\n".join(lines)


@pytest.fixture(name="state")
def _state(tmp_path: Path) -> Path:
    return tmp_path / "audit.json"


async def test_honest_log_passes_run_after_run(
    live_server: LiveServer, signed_up: SignUp, state: Path
) -> None:
    """Exit 0 on first use and after the log grows; the state file is private."""
    await signed_up("alice")
    status, out = run(live_server, state)
    assert status == 0, out
    fingerprint = e2e.fingerprint(directory_spki(live_server))
    assert f"pinned the directory key {fingerprint}" in out
    assert stat.S_IMODE(state.stat().st_mode) == 0o600
    await signed_up("bob")
    await signed_up("carol")
    status, out = run(live_server, state)
    assert status == 0, out
    assert "the log of size 3 is verified" in out


async def test_watch_lists_every_key_a_user_had(
    live_server: LiveServer, signed_up: SignUp, state: Path, identities: list[e2e.Identity]
) -> None:
    """--watch bob lists both keys bob has had, even when first asked after the fact."""
    await signed_up("alice")
    bob = await signed_up("bob")
    assert run(live_server, state)[0] == 0
    change_keys(live_server, "bob", identities[3])
    status, out = run(live_server, state, "bob")
    assert status == 0, out
    assert "bob: 2 key publication(s) in the log" in out
    assert e2e.fingerprint(identity_of(bob).enc_public_spki) in out
    assert e2e.fingerprint(identities[3].sign_public_spki) in out
    assert "(current)" in out.splitlines()[-1]
    await signed_up("carol")
    status, out = run(live_server, state, "bob")
    assert status == 0 and "bob: 2 key publication(s)" in out


async def test_fork_is_reported_and_remembered(
    live_server: LiveServer,
    signed_up: SignUp,
    state: Path,
    tmp_path: Path,
    identities: list[e2e.Identity],
) -> None:
    """A server with the same key but another history: exit 1, and the evidence stays."""
    await signed_up("alice")
    await signed_up("bob")
    with fork_server(live_server, tmp_path / "fork") as fork:
        await signed_up("carol")
        assert run(live_server, state)[0] == 0
        forge_log_entry(fork, "bob", identities[3])
        forge_log_entry(fork, "alice", identities[3])
        status, out = run(fork, state)
        assert status == 1
        assert "fork: the head of size 4 is not an extension of the head of size 3" in out
        status, out = run(live_server, state)
        assert status == 1
        assert "EVIDENCE (fork)" in out


async def test_two_heads_of_one_size_are_equivocation(
    live_server: LiveServer,
    signed_up: SignUp,
    state: Path,
    tmp_path: Path,
    identities: list[e2e.Identity],
) -> None:
    """The same size signed with two roots is reported as equivocation."""
    await signed_up("alice")
    with fork_server(live_server, tmp_path / "fork") as fork:
        await signed_up("bob")
        assert run(live_server, state)[0] == 0
        forge_log_entry(fork, "mallory", identities[3])
        status, out = run(fork, state)
        assert status == 1
        assert "equivocation: two different heads of size 2" in out


async def test_smaller_head_of_another_history_is_a_fork(
    live_server: LiveServer,
    signed_up: SignUp,
    state: Path,
    tmp_path: Path,
    identities: list[e2e.Identity],
) -> None:
    """A head smaller than the verified log must be a prefix of it."""
    await signed_up("alice")
    with fork_server(live_server, tmp_path / "fork") as fork:
        await signed_up("bob")
        await signed_up("carol")
        assert run(live_server, state)[0] == 0
        forge_log_entry(fork, "mallory", identities[3])
        status, out = run(fork, state)
        assert status == 1
        assert "not a prefix of the verified log" in out


async def test_rewritten_entry_is_reported(
    live_server: LiveServer, signed_up: SignUp, state: Path
) -> None:
    """An operator who drops the triggers and rewrites a row is caught: the root differs."""
    await signed_up("alice")
    await signed_up("bob")
    served_head(live_server)  # the server's tree now holds the true entries
    with sqlite3.connect(live_server.database_path) as db:
        db.execute("DROP TRIGGER key_log_no_update")
        db.execute("UPDATE key_log SET enc_fingerprint = zeroblob(32) WHERE idx = 0")
    status, out = run(live_server, state)
    assert status == 1
    assert "the entries do not hash to the signed head of size 2" in out


async def test_changed_directory_key_fails_until_accepted(
    live_server: LiveServer, signed_up: SignUp, state: Path, tmp_path: Path
) -> None:
    """Another directory key is refused; --accept-directory-key re-pins it."""
    await signed_up("alice")
    assert run(live_server, state)[0] == 0
    with LiveServer(fast_config(tmp_path / "other")).start() as other:
        status, out = run(other, state)
        assert status == 1
        assert "the directory key changed" in out
        new = e2e.fingerprint(directory_spki(other))
        status, lines = audit.run(other.url, state, accept=new)
        assert status == 0, lines  # its log is empty: a prefix of every log
        assert f"pinned the directory key {new}" in lines


def test_expected_fingerprint_is_enforced(live_server: LiveServer, state: Path) -> None:
    """--expect-fingerprint refuses a directory key other than the published one."""
    status, _ = audit.run(live_server.url, state, expect="00" * 32)
    assert status == 1
    right = e2e.fingerprint(directory_spki(live_server))
    assert audit.run(live_server.url, state, expect=right)[0] == 0


def test_unreachable_server_is_incomplete(state: Path) -> None:
    """No server: exit 2, not 0."""
    status, out = audit.run("http://127.0.0.1:9", state)
    assert status == 2
    assert "INCOMPLETE" in "\n".join(out)


def test_command_line(live_server: LiveServer, state: Path) -> None:
    """`python -m securechat.audit URL --state FILE --watch NAME` runs and exits 0."""
    result = subprocess.run(
        [
            sys.executable,
            "-m",
            "securechat.directory.audit",
            live_server.url,
            "--state",
            str(state),
            "--watch",
            "alice",
        ],
        cwd=PROJECT_ROOT,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert result.returncode == 0, result.stdout + result.stderr
    assert "alice: 0 key publication(s)" in result.stdout


def test_damaged_state_file_is_incomplete(live_server: LiveServer, state: Path) -> None:
    """A state file that cannot be read stops the audit with exit 2, not a traceback."""
    state.write_text('{"v": 1}')
    assert audit.main([live_server.url, "--state", str(state)]) == 2
