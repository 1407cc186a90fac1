"""The chat page's newcomer findings (issue 12), each in real Chromium against a real server.

Presence, the connection toasts, an ended session, logging out, the order and previews of the
conversation list, the phone layout, links, copying and the composer's limit.
"""

from __future__ import annotations

import re
from pathlib import Path

import pytest
from playwright.async_api import Browser, expect

from securechat import e2e
from securechat.client import SecureChatClient
from tests.browser_helpers import WAIT_MS, ChatPage, register
from tests.chat.test_chat_browser import (  # noqa: F401 (fixtures)
    NewContext,
    _alice,
    _bob,
    _new_context,
    drop_sockets,
)
from tests.conftest import FAST_ITERATIONS, MakeClient, fast_config
from tests.livesrv import LiveServer
from tests.web.test_pages_browser import HAS_STORED_KEYS, PASSWORD, SLOW_MS

pytestmark = pytest.mark.browser

# A message the server has stored: sent, and perhaps already delivered or read.
STORED = re.compile("sent|delivered|read")
# RFC 6455 7.4.1: the server closes with 1008 for policy; the page does not retry on its own.
POLICY = 1008

CHAT_CACHE_COUNT = """
(owner) => new Promise((resolve, reject) => {
  const opening = indexedDB.open("securechat-chat");
  opening.onerror = () => reject(opening.error);
  opening.onsuccess = () => {
    const db = opening.result;
    if (!db.objectStoreNames.contains("messages")) { db.close(); resolve(0); return; }
    const range = IDBKeyRange.bound([owner], [owner, []]);
    const counting = db.transaction("messages").objectStore("messages").count(range);
    counting.onsuccess = () => { db.close(); resolve(counting.result); };
  };
})
"""


@pytest.fixture(name="carol")
async def _carol(make_client: MakeClient, identities: list[e2e.Identity]) -> SecureChatClient:
    return await register(make_client, identities[2], "carol")


async def test_new_contacts_presence_shows_for_the_sender(
    new_context: NewContext, live_server: LiveServer, alice: SecureChatClient, bob: SecureChatClient
) -> None:
    """Alice writes to bob, who is online, for the first time: once he accepts her request
    (presence passes between contacts only), she sees him online, no reload."""
    await ChatPage.open(await new_context(), live_server.url, "bob")
    chat = await ChatPage.open(await new_context(), live_server.url, "alice")
    await chat.start_conversation("bob")
    await chat.send("hello")
    await expect(chat.messages.last).to_have_attribute("data-status", STORED, timeout=WAIT_MS)
    await bob.contact("alice", "accept")
    await expect(chat.page.locator("#thread-presence")).to_have_text("Online", timeout=WAIT_MS)
    await expect(chat.conversation("bob").locator(".presence-dot--online")).to_have_count(1)


async def test_offline_toast_goes_when_the_socket_is_back(
    new_context: NewContext, live_server: LiveServer, alice: SecureChatClient, bob: SecureChatClient
) -> None:
    """ "You're offline" and "closed by the server" leave once the socket is back online."""
    chat = await ChatPage.open(await new_context(), live_server.url, "alice")
    await chat.start_conversation("bob")
    drop_sockets(live_server, "alice", POLICY)
    await expect(chat.page.locator("#connection")).to_have_attribute("data-state", "closed")
    await chat.send("written while offline")
    offline = chat.page.get_by_role("alert").filter(has_text="You're offline")
    await expect(offline).to_have_count(1)
    await chat.page.get_by_role("button", name="Reconnect").click()
    await expect(chat.page.locator("#connection")).to_have_attribute(
        "data-state", "online", timeout=WAIT_MS
    )
    await expect(chat.messages.last).to_have_attribute("data-status", STORED, timeout=WAIT_MS)
    await expect(offline).to_have_count(0)
    await expect(
        chat.page.get_by_role("alert").filter(has_text="closed by the server")
    ).to_have_count(0)


async def test_sending_pops_up_nothing(
    new_context: NewContext, live_server: LiveServer, alice: SecureChatClient, bob: SecureChatClient
) -> None:
    """A message sent shows its tick and no "Message sent" toast over the header."""
    chat = await ChatPage.open(await new_context(), live_server.url, "alice")
    await chat.start_conversation("bob")
    await chat.send("hello bob")
    await expect(chat.messages.last).to_have_attribute("data-status", STORED, timeout=WAIT_MS)
    await expect(chat.page.locator("#toasts .toast")).to_have_count(0)


async def test_ended_session_clears_the_page_and_goes_to_log_in(
    new_context: NewContext, live_server: LiveServer, alice: SecureChatClient, bob: SecureChatClient
) -> None:
    """Alice's session ended elsewhere: her page drops the conversation, goes to the log-in page
    and says why; going back does not bring the decrypted thread back."""
    context = await new_context()
    chat = await ChatPage.open(context, live_server.url, "alice")
    await chat.start_conversation("bob")
    await chat.send("a secret for bob")
    await expect(chat.messages.last).to_have_attribute("data-status", STORED, timeout=WAIT_MS)
    await alice.call("POST", "/api/v1/sessions/revoke-others", {})
    await chat.page.wait_for_url("**/login?ended=1", timeout=WAIT_MS)
    await expect(chat.page.get_by_role("status").filter(has_text="session ended")).to_be_visible()
    await chat.page.go_back()
    await expect(chat.page.get_by_text("a secret for bob")).to_have_count(0)


async def test_log_out_can_forget_this_device(
    new_context: NewContext, live_server: LiveServer, alice: SecureChatClient, bob: SecureChatClient
) -> None:
    """Log out asks; on a device marked shared, forgetting keys and messages is already chosen,
    and logging out removes both from this browser."""
    context = await new_context()
    page = await context.new_page()
    await page.goto(live_server.url + "/login")
    await page.get_by_label("Username").fill("alice")
    await page.get_by_label("Password").fill(PASSWORD)
    await page.get_by_label("This is a shared or public computer").check()
    await page.get_by_role("button", name="Log in").click()
    await page.wait_for_url("**/chat", timeout=SLOW_MS)
    chat = ChatPage(page, "alice")
    await chat.wait_ready()
    await chat.start_conversation("bob")
    await chat.send("kept here until I leave")
    await expect(chat.messages.last).to_have_attribute("data-status", STORED, timeout=WAIT_MS)
    assert await page.evaluate(CHAT_CACHE_COUNT, "alice") >= 1

    await page.get_by_role("button", name="Log out", exact=True).click()
    dialog = page.get_by_role("dialog", name="Log out")
    forget = dialog.get_by_role("checkbox", name="Forget this device's keys and messages")
    await expect(forget).to_be_checked()
    await dialog.get_by_role("button", name="Log out").click()
    await page.wait_for_url("**/login")
    assert await page.evaluate(HAS_STORED_KEYS, "alice") is False
    assert await page.evaluate(CHAT_CACHE_COUNT, "alice") == 0


async def test_log_out_keeps_keys_on_a_personal_device(
    new_context: NewContext, live_server: LiveServer, alice: SecureChatClient
) -> None:
    """On a device not marked shared, Log out leaves "forget" unchecked and keeps the keys."""
    chat = await ChatPage.open(await new_context(), live_server.url, "alice")
    await chat.page.get_by_role("button", name="Log out", exact=True).click()
    dialog = chat.page.get_by_role("dialog", name="Log out")
    await expect(
        dialog.get_by_role("checkbox", name="Forget this device's keys and messages")
    ).not_to_be_checked()
    await dialog.get_by_role("button", name="Log out").click()
    await chat.page.wait_for_url("**/login")
    assert await chat.page.evaluate(HAS_STORED_KEYS, "alice") is True


async def test_conversation_started_by_someone_else_goes_on_top(
    new_context: NewContext,
    live_server: LiveServer,
    alice: SecureChatClient,
    bob: SecureChatClient,
    carol: SecureChatClient,
) -> None:
    """Carol writes to alice for the first time: her conversation lands above the older one."""
    chat = await ChatPage.open(await new_context(), live_server.url, "alice")
    await chat.start_conversation("bob")
    await chat.send("an older conversation")
    await expect(chat.messages.last).to_have_attribute("data-status", STORED, timeout=WAIT_MS)
    connection = await carol.connect()
    try:
        await connection.send_message("alice", "hi alice, it is carol")
    finally:
        await connection.close()
    entries = chat.page.locator("#conversation-list button[data-peer]")
    await expect(entries).to_have_count(2, timeout=WAIT_MS)
    await expect(entries.first).to_have_attribute("data-peer", "carol")


async def test_new_device_shows_previews_and_times(
    new_context: NewContext, live_server: LiveServer, alice: SecureChatClient, bob: SecureChatClient
) -> None:
    """Bob's first page anywhere lists alice's conversation with its last message and time."""
    connection = await alice.connect()
    try:
        await connection.send_message("bob", "see you at noon")
    finally:
        await connection.close()
    chat = await ChatPage.open(await new_context(), live_server.url, "bob")
    entry = chat.conversation("alice")
    await expect(entry.locator(".conv__preview")).to_have_text("see you at noon", timeout=WAIT_MS)
    await expect(entry.locator(".conv__time")).to_be_visible()


async def test_phone_thread_uses_the_whole_screen(
    new_context: NewContext, live_server: LiveServer, alice: SecureChatClient, bob: SecureChatClient
) -> None:
    """On a 390x740 phone an open thread hides the site's header and footer and fills the height;
    the safety number is an icon button that keeps its name."""
    context = await new_context(viewport={"width": 390, "height": 740})
    chat = await ChatPage.open(context, live_server.url, "alice")
    await chat.start_conversation("bob")
    await expect(chat.page.locator(".site-header")).to_be_hidden()
    await expect(chat.page.locator(".site-footer")).to_be_hidden()
    box = await chat.page.locator("#thread").bounding_box()
    assert box is not None
    assert box["y"] <= 1
    assert box["height"] >= 730  # 740 less borders (411 with the site's header and footer)
    button = chat.page.get_by_role("button", name="Safety number")
    await expect(button).to_be_visible()
    label = await button.bounding_box()
    assert label is not None
    assert label["width"] <= 48
    await chat.page.get_by_role("button", name="Back to conversations").click()
    await expect(chat.page.locator(".site-header")).to_be_visible()


async def test_links_open_only_http_and_show_the_whole_address(
    new_context: NewContext, live_server: LiveServer, alice: SecureChatClient, bob: SecureChatClient
) -> None:
    """Addresses in a message become links (http and https only, the full address as the
    text, rel="noopener noreferrer"); anything else stays text."""
    connection = await bob.connect()
    try:
        await connection.send_message(
            "alice",
            "plan at https://example.org/a?b=c&d=e, (see http://x.test/f(g)) "
            "not javascript:alert(1) nor data:text/html,hi or ftp://x.test/",
        )
    finally:
        await connection.close()
    chat = await ChatPage.open(await new_context(), live_server.url, "alice")
    await chat.open_conversation("bob")
    links = chat.messages.last.locator(".msg__text a")
    await expect(links).to_have_count(2, timeout=WAIT_MS)
    assert await links.all_text_contents() == [
        "https://example.org/a?b=c&d=e",
        "http://x.test/f(g)",
    ]
    assert [await link.get_attribute("href") for link in await links.all()] == [
        "https://example.org/a?b=c&d=e",
        "http://x.test/f(g)",
    ]
    for link in await links.all():
        assert await link.get_attribute("rel") == "noopener noreferrer"
    await expect(chat.messages.last.locator(".msg__text")).to_contain_text("javascript:alert(1)")


async def test_copy_puts_the_message_on_the_clipboard(
    new_context: NewContext, live_server: LiveServer, alice: SecureChatClient, bob: SecureChatClient
) -> None:
    """ "Copy" on a message puts exactly its text on the clipboard."""
    context = await new_context(permissions=["clipboard-read", "clipboard-write"])
    chat = await ChatPage.open(context, live_server.url, "alice")
    await chat.start_conversation("bob")
    await chat.send("copy me\nwith a second line")
    await chat.messages.last.get_by_role("button", name="Copy").click()
    await expect(chat.messages.last.get_by_role("button", name="Copied")).to_be_visible()
    assert await chat.page.evaluate("navigator.clipboard.readText()") == (
        "copy me\nwith a second line"
    )


async def test_composer_counts_near_the_limit_and_never_cuts(
    new_context: NewContext, live_server: LiveServer, alice: SecureChatClient, bob: SecureChatClient
) -> None:
    """Near 10,000 characters a counter shows; past it the text is kept whole, the page says
    how much too long it is, and Enter sends nothing until it is shortened."""
    chat = await ChatPage.open(await new_context(), live_server.url, "alice")
    await chat.start_conversation("bob")
    counter = chat.page.locator("#composer-count")
    await chat.composer.fill("x" * 100)
    await expect(counter).to_be_hidden()
    await chat.composer.fill("x" * 9_500)
    await expect(counter).to_have_text("9,500 / 10,000 characters")
    await chat.composer.fill("y" * 10_050)
    await expect(counter).to_contain_text("50 characters too long to send")
    assert await chat.composer.evaluate("(field) => field.value.length") == 10_050
    await chat.composer.press("Enter")
    await expect(chat.messages).to_have_count(0)
    assert await chat.composer.evaluate("(field) => field.value.length") == 10_050
    await chat.composer.press("Backspace")
    await chat.composer.fill("y" * 10_000)
    await chat.composer.press("Enter")
    await expect(chat.messages.last).to_have_attribute("data-status", STORED, timeout=WAIT_MS)


async def test_a_vanished_contact_stops_showing_online(
    browser: Browser, tmp_path: Path, identities: list[e2e.Identity]
) -> None:
    """Bob's socket goes silent without closing (a closed laptop): within the server's idle
    window (3 s here) alice's page shows him offline, while her own page, pinging within that
    window, stays connected."""
    config = fast_config(tmp_path / "data", ws_idle_timeout=3.0)
    with LiveServer(config).start() as server:
        async with (
            SecureChatClient(server.url, min_iterations=FAST_ITERATIONS) as alice,
            SecureChatClient(server.url, min_iterations=FAST_ITERATIONS) as bob,
        ):
            for client, name, identity in (
                (alice, "alice", identities[0]),
                (bob, "bob", identities[1]),
            ):
                await client.register(
                    name, PASSWORD, iterations=e2e.MIN_ITERATIONS, identity=identity
                )
                await client.login(name, PASSWORD)
            context = await browser.new_context()
            try:
                chat = await ChatPage.open(context, server.url, "alice")
                await chat.start_conversation("bob")
                await chat.send("are you there?")
                await expect(chat.messages.last).to_have_attribute(
                    "data-status", STORED, timeout=WAIT_MS
                )
                silent = await bob.connect()  # and then says nothing, as a vanished peer
                await silent.send_message("alice", "yes")
                presence = chat.page.locator("#thread-presence")
                await expect(presence).to_have_text("Online", timeout=WAIT_MS)
                await expect(presence).to_have_text("Offline", timeout=WAIT_MS)
                await expect(chat.page.locator("#connection")).to_have_attribute(
                    "data-state", "online"
                )
                await silent.close()
            finally:
                await context.close()
