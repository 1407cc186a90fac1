"""Regenerate tests/vectors/groups.json: the group answers both clients (Python, JavaScript) give.

Run from the repository root:  .venv/bin/python -m tests.vectors.make_group_vectors

Every input is fixed: Ed25519 keys come straight from 32-byte seeds (RFC 8032 5.1.5) and
Ed25519 signatures are deterministic, so the whole file is reproducible byte for byte.
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path
from typing import Any

from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ed25519

from securechat import e2e
from securechat.groups import senderkeys
from securechat.groups.membership import (
    ZERO_HASH,
    Action,
    MembershipError,
    Subject,
    entry_hash,
    sign_entry,
    verify_chain,
)
from securechat.groups.names import name_aad, seal_name

OUTPUT = Path(__file__).with_name("groups.json")
PEOPLE = ("alice", "bob", "carol", "dave", "mallory")
GROUP_ID = bytes.fromhex("9a1b2c3d4e5f60718293a4b5c6d7e8f9")
T0 = 1_764_000_000_000
CHAIN_KEY = bytes(range(0x40, 0x60))
CHAIN_ID = bytes(range(0xA0, 0xB0))
IVS = [bytes([i] * 12) for i in range(1, 4)]
NAME_KEY = bytes(range(0x60, 0x80))
NAME_IV = bytes([0x0A] * 12)


def sign_key(name: str) -> ed25519.Ed25519PrivateKey:
    """TEST-ONLY: the fixed Ed25519 key of one of PEOPLE."""
    seed = hashlib.sha256(b"securechat group vector: " + name.encode()).digest()
    return ed25519.Ed25519PrivateKey.from_private_bytes(seed)


def spki(name: str) -> bytes:
    """SPKI DER of a person's public key."""
    return (
        sign_key(name)
        .public_key()
        .public_bytes(serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo)
    )


def pkcs8(name: str) -> bytes:
    """PKCS#8 DER of a person's private key (WebCrypto imports it)."""
    return sign_key(name).private_bytes(
        serialization.Encoding.DER,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    )


def fp(name: str) -> bytes:
    """The raw fingerprint of a person's key."""
    return hashlib.sha256(spki(name)).digest()


def subjects(*names: str) -> list[Subject]:
    """Subjects with the fingerprints of their fixed keys."""
    return [Subject(n, fp(n)) for n in names]


# (actor, action, subjects, detail): the valid chain, one step per entry.
STEPS: list[tuple[str, Action, tuple[str, ...], bytes]] = [
    ("alice", Action.CREATE, ("bob", "carol"), b"encrypted name: Hiking \xf0\x9f\x8f\x94"),
    ("alice", Action.MAKE_ADMIN, ("bob",), b""),
    ("bob", Action.ADD, ("dave",), b""),
    ("bob", Action.RENAME, (), b"encrypted name: Hiking 2027"),
    ("alice", Action.REMOVE, ("carol",), b""),
    ("dave", Action.LEAVE, (), b""),
]


def entry(
    seq: int,
    prev: bytes,
    actor: str,
    action: Action,
    names: tuple[str, ...],
    detail: bytes,
    signer: str | None = None,
) -> bytes:
    """One signed entry (``signer`` signs in the actor's name, for forgeries)."""
    return sign_entry(
        group_id=GROUP_ID,
        seq=seq,
        prev_hash=prev,
        action=action,
        written_ms=T0 + 60_000 * seq,
        actor=actor,
        subjects=subjects(*names),
        detail=detail,
        sign_key=sign_key(signer or actor),
    )


def chain(steps: list[tuple[str, Action, tuple[str, ...], bytes]]) -> list[bytes]:
    """Entries for ``steps``, each linked to the one before."""
    out: list[bytes] = []
    for seq, (actor, action, names, detail) in enumerate(steps):
        out.append(
            entry(seq, entry_hash(out[-1]) if out else ZERO_HASH, actor, action, names, detail)
        )
    return out


def bad_chains(good: list[bytes]) -> list[dict[str, Any]]:
    """Chains every client refuses, with the code it names."""
    flipped = bytearray(good[2])
    flipped[89] ^= 0x01  # a bit of the timestamp: only the signature can notice
    mallory_key = entry(3, entry_hash(good[2]), "bob", Action.ADD, ("mallory",), b"", "mallory")
    cases = {
        "flipped_bit": ([*good[:2], bytes(flipped), *good[3:]], "bad_signature"),
        "reordered": ([good[0], good[2], good[1], *good[3:]], "reordered"),
        "broken_link": (
            [*good[:2], entry(2, bytes(32), "bob", Action.ADD, ("dave",), b"")],
            "broken_link",
        ),
        "non_admin_signer": (
            [*good[:3], entry(3, entry_hash(good[2]), "carol", Action.ADD, ("mallory",), b"")],
            "not_admin",
        ),
        "unknown_key": ([*good[:3], mallory_key], "unknown_key"),
        "last_admin_leaves": (chain([STEPS[0], ("alice", Action.LEAVE, (), b"")]), "bad_change"),
        "truncated": ([*good[:2], good[2][:-1]], "malformed"),
    }
    out = []
    for name, (entries, code) in cases.items():
        try:
            verify_chain(entries, keys())
        except MembershipError as exc:
            assert exc.code == code, (name, exc)
        else:
            raise AssertionError(f"{name} was accepted")
        out.append({"name": name, "entries": [e2e.b64encode(e) for e in entries], "code": code})
    return out


def keys() -> dict[str, list[bytes]]:
    """Every person's verified key."""
    return {n: [spki(n)] for n in PEOPLE}


def membership() -> dict[str, Any]:
    """The valid chain, each entry's hash and the state after every prefix."""
    good = chain(STEPS)
    states = []
    for n in range(1, len(good) + 1):
        state = verify_chain(good[:n], keys())
        states.append(
            {
                "head": state.head.hex(),
                "members": {k: v.hex() for k, v in sorted(state.members.items())},
                "admins": sorted(state.admins),
                "name": e2e.b64encode(state.name),
            }
        )
    return {
        "group_id": GROUP_ID.hex(),
        "steps": [
            {
                "seq": seq,
                "actor": actor,
                "action": int(action),
                "subjects": [{"username": s, "fingerprint": fp(s).hex()} for s in names],
                "detail": e2e.b64encode(detail),
                "written_ms": T0 + 60_000 * seq,
            }
            for seq, (actor, action, names, detail) in enumerate(STEPS)
        ],
        "entries": [e2e.b64encode(e) for e in good],
        "hashes": [entry_hash(e).hex() for e in good],
        "states": states,
        "bad_chains": bad_chains(good),
    }


def sender_chain() -> dict[str, Any]:
    """Chain keys and message keys of the first iterations."""
    steps, key = [], CHAIN_KEY
    for i in range(5):
        steps.append(
            {
                "iteration": i,
                "chain_key": key.hex(),
                "message_key": senderkeys.message_key(key).hex(),
            }
        )
        key = senderkeys.next_chain_key(key)
    return {"chain_key_0": CHAIN_KEY.hex(), "steps": steps}


def messages(head: bytes) -> list[dict[str, Any]]:
    """Alice's messages at iterations 0, 1 and 4 (2 and 3 are never sent: skipped keys)."""
    chain_ = senderkeys.SenderChain(CHAIN_ID, CHAIN_KEY)
    out = []
    texts = ["Hello group 👋", "", json.dumps({"text": "ünïcödé ✓", "ts": T0}, ensure_ascii=False)]
    for n, text in enumerate(texts):
        if n == 2:
            chain_.step(), chain_.step()
        message_id = f"01JGROUPMSG{n:015d}"
        iteration = chain_.iteration
        wire = senderkeys.encrypt_group_message(
            chain=chain_,
            group_id=GROUP_ID,
            head=head,
            sender="alice",
            message_id=message_id,
            plaintext=text.encode("utf-8"),
            sign_key=sign_key("alice"),
            _iv=IVS[n],
        )
        ct = e2e.b64decode(wire["ct"])
        out.append(
            {
                "message_id": message_id,
                "sender": "alice",
                "chain_id": CHAIN_ID.hex(),
                "iteration": iteration,
                "plaintext": e2e.b64encode(text.encode("utf-8")),
                "iv": IVS[n].hex(),
                "aad": senderkeys.group_aad(
                    GROUP_ID, head, "alice", CHAIN_ID, iteration, message_id
                ).hex(),
                "signed_bytes": senderkeys.group_signed_bytes(
                    GROUP_ID, head, message_id, "alice", CHAIN_ID, iteration, IVS[n], ct
                ).hex(),
                "wire": wire,
            }
        )
    return out


def group_name() -> dict[str, Any]:
    """A name sealed in the rename entry at chain index 3 (docs/CONTRACTS.md, "Group name")."""
    name, index = "Hiking 2027 🏔", 3
    detail = seal_name(NAME_KEY, name, GROUP_ID, index, _iv=NAME_IV)
    return {
        "group_id": GROUP_ID.hex(),
        "index": index,
        "name": name,
        "name_key": NAME_KEY.hex(),
        "iv": NAME_IV.hex(),
        "aad": name_aad(GROUP_ID, index).hex(),
        "detail": e2e.b64encode(detail),
    }


def build() -> dict[str, Any]:
    """The whole vector file."""
    member_vectors = membership()
    head = bytes.fromhex(member_vectors["hashes"][-1])
    distribution = senderkeys.Distribution(GROUP_ID, head, "alice", CHAIN_ID, 0, CHAIN_KEY)
    return {
        "keys": {
            n: {"spki": e2e.b64encode(spki(n)), "pkcs8": e2e.b64encode(pkcs8(n))} for n in PEOPLE
        },
        "membership": member_vectors,
        "sender_chain": sender_chain(),
        "messages": {"group_id": GROUP_ID.hex(), "head": head.hex(), "cases": messages(head)},
        "distribution": {
            "group_id": GROUP_ID.hex(),
            "head": head.hex(),
            "sender": "alice",
            "chain_id": CHAIN_ID.hex(),
            "iteration": 0,
            "chain_key": CHAIN_KEY.hex(),
            "encoded": e2e.b64encode(distribution.encode()),
        },
        "name": group_name(),
    }


def main() -> None:
    """Write tests/vectors/groups.json."""
    OUTPUT.write_text(json.dumps(build(), indent=2, ensure_ascii=False) + "\n", "utf-8")


if __name__ == "__main__":
    main()
