"""Deleting an account from the settings page in real Chromium (issue 12, item 3): the page
asks for a confirmation and the password, the account goes, and a contact's chat says so."""

from __future__ import annotations

from collections.abc import AsyncIterator

import pytest
from playwright.async_api import Browser, BrowserContext, expect

from securechat import e2e
from securechat.client import NoKeys
from tests.browser_helpers import PASSWORD, SLOW_MS, WAIT_MS, ChatPage, register
from tests.conftest import MakeClient
from tests.livesrv import LiveServer
from tests.test_operator import securechat

pytestmark = pytest.mark.browser


@pytest.fixture(name="contexts")
async def _contexts(browser: Browser) -> AsyncIterator[list[BrowserContext]]:
    """Two people's browsers (own cookies and IndexedDB), closed before the server stops."""
    made = [await browser.new_context(), await browser.new_context()]
    yield made
    for context in made:
        await context.close()


async def test_deleting_my_account_from_settings(
    live_server: LiveServer,
    make_client: MakeClient,
    identities: list[e2e.Identity],
    contexts: list[BrowserContext],
) -> None:
    """Unticked or with a wrong password nothing goes; then the account is deleted, its page
    says so and holds no keys, its name cannot log in, and bob's chat says it was deleted."""
    await register(make_client, identities[0], "alice")
    bob_client = await register(make_client, identities[1], "bob")
    await register(make_client, identities[2], "carol")
    alice = await ChatPage.open(contexts[0], live_server.url, "alice")
    bob = await ChatPage.open(contexts[1], live_server.url, "bob")
    await bob.start_conversation("carol")
    await bob.send("hello carol")
    await bob.start_conversation("alice")
    await bob.send("hello alice")
    await expect(alice.conversation("bob")).to_be_visible(timeout=WAIT_MS)

    page = alice.page
    await page.goto(live_server.url + "/settings")
    section = page.locator("#delete-account")
    await section.get_by_label("Password").fill(PASSWORD)
    await section.get_by_role("button", name="Delete my account").click()
    await expect(section.locator("#delete-understood-error")).to_be_visible()
    await section.get_by_role("checkbox").check()
    await section.get_by_label("Password").fill("not the password at all")
    await section.get_by_role("button", name="Delete my account").click()
    await expect(section.locator("#delete-password-error")).to_contain_text(
        "Nothing was deleted", timeout=SLOW_MS
    )
    assert await bob_client.fetch_verified_keys("alice")

    await section.get_by_label("Password").fill(PASSWORD)
    await section.get_by_role("button", name="Delete my account").click()
    await expect(page.get_by_role("heading", name="Account deleted")).to_be_visible(timeout=SLOW_MS)
    await expect(page.locator("#account-deleted")).to_contain_text("was deleted")
    status = await page.evaluate("() => fetch('/api/v1/me').then((r) => r.status)")
    assert status == 401
    with pytest.raises(NoKeys):
        await bob_client.fetch_verified_keys("alice")

    # bob's chat: opening alice's conversation again fetches her keys: a proved tombstone.
    await bob.open_conversation("carol")
    await bob.open_conversation("alice")
    toast = bob.page.get_by_role("alert").filter(has_text="alice: This account was deleted.")
    await expect(toast).to_be_visible(timeout=WAIT_MS)


async def test_withdrawn_keys_send_the_login_to_the_key_reset(
    live_server: LiveServer,
    make_client: MakeClient,
    identities: list[e2e.Identity],
    contexts: list[BrowserContext],
) -> None:
    """After the operator's ``users reset-keys``, logging in lands on the settings' key reset
    with an alert that says why, not on the chat."""
    await register(make_client, identities[0], "alice")
    done = securechat(live_server.config, "users", "reset-keys", "alice")
    assert done.returncode == 0, done.stderr
    page = await contexts[0].new_page()
    await page.goto(live_server.url + "/login")
    await page.get_by_label("Username").fill("alice")
    await page.get_by_label("Password").fill(PASSWORD)
    await page.get_by_role("button", name="Log in").click()
    await page.wait_for_url("**/settings?keys=withdrawn#reset-title", timeout=SLOW_MS)
    alert = page.get_by_role("alert").filter(has_text="withdrew your keys")
    await expect(alert).to_be_visible(timeout=WAIT_MS)
