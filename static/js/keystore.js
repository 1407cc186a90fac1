/**
 * This browser's copy of each user's private keys, in IndexedDB, by username.
 *
 * Only NON-extractable CryptoKeys are stored (WebCrypto: a structured clone keeps
 * extractable=false), so script on this origin can use them but nothing can read their bytes
 * out. Next to them: both public keys as SPKI DER, to compare with what the server publishes.
 * The page asks for persistent storage so the browser does not evict the keys under pressure;
 * if it does anyway, the next login restores them from the server's encrypted key backup.
 */

import { b64encode, openKeyBackup } from "./crypto.js";

const DB_NAME = "securechat";
const DB_VERSION = 1;
const STORE = "identities";

/** The server's public keys do not match the keys that the backup holds. */
export class KeyMismatchError extends Error {
  constructor() {
    super(
      "Your key backup does not match the public keys the server holds for you. "
        + "Not signing in: please tell the server's operator.",
    );
    this.name = "KeyMismatchError";
  }
}

/** Open (and on first use create) the database. */
function openDatabase() {
  return new Promise((resolve, reject) => {
    const opening = indexedDB.open(DB_NAME, DB_VERSION);
    opening.onupgradeneeded = () =>
      opening.result.createObjectStore(STORE, { keyPath: "username" });
    opening.onsuccess = () => resolve(opening.result);
    opening.onerror = () => reject(opening.error);
    opening.onblocked = () => reject(new Error("the key store is blocked by another tab"));
  });
}

/** Run work(store) in one transaction; resolves with the result of the request it returns. */
async function transact(mode, work) {
  const db = await openDatabase();
  try {
    return await new Promise((resolve, reject) => {
      const tx = db.transaction(STORE, mode);
      const pending = work(tx.objectStore(STORE));
      tx.oncomplete = () => resolve(pending?.result);
      tx.onerror = () => reject(tx.error);
      tx.onabort = () => reject(tx.error ?? new Error("key store transaction aborted"));
    });
  } finally {
    db.close();
  }
}

/** Ask the browser not to evict this origin's storage; best effort, never fails the caller. */
async function requestPersistence() {
  try {
    if (navigator.storage?.persist && !(await navigator.storage.persisted())) {
      await navigator.storage.persist();
    }
  } catch {
    // Some browsers refuse or lack the Storage API; the key backup still covers an eviction.
  }
}

/** Store username's identity; refuses keys that could be exported. */
export async function saveIdentity(username, identity) {
  if (identity.encKey.extractable || identity.signKey.extractable) {
    throw new TypeError("refusing to store extractable private keys");
  }
  const { encKey, signKey, encSpki, signSpki } = identity;
  await transact("readwrite", (store) =>
    store.put({ username, encKey, signKey, encSpki, signSpki, savedAt: Date.now() }),
  );
  await requestPersistence();
}

/** username's identity {encKey, signKey, encSpki, signSpki}, or null if this browser has none. */
export async function loadIdentity(username) {
  const record = await transact("readonly", (store) => store.get(username));
  if (!record) return null;
  const { encKey, signKey, encSpki, signSpki } = record;
  return Object.freeze({ encKey, signKey, encSpki, signSpki });
}

/** Delete username's keys from this browser. */
export async function forgetIdentity(username) {
  await transact("readwrite", (store) => store.delete(username));
}

/** Whether identity's public keys are the ones the server answered at login (base64 SPKI). */
function matchesServer(identity, account) {
  return (
    b64encode(identity.encSpki) === account.enc_public_key
    && b64encode(identity.signSpki) === account.sign_public_key
  );
}

/**
 * After a login: the keys for account (the login answer), from this browser when it holds the
 * ones the server publishes, else opened from account.key_backup with wrapKey and stored.
 * Throws KeyMismatchError if the backup's keys are not the server's, KeyBackupError if the
 * backup does not open.
 */
export async function restoreIdentity(account, wrapKey) {
  const stored = await loadIdentity(account.username);
  if (stored && matchesServer(stored, account)) return stored;
  // None here (a new browser), or keys of an older account under the same name: the backup
  // decides. AES-GCM authenticates it, so only someone holding wrapKey can have sealed it.
  const identity = await openKeyBackup(account.key_backup, wrapKey);
  if (!matchesServer(identity, account)) throw new KeyMismatchError();
  await saveIdentity(account.username, identity);
  return identity;
}
