"""static/js/directory.js in Chromium, against a real server and a malicious one."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
from playwright.async_api import Browser, Page

from securechat import e2e
from securechat.client import SecureChatClient
from tests.conftest import SignUp, identity_of
from tests.directory.test_directory import (
    change_keys,
    directory_spki,
    forge_log_entry,
    fork_server,
    swap_keys_in_database,
)
from tests.livesrv import LiveServer

pytestmark = pytest.mark.browser

PASSWORD = "correct horse battery"

# Runs first in every snippet: the module under test and an in-memory storage.
PRELUDE = """
const d = await import("/static/js/directory.js");
const c = await import("/static/js/crypto.js");
const memory = () => {
  const items = new Map();
  return { getItem: (k) => items.get(k) ?? null, setItem: (k, v) => items.set(k, String(v)) };
};
const codeOf = async (promise) => {
  try { await promise; return null; } catch (error) { return error.code ?? String(error); }
};
"""


async def run_js(page: Page, body: str, arg: object = None) -> Any:
    """Run ``body`` as an async function of ``arg`` in the page, after the prelude."""
    return await page.evaluate(f"async (arg) => {{\n{PRELUDE}\n{body}\n}}", arg)


async def log_in_page(page: Page, client: SecureChatClient, username: str) -> None:
    """Log the page's browser context in as ``username`` (the session cookie lands there)."""
    salt, iterations = await client.prelogin(username)
    keys = e2e.derive_keys(PASSWORD, salt, iterations, min_iterations=1)
    status = await page.evaluate(
        """async ([username, authKey]) => (await fetch("/api/v1/login", {
             method: "POST", headers: {"Content-Type": "application/json"},
             body: JSON.stringify({username, auth_key: authKey})})).status""",
        [username, e2e.b64encode(keys.auth_key)],
    )
    assert status == 200


def me_arg(client: SecureChatClient) -> dict[str, str]:
    """My name and public keys, for the page."""
    assert client.account is not None
    identity = identity_of(client)
    return {
        "username": client.account.username,
        "enc": e2e.b64encode(identity.enc_public_spki),
        "sign": e2e.b64encode(identity.sign_public_spki),
    }


# Turns me_arg() into the {username, encSpki, signSpki} that directory.js takes.
ME = "const me = {username: arg.me.username, encSpki: c.b64decode(arg.me.enc), signSpki: c.b64decode(arg.me.sign)};"


async def test_real_key_response_verifies(
    browser_page: Page, live_server: LiveServer, signed_up: SignUp
) -> None:
    """verifyKeyResponse accepts the server's answer and returns bob's keys and entry."""
    alice = await signed_up("alice")
    bob = await signed_up("bob")
    body = await alice.call("GET", "/api/v1/keys/bob")
    got = await run_js(
        browser_page,
        """
        const keys = await d.verifyKeyResponse(arg.body,
          {username: "BOB", directoryKey: c.b64decode(arg.key)});
        return [keys.username, c.b64encode(keys.encSpki), keys.signFingerprint, keys.entry.index,
                keys.treeHead.treeSize];
        """,
        {"body": body, "key": e2e.b64encode(directory_spki(live_server))},
    )
    identity = identity_of(bob)
    assert got == [
        "bob",
        e2e.b64encode(identity.enc_public_spki),
        e2e.fingerprint(identity.sign_public_spki),
        1,
        2,
    ]


async def test_forged_proofs_and_heads_are_refused(
    browser_page: Page, live_server: LiveServer, signed_up: SignUp
) -> None:
    """A forged inclusion proof, entry or user, and every signature bit flip, are refused."""
    alice = await signed_up("alice")
    await signed_up("bob")
    await signed_up("carol")
    body = await alice.call("GET", "/api/v1/keys/bob")
    got = await run_js(
        browser_page,
        """
        const key = c.b64decode(arg.key);
        const check = (mutate, username = "bob") => {
          const forged = structuredClone(arg.body);
          mutate(forged);
          return codeOf(d.verifyKeyResponse(forged, {username, directoryKey: key}));
        };
        const codes = {
          honest: await check(() => {}),
          proof: await check((b) => { b.inclusion_proof[0] = c.b64encode(new Uint8Array(32)); }),
          short: await check((b) => { b.inclusion_proof.pop(); }),
          index: await check((b) => { b.entry.index = 0; }),
          user: await check(() => {}, "carol"),
          size: await check((b) => { b.tree_head.tree_size = 2; }),
          malformed: await check((b) => { delete b.entry.index; }),
        };
        const signature = c.b64decode(arg.body.tree_head.signature);
        const flips = new Set();
        for (let bit = 0; bit < 512; bit += 1) {
          const flipped = signature.slice();
          flipped[bit >> 3] ^= 0x80 >> (bit & 7);
          flips.add(await check((b) => { b.tree_head.signature = c.b64encode(flipped); }));
        }
        codes.flips = [...flips];
        return codes;
        """,
        {"body": body, "key": e2e.b64encode(directory_spki(live_server))},
    )
    assert got == {
        "honest": None,
        "proof": "not_in_log",
        "short": "not_in_log",
        "index": "not_in_log",
        "user": "wrong_user",
        "size": "bad_signature",
        "malformed": "bad_response",
        "flips": ["bad_signature"],
    }


async def test_swapped_key_is_refused_and_logged_swap_warns(
    browser_page: Page, live_server: LiveServer, signed_up: SignUp, identities: list[e2e.Identity]
) -> None:
    """Bob's key swapped in the database: refused; swapped and logged: 'changed', send blocked."""
    alice = await signed_up("alice")
    await signed_up("bob")
    await log_in_page(browser_page, alice, "alice")
    first = await run_js(
        browser_page,
        """
        const directory = new d.KeyDirectory({me: "alice"});
        const keys = await directory.fetchVerifiedKeys("bob");
        directory.markVerified("bob");
        return [keys.state, keys.canSend];
        """,
    )
    assert first == ["new", True]
    swap_keys_in_database(live_server, "bob", identities[3])
    code = await run_js(
        browser_page,
        'return codeOf(new d.KeyDirectory({me: "alice"}).fetchVerifiedKeys("bob"));',
    )
    assert code == "not_in_log"
    forge_log_entry(live_server, "bob", identities[3])
    got = await run_js(
        browser_page,
        """
        const directory = new d.KeyDirectory({me: "alice"});
        const keys = await directory.fetchVerifiedKeys("bob");
        const again = await directory.fetchVerifiedKeys("bob");  // still changed after reload
        directory.acceptChange("bob");
        const accepted = await directory.fetchVerifiedKeys("bob");
        return [keys.state, keys.verified, keys.canSend, keys.previous.index, again.state,
                accepted.state, accepted.verified, accepted.canSend];
        """,
    )
    assert got == ["changed", True, False, 1, "changed", "same", False, True]


async def test_forked_head_is_detected(
    browser_page: Page,
    live_server: LiveServer,
    signed_up: SignUp,
    tmp_path: Path,
    identities: list[e2e.Identity],
) -> None:
    """Heads of a fork signed by the same key are inconsistent; the alarm stays raised."""
    await signed_up("alice")
    await signed_up("bob")
    with fork_server(live_server, tmp_path / "fork") as fork:
        await signed_up("carol")
        forge_log_entry(fork, "bob", identities[3])
        forge_log_entry(fork, "alice", identities[3])
        answers = {}
        async with SecureChatClient(live_server.url) as anonymous:
            answers["real"] = await anonymous.call("GET", "/api/v1/directory/head")
        async with SecureChatClient(fork.url) as anonymous:
            answers["fork"] = await anonymous.call("GET", "/api/v1/directory/head")
            answers["fork_proof"] = await anonymous.call(
                "GET", "/api/v1/directory/consistency?from=3&to=4"
            )
        got = await run_js(
            browser_page,
            """
            const m = await import("/static/js/merkle.js");
            const storage = memory();
            const fork = new d.KeyDirectory({me: "alice", storage,
              get: async (path) => path.includes("consistency") ? arg.fork_proof : arg.fork});
            await fork.checkHead(m.parseTreeHead(arg.real));  // alice saw the real log at 3
            const code = await codeOf(fork.checkHead(m.parseTreeHead(arg.fork)));
            const alarm = fork.alarm();
            const again = await codeOf(fork.checkHead(m.parseTreeHead(arg.fork)));
            const same = await codeOf(d.checkHeadConsistency(m.parseTreeHead(arg.real),
              {...m.parseTreeHead(arg.real), rootHash: new Uint8Array(32)}, null));
            return [code, alarm.code, again, same, fork.lastHead().treeSize];
            """,
            answers,
        )
        assert got == ["log_forked", "log_forked", "log_forked", "log_forked", 3]


async def test_directory_key_is_pinned_on_first_use(
    browser_page: Page, live_server: LiveServer, signed_up: SignUp
) -> None:
    """The first key seen is pinned in localStorage; a different one raises the alarm."""
    alice = await signed_up("alice")
    await signed_up("bob")
    await log_in_page(browser_page, alice, "alice")
    got = await run_js(
        browser_page,
        """
        const directory = new d.KeyDirectory({me: "alice"});
        await directory.fetchVerifiedKeys("bob");
        const pinned = c.b64encode(directory.pinnedDirectoryKey());
        const stored = Object.keys(localStorage).sort();
        const other = new Uint8Array(directory.pinnedDirectoryKey());
        other[43] ^= 1;
        directory.acceptDirectoryKey(other);
        const code = await codeOf(directory.fetchVerifiedKeys("bob"));
        return [pinned, stored, code, directory.alarm().code];
        """,
    )
    assert got == [
        e2e.b64encode(directory_spki(live_server)),
        ["securechat.contacts.v1.alice", "securechat.directory.v1"],
        "directory_key_changed",
        "directory_key_changed",
    ]


async def test_safety_numbers_agree_in_two_browsers_and_python(
    browser: Browser,
    browser_page: Page,
    live_server: LiveServer,
    signed_up: SignUp,
    identities: list[e2e.Identity],
) -> None:
    """Alice's and bob's browsers and Python show the same number; it changes with either key."""
    alice = await signed_up("alice")
    bob = await signed_up("bob")
    await log_in_page(browser_page, alice, "alice")
    context = await browser.new_context()
    try:
        bob_page = await context.new_page()
        await bob_page.goto(live_server.url + "/")
        await log_in_page(bob_page, bob, "bob")
        panel = (
            ME
            + """
            const directory = new d.KeyDirectory({me: me.username});
            const keys = await directory.fetchVerifiedKeys(arg.them);
            const view = await directory.verificationPanel(me, keys);
            return [view.safetyNumber, view.groups.length, view.state, view.theirs.encFingerprint];
        """
        )
        at_alice = await run_js(browser_page, panel, {"me": me_arg(alice), "them": "bob"})
        at_bob = await run_js(bob_page, panel, {"me": me_arg(bob), "them": "alice"})
        python = alice.safety_number(await alice.fetch_verified_keys("bob"))
        assert at_alice[0] == at_bob[0] == python
        assert len(python) == 60 and at_alice[1] == 12
        assert at_alice[3] == e2e.fingerprint(identity_of(bob).enc_public_spki)

        change_keys(live_server, "bob", identities[3])
        after_bob = await run_js(browser_page, panel, {"me": me_arg(alice), "them": "bob"})
        assert after_bob[2] == "changed" and after_bob[0] != python
        change_keys(live_server, "alice", identities[2])
        after_alice = await run_js(bob_page, panel, {"me": me_arg(bob), "them": "alice"})
        assert after_alice[2] == "changed"
        assert after_alice[0] not in (python, after_bob[0])
    finally:
        await context.close()


async def test_unreachable_consistency_proof_raises_no_alarm(
    browser_page: Page, signed_up: Any
) -> None:
    """A 503 while fetching a consistency proof is not taken for a fork; a refusal (404) is."""
    await signed_up("alice")
    await signed_up("bob")
    await run_js(
        browser_page,
        """
        const api = await import("/static/js/api.js");
        window.__answer = "ok";
        const get = async (path) => {
          if (path.includes("/consistency") && window.__answer !== "ok") {
            const status = window.__answer;
            throw new api.ApiError({status, code: "x", message: "x"});
          }
          return (await fetch(path)).json();
        };
        window.__directory = new d.KeyDirectory({storage: memory(), get});
        await window.__directory.checkHead();
        """,
    )
    await signed_up("carol")
    outcome = await run_js(
        browser_page,
        """
        const directory = window.__directory;
        window.__answer = 503;
        const busy = await codeOf(directory.checkHead());
        const afterBusy = directory.alarm();
        window.__answer = 404;
        const refused = await codeOf(directory.checkHead());
        return {busy, afterBusy, refused, afterRefusal: directory.alarm()?.code ?? null};
        """,
    )
    assert outcome["busy"] == "x"
    assert outcome["afterBusy"] is None
    assert outcome["refused"] == outcome["afterRefusal"] == "log_forked"


# --- self-monitoring: checkMyEntries -----------------------------------------------------------

# Checks alice's own entries with the keys in arg.me, keeping state in window.__selfStorage.
CHECK_MINE = (
    ME
    + """
window.__selfStorage ??= memory();
const directory = new d.KeyDirectory({me: me.username, storage: window.__selfStorage});
const code = await codeOf(directory.checkMyEntries(me));
const got = code === null ? await directory.checkMyEntries(me) : null;
return {code, alarm: directory.alarm()?.code ?? null, treeSize: directory.lastHead().treeSize,
        again: got === null ? null : got.mine.length};
"""
)


async def test_my_own_registration_raises_no_alarm(browser_page: Page, signed_up: SignUp) -> None:
    """Alice's check accepts her registration entry and reads the whole log without alarm."""
    alice = await signed_up("alice")
    await signed_up("bob")
    got = await run_js(browser_page, CHECK_MINE, {"me": me_arg(alice)})
    assert got == {"code": None, "alarm": None, "treeSize": 2, "again": 0}


async def test_forged_entry_for_me_raises_the_alarm(
    browser_page: Page, live_server: LiveServer, signed_up: SignUp, identities: list[e2e.Identity]
) -> None:
    """Another key appended to the log under alice's name is caught by alice's own check."""
    alice = await signed_up("alice")
    await signed_up("bob")
    assert (await run_js(browser_page, CHECK_MINE, {"me": me_arg(alice)}))["code"] is None
    forge_log_entry(live_server, "alice", identities[3])
    got = await run_js(browser_page, CHECK_MINE, {"me": me_arg(alice)})
    assert got == {
        "code": "foreign_key_for_me",
        "alarm": "foreign_key_for_me",
        "treeSize": 3,
        "again": None,
    }


async def test_key_change_seen_by_my_device_raises_no_alarm(
    browser_page: Page, live_server: LiveServer, signed_up: SignUp, identities: list[e2e.Identity]
) -> None:
    """A key change logged through the store, with this device holding the new keys, is fine."""
    alice = await signed_up("alice")
    await signed_up("bob")
    assert (await run_js(browser_page, CHECK_MINE, {"me": me_arg(alice)}))["code"] is None
    change_keys(live_server, "alice", identities[2])
    new_keys = {
        "username": "alice",
        "enc": e2e.b64encode(identities[2].enc_public_spki),
        "sign": e2e.b64encode(identities[2].sign_public_spki),
    }
    got = await run_js(browser_page, CHECK_MINE, {"me": new_keys})
    assert got == {"code": None, "alarm": None, "treeSize": 3, "again": 0}


async def test_entries_not_in_the_signed_head_raise_the_alarm(
    browser_page: Page, signed_up: SignUp
) -> None:
    """A page of entries that does not hash to the verified head is bad_entries, an alarm."""
    alice = await signed_up("alice")
    await signed_up("bob")
    got = await run_js(
        browser_page,
        ME
        + """
        const get = async (path) => {
          const body = await (await fetch(path)).json();
          if (path.includes("/entries")) body.entries[0].timestamp += 1;
          return body;
        };
        const directory = new d.KeyDirectory({me: "alice", storage: memory(), get});
        return [await codeOf(directory.checkMyEntries(me)), directory.alarm()?.code];
        """,
        {"me": me_arg(alice)},
    )
    assert got == ["bad_entries", "bad_entries"]
