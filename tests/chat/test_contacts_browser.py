"""Message requests and the recipient picker in real Chromium (issue 12, items 5 and 6): a
stranger's message waits under "Requests" with Accept, Delete and Block; accepting makes a
contact (presence flows), blocking asks first and then nothing of theirs arrives."""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any

import pytest
from playwright.async_api import Browser, BrowserContext, Dialog, expect

from securechat import e2e
from securechat.client import SecureChatClient
from tests.browser_helpers import WAIT_MS, ChatPage, register
from tests.conftest import MakeClient
from tests.livesrv import LiveServer

pytestmark = pytest.mark.browser

# `from` is a Python keyword, so ChatConnection.wait_for takes it as **FROM_ALICE.
FROM_ALICE: dict[str, Any] = {"from": "alice"}


@pytest.fixture(name="context")
async def _context(browser: Browser, live_server: LiveServer) -> AsyncIterator[BrowserContext]:
    context = await browser.new_context()
    yield context
    await context.close()


@pytest.fixture(name="alice")
async def _alice(make_client: MakeClient, identities: list[e2e.Identity]) -> SecureChatClient:
    return await register(make_client, identities[0], "alice")


@pytest.fixture(name="bob")
async def _bob(make_client: MakeClient, identities: list[e2e.Identity]) -> SecureChatClient:
    return await register(make_client, identities[1], "bob")


def answer_dialogs(chat: ChatPage, answers: list[bool]) -> list[str]:
    """Answer the page's confirmations in turn (True: OK); returns their texts as they come."""
    asked: list[str] = []

    async def handle(dialog: Dialog) -> None:
        asked.append(dialog.message)
        await (dialog.accept() if answers.pop(0) else dialog.dismiss())

    chat.page.on("dialog", handle)
    return asked


async def test_a_request_accepted_becomes_a_conversation(
    context: BrowserContext, live_server: LiveServer, alice: SecureChatClient, bob: SecureChatClient
) -> None:
    """Bob's first message waits under Requests; Accept moves it to the conversations, and bob
    sees alice online from then on."""
    chat = await ChatPage.open(context, live_server.url, "alice")
    bob_chat = await bob.connect()
    await bob_chat.send_message("alice", "hello, stranger")
    requests = chat.page.locator("#requests")
    await expect(requests).to_be_visible(timeout=WAIT_MS)
    await expect(requests.locator('button[data-peer="bob"]')).to_be_visible()
    await expect(chat.page.locator('#conversation-list button[data-peer="bob"]')).to_have_count(0)
    group = chat.page.get_by_role("group", name="Message request from bob")
    await group.get_by_role("button", name="Accept").click()
    await expect(chat.page.locator('#conversation-list button[data-peer="bob"]')).to_be_visible(
        timeout=WAIT_MS
    )
    await expect(requests).to_be_hidden()
    await bob_chat.wait_for("presence", user="alice", status="online")
    assert await alice.contacts() == ["bob"]
    await chat.open_conversation("bob")
    await expect(chat.messages).to_have_count(1, timeout=WAIT_MS)
    assert await chat.texts() == ["hello, stranger"]


async def test_a_request_blocked_asks_first_and_then_hears_nothing(
    context: BrowserContext, live_server: LiveServer, alice: SecureChatClient, bob: SecureChatClient
) -> None:
    """Block asks for confirmation (a dismissed one changes nothing); confirmed, bob's request
    goes, his later messages are acknowledged to him and never shown to alice."""
    chat = await ChatPage.open(context, live_server.url, "alice")
    bob_chat = await bob.connect()
    await bob_chat.send_message("alice", "first")
    group = chat.page.get_by_role("group", name="Message request from bob")
    await expect(group).to_be_visible(timeout=WAIT_MS)
    asked = answer_dialogs(chat, [False, True])
    await group.get_by_role("button", name="Block").click()
    await expect(group).to_be_visible()
    assert asked and asked[0].startswith("Block bob?")
    await group.get_by_role("button", name="Block").click()
    await expect(chat.page.locator("#requests")).to_be_hidden(timeout=WAIT_MS)
    await expect(chat.conversation("bob")).to_have_count(0)
    assert await alice.contacts("blocked") == ["bob"]
    ack = await bob_chat.send_message("alice", "let me in")
    assert ack["type"] == "ack"
    await chat.page.reload()
    await chat.wait_ready()
    await expect(chat.conversation("bob")).to_have_count(0)
    await expect(chat.page.locator("#requests")).to_be_hidden()


async def test_replying_to_a_request_accepts_it(
    context: BrowserContext, live_server: LiveServer, alice: SecureChatClient, bob: SecureChatClient
) -> None:
    """Opening bob's request and answering it moves it to the conversations, on the server too."""
    chat = await ChatPage.open(context, live_server.url, "alice")
    bob_chat = await bob.connect()
    await bob_chat.send_message("alice", "anyone there?")
    await chat.open_conversation("bob")
    await chat.send("yes, hello")
    await expect(chat.page.locator('#conversation-list button[data-peer="bob"]')).to_be_visible(
        timeout=WAIT_MS
    )
    await expect(chat.page.locator("#requests")).to_be_hidden()
    await bob_chat.wait_for("message", **FROM_ALICE)
    assert await alice.requests() == []


async def test_the_picker_offers_my_conversations_on_focus(
    context: BrowserContext, live_server: LiveServer, alice: SecureChatClient, bob: SecureChatClient
) -> None:
    """Focusing the empty search lists the people I write with, before anything is typed."""
    await (await alice.connect()).send_message("bob", "hi bob")
    chat = await ChatPage.open(context, live_server.url, "alice")
    await chat.search.focus()
    await expect(chat.page.get_by_role("option", name="bob", exact=True)).to_be_visible(
        timeout=WAIT_MS
    )
