"""The operator's command line (issue 12, item 4), run as the operator runs it: a real
``python -m securechat`` process on the data directory of a running server, whose sockets close
and whose logins are refused as the commands say."""

from __future__ import annotations

import os
import sqlite3
import subprocess
import sys
from pathlib import Path

import pytest

from securechat import e2e
from securechat.client import NoKeys, SecureChatClient, reset_keys
from securechat.config import PROJECT_ROOT, Config
from tests.chat.test_chat import closed_with
from tests.conftest import FAST_ITERATIONS, SignUp, fast_config
from tests.engines import PostgresEngine
from tests.livesrv import LiveServer

PASSWORD = "correct horse battery"


@pytest.fixture(name="config")
def _config(tmp_path: Path) -> Config:
    """The server's settings: the watch reads the operator's actions every 0.1 s."""
    return fast_config(tmp_path / "data", operator_poll_interval=0.1)


def securechat(config: Config, *args: str) -> subprocess.CompletedProcess[str]:
    """``python -m securechat ARGS`` on the server's data directory (or its PostgreSQL
    database), as an operator runs it."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("SECURECHAT_")}
    env["SECURECHAT_DATA_DIR"] = str(config.data_dir)
    if config.database_url:
        env["SECURECHAT_DATABASE_URL"] = config.database_url
    return subprocess.run(
        [sys.executable, "-m", "securechat", *args],
        cwd=PROJECT_ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
    )


def actions(config: Config) -> list[tuple[str, str]]:
    with sqlite3.connect(config.database_path) as db:
        return [tuple(r) for r in db.execute("SELECT action, username FROM operator_actions")]


async def login_status(client: SecureChatClient, username: str) -> tuple[int, str]:
    try:
        await client.login(username, PASSWORD)
    except Exception as error:  # ClientError
        return error.status, error.code  # type: ignore[attr-defined]
    return 200, ""


async def keys_withdrawn_at_login(client: SecureChatClient) -> bool:
    """What a fresh login answers in ``keys_withdrawn``."""
    assert client.account is not None
    salt, iterations = await client.prelogin(client.account.username)
    keys = e2e.derive_keys(PASSWORD, salt, iterations, min_iterations=FAST_ITERATIONS)
    body = await client.call(
        "POST",
        "/api/v1/login",
        {"username": client.account.username, "auth_key": e2e.b64encode(keys.auth_key)},
    )
    return bool(body["keys_withdrawn"])


async def test_disable_closes_sockets_at_once_and_refuses_logins(
    config: Config, signed_up: SignUp
) -> None:
    """The running server closes the socket (1008), the session is dead, a login with the right
    password answers 403 account_disabled; enable lets it in again; both are audited."""
    alice = await signed_up("alice")
    chat = await alice.connect()
    done = securechat(config, "users", "disable", "alice")
    assert done.returncode == 0, done.stderr
    assert "alice is disabled" in done.stdout
    assert "operator action 1: disable 'alice'" in done.stderr
    assert await closed_with(chat) == (1008, "session ended")
    assert (await alice.request("GET", "/api/v1/me")).status_code == 401
    assert await login_status(alice, "alice") == (403, "account_disabled")
    shown = securechat(config, "users", "show", "alice")
    assert "disabled" in shown.stdout.splitlines()[1]
    assert securechat(config, "users", "enable", "alice").returncode == 0
    assert await login_status(alice, "alice") == (200, "")
    assert actions(config) == [("disable", "alice"), ("enable", "alice")]


async def test_sessions_end_closes_every_socket_of_the_account(
    config: Config, signed_up: SignUp
) -> None:
    """Both of alice's sockets close; bob's stays; alice may log in again."""
    alice = await signed_up("alice")
    bob = await signed_up("bob")
    first, second, bobs = await alice.connect(), await alice.connect(), await bob.connect()
    done = securechat(config, "sessions", "end", "alice")
    assert done.returncode == 0 and "alice: 1 session(s) ended" in done.stdout, done.stderr
    assert await closed_with(first) == (1008, "session ended")
    assert await closed_with(second) == (1008, "session ended")
    assert (await bobs.ping())["type"] == "pong"
    assert await login_status(alice, "alice") == (200, "")


async def test_delete_needs_yes_then_leaves_a_tombstone(config: Config, signed_up: SignUp) -> None:
    """Without --yes nothing happens (exit 2); with it the account is gone, contacts see a proved
    tombstone and the name answers 409."""
    alice = await signed_up("alice")
    bob = await signed_up("bob")
    chat = await alice.connect()
    refused = securechat(config, "users", "delete", "alice")
    assert refused.returncode == 2 and "--yes" in refused.stderr
    done = securechat(config, "users", "delete", "alice", "--yes")
    assert done.returncode == 0 and "alice is deleted" in done.stdout, done.stderr
    assert await closed_with(chat) == (1008, "session ended")
    with pytest.raises(NoKeys) as gone:
        await bob.fetch_verified_keys("alice")
    assert gone.value.code == "account_deleted"
    assert await login_status(bob, "alice") == (401, "invalid_credentials")


async def test_reset_keys_withdraws_them_and_keeps_the_account(
    config: Config, signed_up: SignUp
) -> None:
    """Contacts are refused alice's keys (keys_withdrawn, proved); her socket closes; she can
    still log in to publish new keys."""
    alice = await signed_up("alice")
    bob = await signed_up("bob")
    await bob.fetch_verified_keys("alice")
    chat = await alice.connect()
    done = securechat(config, "users", "reset-keys", "alice")
    assert done.returncode == 0 and "keys are withdrawn" in done.stdout, done.stderr
    assert await closed_with(chat) == (1008, "session ended")
    with pytest.raises(NoKeys) as withdrawn:
        await bob.fetch_verified_keys("alice")
    assert withdrawn.value.code == "keys_withdrawn"
    assert await login_status(alice, "alice") == (200, "")
    mine = await alice.check_my_entries()  # the tombstone under her name is no alarm
    assert [e.enc_fingerprint == bytes(32) for e in mine] == [False, True]
    assert await keys_withdrawn_at_login(alice) is True
    new_identity = await reset_keys(alice, PASSWORD, rsa_bits=2048)  # she publishes new keys
    keys = await bob.fetch_verified_keys("alice")
    assert keys.enc_public_key == new_identity.enc_public_spki
    assert await keys_withdrawn_at_login(alice) is False


async def test_list_and_mistakes(config: Config, signed_up: SignUp) -> None:
    """list prints every account in name order; an unknown account exits 1, a bad name 2."""
    for name in ("carol", "alice", "bob"):
        await signed_up(name)
    listed = securechat(config, "users", "list")
    assert listed.returncode == 0, listed.stderr
    assert [line.split()[0] for line in listed.stdout.splitlines()[1:]] == ["alice", "bob", "carol"]
    paged = securechat(config, "users", "list", "--after", "alice", "--limit", "1")
    assert [line.split()[0] for line in paged.stdout.splitlines()[1:]] == ["bob"]
    missing = securechat(config, "users", "disable", "nobody")
    assert missing.returncode == 1 and "no account named 'nobody'" in missing.stderr
    assert securechat(config, "users", "show", "no way!").returncode == 2
    assert securechat(config, "users", "list", "--limit", "0").returncode == 2
    assert actions(config) == []


async def test_disable_reaches_a_node_over_postgresql(
    tmp_path: Path, postgres_engine: PostgresEngine, postgres_database: str
) -> None:
    """The same on a cluster's store: the command works on the PostgreSQL database and the
    node's watch closes the socket; the login is refused."""
    config = fast_config(
        tmp_path / "node",
        database_url=postgres_engine.url(postgres_database),
        db_pool_min=1,
        db_pool_max=3,
        operator_poll_interval=0.1,
    )
    with LiveServer(config).start() as server:
        async with SecureChatClient(server.url, min_iterations=FAST_ITERATIONS) as alice:
            await alice.register("alice", PASSWORD, iterations=FAST_ITERATIONS)
            await alice.login("alice", PASSWORD)
            chat = await alice.connect()
            done = securechat(config, "users", "disable", "alice")
            assert done.returncode == 0, done.stderr
            assert await closed_with(chat) == (1008, "session ended")
            assert await login_status(alice, "alice") == (403, "account_disabled")
            listed = securechat(config, "users", "list")
            assert "disabled" in listed.stdout.splitlines()[1]
