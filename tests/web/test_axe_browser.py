"""axe-core over every page in real Chromium: zero accessibility violations.

axe-core (package.json, installed by `make test` through `make lint`) is injected into each
page by an init script, which the page's CSP does not govern, so the pages stay exactly as
served. A missing axe-core fails these tests: an accessibility check that silently skips
checks nothing.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest
from playwright.async_api import Browser, BrowserContext, Page, expect

from securechat import e2e
from securechat.client import SecureChatClient
from tests.browser_helpers import WAIT_MS, ChatPage, register
from tests.conftest import MakeClient
from tests.livesrv import LiveServer

pytestmark = pytest.mark.browser

AXE = Path(__file__).resolve().parents[2] / "node_modules" / "axe-core" / "axe.min.js"

# Every rule axe runs by default (WCAG 2.x A and AA, and its best practices), violations only.
RUN_AXE = """
async () => {
  const result = await window.axe.run(document, { resultTypes: ["violations"] });
  return result.violations.map((violation) => ({
    rule: violation.id,
    help: violation.help,
    nodes: violation.nodes.map((node) => node.target.join(" ")),
  }));
}
"""


@pytest.fixture(name="axe_context")
async def _axe_context(browser: Browser, live_server: LiveServer) -> AsyncIterator[BrowserContext]:
    """A browser context whose every page carries axe-core."""
    if not AXE.exists():
        pytest.fail(f"axe-core is missing ({AXE}): run `npm ci` (make test does)")
    context = await browser.new_context()
    await context.add_init_script(path=str(AXE))
    yield context
    await context.close()


async def violations(page: Page) -> list[dict[str, Any]]:
    """What axe finds wrong with the page as it is now."""
    found: list[dict[str, Any]] = await page.evaluate(RUN_AXE)
    return found


@pytest.mark.parametrize("path", ["/", "/signup", "/login", "/no-such-page"])
async def test_public_pages_have_no_violations(
    axe_context: BrowserContext, live_server: LiveServer, path: str
) -> None:
    """The home, sign-up, log-in and error pages pass axe."""
    page = await axe_context.new_page()
    await page.goto(live_server.url + path)
    await expect(page.locator("h1").first).to_be_visible()
    assert await violations(page) == []


async def test_signed_in_pages_have_no_violations(
    axe_context: BrowserContext,
    live_server: LiveServer,
    make_client: MakeClient,
    identities: list[e2e.Identity],
) -> None:
    """The chat with a thread of messages both ways, the log-out dialog and settings pass axe."""
    await register(make_client, identities[0], "alice")
    bob: SecureChatClient = await register(make_client, identities[1], "bob")
    connection = await bob.connect()
    try:
        # Enough to scroll: the history must scroll from the keyboard too.
        for number in range(24):
            await connection.send_message("alice", f"message {number} of a long thread")
        await connection.send_message("alice", "see https://example.org/a?b=c for the plan")
    finally:
        await connection.close()
    chat = await ChatPage.open(axe_context, live_server.url, "alice")
    assert await violations(chat.page) == [], "the conversation list"

    await chat.open_conversation("bob")
    await expect(chat.messages).to_have_count(25, timeout=WAIT_MS)
    await chat.send("hi bob")
    await expect(chat.messages.last).to_have_attribute("data-status", "sent", timeout=WAIT_MS)
    scroller = chat.page.locator("#thread-scroll")
    assert await scroller.evaluate("(node) => node.scrollHeight > node.clientHeight")
    assert await violations(chat.page) == [], "a thread with messages"

    await chat.page.get_by_role("button", name="Log out", exact=True).click()
    await expect(chat.page.get_by_role("dialog", name="Log out")).to_be_visible()
    assert await violations(chat.page) == [], "the log-out dialog"
    await chat.page.keyboard.press("Escape")

    await chat.page.goto(live_server.url + "/settings")
    await expect(chat.page.locator("h1").first).to_be_visible()
    assert await violations(chat.page) == [], "settings"


async def test_phone_thread_has_no_violations(
    browser: Browser,
    live_server: LiveServer,
    make_client: MakeClient,
    identities: list[e2e.Identity],
) -> None:
    """On a 390x740 phone, an open thread (full height, the safety number as an icon) passes axe."""
    if not AXE.exists():
        pytest.fail(f"axe-core is missing ({AXE}): run `npm ci` (make test does)")
    await register(make_client, identities[0], "alice")
    bob = await register(make_client, identities[1], "bob")
    connection = await bob.connect()
    try:
        await connection.send_message("alice", "hello from a phone test")
    finally:
        await connection.close()
    context = await browser.new_context(viewport={"width": 390, "height": 740})
    try:
        await context.add_init_script(path=str(AXE))
        chat = await ChatPage.open(context, live_server.url, "alice")
        await chat.open_conversation("bob")
        await expect(chat.messages).to_have_count(1, timeout=WAIT_MS)
        assert await violations(chat.page) == []
    finally:
        await context.close()
