"""Message actions in real Chromium (issue 12 item 8): delete for me, delete for everyone, reply.

Alice and bob each in their own browser context (own cookies and IndexedDB) against a real
server; bob is the Python client where a test needs no page of his.
"""

from __future__ import annotations

import re
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any

import pytest
from playwright.async_api import Browser, BrowserContext, expect

from securechat import e2e
from securechat.client import SecureChatClient
from tests.browser_helpers import WAIT_MS, ChatPage, register
from tests.conftest import MakeClient
from tests.livesrv import LiveServer

pytestmark = pytest.mark.browser

NewContext = Callable[..., Awaitable[BrowserContext]]


@pytest.fixture(name="new_context")
async def _new_context(browser: Browser, live_server: LiveServer) -> AsyncIterator[NewContext]:
    """Fresh browser contexts, closed after the test and before the server stops."""
    contexts: list[BrowserContext] = []

    async def new_context(**options: Any) -> BrowserContext:
        context = await browser.new_context(**options)
        contexts.append(context)
        return context

    yield new_context
    for context in contexts:
        await context.close()


@pytest.fixture(name="alice")
async def _alice(make_client: MakeClient, identities: list[e2e.Identity]) -> SecureChatClient:
    return await register(make_client, identities[0], "alice")


@pytest.fixture(name="bob")
async def _bob(make_client: MakeClient, identities: list[e2e.Identity]) -> SecureChatClient:
    return await register(make_client, identities[1], "bob")


async def delete(chat: ChatPage, text: str, choice: str) -> None:
    """Choose Delete on the message showing ``text``, then ``choice``."""
    message = chat.messages.filter(has_text=text)
    await message.get_by_role("button", name="Delete", exact=True).click()
    await message.get_by_role("button", name=choice, exact=True).click()


async def test_delete_for_everyone_removes_it_on_both_sides(
    new_context: NewContext, live_server: LiveServer, alice: SecureChatClient, bob: SecureChatClient
) -> None:
    """Alice deletes her message for everyone: it leaves her page, bob's open page, and the
    cache of bob's page that was closed meanwhile (it syncs the tombstone on return)."""
    sender = await ChatPage.open(await new_context(), live_server.url, "alice")
    bob_browser = await new_context()
    reader = await ChatPage.open(bob_browser, live_server.url, "bob")
    await sender.start_conversation("bob")
    for text in ["live oops", "cached oops", "kept"]:
        await sender.send(text)
    await expect(
        sender.page.locator('#messages li.msg:not([data-status="sending"])')
    ).to_have_count(3, timeout=WAIT_MS)
    await reader.open_conversation("alice")
    await expect(reader.messages).to_have_count(3, timeout=WAIT_MS)

    await delete(sender, "live oops", "Delete for everyone")
    await expect(sender.messages).to_have_count(2, timeout=WAIT_MS)
    await expect(reader.messages).to_have_count(2, timeout=WAIT_MS)
    assert await reader.texts() == ["cached oops", "kept"]

    await reader.page.close()  # bob's device goes offline, the message in its cache
    await delete(sender, "cached oops", "Delete for everyone")
    await expect(sender.messages).to_have_count(1, timeout=WAIT_MS)
    back = ChatPage(await bob_browser.new_page(), "bob")
    await back.page.goto(live_server.url + "/chat")
    await back.wait_ready()
    await back.open_conversation("alice")
    await expect(back.messages).to_have_count(1, timeout=WAIT_MS)
    assert await back.texts() == ["kept"]
    assert await sender.texts() == ["kept"]

    # The last one too: no trace of it in either conversation list's preview.
    await expect(back.conversation("alice")).to_contain_text("kept")
    await delete(sender, "kept", "Delete for everyone")
    await expect(sender.messages).to_have_count(0, timeout=WAIT_MS)
    await expect(back.messages).to_have_count(0, timeout=WAIT_MS)
    await expect(sender.conversation("bob")).not_to_contain_text("kept")
    await expect(back.conversation("alice")).not_to_contain_text("kept")


async def test_delete_for_me_stays_gone_after_a_reload(
    new_context: NewContext, live_server: LiveServer, alice: SecureChatClient, bob: SecureChatClient
) -> None:
    """A message deleted for me leaves the page and the cache, and the server's history does
    not bring it back after a reload; bob's copy is untouched."""
    bob_chat = await bob.connect()
    for text in ["forget me", "keep me"]:
        await bob_chat.send_message("alice", text)
    chat = await ChatPage.open(await new_context(), live_server.url, "alice")
    await chat.open_conversation("bob")
    await expect(chat.messages).to_have_count(2, timeout=WAIT_MS)
    message = chat.messages.filter(has_text="forget me")
    await message.get_by_role("button", name="Delete", exact=True).click()
    # Only my own message can be deleted for everyone.
    await expect(message.get_by_role("button", name="Delete for everyone")).to_have_count(0)
    await message.get_by_role("button", name="Delete for me", exact=True).click()
    await expect(chat.messages).to_have_count(1)

    await chat.page.reload()
    await chat.wait_ready()
    await chat.open_conversation("bob")
    await expect(chat.messages.filter(has_text="keep me")).to_have_count(1, timeout=WAIT_MS)
    assert await chat.texts() == ["keep me"]
    page = await bob.call("GET", "/api/v1/messages?with=alice")
    assert len(page["messages"]) == 2  # the server was not told


async def test_only_the_senders_tombstone_takes_a_message_back(
    new_context: NewContext,
    live_server: LiveServer,
    make_client: MakeClient,
    identities: list[e2e.Identity],
    alice: SecureChatClient,
    bob: SecureChatClient,
) -> None:
    """A tombstone from carol naming bob's message changes nothing on alice's page; bob's
    own (after his delete) removes it there."""
    carol = await register(make_client, identities[2], "carol")
    bob_chat = await bob.connect()
    target = await bob_chat.send_message("alice", "from bob")
    chat = await ChatPage.open(await new_context(), live_server.url, "alice")
    await chat.open_conversation("bob")
    await expect(chat.messages).to_have_count(1, timeout=WAIT_MS)

    carol_chat = await carol.connect()
    await carol_chat.send_tombstone("alice", target["id"])
    # Frames are handled in order: once this shows, carol's tombstone has been dealt with.
    await bob_chat.send_message("alice", "after carol")
    await expect(chat.messages).to_have_count(2, timeout=WAIT_MS)
    await chat.page.reload()  # what the cache holds, not only what the screen showed
    await chat.wait_ready()
    await chat.open_conversation("bob")
    await expect(chat.messages).to_have_count(2, timeout=WAIT_MS)
    assert await chat.texts() == ["from bob", "after carol"]

    await bob_chat.delete(target["id"])
    await bob_chat.send_tombstone("alice", target["id"])
    await expect(chat.messages).to_have_count(1, timeout=WAIT_MS)
    assert await chat.texts() == ["after carol"]


async def test_a_reply_shows_its_quote_on_both_sides(
    new_context: NewContext, live_server: LiveServer, alice: SecureChatClient, bob: SecureChatClient
) -> None:
    """Alice replies to bob's message: both pages show the quote above her answer, and a
    click on the quote brings the original into view."""
    sender = await ChatPage.open(await new_context(), live_server.url, "alice")
    reader = await ChatPage.open(await new_context(), live_server.url, "bob")
    await reader.start_conversation("alice")
    await reader.send("Lunch at noon?")
    await sender.open_conversation("bob")
    question = sender.messages.filter(has_text="Lunch at noon?")
    await question.get_by_role("button", name="Reply", exact=True).click()
    await expect(sender.page.locator(".composer__reply")).to_contain_text("Lunch at noon?")
    await sender.send("Yes, see you there")
    await expect(sender.page.locator(".composer__reply")).to_have_count(0)

    for chat in (sender, reader):
        answer = chat.messages.filter(has_text="Yes, see you there")
        quote = answer.locator(".msg__quote")
        await expect(quote).to_contain_text("bob", timeout=WAIT_MS)
        await expect(quote).to_contain_text("Lunch at noon?")
        await quote.click()
        original = chat.messages.filter(has_text="Lunch at noon?").first
        await expect(original).to_have_class(re.compile(r"\bmsg--found\b"))


async def test_a_tombstone_naming_my_message_leaves_it_on_screen(
    new_context: NewContext, live_server: LiveServer, alice: SecureChatClient, bob: SecureChatClient
) -> None:
    """Bob's tombstone naming alice's own message, while she has the thread open, is ignored:
    her message stays on screen and in the cache."""
    mine = await (await alice.connect()).send_message("bob", "my own words")
    chat = await ChatPage.open(await new_context(), live_server.url, "alice")
    await chat.open_conversation("bob")
    await expect(chat.messages).to_have_count(1, timeout=WAIT_MS)

    bob_chat = await bob.connect()
    await bob_chat.send_tombstone("alice", mine["id"])
    # Frames are handled in order: once this shows, bob's tombstone has been dealt with.
    await bob_chat.send_message("alice", "after bob")
    await expect(chat.messages.filter(has_text="after bob")).to_have_count(1, timeout=WAIT_MS)
    assert await chat.texts() == ["my own words", "after bob"]
    await chat.page.reload()
    await chat.wait_ready()
    await chat.open_conversation("bob")
    await expect(chat.messages).to_have_count(2, timeout=WAIT_MS)
    assert await chat.texts() == ["my own words", "after bob"]


async def send_reply(
    client: SecureChatClient, to: str, text: str, reply: dict[str, str]
) -> dict[str, Any]:
    """Send ``text`` whose encrypted body quotes ``reply`` ({id, from, snippet}) as it likes."""
    chat = await client.connect()
    message_id = str(uuid.uuid4())
    envelope = await chat.seal(to, text, message_id, extra={"reply": reply})
    await chat.send_frame({"type": "send", "id": message_id, "to": to, "envelope": envelope})
    return await chat.wait_ack(message_id)


async def test_a_reply_cannot_put_words_in_someone_elses_mouth(
    new_context: NewContext, live_server: LiveServer, alice: SecureChatClient, bob: SecureChatClient
) -> None:
    """The quote in a reply is the replier's say-so: a quote of a message kept here shows its
    real author and words; one of a message not here shows as quoted by the replier, never
    under the author it claims."""
    mine = await (await alice.connect()).send_message("bob", "the real words")
    await send_reply(
        bob, "alice", "forged known", {"id": mine["id"], "from": "carol", "snippet": "lies"}
    )
    await send_reply(
        bob,
        "alice",
        "forged unknown",
        {"id": str(uuid.uuid4()), "from": "carol", "snippet": "I owe bob money"},
    )
    chat = await ChatPage.open(await new_context(), live_server.url, "alice")
    await chat.open_conversation("bob")
    await expect(chat.messages).to_have_count(3, timeout=WAIT_MS)

    known = chat.messages.filter(has_text="forged known").locator(".msg__quote")
    await expect(known).to_contain_text("the real words")
    await expect(known.locator(".msg__quote-from")).to_have_text("alice")
    await expect(known).not_to_contain_text("lies")
    unknown = chat.messages.filter(has_text="forged unknown").locator(".msg__quote")
    await expect(unknown).to_contain_text("I owe bob money")
    await expect(unknown.locator(".msg__quote-from")).to_have_text("quoted by bob")
    await expect(unknown).not_to_contain_text("carol")
