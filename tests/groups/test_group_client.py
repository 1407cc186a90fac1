"""The Python client's group state (securechat/client/groups.py ``GroupSession``) and the group
name layout (securechat/groups/names.py), on the fixed chain of tests/vectors/groups.json.

No server here: what a session accepts and refuses given a chain, a member list, key
distributions and messages. tests/groups/test_group_e2e.py runs the same client live.
"""

from __future__ import annotations

import copy
import json
from typing import Any

import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ed25519

from securechat import e2e
from securechat.client.groups import GroupMessageRefused, GroupRefused, GroupSession
from securechat.groups import names, senderkeys
from securechat.groups.membership import Action, entry_hash, sign_entry
from securechat.groups.senderkeys import Distribution, SenderChain
from tests import vectorkit
from tests.vectors import make_group_vectors as mk

GROUP = mk.GROUP_ID.hex()


@pytest.fixture(name="vectors", scope="module")
def _vectors() -> dict[str, Any]:
    return vectorkit.load("groups")


def _chain(vectors: dict[str, Any]) -> list[bytes]:
    return [e2e.b64decode(e) for e in vectors["membership"]["entries"]]


def _session(me: str, entries: list[bytes]) -> GroupSession:
    session = GroupSession(GROUP, me)
    session.adopt(entries, mk.keys())
    return session


def _head(entries: list[bytes], index: int) -> bytes:
    return entry_hash(entries[index])


def _send(chain: SenderChain, head: bytes, message_id: str, text: str) -> dict[str, Any]:
    return senderkeys.encrypt_group_message(
        chain=chain,
        group_id=mk.GROUP_ID,
        head=head,
        sender="alice",
        message_id=message_id,
        plaintext=text.encode(),
        sign_key=mk.sign_key("alice"),
    )


def _open(session: GroupSession, head: bytes, message_id: str, wire: dict[str, Any]) -> str:
    return session.open(
        message_id=message_id,
        sender="alice",
        head=head,
        wire=wire,
        sender_sign_spki=mk.spki("alice"),
    ).decode()


# --- the group name ---------------------------------------------------------------------------


def test_name_vector(vectors: dict[str, Any]) -> None:
    """Sealing the vector name with its key and iv gives the pinned detail, which opens."""
    v = vectors["name"]
    key, group_id = bytes.fromhex(v["name_key"]), bytes.fromhex(v["group_id"])
    detail = names.seal_name(key, v["name"], group_id, v["index"], _iv=bytes.fromhex(v["iv"]))
    assert e2e.b64encode(detail) == v["detail"]
    assert names.name_aad(group_id, v["index"]).hex() == v["aad"]
    assert names.open_name(key, detail, group_id, v["index"]) == v["name"]


@pytest.mark.parametrize(
    "change", [{"index": 4}, {"group_id": bytes(16)}, {"key": bytes(32)}, {"flip": True}]
)
def test_name_is_bound_to_its_entry(vectors: dict[str, Any], change: dict[str, Any]) -> None:
    """Another index, another group, another key, or a flipped bit: the name does not open."""
    v = vectors["name"]
    detail = bytearray(e2e.b64decode(v["detail"]))
    if change.get("flip"):
        detail[-1] ^= 1
    with pytest.raises(names.GroupNameError):
        names.open_name(
            change.get("key", bytes.fromhex(v["name_key"])),
            bytes(detail),
            change.get("group_id", bytes.fromhex(v["group_id"])),
            change.get("index", v["index"]),
        )


# --- verifying the chain and the member list ----------------------------------------------------


def test_session_follows_the_vector_chain(vectors: dict[str, Any]) -> None:
    """The members after each entry are the vector states'; heads map to chain indexes."""
    entries = _chain(vectors)
    session = _session("bob", entries)
    for index, state in enumerate(vectors["membership"]["states"]):
        assert session.members_at(index) == frozenset(state["members"])
        assert session.index_of(bytes.fromhex(state["head"])) == index
    assert session.members == {"alice", "bob"} and session.admins == {"alice", "bob"}


@pytest.mark.parametrize(
    "case", ["flipped_bit", "reordered", "non_admin_signer", "unknown_key", "broken_link"]
)
def test_bad_chains_refuse_the_group(vectors: dict[str, Any], case: str) -> None:
    """A flipped bit, a reordered chain, a non-admin signer...: the group is refused, with the
    code, naming the group; nothing is kept."""
    bad = next(c for c in vectors["membership"]["bad_chains"] if c["name"] == case)
    session = GroupSession(GROUP, "bob")
    with pytest.raises(GroupRefused) as refused:
        session.adopt([e2e.b64decode(e) for e in bad["entries"]], mk.keys())
    assert refused.value.code == bad["code"]
    assert GROUP in str(refused.value) and "not sent to this group" in str(refused.value)
    assert session.refusal is refused.value and session.entries == []
    with pytest.raises(GroupRefused):
        session.check()


def test_ghost_member_is_refused_naming_the_group() -> None:
    """A member list naming someone no admin added: refused, the warning names them and the
    group (by name once its key is known); a later honest list lifts it."""
    key = bytes(range(32))
    entries = mk.chain(
        [
            (
                "alice",
                Action.CREATE,
                ("bob", "carol"),
                names.seal_name(key, "Hiking", mk.GROUP_ID, 0),
            ),
            ("alice", Action.ADD, ("dave",), b""),
        ]
    )
    session = GroupSession(GROUP, "bob")
    session.adopt(entries, mk.keys(), roster=["alice", "bob", "carol", "dave"])
    session.name_keys[0] = key
    with pytest.raises(GroupRefused) as refused:
        session.adopt(entries, mk.keys(), roster=["alice", "bob", "carol", "dave", "mallory"])
    message = str(refused.value)
    assert refused.value.code == "ghost_member"
    assert message.startswith(f"The server lists mallory as a member of group 'Hiking' ({GROUP})")
    assert "no admin added them" in message
    with pytest.raises(GroupRefused):
        session.check()
    session.adopt(entries, mk.keys())  # a change read off the socket: no member list to lift it
    with pytest.raises(GroupRefused):
        session.check()
    session.adopt(entries, mk.keys(), roster=["alice", "bob", "carol", "dave"])
    session.check()


def test_hidden_member_is_refused(vectors: dict[str, Any]) -> None:
    """A member list that leaves out a member the chain has is refused too."""
    session = GroupSession(GROUP, "bob")
    with pytest.raises(GroupRefused) as refused:
        session.adopt(_chain(vectors)[:3], mk.keys(), roster=["alice", "bob", "dave"])
    assert refused.value.code == "hidden_member" and "carol" in str(refused.value)


def test_a_rewritten_history_is_refused(vectors: dict[str, Any]) -> None:
    """A chain that does not extend the one verified before is refused."""
    entries = _chain(vectors)
    session = _session("bob", entries[:3])
    other = mk.chain([mk.STEPS[0], ("alice", Action.ADD, ("dave",), b""), *mk.STEPS[2:3]])
    with pytest.raises(GroupRefused) as refused:
        session.adopt(other, mk.keys())
    assert refused.value.code == "broken_link"


# --- sender chains --------------------------------------------------------------------------------


def test_a_removal_rotates_my_chain(vectors: dict[str, Any]) -> None:
    """After carol's removal alice draws a fresh chain and owes it to every member."""
    entries = _chain(vectors)
    session = _session("alice", entries[:4])
    first = session.chain_to_send()
    session.handed(session.lacking_my_chain(), session.generation)
    assert session.lacking_my_chain() == []
    session.adopt(entries[:5], mk.keys())  # alice removes carol
    second = session.chain_to_send()
    assert second is not first and session.generation == 2
    assert session.lacking_my_chain() == ["bob", "dave"]


def test_an_add_keeps_my_chain(vectors: dict[str, Any]) -> None:
    """An add does not rotate: only the newcomer lacks my chain."""
    entries = _chain(vectors)
    session = _session("alice", entries[:2])
    chain = session.chain_to_send()
    session.handed(session.lacking_my_chain(), session.generation)
    session.adopt(entries[:3], mk.keys())  # bob adds dave
    assert session.chain_to_send() is chain and session.lacking_my_chain() == ["dave"]


def test_receiver_chain_is_chosen_by_chain_id(vectors: dict[str, Any]) -> None:
    """Messages open with the chain they name, whichever head it was handed under: an old
    chain's messages after a newer chain came, and two chains under one head (two devices of
    alice's) side by side; a redistribution of a held chain changes nothing, and a message
    naming a chain I was not handed is no_chain."""
    entries = _chain(vectors)
    bob = _session("bob", entries[:5])
    old, new, laptop = SenderChain.fresh(), SenderChain.fresh(), SenderChain.fresh()
    bob.take_distribution(old.distribution(mk.GROUP_ID, _head(entries, 0), "alice"), "alice", {})
    before = _send(old, _head(entries, 3), "m-old", "before the removal")
    # The same chain handed to dave at head 2 (an add) and seen by bob too: kept once.
    bob.take_distribution(old.distribution(mk.GROUP_ID, _head(entries, 2), "alice"), "alice", {})
    assert len(bob.held["alice"]) == 1
    for chain in (new, laptop):
        bob.take_distribution(
            chain.distribution(mk.GROUP_ID, _head(entries, 4), "alice"), "alice", {}
        )
    after = _send(new, _head(entries, 4), "m-new", "after the removal")
    from_laptop = _send(laptop, _head(entries, 4), "m-laptop", "from alice's laptop")
    late = _send(old, _head(entries, 4), "m-late", "the old chain, later")
    assert _open(bob, _head(entries, 4), "m-laptop", from_laptop) == "from alice's laptop"
    assert _open(bob, _head(entries, 4), "m-new", after) == "after the removal"
    assert _open(bob, _head(entries, 3), "m-old", before) == "before the removal"
    assert _open(bob, _head(entries, 4), "m-late", late) == "the old chain, later"
    with pytest.raises(GroupMessageRefused) as replay:
        _open(bob, _head(entries, 4), "m-new", after)
    assert replay.value.code == "undecryptable"
    stranger = _send(SenderChain.fresh(), _head(entries, 4), "m-x", "a chain never handed")
    with pytest.raises(GroupMessageRefused) as unknown:
        _open(bob, _head(entries, 4), "m-x", stranger)
    assert unknown.value.code == "no_chain"


def test_my_other_devices_chain_is_read_not_sent_with(vectors: dict[str, Any]) -> None:
    """My other device's chain (its distribution, which my keys open) is kept to read its
    messages; a copy of my own sending chain is not kept, and I go on sending with mine."""
    entries = _chain(vectors)
    alice = _session("alice", entries[:4])
    mine = alice.chain_to_send()
    phone = SenderChain.fresh()
    head = _head(entries, 3)
    alice.take_distribution(phone.distribution(mk.GROUP_ID, head, "alice"), "alice", {})
    alice.take_distribution(mine.distribution(mk.GROUP_ID, head, "alice"), "alice", {})
    assert list(alice.held["alice"]) == [phone.chain_id]
    assert alice.chain_to_send() is mine
    assert _open(alice, head, "m-phone", _send(phone, head, "m-phone", "sent from my phone")) == (
        "sent from my phone"
    )


def test_removed_member_reads_nothing_new(vectors: dict[str, Any]) -> None:
    """Carol, removed at entry 4, keeps every chain she had: a message sent after her removal
    is refused (she is not a member at its head), and none of her chains opens it either."""
    entries = _chain(vectors)
    carol = _session("carol", entries[:5])
    old, new = SenderChain.fresh(), SenderChain.fresh()
    carol.take_distribution(old.distribution(mk.GROUP_ID, _head(entries, 0), "alice"), "alice", {})
    head = _head(entries, 4)
    wire = _send(new, head, "m-after", "carol must not read this")
    with pytest.raises(GroupMessageRefused) as refused:
        _open(carol, head, "m-after", wire)
    assert refused.value.code == "not_member"
    for held in carol.held["alice"].values():
        with pytest.raises(senderkeys.UndecryptableGroupMessage):
            senderkeys.open_group_message(
                wire,
                chain=copy.deepcopy(held.chain),
                group_id=mk.GROUP_ID,
                head=head,
                sender="alice",
                message_id="m-after",
                sender_sign_spki=mk.spki("alice"),
            )


@pytest.mark.parametrize("case", ["not_theirs", "not_a_member", "other_group", "unknown_head"])
def test_bad_distributions_are_refused(vectors: dict[str, Any], case: str) -> None:
    """A chain handed by someone else than its sender, by a non-member at its head, for
    another group or for a head I do not hold is refused."""
    entries = _chain(vectors)
    bob = _session("bob", entries)
    chain = SenderChain.fresh()
    sender, envelope_sender, head, group_id = "alice", "alice", _head(entries, 5), mk.GROUP_ID
    if case == "not_theirs":
        envelope_sender = "dave"
    elif case == "not_a_member":
        sender = envelope_sender = "carol"  # removed at entry 4
    elif case == "other_group":
        group_id = bytes(16)
    else:
        head = bytes(32)
    with pytest.raises(GroupMessageRefused) as refused:
        bob.take_distribution(
            Distribution(group_id, head, sender, chain.chain_id, 0, chain.chain_key),
            envelope_sender,
            {},
        )
    assert refused.value.code in ("bad_distribution", "not_member", "unknown_head")
    assert bob.held == {}


def test_name_keys_are_kept_only_when_they_open_the_name(vectors: dict[str, Any]) -> None:
    """A name key that opens the name of its entry is kept; any other is dropped."""
    entries = mk.chain(
        [("alice", Action.CREATE, ("bob",), names.seal_name(bytes(32), "Team", mk.GROUP_ID, 0))]
    )
    bob = _session("bob", entries)
    chain = SenderChain.fresh().distribution(mk.GROUP_ID, _head(entries, 0), "alice")
    bob.take_distribution(chain, "alice", {"0": e2e.b64encode(bytes([1]) * 32), "x": "y"})
    assert bob.name is None and bob.label() == f"group {GROUP}"
    bob.take_distribution(chain, "alice", {"0": e2e.b64encode(bytes(32))})
    assert bob.name == "Team" and bob.name_keys_to_hand() == {"0": e2e.b64encode(bytes(32))}
    assert json.dumps(bob.name_keys_to_hand())


# --- members whose accounts were deleted ----------------------------------------------------------


def _hiking(me: str) -> tuple[GroupSession, list[bytes]]:
    entries = mk.chain([("alice", Action.CREATE, ("bob", "carol"), b"")])
    return GroupSession(GROUP, me), entries


def test_a_proved_deletion_keeps_the_member_but_hands_them_nothing() -> None:
    """Carol's account is gone and the directory proves it: she stays a member by the chain,
    the group is not refused, and my chain is owed to bob only."""
    session, entries = _hiking("alice")
    roster = ["alice", "bob", "carol"]
    session.adopt(entries, mk.keys(), roster=roster, gone=["carol"], deleted={"carol"})
    session.check()
    assert session.members == {"alice", "bob", "carol"} and session.gone == {"carol"}
    session.chain_to_send()
    assert session.lacking_my_chain() == ["bob"]


@pytest.mark.parametrize(
    ("gone", "code"), [(["carol"], "hidden_member"), (["mallory"], "ghost_member")]
)
def test_an_unproved_or_foreign_gone_member_is_refused(gone: list[str], code: str) -> None:
    """The server calls carol gone but the directory does not prove it (it could otherwise cut
    her off from every key), or names someone who is no member: refused."""
    session, entries = _hiking("alice")
    with pytest.raises(GroupRefused) as refused:
        session.adopt(
            entries, mk.keys(), roster=["alice", "bob", "carol"], gone=gone, deleted={"mallory"}
        )
    assert refused.value.code == code and gone[0] in str(refused.value)
    assert session.gone == set()


# --- entries signed before a key reset ------------------------------------------------------------

# TEST-ONLY: alice's key after she reset her keys.
ALICE_NOW = ed25519.Ed25519PrivateKey.from_private_bytes(bytes(range(32)))


def _spki(key: ed25519.Ed25519PrivateKey) -> bytes:
    return key.public_key().public_bytes(
        serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo
    )


def _signed(entries: list[bytes], action: Action, names_: tuple[str, ...], key: Any) -> bytes:
    """Alice's next entry after ``entries``, signed with ``key``."""
    return sign_entry(
        group_id=mk.GROUP_ID,
        seq=len(entries),
        prev_hash=entry_hash(entries[-1]),
        action=action,
        written_ms=mk.T0 + 60_000 * len(entries),
        actor="alice",
        subjects=mk.subjects(*names_),
        sign_key=key,
    )


def _after_reset() -> tuple[dict[str, list[bytes]], dict[str, frozenset[bytes]]]:
    """Keys as a reader has them once alice reset hers: her current key, and her former one
    proved in the directory's history."""
    return mk.keys() | {"alice": [_spki(ALICE_NOW)]}, {"alice": frozenset({mk.fp("alice")})}


def test_entries_under_a_former_key_are_vouched_for_by_a_later_current_one() -> None:
    """Alice created the group and added dave, then reset her keys and added mallory: a reader
    from scratch accepts the chain (her later entry vouches for the two before); without the
    history's proof her former key is unknown."""
    entries = mk.chain(
        [("alice", Action.CREATE, ("bob", "carol"), b""), ("alice", Action.ADD, ("dave",), b"")]
    )
    entries.append(_signed(entries, Action.ADD, ("mallory",), ALICE_NOW))
    keys, former = _after_reset()
    session = GroupSession(GROUP, "mallory")
    session.adopt(entries, keys, former=former)
    assert session.members == {"alice", "bob", "carol", "dave", "mallory"}
    with pytest.raises(GroupRefused) as refused:
        GroupSession(GROUP, "mallory").adopt(entries, keys)
    assert refused.value.code == "unknown_key"
    with pytest.raises(GroupRefused) as refused:
        GroupSession(GROUP, "mallory").adopt(entries, keys, former={"alice": frozenset()})
    assert refused.value.code == "unknown_key"


def test_a_former_key_appends_nothing() -> None:
    """An entry under alice's former key after her current key signed one is refused, by a
    reader from scratch and by one that verified the chain before; so is a chain whose last
    entries are all under former keys, for a reader that did not verify them itself."""
    entries = mk.chain(
        [("alice", Action.CREATE, ("bob", "carol"), b""), ("alice", Action.ADD, ("dave",), b"")]
    )
    keys, former = _after_reset()
    reader = _session("bob", entries)  # verified while alice's key was the one now former
    reader.adopt(entries, keys, former=former)  # after her reset: what I verified stands
    with pytest.raises(GroupRefused) as refused:
        GroupSession(GROUP, "bob").adopt(entries, keys, former=former)
    assert refused.value.code == "old_key"
    entries.append(_signed(entries, Action.ADD, ("mallory",), ALICE_NOW))
    reader.adopt(entries, keys, former=former)
    forged = [*entries, _signed(entries, Action.REMOVE, ("carol",), mk.sign_key("alice"))]
    for session in (reader, GroupSession(GROUP, "dave")):
        with pytest.raises(GroupRefused) as refused:
            session.adopt(forged, keys, former=former)
        assert refused.value.code == "old_key" and "alice" in str(refused.value)
