"""securechat/groups/senderkeys.py: the sender chain, group messages and distributions."""

from __future__ import annotations

import copy
from typing import Any

import pytest

from securechat import e2e
from securechat.groups import senderkeys as sk
from tests import vectorkit
from tests.vectors import make_group_vectors as mk


@pytest.fixture(name="vectors", scope="module")
def _vectors() -> dict[str, Any]:
    """tests/vectors/groups.json."""
    return vectorkit.load("groups")


def _open(
    vectors: dict[str, Any], case: dict[str, Any], chain: sk.ReceiverChain, **override: Any
) -> bytes:
    m = vectors["messages"]
    args: dict[str, Any] = {
        "group_id": bytes.fromhex(m["group_id"]),
        "head": bytes.fromhex(m["head"]),
        "sender": case["sender"],
        "message_id": case["message_id"],
        "sender_sign_spki": mk.spki(case["sender"]),
    }
    return sk.open_group_message(case["wire"], chain=chain, **(args | override))


def _receiver() -> sk.ReceiverChain:
    return sk.ReceiverChain(mk.CHAIN_KEY)


def test_chain_steps_match_vectors(vectors: dict[str, Any]) -> None:
    """Chain and message keys of the first iterations are the pinned ones."""
    chain = sk.SenderChain(mk.CHAIN_ID, bytes.fromhex(vectors["sender_chain"]["chain_key_0"]))
    for step in vectors["sender_chain"]["steps"]:
        assert chain.chain_key.hex() == step["chain_key"]
        assert chain.step() == (step["iteration"], bytes.fromhex(step["message_key"]))


def test_labels_are_distinct() -> None:
    """The message key and the next chain key differ, so one does not give the other."""
    key = bytes(32)
    assert sk.message_key(key) != sk.next_chain_key(key)


def test_messages_open_in_order_with_skips(vectors: dict[str, Any]) -> None:
    """The pinned messages open in order, jumping iterations 2 and 3."""
    chain = _receiver()
    for case in vectors["messages"]["cases"]:
        assert _open(vectors, case, chain) == e2e.b64decode(case["plaintext"])
    assert sorted(chain.skipped) == [2, 3]


def test_messages_open_out_of_order_once(vectors: dict[str, Any]) -> None:
    """A late message opens from a skipped key, once: a replay is undecryptable."""
    cases = vectors["messages"]["cases"]
    chain = _receiver()
    _open(vectors, cases[2], chain)
    assert _open(vectors, cases[0], chain) == e2e.b64decode(cases[0]["plaintext"])
    with pytest.raises(sk.UndecryptableGroupMessage):
        _open(vectors, cases[0], chain)


def test_bound_names_are_used(vectors: dict[str, Any]) -> None:
    """Jumping more than MAX_SKIP ahead is refused and does not move the chain."""
    case = copy.deepcopy(vectors["messages"]["cases"][0])
    chain = _receiver()
    with pytest.raises(sk.UnverifiableGroupMessage):
        case["wire"]["it"] = sk.MAX_SKIP + 1  # the signature covers the iteration
        _open(vectors, case, chain)
    assert chain.iteration == 0
    far = sk.SenderChain(mk.CHAIN_ID, mk.CHAIN_KEY, 0)
    for _ in range(sk.MAX_SKIP + 1):
        far.step()
    wire = _encrypt(far, "far")
    with pytest.raises(sk.UndecryptableGroupMessage, match="ahead"):
        _open(vectors, {"sender": "alice", "message_id": "far", "wire": wire}, chain)
    assert chain.iteration == 0


def _encrypt(chain: sk.SenderChain, message_id: str, head: bytes | None = None) -> dict[str, Any]:
    return sk.encrypt_group_message(
        chain=chain,
        group_id=mk.GROUP_ID,
        head=head or bytes.fromhex(vectorkit.load("groups")["messages"]["head"]),
        sender="alice",
        message_id=message_id,
        plaintext=b"hi",
        sign_key=mk.sign_key("alice"),
    )


def test_encryption_is_pinned(vectors: dict[str, Any]) -> None:
    """With the pinned IVs, encryption gives the pinned wire objects and byte strings."""
    m = vectors["messages"]
    group_id, head = bytes.fromhex(m["group_id"]), bytes.fromhex(m["head"])
    for case in m["cases"]:
        chain_id = bytes.fromhex(case["chain_id"])
        chain = sk.SenderChain(chain_id, bytes.fromhex(vectors["sender_chain"]["chain_key_0"]))
        for _ in range(case["iteration"]):
            chain.step()
        wire = sk.encrypt_group_message(
            chain=chain,
            group_id=group_id,
            head=head,
            sender=case["sender"],
            message_id=case["message_id"],
            plaintext=e2e.b64decode(case["plaintext"]),
            sign_key=mk.sign_key(case["sender"]),
            _iv=bytes.fromhex(case["iv"]),
        )
        assert wire == case["wire"]
        aad = sk.group_aad(
            group_id, head, case["sender"], chain_id, case["iteration"], case["message_id"]
        )
        assert aad.hex() == case["aad"]
        ct = e2e.b64decode(wire["ct"])
        signed = sk.group_signed_bytes(
            group_id,
            head,
            case["message_id"],
            case["sender"],
            chain_id,
            case["iteration"],
            bytes.fromhex(case["iv"]),
            ct,
        )
        assert signed.hex() == case["signed_bytes"]
        assert sk.wire_chain_id(wire) == chain_id


@pytest.mark.parametrize(
    "override",
    [
        {"group_id": bytes(16)},
        {"head": bytes(32)},
        {"sender": "bob"},
        {"message_id": "another"},
        {"sender_sign_spki": mk.spki("bob")},
    ],
    ids=["group", "head", "sender", "message_id", "key"],
)
def test_context_is_bound(vectors: dict[str, Any], override: dict[str, Any]) -> None:
    """Another group, head, sender, message id or signing key: unverifiable, chain unmoved."""
    chain = _receiver()
    with pytest.raises(sk.UnverifiableGroupMessage):
        _open(vectors, vectors["messages"]["cases"][0], chain, **override)
    assert chain.iteration == 0


def test_tampered_ciphertext_is_unverifiable(vectors: dict[str, Any]) -> None:
    """A flipped ciphertext bit fails the signature before any key is derived."""
    case = copy.deepcopy(vectors["messages"]["cases"][0])
    ct = bytearray(e2e.b64decode(case["wire"]["ct"]))
    ct[0] ^= 1
    case["wire"]["ct"] = e2e.b64encode(bytes(ct))
    with pytest.raises(sk.UnverifiableGroupMessage):
        _open(vectors, case, _receiver())


def test_leaked_chain_key_opens_no_earlier_message(vectors: dict[str, Any]) -> None:
    """A reader holding only the current chain key cannot open earlier iterations."""
    cases = vectors["messages"]["cases"]
    later = sk.ReceiverChain(bytes.fromhex(vectors["sender_chain"]["steps"][1]["chain_key"]), 1)
    with pytest.raises(sk.UndecryptableGroupMessage):
        _open(vectors, cases[0], later)


def test_removed_member_cannot_read_rotated_chain(vectors: dict[str, Any]) -> None:
    """A removed member keeping every old chain state opens nothing of the fresh chain."""
    old = sk.SenderChain(mk.CHAIN_ID, mk.CHAIN_KEY)
    carol = sk.ReceiverChain.from_distribution(old.distribution(mk.GROUP_ID, bytes(32), "alice"))
    assert (
        _open(vectors, {"sender": "alice", "message_id": "m1", "wire": _encrypt(old, "m1")}, carol)
        == b"hi"
    )
    kept = copy.deepcopy(carol)
    rotated = sk.SenderChain.fresh()
    for n in range(3):
        wire = _encrypt(rotated, f"after-{n}")
        state = copy.deepcopy(kept)
        with pytest.raises(sk.UndecryptableGroupMessage):
            _open(vectors, {"sender": "alice", "message_id": f"after-{n}", "wire": wire}, state)


def test_distribution_round_trips(vectors: dict[str, Any]) -> None:
    """The pinned distribution encodes and decodes exactly; a changed length is refused."""
    d = vectors["distribution"]
    dist = sk.Distribution(
        bytes.fromhex(d["group_id"]),
        bytes.fromhex(d["head"]),
        d["sender"],
        bytes.fromhex(d["chain_id"]),
        d["iteration"],
        bytes.fromhex(d["chain_key"]),
    )
    encoded = e2e.b64decode(d["encoded"])
    assert dist.encode() == encoded
    assert sk.Distribution.decode(encoded) == dist
    for bad in (encoded[:-1], encoded + b"\0", b"x" + encoded[1:]):
        with pytest.raises(ValueError):
            sk.Distribution.decode(bad)


def test_failed_decryption_leaves_the_chain(vectors: dict[str, Any]) -> None:
    """A signed message the chain cannot open (another chain key) does not move the chain."""
    chain = sk.ReceiverChain(bytes(32))
    with pytest.raises(sk.UndecryptableGroupMessage):
        _open(vectors, vectors["messages"]["cases"][2], chain)
    assert (chain.iteration, len(chain.skipped)) == (0, 0)


def test_skipped_keys_are_bounded() -> None:
    """Past MAX_SKIPPED_KEYS the oldest skipped keys are dropped: those messages stay unread."""
    sender = sk.SenderChain(mk.CHAIN_ID, mk.CHAIN_KEY)
    first = _encrypt(sender, "first")
    for _ in range(sk.MAX_SKIP - 1):
        sender.step()
    middle = _encrypt(sender, "middle")  # iteration MAX_SKIP: skips 0 .. MAX_SKIP - 1
    for _ in range(sk.MAX_SKIP - 1):
        sender.step()
    last = _encrypt(sender, "last")  # skips MAX_SKIP + 1 .. 2 * MAX_SKIP - 1
    vectors = vectorkit.load("groups")
    chain = _receiver()
    for message_id, wire in (("middle", middle), ("last", last)):
        _open(vectors, {"sender": "alice", "message_id": message_id, "wire": wire}, chain)
    assert len(chain.skipped) == sk.MAX_SKIPPED_KEYS
    with pytest.raises(sk.UndecryptableGroupMessage, match="used or dropped"):
        _open(vectors, {"sender": "alice", "message_id": "first", "wire": first}, chain)


def test_the_chain_id_is_bound(vectors: dict[str, Any]) -> None:
    """A message whose chain id is changed (to pass it off as another device's chain) is
    unverifiable; a fresh chain draws a fresh id, and a wire object without one is refused."""
    case = copy.deepcopy(vectors["messages"]["cases"][0])
    case["wire"]["cid"] = e2e.b64encode(bytes(16))
    with pytest.raises(sk.UnverifiableGroupMessage):
        _open(vectors, case, _receiver())
    del case["wire"]["cid"]
    with pytest.raises(sk.UnverifiableGroupMessage):
        _open(vectors, case, _receiver())
    assert sk.wire_chain_id(case["wire"]) is None
    assert sk.SenderChain.fresh().chain_id != sk.SenderChain.fresh().chain_id
