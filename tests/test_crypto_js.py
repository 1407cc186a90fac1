"""static/js/crypto.js in real Chromium: the shared vectors, and cross-checks with securechat.e2e.

Each test loads the module in a page of the live app (served under its strict CSP) and runs an
async function there; binary values cross the boundary as base64 strings.
"""

from __future__ import annotations

import os
from typing import Any

import pytest
from playwright.async_api import Page

from securechat import e2e
from tests import vectorkit
from tests.vectors import make_e2e_vectors

pytestmark = pytest.mark.browser


@pytest.fixture(name="vectors", scope="module")
def _vectors() -> dict[str, Any]:
    return vectorkit.load("e2e")


@pytest.fixture(name="alice", scope="module")
def _alice(vectors: dict[str, Any]) -> e2e.Identity:
    return vectorkit.identity(vectors, "alice")


@pytest.fixture(name="bob", scope="module")
def _bob(vectors: dict[str, Any]) -> e2e.Identity:
    return vectorkit.identity(vectors, "bob")


# In the page: `c` is the crypto module, `arg` the argument, and `fromVector(keys)` imports an
# identity from a vectors-style {enc_pkcs8, sign_pkcs8} object.
PRELUDE = """
const c = await import("/static/js/crypto.js");
const fromVector = (keys) =>
  c.importIdentity(c.b64decode(keys.enc_pkcs8), c.b64decode(keys.sign_pkcs8));
"""


async def run_js(page: Page, body: str, arg: Any = None) -> Any:
    """Run ``body`` as an async function of ``arg`` in the page, after the prelude."""
    return await page.evaluate(f"async (arg) => {{ {PRELUDE} {body} }}", arg)


# --- vectors --------------------------------------------------------------------------------


async def test_derivation_matches_vector(browser_page: Page, vectors: dict[str, Any]) -> None:
    """JS derives the vector auth key, and a wrap key that opens the vector backup."""
    result = await run_js(
        browser_page,
        """
        const v = arg.derivation;
        const salt = c.b64decode(v.salt);
        const { authKey, wrapKey } = await c.deriveKeys(v.password, salt, v.iterations);
        const opened = await c.openKeyBackup(arg.key_backup.backup, wrapKey);
        return { auth: c.b64encode(authKey), extractable: wrapKey.extractable,
                 sign: c.b64encode(opened.signSpki) };
        """,
        vectors,
    )
    assert result["auth"] == vectors["derivation"]["auth_key"]
    assert result["extractable"] is False
    assert result["sign"] == vectors["identities"]["alice"]["sign_spki"]


async def test_vector_key_backup_opens_non_extractable(
    browser_page: Page, vectors: dict[str, Any]
) -> None:
    """The vector backup opens into alice's public keys, with non-extractable private keys."""
    result = await run_js(
        browser_page,
        """
        const wrapKey = await c.importWrapKey(c.b64decode(arg.derivation.wrap_key));
        const id = await c.openKeyBackup(arg.key_backup.backup, wrapKey);
        const { encSpki, signSpki } = c.exportPublicKeys(id);
        return { enc: c.b64encode(encSpki), sign: c.b64encode(signSpki),
                 extractable: [id.encKey.extractable, id.signKey.extractable],
                 usages: [id.encKey.usages, id.signKey.usages] };
        """,
        vectors,
    )
    alice = vectors["identities"]["alice"]
    assert (result["enc"], result["sign"]) == (alice["enc_spki"], alice["sign_spki"])
    assert result["extractable"] == [False, False]
    assert result["usages"] == [["decrypt"], ["sign"]]


async def test_vector_envelopes_open(browser_page: Page, vectors: dict[str, Any]) -> None:
    """Bob (through rk) and alice (through sk) open every vector envelope to its text."""
    result = await run_js(
        browser_page,
        """
        const alice = await fromVector(arg.identities.alice);
        const bob = await fromVector(arg.identities.bob);
        const out = [];
        for (const v of arg.envelopes) {
          const context = { messageId: v.id, sender: v.from, recipient: v.to,
                            senderSignSpki: alice.signSpki };
          out.push(await c.openMessage(v.envelope, { ...context, reader: bob }));
          out.push(await c.openMessage(v.envelope, { ...context, reader: alice, asSender: true }));
        }
        return out;
        """,
        vectors,
    )
    expected = [{"text": v["text"], "writtenMs": v["ts"]} for v in vectors["envelopes"]]
    assert result == [plain for plain in expected for _ in range(2)]


async def test_vector_aad_and_signed_bytes(browser_page: Page, vectors: dict[str, Any]) -> None:
    """JS lays out the AAD and the signed bytes exactly as the vectors do."""
    result = await run_js(
        browser_page,
        """
        return arg.map((v) => {
          const [iv, ct, rk, sk] = ["iv", "ct", "rk", "sk"].map((k) => c.b64decode(v.envelope[k]));
          return [c.b64encode(c.envelopeAad(v.id, v.from, v.to)),
                  c.b64encode(c.envelopeSignedBytes(v.id, v.from, v.to, iv, ct, rk, sk))];
        });
        """,
        vectors["envelopes"],
    )
    assert result == [[v["aad"], v["signed_bytes"]] for v in vectors["envelopes"]]


async def test_vector_ciphertext_is_reproduced(browser_page: Page, vectors: dict[str, Any]) -> None:
    """The vector message key and IV give the vector ciphertext in JS too."""
    result = await run_js(
        browser_page,
        """
        const alice = await fromVector(arg.identities.alice);
        const bobSpki = c.b64decode(arg.identities.bob.enc_spki);
        const out = [];
        for (const v of arg.envelopes) {
          const envelope = await c.encryptMessage({
            messageId: v.id, sender: v.from, recipient: v.to, text: v.text, writtenMs: v.ts,
            senderIdentity: alice, recipientEncSpki: bobSpki,
            _aesKey: c.b64decode(v.aes_key), _iv: c.b64decode(v.envelope.iv) });
          out.push([envelope.iv, envelope.ct]);
        }
        return out;
        """,
        vectors,
    )
    assert result == [[v["envelope"]["iv"], v["envelope"]["ct"]] for v in vectors["envelopes"]]


async def test_vector_fingerprints(browser_page: Page, vectors: dict[str, Any]) -> None:
    """JS fingerprints of the vector public keys are the vector ones."""
    result = await run_js(
        browser_page,
        """
        const out = {};
        for (const [name, keys] of Object.entries(arg)) {
          out[name] = [await c.fingerprint(c.b64decode(keys.enc_spki)),
                       await c.fingerprint(c.b64decode(keys.sign_spki))];
        }
        return out;
        """,
        vectors["identities"],
    )
    for name, keys in vectors["identities"].items():
        assert result[name] == [keys["enc_fingerprint"], keys["sign_fingerprint"]]


async def test_vector_safety_number(browser_page: Page, vectors: dict[str, Any]) -> None:
    """JS computes the vector safety number, whichever side computes it."""
    result = await run_js(
        browser_page,
        """
        const keys = (k) => [c.b64decode(k.sign_spki), c.b64decode(k.enc_spki)];
        const [a, b] = [keys(arg.alice), keys(arg.bob)];
        return [await c.safetyNumber("alice", ...a, "bob", ...b),
                await c.safetyNumber("bob", ...b, "alice", ...a)];
        """,
        vectors["identities"],
    )
    assert result == [vectors["safety_number"]["value"]] * 2


# --- cross-checks with Python ---------------------------------------------------------------


async def test_js_message_opens_in_python(
    browser_page: Page, vectors: dict[str, Any], alice: e2e.Identity, bob: e2e.Identity
) -> None:
    """A 4,000-character emoji message sealed by JS opens in Python for both parties."""
    text = make_e2e_vectors.long_text(4000)
    envelope = await run_js(
        browser_page,
        """
        const alice = await fromVector(arg.alice);
        return c.encryptMessage({ messageId: "js-1", sender: "alice", recipient: "bob",
          text: arg.text, writtenMs: 1700000000123, senderIdentity: alice,
          recipientEncSpki: c.b64decode(arg.bob.enc_spki) });
        """,
        vectors["identities"] | {"text": text},
    )
    opened = [
        e2e.open_message(
            envelope,
            message_id="js-1",
            sender="alice",
            recipient="bob",
            reader=reader,
            sender_sign_spki=alice.sign_public_spki,
            as_sender=reader is alice,
        )
        for reader in (bob, alice)
    ]
    assert opened == [e2e.Plaintext(text=text, written_ms=1_700_000_000_123)] * 2


async def test_python_message_opens_in_js(
    browser_page: Page, vectors: dict[str, Any], alice: e2e.Identity, bob: e2e.Identity
) -> None:
    """A 4,000-character emoji message sealed by Python opens in JS."""
    text = make_e2e_vectors.long_text(4000)
    envelope = e2e.encrypt_message(
        message_id="py-1",
        sender="alice",
        recipient="bob",
        text=text,
        written_ms=42,
        sender_identity=alice,
        recipient_enc_spki=bob.enc_public_spki,
    )
    result = await run_js(
        browser_page,
        """
        const bob = await fromVector(arg.bob);
        return c.openMessage(arg.envelope, { messageId: "py-1", sender: "alice", recipient: "bob",
          reader: bob, senderSignSpki: c.b64decode(arg.alice.sign_spki) });
        """,
        vectors["identities"] | {"envelope": envelope},
    )
    assert result == {"text": text, "writtenMs": 42}


async def test_js_key_backup_opens_in_python(browser_page: Page) -> None:
    """A JS-generated identity's backup opens in Python to the same public keys."""
    wrap_key = os.urandom(32)
    result = await run_js(
        browser_page,
        """
        const wrapKey = await c.importWrapKey(c.b64decode(arg));
        const { identity, keyBackup } = await c.createIdentity(wrapKey);
        const { encSpki, signSpki } = c.exportPublicKeys(identity);
        return { keyBackup, enc: c.b64encode(encSpki), sign: c.b64encode(signSpki) };
        """,
        e2e.b64encode(wrap_key),
    )
    opened = e2e.open_key_backup(result["keyBackup"], wrap_key)
    assert e2e.b64encode(opened.enc_public_spki) == result["enc"]
    assert e2e.b64encode(opened.sign_public_spki) == result["sign"]
    assert e2e.load_rsa_public_spki(opened.enc_public_spki) == 3072


async def test_python_key_backup_opens_in_js(
    browser_page: Page, vectors: dict[str, Any], alice: e2e.Identity
) -> None:
    """A Python-sealed backup opens in JS to the same public keys."""
    wrap_key = os.urandom(32)
    backup = e2e.seal_key_backup(alice, wrap_key)
    result = await run_js(
        browser_page,
        """
        const id = await c.openKeyBackup(arg.backup, await c.importWrapKey(c.b64decode(arg.key)));
        return [c.b64encode(id.encSpki), c.b64encode(id.signSpki)];
        """,
        {"backup": backup, "key": e2e.b64encode(wrap_key)},
    )
    assert result == [
        vectors["identities"]["alice"]["enc_spki"],
        vectors["identities"]["alice"]["sign_spki"],
    ]


async def test_created_identity_cannot_be_exported(browser_page: Page) -> None:
    """After the one-time backup, neither private key can be exported again."""
    result = await run_js(
        browser_page,
        """
        const wrapKey = await c.importWrapKey(new Uint8Array(32));
        const { identity } = await c.createIdentity(wrapKey, 2048);
        const attempts = [identity.encKey, identity.signKey].map((key) =>
          crypto.subtle.exportKey("pkcs8", key).then(() => "exported", (e) => e.name));
        return { extractable: [identity.encKey.extractable, identity.signKey.extractable],
                 exports: await Promise.all(attempts) };
        """,
    )
    assert result == {"extractable": [False, False], "exports": ["InvalidAccessError"] * 2}


async def test_fresh_safety_number_equals_python(browser_page: Page, bob: e2e.Identity) -> None:
    """For a fresh JS identity, JS and Python compute the same safety number."""
    result = await run_js(
        browser_page,
        """
        const id = await c.generateIdentity(2048);
        const bob = [c.b64decode(arg.sign), c.b64decode(arg.enc)];
        return { sign: c.b64encode(id.signSpki), enc: c.b64encode(id.encSpki),
                 number: await c.safetyNumber("carol", id.signSpki, id.encSpki, "bob", ...bob) };
        """,
        {"sign": e2e.b64encode(bob.sign_public_spki), "enc": e2e.b64encode(bob.enc_public_spki)},
    )
    sign, enc = e2e.b64decode(result["sign"]), e2e.b64decode(result["enc"])
    expected = e2e.safety_number(
        "bob", bob.sign_public_spki, bob.enc_public_spki, "carol", sign, enc
    )
    assert result["number"] == expected


# --- failures -------------------------------------------------------------------------------


async def test_every_single_tamper_is_unverifiable(
    browser_page: Page, vectors: dict[str, Any]
) -> None:
    """Flipping a bit of any field, or changing id, from or to, gives code "unverifiable"."""
    result = await run_js(
        browser_page,
        """
        const bob = await fromVector(arg.identities.bob);
        const v = arg.envelopes[0];
        const flip = (b64) => {
          const bytes = c.b64decode(b64);
          bytes[bytes.length - 1] ^= 1;
          return c.b64encode(bytes);
        };
        const base = { messageId: v.id, sender: v.from, recipient: v.to, reader: bob,
                       senderSignSpki: c.b64decode(arg.identities.alice.sign_spki) };
        const cases = {
          id: [v.envelope, { messageId: "other" }], from: [v.envelope, { sender: "mallory" }],
          to: [v.envelope, { recipient: "carol" }] };
        for (const k of ["iv", "ct", "rk", "sk", "sig"]) {
          cases[k] = [{ ...v.envelope, [k]: flip(v.envelope[k]) }, {}];
        }
        const codes = {};
        for (const [name, [envelope, context]] of Object.entries(cases)) {
          codes[name] = await c.openMessage(envelope, { ...base, ...context }).then(
            () => "opened", (e) => e.code);
        }
        return codes;
        """,
        vectors,
    )
    fields = ["id", "from", "to", "iv", "ct", "rk", "sk", "sig"]
    assert result == dict.fromkeys(fields, "unverifiable")


async def test_malformed_envelopes_are_unverifiable(
    browser_page: Page, vectors: dict[str, Any]
) -> None:
    """Wrong version, extra or missing fields and bad base64 give code "unverifiable"."""
    result = await run_js(
        browser_page,
        """
        const bob = await fromVector(arg.identities.bob);
        const v = arg.envelopes[0];
        const { sk, ...noSk } = v.envelope;
        const variants = [{ ...v.envelope, v: 2 }, { ...v.envelope, x: 1 }, noSk, null,
                          { ...v.envelope, iv: "AAAA" }, { ...v.envelope, ct: "QR==" }];
        const context = { messageId: v.id, sender: v.from, recipient: v.to, reader: bob,
                          senderSignSpki: c.b64decode(arg.identities.alice.sign_spki) };
        return Promise.all(variants.map((envelope) =>
          c.openMessage(envelope, context).then(() => "opened", (e) => e.code)));
        """,
        vectors,
    )
    assert result == ["unverifiable"] * 6


async def test_wrong_reader_is_undecryptable(browser_page: Page, vectors: dict[str, Any]) -> None:
    """A valid envelope for bob gives alice (through rk) code "undecryptable"."""
    result = await run_js(
        browser_page,
        """
        const alice = await fromVector(arg.identities.alice);
        const v = arg.envelopes[0];
        return c.openMessage(v.envelope, { messageId: v.id, sender: v.from, recipient: v.to,
          reader: alice, senderSignSpki: alice.signSpki }).then(() => "opened", (e) => e.code);
        """,
        vectors,
    )
    assert result == "undecryptable"


async def test_wrong_wrap_key_raises_key_backup_error(
    browser_page: Page, vectors: dict[str, Any]
) -> None:
    """The vector backup does not open with another wrap key."""
    result = await run_js(
        browser_page,
        """
        const wrapKey = await c.importWrapKey(new Uint8Array(32));
        return c.openKeyBackup(arg, wrapKey).then(() => "opened", (e) => [e.name, e.code]);
        """,
        vectors["key_backup"]["backup"],
    )
    assert result == ["KeyBackupError", "key_backup"]


async def test_cheap_derivation_is_refused(browser_page: Page) -> None:
    """deriveKeys refuses fewer than 600,000 iterations unless the floor is lowered explicitly."""
    result = await run_js(
        browser_page,
        """
        const salt = new Uint8Array(16);
        const refused = await c.deriveKeys("pw", salt, 1000).then(() => "derived", (e) => e.name);
        const lowered = await c.deriveKeys("pw", salt, 1000, { minIterations: 1000 });
        return [refused, lowered.authKey.length];
        """,
    )
    assert result == ["RangeError", 32]


async def test_b64decode_refuses_non_canonical_base64(browser_page: Page) -> None:
    """JS refuses the same non-canonical base64 strings as Python."""
    samples = ["QR==", "QQ", "QQ=", "Q Q==", "QQ==\n", "-_8="]
    result = await run_js(
        browser_page,
        """
        return arg.map((s) => {
          try {
            c.b64decode(s);
            return "decoded";
          } catch (e) {
            return e.name;
          }
        });
        """,
        samples,
    )
    assert result == ["TypeError"] * len(samples)
