"""The HTML pages over HTTP: they render, carry the CSP, run no inline code, guard the signed-in
pages, and every script, module import and stylesheet they name is served."""

from __future__ import annotations

import re
from collections.abc import AsyncIterator
from html.parser import HTMLParser

import httpx
import pytest

from securechat.client import SecureChatClient
from tests.conftest import SignUp
from tests.livesrv import LiveServer

PUBLIC_PAGES = {
    "/": "Chat that only you",
    "/signup": "Create your account",
    "/login": "Log in",
    "/recover": "Forgot your password?",
}
SIGNED_IN_PAGES = {"/chat": 'id="chat-placeholder"', "/settings": 'id="session-list"'}
MODULE_IMPORT = re.compile(r"""^\s*import\s[^;]*?from\s+"([^"]+)";""", re.MULTILINE | re.DOTALL)


class PageScan(HTMLParser):
    """What a page loads, and anything in it that the CSP would refuse."""

    def __init__(self) -> None:
        super().__init__()
        self.scripts: list[str] = []
        self.stylesheets: list[str] = []
        self.inline: list[str] = []
        self._in_script = False

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        attributes = dict(attrs)
        for name, _ in attrs:
            if name.startswith("on") or name == "style":
                self.inline.append(f"<{tag} {name}=...>")
        if tag == "style":
            self.inline.append("<style>")
        if tag == "script":
            self._in_script = True
            if attributes.get("src"):
                self.scripts.append(str(attributes["src"]))
            else:
                self.inline.append("<script> without src")
        if tag == "link" and attributes.get("rel") == "stylesheet":
            self.stylesheets.append(str(attributes["href"]))
        href = attributes.get("href") or ""
        if href.lower().startswith("javascript:"):
            self.inline.append(f"<{tag} href=javascript:...>")

    def handle_endtag(self, tag: str) -> None:
        if tag == "script":
            self._in_script = False

    def handle_data(self, data: str) -> None:
        if self._in_script and data.strip():
            self.inline.append("<script> with a body")


class LabelScan(HTMLParser):
    """The text of every <label> of a page, in order."""

    def __init__(self) -> None:
        super().__init__()
        self.labels: list[str] = []
        self._text: list[str] | None = None

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        if tag == "label":
            self._text = []

    def handle_endtag(self, tag: str) -> None:
        if tag == "label" and self._text is not None:
            self.labels.append(" ".join("".join(self._text).split()))
            self._text = None

    def handle_data(self, data: str) -> None:
        if self._text is not None:
            self._text.append(data)


def scan(html: str) -> PageScan:
    parser = PageScan()
    parser.feed(html)
    parser.close()
    return parser


@pytest.fixture(name="http")
async def _http(live_server: LiveServer) -> AsyncIterator[httpx.AsyncClient]:
    async with httpx.AsyncClient(base_url=live_server.url) as client:
        yield client


@pytest.fixture(name="alice")
async def _alice(signed_up: SignUp) -> SecureChatClient:
    return await signed_up("alice")


async def page_html(alice: SecureChatClient, path: str) -> str:
    """A signed-in page as alice sees it."""
    response = await alice.request("GET", path)
    assert response.status_code == 200
    return response.text


@pytest.mark.parametrize(("path", "heading"), PUBLIC_PAGES.items())
async def test_public_page_renders(http: httpx.AsyncClient, path: str, heading: str) -> None:
    """Each public page answers 200 HTML with its heading."""
    response = await http.get(path)
    assert response.status_code == 200
    assert response.headers["content-type"].startswith("text/html")
    assert heading in response.text


@pytest.mark.parametrize(("path", "marker"), SIGNED_IN_PAGES.items())
async def test_signed_in_page_renders(alice: SecureChatClient, path: str, marker: str) -> None:
    """With a session, /chat and /settings render with the header and their own content."""
    html = await page_html(alice, path)
    assert marker in html
    assert 'id="whoami"' in html
    assert 'id="logout"' in html


@pytest.mark.parametrize("path", SIGNED_IN_PAGES)
async def test_signed_in_page_redirects_to_login(http: httpx.AsyncClient, path: str) -> None:
    """Without a session, /chat and /settings send the browser to /login."""
    response = await http.get(path)
    assert response.status_code in (302, 303)
    assert response.headers["location"].endswith("/login")


@pytest.mark.parametrize("path", [*PUBLIC_PAGES, "/no-such-page"])
async def test_page_carries_strict_csp(http: httpx.AsyncClient, path: str) -> None:
    """Every page, the error page too, is served with a CSP that allows no inline code."""
    response = await http.get(path)
    policy = response.headers["content-security-policy"]
    assert "script-src 'self'" in policy
    assert "style-src 'self'" in policy
    assert "unsafe-inline" not in policy
    assert "unsafe-eval" not in policy


async def test_pages_have_no_inline_code(http: httpx.AsyncClient, alice: SecureChatClient) -> None:
    """No page has an inline script, style, event handler or javascript: link."""
    pages = {path: (await http.get(path)).text for path in [*PUBLIC_PAGES, "/no-such-page"]}
    pages |= {path: await page_html(alice, path) for path in SIGNED_IN_PAGES}
    found = {path: scan(html).inline for path, html in pages.items()}
    assert found == {path: [] for path in pages}


@pytest.mark.parametrize("path", SIGNED_IN_PAGES)
async def test_every_field_has_a_label_of_its_own(alice: SecureChatClient, path: str) -> None:
    """No two fields of a signed-in page share a label: the settings page's three password
    confirmations are told apart by what each confirms, for a screen reader's list of fields
    and for a password manager."""
    labels = LabelScan()
    labels.feed(await page_html(alice, path))
    repeated = {text for text in labels.labels if labels.labels.count(text) > 1}
    assert labels.labels and not repeated


async def test_error_page_extends_base(http: httpx.AsyncClient) -> None:
    """A 404 is the site's own page, with its stylesheet and a way back, and no traceback."""
    response = await http.get("/no-such-page")
    assert response.status_code == 404
    assert scan(response.text).stylesheets == ["/static/css/app.css"]
    assert 'href="/"' in response.text
    assert "Traceback" not in response.text


async def test_landing_page_follows_session(
    http: httpx.AsyncClient, alice: SecureChatClient
) -> None:
    """The landing page offers sign-up and log-in, or the chat once signed in."""
    signed_out = (await http.get("/")).text
    signed_in = await page_html(alice, "/")
    assert 'href="/signup"' in signed_out
    assert 'href="/login"' in signed_out
    assert "Open chat" not in signed_out
    assert "Open chat" in signed_in
    assert 'href="/signup"' not in signed_in


async def test_every_asset_and_module_import_is_served(
    http: httpx.AsyncClient, alice: SecureChatClient
) -> None:
    """Scripts, their static imports and stylesheets all answer 200 with the right type."""
    pages = [(await http.get(path)).text for path in PUBLIC_PAGES]
    pages += [await page_html(alice, path) for path in SIGNED_IN_PAGES]
    scans = [scan(html) for html in pages]
    pending = [src for page in scans for src in page.scripts]
    assert pending, "the pages load no scripts"
    seen: set[str] = set()
    while pending:
        path = pending.pop()
        if path in seen:
            continue
        seen.add(path)
        response = await http.get(path)
        assert response.status_code == 200, path
        assert "javascript" in response.headers["content-type"], path
        base = httpx.URL(path)
        pending += [base.join(target).path for target in MODULE_IMPORT.findall(response.text)]
    assert {"/static/js/crypto.js", "/static/js/keystore.js", "/static/js/api.js"} <= seen
    for href in {href for page in scans for href in page.stylesheets}:
        response = await http.get(href)
        assert response.status_code == 200, href
        assert response.headers["content-type"].startswith("text/css"), href


async def test_common_password_list_is_served(http: httpx.AsyncClient) -> None:
    """The shipped list of common passwords has thousands of lower-case entries."""
    response = await http.get("/static/data/common-passwords.txt")
    assert response.status_code == 200
    entries = [line for line in response.text.splitlines() if line and not line.startswith("# ")]
    assert len(entries) >= 10_000
    assert len(set(entries)) == len(entries)
    assert {"password", "123456", "qwertyuiop", "password123"} <= set(entries)
    assert all(entry == entry.lower() for entry in entries)
