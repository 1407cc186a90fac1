/**
 * Group names, end to end encrypted in the creation and rename entries (docs/CONTRACTS.md,
 * "Groups"): detail = iv(12) || AES-256-GCM(name_key, UTF-8 name, aad), aad = the domain label,
 * the group id and the entry's chain index, so a name cannot be moved to another group or entry.
 * The 32-byte name key is fresh per create or rename and reaches members inside key
 * distributions ("name_keys"). Only WebCrypto: no DOM, socket or storage.
 */

import { concat, fixed, GROUP_ID_BYTES, uint } from "./membership.js";

const subtle = globalThis.crypto.subtle;
const encoder = new TextEncoder();
const strictDecoder = new TextDecoder("utf-8", { fatal: true });
const NAME_LABEL = encoder.encode("securechat/v1/group-name");
const IV_BYTES = 12; // NIST SP 800-38D 8.2
export const NAME_KEY_BYTES = 32;
// A name a person types: well inside an entry's 4096-byte detail once encrypted.
export const MAX_GROUP_NAME_CHARS = 100;

/** The additional data that binds a name to its group and entry. */
export function nameAad(groupId, index) {
  return concat(NAME_LABEL, fixed(groupId, GROUP_ID_BYTES, "groupId"), uint(index, 8));
}

/** A fresh name key. */
export function newNameKey() {
  return crypto.getRandomValues(new Uint8Array(NAME_KEY_BYTES));
}

async function aesKey(nameKey, usage) {
  return subtle.importKey("raw", fixed(nameKey, NAME_KEY_BYTES, "nameKey"), "AES-GCM", false, [
    usage,
  ]);
}

/** The detail of the entry at index that names the group `name`. _iv for test vectors only. */
export async function sealName(nameKey, groupId, index, name, { _iv } = {}) {
  const iv = _iv ?? crypto.getRandomValues(new Uint8Array(IV_BYTES));
  const params = { name: "AES-GCM", iv, additionalData: nameAad(groupId, index) };
  const ct = await subtle.encrypt(params, await aesKey(nameKey, "encrypt"), encoder.encode(name));
  return concat(iv, new Uint8Array(ct));
}

/** The name an entry's detail carries; throws if it does not open under nameKey. */
export async function openName(nameKey, groupId, index, detail) {
  if (detail.length < IV_BYTES + 16) throw new TypeError("not an encrypted group name");
  const params = {
    name: "AES-GCM",
    iv: detail.slice(0, IV_BYTES),
    additionalData: nameAad(groupId, index),
  };
  const raw = await subtle.decrypt(
    params,
    await aesKey(nameKey, "decrypt"),
    detail.slice(IV_BYTES),
  );
  return strictDecoder.decode(raw);
}
