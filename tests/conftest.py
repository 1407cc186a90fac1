"""Fixtures: a real app on a real port, real SQLite files, real clients, real Chromium; the
throwaway engines of tests/engines.py."""

from __future__ import annotations

import os
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from pathlib import Path
from typing import TypeAlias

import pytest
from playwright.async_api import Browser, BrowserContext, Page, async_playwright

from securechat import e2e
from securechat.client import SecureChatClient
from securechat.config import Config
from tests.livesrv import LiveServer

# The throwaway PostgreSQL and Redis (postgres_engine, postgres_database, redis_engine).
pytest_plugins = ["tests.engines"]

CHROMIUM = os.environ.get("SECURECHAT_TEST_CHROMIUM", "/usr/bin/chromium")
CHROMIUM_ARGS = ["--no-sandbox", "--disable-gpu", "--disable-background-networking"]
# Tests register many users: light argon2 and PBKDF2 settings keep them fast. The defaults
# themselves are checked in tests/test_config.py.
FAST_ITERATIONS = 1000

# The factories the fixtures `make_client` and `signed_up` hand to a test.
MakeClient: TypeAlias = Callable[[], SecureChatClient]
SignUp: TypeAlias = Callable[[str], Awaitable[SecureChatClient]]


def fast_config(data_dir: Path, **overrides: object) -> Config:
    """Safe defaults, with the costly parameters turned down for speed."""
    settings: dict[str, object] = {
        "data_dir": data_dir,
        "argon2_time_cost": 1,
        "argon2_memory_kib": 1024,  # 1 ms a hash, against 8 ms at 8 MiB
        "argon2_parallelism": 1,
        "kdf_min_iterations": FAST_ITERATIONS,
        "registrations_per_address": 10_000,
        # The live servers run in this process: leave its garbage collector as pytest has it
        # (tests/test_gcpolicy.py turns the policy on where it is the subject).
        "gc_freeze_growth": 0,
    }
    settings.update(overrides)
    return Config.from_env({}, **settings)


def identity_of(client: SecureChatClient) -> e2e.Identity:
    """The identity of a logged-in client (as signed_up's are)."""
    assert client.account is not None, "the client is not logged in"
    return client.account.identity


@pytest.fixture(name="config")
def _config(tmp_path: Path) -> Config:
    return fast_config(tmp_path / "data")


@pytest.fixture(name="live_server")
def _live_server(config: Config) -> Iterator[LiveServer]:
    server = LiveServer(config).start()
    try:
        yield server
    finally:
        server.stop()


@pytest.fixture(name="base_url")
def _base_url(live_server: LiveServer) -> str:
    return live_server.url


@pytest.fixture(name="identities", scope="session")
def _identities() -> list[e2e.Identity]:
    """A few 2048-bit identities made once: RSA key generation is slow."""
    return [e2e.Identity.generate(2048) for _ in range(4)]


@pytest.fixture(name="make_client")
async def _make_client(base_url: str) -> AsyncIterator[MakeClient]:
    """A factory of SecureChatClients for the live server, closed after the test."""
    clients: list[SecureChatClient] = []

    def make() -> SecureChatClient:
        client = SecureChatClient(base_url, min_iterations=FAST_ITERATIONS)
        clients.append(client)
        return client

    yield make
    for client in clients:
        await client.close()


@pytest.fixture(name="signed_up")
async def _signed_up(make_client: MakeClient, identities: list[e2e.Identity]) -> SignUp:
    """A factory: register and log in a user with a pooled identity; returns its client."""
    used = 0

    async def sign_up(username: str, password: str = "correct horse battery") -> SecureChatClient:
        nonlocal used
        client = make_client()
        identity = identities[used % len(identities)]
        used += 1
        await client.register(username, password, iterations=FAST_ITERATIONS, identity=identity)
        await client.login(username, password)
        return client

    return sign_up


@pytest.fixture(name="browser", scope="session")
async def _browser() -> AsyncIterator[Browser]:
    if not Path(CHROMIUM).exists():
        pytest.fail(f"Chromium not found at {CHROMIUM}: run `make test`, which installs it")
    async with async_playwright() as playwright:
        browser = await playwright.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
        yield browser
        await browser.close()


@pytest.fixture(name="browser_context")
async def _browser_context(browser: Browser) -> AsyncIterator[BrowserContext]:
    context = await browser.new_context()
    yield context
    await context.close()


@pytest.fixture(name="browser_page")
async def _browser_page(browser_context: BrowserContext, live_server: LiveServer) -> Page:
    page = await browser_context.new_page()
    await page.goto(live_server.url + "/")
    return page
