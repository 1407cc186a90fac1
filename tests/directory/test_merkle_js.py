"""static/js/merkle.js in Debian's Chromium, against the same vectors as the Python twin."""

from __future__ import annotations

import base64
import dataclasses
from typing import Any

import pytest
from playwright.async_api import Page

from securechat.directory.merkle import MerkleTree, node_hash
from securechat.directory.transparency import SignedTreeHead, tree_head_bytes, user_hash
from tests import vectorkit

pytestmark = pytest.mark.browser


# Runs first in every snippet: the module under test, and hex <-> bytes helpers.
PRELUDE = """
const m = await import("/static/js/merkle.js");
const hex = (s) => Uint8Array.from(s.match(/../g) ?? [], (b) => parseInt(b, 16));
const toHex = (b) => Array.from(b, (x) => x.toString(16).padStart(2, "0")).join("");
"""


@pytest.fixture(name="vectors", scope="module")
def _vectors() -> dict[str, Any]:
    """The known-answer vectors of tests/vectors/merkle.json."""
    return vectorkit.load("merkle")


@pytest.fixture(name="spki_hex")
def _spki_hex(vectors: dict[str, Any]) -> str:
    """The directory key's SPKI DER, in hex."""
    return base64.b64decode(vectors["signing_key"]["spki"]).hex()


async def run_js(page: Page, body: str, arg: object = None) -> Any:
    """Run ``body`` as an async function of ``arg`` in the page, after the prelude."""
    return await page.evaluate(f"async (arg) => {{\n{PRELUDE}\n{body}\n}}", arg)


def _flip(data: bytes, bit: int) -> bytes:
    """Return ``data`` with one bit inverted."""
    out = bytearray(data)
    out[bit // 8] ^= 0x80 >> (bit % 8)
    return bytes(out)


async def test_leaf_hash_matches_reference(browser_page: Page, vectors: dict[str, Any]) -> None:
    """leafHash of the RFC 6962 test leaves gives the reference leaf hashes."""
    got = await run_js(
        browser_page,
        "return Promise.all(arg.map(async (x) => toHex(await m.leafHash(hex(x)))));",
        vectors["rfc6962"]["leaves"],
    )
    assert got == vectors["rfc6962"]["leaf_hashes"]


async def test_all_inclusion_proofs_verify(browser_page: Page, vectors: dict[str, Any]) -> None:
    """verifyInclusion accepts every reference and pinned inclusion proof of the 8-leaf tree."""
    cases = vectors["rfc6962"]["inclusion"] + vectors["computed"]["inclusion"]
    got = await run_js(
        browser_page,
        """
        const [cases, leaves, roots] = arg;
        return Promise.all(cases.map((c) => m.verifyInclusion(
          hex(leaves[c.index]), c.index, c.size, c.proof.map(hex), hex(roots[c.size]))));
        """,
        [cases, vectors["rfc6962"]["leaf_hashes"], vectors["rfc6962"]["roots"]],
    )
    assert got == [True] * len(cases)


async def test_all_consistency_proofs_verify(browser_page: Page, vectors: dict[str, Any]) -> None:
    """verifyConsistency accepts every reference and pinned consistency proof."""
    cases = vectors["rfc6962"]["consistency"] + vectors["computed"]["consistency"]
    got = await run_js(
        browser_page,
        """
        const [cases, roots] = arg;
        return Promise.all(cases.map((c) => m.verifyConsistency(
          c.old_size, c.new_size, hex(roots[c.old_size]), hex(roots[c.new_size]),
          c.proof.map(hex))));
        """,
        [cases, vectors["rfc6962"]["roots"]],
    )
    assert got == [True] * len(cases)


async def test_forged_inclusion_proofs_are_rejected(
    browser_page: Page, vectors: dict[str, Any]
) -> None:
    """A flipped byte, an extra or missing element, or another index or size all fail."""
    cases = [c for c in vectors["computed"]["inclusion"] if c["proof"]]
    accepted = await run_js(
        browser_page,
        """
        const [cases, leaves, roots] = arg;
        const accepted = [];
        for (const c of cases) {
          const proof = c.proof.map(hex);
          const leaf = hex(leaves[c.index]);
          const root = hex(roots[c.size]);
          const forgeries = {
            "extra element": [...proof, root],
            "leading element": [leaf, ...proof],
          };
          proof.forEach((_, i) => {
            const flipped = proof.map((p) => p.slice());
            flipped[i][i % 32] ^= 0x40;
            forgeries[`flipped byte in ${i}`] = flipped;
            forgeries[`missing ${i}`] = proof.filter((_, j) => j !== i);
          });
          for (const [what, forged] of Object.entries(forgeries)) {
            if (await m.verifyInclusion(leaf, c.index, c.size, forged, root)) {
              accepted.push(`${c.index}/${c.size}: ${what}`);
            }
          }
          if (await m.verifyInclusion(leaf, c.index + 1, c.size, proof, root)) {
            accepted.push(`${c.index}/${c.size}: index + 1`);
          }
          if (await m.verifyInclusion(leaf, c.index, 2 * c.size, proof, root)) {
            accepted.push(`${c.index}/${c.size}: twice the size`);
          }
          const other = c.size === 8 ? 7 : c.size + 1;
          if (await m.verifyInclusion(leaf, c.index, other, proof, hex(roots[other]))) {
            accepted.push(`${c.index}/${c.size}: other size's root`);
          }
        }
        return accepted;
        """,
        [cases, vectors["rfc6962"]["leaf_hashes"], vectors["rfc6962"]["roots"]],
    )
    assert accepted == []


async def test_forged_consistency_proofs_are_rejected(
    browser_page: Page, vectors: dict[str, Any]
) -> None:
    """A flipped byte, an extra or missing element, swapped roots or other sizes all fail."""
    cases = [c for c in vectors["computed"]["consistency"] if c["proof"]]
    accepted = await run_js(
        browser_page,
        """
        const [cases, roots] = arg;
        const accepted = [];
        for (const c of cases) {
          const proof = c.proof.map(hex);
          const [m0, n0] = [c.old_size, c.new_size];
          const [r1, r2] = [hex(roots[m0]), hex(roots[n0])];
          const tries = {
            "extra element": [m0, n0, r1, r2, [...proof, r2]],
            "leading element": [m0, n0, r1, r2, [r1, ...proof]],
            "swapped roots": [m0, n0, r2, r1, proof],
            "empty proof": [m0, n0, r1, r2, []],
            "old size + 1": [m0 + 1, n0, hex(roots[m0 + 1]), r2, proof],
            "new size - 1": [m0, n0 - 1, r1, hex(roots[n0 - 1]), proof],
            "twice the new size": [m0, 2 * n0, r1, r2, proof],
          };
          proof.forEach((_, i) => {
            const flipped = proof.map((p) => p.slice());
            flipped[i][31 - (i % 32)] ^= 0x01;
            tries[`flipped byte in ${i}`] = [m0, n0, r1, r2, flipped];
            tries[`missing ${i}`] = [m0, n0, r1, r2, proof.filter((_, j) => j !== i)];
          });
          for (const [what, args] of Object.entries(tries)) {
            if (await m.verifyConsistency(...args)) accepted.push(`${m0}/${n0}: ${what}`);
          }
        }
        return accepted;
        """,
        [cases, vectors["rfc6962"]["roots"]],
    )
    assert accepted == []


async def test_overlong_proofs_fail_even_if_they_hash_to_the_roots(
    browser_page: Page, vectors: dict[str, Any]
) -> None:
    """Elements past the top of the tree are refused (RFC 9162 2.1.3.2 step 4a, 2.1.4.2 step 6a)."""
    tree = MerkleTree(bytes.fromhex(h) for h in vectors["rfc6962"]["leaf_hashes"])
    extra = bytes(range(32))
    case = {
        "leaf": vectors["rfc6962"]["leaf_hashes"][0],
        "inclusion": [h.hex() for h in [*tree.inclusion_proof(0, 2), extra]],
        "root": node_hash(extra, tree.root(2)).hex(),
        "consistency": [h.hex() for h in [*tree.consistency_proof(3, 4), extra]],
        "old": node_hash(extra, tree.root(3)).hex(),
        "new": node_hash(extra, tree.root(4)).hex(),
    }
    got = await run_js(
        browser_page,
        """
        const c = arg;
        return [
          await m.verifyInclusion(hex(c.leaf), 0, 2, c.inclusion.map(hex), hex(c.root)),
          await m.verifyConsistency(3, 4, hex(c.old), hex(c.new), c.consistency.map(hex)),
        ];
        """,
        case,
    )
    assert got == [False, False]


async def test_malformed_proof_input_resolves_false(
    browser_page: Page, vectors: dict[str, Any]
) -> None:
    """Hostile arguments make the verifiers resolve to false, never throw."""
    results = await run_js(
        browser_page,
        """
        const [leafHex, rootHex, proofHex, emptyHex] = arg;
        const leaf = hex(leafHex);
        const root = hex(rootHex);
        const proof = proofHex.map(hex);
        const inclusion = [
          [leaf, 5, 5, proof, root],
          [leaf, -1, 5, proof, root],
          [leaf, 1.5, 5, proof, root],
          [leaf, "1", 5, proof, root],
          [leaf, true, 5, proof, root],
          [leaf, 1, 2 ** 64, proof, root],
          [leaf, 1n, 1n << 64n, proof, root],
          [leaf.subarray(1), 1, 5, proof, root],
          [leaf, 1, 5, proof, new Uint8Array(33)],
          [leaf, 1, 5, null, root],
          [leaf, 1, 5, proofHex, root],
          [leaf, 1, 5, [...proof.slice(0, 2), proof[2].subarray(0, 31)], root],
          [leaf, 1, 5, [...proof.slice(0, 2), [...proof[2]]], root],
          [leafHex, 1, 5, proof, rootHex],
        ];
        const consistency = [
          [5, 1, root, root, proof],
          [-1, 5, root, root, proof],
          [1, 5.5, root, root, proof],
          [1, 5, root, root, undefined],
          [1, 5, root, root, [null, ...proof]],
          [1, 5, root.subarray(2), root, proof],
          [0, 5, root, root, []],
          [0, 5, hex(emptyHex), root, [hex(emptyHex)]],
          [5, 5, root, hex(emptyHex), []],
          [{}, [], "", 0, {}],
        ];
        const outcome = async (f, args) => {
          try { return await f(...args); } catch (e) { return `threw ${e}`; }
        };
        return [
          ...await Promise.all(inclusion.map((a) => outcome(m.verifyInclusion, a))),
          ...await Promise.all(consistency.map((a) => outcome(m.verifyConsistency, a))),
        ];
        """,
        [
            vectors["rfc6962"]["leaf_hashes"][1],
            vectors["rfc6962"]["roots"][5],
            vectors["rfc6962"]["inclusion"][4]["proof"],
            vectors["rfc6962"]["roots"][0],
        ],
    )
    assert results == [False] * 24


async def test_user_hash_matches_python(browser_page: Page) -> None:
    """userHash agrees with user_hash, non-ASCII names included."""
    names = ["alice", "bob", "zéta", "名前"]
    got = await run_js(
        browser_page,
        "return Promise.all(arg.map(async (n) => toHex(await m.userHash(n))));",
        names,
    )
    assert got == [user_hash(n).hex() for n in names]


async def test_entry_leaf_bytes_match_vectors(browser_page: Page, vectors: dict[str, Any]) -> None:
    """entryLeafBytes and leafHash give the pinned bytes and hash of each log entry."""
    got = await run_js(
        browser_page,
        """
        return Promise.all(arg.map(async (e) => {
          const bytes = m.entryLeafBytes(e.index, e.timestamp_ms, hex(e.user_hash),
            hex(e.enc_fingerprint), hex(e.sign_fingerprint));
          return [toHex(bytes), toHex(await m.leafHash(bytes))];
        }));
        """,
        vectors["log"]["entries"],
    )
    assert got == [[e["leaf_bytes"], e["leaf_hash"]] for e in vectors["log"]["entries"]]


async def test_tree_head_bytes_match_python(browser_page: Page, vectors: dict[str, Any]) -> None:
    """treeHeadBytes agrees with tree_head_bytes, for the vector head and for full 64-bit values."""
    root = vectors["log"]["root"]
    got = await run_js(
        browser_page,
        """
        const [sth, root] = arg;
        return [
          toHex(m.treeHeadBytes(sth.tree_size, sth.timestamp, hex(root))),
          toHex(m.treeHeadBytes((1n << 64n) - 1n, 1n << 63n, hex(root))),
        ];
        """,
        [vectors["log"]["sth"], root],
    )
    big = tree_head_bytes(2**64 - 1, 2**63, bytes.fromhex(root)).hex()
    assert got == [vectors["log"]["tree_head_bytes"], big]


async def test_byte_builders_reject_bad_fields(browser_page: Page) -> None:
    """entryLeafBytes and treeHeadBytes throw on an out-of-range integer or a short hash."""
    outcomes = await run_js(
        browser_page,
        """
        const h = new Uint8Array(32);
        const calls = [
          () => m.treeHeadBytes(-1, 0, h),
          () => m.treeHeadBytes(1n << 64n, 0, h),
          () => m.treeHeadBytes(0, 0.5, h),
          () => m.treeHeadBytes(0, 0, h.subarray(1)),
          () => m.entryLeafBytes(0, 0, h, h, new Uint8Array(31)),
          () => m.entryLeafBytes(2 ** 53, 0, h, h, h),
        ];
        return calls.map((f) => { try { f(); return "returned"; } catch (e) { return e.name; } });
        """,
    )
    assert outcomes == ["RangeError"] * 3 + ["TypeError"] * 2 + ["RangeError"]


async def test_signed_tree_head_verifies(
    browser_page: Page, vectors: dict[str, Any], spki_hex: str
) -> None:
    """verifyTreeHead accepts the vector tree head under the RFC 8032 TEST 1 key."""
    ok = await run_js(
        browser_page,
        "return m.verifyTreeHead(hex(arg[0]), arg[1]);",
        [spki_hex, vectors["log"]["sth"]],
    )
    assert ok is True


async def test_every_signature_bit_flip_is_rejected(
    browser_page: Page, vectors: dict[str, Any], spki_hex: str
) -> None:
    """verifyTreeHead rejects each of the 512 single-bit flips of the signature."""
    sth = SignedTreeHead.from_json(vectors["log"]["sth"])
    forged = [
        dataclasses.replace(sth, signature=_flip(sth.signature, bit)).to_json()
        for bit in range(512)
    ]
    got = await run_js(
        browser_page,
        "return Promise.all(arg[1].map((s) => m.verifyTreeHead(hex(arg[0]), s)));",
        [spki_hex, forged],
    )
    assert got == [False] * 512


async def test_every_field_bit_flip_is_rejected(
    browser_page: Page, vectors: dict[str, Any], spki_hex: str
) -> None:
    """verifyTreeHead rejects single-bit flips of the size, the timestamp and the root."""
    sth = SignedTreeHead.from_json(vectors["log"]["sth"])
    # Bits 0..52 only: larger JSON numbers are refused before any signature check.
    forged = [
        *(dataclasses.replace(sth, tree_size=sth.tree_size ^ (1 << b)) for b in range(53)),
        *(dataclasses.replace(sth, timestamp_ms=sth.timestamp_ms ^ (1 << b)) for b in range(53)),
        *(dataclasses.replace(sth, root_hash=_flip(sth.root_hash, b)) for b in range(256)),
    ]
    got = await run_js(
        browser_page,
        "return Promise.all(arg[1].map((s) => m.verifyTreeHead(hex(arg[0]), s)));",
        [spki_hex, [f.to_json() for f in forged]],
    )
    assert got == [False] * len(forged)


async def test_bad_tree_head_vectors_are_rejected(
    browser_page: Page, vectors: dict[str, Any], spki_hex: str
) -> None:
    """Malformed vector tree heads fail to parse, and every bad one fails to verify."""
    cases = vectors["log"]["bad_tree_heads"]
    got = await run_js(
        browser_page,
        """
        const [spki, cases] = arg;
        return Promise.all(cases.map(async (c) => {
          let parsed = true;
          try { m.parseTreeHead(c.sth); } catch { parsed = false; }
          return [c.why, parsed, await m.verifyTreeHead(hex(spki), c.sth)];
        }));
        """,
        [spki_hex, cases],
    )
    assert got == [[c["why"], c["kind"] == "signature", False] for c in cases]


async def test_wrong_or_malformed_key_is_rejected(
    browser_page: Page, vectors: dict[str, Any]
) -> None:
    """verifyTreeHead resolves to false under another Ed25519 key or a malformed one."""
    other = base64.b64decode(vectors["signing_key"]["other_spki"]).hex()
    got = await run_js(
        browser_page,
        """
        const [other, sth] = arg;
        return Promise.all([hex(other), hex(other).subarray(1), new Uint8Array(0), "x", null]
          .map((k) => m.verifyTreeHead(k, sth)));
        """,
        [other, vectors["log"]["sth"]],
    )
    assert got == [False] * 5


async def test_log_entries_prove_inclusion_under_signed_head(
    browser_page: Page, vectors: dict[str, Any], spki_hex: str
) -> None:
    """A client can check the signed head, then each entry's inclusion under its root."""
    got = await run_js(
        browser_page,
        """
        const [spki, log] = arg;
        if (!await m.verifyTreeHead(hex(spki), log.sth)) return "bad tree head";
        const head = m.parseTreeHead(log.sth);
        return Promise.all(log.entries.map(async (e, i) => {
          const bytes = m.entryLeafBytes(e.index, e.timestamp_ms, await m.userHash(e.username),
            hex(e.enc_fingerprint), hex(e.sign_fingerprint));
          return m.verifyInclusion(await m.leafHash(bytes), e.index, head.treeSize,
            log.inclusion[i].proof.map(hex), head.rootHash);
        }));
        """,
        [spki_hex, vectors["log"]],
    )
    assert got == [True] * len(vectors["log"]["entries"])
