"""Password change, the recovery key and key reset in real Chromium against a real server:
what a person does in the settings, sign-up and recovery pages, and what it leaves readable."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any

import pytest
from playwright.async_api import Browser, BrowserContext, Page, expect

from securechat import e2e
from securechat.client import SecureChatClient, recover
from tests.browser_helpers import PASSWORD, SLOW_MS, WAIT_MS, ChatPage, register
from tests.conftest import FAST_ITERATIONS, MakeClient
from tests.livesrv import LiveServer
from tests.web.test_pages_browser import fill_sign_up

pytestmark = pytest.mark.browser

NewContext = Callable[..., Awaitable[BrowserContext]]
NEW_PASSWORD = "purple giraffe lantern 7"
CLOSE_S = 20  # seconds a browser context gets to close after a test


@pytest.fixture(name="new_context")
async def _new_context(browser: Browser, live_server: LiveServer) -> AsyncIterator[NewContext]:
    """Fresh browser contexts (own cookies and IndexedDB), closed before the server stops."""
    contexts: list[BrowserContext] = []

    async def new_context(**options: Any) -> BrowserContext:
        context = await browser.new_context(**options)
        contexts.append(context)
        return context

    yield new_context
    for context in contexts:
        # Bounded: a close that never answers must not hold the whole run; the browser's own
        # close at the end of the session takes such a context with it.
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(context.close(), CLOSE_S)


async def me_status(page: Page, base_url: str) -> int:
    """The status of GET /api/v1/me with the page's cookies (whichever page it shows now)."""
    response = await page.context.request.get(base_url + "/api/v1/me")
    return response.status


async def log_in_with(page: Page, base_url: str, username: str, password: str) -> ChatPage:
    """Log in through the page with ``password`` and wait for the chat to be ready."""
    await page.goto(base_url + "/login")
    await page.get_by_label("Username").fill(username)
    await page.get_by_label("Password").fill(password)
    await page.get_by_role("button", name="Log in").click()
    await page.wait_for_url("**/chat", timeout=SLOW_MS)
    chat = ChatPage(page, username)
    await chat.wait_ready()
    return chat


async def save_recovery_key(page: Page) -> str:
    """Read the recovery key the open dialog shows, tick "saved" and close it."""
    dialog = page.get_by_role("dialog", name="Your recovery key")
    code = await dialog.locator("#recovery-key").text_content(timeout=SLOW_MS)
    assert code is not None
    await dialog.get_by_label("I have saved my recovery key").check()
    await dialog.get_by_role("button", name="Done").click()
    return code


async def history_with_bob(page: Page, base_url: str, password: str) -> list[str]:
    """alice's conversation with bob as a fresh browser, logged in with ``password``, shows it."""
    chat = await log_in_with(page, base_url, "alice", password)
    await chat.open_conversation("bob")
    await expect(chat.messages).to_have_count(2, timeout=WAIT_MS)
    return await chat.texts()


async def exchange(chat: ChatPage, bob: SecureChatClient) -> None:
    """alice writes to bob in the page, and bob answers from Python: a history of two."""
    await chat.start_conversation("bob")
    await chat.send("before, from alice")
    await expect(chat.messages.last).to_have_attribute("data-status", "sent", timeout=WAIT_MS)
    bob_chat = await bob.connect()
    await bob_chat.send_message("alice", "before, from bob")
    await expect(chat.messages).to_have_count(2, timeout=WAIT_MS)


async def test_password_change_then_login_elsewhere_reads_history(
    new_context: NewContext,
    live_server: LiveServer,
    make_client: MakeClient,
    identities: list[e2e.Identity],
) -> None:
    """alice changes her password in settings; another browser logs in with the new one and
    reads the history from before, and her other session has ended."""
    await register(make_client, identities[0], "alice")  # a session of the Python client
    bob = await register(make_client, identities[1], "bob")
    other = await log_in_with(
        await (await new_context()).new_page(), live_server.url, "alice", PASSWORD
    )
    chat = await log_in_with(
        await (await new_context()).new_page(), live_server.url, "alice", PASSWORD
    )
    await exchange(chat, bob)

    page = chat.page
    await page.goto(live_server.url + "/settings")
    await page.get_by_label("Current password").fill(PASSWORD)
    await page.get_by_label("New password", exact=True).fill(NEW_PASSWORD)
    await page.get_by_label("Repeat new password").fill(NEW_PASSWORD)
    await page.get_by_role("button", name="Change password").click()
    await expect(page.locator("#toast-status")).to_contain_text(
        "Password changed. 2 other sessions were logged out.", timeout=SLOW_MS
    )
    assert await me_status(other.page, live_server.url) == 401
    assert await me_status(page, live_server.url) == 200

    fresh = await (await new_context()).new_page()
    texts = await history_with_bob(fresh, live_server.url, NEW_PASSWORD)
    assert texts == ["before, from alice", "before, from bob"]


async def test_a_wrong_current_password_is_said_under_its_field(
    new_context: NewContext,
    live_server: LiveServer,
    make_client: MakeClient,
    identities: list[e2e.Identity],
) -> None:
    """A mistyped current password: told under the field, nothing changes."""
    await register(make_client, identities[0], "alice")
    chat = await log_in_with(
        await (await new_context()).new_page(), live_server.url, "alice", PASSWORD
    )
    page = chat.page
    await page.goto(live_server.url + "/settings")
    await page.get_by_label("Current password").fill("not the password at all")
    await page.get_by_label("New password", exact=True).fill(NEW_PASSWORD)
    await page.get_by_label("Repeat new password").fill(NEW_PASSWORD)
    await page.get_by_role("button", name="Change password").click()
    await expect(page.locator("#current-password-error")).to_have_text(
        "Wrong password.", timeout=SLOW_MS
    )
    await make_client().login("alice", PASSWORD)


async def test_recovery_key_from_sign_up_recovers_a_forgotten_password_with_history(
    new_context: NewContext,
    live_server: LiveServer,
    make_client: MakeClient,
    identities: list[e2e.Identity],
) -> None:
    """alice saves the recovery key sign-up offers; having forgotten her password, she sets a
    new one with it in another browser and reads her history; the new key it shows works
    from the Python client too (the two derive alike)."""
    bob = await register(make_client, identities[1], "bob")
    page = await (await new_context()).new_page()
    await fill_sign_up(page, live_server.url, "alice", PASSWORD)
    code = await save_recovery_key(page)
    await page.wait_for_url("**/chat", timeout=SLOW_MS)
    chat = ChatPage(page, "alice")
    await chat.wait_ready()
    await exchange(chat, bob)

    forgot = await (await new_context()).new_page()
    await forgot.goto(live_server.url + "/login")
    await forgot.get_by_role("link", name="Use your recovery key").click()
    await forgot.get_by_label("Username").fill("alice")
    await forgot.get_by_label("Recovery key").fill(code.lower().replace("-", " "))
    await forgot.get_by_label("New password", exact=True).fill(NEW_PASSWORD)
    await forgot.get_by_label("Repeat new password").fill(NEW_PASSWORD)
    await forgot.get_by_role("button", name="Set new password").click()
    new_code = await save_recovery_key(forgot)
    assert new_code != code
    await forgot.wait_for_url("**/chat", timeout=SLOW_MS)
    assert await me_status(page, live_server.url) == 401  # every session of the account ended

    texts = await history_with_bob(
        await (await new_context()).new_page(), live_server.url, NEW_PASSWORD
    )
    assert texts == ["before, from alice", "before, from bob"]
    client = make_client()
    await recover(client, "alice", new_code, PASSWORD, iterations=FAST_ITERATIONS)
    await client.login("alice", PASSWORD)


async def test_a_used_recovery_key_is_refused_in_the_page(
    new_context: NewContext,
    live_server: LiveServer,
    make_client: MakeClient,
    identities: list[e2e.Identity],
) -> None:
    """The recovery key used once says so when typed again."""
    from securechat.client import set_recovery_key

    alice = await register(make_client, identities[0], "alice")
    code = await set_recovery_key(alice, PASSWORD)
    await recover(make_client(), "alice", code, NEW_PASSWORD, iterations=FAST_ITERATIONS)
    page = await (await new_context()).new_page()
    await page.goto(live_server.url + "/recover")
    await page.get_by_label("Username").fill("alice")
    await page.get_by_label("Recovery key").fill(code)
    await page.get_by_label("New password", exact=True).fill(PASSWORD)
    await page.get_by_label("Repeat new password").fill(PASSWORD)
    await page.get_by_role("button", name="Set new password").click()
    await expect(page.locator("#recovery-key-input-error")).to_contain_text(
        "already used", timeout=SLOW_MS
    )


async def test_key_reset_shows_the_contact_the_key_change_warning(
    new_context: NewContext,
    live_server: LiveServer,
    make_client: MakeClient,
    identities: list[e2e.Identity],
) -> None:
    """alice resets her keys in settings (confirming first); bob's page warns that her keys
    changed; alice's page holds the new keys."""
    await register(make_client, identities[0], "alice")
    await register(make_client, identities[1], "bob")
    bob = await log_in_with(
        await (await new_context()).new_page(), live_server.url, "bob", PASSWORD
    )
    await bob.start_conversation("alice")
    await bob.send("before the reset")
    await expect(bob.messages.last).to_have_attribute("data-status", "sent", timeout=WAIT_MS)

    alice = await log_in_with(
        await (await new_context()).new_page(), live_server.url, "alice", PASSWORD
    )
    page = alice.page
    await page.goto(live_server.url + "/settings")
    old_print = await page.locator("#fingerprint-sign").text_content(timeout=WAIT_MS)
    await page.locator("#reset-password").fill(PASSWORD)
    await page.get_by_role("button", name="Reset my keys").click()
    dialog = page.get_by_role("dialog", name="Reset your keys?")
    await dialog.get_by_role("button", name="Reset my keys").click()
    await expect(page.locator("#toast-status")).to_contain_text(
        "Your keys were reset", timeout=SLOW_MS
    )
    await expect(page.locator("#fingerprint-sign")).not_to_have_text(old_print or "")

    await bob.page.reload()
    await bob.wait_ready()
    await bob.open_conversation("alice")
    notice = bob.page.locator("#messages .thread-notice")
    await expect(notice).to_contain_text("alice's security keys changed", timeout=WAIT_MS)


async def test_settings_asks_before_logging_out_other_sessions_and_shows_the_directory_key(
    new_context: NewContext,
    live_server: LiveServer,
    make_client: MakeClient,
    identities: list[e2e.Identity],
) -> None:
    """ "Log out other sessions" asks first (Cancel keeps them); the directory key's fingerprint
    is the one the server prints."""
    await register(make_client, identities[0], "alice")
    other = await log_in_with(
        await (await new_context()).new_page(), live_server.url, "alice", PASSWORD
    )
    chat = await log_in_with(
        await (await new_context()).new_page(), live_server.url, "alice", PASSWORD
    )
    page = chat.page
    await page.goto(live_server.url + "/settings")
    directory = live_server.app.extensions["securechat"].directory
    await expect(page.locator("#directory-served")).to_have_text(directory.fingerprint)
    await expect(page.locator("#directory-pinned")).to_have_text(directory.fingerprint)

    revoke = page.get_by_role("button", name="Log out other sessions")
    await expect(revoke).to_be_enabled(timeout=WAIT_MS)
    await revoke.click()
    dialog = page.get_by_role("dialog", name="Log out other sessions?")
    await dialog.get_by_role("button", name="Cancel").click()
    await expect(dialog).to_be_hidden()
    assert await me_status(other.page, live_server.url) == 200
    await revoke.click()
    await dialog.get_by_role("button", name="Log out other sessions").click()
    await expect(page.locator("#toast-status")).to_contain_text("Logged out 2 other sessions")
    assert await me_status(other.page, live_server.url) == 401


async def test_keys_withdrawn_by_the_operator_are_reset_from_settings(
    new_context: NewContext,
    live_server: LiveServer,
    make_client: MakeClient,
    identities: list[e2e.Identity],
) -> None:
    """After the operator's reset-keys, logging in lands on the settings' key reset; the reset
    publishes new keys that bob can write to, and that this page now holds."""
    await register(make_client, identities[0], "alice")
    bob = await register(make_client, identities[1], "bob")
    lifecycle = live_server.app.extensions["securechat"].store.lifecycle
    live_server.run_in_server_loop(lifecycle.withdraw_keys("alice", 2**40))
    page = await (await new_context()).new_page()
    await page.goto(live_server.url + "/login")
    await page.get_by_label("Username").fill("alice")
    await page.get_by_label("Password").fill(PASSWORD)
    await page.get_by_role("button", name="Log in").click()
    await page.wait_for_url("**/settings?keys=withdrawn*", timeout=SLOW_MS)
    with pytest.raises(Exception, match="withdrawn"):
        await bob.fetch_verified_keys("alice")
    await page.locator("#reset-password").fill(PASSWORD)
    await page.get_by_role("button", name="Reset my keys").click()
    await (
        page.get_by_role("dialog", name="Reset your keys?")
        .get_by_role("button", name="Reset my keys")
        .click()
    )
    await expect(page.locator("#toast-status")).to_contain_text(
        "Your keys were reset", timeout=SLOW_MS
    )
    keys = await bob.fetch_verified_keys("alice")
    fingerprint = await page.locator("#fingerprint-enc").text_content()
    assert fingerprint is not None
    assert fingerprint.replace(" ", "") == e2e.fingerprint(keys.enc_public_key)


async def test_a_recovery_key_made_in_settings_works_and_cancel_keeps_it(
    new_context: NewContext,
    live_server: LiveServer,
    make_client: MakeClient,
    identities: list[e2e.Identity],
) -> None:
    """Settings says there is no recovery key, makes one with the password, and a second
    attempt cancelled keeps the first, which then recovers the account."""
    await register(make_client, identities[0], "alice")
    chat = await log_in_with(
        await (await new_context()).new_page(), live_server.url, "alice", PASSWORD
    )
    page = chat.page
    await page.goto(live_server.url + "/settings")
    status = page.locator("#recovery-status")
    await expect(status).to_have_attribute("data-state", "none", timeout=WAIT_MS)
    create = page.get_by_role("button", name="Create a new recovery key")
    await page.locator("#recovery-password").fill(PASSWORD)
    await create.click()
    code = await save_recovery_key(page)
    await expect(status).to_have_attribute("data-state", "set", timeout=WAIT_MS)

    await page.locator("#recovery-password").fill(PASSWORD)
    await create.click()
    dialog = page.get_by_role("dialog", name="Your recovery key")
    await dialog.get_by_role("button", name="Cancel: keep my current key").click(timeout=SLOW_MS)
    await expect(dialog).to_be_hidden()
    client = make_client()
    await recover(client, "alice", code, NEW_PASSWORD, iterations=FAST_ITERATIONS)
    await client.login("alice", NEW_PASSWORD)
