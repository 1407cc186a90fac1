"""End-to-end cryptography: key derivation, identities, key backup, envelopes, safety numbers.

Pure (stdlib + ``cryptography``). Every byte layout here is fixed by ``docs/CONTRACTS.md`` and is
mirrored by ``static/js/crypto.js``; ``tests/vectors/e2e.json`` pins both sides to the same answers.
Binary values travel as canonical standard base64 with padding; ``lp(x)`` is a 4-byte big-endian
length followed by ``x``.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import json
import os
import unicodedata
from dataclasses import dataclass, field
from typing import Any, Final

from cryptography.exceptions import InvalidSignature, InvalidTag, UnsupportedAlgorithm
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ed25519, padding, rsa
from cryptography.hazmat.primitives.ciphers.aead import AESGCM
from cryptography.hazmat.primitives.kdf.hkdf import HKDF
from cryptography.hazmat.primitives.kdf.pbkdf2 import PBKDF2HMAC

VERSION: Final = 1
SALT_BYTES: Final = 16
# OWASP Password Storage Cheat Sheet: PBKDF2-HMAC-SHA256 needs >= 600,000 iterations. The client
# enforces the floor itself, so a malicious server cannot ask for a cheap derivation at login.
MIN_ITERATIONS: Final = 600_000
MAX_ITERATIONS: Final = 10_000_000
MIN_RSA_BITS: Final = 2048
MAX_RSA_BITS: Final = 8192
RSA_EXPONENT: Final = 65537
IV_BYTES: Final = 12  # NIST SP 800-38D 8.2: 96-bit IVs for AES-GCM
AES_KEY_BYTES: Final = 32
SIGNATURE_BYTES: Final = 64  # RFC 8032 5.1.6
SAFETY_ITERATIONS: Final = 5200  # Signal NumericFingerprintGenerator, version 0

AUTH_INFO: Final = b"securechat/v1/auth"
WRAP_INFO: Final = b"securechat/v1/wrap"
KEY_BACKUP_AAD: Final = b"securechat/v1/key-backup"
MESSAGE_AAD_PREFIX: Final = b"securechat/v1/msg"
ENVELOPE_SIG_PREFIX: Final = b"securechat/v1/envelope"
ENVELOPE_KEYS: Final = frozenset({"v", "iv", "ct", "rk", "sk", "sig"})
MAX_WRITTEN_MS: Final = 2**53 - 1  # largest integer a JavaScript number holds exactly

# RFC 8017 7.1: RSAES-OAEP, SHA-256 for the hash and MGF1, empty label (WebCrypto's default).
_OAEP: Final = padding.OAEP(
    mgf=padding.MGF1(hashes.SHA256()), algorithm=hashes.SHA256(), label=None
)


# OpenSSL's check of an RSA private key (p and q prime, the CRT values consistent) takes about
# 40 ms at 2048 bits, and its verdict depends on the encoded key alone: so each key is checked
# once per process, and the SHA-256 of its encoding remembered, up to this many.
_RSA_CHECKED_MAX: Final = 1024
_rsa_checked: set[bytes] = set()


class KeyBackupError(Exception):
    """The key backup is malformed or the wrap key (that is, the password) is wrong."""


class EnvelopeError(Exception):
    """A message envelope cannot be opened; ``code`` is what a client shows."""

    code: str = "envelope"


class UnverifiableEnvelope(EnvelopeError):
    """The envelope is malformed or its signature does not verify: nothing was decrypted."""

    code = "unverifiable"


class UndecryptableEnvelope(EnvelopeError):
    """The signature verified but the reader's key does not open the message."""

    code = "undecryptable"


# --- encoding -------------------------------------------------------------------------------


def b64encode(data: bytes) -> str:
    """Standard base64 with padding (RFC 4648 section 4)."""
    return base64.b64encode(data).decode("ascii")


def b64decode(text: str) -> bytes:
    """Decode canonical standard base64 with padding; anything else raises ``ValueError``."""
    if not isinstance(text, str):
        raise ValueError("base64 value must be a string")
    try:
        data = base64.b64decode(text.encode("ascii"), validate=True)
    except (UnicodeEncodeError, binascii.Error) as exc:
        raise ValueError("not standard base64") from exc
    # One encoding per value (RFC 4648 3.5): refuse stray bits so JS and Python agree exactly.
    if b64encode(data) != text:
        raise ValueError("not canonical base64")
    return data


def lp(data: bytes) -> bytes:
    """Length-prefix ``data`` with its 4-byte big-endian length."""
    return len(data).to_bytes(4, "big") + data


# --- key derivation -------------------------------------------------------------------------


@dataclass(frozen=True)
class DerivedKeys:
    """The two keys derived from a password; only ``auth_key`` is ever sent to the server."""

    auth_key: bytes = field(repr=False)
    wrap_key: bytes = field(repr=False)


def derive_keys(
    password: str, salt: bytes, iterations: int, *, min_iterations: int = MIN_ITERATIONS
) -> DerivedKeys:
    """PBKDF2-HMAC-SHA256 over the NFKC password, then HKDF-SHA256 into auth and wrap keys.

    ``iterations`` comes from the server at login, so it is checked against a floor the client
    owns; only tests lower ``min_iterations`` (to save time), never production code.
    """
    if len(salt) != SALT_BYTES:
        raise ValueError(f"salt must be {SALT_BYTES} bytes")
    if not max(1, min_iterations) <= iterations <= MAX_ITERATIONS:
        raise ValueError(f"iterations must be in [{min_iterations}, {MAX_ITERATIONS}]")
    # NFKC (UAX #15) so the same password typed on different keyboards derives the same keys.
    secret = unicodedata.normalize("NFKC", password).encode("utf-8")
    kdf = PBKDF2HMAC(algorithm=hashes.SHA256(), length=32, salt=salt, iterations=iterations)
    master = kdf.derive(secret)
    return DerivedKeys(auth_key=_hkdf(master, AUTH_INFO), wrap_key=_hkdf(master, WRAP_INFO))


def _hkdf(master: bytes, info: bytes) -> bytes:
    """HKDF-SHA256 (RFC 5869) with no salt, 32 bytes of output."""
    return HKDF(algorithm=hashes.SHA256(), length=32, salt=None, info=info).derive(master)


# --- public keys ----------------------------------------------------------------------------


def _spki(key: rsa.RSAPublicKey | ed25519.Ed25519PublicKey) -> bytes:
    """SubjectPublicKeyInfo DER (RFC 5280 4.1) of a public key."""
    return key.public_bytes(
        serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo
    )


def _load_spki(der: bytes) -> object:
    """Parse SPKI DER, insisting on the one canonical encoding; ``ValueError`` otherwise."""
    try:
        key = serialization.load_der_public_key(der)
    except (ValueError, TypeError, UnsupportedAlgorithm) as exc:
        raise ValueError("malformed public key") from exc
    if not isinstance(key, rsa.RSAPublicKey | ed25519.Ed25519PublicKey) or _spki(key) != der:
        raise ValueError("not a canonical RSA or Ed25519 public key")
    return key


def _rsa_public_key(der: bytes) -> rsa.RSAPublicKey:
    """Load an RSA (rsaEncryption) SPKI with the contract's exponent 65537."""
    key = _load_spki(der)
    if not isinstance(key, rsa.RSAPublicKey):
        raise ValueError("not an RSA public key")
    if key.public_numbers().e != RSA_EXPONENT:
        raise ValueError("RSA public exponent must be 65537")
    return key


def load_rsa_public_spki(der: bytes) -> int:
    """Validate an RSA encryption key (SPKI DER) and return its modulus size in bits."""
    return _rsa_public_key(der).key_size


def load_ed25519_public_spki(der: bytes) -> ed25519.Ed25519PublicKey:
    """Validate and load an Ed25519 signing key given as SPKI DER (RFC 8410, 44 bytes)."""
    key = _load_spki(der)
    if not isinstance(key, ed25519.Ed25519PublicKey):
        raise ValueError("not an Ed25519 public key")
    return key


def fingerprint(spki: bytes) -> str:
    """Lower-case hex SHA-256 of a public key's SPKI DER."""
    return hashlib.sha256(spki).hexdigest()


def _check_rsa_bits(bits: int) -> None:
    """Refuse RSA moduli outside the bounds the server also enforces."""
    if not MIN_RSA_BITS <= bits <= MAX_RSA_BITS:
        raise ValueError(f"RSA keys must have {MIN_RSA_BITS} to {MAX_RSA_BITS} bits")


# --- identity -------------------------------------------------------------------------------


class Identity:
    """A user's private keys: RSA-OAEP for key transport and Ed25519 for signatures."""

    __slots__ = ("_enc", "_sign")

    def __init__(self, enc_key: rsa.RSAPrivateKey, sign_key: ed25519.Ed25519PrivateKey) -> None:
        self._enc = enc_key
        self._sign = sign_key

    @classmethod
    def generate(cls, rsa_bits: int = 3072) -> Identity:
        """A fresh identity: RSA with e = 65537 and an Ed25519 key."""
        _check_rsa_bits(rsa_bits)
        enc = rsa.generate_private_key(public_exponent=RSA_EXPONENT, key_size=rsa_bits)
        return cls(enc, ed25519.Ed25519PrivateKey.generate())

    @classmethod
    def from_pkcs8(cls, enc_pkcs8: bytes, sign_pkcs8: bytes) -> Identity:
        """Load both private keys from PKCS#8 DER (RFC 5208); ``ValueError`` if unsuitable."""
        digest = hashlib.sha256(enc_pkcs8).digest()
        try:
            enc = serialization.load_der_private_key(
                enc_pkcs8, password=None, unsafe_skip_rsa_key_validation=digest in _rsa_checked
            )
            sign = serialization.load_der_private_key(sign_pkcs8, password=None)
        except (ValueError, TypeError, UnsupportedAlgorithm) as exc:
            raise ValueError("malformed private key") from exc
        if not isinstance(enc, rsa.RSAPrivateKey) or not isinstance(
            sign, ed25519.Ed25519PrivateKey
        ):
            raise ValueError("expected an RSA key and an Ed25519 key")
        _check_rsa_bits(enc.key_size)
        if enc.public_key().public_numbers().e != RSA_EXPONENT:
            raise ValueError("RSA public exponent must be 65537")
        if len(_rsa_checked) >= _RSA_CHECKED_MAX:
            _rsa_checked.clear()
        _rsa_checked.add(digest)
        return cls(enc, sign)

    def to_pkcs8(self) -> tuple[bytes, bytes]:
        """Both private keys as unencrypted PKCS#8 DER: only ever for sealing a key backup."""
        fmt = (serialization.Encoding.DER, serialization.PrivateFormat.PKCS8)
        none = serialization.NoEncryption()
        return self._enc.private_bytes(*fmt, none), self._sign.private_bytes(*fmt, none)

    @property
    def enc_public_spki(self) -> bytes:
        """The RSA-OAEP public key as SPKI DER."""
        return _spki(self._enc.public_key())

    @property
    def sign_public_spki(self) -> bytes:
        """The Ed25519 public key as SPKI DER."""
        return _spki(self._sign.public_key())

    def __repr__(self) -> str:
        return f"Identity(sign={fingerprint(self.sign_public_spki)[:16]})"


# --- key backup -----------------------------------------------------------------------------


def seal_key_backup(identity: Identity, wrap_key: bytes, *, _iv: bytes | None = None) -> str:
    """Encrypt the identity's private keys under ``wrap_key``: b64(iv || AES-GCM(payload))."""
    enc_pkcs8, sign_pkcs8 = identity.to_pkcs8()
    payload = json.dumps(
        {"v": VERSION, "enc": b64encode(enc_pkcs8), "sign": b64encode(sign_pkcs8)},
        separators=(",", ":"),
    ).encode("utf-8")
    iv = os.urandom(IV_BYTES) if _iv is None else _iv
    return b64encode(iv + AESGCM(wrap_key).encrypt(iv, payload, KEY_BACKUP_AAD))


def open_key_backup(backup_b64: str, wrap_key: bytes) -> Identity:
    """Decrypt a key backup made by either client; ``KeyBackupError`` if it cannot be opened."""
    try:
        blob = b64decode(backup_b64)
        if len(blob) < IV_BYTES + 16:
            raise ValueError("key backup too short")
        iv, sealed = blob[:IV_BYTES], blob[IV_BYTES:]
        payload = json.loads(AESGCM(wrap_key).decrypt(iv, sealed, KEY_BACKUP_AAD))
        if not isinstance(payload, dict) or payload.get("v") != VERSION:
            raise ValueError("unsupported key backup version")
        return Identity.from_pkcs8(b64decode(payload["enc"]), b64decode(payload["sign"]))
    except (InvalidTag, ValueError, TypeError, KeyError) as exc:
        # InvalidTag: the wrap key is wrong or the backup was altered (GCM authenticates both).
        raise KeyBackupError("the key backup cannot be opened with this password") from exc


# --- message envelopes ----------------------------------------------------------------------


@dataclass(frozen=True)
class Plaintext:
    """An opened message: its text and when its author wrote it (ms since the epoch).

    ``fields``: the body's other fields (``reply``, ``delete``, a group key distribution's
    ``group_keys`` and ``name_keys``), as the sender wrote them."""

    text: str = field(repr=False)
    written_ms: int
    fields: dict[str, Any] = field(default_factory=dict, repr=False, compare=False)


@dataclass(frozen=True)
class _EnvelopeFields:
    """The decoded binary fields of an envelope."""

    iv: bytes
    ct: bytes
    rk: bytes
    sk: bytes
    sig: bytes


def envelope_aad(message_id: str, sender: str, recipient: str) -> bytes:
    """AES-GCM associated data: binds the ciphertext to its id, sender and recipient."""
    return MESSAGE_AAD_PREFIX + b"".join(
        lp(s.encode("utf-8")) for s in (message_id, sender, recipient)
    )


def envelope_signed_bytes(
    message_id: str, sender: str, recipient: str, iv: bytes, ct: bytes, rk: bytes, sk: bytes
) -> bytes:
    """The bytes the sender's Ed25519 key signs: every field, each length-prefixed."""
    names = b"".join(lp(s.encode("utf-8")) for s in (message_id, sender, recipient))
    return ENVELOPE_SIG_PREFIX + names + b"".join(lp(b) for b in (iv, ct, rk, sk))


def encrypt_message(
    *,
    message_id: str,
    sender: str,
    recipient: str,
    text: str,
    written_ms: int,
    sender_identity: Identity,
    recipient_enc_spki: bytes,
    extra: dict[str, Any] | None = None,
    _aes_key: bytes | None = None,
    _iv: bytes | None = None,
) -> dict[str, Any]:
    """Seal ``text`` for ``recipient`` (rk) and for the sender's own history (sk), then sign.

    ``extra``: optional plaintext fields beside text and ts (``reply``, ``delete``: CONTRACTS.md).
    """
    _check_written_ms(written_ms)
    recipient_key = _rsa_public_key(recipient_enc_spki)
    _check_rsa_bits(recipient_key.key_size)
    aes_key = os.urandom(AES_KEY_BYTES) if _aes_key is None else _aes_key
    iv = os.urandom(IV_BYTES) if _iv is None else _iv
    plaintext = json.dumps(
        {**(extra or {}), "text": text, "ts": written_ms}, ensure_ascii=False, separators=(",", ":")
    )
    aad = envelope_aad(message_id, sender, recipient)
    ct = AESGCM(aes_key).encrypt(iv, plaintext.encode("utf-8"), aad)
    rk = recipient_key.encrypt(aes_key, _OAEP)
    sk = sender_identity._enc.public_key().encrypt(aes_key, _OAEP)
    sig = sender_identity._sign.sign(
        envelope_signed_bytes(message_id, sender, recipient, iv, ct, rk, sk)
    )
    fields = {"iv": iv, "ct": ct, "rk": rk, "sk": sk, "sig": sig}
    return {"v": VERSION} | {name: b64encode(value) for name, value in fields.items()}


def open_message(
    envelope: dict[str, Any],
    *,
    message_id: str,
    sender: str,
    recipient: str,
    reader: Identity,
    sender_sign_spki: bytes,
    as_sender: bool = False,
) -> Plaintext:
    """Verify the sender's signature, then decrypt with rk (or sk when ``as_sender``).

    The reader says which wrapped key is theirs: ``as_sender=True`` when the sender reads their
    own history. (A self-message has rk == sk in meaning, so either choice opens it.)
    """
    fields = _parse_envelope(envelope)
    _verify(fields, message_id, sender, recipient, sender_sign_spki)
    aes_key = _unwrap(reader, fields.sk if as_sender else fields.rk)
    try:
        raw = AESGCM(aes_key).decrypt(
            fields.iv, fields.ct, envelope_aad(message_id, sender, recipient)
        )
    except InvalidTag as exc:
        raise UndecryptableEnvelope("the message does not decrypt") from exc
    return _parse_plaintext(raw)


def _check_written_ms(written_ms: int) -> None:
    """``ts`` must be an integer a JavaScript client holds exactly."""
    if isinstance(written_ms, bool) or not isinstance(written_ms, int):
        raise TypeError("written_ms must be an int")
    if not 0 <= written_ms <= MAX_WRITTEN_MS:
        raise ValueError("written_ms out of range")


def _parse_envelope(envelope: dict[str, Any]) -> _EnvelopeFields:
    """Decode the envelope's fields; any deviation from the contract is unverifiable."""
    if not isinstance(envelope, dict) or set(envelope) != ENVELOPE_KEYS:
        raise UnverifiableEnvelope("the envelope does not have the expected fields")
    if envelope["v"] != VERSION or isinstance(envelope["v"], bool):
        raise UnverifiableEnvelope("unsupported envelope version")
    try:
        decoded = {name: b64decode(envelope[name]) for name in ENVELOPE_KEYS - {"v"}}
    except ValueError as exc:
        raise UnverifiableEnvelope("an envelope field is not base64") from exc
    if len(decoded["iv"]) != IV_BYTES or len(decoded["sig"]) != SIGNATURE_BYTES:
        raise UnverifiableEnvelope("an envelope field has the wrong length")
    return _EnvelopeFields(**decoded)


def _verify(
    fields: _EnvelopeFields, message_id: str, sender: str, recipient: str, sender_sign_spki: bytes
) -> None:
    """Check the Ed25519 signature before anything is decrypted (CONTRACTS.md, issue 3)."""
    signed = envelope_signed_bytes(
        message_id, sender, recipient, fields.iv, fields.ct, fields.rk, fields.sk
    )
    try:
        load_ed25519_public_spki(sender_sign_spki).verify(fields.sig, signed)
    except (ValueError, InvalidSignature) as exc:
        raise UnverifiableEnvelope("the sender's signature does not verify") from exc


def _unwrap(reader: Identity, wrapped: bytes) -> bytes:
    """RSA-OAEP-decrypt the message key; any failure is one indistinct error."""
    try:
        aes_key = reader._enc.decrypt(wrapped, _OAEP)
    except ValueError as exc:
        raise UndecryptableEnvelope("the message key is not for this reader") from exc
    if len(aes_key) != AES_KEY_BYTES:
        raise UndecryptableEnvelope("the message key has the wrong length")
    return aes_key


def _parse_plaintext(raw: bytes) -> Plaintext:
    """Parse ``{"text": str, "ts": int}``; a signed but malformed body is undecryptable."""
    try:
        body = json.loads(raw.decode("utf-8"))
        text, written_ms = body["text"], body["ts"]
        if not isinstance(text, str):
            raise TypeError("text must be a string")
        _check_written_ms(written_ms)
    except (ValueError, TypeError, KeyError) as exc:
        raise UndecryptableEnvelope("the message body is malformed") from exc
    others = {k: v for k, v in body.items() if k not in ("text", "ts")}
    return Plaintext(text=text, written_ms=written_ms, fields=others)


# --- safety numbers -------------------------------------------------------------------------


def _safety_half(stable_id: str, identity: bytes) -> str:
    """30 digits for one person: Signal's NumericFingerprintGenerator, version 0, 5200 rounds."""
    digest = b"\x00\x00" + identity + stable_id.encode("utf-8")
    for _ in range(SAFETY_ITERATIONS):
        digest = hashlib.sha512(digest + identity).digest()
    # Six 5-byte chunks, each big-endian mod 100000 (Signal DisplayableFingerprint).
    chunks = (digest[i : i + 5] for i in range(0, 30, 5))
    return "".join(f"{int.from_bytes(chunk, 'big') % 100_000:05d}" for chunk in chunks)


def safety_number(
    user_a: str,
    sign_spki_a: bytes,
    enc_spki_a: bytes,
    user_b: str,
    sign_spki_b: bytes,
    enc_spki_b: bytes,
) -> str:
    """The 60-digit number both people compare; the same whichever of them computes it."""
    half_a = _safety_half(user_a, lp(sign_spki_a) + lp(enc_spki_a))
    half_b = _safety_half(user_b, lp(sign_spki_b) + lp(enc_spki_b))
    return "".join(sorted((half_a, half_b)))
