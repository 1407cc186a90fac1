"""Helpers for the chat's browser tests: accounts made from Python, pages logged in, the chat driven.

Accounts are registered from Python with the iterations the page insists on (600,000) and one
of the session's pooled identities, so no test pays for a browser sign-up (PBKDF2 plus an RSA
key pair). Logging in still runs the page's own PBKDF2 and key restore.
"""

from __future__ import annotations

from collections.abc import Callable

from playwright.async_api import BrowserContext, Locator, Page, expect

from securechat import e2e
from securechat.client import SecureChatClient
from tests.web.test_pages_browser import PASSWORD, RECORD_CSP_VIOLATIONS, SLOW_MS, log_in

__all__ = [
    "PASSWORD",
    "RECORD_CSP_VIOLATIONS",
    "SLOW_MS",
    "WAIT_MS",
    "ChatPage",
    "register",
]

WAIT_MS = 15_000  # any visible change the chat makes, end to end through the server


async def register(
    make_client: Callable[[], SecureChatClient], identity: e2e.Identity, username: str
) -> SecureChatClient:
    """Register username from Python (page-strength iterations) and log the client in."""
    client = make_client()
    await client.register(username, PASSWORD, iterations=e2e.MIN_ITERATIONS, identity=identity)
    await client.login(username, PASSWORD)
    return client


class ChatPage:
    """One person's chat page, driven the way they would drive it."""

    def __init__(self, page: Page, username: str) -> None:
        self.page = page
        self.username = username
        self.dialogs: list[str] = []
        page.on("dialog", lambda dialog: self.dialogs.append(dialog.message))

    @classmethod
    async def open(cls, context: BrowserContext, base_url: str, username: str) -> ChatPage:
        """A new page in context, logged in as username, with the chat started."""
        chat = cls(await context.new_page(), username)
        await log_in(chat.page, base_url, username)
        await chat.wait_ready()
        return chat

    async def wait_ready(self) -> None:
        """Wait until the chat has started and caught up with the server."""
        await expect(self.page.locator("#chat-app")).to_have_attribute(
            "data-ready", "true", timeout=SLOW_MS
        )
        await expect(self.page.locator("#connection")).to_have_attribute(
            "data-state", "online", timeout=WAIT_MS
        )

    @property
    def search(self) -> Locator:
        return self.page.get_by_role("combobox", name="New message")

    @property
    def composer(self) -> Locator:
        return self.page.locator("#composer-text")

    @property
    def messages(self) -> Locator:
        """The messages of the open thread (not notices or day dividers), in order."""
        return self.page.locator("#messages > li.msg")

    def conversation(self, peer: str) -> Locator:
        """peer's entry in the conversation list, or in the message requests."""
        return self.page.locator(
            f':is(#conversation-list, #request-list) button[data-peer="{peer}"]'
        )

    async def start_conversation(self, peer: str) -> None:
        """Find peer with the search and open the conversation."""
        await self.search.fill(peer[:2])
        await self.page.get_by_role("option", name=peer, exact=True).click()
        await expect(self.page.locator("#thread-title")).to_have_text(peer)

    async def open_conversation(self, peer: str) -> None:
        """Open peer's conversation from the list."""
        await self.conversation(peer).click()
        await expect(self.page.locator("#thread-title")).to_have_text(peer)

    async def send(self, text: str) -> None:
        """Type text into the composer and press Enter."""
        await self.composer.fill(text)
        await self.composer.press("Enter")

    async def texts(self) -> list[str]:
        """The text of each message in the open thread, in order."""
        return await self.messages.locator(".msg__text").all_text_contents()

    async def open_safety_number(self, button: str = "Safety number") -> Locator:
        """Open the verification panel of the open conversation; returns the dialog."""
        await self.page.get_by_role("button", name=button, exact=True).click()
        dialog = self.page.get_by_role("dialog")
        await expect(dialog.get_by_role("group", name="Safety number")).to_be_visible(
            timeout=WAIT_MS
        )
        return dialog

    async def safety_number(self) -> str:
        """The 60 digits the open verification panel shows, as 12 groups joined by spaces."""
        groups = self.page.get_by_role("dialog").locator(".safety-number__group")
        return " ".join(await groups.all_text_contents())
