"""static/js/api.js's helpers shared by the pages, in real Chromium, with their callers.

normalizeUsername and checkUsername are the server's username rule (normalize_username in
securechat/chat/protocol.py), exactly: nothing trimmed. isTransient tells a failure that may
pass (the network, throttling, the server's trouble) from an answer: the outbox retries the
one and fails the message on the other; the key directory takes only a refusal as evidence.
"""

from __future__ import annotations

import json
import re
import unicodedata
from typing import Any

import pytest
from playwright.async_api import Page, expect

from securechat.chat.protocol import normalize_username
from tests.livesrv import LiveServer

pytestmark = pytest.mark.browser

# Typed names, the awkward ones first: spaces around or inside, full-width letters, the Kelvin
# sign and a ligature (NFKC makes them ASCII), a dotted capital I (lower-cased, not ASCII).
NAMES = [
    " alice",
    "alice ",
    "al ice",
    "\talice",
    "alice\n",
    "   ",
    "",
    "ＡＬＩＣＥ",
    "\u212aate",
    "\ufb03x",
    "\u0130lker",
    "Alice",
    "bob.smith_1-2",
    "bob!",
    "ab",
    "a" * 32,
    "a" * 33,
]


def server_rule(name: str) -> str | None:
    """The server's canonical form of name, or None when it refuses it."""
    try:
        return normalize_username(name)
    except ValueError:
        return None


async def test_username_rule_is_the_servers(browser_page: Page) -> None:
    """The page accepts exactly the names the server accepts, in the same canonical form."""
    got = await browser_page.evaluate(
        """async (names) => {
          const api = await import("/static/js/api.js");
          return names.map((name) => {
            const { username, error } = api.checkUsername(name);
            const checked = error === null ? username : null;
            return { canonical: api.normalizeUsername(name), checked };
          });
        }""",
        NAMES,
    )
    # The forms drop the spaces around a typed name (autofill, phone keyboards) before the rule.
    assert [g["checked"] for g in got] == [server_rule(name.strip()) for name in NAMES]
    assert [g["canonical"] for g in got] == [
        unicodedata.normalize("NFKC", name).lower() for name in NAMES
    ]


async def test_log_in_drops_the_spaces_around_a_name_and_refuses_one_inside(
    browser_page: Page, live_server: LiveServer
) -> None:
    """Log-in with " alice " asks the server for "alice"; with "al ice" it says why in the page
    and sends nothing (the server would refuse it)."""
    page = browser_page
    sent: list[str] = []
    page.on(
        "request",
        lambda request: sent.append(request.post_data or "") if "prelogin" in request.url else None,
    )
    await page.goto(live_server.url + "/login")
    await page.get_by_label("Password").fill("violet tractor umbrella 42")
    await page.get_by_label("Username").fill("al ice")
    await page.get_by_role("button", name="Log in").click()
    await expect(page.get_by_label("Username")).to_have_accessible_description(re.compile("spaces"))
    assert sent == []
    await page.get_by_label("Username").fill(" alice ")
    async with page.expect_request(lambda request: "prelogin" in request.url) as asked:
        await page.get_by_role("button", name="Log in").click()
    assert json.loads((await asked.value).post_data or "{}")["username"] == "alice"


async def test_key_directory_names_people_as_the_server_does(browser_page: Page) -> None:
    """The key directory keys its pins by the server's canonical name, spaces kept."""
    got = await browser_page.evaluate(
        """async () => {
          const d = await import("/static/js/directory.js");
          const storage = { getItem: () => null, setItem: () => {} };
          return ["ＡＬＩＣＥ", " Alice"].map((me) => new d.KeyDirectory({ me, storage }).me);
        }"""
    )
    assert got == ["alice", " alice"]


async def test_transient_failures(browser_page: Page) -> None:
    """Only an ApiError of the network, throttling or a 5xx is transient; any other error is not."""
    got = await browser_page.evaluate(
        """async () => {
          const api = await import("/static/js/api.js");
          const { DirectoryError } = await import("/static/js/directory.js");
          const { MessageTooLong } = await import("/static/js/chat/messages.js");
          const status = (s) => new api.ApiError({ status: s, code: "x", message: "x" });
          return {
            transient: [0, 429, 500, 503].map((s) => api.isTransient(status(s))),
            answers: [400, 403, 404, 409, 413].map((s) => api.isTransient(status(s))),
            others: [
              new TypeError("Failed to fetch"), new DirectoryError("bad_signature", "x"),
              new MessageTooLong(), { status: 503 }, null,
            ].map((error) => api.isTransient(error)),
          };
        }"""
    )
    assert got == {"transient": [True] * 4, "answers": [False] * 5, "others": [False] * 5}


async def test_outbox_retries_a_network_failure_and_fails_what_would_fail_again(
    browser_page: Page,
) -> None:
    """Offline while sealing: the message waits for the retry. Too long: it fails at once."""
    got = await browser_page.evaluate(
        """async () => {
          const api = await import("/static/js/api.js");
          const { Outbox } = await import("/static/js/chat/outbox.js");
          const { MessageTooLong } = await import("/static/js/chat/messages.js");
          const sent = [];
          const failed = [];
          const socket = Object.assign(new EventTarget(), {
            online: true,
            send(frame) { sent.push(frame.id); return true; },
          });
          let entries = [{ id: "a", to: "bob" }, { id: "b", to: "carol" }];
          const store = {
            outbox: async () => entries,
            failOutgoing: async (id) => { entries = entries.filter((entry) => entry.id !== id); },
          };
          let offline = true;
          const messages = {
            seal: async (entry) => {
              if (entry.id === "b") throw new MessageTooLong();
              if (offline) {
                offline = false;
                throw new api.ApiError({ status: 0, code: "network", message: "offline" });
              }
              return { sealed: entry.id };
            },
          };
          const outbox = new Outbox({ store, socket, messages });
          outbox.addEventListener("failed", (event) => failed.push(event.detail.id));
          await outbox.flush();
          const first = { sent: [...sent], failed: [...failed] };
          await new Promise((resolve) => setTimeout(resolve, 3500));
          return { first, later: { sent, failed } };
        }"""
    )
    assert got == {
        "first": {"sent": [], "failed": ["b"]},
        "later": {"sent": ["a"], "failed": ["b"]},
    }


async def test_directory_takes_only_a_refusal_for_a_fork(
    browser_page: Page, signed_up: Any
) -> None:
    """No answer, or status 0, for a consistency proof raises no alarm; a 404 does."""
    await signed_up("alice")
    await signed_up("bob")
    await browser_page.evaluate(
        """async () => {
          const api = await import("/static/js/api.js");
          const d = await import("/static/js/directory.js");
          const items = new Map();
          const storage = {
            getItem: (k) => items.get(k) ?? null,
            setItem: (k, v) => items.set(k, v),
          };
          window.__failure = null;
          const get = async (path) => {
            if (path.includes("/consistency") && window.__failure !== null) {
              throw window.__failure === "none"
                ? new TypeError("Failed to fetch")
                : new api.ApiError({ status: window.__failure, code: "x", message: "x" });
            }
            return (await fetch(path)).json();
          };
          window.__directory = new d.KeyDirectory({ storage, get });
          await window.__directory.checkHead();
        }"""
    )
    await signed_up("carol")
    got = await browser_page.evaluate(
        """async () => {
          const directory = window.__directory;
          const outcomes = [];
          for (const failure of ["none", 0, 404]) {
            window.__failure = failure;
            let thrown = null;
            try { await directory.checkHead(); } catch (error) { thrown = error.name; }
            outcomes.push([thrown, directory.alarm()?.code ?? null]);
          }
          return outcomes;
        }"""
    )
    assert got == [["TypeError", None], ["ApiError", None], ["DirectoryError", "log_forked"]]
