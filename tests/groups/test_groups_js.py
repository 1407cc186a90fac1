"""static/js/groups/ in Debian's Chromium: the same bytes as securechat/groups/, both ways."""

from __future__ import annotations

from typing import Any

import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ed25519
from playwright.async_api import Page

from securechat import e2e
from securechat.groups import senderkeys as sk
from securechat.groups.membership import (
    Action,
    MembershipError,
    Subject,
    entry_hash,
    sign_entry,
    verify_chain,
)
from tests import vectorkit
from tests.vectors import make_group_vectors as mk

pytestmark = pytest.mark.browser

# Runs first in every snippet: the modules under test, vectors helpers and the people's keys.
PRELUDE = """
const m = await import("/static/js/groups/membership.js");
const s = await import("/static/js/groups/senderkeys.js");
const c = await import("/static/js/crypto.js");
const hex = (x) => Uint8Array.from(x.match(/../g) ?? [], (b) => parseInt(b, 16));
const toHex = (b) => Array.from(b, (x) => x.toString(16).padStart(2, "0")).join("");
const V = arg.vectors;
const identity = async (name) => ({
  signSpki: c.b64decode(V.keys[name].spki),
  signKey: await crypto.subtle.importKey(
    "pkcs8", c.b64decode(V.keys[name].pkcs8), { name: "Ed25519" }, false, ["sign"]),
});
const keys = Object.fromEntries(Object.entries(V.keys).map(([n, k]) => [n, [c.b64decode(k.spki)]]));
const entries = V.membership.entries.map(c.b64decode);
const codeOf = async (promise) => {
  try { await promise; return "accepted"; } catch (e) { return e.code ?? String(e); }
};
"""


@pytest.fixture(name="vectors", scope="module")
def _vectors() -> dict[str, Any]:
    """tests/vectors/groups.json."""
    return vectorkit.load("groups")


async def run_js(page: Page, vectors: dict[str, Any], body: str, extra: object = None) -> Any:
    """Run ``body`` in the page after the prelude; ``arg.extra`` is ``extra``."""
    return await page.evaluate(
        f"async (arg) => {{\n{PRELUDE}\n{body}\n}}", {"vectors": vectors, "extra": extra}
    )


async def test_js_signs_the_pinned_entries(browser_page: Page, vectors: dict[str, Any]) -> None:
    """signEntry of each step gives the pinned bytes and entryHash the pinned hashes."""
    got = await run_js(
        browser_page,
        vectors,
        """
        const out = [];
        let prev = new Uint8Array(32);
        for (const st of V.membership.steps) {
          const entry = await m.signEntry({
            groupId: hex(V.membership.group_id), seq: st.seq, prevHash: prev, action: st.action,
            writtenMs: st.written_ms, actor: st.actor, detail: c.b64decode(st.detail),
            subjects: st.subjects.map((x) => ({username: x.username, fingerprint: hex(x.fingerprint)})),
          }, await identity(st.actor));
          prev = await m.entryHash(entry);
          out.push([c.b64encode(entry), toHex(prev)]);
        }
        return out;
        """,
    )
    assert got == [
        list(p)
        for p in zip(vectors["membership"]["entries"], vectors["membership"]["hashes"], strict=True)
    ]


async def test_js_replays_to_pinned_states(browser_page: Page, vectors: dict[str, Any]) -> None:
    """verifyChain of every prefix gives the pinned head, members and admins."""
    got = await run_js(
        browser_page,
        vectors,
        """
        const out = [];
        for (let n = 1; n <= entries.length; n++) {
          const st = await m.verifyChain(entries.slice(0, n), keys);
          out.push({
            head: toHex(st.head),
            members: Object.fromEntries([...st.members].sort().map(([k, v]) => [k, toHex(v)])),
            admins: [...st.admins].sort(),
            name: c.b64encode(st.name),
          });
        }
        return out;
        """,
    )
    assert got == vectors["membership"]["states"]


async def test_js_refuses_the_bad_chains(browser_page: Page, vectors: dict[str, Any]) -> None:
    """Each pinned bad chain is refused with the code Python gives."""
    got = await run_js(
        browser_page,
        vectors,
        """
        const out = {};
        for (const bad of V.membership.bad_chains) {
          out[bad.name] = await codeOf(m.verifyChain(bad.entries.map(c.b64decode), keys));
        }
        return out;
        """,
    )
    assert got == {b["name"]: b["code"] for b in vectors["membership"]["bad_chains"]}


async def test_js_refuses_every_flipped_bit(browser_page: Page, vectors: dict[str, Any]) -> None:
    """No single bit of an entry changes without verifyChain refusing the chain."""
    accepted = await run_js(
        browser_page,
        vectors,
        """
        const accepted = [];
        const target = entries[2];
        for (let bit = 0; bit < target.length * 8; bit++) {
          const forged = target.slice();
          forged[bit >> 3] ^= 0x80 >> (bit & 7);
          const chain = [...entries.slice(0, 2), forged, ...entries.slice(3)];
          if ((await codeOf(m.verifyChain(chain, keys))) === "accepted") accepted.push(bit);
        }
        return accepted;
        """,
    )
    assert accepted == []


async def test_js_names_ghost_and_hidden_members(
    browser_page: Page, vectors: dict[str, Any]
) -> None:
    """checkRoster refuses a listed ghost and an omitted member, and accepts the true list."""
    got = await run_js(
        browser_page,
        vectors,
        """
        const st = await m.verifyChain(entries, keys);
        const code = (list) => { try { m.checkRoster(st, list); return "ok"; } catch (e) { return e.message; } };
        return [code(["alice", "bob", "mallory"]), code(["alice"]), code(["bob", "alice"])];
        """,
    )
    assert got[0].startswith("ghost_member") and "mallory" in got[0]
    assert got[1].startswith("hidden_member") and got[2] == "ok"


async def test_js_sender_chain_and_messages(browser_page: Page, vectors: dict[str, Any]) -> None:
    """Chain steps, pinned encryptions, in-order opening with skips and the distribution."""
    got = await run_js(
        browser_page,
        vectors,
        """
        const sc = V.sender_chain, M = V.messages, D = V.distribution;
        const chain = new s.SenderChain(hex(D.chain_id), hex(sc.chain_key_0));
        const steps = [];
        for (const _ of sc.steps) {
          const ck = toHex(chain.chainKey);
          const [it, key] = await chain.step();
          steps.push({iteration: it, chain_key: ck, message_key: toHex(key)});
        }
        const [groupId, head] = [hex(M.group_id), hex(M.head)];
        const alice = await identity("alice");
        const wires = [], aads = [], signed = [], cids = [];
        for (const k of M.cases) {
          const ch = new s.SenderChain(hex(k.chain_id), hex(sc.chain_key_0));
          for (let i = 0; i < k.iteration; i++) await ch.step();
          const wire = await s.encryptGroupMessage({chain: ch, groupId, head, sender: k.sender,
            messageId: k.message_id, plaintext: c.b64decode(k.plaintext), identity: alice, _iv: hex(k.iv)});
          wires.push(wire);
          aads.push(toHex(s.groupAad(groupId, head, k.sender, hex(k.chain_id), k.iteration,
            k.message_id)));
          signed.push(toHex(s.groupSignedBytes(groupId, head, k.message_id, k.sender,
            hex(k.chain_id), k.iteration, hex(k.iv), c.b64decode(wire.ct))));
          cids.push(s.wireChainId(wire));
        }
        const reader = new s.ReceiverChain(hex(sc.chain_key_0));
        const opened = [];
        for (const k of M.cases) {
          opened.push(c.b64encode(await s.openGroupMessage(k.wire, {chain: reader, groupId, head,
            sender: k.sender, messageId: k.message_id, senderSignSpki: keys[k.sender][0]})));
        }
        const replay = await codeOf(s.openGroupMessage(M.cases[0].wire, {chain: reader, groupId,
          head, sender: "alice", messageId: M.cases[0].message_id, senderSignSpki: keys.alice[0]}));
        const wrongHead = await codeOf(s.openGroupMessage(M.cases[0].wire, {
          chain: new s.ReceiverChain(hex(sc.chain_key_0)), groupId, head: new Uint8Array(32),
          sender: "alice", messageId: M.cases[0].message_id, senderSignSpki: keys.alice[0]}));
        const dist = s.encodeDistribution({groupId: hex(D.group_id), head: hex(D.head),
          sender: D.sender, chainId: hex(D.chain_id), iteration: D.iteration,
          chainKey: hex(D.chain_key)});
        const otherChain = await codeOf(s.openGroupMessage({...M.cases[0].wire,
          cid: c.b64encode(new Uint8Array(16))}, {chain: new s.ReceiverChain(hex(sc.chain_key_0)),
          groupId, head, sender: "alice", messageId: M.cases[0].message_id,
          senderSignSpki: keys.alice[0]}));
        const back = s.decodeDistribution(c.b64decode(D.encoded));
        return {steps, wires, aads, signed, opened, skipped: [...reader.skipped.keys()].sort(),
          replay, wrongHead, otherChain, cids, dist: c.b64encode(dist),
          back: [toHex(back.groupId), toHex(back.head), back.sender, toHex(back.chainId),
            back.iteration, toHex(back.chainKey)]};
        """,
    )
    cases = vectors["messages"]["cases"]
    d = vectors["distribution"]
    assert got["steps"] == vectors["sender_chain"]["steps"]
    assert got["wires"] == [c["wire"] for c in cases]
    assert got["aads"] == [c["aad"] for c in cases]
    assert got["signed"] == [c["signed_bytes"] for c in cases]
    assert got["opened"] == [c["plaintext"] for c in cases]
    assert got["skipped"] == [2, 3]
    assert (got["replay"], got["wrongHead"]) == ("undecryptable", "unverifiable")
    assert got["otherChain"] == "unverifiable"  # the chain id is signed
    assert got["cids"] == [c["wire"]["cid"] for c in cases]
    assert got["dist"] == d["encoded"]
    assert got["back"] == [
        d["group_id"],
        d["head"],
        d["sender"],
        d["chain_id"],
        d["iteration"],
        d["chain_key"],
    ]


async def test_js_removed_member_reads_nothing_new(
    browser_page: Page, vectors: dict[str, Any]
) -> None:
    """In the page too, a removed member's kept chain opens no message of a rotated chain."""
    got = await run_js(
        browser_page,
        vectors,
        """
        const M = V.messages, [groupId, head] = [hex(M.group_id), hex(M.head)];
        const alice = await identity("alice");
        const old = s.SenderChain.fresh();
        const carol = s.ReceiverChain.fromDistribution(old.distribution(groupId, head, "alice"));
        const send = (chain, id) => s.encryptGroupMessage({chain, groupId, head, sender: "alice",
          messageId: id, plaintext: new TextEncoder().encode(id), identity: alice});
        const open = (wire, id) => codeOf(s.openGroupMessage(wire, {chain: carol, groupId, head,
          sender: "alice", messageId: id, senderSignSpki: keys.alice[0]}));
        const before = await open(await send(old, "before"), "before");
        const rotated = s.SenderChain.fresh();
        const after = [];
        for (const id of ["after-0", "after-1", "after-2"]) after.push(await open(await send(rotated, id), id));
        return [before, after];
        """,
    )
    assert got == ["accepted", ["undecryptable"] * 3]


async def test_python_and_js_accept_each_others_fresh_bytes(
    browser_page: Page, vectors: dict[str, Any]
) -> None:
    """A JS-made entry and message (random IV and chain) verify in Python, and vice versa."""
    entries = [e2e.b64decode(e) for e in vectors["membership"]["entries"]]
    py_entry = sign_entry(
        group_id=mk.GROUP_ID,
        seq=len(entries),
        prev_hash=entry_hash(entries[-1]),
        action=Action.ADD,
        written_ms=mk.T0 + 10**7,
        actor="bob",
        subjects=[Subject("carol", mk.fp("carol"))],
        sign_key=mk.sign_key("bob"),
    )
    head = entry_hash(py_entry)
    py_chain = sk.SenderChain.fresh()
    py_dist = py_chain.distribution(mk.GROUP_ID, head, "carol").encode()
    py_wire = sk.encrypt_group_message(
        chain=py_chain,
        group_id=mk.GROUP_ID,
        head=head,
        sender="carol",
        message_id="py-1",
        plaintext="from Python ✓".encode(),
        sign_key=mk.sign_key("carol"),
    )
    got = await run_js(
        browser_page,
        vectors,
        """
        const x = arg.extra;
        const pyEntry = c.b64decode(x.entry);
        const st = await m.verifyChain([...entries, pyEntry], keys);
        const head = st.head;
        const d = s.decodeDistribution(c.b64decode(x.dist));
        const text = new TextDecoder().decode(await s.openGroupMessage(x.wire, {
          chain: s.ReceiverChain.fromDistribution(d), groupId: st.groupId, head,
          sender: "carol", messageId: "py-1", senderSignSpki: keys.carol[0]}));
        const jsEntry = await m.signEntry({groupId: st.groupId, seq: st.seq + 1, prevHash: head,
          action: m.Action.RENAME, writtenMs: Date.now(), actor: "alice", subjects: [],
          detail: new TextEncoder().encode("renamed in the page")}, await identity("alice"));
        const jsHead = await m.entryHash(jsEntry);
        const chain = s.SenderChain.fresh();
        const dist = s.encodeDistribution(chain.distribution(st.groupId, jsHead, "bob"));
        const wire = await s.encryptGroupMessage({chain, groupId: st.groupId, head: jsHead,
          sender: "bob", messageId: "js-1", plaintext: new TextEncoder().encode("from the page ✓"),
          identity: await identity("bob")});
        return {text, members: [...st.members.keys()].sort(), entry: c.b64encode(jsEntry),
          dist: c.b64encode(dist), wire};
        """,
        {"entry": e2e.b64encode(py_entry), "dist": e2e.b64encode(py_dist), "wire": py_wire},
    )
    assert got["text"] == "from Python ✓"
    assert got["members"] == ["alice", "bob", "carol"]
    js_entry = e2e.b64decode(got["entry"])
    state = verify_chain([*entries, py_entry, js_entry], mk.keys())
    assert state.name == b"renamed in the page"
    dist = sk.Distribution.decode(e2e.b64decode(got["dist"]))
    assert (dist.head, dist.sender) == (state.head, "bob")
    opened = sk.open_group_message(
        got["wire"],
        chain=sk.ReceiverChain.from_distribution(dist),
        group_id=mk.GROUP_ID,
        head=state.head,
        sender="bob",
        message_id="js-1",
        sender_sign_spki=mk.spki("bob"),
    )
    assert opened == "from the page ✓".encode()


async def test_js_concurrent_opens_share_one_chain(
    browser_page: Page, vectors: dict[str, Any]
) -> None:
    """Messages opened at once on one ReceiverChain all open, and it ends past the last."""
    got = await run_js(
        browser_page,
        vectors,
        """
        const M = V.messages, [groupId, head] = [hex(M.group_id), hex(M.head)];
        const chain = new s.ReceiverChain(hex(V.sender_chain.chain_key_0));
        const opened = await Promise.all([...M.cases].reverse().map((k) =>
          s.openGroupMessage(k.wire, {chain, groupId, head, sender: k.sender,
            messageId: k.message_id, senderSignSpki: keys[k.sender][0]}).then(c.b64encode)));
        return [opened.reverse(), chain.iteration, [...chain.skipped.keys()].sort()];
        """,
    )
    cases = vectors["messages"]["cases"]
    assert got == [[c["plaintext"] for c in cases], 5, [2, 3]]


def _reset_cases() -> list[dict[str, Any]]:
    """Chains across alice's key reset, as tests/groups/test_group_client.py builds them: her
    entries under her former key (proved in the history) or her current one, read from scratch
    or after verifying a prefix; each with what verify_chain says of it."""
    alice_now = ed25519.Ed25519PrivateKey.from_private_bytes(bytes(range(32)))
    now_spki = alice_now.public_key().public_bytes(
        serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo
    )

    def signed(entries: list[bytes], action: Action, names: tuple[str, ...], key: Any) -> bytes:
        return sign_entry(
            group_id=mk.GROUP_ID,
            seq=len(entries),
            prev_hash=entry_hash(entries[-1]),
            action=action,
            written_ms=mk.T0 + 60_000 * len(entries),
            actor="alice",
            subjects=mk.subjects(*names),
            sign_key=key,
        )

    before = mk.chain(
        [("alice", Action.CREATE, ("bob", "carol"), b""), ("alice", Action.ADD, ("dave",), b"")]
    )
    vouched = [*before, signed(before, Action.ADD, ("mallory",), alice_now)]
    forged = [*vouched, signed(vouched, Action.REMOVE, ("carol",), mk.sign_key("alice"))]
    keys = mk.keys() | {"alice": [now_spki]}
    proved = {"alice": frozenset({mk.fp("alice")})}
    cases = []
    runs: list[tuple[str, list[bytes], dict[str, frozenset[bytes]] | None, int]] = [
        ("vouched from scratch", vouched, proved, 0),
        ("vouched, no history", vouched, None, 0),
        ("vouched, empty history", vouched, {"alice": frozenset()}, 0),
        ("old tail from scratch", before, proved, 0),
        ("old tail verified before", before, proved, 2),
        ("vouched after a verified prefix", vouched, proved, 2),
        ("forged after the vouching entry", forged, proved, 0),
        ("forged, rest verified before", forged, proved, 3),
    ]
    for name, entries, former, verified in runs:
        try:
            state = verify_chain(entries, keys, former=former, verified=verified)
            outcome = ",".join(sorted(state.members))
        except MembershipError as error:
            outcome = error.code
        cases.append(
            {
                "name": name,
                "entries": [e2e.b64encode(e) for e in entries],
                "keys": {n: [e2e.b64encode(k) for k in ks] for n, ks in keys.items()},
                "former": None
                if former is None
                else {n: sorted(f.hex() for f in fs) for n, fs in former.items()},
                "verified": verified,
                "outcome": outcome,
            }
        )
    return cases


async def test_js_former_keys_and_verified_prefix_as_python(
    browser_page: Page, vectors: dict[str, Any]
) -> None:
    """verifyChain's former and verified give what verify_chain gives: entries under a former
    key stand only when a later entry under a current key vouches for them (old_key otherwise),
    none is accepted without the history's proof (unknown_key), and a prefix verified before is
    not checked again."""
    cases = _reset_cases()
    got = await run_js(
        browser_page,
        vectors,
        """
        const out = {};
        for (const k of arg.extra) {
          const keys = Object.fromEntries(
            Object.entries(k.keys).map(([n, ks]) => [n, ks.map(c.b64decode)]));
          try {
            const st = await m.verifyChain(k.entries.map(c.b64decode), keys,
              {former: k.former, verified: k.verified});
            out[k.name] = [...st.members.keys()].sort().join(",");
          } catch (e) {
            out[k.name] = e.code ?? String(e);
          }
        }
        return out;
        """,
        cases,
    )
    expected = {k["name"]: k["outcome"] for k in cases}
    assert got == expected
    assert expected["vouched from scratch"] == "alice,bob,carol,dave,mallory"
    assert expected["old tail from scratch"] == "old_key"
    assert expected["vouched, no history"] == "unknown_key"
    assert expected["forged, rest verified before"] == "old_key"
