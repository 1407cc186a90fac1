"""Two people in real Chromium on two nodes of a cluster: alice on node A, bob on node B.

The nodes are started as `make cluster` starts them (tools/cluster.py: the shared secrets from
``init --cluster``, a data directory each), over a fresh database on the session's throwaway
PostgreSQL and the session's Redis; each node answers for both origins. Everything here is the
pages' own work, as two people in two browsers would do it: sign-up (PBKDF2 and an RSA key
pair), the key directory, end-to-end encryption, the socket and the ticks.
"""

from __future__ import annotations

import asyncio
import re
from collections.abc import AsyncIterator

import pytest
from playwright.async_api import Browser, expect

from tests.browser_helpers import WAIT_MS, ChatPage
from tests.chat.test_chat_browser import RECORD_STATUSES
from tests.engines import PostgresEngine, RedisEngine
from tests.web.test_pages_browser import sign_up
from tools.cluster import Cluster, Node, free_port

pytestmark = pytest.mark.browser

# Light server-side hashing (the page's own PBKDF2 is unchanged: it insists on 600,000).
SETTINGS = {
    "SECURECHAT_ARGON2_TIME_COST": "1",
    "SECURECHAT_ARGON2_MEMORY_KIB": "8192",
    "SECURECHAT_ARGON2_PARALLELISM": "1",
}


@pytest.fixture(name="nodes", scope="module")
async def _nodes(
    postgres_engine: PostgresEngine, redis_engine: RedisEngine
) -> AsyncIterator[tuple[Node, Node]]:
    """Nodes A and B over one database and one Redis, stopped after the module."""
    async with postgres_engine.fresh_database() as database:
        ports = [free_port() for _ in range(2)]
        origins = [f"http://127.0.0.1:{port}" for port in ports]
        cluster = await asyncio.to_thread(
            Cluster.prepare, postgres_engine.url(database), redis_engine.url, origins, SETTINGS
        )
        try:
            a, b = [await asyncio.to_thread(cluster.start_node, port) for port in ports]
            yield a, b
        finally:
            await asyncio.to_thread(cluster.stop)


async def _signed_up(browser: Browser, node: Node, username: str) -> ChatPage:
    """A new browser context signed up as username on node, its chat ready."""
    context = await browser.new_context()
    chat = ChatPage(await context.new_page(), username)
    await sign_up(chat.page, node.url, username)
    await chat.wait_ready()
    return chat


async def _sent(chat: ChatPage, text: str) -> None:
    """Send text in the open conversation: the message's tick goes from sending to sent (and
    on to delivered or read, once the peer's page has it)."""
    await chat.page.evaluate(RECORD_STATUSES)
    await chat.send(text)
    mine = chat.messages.filter(has_text=text)
    await expect(mine).to_have_attribute(
        "data-status", re.compile("sent|delivered|read"), timeout=WAIT_MS
    )
    statuses = await chat.page.evaluate("window.__statuses")
    assert [seen[:2] for seen in statuses.values()] == [["sending", "sent"]]


async def test_alice_on_one_node_and_bob_on_the_other_chat_both_ways(
    browser: Browser, nodes: tuple[Node, Node]
) -> None:
    """Alice signs up on A and bob on B; each sees the other's messages, and their own ticked
    sent once the cluster has stored them."""
    a, b = nodes
    alice, bob = await asyncio.gather(
        _signed_up(browser, a, "alice"), _signed_up(browser, b, "bob")
    )
    try:
        await alice.start_conversation("bob")
        await _sent(alice, "hello bob, from node A")
        await expect(bob.conversation("alice")).to_be_visible(timeout=WAIT_MS)
        await bob.open_conversation("alice")
        await expect(bob.messages).to_have_count(1, timeout=WAIT_MS)

        await _sent(bob, "hello alice, from node B")
        await expect(alice.messages).to_have_count(2, timeout=WAIT_MS)
        both = ["hello bob, from node A", "hello alice, from node B"]
        assert await alice.texts() == both
        assert await bob.texts() == both
        assert alice.dialogs == bob.dialogs == []
    finally:
        for chat in (alice, bob):
            await chat.page.context.close()
