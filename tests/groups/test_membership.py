"""securechat/groups/membership.py: entry encoding, signatures and the chain's replay of rights."""

from __future__ import annotations

from typing import Any

import pytest

from securechat import e2e
from securechat.groups.membership import (
    ZERO_HASH,
    Action,
    GroupState,
    MembershipError,
    Subject,
    check_roster,
    decode_entry,
    entry_hash,
    sign_entry,
    verify_chain,
)
from tests import vectorkit
from tests.vectors import make_group_vectors as mk


@pytest.fixture(name="vectors", scope="module")
def _vectors() -> dict[str, Any]:
    """The membership part of tests/vectors/groups.json."""
    data: dict[str, Any] = vectorkit.load("groups")["membership"]
    return data


def _entries(vectors: dict[str, Any]) -> list[bytes]:
    return [e2e.b64decode(e) for e in vectors["entries"]]


def _refused(entries: list[bytes]) -> str:
    """The code verify_chain refuses ``entries`` with."""
    with pytest.raises(MembershipError) as caught:
        verify_chain(entries, mk.keys())
    return caught.value.code


def test_vectors_are_current() -> None:
    """The committed vector file is what the generator makes now (the code did not drift)."""
    assert mk.build() == vectorkit.load("groups")


def test_entries_encode_as_pinned(vectors: dict[str, Any]) -> None:
    """Signing each step gives the pinned bytes, and each hash is SHA-256 of the entry."""
    prev = ZERO_HASH
    for step, pinned, digest in zip(
        vectors["steps"], _entries(vectors), vectors["hashes"], strict=True
    ):
        made = sign_entry(
            group_id=bytes.fromhex(vectors["group_id"]),
            seq=step["seq"],
            prev_hash=prev,
            action=Action(step["action"]),
            written_ms=step["written_ms"],
            actor=step["actor"],
            subjects=[
                Subject(s["username"], bytes.fromhex(s["fingerprint"])) for s in step["subjects"]
            ],
            detail=e2e.b64decode(step["detail"]),
            sign_key=mk.sign_key(step["actor"]),
        )
        assert made == pinned
        assert entry_hash(made).hex() == digest
        assert decode_entry(made).encode() == made
        prev = entry_hash(made)


def test_chain_replays_to_pinned_states(vectors: dict[str, Any]) -> None:
    """Every prefix of the chain verifies to the pinned members, admins and head."""
    entries = _entries(vectors)
    for n, want in enumerate(vectors["states"], start=1):
        state = verify_chain(entries[:n], mk.keys())
        assert state.head.hex() == want["head"]
        assert {k: v.hex() for k, v in state.members.items()} == want["members"]
        assert sorted(state.admins) == want["admins"]


@pytest.mark.parametrize(
    "name",
    [
        "flipped_bit",
        "reordered",
        "broken_link",
        "non_admin_signer",
        "unknown_key",
        "last_admin_leaves",
        "truncated",
    ],
)
def test_bad_chains_are_refused(vectors: dict[str, Any], name: str) -> None:
    """Each pinned bad chain is refused with its code."""
    (case,) = [c for c in vectors["bad_chains"] if c["name"] == name]
    assert _refused([e2e.b64decode(e) for e in case["entries"]]) == case["code"]


def test_every_flipped_bit_is_refused(vectors: dict[str, Any]) -> None:
    """No single bit of an entry can change without the chain being refused."""
    entries = _entries(vectors)
    target = entries[2]
    for bit in range(len(target) * 8):
        forged = bytearray(target)
        forged[bit // 8] ^= 0x80 >> (bit % 8)
        with pytest.raises(MembershipError):
            verify_chain([*entries[:2], bytes(forged), *entries[3:]], mk.keys())


def test_a_later_entry_cannot_be_dropped(vectors: dict[str, Any]) -> None:
    """Leaving out a middle entry breaks the chain (the server cannot hide a removal)."""
    entries = _entries(vectors)
    assert _refused([*entries[:4], entries[5]]) == "reordered"


def test_removed_admin_cannot_act(vectors: dict[str, Any]) -> None:
    """An admin rights check uses the state at that step: a removed admin signs nothing."""
    entries = _entries(vectors)
    head = entry_hash(entries[1])
    removed = mk.entry(2, head, "alice", Action.REMOVE, ("bob",), b"")
    again = mk.entry(3, entry_hash(removed), "bob", Action.ADD, ("mallory",), b"")
    assert _refused([*entries[:2], removed, again]) == "not_admin"


def test_member_cannot_rename_or_promote(vectors: dict[str, Any]) -> None:
    """A member who is not an admin may not rename or make admins, but may leave."""
    entries = _entries(vectors)
    prev = entry_hash(entries[0])
    rename = mk.entry(1, prev, "carol", Action.RENAME, (), b"x")
    promote = mk.entry(1, prev, "carol", Action.MAKE_ADMIN, ("carol",), b"")
    assert _refused([entries[0], rename]) == "not_admin"
    assert _refused([entries[0], promote]) == "not_admin"
    leave = mk.entry(1, prev, "carol", Action.LEAVE, (), b"")
    assert "carol" not in verify_chain([entries[0], leave], mk.keys()).members


def test_outsider_cannot_sign(vectors: dict[str, Any]) -> None:
    """Someone who is not a member is refused even for a leave."""
    entries = _entries(vectors)
    leave = mk.entry(1, entry_hash(entries[0]), "mallory", Action.LEAVE, (), b"")
    assert _refused([entries[0], leave]) == "not_admin"


def test_chain_must_start_with_create(vectors: dict[str, Any]) -> None:
    """An add at seq 0, or a second create, is refused."""
    first = mk.entry(0, ZERO_HASH, "alice", Action.ADD, ("bob",), b"")
    assert _refused([first]) == "bad_change"
    entries = _entries(vectors)
    second = mk.entry(1, entry_hash(entries[0]), "alice", Action.CREATE, ("dave",), b"")
    assert _refused([entries[0], second]) == "bad_change"


def test_last_admin_cannot_remove_themselves(vectors: dict[str, Any]) -> None:
    """An admin does not remove themselves (that is a leave, refused for the last admin)."""
    entries = _entries(vectors)
    remove = mk.entry(1, entry_hash(entries[0]), "alice", Action.REMOVE, ("alice",), b"")
    assert _refused([entries[0], remove]) == "bad_change"


def test_member_bound_is_enforced(vectors: dict[str, Any]) -> None:
    """A chain that grows past max_members is refused."""
    with pytest.raises(MembershipError) as caught:
        verify_chain(_entries(vectors)[:3], mk.keys(), max_members=3)
    assert caught.value.code == "bad_change"


def _state(vectors: dict[str, Any]) -> GroupState:
    return verify_chain(_entries(vectors), mk.keys())


def test_ghost_member_is_refused(vectors: dict[str, Any]) -> None:
    """A member the server lists but the chain does not justify is a ghost, named."""
    with pytest.raises(MembershipError, match="mallory") as caught:
        check_roster(_state(vectors), ["alice", "bob", "mallory"])
    assert caught.value.code == "ghost_member"


def test_hidden_member_is_refused(vectors: dict[str, Any]) -> None:
    """A member list that omits someone the chain holds is refused too."""
    with pytest.raises(MembershipError) as caught:
        check_roster(_state(vectors), ["alice"])
    assert caught.value.code == "hidden_member"
    check_roster(_state(vectors), ["bob", "alice"])


def test_strict_decoding(vectors: dict[str, Any]) -> None:
    """A trailing byte, an unknown action or another label is malformed."""
    entry = _entries(vectors)[0]
    unknown = bytearray(entry)
    unknown[81] = 7  # the action byte
    for bad in (entry + b"\0", bytes(unknown), b"X" + entry[1:]):
        with pytest.raises(MembershipError) as caught:
            decode_entry(bad)
        assert caught.value.code == "malformed"
