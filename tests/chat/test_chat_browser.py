"""The chat page in real Chromium, against a real server: alice and bob in two browser contexts.

Accounts come from Python (tests/browser_helpers.py); everything else is the page's own work:
keys checked in the key directory, messages encrypted and signed in the browser, the WebSocket,
the outbox and the local cache. Bob is sometimes the Python client instead, where a test needs
to do what no honest page would (send a tampered envelope) or needs no page of his.
"""

from __future__ import annotations

import dataclasses
import json
import re
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any

import pytest
from playwright.async_api import Browser, BrowserContext, Request, expect

from securechat import e2e
from securechat.client import SecureChatClient
from tests.browser_helpers import PASSWORD, RECORD_CSP_VIOLATIONS, WAIT_MS, ChatPage, register
from tests.conftest import MakeClient
from tests.livesrv import LiveServer
from tests.web.test_pages_browser import log_out

pytestmark = pytest.mark.browser

NewContext = Callable[..., Awaitable[BrowserContext]]
# `from` is a Python keyword, so ChatConnection.wait_for takes it as **FROM_ALICE.
FROM_ALICE: dict[str, Any] = {"from": "alice"}


@pytest.fixture(name="new_context")
async def _new_context(browser: Browser, live_server: LiveServer) -> AsyncIterator[NewContext]:
    """A factory of fresh browser contexts (own cookies and IndexedDB), closed after the test
    and before the server stops (so no socket is cut mid-way by the shutdown)."""
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


async def test_search_finds_bob(
    new_context: NewContext, live_server: LiveServer, alice: SecureChatClient, bob: SecureChatClient
) -> None:
    """Typing "bo" in the recipient search offers bob; choosing him opens the conversation."""
    chat = await ChatPage.open(await new_context(), live_server.url, "alice")
    await chat.search.fill("bo")
    option = chat.page.get_by_role("option", name="bob", exact=True)
    await expect(option).to_be_visible(timeout=WAIT_MS)
    await expect(chat.search).to_have_attribute("aria-expanded", "true")
    await option.click()
    await expect(chat.page.locator("#thread-title")).to_have_text("bob")
    await expect(chat.composer).to_be_focused()


async def test_long_hostile_message_arrives_live_as_text(
    new_context: NewContext, live_server: LiveServer, alice: SecureChatClient, bob: SecureChatClient
) -> None:
    """A 4,000-character message with emoji and markup arrives live and shows exactly as text."""
    sender = await ChatPage.open(await new_context(), live_server.url, "alice")
    reader = await ChatPage.open(await new_context(), live_server.url, "bob")
    await sender.start_conversation("bob")
    await reader.start_conversation("alice")
    unit = "<script>alert(1)</script> <img src=x onerror=alert(2)> 🔐🙂👩‍💻 &amp; "
    text = (unit * (4000 // len(unit) + 1))[:3990] + "<b>end</b>"
    assert len(text) == 4000
    await sender.send(text)

    shown = reader.messages.last.locator(".msg__text")
    await expect(shown).to_have_text(text, timeout=WAIT_MS)
    assert await shown.text_content() == text
    assert await reader.page.locator("#messages script, #messages img, #messages b").count() == 0
    assert reader.dialogs == sender.dialogs == []


# --- helpers for the tests below ------------------------------------------------------------


def change_keys(server: LiveServer, username: str, identity: e2e.Identity) -> None:
    """Publish new keys for username the way a key reset does: users and key log, one commit."""
    store = server.app.extensions["securechat"].store
    server.run_in_server_loop(
        store.directory.replace_keys(
            username, identity.enc_public_spki, identity.sign_public_spki, "AAAA", 2**40
        )
    )


def drop_sockets(server: LiveServer, username: str, code: int = 1013) -> None:
    """Close every chat socket of username from the server's side (as a slow reader's is)."""
    hub = server.app.extensions["securechat"].chat.hub

    async def drop() -> int:
        return int(hub.close_user(username, code, "test"))

    assert server.run_in_server_loop(drop()) >= 1


RECORD_STATUSES = """
() => {
  window.__statuses = {};
  const seen = (node) => {
    if (!node.matches?.("li.msg--out")) return;
    const list = (window.__statuses[node.dataset.id] ??= []);
    if (list.at(-1) !== node.dataset.status) list.push(node.dataset.status);
  };
  const list = document.getElementById("messages");
  new MutationObserver((records) => records.forEach((record) => {
    seen(record.target);
    record.addedNodes.forEach(seen);
  })).observe(list, { childList: true, subtree: true, attributeFilter: ["data-status"] });
}
"""


async def vote_verified(chat: ChatPage) -> None:
    """Open the safety number of the open conversation and mark the contact verified: the
    contact's keys are fetched again once, and the panel is redrawn from that copy."""
    dialog = await chat.open_safety_number()
    fetched: list[str] = []

    def count(request: Request) -> None:
        if "/api/v1/keys/" in request.url:
            fetched.append(request.url)

    chat.page.on("request", count)
    await dialog.get_by_role("button", name="Mark as verified").click()
    await expect(dialog.locator("#verify-state")).to_have_text(
        f"You have verified {await chat.page.locator('#thread-title').text_content()}."
    )
    chat.page.remove_listener("request", count)
    assert len(fetched) == 1, fetched
    await chat.page.keyboard.press("Escape")
    await expect(chat.page.locator("#thread-verified")).to_be_visible()


# --- delivery -------------------------------------------------------------------------------


async def test_offline_messages_arrive_in_order_once(
    new_context: NewContext, live_server: LiveServer, alice: SecureChatClient, bob: SecureChatClient
) -> None:
    """Bob closes his page, alice sends three; bob comes back and sees all three in order, once."""
    sender = await ChatPage.open(await new_context(), live_server.url, "alice")
    bob_browser = await new_context()
    reader = await ChatPage.open(bob_browser, live_server.url, "bob")
    await sender.start_conversation("bob")
    await sender.send("before")
    await expect(reader.conversation("alice")).to_be_visible(timeout=WAIT_MS)
    await reader.page.close()

    for text in ["one", "two", "three"]:
        await sender.send(text)
    await expect(sender.page.locator('#messages li.msg[data-status="sent"]')).to_have_count(3)

    back = ChatPage(await bob_browser.new_page(), "bob")
    await back.page.goto(live_server.url + "/chat")
    await back.wait_ready()
    await expect(back.conversation("alice").locator(".conv__unread")).to_have_text("4 unread")
    await back.open_conversation("alice")
    await expect(back.messages).to_have_count(4, timeout=WAIT_MS)
    assert await back.texts() == ["before", "one", "two", "three"]


async def test_status_ticks_go_sending_sent_delivered_read(
    new_context: NewContext, live_server: LiveServer, alice: SecureChatClient, bob: SecureChatClient
) -> None:
    """Alice's message shows sending, then sent, then delivered (bob's page has it), then read."""
    sender = await ChatPage.open(await new_context(), live_server.url, "alice")
    reader = await ChatPage.open(await new_context(), live_server.url, "bob")
    await sender.start_conversation("bob")
    await sender.page.evaluate(RECORD_STATUSES)
    await sender.send("tick tock")
    mine = sender.messages.last
    await expect(mine).to_have_attribute("data-status", "delivered", timeout=WAIT_MS)
    await expect(mine.locator(".msg__status")).to_have_text("✓✓ Delivered")

    await reader.open_conversation("alice")
    await expect(mine).to_have_attribute("data-status", "read", timeout=WAIT_MS)
    await expect(mine.locator(".msg__status")).to_have_text("✓✓ Read")
    statuses = await sender.page.evaluate("window.__statuses")
    assert list(statuses.values()) == [["sending", "sent", "delivered", "read"]]


async def test_outbox_sends_in_order_after_reload_and_reconnect(
    new_context: NewContext, live_server: LiveServer, alice: SecureChatClient, bob: SecureChatClient
) -> None:
    """Written with no connection, two messages survive a reload and go out in order once it is back."""
    network = {"up": True}
    routes: list[Any] = []

    def route(ws: Any) -> None:
        routes.append(ws)
        if network["up"]:
            ws.connect_to_server()
        # Otherwise the socket opens but nothing answers: no "synced", so nothing is sent.

    context = await new_context()
    await context.route_web_socket(re.compile(r"/ws\?"), route)
    chat = await ChatPage.open(context, live_server.url, "alice")
    bob_chat = await bob.connect()
    await chat.start_conversation("bob")
    network["up"] = False
    await routes[-1].close()
    await expect(chat.page.locator("#connection")).to_have_attribute("data-state", "syncing")

    await chat.send("first")
    await chat.send("second")
    await expect(chat.page.locator('#messages li.msg[data-status="sending"]')).to_have_count(2)
    await chat.page.reload()
    await expect(chat.page.locator("#chat-app")).to_have_attribute("data-ready", "true")
    await chat.open_conversation("bob")
    await expect(chat.page.locator('#messages li.msg[data-status="sending"]')).to_have_count(2)

    network["up"] = True
    await routes[-1].close()
    await expect(chat.page.locator('#messages li.msg[data-status="sent"]')).to_have_count(
        2, timeout=WAIT_MS
    )
    frames = [await bob_chat.wait_for("message", **FROM_ALICE) for _ in range(2)]
    assert [(await bob_chat.open(frame)).text for frame in frames] == ["first", "second"]
    assert frames[0]["seq"] < frames[1]["seq"]


async def test_reconnects_and_catches_up_after_the_server_drops_it(
    new_context: NewContext, live_server: LiveServer, alice: SecureChatClient, bob: SecureChatClient
) -> None:
    """When the server drops alice's socket the page reconnects and gets what was sent meanwhile."""
    chat = await ChatPage.open(await new_context(), live_server.url, "alice")
    bob_chat = await bob.connect()
    await bob_chat.send_message("alice", "hello")
    await chat.open_conversation("bob")
    drop_sockets(live_server, "alice")
    await bob_chat.send_message("alice", "while you were away")
    await expect(chat.page.locator("#connection")).to_have_attribute(
        "data-state", "online", timeout=WAIT_MS
    )
    await expect(chat.messages).to_have_count(2, timeout=WAIT_MS)
    assert await chat.texts() == ["hello", "while you were away"]


async def test_older_history_loads_on_request(
    new_context: NewContext, live_server: LiveServer, alice: SecureChatClient, bob: SecureChatClient
) -> None:
    """A long conversation opens on its newest messages; "Load older messages" brings the rest."""
    bob_chat = await bob.connect()
    sent = [f"message {n}" for n in range(60)]
    for text in sent:
        await bob_chat.send_message("alice", text)
    chat = await ChatPage.open(await new_context(), live_server.url, "alice")
    await chat.open_conversation("bob")
    await expect(chat.messages).to_have_count(50, timeout=WAIT_MS)
    assert await chat.texts() == sent[10:]
    await chat.page.get_by_role("button", name="Load older messages").click()
    await expect(chat.messages).to_have_count(60, timeout=WAIT_MS)
    assert await chat.texts() == sent
    await expect(chat.page.get_by_role("button", name="Load older messages")).to_be_hidden()


async def test_typing_indicator(
    new_context: NewContext, live_server: LiveServer, alice: SecureChatClient, bob: SecureChatClient
) -> None:
    """While bob types to alice, her open conversation says "bob is typing…"."""
    watcher = await ChatPage.open(await new_context(), live_server.url, "alice")
    typist = await ChatPage.open(await new_context(), live_server.url, "bob")
    await watcher.start_conversation("bob")
    await typist.start_conversation("alice")
    await typist.composer.press_sequentially("Hi al")
    await expect(watcher.page.locator("#typing")).to_have_text("bob is typing…", timeout=WAIT_MS)


async def test_unknown_recipient_is_named(
    new_context: NewContext, live_server: LiveServer, alice: SecureChatClient
) -> None:
    """Entering a username nobody has pops up an alert naming it; no conversation opens."""
    chat = await ChatPage.open(await new_context(), live_server.url, "alice")
    await chat.search.fill("nobody")
    await chat.search.press("Enter")
    await expect(chat.page.get_by_role("alert")).to_contain_text("There is no user called “nobody”")
    await expect(chat.page.locator("#thread")).to_be_hidden()


# --- what must never happen -------------------------------------------------------------------


async def test_tampered_message_is_not_shown(
    new_context: NewContext, live_server: LiveServer, alice: SecureChatClient, bob: SecureChatClient
) -> None:
    """A message whose envelope was altered shows as unverifiable, and the chat goes on working."""
    chat = await ChatPage.open(await new_context(), live_server.url, "alice")
    bob_chat = await bob.connect()
    await bob_chat.send_message("alice", "first, genuine")
    await chat.open_conversation("bob")

    message_id = str(uuid.uuid4())
    envelope = await bob_chat.seal("alice", "forged-plaintext-4471", message_id)
    ciphertext = bytearray(e2e.b64decode(envelope["ct"]))
    ciphertext[0] ^= 1
    envelope["ct"] = e2e.b64encode(bytes(ciphertext))
    await bob_chat.send_frame(
        {"type": "send", "id": message_id, "to": "alice", "envelope": envelope}
    )
    await bob_chat.wait_ack(message_id)
    await bob_chat.send_message("alice", "third, genuine")

    await expect(chat.messages).to_have_count(3, timeout=WAIT_MS)
    tampered = chat.page.locator(f'#messages li[data-id="{message_id}"]')
    await expect(tampered).to_have_attribute("data-state", "unverifiable")
    await expect(tampered).to_contain_text("This message could not be verified")
    assert await chat.texts() == ["first, genuine", "third, genuine"]
    await expect(chat.page.get_by_text("forged-plaintext-4471")).to_have_count(0)
    await chat.send("still working")
    await expect(chat.messages.last).to_have_attribute("data-status", "sent", timeout=WAIT_MS)


async def test_database_holds_no_plaintext(
    new_context: NewContext, live_server: LiveServer, alice: SecureChatClient, bob: SecureChatClient
) -> None:
    """After a chat both ways, neither the SQLite file nor its WAL holds a word of it (words
    that appear in no column or table name: the schema itself is in the file)."""
    first = await ChatPage.open(await new_context(), live_server.url, "alice")
    second = await ChatPage.open(await new_context(), live_server.url, "bob")
    await first.start_conversation("bob")
    await second.start_conversation("alice")
    words = {
        "alice": "quartz-zebra-7731 clandestine plans 🔐",
        "bob": "marmalade-orbit-2294 reply ünïcode",
    }
    await first.send(words["alice"])
    await expect(second.messages.last).to_contain_text(words["alice"], timeout=WAIT_MS)
    await second.send(words["bob"])
    await expect(first.messages.last).to_contain_text(words["bob"], timeout=WAIT_MS)

    path = live_server.database_path
    stored = b"".join(
        file.read_bytes() for file in [path, path.with_name(path.name + "-wal")] if file.exists()
    )
    ids = await first.messages.evaluate_all("(nodes) => nodes.map((node) => node.dataset.id)")
    assert all(message_id.encode() in stored for message_id in ids)  # the live files were read
    for text in words.values():
        for needle in {text, *text.split()}:
            for encoded in (needle.encode(), json.dumps(needle).encode()):
                assert encoded not in stored, needle


async def test_local_cache_holds_no_plaintext(
    new_context: NewContext, live_server: LiveServer, alice: SecureChatClient, bob: SecureChatClient
) -> None:
    """What the page keeps in IndexedDB is sealed: the message text is in no stored record."""
    chat = await ChatPage.open(await new_context(), live_server.url, "alice")
    bob_chat = await bob.connect()
    await bob_chat.send_message("alice", "pelican-umbra-5150 incoming")
    await chat.open_conversation("bob")
    await chat.send("lantern-fjord-8086 outgoing")
    await expect(chat.messages).to_have_count(2, timeout=WAIT_MS)
    await expect(chat.messages.last).to_have_attribute("data-status", "sent", timeout=WAIT_MS)
    dump = await chat.page.evaluate(DUMP_CHAT_CACHE)
    assert "pelican-umbra-5150" not in dump
    assert "lantern-fjord-8086" not in dump
    assert dump.count('"state":"ok"') == 2  # both records are there, sealed


DUMP_CHAT_CACHE = """
async () => new Promise((resolve, reject) => {
  const opening = indexedDB.open("securechat-chat");
  opening.onerror = () => reject(opening.error);
  opening.onsuccess = () => {
    const db = opening.result;
    const names = [...db.objectStoreNames];
    const tx = db.transaction(names);
    const out = {};
    names.forEach((name) => {
      const all = tx.objectStore(name).getAll();
      all.onsuccess = () => { out[name] = all.result; };
    });
    tx.oncomplete = () => {
      const text = JSON.stringify(out, (key, value) => value instanceof Uint8Array
        ? new TextDecoder("utf-8", { fatal: false }).decode(value) : value);
      db.close();
      resolve(text);
    };
  };
})
"""


# --- keys -----------------------------------------------------------------------------------


async def test_safety_numbers_match(
    new_context: NewContext, live_server: LiveServer, alice: SecureChatClient, bob: SecureChatClient
) -> None:
    """Alice's and bob's panels show the same 60 digits in 12 groups, as the Python client computes."""
    first = await ChatPage.open(await new_context(), live_server.url, "alice")
    second = await ChatPage.open(await new_context(), live_server.url, "bob")
    await first.start_conversation("bob")
    await second.start_conversation("alice")
    await first.open_safety_number()
    await second.open_safety_number()
    number = await first.safety_number()
    assert re.fullmatch(r"\d{5}( \d{5}){11}", number)
    assert await second.safety_number() == number
    assert number.replace(" ", "") == alice.safety_number(await alice.fetch_verified_keys("bob"))
    await expect(
        first.page.get_by_role("img", name="Safety number with bob as a QR code")
    ).to_be_visible()


async def test_key_change_notice_for_unverified_contact(
    new_context: NewContext, live_server: LiveServer, alice: SecureChatClient, bob: SecureChatClient
) -> None:
    """When bob's keys change, alice's conversation says so in plain words; she can still send."""
    chat = await ChatPage.open(await new_context(), live_server.url, "alice")
    await chat.start_conversation("bob")
    await chat.send("before the change")
    await expect(chat.messages.last).to_have_attribute("data-status", "sent", timeout=WAIT_MS)
    change_keys(live_server, "bob", e2e.Identity.generate(2048))

    await chat.page.reload()
    await chat.wait_ready()
    await chat.open_conversation("bob")
    notice = chat.page.locator("#messages .thread-notice")
    await expect(notice).to_contain_text("bob's security keys changed", timeout=WAIT_MS)
    await expect(notice).to_contain_text("compare your safety number with bob")
    await expect(chat.page.locator("#send-blocked")).to_be_hidden()
    await chat.send("after the change")
    await expect(chat.messages.last).to_have_attribute("data-status", "sent", timeout=WAIT_MS)


async def test_key_change_blocks_sending_to_verified_contact(
    new_context: NewContext, live_server: LiveServer, alice: SecureChatClient, bob: SecureChatClient
) -> None:
    """After bob's keys change, alice, who had verified him, cannot send until she accepts them."""
    chat = await ChatPage.open(await new_context(), live_server.url, "alice")
    await chat.start_conversation("bob")
    await chat.send("before the change")
    await vote_verified(chat)
    change_keys(live_server, "bob", e2e.Identity.generate(2048))

    await chat.page.reload()
    await chat.wait_ready()
    await chat.open_conversation("bob")
    notice = chat.page.locator("#messages .thread-notice")
    await expect(notice).to_contain_text("bob's security keys changed", timeout=WAIT_MS)
    await expect(notice).to_contain_text("sending is paused")
    await expect(chat.page.locator("#send-blocked")).to_be_visible()
    await expect(chat.page.locator("#composer-send")).to_be_disabled()
    await chat.send("must not go")
    await expect(chat.page.get_by_role("alert")).to_contain_text("Not sent")
    await expect(chat.messages).to_have_count(1)

    dialog = await chat.open_safety_number("Review safety number")
    await expect(dialog.locator("#verify-state")).to_contain_text("this is a new safety number")
    await dialog.get_by_role("button", name="Accept the new safety number").click()
    await expect(dialog.locator("#verify-state")).to_have_text("You have not verified bob yet.")
    await chat.page.keyboard.press("Escape")
    await expect(chat.page.locator("#send-blocked")).to_be_hidden()
    await chat.send("now it may go")
    await expect(chat.messages.last).to_have_attribute("data-status", "sent", timeout=WAIT_MS)


# --- the page itself --------------------------------------------------------------------------


async def test_phone_layout_has_no_horizontal_scroll(
    new_context: NewContext, live_server: LiveServer, alice: SecureChatClient, bob: SecureChatClient
) -> None:
    """At 360 px the list, a thread with very long words and the safety panel all fit the width."""
    context = await new_context(viewport={"width": 360, "height": 740})
    chat = await ChatPage.open(context, live_server.url, "alice")
    widths: dict[str, int] = {}
    measure = "document.scrollingElement.scrollWidth"
    widths["list"] = await chat.page.evaluate(measure)
    await chat.start_conversation("bob")
    await chat.send("x" * 300)
    await chat.send("https://example.org/" + "a/" * 100)
    await expect(chat.messages).to_have_count(2)
    widths["thread"] = await chat.page.evaluate(measure)
    scroller = chat.page.locator("#thread-scroll")
    widths["thread, inside"] = await scroller.evaluate(
        "(node) => node.scrollWidth - node.clientWidth + 360"
    )
    await chat.open_safety_number()
    widths["panel"] = await chat.page.evaluate(measure)
    assert {name: width for name, width in widths.items() if width > 360} == {}
    await chat.page.keyboard.press("Escape")
    await chat.page.get_by_role("button", name="Back to conversations").click()
    await expect(chat.conversation("bob")).to_be_visible()


async def test_normal_chat_logs_no_errors(
    new_context: NewContext, live_server: LiveServer, alice: SecureChatClient, bob: SecureChatClient
) -> None:
    """A normal chat (search, both ways, typing, safety number) logs no error and trips no CSP."""
    problems: list[str] = []
    pages: list[ChatPage] = []
    for name in ("alice", "bob"):
        context = await new_context()
        await context.add_init_script(RECORD_CSP_VIOLATIONS)
        context.on(
            "console",
            lambda message: problems.append(message.text) if message.type == "error" else None,
        )
        context.on("weberror", lambda error: problems.append(f"uncaught: {error.error}"))
        pages.append(await ChatPage.open(context, live_server.url, name))
    first, second = pages
    await first.start_conversation("bob")
    await second.start_conversation("alice")
    await first.send("hello")
    await expect(second.messages).to_have_count(1, timeout=WAIT_MS)
    await second.composer.press_sequentially("hi!")
    await second.composer.press("Enter")
    await expect(first.messages).to_have_count(2, timeout=WAIT_MS)
    await expect(first.messages.first).to_have_attribute("data-status", "read", timeout=WAIT_MS)
    await first.open_safety_number()
    for chat in pages:
        problems.extend(f"CSP {v}" for v in await chat.page.evaluate("window.__cspViolations"))
    assert problems == []


async def test_my_own_key_change_blames_no_one(
    new_context: NewContext, live_server: LiveServer, alice: SecureChatClient, bob: SecureChatClient
) -> None:
    """After alice's own keys change, her page says her keys changed and warns about no one else."""
    context = await new_context()
    chat = await ChatPage.open(context, live_server.url, "alice")
    await chat.start_conversation("bob")
    await chat.send("before my reset")
    await expect(chat.messages.last).to_have_attribute("data-status", "sent", timeout=WAIT_MS)
    salt, iterations = await alice.prelogin("alice")
    wrap_key = e2e.derive_keys(PASSWORD, salt, iterations).wrap_key
    fresh = e2e.Identity.generate(2048)
    store = live_server.app.extensions["securechat"].store
    live_server.run_in_server_loop(
        store.directory.replace_keys(
            "alice",
            fresh.enc_public_spki,
            fresh.sign_public_spki,
            e2e.seal_key_backup(fresh, wrap_key),
            2**40,
        )
    )

    await log_out(chat.page)
    again = await ChatPage.open(context, live_server.url, "alice")
    banner = again.page.locator("#chat-mykeys")
    await expect(banner).to_contain_text("Your own keys changed")
    await expect(banner).to_contain_text("not anyone else's")
    await again.open_conversation("bob")
    await expect(again.messages).to_have_count(1, timeout=WAIT_MS)
    await expect(again.page.locator(".thread-notice")).to_have_count(0)
    await expect(again.page.get_by_text("bob's security keys changed")).to_have_count(0)


async def test_a_message_past_the_recipients_queue_waits_and_goes_when_they_catch_up(
    new_context: NewContext, live_server: LiveServer, alice: SecureChatClient, bob: SecureChatClient
) -> None:
    """With room for one undelivered message to bob, alice's second waits ("queue_full") as
    "Sending…", and the page says why; when bob, back online, marks the first delivered, the
    receipt makes room and the page sends the second at once, long before its 30 s fallback."""
    chat_service = live_server.app.extensions["securechat"].chat
    bounds = chat_service.delivery.bounds
    chat_service.delivery.bounds = dataclasses.replace(bounds, per_pair_max=1)  # lowered live
    chat = await ChatPage.open(await new_context(), live_server.url, "alice")
    await chat.start_conversation("bob")
    await chat.send("first")
    await expect(chat.messages.last).to_have_attribute("data-status", "sent", timeout=WAIT_MS)
    await chat.send("second")
    refused = chat_service.delivery.stats.rejected
    for _ in range(50):
        if refused["queue_full"]:
            break
        await chat.page.wait_for_timeout(100)
    assert refused["queue_full"] >= 1
    await expect(chat.messages.last).not_to_have_attribute("data-status", "sent")
    await expect(
        chat.page.get_by_role("status").filter(has_text="bob has not received your earlier")
    ).to_be_visible(timeout=WAIT_MS)

    bob_chat = await bob.connect()
    (first,) = [frame for frame in await bob_chat.sync(0) if frame["type"] == "message"]
    await bob_chat.mark(first["seq"], "delivered")
    await expect(chat.messages.last).to_have_attribute("data-status", "sent", timeout=WAIT_MS)
    second = await bob_chat.wait_for("message", **FROM_ALICE)
    assert (await bob_chat.open(second)).text == "second"
    await bob_chat.close()
