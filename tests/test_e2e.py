"""The Python end of the end-to-end crypto (securechat.e2e) against docs/CONTRACTS.md."""

from __future__ import annotations

import os
import unicodedata
from typing import Any

import pytest
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ed25519, padding, rsa
from cryptography.hazmat.primitives.ciphers.aead import AESGCM

from securechat import e2e
from tests import vectorkit
from tests.vectors import make_e2e_vectors

TAMPERABLE_FIELDS = ["iv", "ct", "rk", "sk", "sig"]


@pytest.fixture(name="vectors", scope="module")
def _vectors() -> dict[str, Any]:
    return vectorkit.load("e2e")


@pytest.fixture(name="alice", scope="module")
def _alice(vectors: dict[str, Any]) -> e2e.Identity:
    return vectorkit.identity(vectors, "alice")


@pytest.fixture(name="bob", scope="module")
def _bob(vectors: dict[str, Any]) -> e2e.Identity:
    return vectorkit.identity(vectors, "bob")


@pytest.fixture(name="carol", scope="module")
def _carol() -> e2e.Identity:
    return e2e.Identity.generate(2048)


@pytest.fixture(name="wrap_key")
def _wrap_key() -> bytes:
    return os.urandom(32)


def _encrypt(alice: e2e.Identity, bob: e2e.Identity, text: str = "hello") -> dict[str, Any]:
    """A fresh envelope m1 from alice to bob."""
    return e2e.encrypt_message(
        message_id="m1",
        sender="alice",
        recipient="bob",
        text=text,
        written_ms=1_700_000_000_123,
        sender_identity=alice,
        recipient_enc_spki=bob.enc_public_spki,
    )


def _open(
    envelope: dict[str, Any],
    alice: e2e.Identity,
    reader: e2e.Identity,
    *,
    as_sender: bool = False,
    context: dict[str, str] | None = None,
) -> e2e.Plaintext:
    """Open an envelope signed by alice, addressed as m1 alice -> bob unless overridden."""
    names = {"message_id": "m1", "sender": "alice", "recipient": "bob"} | (context or {})
    return e2e.open_message(
        envelope,
        message_id=names["message_id"],
        sender=names["sender"],
        recipient=names["recipient"],
        reader=reader,
        sender_sign_spki=alice.sign_public_spki,
        as_sender=as_sender,
    )


def _flip_bit(value: str) -> str:
    """The base64 of ``value``'s bytes with the lowest bit of the last byte flipped."""
    data = bytearray(e2e.b64decode(value))
    data[-1] ^= 1
    return e2e.b64encode(bytes(data))


# --- vectors --------------------------------------------------------------------------------


def test_derivation_matches_vector(vectors: dict[str, Any]) -> None:
    """The vector password, salt and 600,000 iterations give the vector auth and wrap keys."""
    vector = vectors["derivation"]
    keys = e2e.derive_keys(vector["password"], e2e.b64decode(vector["salt"]), vector["iterations"])
    assert e2e.b64encode(keys.auth_key) == vector["auth_key"]
    assert e2e.b64encode(keys.wrap_key) == vector["wrap_key"]


def test_derivation_normalises_password_nfkc(vectors: dict[str, Any]) -> None:
    """The NFKC form of the vector password derives the same keys as the password itself."""
    vector = vectors["derivation"]
    assert vector["password_nfkc"] != vector["password"]
    assert unicodedata.normalize("NFKC", vector["password"]) == vector["password_nfkc"]
    keys = e2e.derive_keys(vector["password_nfkc"], e2e.b64decode(vector["salt"]), 600_000)
    assert e2e.b64encode(keys.wrap_key) == vector["wrap_key"]


@pytest.mark.parametrize("name", ["alice", "bob"])
def test_vector_identity_public_keys_and_fingerprints(vectors: dict[str, Any], name: str) -> None:
    """The vector private keys yield the vector public keys and fingerprints."""
    identity, keys = vectorkit.identity(vectors, name), vectors["identities"][name]
    assert e2e.b64encode(identity.enc_public_spki) == keys["enc_spki"]
    assert e2e.b64encode(identity.sign_public_spki) == keys["sign_spki"]
    assert e2e.fingerprint(identity.enc_public_spki) == keys["enc_fingerprint"]
    assert e2e.fingerprint(identity.sign_public_spki) == keys["sign_fingerprint"]


@pytest.mark.slow  # RSA primes found in pure Python: 1 to 3 s each
@pytest.mark.parametrize("name", ["alice", "bob"])
def test_vector_identities_are_reproducible(vectors: dict[str, Any], name: str) -> None:
    """The generator script derives exactly the vector identities from its seeds."""
    identity = make_e2e_vectors.deterministic_identity(make_e2e_vectors.SEEDS[name])
    enc_pkcs8, sign_pkcs8 = identity.to_pkcs8()
    assert e2e.b64encode(enc_pkcs8) == vectors["identities"][name]["enc_pkcs8"]
    assert e2e.b64encode(sign_pkcs8) == vectors["identities"][name]["sign_pkcs8"]


def test_vector_key_backup_opens(vectors: dict[str, Any], alice: e2e.Identity) -> None:
    """The vector key backup opens with the vector wrap key into alice's identity."""
    wrap_key = e2e.b64decode(vectors["derivation"]["wrap_key"])
    opened = e2e.open_key_backup(vectors["key_backup"]["backup"], wrap_key)
    assert opened.to_pkcs8() == alice.to_pkcs8()


def test_vector_key_backup_is_reproducible(vectors: dict[str, Any], alice: e2e.Identity) -> None:
    """Sealing alice's identity with the vector wrap key and IV gives the vector backup."""
    wrap_key = e2e.b64decode(vectors["derivation"]["wrap_key"])
    iv = e2e.b64decode(vectors["key_backup"]["iv"])
    assert e2e.seal_key_backup(alice, wrap_key, _iv=iv) == vectors["key_backup"]["backup"]


@pytest.mark.parametrize("index", [0, 1])
def test_vector_envelope_opens_for_recipient(
    vectors: dict[str, Any], bob: e2e.Identity, index: int
) -> None:
    """Bob opens each vector envelope to its known text and timestamp."""
    vector = vectors["envelopes"][index]
    plain = e2e.open_message(
        vector["envelope"],
        message_id=vector["id"],
        sender=vector["from"],
        recipient=vector["to"],
        reader=bob,
        sender_sign_spki=e2e.b64decode(vectors["identities"]["alice"]["sign_spki"]),
    )
    assert (plain.text, plain.written_ms) == (vector["text"], vector["ts"])


@pytest.mark.parametrize("index", [0, 1])
def test_vector_envelope_opens_for_sender(
    vectors: dict[str, Any], alice: e2e.Identity, index: int
) -> None:
    """Alice opens each vector envelope from her own history through sk."""
    vector = vectors["envelopes"][index]
    plain = e2e.open_message(
        vector["envelope"],
        message_id=vector["id"],
        sender=vector["from"],
        recipient=vector["to"],
        reader=alice,
        sender_sign_spki=alice.sign_public_spki,
        as_sender=True,
    )
    assert plain.text == vector["text"]


@pytest.mark.parametrize("index", [0, 1])
def test_vector_aad_and_signed_bytes(vectors: dict[str, Any], index: int) -> None:
    """The AAD and the signed bytes are laid out exactly as in the vectors."""
    vector = vectors["envelopes"][index]
    names = (vector["id"], vector["from"], vector["to"])
    iv, ct, rk, sk = (e2e.b64decode(vector["envelope"][k]) for k in ("iv", "ct", "rk", "sk"))
    assert e2e.b64encode(e2e.envelope_aad(*names)) == vector["aad"]
    signed = e2e.envelope_signed_bytes(*names, iv, ct, rk, sk)
    assert e2e.b64encode(signed) == vector["signed_bytes"]


@pytest.mark.parametrize("index", [0, 1])
def test_vector_ciphertext_is_reproducible(
    vectors: dict[str, Any], alice: e2e.Identity, bob: e2e.Identity, index: int
) -> None:
    """The vector message key and IV give the vector ciphertext."""
    vector = vectors["envelopes"][index]
    envelope = e2e.encrypt_message(
        message_id=vector["id"],
        sender=vector["from"],
        recipient=vector["to"],
        text=vector["text"],
        written_ms=vector["ts"],
        sender_identity=alice,
        recipient_enc_spki=bob.enc_public_spki,
        _aes_key=e2e.b64decode(vector["aes_key"]),
        _iv=e2e.b64decode(vector["envelope"]["iv"]),
    )
    assert (envelope["iv"], envelope["ct"]) == (vector["envelope"]["iv"], vector["envelope"]["ct"])


def test_vector_safety_number(
    vectors: dict[str, Any], alice: e2e.Identity, bob: e2e.Identity
) -> None:
    """Alice and bob's safety number is the vector one."""
    number = e2e.safety_number(
        "alice", alice.sign_public_spki, alice.enc_public_spki,
        "bob", bob.sign_public_spki, bob.enc_public_spki,
    )  # fmt: skip
    assert number == vectors["safety_number"]["value"]


def test_safety_half_matches_signal_known_answer() -> None:
    """The digit algorithm reproduces libsignal's NumericFingerprintGeneratorTest vector."""
    # libsignal java/.../fingerprint/NumericFingerprintGeneratorTest.java: two 33-byte identity
    # keys, stable ids "+14152222222" / "+14153333333", 5200 iterations.
    alice = bytes.fromhex("0506863bc66d02b40d27b8d49ca7c09e9239236f9d7d25d6fcca5ce13c7064d868")
    bob = bytes.fromhex("05f781b6fb32fed9ba1cf2de978d4d5da28dc34046ae814402b5c0dbd96fda907b")
    halves = sorted(
        (e2e._safety_half("+14152222222", alice), e2e._safety_half("+14153333333", bob))
    )
    assert "".join(halves) == "300354477692869396892869876765458257569162576843440918079131"


# --- key derivation -------------------------------------------------------------------------


def test_derivation_refuses_fewer_than_600000_iterations() -> None:
    """A server asking for a cheap derivation is refused by default."""
    with pytest.raises(ValueError, match="iterations"):
        e2e.derive_keys("pw", bytes(16), 599_999)


def test_derivation_floor_can_be_lowered_explicitly() -> None:
    """Tests may lower the floor explicitly and get distinct auth and wrap keys."""
    keys = e2e.derive_keys("pw", bytes(16), 1000, min_iterations=1000)
    assert len(keys.auth_key) == len(keys.wrap_key) == 32
    assert keys.auth_key != keys.wrap_key


def test_derivation_refuses_a_salt_that_is_not_16_bytes() -> None:
    """The salt must be exactly 16 bytes."""
    with pytest.raises(ValueError, match="salt"):
        e2e.derive_keys("pw", bytes(8), 600_000)


def test_derived_keys_repr_hides_the_keys() -> None:
    """Logging DerivedKeys cannot leak either key."""
    keys = e2e.DerivedKeys(auth_key=b"\x01" * 32, wrap_key=b"\x02" * 32)
    assert "\\x01" not in repr(keys) and "\\x02" not in repr(keys)


# --- identities and public keys -------------------------------------------------------------


def test_identity_repr_shows_no_private_material(alice: e2e.Identity) -> None:
    """An Identity's repr names a public fingerprint only."""
    assert repr(alice) == f"Identity(sign={e2e.fingerprint(alice.sign_public_spki)[:16]})"


def test_identity_generate_refuses_small_rsa() -> None:
    """Identity.generate refuses moduli under 2048 bits."""
    with pytest.raises(ValueError, match="RSA"):
        e2e.Identity.generate(1024)


def test_rsa_validator_returns_the_modulus_size(alice: e2e.Identity) -> None:
    """A 3072-bit key is reported as 3072 bits."""
    assert e2e.load_rsa_public_spki(alice.enc_public_spki) == 3072


def test_rsa_validator_detects_1024_bit_keys() -> None:
    """A 1024-bit key is reported as 1024 bits, for the server to refuse."""
    key = rsa.generate_private_key(public_exponent=65537, key_size=1024).public_key()
    spki = key.public_bytes(
        serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo
    )
    assert e2e.load_rsa_public_spki(spki) == 1024


def test_ed25519_validator_loads_a_signing_key(alice: e2e.Identity) -> None:
    """A 44-byte Ed25519 SPKI loads."""
    key = e2e.load_ed25519_public_spki(alice.sign_public_spki)
    assert isinstance(key, ed25519.Ed25519PublicKey)
    assert len(alice.sign_public_spki) == 44


@pytest.mark.parametrize(
    "mangle",
    [
        lambda spki: b"",
        lambda spki: b"\x30\x03\x02\x01\x00",
        lambda spki: spki[:-1],
        lambda spki: spki + b"\x00",
        lambda spki: b"\x31" + spki[1:],
    ],
    ids=["empty", "not-spki", "truncated", "trailing-byte", "wrong-tag"],
)
@pytest.mark.parametrize("kind", ["rsa", "ed25519"])
def test_malformed_spki_is_refused(alice: e2e.Identity, mangle: Any, kind: str) -> None:
    """Malformed SPKI DER raises ValueError in both validators."""
    if kind == "rsa":
        with pytest.raises(ValueError):
            e2e.load_rsa_public_spki(mangle(alice.enc_public_spki))
    else:
        with pytest.raises(ValueError):
            e2e.load_ed25519_public_spki(mangle(alice.sign_public_spki))


def test_validators_refuse_the_other_key_type(alice: e2e.Identity) -> None:
    """An Ed25519 key is not an RSA key, and the other way round."""
    with pytest.raises(ValueError):
        e2e.load_rsa_public_spki(alice.sign_public_spki)
    with pytest.raises(ValueError):
        e2e.load_ed25519_public_spki(alice.enc_public_spki)


def test_rsa_validator_refuses_other_exponents() -> None:
    """The contract fixes e = 65537."""
    key = rsa.generate_private_key(public_exponent=3, key_size=2048).public_key()
    spki = key.public_bytes(
        serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo
    )
    with pytest.raises(ValueError, match="exponent"):
        e2e.load_rsa_public_spki(spki)


def test_an_inconsistent_rsa_key_is_refused_after_a_good_one_loaded(alice: e2e.Identity) -> None:
    """OpenSSL's check of a private key runs once per key, not once per process: after alice's
    key has loaded (and loads again unchecked), her key with a CRT value changed is refused."""
    enc_pkcs8, sign_pkcs8 = alice.to_pkcs8()
    for _ in range(2):
        assert e2e.Identity.from_pkcs8(enc_pkcs8, sign_pkcs8).to_pkcs8() == (enc_pkcs8, sign_pkcs8)
    good = serialization.load_der_private_key(enc_pkcs8, password=None)
    assert isinstance(good, rsa.RSAPrivateKey)
    n = good.private_numbers()
    bad = rsa.RSAPrivateNumbers(
        n.p, n.q, n.d, n.dmp1 + 2, n.dmq1, n.iqmp, n.public_numbers
    ).private_key(unsafe_skip_rsa_key_validation=True)
    bad_pkcs8 = bad.private_bytes(
        serialization.Encoding.DER, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    )
    with pytest.raises(ValueError, match="malformed"):
        e2e.Identity.from_pkcs8(bad_pkcs8, sign_pkcs8)


# --- key backup -----------------------------------------------------------------------------


def test_key_backup_round_trip(alice: e2e.Identity, wrap_key: bytes) -> None:
    """A sealed backup opens to the same private keys."""
    backup = e2e.seal_key_backup(alice, wrap_key)
    assert e2e.open_key_backup(backup, wrap_key).to_pkcs8() == alice.to_pkcs8()


def test_key_backup_uses_a_fresh_iv(alice: e2e.Identity, wrap_key: bytes) -> None:
    """Sealing twice gives two different backups."""
    assert e2e.seal_key_backup(alice, wrap_key) != e2e.seal_key_backup(alice, wrap_key)


def test_wrong_wrap_key_raises_key_backup_error(alice: e2e.Identity, wrap_key: bytes) -> None:
    """A backup does not open with another wrap key."""
    backup = e2e.seal_key_backup(alice, wrap_key)
    with pytest.raises(e2e.KeyBackupError):
        e2e.open_key_backup(backup, os.urandom(32))


def test_altered_key_backup_raises_key_backup_error(alice: e2e.Identity, wrap_key: bytes) -> None:
    """A single flipped bit makes the backup unopenable."""
    backup = _flip_bit(e2e.seal_key_backup(alice, wrap_key))
    with pytest.raises(e2e.KeyBackupError):
        e2e.open_key_backup(backup, wrap_key)


@pytest.mark.parametrize("backup", ["", "not base64!", "AAAA", "QR=="])
def test_malformed_key_backup_raises_key_backup_error(wrap_key: bytes, backup: str) -> None:
    """Garbage, short and non-canonical backups raise KeyBackupError."""
    with pytest.raises(e2e.KeyBackupError):
        e2e.open_key_backup(backup, wrap_key)


# --- envelopes ------------------------------------------------------------------------------


def test_envelope_has_the_contract_shape(alice: e2e.Identity, bob: e2e.Identity) -> None:
    """The envelope holds v = 1 and the five base64 fields with their fixed sizes."""
    envelope = _encrypt(alice, bob)
    assert set(envelope) == {"v", "iv", "ct", "rk", "sk", "sig"} and envelope["v"] == 1
    sizes = {k: len(e2e.b64decode(envelope[k])) for k in ("iv", "rk", "sk", "sig")}
    assert sizes == {"iv": 12, "rk": 384, "sk": 384, "sig": 64}


def test_round_trip_for_recipient(alice: e2e.Identity, bob: e2e.Identity) -> None:
    """Bob reads what alice wrote, with its timestamp."""
    plain = _open(_encrypt(alice, bob, "hi bob"), alice, bob)
    assert (plain.text, plain.written_ms) == ("hi bob", 1_700_000_000_123)


def test_round_trip_for_sender_history(alice: e2e.Identity, bob: e2e.Identity) -> None:
    """Alice reads her own sent message through sk."""
    assert _open(_encrypt(alice, bob, "sent"), alice, alice, as_sender=True).text == "sent"


def test_round_trip_of_4000_characters_with_emoji(alice: e2e.Identity, bob: e2e.Identity) -> None:
    """A 4,000-character text full of emoji and escapes survives the round trip."""
    text = make_e2e_vectors.long_text(4000)
    assert len(text) == 4000
    assert _open(_encrypt(alice, bob, text), alice, bob).text == text


def test_each_message_gets_a_fresh_key_and_iv(alice: e2e.Identity, bob: e2e.Identity) -> None:
    """Two envelopes of the same text share no iv, ct, rk or sk."""
    first, second = _encrypt(alice, bob), _encrypt(alice, bob)
    assert all(first[k] != second[k] for k in ("iv", "ct", "rk", "sk", "sig"))


@pytest.mark.parametrize("field", TAMPERABLE_FIELDS)
def test_tampered_field_is_unverifiable(alice: e2e.Identity, bob: e2e.Identity, field: str) -> None:
    """Flipping one bit of any envelope field fails the signature, before any decryption."""
    envelope = _encrypt(alice, bob)
    envelope[field] = _flip_bit(envelope[field])
    with pytest.raises(e2e.UnverifiableEnvelope):
        _open(envelope, alice, bob)


@pytest.mark.parametrize(
    "context",
    [{"message_id": "m2"}, {"sender": "mallory"}, {"recipient": "carol"}],
    ids=["id", "from", "to"],
)
def test_other_context_is_unverifiable(
    alice: e2e.Identity, bob: e2e.Identity, context: dict[str, str]
) -> None:
    """An envelope replayed under another id, sender or recipient fails the signature."""
    with pytest.raises(e2e.UnverifiableEnvelope):
        _open(_encrypt(alice, bob), alice, bob, context=context)


def test_signature_by_another_key_is_unverifiable(
    alice: e2e.Identity, bob: e2e.Identity, carol: e2e.Identity
) -> None:
    """An envelope signed by carol does not verify under alice's signing key."""
    envelope = e2e.encrypt_message(
        message_id="m1",
        sender="alice",
        recipient="bob",
        text="forged",
        written_ms=1,
        sender_identity=carol,
        recipient_enc_spki=bob.enc_public_spki,
    )
    with pytest.raises(e2e.UnverifiableEnvelope):
        _open(envelope, alice, bob)


def test_malformed_sender_key_is_unverifiable(alice: e2e.Identity, bob: e2e.Identity) -> None:
    """A sender signing key that does not parse cannot verify anything."""
    with pytest.raises(e2e.UnverifiableEnvelope):
        e2e.open_message(
            _encrypt(alice, bob),
            message_id="m1",
            sender="alice",
            recipient="bob",
            reader=bob,
            sender_sign_spki=b"junk",
        )


@pytest.mark.parametrize(
    "change",
    [
        {"v": 2},
        {"v": True},
        {"extra": "x"},
        {"iv": "AAAA"},
        {"sig": "AAAA"},
        {"ct": "not base64"},
        {"ct": 5},
    ],
    ids=["v2", "v-bool", "extra-field", "short-iv", "short-sig", "not-base64", "not-string"],
)
def test_malformed_envelope_is_unverifiable(
    alice: e2e.Identity, bob: e2e.Identity, change: dict[str, Any]
) -> None:
    """An envelope outside the contract's shape is refused as unverifiable."""
    envelope = _encrypt(alice, bob) | change
    with pytest.raises(e2e.UnverifiableEnvelope):
        _open(envelope, alice, bob)


def test_missing_field_is_unverifiable(alice: e2e.Identity, bob: e2e.Identity) -> None:
    """An envelope without sk is refused as unverifiable."""
    envelope = _encrypt(alice, bob)
    del envelope["sk"]
    with pytest.raises(e2e.UnverifiableEnvelope):
        _open(envelope, alice, bob)


def test_wrong_reader_is_undecryptable(alice: e2e.Identity, bob: e2e.Identity) -> None:
    """A valid envelope for bob does not decrypt with alice's key through rk."""
    with pytest.raises(e2e.UndecryptableEnvelope):
        _open(_encrypt(alice, bob), alice, alice)


def _forge(alice: e2e.Identity, bob: e2e.Identity, body: bytes) -> dict[str, Any]:
    """A correctly signed envelope m1 alice -> bob around an arbitrary plaintext ``body``."""
    signer = serialization.load_der_private_key(alice.to_pkcs8()[1], password=None)
    assert isinstance(signer, ed25519.Ed25519PrivateKey)
    oaep = padding.OAEP(mgf=padding.MGF1(hashes.SHA256()), algorithm=hashes.SHA256(), label=None)
    key, iv = os.urandom(32), os.urandom(12)
    ct = AESGCM(key).encrypt(iv, body, e2e.envelope_aad("m1", "alice", "bob"))
    bob_key = serialization.load_der_public_key(bob.enc_public_spki)
    assert isinstance(bob_key, rsa.RSAPublicKey)
    rk = sk = bob_key.encrypt(key, oaep)
    sig = signer.sign(e2e.envelope_signed_bytes("m1", "alice", "bob", iv, ct, rk, sk))
    fields = {"iv": iv, "ct": ct, "rk": rk, "sk": sk, "sig": sig}
    return {"v": 1} | {k: e2e.b64encode(v) for k, v in fields.items()}


@pytest.mark.parametrize(
    "body",
    [b"not json", b'{"text": 1, "ts": 1}', b'{"text": "x", "ts": "1"}', b'{"text": "x"}', b"\xff"],
    ids=["not-json", "text-not-string", "ts-not-int", "no-ts", "not-utf8"],
)
def test_signed_malformed_body_is_undecryptable(
    alice: e2e.Identity, bob: e2e.Identity, body: bytes
) -> None:
    """A correctly signed envelope whose plaintext breaks the contract is undecryptable."""
    with pytest.raises(e2e.UndecryptableEnvelope):
        _open(_forge(alice, bob, body), alice, bob)


def test_encrypt_refuses_a_small_recipient_key(alice: e2e.Identity) -> None:
    """No message is sealed to an RSA key under 2048 bits."""
    key = rsa.generate_private_key(public_exponent=65537, key_size=1024).public_key()
    spki = key.public_bytes(
        serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo
    )
    with pytest.raises(ValueError, match="RSA"):
        e2e.encrypt_message(
            message_id="m1",
            sender="alice",
            recipient="bob",
            text="x",
            written_ms=1,
            sender_identity=alice,
            recipient_enc_spki=spki,
        )


def test_plaintext_repr_hides_the_text() -> None:
    """Logging a Plaintext cannot leak the message."""
    assert "secret" not in repr(e2e.Plaintext(text="secret", written_ms=1))


# --- safety numbers -------------------------------------------------------------------------


def _safety(a: e2e.Identity, b: e2e.Identity, user_a: str = "alice", user_b: str = "bob") -> str:
    return e2e.safety_number(
        user_a, a.sign_public_spki, a.enc_public_spki, user_b, b.sign_public_spki, b.enc_public_spki
    )


def test_safety_number_is_60_digits(alice: e2e.Identity, bob: e2e.Identity) -> None:
    """A safety number is 60 decimal digits."""
    number = _safety(alice, bob)
    assert len(number) == 60 and number.isdigit()


def test_safety_number_is_symmetric(alice: e2e.Identity, bob: e2e.Identity) -> None:
    """Alice and bob compute the same number."""
    assert _safety(alice, bob) == _safety(bob, alice, "bob", "alice")


@pytest.mark.parametrize("key", ["sign_a", "enc_a", "sign_b", "enc_b"])
def test_safety_number_changes_with_any_key(
    alice: e2e.Identity, bob: e2e.Identity, carol: e2e.Identity, key: str
) -> None:
    """Replacing any one of the four public keys changes the number."""
    keys = {
        "sign_a": alice.sign_public_spki,
        "enc_a": alice.enc_public_spki,
        "sign_b": bob.sign_public_spki,
        "enc_b": bob.enc_public_spki,
    }
    before = e2e.safety_number(
        "alice", keys["sign_a"], keys["enc_a"], "bob", keys["sign_b"], keys["enc_b"]
    )
    keys[key] = carol.sign_public_spki if key.startswith("sign") else carol.enc_public_spki
    after = e2e.safety_number(
        "alice", keys["sign_a"], keys["enc_a"], "bob", keys["sign_b"], keys["enc_b"]
    )
    assert after != before


def test_safety_number_binds_the_usernames(alice: e2e.Identity, bob: e2e.Identity) -> None:
    """The same keys under another username give another number."""
    assert _safety(alice, bob) != _safety(alice, bob, user_a="mallory")


# --- base64 ---------------------------------------------------------------------------------


@pytest.mark.parametrize("text", ["QR==", "QQ", "QQ=", "Q Q==", "QQ==\n", "-_8="])
def test_b64decode_accepts_only_canonical_padded_base64(text: str) -> None:
    """Non-canonical, unpadded, spaced and URL-safe base64 are refused."""
    with pytest.raises(ValueError):
        e2e.b64decode(text)
