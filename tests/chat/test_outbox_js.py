"""static/js/chat/outbox.js in real Chromium, with a scripted socket, store and sealer: when
messages the server refused go out again.

The outbox sends every waiting message not in flight on each flush; a refusal takes the message
out of flight and schedules a flush: 3 s after a passing refusal ("rate_limited",
"unavailable"), after a receipt or 30 s after "queue_full".
"""

from __future__ import annotations

from typing import Any

import pytest
from playwright.async_api import Page

pytestmark = pytest.mark.browser

# In the page: an Outbox over two waiting messages, "a" to bob and "b" to carol; `sent` lists
# the ids the socket was given, in order.
PRELUDE = """
const { Outbox } = await import("/static/js/chat/outbox.js");
const sent = [];
const socket = Object.assign(new EventTarget(), {
  online: true,
  send(frame) { sent.push(frame.id); return true; },
});
const entries = [{ id: "a", to: "bob" }, { id: "b", to: "carol" }];
const store = { outbox: async () => entries, failOutgoing: async () => {} };
const messages = { seal: async (entry) => ({ sealed: entry.id }) };
const outbox = new Outbox({ store, socket, messages });
const sleep = (ms) => new Promise((resolve) => setTimeout(resolve, ms));
await outbox.flush();
const first = sent.splice(0);
"""


async def run_js(page: Page, body: str) -> Any:
    """Run ``body`` after the prelude, as an async function in the page."""
    return await page.evaluate(f"async () => {{ {PRELUDE} {body} }}")


async def test_queue_full_waits_past_the_short_retry(browser_page: Page) -> None:
    """A message refused with queue_full is not sent again 3 s later: its recipient has to
    catch up first."""
    result = await run_js(
        browser_page,
        """
        await outbox.refused({ id: "a", code: "queue_full" });
        await sleep(4000);
        return { first, later: sent };
        """,
    )
    assert result == {"first": ["a", "b"], "later": []}


async def test_a_receipt_sends_what_waits_for_room_at_once(browser_page: Page) -> None:
    """After queue_full, a receipt (someone caught up) flushes the outbox right away."""
    result = await run_js(
        browser_page,
        """
        await outbox.refused({ id: "a", code: "queue_full" });
        outbox.roomMade();
        await sleep(200);
        return sent;
        """,
    )
    assert result == ["a"]


async def test_queue_full_does_not_postpone_a_sooner_retry(browser_page: Page) -> None:
    """b is refused for a passing reason (again in 3 s), then a with queue_full (30 s): the
    retry already due in 3 s still comes, and sends both."""
    result = await run_js(
        browser_page,
        """
        await outbox.refused({ id: "b", code: "rate_limited" });
        await outbox.refused({ id: "a", code: "queue_full" });
        await sleep(4000);
        return sent;
        """,
    )
    assert result == ["a", "b"]
