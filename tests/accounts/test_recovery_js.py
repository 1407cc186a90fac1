"""static/js/crypto.js's password-change and recovery-key functions in real Chromium, checked
against their Python twin (securechat/client/credentials.py) and the shared e2e vectors."""

from __future__ import annotations

from typing import Any

import pytest
from playwright.async_api import Page

from securechat import e2e
from securechat.client import derive_recovery_keys, format_recovery_key, parse_recovery_key
from tests import vectorkit
from tests.test_crypto_js import run_js

pytestmark = pytest.mark.browser

KEY = bytes(range(0xA0, 0xB0))


@pytest.fixture(name="vectors", scope="module")
def _vectors() -> dict[str, Any]:
    return vectorkit.load("e2e")


async def test_recovery_derivation_matches_python(
    browser_page: Page, vectors: dict[str, Any]
) -> None:
    """JS and Python derive the same recovery_auth, and a backup JS re-wraps under the recovery
    key opens in Python into alice's keys."""
    result = await run_js(
        browser_page,
        """
        const key = c.parseRecoveryKey(arg.code);
        const recovery = await c.deriveRecoveryKeys(key);
        const wrapKey = await c.importWrapKey(c.b64decode(arg.vectors.derivation.wrap_key));
        const backup = await c.rewrapKeyBackup(arg.vectors.key_backup.backup, wrapKey, recovery.wrapKey);
        return { auth: c.b64encode(recovery.authKey), backup, code: c.formatRecoveryKey(key),
                 extractable: recovery.wrapKey.extractable };
        """,
        {"code": format_recovery_key(KEY), "vectors": vectors},
    )
    python = derive_recovery_keys(KEY)
    assert result["auth"] == e2e.b64encode(python.auth_key)
    assert result["code"] == format_recovery_key(KEY) == "A0A1-A2A3-A4A5-A6A7-A8A9-AAAB-ACAD-AEAF"
    assert result["extractable"] is False
    opened = e2e.open_key_backup(result["backup"], python.wrap_key)
    assert opened.sign_public_spki == vectorkit.identity(vectors, "alice").sign_public_spki
    assert result["backup"] != vectors["key_backup"]["backup"]  # a fresh IV and key


async def test_rewrap_with_a_wrong_key_is_a_key_backup_error(
    browser_page: Page, vectors: dict[str, Any]
) -> None:
    """The wrong current password's wrap key: KeyBackupError (code key_backup), nothing sealed."""
    result = await run_js(
        browser_page,
        """
        const wrong = await c.importWrapKey(new Uint8Array(32));
        try {
          await c.rewrapKeyBackup(arg.key_backup.backup, wrong, wrong);
          return "sealed";
        } catch (error) {
          return error.code;
        }
        """,
        vectors,
    )
    assert result == "key_backup"


@pytest.mark.parametrize(
    "typed",
    [
        "a0a1 a2a3 a4a5 a6a7 a8a9 aaab acad aeaf",
        "A0A1A2A3A4A5A6A7A8A9AAABACADAEAF",
        " a0a1-a2a3-a4a5-a6a7-a8a9-aaab-acad-aeaf ",
    ],
)
async def test_a_typed_recovery_key_parses_alike(browser_page: Page, typed: str) -> None:
    """Any case, spaces or dashes: the same 16 bytes in JS and in Python."""
    parsed = await run_js(browser_page, "return c.b64encode(c.parseRecoveryKey(arg));", typed)
    assert e2e.b64decode(parsed) == parse_recovery_key(typed) == KEY


@pytest.mark.parametrize(
    "typed", ["", "A0A1", "G0A1-A2A3-A4A5-A6A7-A8A9-AAAB-ACAD-AEAF", "A0" * 17]
)
async def test_a_mistyped_recovery_key_is_refused(browser_page: Page, typed: str) -> None:
    """Too short, too long or not hex: a RangeError with a sentence to show."""
    message = await run_js(
        browser_page,
        "try { c.parseRecoveryKey(arg); return null; } catch (e) { return e.name + ': ' + e.message; }",
        typed,
    )
    assert message is not None and message.startswith("RangeError: A recovery key is 32")
