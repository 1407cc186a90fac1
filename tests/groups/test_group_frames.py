"""Group frames, Sans-I/O (securechat/chat/protocol.py), and the server's incremental chain
check (securechat/groups/membership.py ``verify_next``, ``replay_verified``)."""

from __future__ import annotations

import hashlib
import json
import os
import uuid
from pathlib import Path
from typing import Any

import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ed25519

from securechat.chat.delivery import Job
from securechat.chat.hub import Connection
from securechat.chat.protocol import (
    Delivered,
    GroupKeys,
    GroupSend,
    ProtocolError,
    Read,
    Send,
    group_entry_frame,
    group_keys_frame,
    group_message_frame,
    group_receipt_frame,
    parse_client_frame,
)
from securechat.e2e import b64encode
from securechat.groups import membership
from securechat.groups.membership import Action, MembershipError, Subject
from tests.chat.test_delivery import drain, running_chat
from tests.chatkit import FAKE_ENVELOPE

MAX = 56 * 1024
GROUP = "9f0c2d4e5a6b7c8d9e0f1a2b3c4d5e6f"
HEAD = b64encode(bytes(range(32)))
GROUP_ENVELOPE: dict[str, Any] = {
    "v": 1,
    "cid": b64encode(bytes(16)),
    "it": 7,
    "iv": b64encode(bytes(12)),
    "ct": b64encode(bytes(40)),
    "sig": b64encode(bytes(64)),
}


def group_send(**changes: Any) -> dict[str, Any]:
    frame = {
        "type": "send",
        "id": str(uuid.uuid4()),
        "group": GROUP,
        "head": HEAD,
        "envelope": GROUP_ENVELOPE,
    }
    return {key: value for key, value in (frame | changes).items() if value is not None}


def parse(frame: dict[str, Any]) -> Any:
    return parse_client_frame(json.dumps(frame), max_envelope_bytes=MAX)


def refusal(frame: dict[str, Any]) -> str:
    with pytest.raises(ProtocolError) as caught:
        parse(frame)
    return caught.value.code


def test_group_send_parses_to_its_canonical_envelope() -> None:
    """A send with group and head is a GroupSend whose envelope text is canonical JSON."""
    frame = parse(group_send())
    assert isinstance(frame, GroupSend)
    assert (frame.group, frame.head) == (GROUP, HEAD)
    assert frame.envelope_json == json.dumps(GROUP_ENVELOPE, separators=(",", ":"), sort_keys=True)


def test_pair_send_is_unchanged() -> None:
    """A send with ``to`` is still a pair send."""
    frame = parse({"type": "send", "id": str(uuid.uuid4()), "to": "bob", "envelope": FAKE_ENVELOPE})
    assert isinstance(frame, Send)


@pytest.mark.parametrize(
    "changes",
    [
        {"group": GROUP.upper()},
        {"group": GROUP[:-1]},
        {"head": HEAD[:-4]},
        {"head": None},
        {"to": "bob"},
        {"envelope": GROUP_ENVELOPE | {"rk": "AAAA"}},
        {"envelope": GROUP_ENVELOPE | {"v": 2}},
        {"envelope": GROUP_ENVELOPE | {"it": 2**32}},
        {"envelope": GROUP_ENVELOPE | {"it": -1}},
        {"envelope": GROUP_ENVELOPE | {"it": True}},
        {"envelope": GROUP_ENVELOPE | {"iv": b64encode(bytes(11))}},
        {"envelope": GROUP_ENVELOPE | {"sig": b64encode(bytes(63))}},
        {"envelope": GROUP_ENVELOPE | {"ct": b64encode(bytes(15))}},
        {"envelope": {k: v for k, v in GROUP_ENVELOPE.items() if k != "sig"}},
        {"envelope": {k: v for k, v in GROUP_ENVELOPE.items() if k != "cid"}},
        {"envelope": GROUP_ENVELOPE | {"cid": b64encode(bytes(15))}},
        {"envelope": GROUP_ENVELOPE | {"cid": b64encode(bytes(17))}},
    ],
)
def test_malformed_group_sends_are_bad_fields(changes: dict[str, Any]) -> None:
    """Each broken field of a group send is refused as bad_field, naming the frame."""
    assert refusal(group_send(**changes)) == "bad_field"


def test_oversized_group_envelope_is_too_large() -> None:
    """A group envelope past the bound is envelope_too_large, before any field check."""
    big = GROUP_ENVELOPE | {"ct": b64encode(bytes(MAX))}
    assert refusal(group_send(envelope=big)) == "envelope_too_large"


def keys_frame(keys: Any) -> dict[str, Any]:
    return {
        "type": "group_keys",
        "id": str(uuid.uuid4()),
        "group": GROUP,
        "head": HEAD,
        "keys": keys,
    }


def test_group_keys_parse_each_envelope_and_the_whole_map() -> None:
    """group_keys keeps each recipient's canonical envelope and the map's canonical JSON."""
    frame = parse(keys_frame({"carol": FAKE_ENVELOPE, "bob": FAKE_ENVELOPE}))
    assert isinstance(frame, GroupKeys)
    assert list(frame.keys) == ["bob", "carol"]
    canonical = json.dumps(
        {"bob": FAKE_ENVELOPE, "carol": FAKE_ENVELOPE}, separators=(",", ":"), sort_keys=True
    )
    assert frame.keys_json == canonical
    assert json.loads(frame.keys["bob"]) == FAKE_ENVELOPE


@pytest.mark.parametrize(
    "keys",
    [{}, [], {"Bob": FAKE_ENVELOPE}, {"bob": FAKE_ENVELOPE | {"v": 2}}, {"bob": "x"}],
)
def test_malformed_group_keys_are_bad_fields(keys: Any) -> None:
    """An empty map, a non-canonical name or a broken envelope is bad_field."""
    assert refusal(keys_frame(keys)) == "bad_field"


def test_group_keys_past_the_bound_are_too_large() -> None:
    """Many envelopes together past 56 KiB are envelope_too_large."""
    keys = {f"user{i:03d}": FAKE_ENVELOPE for i in range(80)}
    assert refusal(keys_frame(keys)) == "envelope_too_large"


def test_marks_name_their_group_or_none() -> None:
    """delivered and read carry the group when given, and check it."""
    assert parse({"type": "read", "seq": 5, "group": GROUP}) == Read(5, GROUP)
    assert parse({"type": "delivered", "seq": 5}) == Delivered(5, None)
    assert refusal({"type": "read", "seq": 5, "group": "nope"}) == "bad_field"


def test_server_frames_are_the_documented_json() -> None:
    """The builders write docs/protocol.md's group frames as valid JSON."""
    env = json.dumps(GROUP_ENVELOPE, separators=(",", ":"), sort_keys=True)
    message = json.loads(group_message_frame(9, "i", GROUP, "alice", HEAD, 5, env))
    assert message == {
        "type": "group_message", "seq": 9, "id": "i", "group": GROUP, "from": "alice",
        "head": HEAD, "ts": 5, "envelope": GROUP_ENVELOPE,
    }  # fmt: skip
    keys = json.loads(group_keys_frame(9, "i", GROUP, "alice", HEAD, 5, env, "bob"))
    assert (keys["type"], keys["to"], keys["envelope"]) == ("group_keys", "bob", GROUP_ENVELOPE)
    assert "to" not in json.loads(group_keys_frame(9, "i", GROUP, "alice", HEAD, 5, env))
    entry = json.loads(group_entry_frame(8, GROUP, 3, "ZW50cnk=", 4))
    assert entry == {
        "type": "group_entry",
        "seq": 8,
        "group": GROUP,
        "index": 3,
        "entry": "ZW50cnk=",
        "ts": 4,
    }
    receipt = json.loads(group_receipt_frame(GROUP, 'a"b', 3, 2, 4))
    assert receipt == {
        "type": "group_receipt",
        "group": GROUP,
        "id": 'a"b',
        "delivered": 3,
        "read": 2,
        "members": 4,
    }


# --- verify_next and replay_verified ------------------------------------------------------------


class People:
    """Ed25519 keys by name, and entries they sign on one group's chain."""

    def __init__(self, *names: str) -> None:
        self.keys = {name: ed25519.Ed25519PrivateKey.generate() for name in names}
        self.group_id = os.urandom(16)
        self.chain: list[bytes] = []

    def spki(self, name: str) -> bytes:
        return (
            self.keys[name]
            .public_key()
            .public_bytes(
                serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo
            )
        )

    def subject(self, name: str) -> Subject:
        return Subject(name, hashlib.sha256(self.spki(name)).digest())

    def public(self) -> dict[str, list[bytes]]:
        return {name: [self.spki(name)] for name in self.keys}

    def sign(self, actor: str, action: Action, *subjects: str, detail: bytes = b"") -> bytes:
        prev = membership.entry_hash(self.chain[-1]) if self.chain else membership.ZERO_HASH
        entry = membership.sign_entry(
            group_id=self.group_id, seq=len(self.chain), prev_hash=prev, action=action,
            written_ms=1, actor=actor, subjects=[self.subject(s) for s in subjects],
            detail=detail, sign_key=self.keys[actor],
        )  # fmt: skip
        return entry

    def append(self, entry: bytes) -> bytes:
        self.chain.append(entry)
        return entry


def test_verify_next_agrees_with_the_whole_chain() -> None:
    """Entry by entry, verify_next reaches the state verify_chain gives the whole chain."""
    people = People("alice", "bob", "carol", "dave")
    state = membership.verify_chain(
        [people.append(people.sign("alice", Action.CREATE, "bob", detail=b"n"))], people.public()
    )
    steps: list[tuple[str, Action, tuple[str, ...]]] = [
        ("alice", Action.ADD, ("carol", "dave")),
        ("alice", Action.MAKE_ADMIN, ("carol",)),
        ("carol", Action.REMOVE, ("dave",)),
        ("bob", Action.LEAVE, ()),
    ]
    for actor, action, subjects in steps:
        entry = people.append(people.sign(actor, action, *subjects))
        state = membership.verify_next(state, entry, people.public())
    assert state == membership.verify_chain(people.chain, people.public())
    assert state == membership.replay_verified(people.chain, max_members=256)
    assert (sorted(state.members), sorted(state.admins)) == (["alice", "carol"], ["alice", "carol"])


def test_verify_next_refuses_what_the_chain_would() -> None:
    """A flipped bit, a non-admin's change, a stale link and a second create are refused."""
    people = People("alice", "bob", "carol")
    state = membership.verify_chain(
        [people.append(people.sign("alice", Action.CREATE, "bob"))], people.public()
    )
    add = bytearray(people.sign("alice", Action.ADD, "carol"))
    add[-1] ^= 1
    cases = {
        "bad_signature": bytes(add),
        "not_admin": people.sign("bob", Action.ADD, "carol"),
        "bad_change": people.sign("alice", Action.CREATE, "carol"),
    }
    for code, entry in cases.items():
        with pytest.raises(MembershipError) as caught:
            membership.verify_next(state, entry, people.public())
        assert caught.value.code == code
    people.append(people.sign("alice", Action.RENAME, detail=b"x"))
    with pytest.raises(MembershipError) as caught:  # signed for seq 2, offered as seq 1
        membership.verify_next(state, people.sign("alice", Action.RENAME), people.public())
    assert caught.value.code == "reordered"


def test_replay_verified_skips_signatures_only() -> None:
    """A stored chain replays without its signers' keys, but its rules still hold."""
    people = People("alice", "bob")
    people.append(people.sign("alice", Action.CREATE, "bob"))
    people.append(people.sign("bob", Action.RENAME))
    with pytest.raises(MembershipError) as caught:
        membership.replay_verified(people.chain, max_members=256)
    assert caught.value.code == "not_admin"


# --- Delivery.run_in_order (the order of a socket's answers) --------------------------------------


async def test_a_job_waits_for_its_sockets_earlier_sends_only(tmp_path: Path) -> None:
    """A group job of a socket with a send still uncommitted runs after that send's ack; one
    of a socket with nothing waiting runs at once."""
    async with running_chat(tmp_path, None) as chat:
        alice = chat.hub.connect("alice", "session-a")
        bob = chat.hub.connect("bob", "session-b")
        ran: list[str] = []

        def job(name: str, conn: Connection) -> Job:
            async def run() -> None:
                ran.append(name)
                conn.deliver(json.dumps({"type": "job", "name": name}))

            return run

        send = Send(str(uuid.uuid4()), "bob", json.dumps(FAKE_ENVELOPE))
        await chat.delivery.send(alice, chat.users["alice"], send)
        await chat.delivery.run_in_order(alice, job("alice's", alice))
        await chat.delivery.run_in_order(bob, job("bob's", bob))
        assert ran == ["bob's"]  # alice's waits for her send's commit
        await chat.delivery.flush()
        assert ran == ["bob's", "alice's"]
        assert [frame["type"] for frame in drain(alice)] == ["ack", "job"]
