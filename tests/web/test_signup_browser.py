"""The sign-up page's checks before key generation, in real Chromium: a taken username, a very
weak password (zxcvbn-ts, static/vendor/zxcvbn) and the progress line in view at 1280x800."""

from __future__ import annotations

import asyncio
import re

import pytest
from playwright.async_api import Route, expect

from securechat.client import SecureChatClient
from tests.livesrv import LiveServer
from tests.web.test_pages_browser import (  # noqa: F401 (fixtures)
    PASSWORD,
    SLOW_MS,
    NewPage,
    _alice,
    _new_page,
    fill_sign_up,
)

pytestmark = pytest.mark.browser


async def test_taken_username_is_reported_before_keys_are_made(
    new_page: NewPage, live_server: LiveServer, alice: SecureChatClient
) -> None:
    """Signing up as alice, who exists, says so after the availability check: no key pair is
    generated and no registration is sent."""
    page = await new_page()
    progress: list[str] = []
    await page.expose_function("noteProgress", lambda text: progress.append(text))
    await page.add_init_script(
        """addEventListener("DOMContentLoaded", () => {
          const line = document.querySelector("#signup-progress .progress__text");
          new MutationObserver(() => window.noteProgress(line.textContent))
            .observe(line, { childList: true, characterData: true, subtree: true });
        });"""
    )
    sent: list[str] = []
    page.on("request", lambda request: sent.append(request.url.split("/api/v1/")[-1]))
    await fill_sign_up(page, live_server.url, "alice", PASSWORD)
    await expect(page.get_by_role("alert")).to_contain_text("Username already exists")
    await expect(page.get_by_label("Username")).to_be_focused()
    assert "register/check" in sent
    assert "register" not in sent
    assert not [step for step in progress if "Generating" in step or "Deriving" in step]


@pytest.mark.parametrize("password", ["aaaaaaaaaaaa", "1234567890ab", "sunshine2024"])
async def test_very_weak_password_is_refused(
    new_page: NewPage, live_server: LiveServer, password: str
) -> None:
    """Passwords guessed in under a million tries are refused with a reason, before any request."""
    page = await new_page()
    api_calls: list[str] = []
    page.on(
        "request", lambda request: api_calls.append(request.url) if "/api/" in request.url else None
    )
    await fill_sign_up(page, live_server.url, "alice", password)
    field = page.get_by_label("Password", exact=True)
    await expect(field).to_have_accessible_description(re.compile("too easy to guess"))
    await expect(field).to_have_attribute("aria-invalid", "true")
    assert api_calls == []


async def test_progress_line_is_in_view_at_1280x800(
    new_page: NewPage, live_server: LiveServer
) -> None:
    """At 1280x800 the progress line under "Create account" shows whole while it works."""
    page = await new_page(viewport={"width": 1280, "height": 800})
    hold = asyncio.Event()

    async def held(route: Route) -> None:
        await hold.wait()
        await route.continue_()

    await page.route("**/api/v1/register/check", held)
    await fill_sign_up(page, live_server.url, "alice", PASSWORD)
    line = page.locator("#signup-progress")
    await expect(line).to_contain_text("Checking the username")
    await expect(line).to_be_in_viewport(ratio=1)
    hold.set()
    await expect(line).not_to_contain_text("Checking the username", timeout=SLOW_MS)
