"""The pages in real Chromium: sign-up, log-in with keys restored, sessions, and page hygiene.

Sign-ups and log-ins here are real: 600,000 PBKDF2 iterations and, for a sign-up, an RSA-3072
key pair, as a person's browser does them. Accounts that a test only needs to exist are
registered from Python instead (with the same iterations, which the page insists on).
"""

from __future__ import annotations

import asyncio
import base64
import re
import sqlite3
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path
from typing import Any

import httpx
import pytest
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ed25519, padding, rsa
from playwright.async_api import Browser, BrowserContext, Page, Route, expect

from securechat import e2e
from securechat.client import COOKIE_NAME, DEVICE_COOKIE_NAME, ClientError, SecureChatClient
from tests.conftest import MakeClient, fast_config
from tests.livesrv import LiveServer

pytestmark = pytest.mark.browser

PASSWORD = "violet tractor umbrella 42"
SLOW_MS = 60_000  # a sign-up derives keys and makes an RSA-3072 key pair: allow for slow CI
PAGES = ["/", "/signup", "/login", "/recover", "/chat", "/settings"]
SIGNED_OUT_PAGES = 4  # the first ones: visited before logging in

# One record of the page's key store, read straight from IndexedDB (not through keystore.js),
# or null. A database that does not exist yet is left alone: opening it would create it empty.
STORED_KEYS = """
async (username) => (await indexedDB.databases()).every((db) => db.name !== "securechat") ? null :
new Promise((resolve, reject) => {
  const opening = indexedDB.open("securechat");
  opening.onerror = () => reject(opening.error);
  opening.onsuccess = () => {
    const db = opening.result;
    if (!db.objectStoreNames.contains("identities")) { db.close(); resolve(null); return; }
    const get = db.transaction("identities").objectStore("identities").get(username);
    get.onsuccess = () => { db.close(); resolve(get.result ?? null); };
    get.onerror = () => reject(get.error);
  };
})
"""
DECRYPT_WITH_STORED_KEY = f"""
async ([username, ciphertext]) => {{
  const record = await ({STORED_KEYS})(username);
  const bytes = Uint8Array.from(atob(ciphertext), (c) => c.charCodeAt(0));
  const plain = await crypto.subtle.decrypt({{ name: "RSA-OAEP" }}, record.encKey, bytes);
  return new TextDecoder().decode(plain);
}}
"""
TRY_EXPORTING_STORED_KEYS = f"""
async (username) => {{
  const record = await ({STORED_KEYS})(username);
  const keys = [record.encKey, record.signKey];
  const refusals = [];
  for (const key of keys) {{
    try {{ await crypto.subtle.exportKey("pkcs8", key); refusals.push("exported"); }}
    catch (error) {{ refusals.push(error.name); }}
  }}
  return {{ types: keys.map((k) => k.type), extractable: keys.map((k) => k.extractable), refusals }};
}}
"""
HAS_STORED_KEYS = f"async (username) => (await ({STORED_KEYS})(username)) !== null"
ME_STATUS = "async () => (await fetch('/api/v1/me')).status"
# Collects CSP violations from the first moment of each document.
RECORD_CSP_VIOLATIONS = """
window.__cspViolations = [];
document.addEventListener("securitypolicyviolation", (event) => {
  window.__cspViolations.push(`${event.violatedDirective} ${event.blockedURI}`);
});
"""

NewPage = Callable[..., Awaitable[Page]]


@pytest.fixture(name="new_page")
async def _new_page(browser: Browser) -> AsyncIterator[NewPage]:
    """A factory of pages, each in a fresh browser context (its own cookies and IndexedDB)."""
    contexts: list[BrowserContext] = []

    async def new_page(**context_options: Any) -> Page:
        context = await browser.new_context(**context_options)
        contexts.append(context)
        return await context.new_page()

    yield new_page
    for context in contexts:
        await context.close()


@pytest.fixture(name="alice")
async def _alice(make_client: MakeClient, identities: list[e2e.Identity]) -> SecureChatClient:
    """An account alice registered from Python, with the iterations the page requires."""
    client = make_client()
    await client.register("alice", PASSWORD, iterations=e2e.MIN_ITERATIONS, identity=identities[0])
    return client


async def fill_sign_up(page: Page, base_url: str, username: str, password: str) -> None:
    """Fill in and send the sign-up form."""
    await page.goto(base_url + "/signup")
    await page.get_by_label("Username").fill(username)
    await page.get_by_label("Password", exact=True).fill(password)
    await page.get_by_label("Repeat password").fill(password)
    await page.get_by_role("button", name="Create account").click()


async def sign_up(page: Page, base_url: str, username: str = "alice") -> None:
    """Sign up in the page, skip the recovery key it offers, and wait for the signed-in home."""
    await fill_sign_up(page, base_url, username, PASSWORD)
    await skip_recovery_key(page)
    await page.wait_for_url("**/chat", timeout=SLOW_MS)


async def skip_recovery_key(page: Page) -> None:
    """Answer the recovery key dialog that ends a sign-up with "Skip"."""
    dialog = page.get_by_role("dialog", name="Your recovery key")
    await dialog.get_by_role("button", name="Skip: no recovery key").click(timeout=SLOW_MS)


async def log_in(page: Page, base_url: str, username: str = "alice") -> None:
    """Log in through the page and wait for the signed-in home."""
    await page.goto(base_url + "/login")
    await page.get_by_label("Username").fill(username)
    await page.get_by_label("Password").fill(PASSWORD)
    await page.get_by_role("button", name="Log in").click()
    await page.wait_for_url("**/chat", timeout=SLOW_MS)


async def log_out(page: Page, *, forget: bool = False) -> None:
    """Log out from the header, answering its dialog, and wait for the log-in page."""
    await page.get_by_role("button", name="Log out", exact=True).click()
    dialog = page.get_by_role("dialog", name="Log out")
    await dialog.get_by_role("checkbox").set_checked(forget)
    await dialog.get_by_role("button", name="Log out").click()
    await page.wait_for_url("**/login")


# --- sign-up --------------------------------------------------------------------------------


async def test_sign_up_lands_on_chat(new_page: NewPage, live_server: LiveServer) -> None:
    """Signing up alice lands on /chat, which says she is signed in and has her keys here."""
    page = await new_page()
    await sign_up(page, live_server.url)
    await expect(page.get_by_role("banner")).to_contain_text("Signed in as alice")
    await expect(page.get_by_text("Your private keys are on this device")).to_be_visible()


async def test_taken_username_shows_popup(
    new_page: NewPage, live_server: LiveServer, alice: SecureChatClient
) -> None:
    """Signing up as alice, who already exists, pops up "Username already exists"."""
    page = await new_page()
    await fill_sign_up(page, live_server.url, "alice", PASSWORD)
    await expect(page.get_by_role("alert")).to_contain_text(
        "Username already exists", timeout=SLOW_MS
    )
    await expect(page.get_by_label("Username")).to_be_focused()
    assert page.url.endswith("/signup")


@pytest.mark.parametrize(
    ("password", "message"),
    [("password123", "most common passwords"), ("tr0ub4dor", "at least 10 characters")],
)
async def test_weak_password_refused_in_page(
    new_page: NewPage, live_server: LiveServer, password: str, message: str
) -> None:
    """A common or short password is refused with a reason, and no request leaves the page."""
    page = await new_page()
    api_calls: list[str] = []
    page.on(
        "request", lambda request: api_calls.append(request.url) if "/api/" in request.url else None
    )
    await fill_sign_up(page, live_server.url, "alice", password)
    password_field = page.get_by_label("Password", exact=True)
    await expect(password_field).to_have_accessible_description(re.compile(message))
    await expect(password_field).to_have_attribute("aria-invalid", "true")
    await expect(password_field).to_be_focused()
    assert api_calls == []


async def test_strength_hint_follows_typing(new_page: NewPage, live_server: LiveServer) -> None:
    """The strength hint changes as the password is typed, before anything is sent."""
    page = await new_page()
    await page.goto(live_server.url + "/signup")
    password_field = page.get_by_label("Password", exact=True)
    hint = page.locator("#password-strength")
    await password_field.fill("password123")
    await expect(hint).to_have_text(re.compile(r"^Not allowed\. .*common"))
    await password_field.fill("sunshine2024")
    await expect(hint).to_have_text(re.compile(r"^Not allowed\. .*too easy to guess"))
    await password_field.fill("sunshine2024!")
    await expect(hint).to_have_text(re.compile(r"^Fair\. "))
    await password_field.fill(PASSWORD)
    await expect(hint).to_have_text(re.compile(r"^Very strong\. "))


# --- log-in, keys and log-out ---------------------------------------------------------------


async def test_fresh_browser_login_restores_keys(
    new_page: NewPage, live_server: LiveServer
) -> None:
    """Logged in from a fresh browser, alice's restored key decrypts what Python sealed for her."""
    first = await new_page()
    await sign_up(first, live_server.url)
    await log_out(first)

    fresh = await new_page()
    await fresh.goto(live_server.url + "/")
    assert await fresh.evaluate(HAS_STORED_KEYS, "alice") is False
    login_answers: list[dict[str, Any]] = []

    async def keep_login_answer(route: Route) -> None:
        response = await route.fetch()
        login_answers.append(await response.json())
        await route.fulfill(response=response)

    await fresh.route("**/api/v1/login", keep_login_answer)
    await log_in(fresh, live_server.url)
    account = login_answers[-1]
    enc_key = serialization.load_der_public_key(base64.b64decode(account["enc_public_key"]))
    assert isinstance(enc_key, rsa.RSAPublicKey)
    oaep = padding.OAEP(mgf=padding.MGF1(hashes.SHA256()), algorithm=hashes.SHA256(), label=None)
    sealed = enc_key.encrypt(b"only alice can read this", oaep)

    plain = await fresh.evaluate(
        DECRYPT_WITH_STORED_KEY, ["alice", base64.b64encode(sealed).decode()]
    )
    assert plain == "only alice can read this"


async def test_stored_private_keys_are_not_extractable(
    new_page: NewPage, live_server: LiveServer, alice: SecureChatClient
) -> None:
    """The private keys a login puts in IndexedDB refuse to be exported."""
    page = await new_page()
    await log_in(page, live_server.url)
    result = await page.evaluate(TRY_EXPORTING_STORED_KEYS, "alice")
    assert result == {
        "types": ["private", "private"],
        "extractable": [False, False],
        "refusals": ["InvalidAccessError", "InvalidAccessError"],
    }


async def test_log_out_ends_session(
    new_page: NewPage, live_server: LiveServer, alice: SecureChatClient
) -> None:
    """Log out goes to /login, the session is dead on the server, and the keys stay here."""
    page = await new_page()
    await log_in(page, live_server.url)
    await log_out(page)
    assert await page.evaluate(ME_STATUS) == 401
    assert await page.evaluate(HAS_STORED_KEYS, "alice") is True


async def test_forget_device_removes_keys(
    new_page: NewPage, live_server: LiveServer, alice: SecureChatClient
) -> None:
    """ "Log out and forget keys on this device" ends the session and empties the key store."""
    page = await new_page()
    await log_in(page, live_server.url)
    assert await page.evaluate(HAS_STORED_KEYS, "alice") is True
    await page.goto(live_server.url + "/settings")
    await page.get_by_role("button", name="Log out and forget keys on this device").click()
    dialog = page.get_by_role("dialog", name="Forget keys on this device?")
    await dialog.get_by_role("button", name="Log out and forget").click()
    await page.wait_for_url("**/login")
    assert await page.evaluate(ME_STATUS) == 401
    assert await page.evaluate(HAS_STORED_KEYS, "alice") is False


async def test_own_browser_logs_in_while_guessers_lock_the_name(
    new_page: NewPage, tmp_path: Path, identities: list[e2e.Identity]
) -> None:
    """Guessers (from another address, behind a trusted proxy) use up alice's name: a browser
    without her device cookie is refused, and her own, logged in before, logs in again."""
    config = fast_config(tmp_path / "data", trusted_proxy_hops=1, login_failures_max=3)
    with LiveServer(config).start() as server:
        async with SecureChatClient(server.url) as alice:
            await alice.register("alice", PASSWORD, identity=identities[0])
        page = await new_page()
        await log_in(page, server.url)
        await log_out(page)
        kept = {cookie["name"] for cookie in await page.context.cookies()}
        assert DEVICE_COOKIE_NAME in kept and COOKIE_NAME not in kept
        wrong = {"username": "alice", "auth_key": base64.b64encode(b"\x00" * 32).decode()}
        headers = {"Origin": server.url, "X-Forwarded-For": "198.51.100.1"}
        async with httpx.AsyncClient(base_url=server.url, headers=headers) as guesser:
            failures = 0
            while failures < config.login_failures_max:
                answer = await guesser.post("/api/v1/login", json=wrong)
                failures += answer.status_code == 401
                if answer.status_code == 429:
                    await asyncio.sleep(int(answer.headers["Retry-After"]))
        async with SecureChatClient(server.url) as stranger:
            with pytest.raises(ClientError, match="429"):
                await stranger.login("alice", PASSWORD)
        await log_in(page, server.url)
        assert await page.evaluate(ME_STATUS) == 200


async def test_wrong_password_shows_alert(
    new_page: NewPage, live_server: LiveServer, alice: SecureChatClient
) -> None:
    """A wrong password at log-in pops up an alert and stays on /login."""
    page = await new_page()
    await page.goto(live_server.url + "/login")
    await page.get_by_label("Username").fill("alice")
    await page.get_by_label("Password").fill(PASSWORD + " typo")
    await page.get_by_role("button", name="Log in").click()
    await expect(page.get_by_role("alert")).to_contain_text(
        "Wrong username or password", timeout=SLOW_MS
    )
    assert page.url.endswith("/login")


# --- the database ---------------------------------------------------------------------------


def secrets_of(password: str, salt: bytes, iterations: int, key_backup: str) -> dict[str, bytes]:
    """Everything that must never reach the server, raw and base64, for alice's account."""
    keys = e2e.derive_keys(password, salt, iterations)
    enc_pkcs8, sign_pkcs8 = e2e.open_key_backup(key_backup, keys.wrap_key).to_pkcs8()
    enc_key = serialization.load_der_private_key(enc_pkcs8, password=None)
    sign_key = serialization.load_der_private_key(sign_pkcs8, password=None)
    assert isinstance(enc_key, rsa.RSAPrivateKey)
    assert isinstance(sign_key, ed25519.Ed25519PrivateKey)
    numbers = enc_key.private_numbers()
    raw = {
        "password": password.encode(),
        "wrap_key": keys.wrap_key,
        "auth_key": keys.auth_key,  # the server keeps only its argon2id hash
        "enc_pkcs8": enc_pkcs8,
        "sign_pkcs8": sign_pkcs8,
        "sign_seed": sign_key.private_bytes(
            serialization.Encoding.Raw,
            serialization.PrivateFormat.Raw,
            serialization.NoEncryption(),
        ),
        "rsa_d": numbers.d.to_bytes((numbers.d.bit_length() + 7) // 8, "big"),
        "rsa_p": numbers.p.to_bytes((numbers.p.bit_length() + 7) // 8, "big"),
    }
    encoded = {f"{name} (base64)": base64.b64encode(value) for name, value in raw.items()}
    return raw | encoded


async def test_database_holds_no_secrets(new_page: NewPage, live_server: LiveServer) -> None:
    """After a browser sign-up, the database and its WAL hold no password, wrap key or private key."""
    page = await new_page()
    await sign_up(page, live_server.url)
    path = live_server.database_path
    with sqlite3.connect(f"file:{path}?mode=ro", uri=True) as db:
        salt, iterations, key_backup = db.execute(
            "SELECT salt, iterations, key_backup FROM users WHERE username = 'alice'"
        ).fetchone()
    assert iterations >= e2e.MIN_ITERATIONS
    files = [path, path.with_name(path.name + "-wal")]
    stored = {file.name: file.read_bytes() for file in files if file.exists()}
    # The files read are the live ones: alice's (encrypted) key backup is in them.
    assert any(key_backup.encode() in data for data in stored.values())
    # And the backup itself is ciphertext, not an encoding of the keys.
    stored["key_backup, decoded"] = base64.b64decode(key_backup)
    secrets = secrets_of(PASSWORD, salt, iterations, key_backup)
    leaks = [
        (name, file)
        for name, value in secrets.items()
        for file, data in stored.items()
        if value in data
    ]
    assert leaks == []


# --- sessions -------------------------------------------------------------------------------


async def test_log_out_other_sessions(
    new_page: NewPage, live_server: LiveServer, alice: SecureChatClient
) -> None:
    """Settings lists both browsers' sessions; "Log out other sessions" ends the other one."""
    here = await new_page()
    elsewhere = await new_page()
    await log_in(here, live_server.url)
    await log_in(elsewhere, live_server.url)
    await here.goto(live_server.url + "/settings")
    sessions = here.get_by_role("list", name="Active sessions").get_by_role("listitem")
    await expect(sessions).to_have_count(2)
    await expect(sessions.filter(has_text="This device")).to_have_count(1)

    await here.get_by_role("button", name="Log out other sessions").click()
    confirm = here.get_by_role("dialog", name="Log out other sessions?")
    await confirm.get_by_role("button", name="Log out other sessions").click()
    await expect(here.get_by_role("status")).to_contain_text("Logged out 1 other session")
    await expect(sessions).to_have_count(1)
    # The other page may leave /chat for /login on its own once its socket is closed, so ask
    # with its browser context's cookies rather than from inside the page.
    me = await elsewhere.context.request.get(live_server.url + "/api/v1/me")
    assert me.status == 401
    assert await here.evaluate(ME_STATUS) == 200


async def test_end_one_session(
    new_page: NewPage, live_server: LiveServer, alice: SecureChatClient
) -> None:
    """ "End session" on one row of the settings page ends exactly that session."""
    page = await new_page()
    await log_in(page, live_server.url)
    await alice.login("alice", PASSWORD)
    await page.goto(live_server.url + "/settings")
    sessions = page.get_by_role("list", name="Active sessions").get_by_role("listitem")
    await expect(sessions).to_have_count(2)
    await (
        sessions.filter(has_text="Python client").get_by_role("button", name="End session").click()
    )
    await expect(sessions).to_have_count(1)
    with pytest.raises(ClientError) as refused:
        await alice.me()
    assert refused.value.status == 401
    assert await page.evaluate(ME_STATUS) == 200


# --- every page -----------------------------------------------------------------------------


async def visit_every_page(
    page: Page, base_url: str, each: Callable[[str], Awaitable[None]]
) -> None:
    """Open each page, signed out and then signed in, and run each(path) once it has loaded."""
    for path in PAGES[:SIGNED_OUT_PAGES]:
        await page.goto(base_url + path)
        await page.wait_for_load_state("networkidle")
        await each(path)
    await log_in(page, base_url)
    for path in PAGES[SIGNED_OUT_PAGES:]:
        await page.goto(base_url + path)
        await page.wait_for_load_state("networkidle")
        await each(path)


async def test_pages_fit_a_phone(
    new_page: NewPage, live_server: LiveServer, alice: SecureChatClient
) -> None:
    """At 360 px wide no page scrolls sideways."""
    page = await new_page(viewport={"width": 360, "height": 740})
    widths: dict[str, int] = {}

    async def measure(path: str) -> None:
        widths[path] = await page.evaluate("document.scrollingElement.scrollWidth")

    await visit_every_page(page, live_server.url, measure)
    assert list(widths) == PAGES
    assert {path: width for path, width in widths.items() if width > 360} == {}


async def test_pages_log_no_errors(
    new_page: NewPage, live_server: LiveServer, alice: SecureChatClient
) -> None:
    """No page logs a console error, throws, or trips the Content-Security-Policy."""
    page = await new_page()
    await page.add_init_script(RECORD_CSP_VIOLATIONS)
    problems: list[str] = []
    page.on(
        "console",
        lambda message: problems.append(message.text) if message.type == "error" else None,
    )
    page.on("pageerror", lambda error: problems.append(f"uncaught: {error}"))

    async def check(path: str) -> None:
        violations = await page.evaluate("window.__cspViolations")
        problems.extend(f"{path}: CSP {violation}" for violation in violations)

    await visit_every_page(page, live_server.url, check)
    assert problems == []
