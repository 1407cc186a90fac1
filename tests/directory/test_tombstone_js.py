"""Tombstones in static/js/directory.js, in Chromium against a real server: a deleted account's
answer is proved and refused as keys, a forged one is caught, and my own tombstone is no alarm."""

from __future__ import annotations

import pytest
from playwright.async_api import Page

from securechat import e2e
from tests.conftest import SignUp
from tests.directory.test_directory import directory_spki
from tests.directory.test_directory_js import run_js
from tests.livesrv import LiveServer

pytestmark = pytest.mark.browser

PASSWORD = "correct horse battery"


async def test_a_deleted_accounts_answer_is_a_proved_tombstone(
    browser_page: Page, live_server: LiveServer, signed_up: SignUp
) -> None:
    """verifyKeyResponse throws NoKeysError account_deleted with the tombstone; a tombstone
    claimed where the log has keys, or served for someone else, is refused."""
    alice = await signed_up("alice")
    bob = await signed_up("bob")
    await signed_up("carol")
    honest_keys = await alice.call("GET", "/api/v1/keys/carol")
    await bob.delete_account(PASSWORD)
    body = await alice.call("GET", "/api/v1/keys/bob")
    assert body["status"] == "deleted" and "enc_public_key" not in body
    got = await run_js(
        browser_page,
        """
        const key = c.b64decode(arg.key);
        const outcome = async (json, username) => {
          try { await d.verifyKeyResponse(json, {username, directoryKey: key}); return "keys"; }
          catch (error) {
            return [error.code, error instanceof d.NoKeysError, error.message,
                    error.tombstone?.entry.index ?? null];
          }
        };
        const claimed = {username: "carol", status: "deleted", entry: arg.keys.entry,
                         inclusion_proof: arg.keys.inclusion_proof, tree_head: arg.keys.tree_head};
        return {
          honest: await outcome(arg.body, "bob"),
          claimed: await outcome(claimed, "carol"),
          otherUser: await outcome(arg.body, "alice"),
          badStatus: await outcome({...arg.body, status: "gone"}, "bob"),
        };
        """,
        {"body": body, "keys": honest_keys, "key": e2e.b64encode(directory_spki(live_server))},
    )
    assert got["honest"] == ["account_deleted", True, "This account was deleted.", 3]
    assert got["claimed"][:2] == ["not_in_log", False]
    assert got["otherUser"][:2] == ["wrong_user", False]
    assert got["badStatus"][:2] == ["bad_response", False]


async def test_a_tombstone_under_my_name_is_never_foreign(browser_page: Page) -> None:
    """foreignEntries skips tombstones: withdrawn keys cannot be used to pose as me."""
    got = await run_js(
        browser_page,
        """
        const zero = d.TOMBSTONE_FINGERPRINT;
        const mine = [
          {index: 0, encFingerprint: "a".repeat(64), signFingerprint: "b".repeat(64)},
          {index: 3, encFingerprint: zero, signFingerprint: zero},
        ];
        const current = {encFingerprint: "a".repeat(64), signFingerprint: "b".repeat(64)};
        return [d.foreignEntries(mine, current, [], true).length,
                d.foreignEntries(mine, current, [], false).length];
        """,
    )
    assert got == [0, 0]
