/**
 * End-to-end cryptography for SecureChat: the byte-for-byte twin of securechat/e2e.py.
 *
 * Every layout here is fixed by docs/CONTRACTS.md; tests/vectors/e2e.json pins this module and
 * the Python one to the same answers. Only WebCrypto (crypto.subtle) is used: no DOM, no socket,
 * no storage. Binary values travel as canonical standard base64 with padding; lp(x) is a 4-byte
 * big-endian length followed by x.
 *
 * An identity is a frozen object {encKey, signKey, encSpki, signSpki}: the RSA-OAEP and Ed25519
 * private CryptoKeys plus both public keys as SPKI DER. Identities from generateIdentity() have
 * extractable private keys, solely so sealKeyBackup() can export them once; everything else uses
 * the non-extractable identities returned by openKeyBackup() / importIdentity().
 */

const subtle = globalThis.crypto.subtle;
const encoder = new TextEncoder();
const strictDecoder = new TextDecoder("utf-8", { fatal: true });

export const VERSION = 1;
export const SALT_BYTES = 16;
// OWASP Password Storage Cheat Sheet: PBKDF2-HMAC-SHA256 needs >= 600,000 iterations. The client
// enforces the floor itself, so a malicious server cannot ask for a cheap derivation at login.
export const MIN_ITERATIONS = 600_000;
export const MAX_ITERATIONS = 10_000_000;
export const MIN_RSA_BITS = 2048;
export const MAX_RSA_BITS = 8192;
const IV_BYTES = 12; // NIST SP 800-38D 8.2: 96-bit IVs for AES-GCM
const TAG_BYTES = 16;
const AES_KEY_BYTES = 32;
const SIGNATURE_BYTES = 64; // RFC 8032 5.1.6
const SAFETY_ITERATIONS = 5200; // Signal NumericFingerprintGenerator, version 0

const AUTH_INFO = encoder.encode("securechat/v1/auth");
const WRAP_INFO = encoder.encode("securechat/v1/wrap");
const KEY_BACKUP_AAD = encoder.encode("securechat/v1/key-backup");
const MESSAGE_AAD_PREFIX = encoder.encode("securechat/v1/msg");
const ENVELOPE_SIG_PREFIX = encoder.encode("securechat/v1/envelope");
const ENVELOPE_KEYS = ["ct", "iv", "rk", "sig", "sk", "v"];

// RFC 8017 7.1: RSAES-OAEP, SHA-256 for the hash and MGF1, empty label.
const RSA_OAEP = { name: "RSA-OAEP", hash: "SHA-256" };
const ED25519 = { name: "Ed25519" };
const RSA_EXPONENT = new Uint8Array([1, 0, 1]); // 65537

/** A key backup that cannot be opened: malformed, or the password is wrong. */
export class KeyBackupError extends Error {
  constructor(message, options) {
    super(message, options);
    this.name = "KeyBackupError";
    this.code = "key_backup";
  }
}

/** An envelope that cannot be opened; code is "unverifiable" or "undecryptable". */
export class EnvelopeError extends Error {
  constructor(code, message) {
    super(message);
    this.name = "EnvelopeError";
    this.code = code;
  }
}

// --- encoding ---------------------------------------------------------------------------------

/** Standard base64 with padding (RFC 4648 section 4) of a Uint8Array. */
export function b64encode(bytes) {
  let binary = "";
  for (let i = 0; i < bytes.length; i += 0x8000) {
    binary += String.fromCharCode(...bytes.subarray(i, i + 0x8000));
  }
  return btoa(binary);
}

const B64_PATTERN = /^(?:[A-Za-z0-9+/]{4})*(?:[A-Za-z0-9+/]{2}==|[A-Za-z0-9+/]{3}=)?$/;

/** Decode canonical standard base64 with padding; anything else throws a TypeError. */
export function b64decode(text) {
  if (typeof text !== "string" || !B64_PATTERN.test(text)) {
    throw new TypeError("not standard base64");
  }
  const bytes = Uint8Array.from(atob(text), (c) => c.charCodeAt(0));
  // One encoding per value (RFC 4648 3.5): refuse stray bits so JS and Python agree exactly.
  if (b64encode(bytes) !== text) throw new TypeError("not canonical base64");
  return bytes;
}

/** Concatenate Uint8Arrays. */
export function concat(...parts) {
  const out = new Uint8Array(parts.reduce((n, p) => n + p.length, 0));
  let offset = 0;
  for (const part of parts) {
    out.set(part, offset);
    offset += part.length;
  }
  return out;
}

/** Length-prefix bytes with their 4-byte big-endian length. */
export function lp(bytes) {
  const out = new Uint8Array(4 + bytes.length);
  new DataView(out.buffer).setUint32(0, bytes.length);
  out.set(bytes, 4);
  return out;
}

/** Lower-case hex of bytes. */
export function hex(bytes) {
  return Array.from(bytes, (b) => b.toString(16).padStart(2, "0")).join("");
}

/** Fresh random bytes from the platform CSPRNG. */
function randomBytes(length) {
  return crypto.getRandomValues(new Uint8Array(length));
}

// --- key derivation ---------------------------------------------------------------------------

/** HKDF-SHA256 parameters (RFC 5869); an empty salt equals "no salt" (HashLen zero bytes). */
function hkdfParams(info) {
  return { name: "HKDF", hash: "SHA-256", salt: new Uint8Array(0), info };
}

/**
 * PBKDF2-HMAC-SHA256 over the NFKC password, then HKDF-SHA256 into the two keys.
 * iterations comes from the server at login, so it is checked against a floor the client owns;
 * only tests lower minIterations (to save time), never production code.
 * Returns {authKey: Uint8Array (32 bytes, sent to the server), wrapKey: CryptoKey (AES-GCM-256,
 * non-extractable, opens the key backup and never leaves the browser)}.
 */
export async function deriveKeys(password, saltBytes, iterations, options = {}) {
  const { minIterations = MIN_ITERATIONS } = options;
  if (saltBytes.length !== SALT_BYTES) throw new RangeError(`salt must be ${SALT_BYTES} bytes`);
  const floor = Math.max(1, minIterations);
  if (!Number.isSafeInteger(iterations) || iterations < floor || iterations > MAX_ITERATIONS) {
    throw new RangeError(`iterations must be in [${floor}, ${MAX_ITERATIONS}]`);
  }
  // NFKC (UAX #15) so the same password typed on different keyboards derives the same keys.
  const secret = encoder.encode(password.normalize("NFKC"));
  const pbkdf2Key = await subtle.importKey("raw", secret, "PBKDF2", false, ["deriveBits"]);
  const pbkdf2 = { name: "PBKDF2", hash: "SHA-256", salt: saltBytes, iterations };
  const master = await subtle.deriveBits(pbkdf2, pbkdf2Key, 256);
  const hkdfKey = await subtle.importKey("raw", master, "HKDF", false, ["deriveBits", "deriveKey"]);
  const authKey = new Uint8Array(await subtle.deriveBits(hkdfParams(AUTH_INFO), hkdfKey, 256));
  const wrapKey = await subtle.deriveKey(
    hkdfParams(WRAP_INFO),
    hkdfKey,
    { name: "AES-GCM", length: 256 },
    false,
    ["encrypt", "decrypt"],
  );
  return { authKey, wrapKey };
}

/** Import 32 raw bytes as a non-extractable wrap key (tests, and keys cached as bytes). */
export async function importWrapKey(rawBytes) {
  if (rawBytes.length !== AES_KEY_BYTES) throw new RangeError("wrap key must be 32 bytes");
  return subtle.importKey("raw", rawBytes, "AES-GCM", false, ["encrypt", "decrypt"]);
}

// --- public keys ------------------------------------------------------------------------------

/** Lower-case hex SHA-256 of a public key's SPKI DER. */
export async function fingerprint(spki) {
  return hex(new Uint8Array(await subtle.digest("SHA-256", spki)));
}

/** Refuse RSA keys outside the bounds the server enforces, or with an exponent other than 65537. */
function checkRsaKey(key) {
  const { modulusLength, publicExponent } = key.algorithm;
  if (modulusLength < MIN_RSA_BITS || modulusLength > MAX_RSA_BITS) {
    throw new RangeError(`RSA keys must have ${MIN_RSA_BITS} to ${MAX_RSA_BITS} bits`);
  }
  if (hex(publicExponent).replace(/^0+/, "") !== "10001") {
    throw new RangeError("RSA public exponent must be 65537");
  }
  return key;
}

/** Import an RSA-OAEP public key (SPKI DER) for encrypting a message key. */
async function importRsaPublic(spki) {
  return checkRsaKey(await subtle.importKey("spki", spki, RSA_OAEP, false, ["encrypt"]));
}

/** Both public keys of an identity as SPKI DER: {encSpki, signSpki} (copies). */
export function exportPublicKeys(identity) {
  return { encSpki: identity.encSpki.slice(), signSpki: identity.signSpki.slice() };
}

// --- identity ---------------------------------------------------------------------------------

/**
 * A fresh identity whose private keys are EXTRACTABLE, for the one-time sealKeyBackup() only.
 * Seal it, then use the identity that openKeyBackup() returns and drop this one
 * (createIdentity does exactly that).
 */
export async function generateIdentity(rsaBits = 3072) {
  if (!Number.isSafeInteger(rsaBits) || rsaBits < MIN_RSA_BITS || rsaBits > MAX_RSA_BITS) {
    throw new RangeError(`RSA keys must have ${MIN_RSA_BITS} to ${MAX_RSA_BITS} bits`);
  }
  const rsaParams = { ...RSA_OAEP, modulusLength: rsaBits, publicExponent: RSA_EXPONENT };
  const enc = await subtle.generateKey(rsaParams, true, ["encrypt", "decrypt"]);
  const sign = await subtle.generateKey(ED25519, true, ["sign", "verify"]);
  return Object.freeze({
    encKey: enc.privateKey,
    signKey: sign.privateKey,
    encSpki: new Uint8Array(await subtle.exportKey("spki", enc.publicKey)),
    signSpki: new Uint8Array(await subtle.exportKey("spki", sign.publicKey)),
  });
}

/**
 * The public half of a PKCS#8 private key, as SPKI DER. WebCrypto cannot derive a public key
 * from a non-extractable private key, so it is read once through a short-lived extractable copy
 * that never leaves this function (the PKCS#8 bytes it came from are already in memory).
 */
async function publicSpkiOf(pkcs8, algorithm, privateUsage, publicUsage) {
  const temporary = await subtle.importKey("pkcs8", pkcs8, algorithm, true, [privateUsage]);
  const { kty, crv, n, e, x } = await subtle.exportKey("jwk", temporary);
  const jwk = kty === "RSA" ? { kty, n, e } : { kty, crv, x };
  const publicKey = await subtle.importKey("jwk", jwk, algorithm, true, [publicUsage]);
  return new Uint8Array(await subtle.exportKey("spki", publicKey));
}

/** Import both private keys from PKCS#8 DER as a NON-extractable identity. */
export async function importIdentity(encPkcs8, signPkcs8) {
  const encSpki = await publicSpkiOf(encPkcs8, RSA_OAEP, "decrypt", "encrypt");
  const signSpki = await publicSpkiOf(signPkcs8, ED25519, "sign", "verify");
  const encKey = await subtle.importKey("pkcs8", encPkcs8, RSA_OAEP, false, ["decrypt"]);
  checkRsaKey(encKey);
  const signKey = await subtle.importKey("pkcs8", signPkcs8, ED25519, false, ["sign"]);
  return Object.freeze({ encKey, signKey, encSpki, signSpki });
}

// --- key backup -------------------------------------------------------------------------------

/** Encrypt an extractable identity's private keys under wrapKey: b64(iv || AES-GCM(payload)). */
export async function sealKeyBackup(identity, wrapKey, { _iv } = {}) {
  const encPkcs8 = new Uint8Array(await subtle.exportKey("pkcs8", identity.encKey));
  const signPkcs8 = new Uint8Array(await subtle.exportKey("pkcs8", identity.signKey));
  const payload = JSON.stringify({
    v: VERSION,
    enc: b64encode(encPkcs8),
    sign: b64encode(signPkcs8),
  });
  encPkcs8.fill(0);
  signPkcs8.fill(0);
  const iv = _iv ?? randomBytes(IV_BYTES);
  const params = { name: "AES-GCM", iv, additionalData: KEY_BACKUP_AAD };
  const sealed = new Uint8Array(await subtle.encrypt(params, wrapKey, encoder.encode(payload)));
  return b64encode(concat(iv, sealed));
}

/** Decrypt a key backup made by either client into a non-extractable identity. */
export async function openKeyBackup(backupB64, wrapKey) {
  try {
    const blob = b64decode(backupB64);
    if (blob.length < IV_BYTES + TAG_BYTES) throw new RangeError("key backup too short");
    const iv = blob.subarray(0, IV_BYTES);
    const params = { name: "AES-GCM", iv, additionalData: KEY_BACKUP_AAD };
    const plain = await subtle.decrypt(params, wrapKey, blob.subarray(IV_BYTES));
    const payload = JSON.parse(strictDecoder.decode(plain));
    if (payload?.v !== VERSION) throw new RangeError("unsupported key backup version");
    return await importIdentity(b64decode(payload.enc), b64decode(payload.sign));
  } catch (error) {
    // An OperationError from AES-GCM means the wrap key (the password) is wrong or the backup
    // was altered: GCM authenticates both. The cause is kept for debugging, never the secrets.
    const message = "the key backup cannot be opened with this password";
    throw new KeyBackupError(message, { cause: error });
  }
}

/**
 * Generate an identity, seal its backup, and re-open it: returns {identity, keyBackup} where
 * identity is NON-extractable and keyBackup is proven to open with wrapKey before it is used.
 */
export async function createIdentity(wrapKey, rsaBits = 3072) {
  const keyBackup = await sealKeyBackup(await generateIdentity(rsaBits), wrapKey);
  return { identity: await openKeyBackup(keyBackup, wrapKey), keyBackup };
}

// --- message envelopes ------------------------------------------------------------------------

/** The UTF-8 strings id, from, to, each length-prefixed. */
function names(messageId, sender, recipient) {
  return concat(...[messageId, sender, recipient].map((s) => lp(encoder.encode(s))));
}

/** AES-GCM associated data: binds the ciphertext to its id, sender and recipient. */
export function envelopeAad(messageId, sender, recipient) {
  return concat(MESSAGE_AAD_PREFIX, names(messageId, sender, recipient));
}

/** The bytes the sender's Ed25519 key signs: every field, each length-prefixed. */
export function envelopeSignedBytes(messageId, sender, recipient, iv, ct, rk, sk) {
  const binary = [iv, ct, rk, sk].map(lp);
  return concat(ENVELOPE_SIG_PREFIX, names(messageId, sender, recipient), ...binary);
}

/** ts must be an integer >= 0 that a JavaScript number holds exactly. */
function isWrittenMs(value) {
  return Number.isSafeInteger(value) && value >= 0;
}

/**
 * Seal text for the recipient (rk) and for the sender's own history (sk), then sign.
 * senderEncSpki defaults to senderIdentity.encSpki. _aesKey and _iv exist for test vectors only.
 * extra: optional plaintext fields beside text and ts ({reply} or {delete}: parsePlaintext).
 */
export async function encryptMessage({
  messageId,
  sender,
  recipient,
  text,
  writtenMs,
  senderIdentity,
  senderEncSpki,
  recipientEncSpki,
  extra = {},
  _aesKey,
  _iv,
}) {
  if (typeof text !== "string") throw new TypeError("text must be a string");
  if (!isWrittenMs(writtenMs)) throw new RangeError("writtenMs must be a safe integer >= 0");
  const [recipientKey, senderKey] = await Promise.all([
    importRsaPublic(recipientEncSpki),
    importRsaPublic(senderEncSpki ?? senderIdentity.encSpki),
  ]);
  const rawKey = _aesKey ?? randomBytes(AES_KEY_BYTES);
  const iv = _iv ?? randomBytes(IV_BYTES);
  const aesKey = await subtle.importKey("raw", rawKey, "AES-GCM", false, ["encrypt"]);
  const plaintext = encoder.encode(JSON.stringify({ ...extra, text, ts: writtenMs }));
  const params = { name: "AES-GCM", iv, additionalData: envelopeAad(messageId, sender, recipient) };
  const ct = new Uint8Array(await subtle.encrypt(params, aesKey, plaintext));
  const rk = new Uint8Array(await subtle.encrypt(RSA_OAEP, recipientKey, rawKey));
  const sk = new Uint8Array(await subtle.encrypt(RSA_OAEP, senderKey, rawKey));
  if (_aesKey === undefined) rawKey.fill(0);
  const signed = envelopeSignedBytes(messageId, sender, recipient, iv, ct, rk, sk);
  const sig = new Uint8Array(await subtle.sign(ED25519, senderIdentity.signKey, signed));
  return {
    v: VERSION,
    iv: b64encode(iv),
    ct: b64encode(ct),
    rk: b64encode(rk),
    sk: b64encode(sk),
    sig: b64encode(sig),
  };
}

/** Decode the envelope's fields; any deviation from the contract is unverifiable. */
function parseEnvelope(envelope) {
  const isObject = envelope !== null && typeof envelope === "object";
  const keys = isObject ? Object.keys(envelope).sort() : [];
  const exact =
    keys.length === ENVELOPE_KEYS.length && keys.every((key, i) => key === ENVELOPE_KEYS[i]);
  if (!exact || envelope.v !== VERSION) {
    throw new EnvelopeError("unverifiable", "the envelope does not have the expected fields");
  }
  let fields;
  try {
    const names = ["iv", "ct", "rk", "sk", "sig"];
    fields = Object.fromEntries(names.map((name) => [name, b64decode(envelope[name])]));
  } catch {
    throw new EnvelopeError("unverifiable", "an envelope field is not base64");
  }
  if (fields.iv.length !== IV_BYTES || fields.sig.length !== SIGNATURE_BYTES) {
    throw new EnvelopeError("unverifiable", "an envelope field has the wrong length");
  }
  return fields;
}

/** Check the Ed25519 signature before anything is decrypted (CONTRACTS.md, issue 3). */
async function verifyEnvelope(fields, messageId, sender, recipient, senderSignSpki) {
  const { iv, ct, rk, sk, sig } = fields;
  const signed = envelopeSignedBytes(messageId, sender, recipient, iv, ct, rk, sk);
  let valid = false;
  try {
    const key = await subtle.importKey("spki", senderSignSpki, ED25519, false, ["verify"]);
    valid = await subtle.verify(ED25519, key, sig, signed);
  } catch {
    valid = false;
  }
  if (!valid) throw new EnvelopeError("unverifiable", "the sender's signature does not verify");
}

/** RSA-OAEP-decrypt the message key, then AES-GCM-decrypt the body. */
async function decryptEnvelope(fields, aad, readerKey, wrapped) {
  try {
    const rawKey = new Uint8Array(await subtle.decrypt(RSA_OAEP, readerKey, wrapped));
    if (rawKey.length !== AES_KEY_BYTES) throw new RangeError("message key has the wrong length");
    const aesKey = await subtle.importKey("raw", rawKey, "AES-GCM", false, ["decrypt"]);
    rawKey.fill(0);
    const params = { name: "AES-GCM", iv: fields.iv, additionalData: aad };
    return new Uint8Array(await subtle.decrypt(params, aesKey, fields.ct));
  } catch {
    throw new EnvelopeError("undecryptable", "the message does not decrypt for this reader");
  }
}

/** Parse {"text": string, "ts": integer}; a signed but malformed body is undecryptable. */
function parsePlaintext(raw) {
  let body;
  try {
    body = JSON.parse(strictDecoder.decode(raw));
  } catch {
    body = null;
  }
  if (typeof body?.text !== "string" || !isWrittenMs(body.ts)) {
    throw new EnvelopeError("undecryptable", "the message body is malformed");
  }
  return { text: body.text, writtenMs: body.ts, ...plaintextExtras(body) };
}

const UUID = /^[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$/;
export const REPLY_SNIPPET_MAX = 200;

/**
 * The optional fields of a body (docs/protocol.md, "Message envelope"): reply, a quoted
 * {id, from, snippet}; delete, the id of the sender's message this tombstone takes back.
 * Malformed ones are left out: the text still shows.
 */
function plaintextExtras(body) {
  const extras = {};
  const reply = body.reply;
  if (
    typeof reply?.id === "string"
    && UUID.test(reply.id)
    && typeof reply.from === "string"
    && typeof reply.snippet === "string"
  ) {
    extras.reply = {
      id: reply.id,
      from: reply.from.slice(0, 32),
      snippet: reply.snippet.slice(0, REPLY_SNIPPET_MAX),
    };
  }
  if (typeof body.delete === "string" && UUID.test(body.delete)) extras.delete = body.delete;
  return extras;
}

/**
 * Verify the sender's signature, then decrypt with rk, or with sk when asSender (the sender
 * reading their own history). Returns {text, writtenMs, reply?, delete?}; throws EnvelopeError with .code
 * "unverifiable" (nothing was decrypted) or "undecryptable".
 */
export async function openMessage(
  envelope,
  { messageId, sender, recipient, reader, asSender = false, senderSignSpki },
) {
  const fields = parseEnvelope(envelope);
  await verifyEnvelope(fields, messageId, sender, recipient, senderSignSpki);
  const aad = envelopeAad(messageId, sender, recipient);
  const raw = await decryptEnvelope(fields, aad, reader.encKey, asSender ? fields.sk : fields.rk);
  return parsePlaintext(raw);
}

// --- safety numbers ---------------------------------------------------------------------------

/** 30 digits for one person: Signal's NumericFingerprintGenerator, version 0, 5200 rounds. */
async function safetyHalf(stableId, identity) {
  let digest = concat(new Uint8Array(2), identity, encoder.encode(stableId));
  for (let i = 0; i < SAFETY_ITERATIONS; i += 1) {
    digest = new Uint8Array(await subtle.digest("SHA-512", concat(digest, identity)));
  }
  // Six 5-byte chunks, each big-endian mod 100000 (Signal DisplayableFingerprint); 2^40 is exact
  // in a JavaScript number.
  let digits = "";
  for (let offset = 0; offset < 30; offset += 5) {
    const chunk = digest.subarray(offset, offset + 5).reduce((n, b) => n * 256 + b, 0);
    digits += String(chunk % 100000).padStart(5, "0");
  }
  return digits;
}

/** The 60-digit number both people compare; the same whichever of them computes it. */
export async function safetyNumber(userA, signSpkiA, encSpkiA, userB, signSpkiB, encSpkiB) {
  const halves = await Promise.all([
    safetyHalf(userA, concat(lp(signSpkiA), lp(encSpkiA))),
    safetyHalf(userB, concat(lp(signSpkiB), lp(encSpkiB))),
  ]);
  return halves.sort().join("");
}

// --- password change and recovery key (issue 12, items 1-2) -----------------------------------

const RECOVERY_KEY_BYTES = 16;
const RECOVERY_AUTH_INFO = encoder.encode("securechat/v1/recovery-auth");
const RECOVERY_WRAP_INFO = encoder.encode("securechat/v1/recovery-wrap");

/** AES-GCM-decrypt a key backup's payload; a KeyBackupError if wrapKey does not open it. */
async function openBackupPayload(backupB64, wrapKey) {
  try {
    const blob = b64decode(backupB64);
    if (blob.length < IV_BYTES + TAG_BYTES) throw new RangeError("key backup too short");
    const params = {
      name: "AES-GCM",
      iv: blob.subarray(0, IV_BYTES),
      additionalData: KEY_BACKUP_AAD,
    };
    return new Uint8Array(await subtle.decrypt(params, wrapKey, blob.subarray(IV_BYTES)));
  } catch (error) {
    throw new KeyBackupError("the key backup cannot be opened with this key", { cause: error });
  }
}

/**
 * The same private keys sealed under newWrapKey, with a fresh IV: a password change or a
 * recovery key needs no extractable key, only the backup's payload for a moment. The result
 * is opened with newWrapKey before it is returned, so a backup that would not open is never
 * sent.
 */
export async function rewrapKeyBackup(backupB64, oldWrapKey, newWrapKey) {
  const payload = await openBackupPayload(backupB64, oldWrapKey);
  const iv = randomBytes(IV_BYTES);
  const params = { name: "AES-GCM", iv, additionalData: KEY_BACKUP_AAD };
  const sealed = new Uint8Array(await subtle.encrypt(params, newWrapKey, payload));
  payload.fill(0);
  const backup = b64encode(concat(iv, sealed));
  await openKeyBackup(backup, newWrapKey);
  return backup;
}

/** A fresh recovery key: 128 random bits as eight groups of four upper-case hex digits. */
export function newRecoveryKey() {
  return formatRecoveryKey(randomBytes(RECOVERY_KEY_BYTES));
}

/** "XXXX-XXXX-...": how a recovery key is shown and written down. */
export function formatRecoveryKey(bytes) {
  return hex(bytes).toUpperCase().match(/.{4}/g).join("-");
}

/** The 16 bytes of a recovery key as typed (any case, spaces and dashes anywhere). */
export function parseRecoveryKey(text) {
  const digits = String(text)
    .replace(/[\s-]+/g, "")
    .toUpperCase();
  if (!/^[0-9A-F]{32}$/.test(digits)) {
    throw new RangeError("A recovery key is 32 characters 0–9 and A–F, in groups of four.");
  }
  return Uint8Array.from(digits.match(/../g), (pair) => Number.parseInt(pair, 16));
}

/**
 * HKDF-SHA256 of a recovery key (128 random bits: no slow derivation needed) into
 * {authKey: 32 bytes the server hashes, wrapKey: the non-extractable AES-GCM key of the
 * recovery backup}. The twin of securechat/client/credentials.py.
 */
export async function deriveRecoveryKeys(keyBytes) {
  if (keyBytes.length !== RECOVERY_KEY_BYTES) throw new RangeError("recovery key must be 16 bytes");
  const hkdfKey = await subtle.importKey("raw", keyBytes, "HKDF", false, [
    "deriveBits",
    "deriveKey",
  ]);
  const params = hkdfParams(RECOVERY_AUTH_INFO);
  const authKey = new Uint8Array(await subtle.deriveBits(params, hkdfKey, 256));
  const wrapKey = await subtle.deriveKey(
    hkdfParams(RECOVERY_WRAP_INFO),
    hkdfKey,
    { name: "AES-GCM", length: 256 },
    false,
    ["encrypt", "decrypt"],
  );
  return { authKey, wrapKey };
}
