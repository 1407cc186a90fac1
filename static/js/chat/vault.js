/**
 * The seal on the local cache. Message text is stored only AES-256-GCM-encrypted under a cache
 * key of this user's, bound (as additional data) to the record it belongs to. The cache key is
 * kept wrapped with RSA-OAEP to the user's own public encryption key, so it opens only while
 * keystore.js holds the matching private key: after "forget keys on this device" or a key
 * reset the cache cannot be read, and it is cleared and started again.
 *
 * So a copy of the browser profile without the keys reveals no message text, and the cache is
 * no easier to read than the messages on the server, which the same private key opens.
 */

import { fingerprint } from "../crypto.js";

const subtle = globalThis.crypto.subtle;
const RSA_OAEP = { name: "RSA-OAEP", hash: "SHA-256" };
const IV_BYTES = 12; // NIST SP 800-38D 8.2
const encoder = new TextEncoder();
const decoder = new TextDecoder();

/** The fingerprints of identity's public keys: {enc, sign}. */
async function fingerprints(identity) {
  return { enc: await fingerprint(identity.encSpki), sign: await fingerprint(identity.signSpki) };
}

/** The stored cache key, unwrapped with identity's private key; null if it does not open. */
async function unwrap(saved, identity, prints) {
  if (saved.enc !== prints.enc || saved.sign !== prints.sign) return null;
  try {
    const raw = new Uint8Array(await subtle.decrypt(RSA_OAEP, identity.encKey, saved.wrapped));
    const key = await subtle.importKey("raw", raw, "AES-GCM", false, ["encrypt", "decrypt"]);
    raw.fill(0);
    return key;
  } catch {
    return null;
  }
}

/** A new cache key, stored wrapped to identity's public encryption key. */
async function create(store, identity, prints) {
  const raw = crypto.getRandomValues(new Uint8Array(32));
  const publicKey = await subtle.importKey("spki", identity.encSpki, RSA_OAEP, false, ["encrypt"]);
  const wrapped = new Uint8Array(await subtle.encrypt(RSA_OAEP, publicKey, raw));
  const key = await subtle.importKey("raw", raw, "AES-GCM", false, ["encrypt", "decrypt"]);
  raw.fill(0);
  await store.setMeta("vault", {
    wrapped,
    enc: prints.enc,
    sign: prints.sign,
    createdAt: Date.now(),
  });
  return key;
}

/** Seals and opens cache records for one user. Get one with Vault.open(store, identity). */
export class Vault {
  #key;

  constructor(key, owner) {
    this.#key = key;
    this.owner = owner;
  }

  /**
   * The user's vault. keysChanged is true when the cache was made under other keys than the
   * ones this browser holds now (the user's own keys changed): it has been cleared.
   */
  static async open(store, identity) {
    const prints = await fingerprints(identity);
    const saved = await store.meta("vault");
    let key = saved ? await unwrap(saved, identity, prints) : null;
    const keysChanged = Boolean(saved) && key === null;
    if (key === null) {
      if (keysChanged) await store.clear();
      key = await create(store, identity, prints);
    }
    return { vault: new Vault(key, store.owner), keysChanged };
  }

  #aad(id) {
    return encoder.encode(`securechat/v1/cache\0${this.owner}\0${id}`);
  }

  /** value (JSON-able) sealed for the record id: {iv, ct} as bytes. */
  async seal(id, value) {
    const iv = crypto.getRandomValues(new Uint8Array(IV_BYTES));
    const params = { name: "AES-GCM", iv, additionalData: this.#aad(id) };
    const ct = new Uint8Array(
      await subtle.encrypt(params, this.#key, encoder.encode(JSON.stringify(value))),
    );
    return { iv, ct };
  }

  /** The value sealed in box for id; throws if it does not open. */
  async open(id, box) {
    const params = { name: "AES-GCM", iv: box.iv, additionalData: this.#aad(id) };
    return JSON.parse(decoder.decode(await subtle.decrypt(params, this.#key, box.ct)));
  }
}
