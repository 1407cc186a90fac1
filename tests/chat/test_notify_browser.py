"""Desktop notifications (static/js/chat/notify.js) in real Chromium, permission granted by the
test's browser context; window.Notification is wrapped by an init script to record what the
page shows and when it asks."""

from __future__ import annotations

from typing import Any

import pytest
from playwright.async_api import Page, expect

from securechat.client import SecureChatClient
from tests.browser_helpers import WAIT_MS, ChatPage
from tests.chat.test_chat_browser import (  # noqa: F401 (fixtures)
    NewContext,
    _alice,
    _bob,
    _new_context,
)
from tests.livesrv import LiveServer

pytestmark = pytest.mark.browser

RECORD_NOTIFICATIONS = """
(() => {
  window.__notes = [];
  window.__asked = 0;
  const Real = window.Notification;
  class Recorded extends Real {
    constructor(title, options = {}) {
      super(title, options);
      window.__notes.push({ title, body: options.body ?? "" });
    }
    static requestPermission(...args) {
      window.__asked += 1;
      return Real.requestPermission(...args);
    }
  }
  window.Notification = Recorded;
})();
"""


async def notes(page: Page) -> list[dict[str, Any]]:
    found: list[dict[str, Any]] = await page.evaluate("window.__notes")
    return found


async def send(client: SecureChatClient, to: str, text: str) -> None:
    connection = await client.connect()
    try:
        await connection.send_message(to, text)
    finally:
        await connection.close()


async def test_notification_names_the_sender_and_keeps_the_text_out(
    new_context: NewContext, live_server: LiveServer, alice: SecureChatClient, bob: SecureChatClient
) -> None:
    """Bob turns notifications on from the button (not asked on load); alice's message shows as a
    notification naming her, without its text, and as a count in the title; none comes while
    her conversation is open and focused."""
    context = await new_context(permissions=["notifications"])
    await context.add_init_script(RECORD_NOTIFICATIONS)
    chat = await ChatPage.open(context, live_server.url, "bob")
    assert await chat.page.evaluate("window.__asked") == 0
    await chat.page.get_by_role("button", name="Turn on notifications").click()
    await expect(chat.page.locator("#notify-state")).to_have_text("Notifications are on.")
    await expect(chat.page.get_by_role("button", name="Turn on notifications")).to_be_hidden()

    await send(alice, "bob", "the secret plan")
    await expect(chat.conversation("alice")).to_be_visible(timeout=WAIT_MS)
    await expect(chat.page).to_have_title("(1) Chat · SecureChat")
    shown = await notes(chat.page)
    assert [note["title"] for note in shown] == ["alice"]
    assert "secret" not in shown[0]["body"]

    await chat.open_conversation("alice")
    await send(alice, "bob", "a second one")
    await expect(chat.messages).to_have_count(2, timeout=WAIT_MS)
    assert len(await notes(chat.page)) == 1


async def test_previews_show_the_text_when_chosen(
    new_context: NewContext, live_server: LiveServer, alice: SecureChatClient, bob: SecureChatClient
) -> None:
    """With "Show message text" chosen, the notification carries the message's words."""
    context = await new_context(permissions=["notifications"])
    await context.add_init_script(RECORD_NOTIFICATIONS)
    chat = await ChatPage.open(context, live_server.url, "bob")
    await chat.page.get_by_role("button", name="Turn on notifications").click()
    await chat.page.get_by_text("Notification options").click()
    await chat.page.get_by_label("Show message text in notifications").check()
    await send(alice, "bob", "lunch at one?")
    await expect(chat.conversation("alice")).to_be_visible(timeout=WAIT_MS)
    await expect(chat.page).to_have_title("(1) Chat · SecureChat")
    assert await notes(chat.page) == [{"title": "alice", "body": "lunch at one?"}]
