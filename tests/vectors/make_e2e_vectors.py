"""Regenerate tests/vectors/e2e.json: the answers both e2e clients (Python, JavaScript) must give.

Run from the repository root:  .venv/bin/python -m tests.vectors.make_e2e_vectors

Every input is fixed below. The two identities are derived from fixed seeds: Ed25519 keys straight
from their 32-byte seeds (RFC 8032 5.1.5), RSA keys by a TEST-ONLY deterministic prime search
(SHA-512 in counter mode feeding Miller-Rabin). Never use this key generation for real keys.

So the file is reproducible except for one thing: RSA-OAEP is randomised (RFC 8017 7.1.1), so the
wrapped message keys ``rk``/``sk`` of each envelope, and hence ``sig``, change on every run. The
vectors only demand that those envelopes open; ``iv``, ``ct``, ``aad`` and ``signed_bytes`` are
checked byte for byte (``signed_bytes`` against the ``rk``/``sk`` stored beside it).
"""

from __future__ import annotations

import hashlib
import json
import unicodedata
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from cryptography.hazmat.primitives.asymmetric import ed25519, rsa

from securechat import e2e

OUTPUT = Path(__file__).with_name("e2e.json")
RSA_BITS = 3072

# Fullwidth letters, the "fi" ligature, a decomposed "e" + combining acute and a superscript two all
# change under NFKC; the emoji (one with a zero-width joiner) and the space do not.
PASSWORD = (
    "\uff30\uff41\uff53\uff53 \uff57\uff4f\uff52\uff44"  # fullwidth "Pass word"
    " \ufb01ne cafe\u0301 x\u00b2"  # "fi" ligature, e + combining acute, superscript two
    " \U0001f510\U0001f642\U0001f469\u200d\U0001f4bb"  # emoji, one joined by a ZWJ
)
SALT = bytes(range(0xA0, 0xB0))
ITERATIONS = 600_000

SEEDS = {"alice": b"securechat test vector: alice", "bob": b"securechat test vector: bob"}
BACKUP_IV = bytes.fromhex("00112233445566778899aabb")
WRITTEN_MS = 1_732_700_000_000


def long_text(length: int = 4000) -> str:
    """Exactly ``length`` code points mixing ASCII, accents, CJK, RTL and (multi-unit) emoji."""
    pattern = 'Hello, 世界! Ünïcödé ✓ مرحبا 👋🏽 👩‍👩‍👧 🔐 ﬁ\n\t"quoted" \\ '
    return (pattern * (length // len(pattern) + 1))[:length]


ENVELOPES = [
    {
        "id": "msg-0001",
        "from": "alice",
        "to": "bob",
        "text": "Hi Bob! 👋 Is this thing on?",
        "aes_key": bytes(range(32)),
        "iv": bytes.fromhex("0f0e0d0c0b0a090807060504"),
    },
    {
        "id": "01JDQX7Z0000000000000000ÄÖ",
        "from": "alice",
        "to": "bob",
        "text": long_text(),
        "aes_key": bytes(range(0xFF, 0xDF, -1)),
        "iv": bytes.fromhex("a1a2a3a4a5a6a7a8a9aaabac"),
    },
]


# --- TEST-ONLY deterministic RSA ----------------------------------------------------------


def _stream(seed: bytes, label: bytes) -> Iterator[int]:
    """Endless pseudo-random bytes: SHA-512(seed || label || counter)."""
    counter = 0
    while True:
        yield from hashlib.sha512(seed + label + counter.to_bytes(8, "big")).digest()
        counter += 1


def _small_primes(limit: int = 2000) -> list[int]:
    """The primes below ``limit`` (sieve of Eratosthenes), for trial division."""
    sieve = bytearray([1]) * limit
    sieve[:2] = b"\x00\x00"
    for i in range(2, int(limit**0.5) + 1):
        if sieve[i]:
            sieve[i * i :: i] = bytearray(len(sieve[i * i :: i]))
    return [i for i, is_prime in enumerate(sieve) if is_prime]


SMALL_PRIMES = _small_primes()


def _is_probable_prime(n: int) -> bool:
    """Trial division, then Miller-Rabin with the first 40 primes as bases (FIPS 186-5 B.3)."""
    if any(n % p == 0 for p in SMALL_PRIMES):
        return n in SMALL_PRIMES
    d, s = n - 1, 0
    while d % 2 == 0:
        d, s = d // 2, s + 1
    for base in SMALL_PRIMES[:40]:
        x = pow(base, d, n)
        if x in (1, n - 1):
            continue
        for _ in range(s - 1):
            x = pow(x, 2, n)
            if x == n - 1:
                break
        else:
            return False
    return True


def _prime(stream: Iterator[int], bits: int) -> int:
    """The first probable prime from ``stream`` with its top two bits set and p mod e != 1."""
    while True:
        candidate = int.from_bytes(bytes(next(stream) for _ in range(bits // 8)), "big")
        candidate |= (0b11 << (bits - 2)) | 1
        if candidate % e2e.RSA_EXPONENT != 1 and _is_probable_prime(candidate):
            return candidate


def deterministic_rsa_key(seed: bytes, bits: int = RSA_BITS) -> rsa.RSAPrivateKey:
    """An RSA key with e = 65537 that depends only on ``seed``. TEST VECTORS ONLY."""
    stream = _stream(seed, b"/rsa")
    p, q = _prime(stream, bits // 2), _prime(stream, bits // 2)
    d = pow(e2e.RSA_EXPONENT, -1, (p - 1) * (q - 1))
    public = rsa.RSAPublicNumbers(e2e.RSA_EXPONENT, p * q)
    return rsa.RSAPrivateNumbers(
        p=p,
        q=q,
        d=d,
        dmp1=rsa.rsa_crt_dmp1(d, p),
        dmq1=rsa.rsa_crt_dmq1(d, q),
        iqmp=rsa.rsa_crt_iqmp(p, q),
        public_numbers=public,
    ).private_key()


def deterministic_identity(seed: bytes) -> e2e.Identity:
    """The fixed identity for ``seed``: deterministic RSA and an Ed25519 key from SHA-256(seed)."""
    sign = ed25519.Ed25519PrivateKey.from_private_bytes(hashlib.sha256(seed + b"/ed25519").digest())
    return e2e.Identity(deterministic_rsa_key(seed), sign)


# --- the vectors --------------------------------------------------------------------------


def derivation_vector() -> dict[str, Any]:
    """Section 1: the password, salt and iterations, and the keys they derive."""
    keys = e2e.derive_keys(PASSWORD, SALT, ITERATIONS)
    return {
        "password": PASSWORD,
        "password_nfkc": unicodedata.normalize("NFKC", PASSWORD),
        "salt": e2e.b64encode(SALT),
        "iterations": ITERATIONS,
        "auth_key": e2e.b64encode(keys.auth_key),
        "wrap_key": e2e.b64encode(keys.wrap_key),
    }


def identity_vector(identity: e2e.Identity) -> dict[str, str]:
    """Section 2a: one identity's private keys (PKCS#8) and public keys (SPKI)."""
    enc_pkcs8, sign_pkcs8 = identity.to_pkcs8()
    return {
        "enc_pkcs8": e2e.b64encode(enc_pkcs8),
        "sign_pkcs8": e2e.b64encode(sign_pkcs8),
        "enc_spki": e2e.b64encode(identity.enc_public_spki),
        "sign_spki": e2e.b64encode(identity.sign_public_spki),
        "enc_fingerprint": e2e.fingerprint(identity.enc_public_spki),
        "sign_fingerprint": e2e.fingerprint(identity.sign_public_spki),
    }


def key_backup_vector(identity: e2e.Identity, wrap_key: bytes) -> dict[str, str]:
    """Section 2b: alice's key backup under the derived wrap key, with a fixed IV."""
    backup = e2e.seal_key_backup(identity, wrap_key, _iv=BACKUP_IV)
    return {"identity": "alice", "iv": e2e.b64encode(BACKUP_IV), "backup": backup}


def envelope_vector(spec: dict[str, Any], identities: dict[str, e2e.Identity]) -> dict[str, Any]:
    """Section 3: one envelope with a fixed message key and IV (rk, sk, sig are randomised)."""
    envelope = e2e.encrypt_message(
        message_id=spec["id"],
        sender=spec["from"],
        recipient=spec["to"],
        text=spec["text"],
        written_ms=WRITTEN_MS,
        sender_identity=identities[spec["from"]],
        recipient_enc_spki=identities[spec["to"]].enc_public_spki,
        _aes_key=spec["aes_key"],
        _iv=spec["iv"],
    )
    fields = {name: e2e.b64decode(envelope[name]) for name in ("iv", "ct", "rk", "sk")}
    signed = e2e.envelope_signed_bytes(spec["id"], spec["from"], spec["to"], **fields)
    return {
        "id": spec["id"],
        "from": spec["from"],
        "to": spec["to"],
        "text": spec["text"],
        "ts": WRITTEN_MS,
        "aes_key": e2e.b64encode(spec["aes_key"]),
        "aad": e2e.b64encode(e2e.envelope_aad(spec["id"], spec["from"], spec["to"])),
        "signed_bytes": e2e.b64encode(signed),
        "envelope": envelope,
    }


def safety_number_vector(identities: dict[str, e2e.Identity]) -> dict[str, str]:
    """Section 4: the safety number of alice and bob."""
    alice, bob = identities["alice"], identities["bob"]
    value = e2e.safety_number(
        "alice", alice.sign_public_spki, alice.enc_public_spki,
        "bob", bob.sign_public_spki, bob.enc_public_spki,
    )  # fmt: skip
    return {"a": "alice", "b": "bob", "value": value}


def build() -> dict[str, Any]:
    """All four sections, in the order CONTRACTS.md introduces them."""
    derivation = derivation_vector()
    identities = {name: deterministic_identity(seed) for name, seed in SEEDS.items()}
    wrap_key = e2e.b64decode(derivation["wrap_key"])
    return {
        "_about": "Generated by tests/vectors/make_e2e_vectors.py; see its docstring.",
        "derivation": derivation,
        "identities": {name: identity_vector(identity) for name, identity in identities.items()},
        "key_backup": key_backup_vector(identities["alice"], wrap_key),
        "envelopes": [envelope_vector(spec, identities) for spec in ENVELOPES],
        "safety_number": safety_number_vector(identities),
    }


def main() -> None:
    """Write the vectors file."""
    # ASCII-only JSON: no editor or tool can renormalise the Unicode test strings in the file.
    text = json.dumps(build(), indent=2, ensure_ascii=True) + "\n"
    OUTPUT.write_text(text, encoding="utf-8")
    print(f"wrote {OUTPUT}")


if __name__ == "__main__":
    main()
