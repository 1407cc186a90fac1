/**
 * Key directory checks for the browser: the twin of KeyDirectoryView (securechat/client/keys.py)
 * and SecureChatClient.fetch_verified_keys (securechat/client/api.py): same checks, same error codes.
 * Formats: docs/protocol.md, "Key directory". No DOM here: the conversation UI builds on this.
 *
 * What it does before any key is used: pin the directory's Ed25519 key on first use; check the
 * signature of the tree head and the inclusion proof of the user's log entry, rebuilt from the
 * keys actually served; check every newer (or older) head is consistent with the last one kept;
 * pin each contact's fingerprints on first use and report changes.
 *
 * API for the conversation UI
 * ---------------------------
 *   import { KeyDirectory, DirectoryError } from "/static/js/directory.js";
 *   const directory = new KeyDirectory({ me: "alice" });   // pins in localStorage
 *
 *   const keys = await directory.fetchVerifiedKeys("bob");
 *     // -> { username, encSpki, signSpki (Uint8Array SPKI DER), encFingerprint, signFingerprint
 *     //      (hex), entry: {index, timestamp}, treeHead: {treeSize, timestamp, rootHash, signature},
 *     //      state: "new" | "same" | "changed", verified: boolean, isSelf: boolean,
 *     //      canSend: boolean, previous: null | {encFingerprint, signFingerprint, index, verified} }
 *     // Throws DirectoryError when a check fails: then DO NOT encrypt to any key for bob.
 *
 *   state "new":     first time we see bob's keys; they are now pinned.
 *   state "same":    the keys pinned before.
 *   state "changed": bob's keys differ from the pinned ones (keys.previous). Tell the user in
 *                    plain words; if keys.verified (the user had compared safety numbers),
 *                    keys.canSend is false: block sending until the user has looked at the new
 *                    safety number and called directory.acceptChange("bob") (which also clears
 *                    "verified"). The state stays "changed" across reloads until then.
 *   keys.isSelf:     the keys are my own (me === username). A change there is MY key change (a
 *                    reset, a new device): never word it as someone else's.
 *
 *   directory.markVerified("bob", true|false)  after comparing safety numbers out of band
 *   directory.acceptChange("bob")              pin bob's new keys (verification starts over)
 *   directory.contact("bob")                   the pin: {encFingerprint, signFingerprint, index,
 *                                              verified, pending} or null
 *   await directory.verificationPanel({username, encSpki, signSpki} of me, keys)
 *     // -> { safetyNumber (60 digits), groups (12 strings of 5 digits), qrText, state, verified,
 *     //      mine: {encFingerprint, signFingerprint}, theirs: {encFingerprint, signFingerprint} }
 *   await directory.checkHead()                fetch the latest head, check its signature and its
 *                                              consistency with the last head kept (e.g. on load)
 *   directory.alarm()                          null, or {code, message, at} once a forked log or a
 *                                              changed directory key was seen: show a SERIOUS
 *                                              warning (the server may be lying about keys)
 *   directory.acceptDirectoryKey(spki)         re-pin after a rotation the operator announced
 *   await directory.checkMyEntries({encSpki, signSpki} of me)
 *     // -> {treeSize, mine: [{index, encFingerprint, signFingerprint}]} (my entries new to this
 *     //      check). Watches the log for entries under MY name (see "Self-monitoring" below);
 *     //      throws DirectoryError "foreign_key_for_me" or "bad_entries" and sets the alarm.
 *
 * Self-monitoring (checkMyEntries). Nobody but me can tell that a key logged under my name is not
 * mine: a contact new to me pins whatever the log says ("new", no warning). So my client reads
 * every log entry from where it stopped last time (kept in storage per user) up to a head it has
 * just verified (checkHead), and proves the pages are that log: it keeps the RFC 9162 frontier
 * (the roots of the perfect subtrees) of the prefix already read, appends the new leaf hashes,
 * rebuilt from the entries served, and the root must equal the signed head's; otherwise
 * "bad_entries" (the server hid or altered entries: serious). Among the entries whose user_hash
 * is userHash(me), each must carry my current fingerprints, or be a pair this device has seen as
 * mine ("known") that a later entry with my current keys supersedes. Anything else is
 * "foreign_key_for_me": a key under my name I do not hold, e.g. the server impersonating me (or
 * a key reset made on another device while this one still holds the old keys). The first run on
 * a device accepts my past entries as known only if the latest of them carries my current keys.
 * Nothing is remembered from a run that fails, so the finding comes back at every check.
 *
 * DirectoryError.code: "bad_response" (malformed answer), "bad_signature" (the head is not signed
 * by the pinned directory key), "directory_key_changed", "wrong_user" (the entry is another
 * user's), "not_in_log" (the keys served are not the ones in the log: a swapped key),
 * "log_forked" (a head inconsistent with one seen before: a rewritten or split log),
 * "bad_entries" (log entries served that do not hash to the signed head), "foreign_key_for_me"
 * (the log lists keys for me that are not mine). The last four set the alarm.
 *
 * Tombstones (docs/protocol.md, "Tombstones"): a log entry whose two fingerprints are all zeros
 * says the user has no keys: the account was deleted, or the operator withdrew its keys. The
 * server then answers the keys request with {username, status: "deleted" | "withdrawn", entry,
 * inclusion_proof, tree_head} and no keys; once the tombstone is proved (its leaf rebuilt with
 * zero fingerprints) fetchVerifiedKeys throws NoKeysError, a DirectoryError whose code is
 * "account_deleted" or "keys_withdrawn" and whose message can be shown as it is ("This account
 * was deleted."): encrypt nothing to them. No alarm: an honest log says so.
 *
 * Storage holds public material only: the directory key, the last head, contacts' fingerprints,
 * and per user (securechat.self.v1.<me>) how far the log was read, its frontier, and my known
 * fingerprint pairs.
 */

import { ApiError, isTransient, normalizeUsername, request } from "./api.js";
import { b64decode, b64encode, fingerprint, safetyNumber } from "./crypto.js";
import {
  entryLeafBytes,
  equalBytes,
  leafHash,
  nodeHash,
  parseTreeHead,
  sha256,
  userHash,
  verifyConsistency,
  verifyInclusion,
  verifyTreeHead,
} from "./merkle.js";

const DIRECTORY_STORAGE = "securechat.directory.v1";
const CONTACTS_STORAGE = "securechat.contacts.v1.";
const SELF_STORAGE = "securechat.self.v1.";
const ALARMS = ["log_forked", "directory_key_changed", "bad_entries", "foreign_key_for_me"];
const ENTRY_KEYS = ["enc_fingerprint", "index", "sign_fingerprint", "timestamp", "user_hash"];
const RESPONSE_KEYS = [
  "username",
  "enc_public_key",
  "sign_public_key",
  "entry",
  "inclusion_proof",
  "tree_head",
];
const HEX_64 = /^[0-9a-f]{64}$/;

/** A failed directory check; code as listed above. */
export class DirectoryError extends Error {
  constructor(code, message) {
    super(message);
    this.name = "DirectoryError";
    this.code = code;
  }
}

/** The user has no keys, and the log proves it (a tombstone); tombstone: {status, entry, treeHead}. */
export class NoKeysError extends DirectoryError {
  constructor(username, tombstone) {
    const deleted = tombstone.status === "deleted";
    super(
      deleted ? "account_deleted" : "keys_withdrawn",
      deleted
        ? "This account was deleted."
        : `${username} has no keys until they set their account up again.`,
    );
    this.name = "NoKeysError";
    this.username = username;
    this.tombstone = tombstone;
  }
}

/** The fingerprint of a tombstone entry: 32 zero bytes, as hex. */
export const TOMBSTONE_FINGERPRINT = "0".repeat(64);

const fail = (code, message) => {
  throw new DirectoryError(code, message);
};

/** Lower-case hex to bytes. */
function unhex(text) {
  return Uint8Array.from(text.match(/../g) ?? [], (b) => parseInt(b, 16));
}

/** The hex SHA-256 fingerprints of a user's two keys (SPKI DER), as the log records them. */
async function fingerprints(encSpki, signSpki) {
  return {
    encFingerprint: await fingerprint(encSpki),
    signFingerprint: await fingerprint(signSpki),
  };
}

/** Tell whether two parsed heads are the same signed head. */
function sameHead(a, b) {
  return (
    a.treeSize === b.treeSize
    && a.timestamp === b.timestamp
    && equalBytes(a.rootHash, b.rootHash)
    && equalBytes(a.signature, b.signature)
  );
}

/** The Merkle leaf hash of a parsed log entry, from the fingerprints it states. */
async function entryLeafHash(entry) {
  return leafHash(
    entryLeafBytes(
      entry.index,
      entry.timestamp,
      entry.userHash,
      unhex(entry.encFingerprint),
      unhex(entry.signFingerprint),
    ),
  );
}

/** Parse a log entry strictly, as DirectoryEntry.from_json does. */
export function parseEntry(json) {
  const keys = json && typeof json === "object" ? Object.keys(json).sort() : [];
  if (keys.length !== ENTRY_KEYS.length || keys.some((k, i) => k !== ENTRY_KEYS[i])) {
    fail("bad_response", `a log entry has exactly ${ENTRY_KEYS.join(", ")}`);
  }
  const { index, timestamp } = json;
  for (const value of [index, timestamp]) {
    if (!Number.isSafeInteger(value) || value < 0) fail("bad_response", "bad index or time");
  }
  for (const value of [json.enc_fingerprint, json.sign_fingerprint]) {
    if (typeof value !== "string" || !HEX_64.test(value)) fail("bad_response", "bad fingerprint");
  }
  let user;
  try {
    user = b64decode(json.user_hash);
  } catch {
    user = new Uint8Array(0);
  }
  if (user.length !== 32) fail("bad_response", "bad user hash");
  return {
    index,
    timestamp,
    userHash: user,
    encFingerprint: json.enc_fingerprint,
    signFingerprint: json.sign_fingerprint,
  };
}

/** Decode the keys, proof and head of a key response; bad_response on anything malformed. */
async function parseKeyResponse(json) {
  if (!json || typeof json !== "object" || RESPONSE_KEYS.some((k) => !(k in json))) {
    fail("bad_response", "the key response lacks fields");
  }
  try {
    const encSpki = b64decode(json.enc_public_key);
    const signSpki = b64decode(json.sign_public_key);
    // Both must be well-formed public keys of the right kind before anything else.
    await crypto.subtle.importKey("spki", encSpki, { name: "RSA-OAEP", hash: "SHA-256" }, false, [
      "encrypt",
    ]);
    await crypto.subtle.importKey("spki", signSpki, { name: "Ed25519" }, false, ["verify"]);
    if (!Array.isArray(json.inclusion_proof)) throw new TypeError("the proof is a list");
    const proof = json.inclusion_proof.map(b64decode);
    if (proof.some((p) => p.length !== 32)) throw new TypeError("a proof hash is 32 bytes");
    return { encSpki, signSpki, proof, head: parseTreeHead(json.tree_head) };
  } catch (error) {
    if (error instanceof DirectoryError) throw error;
    return fail("bad_response", `malformed key response: ${error.message}`);
  }
}

/**
 * Check a GET /api/v1/keys/<username> answer against the pinned directory key (SPKI bytes).
 * The leaf is rebuilt from the keys served, never from the fingerprints the server states, so a
 * key swapped anywhere but in the log fails the inclusion proof. Returns the verified keys
 * (without pin state); throws DirectoryError.
 */
export async function verifyKeyResponse(json, { username, directoryKey }) {
  const name = normalizeUsername(username);
  if (json && typeof json === "object" && "status" in json) {
    throw new NoKeysError(name, await verifyTombstone(json, { username: name, directoryKey }));
  }
  const { encSpki, signSpki, proof, head } = await parseKeyResponse(json);
  const entry = parseEntry(json.entry);
  if (!(await verifyTreeHead(directoryKey, json.tree_head))) {
    fail("bad_signature", "the tree head is not signed by the directory");
  }
  if (json.username !== name || !equalBytes(entry.userHash, await userHash(name))) {
    fail("wrong_user", `the log entry is not ${name}'s`);
  }
  const { encFingerprint, signFingerprint } = await fingerprints(encSpki, signSpki);
  const leaf = await leafHash(
    entryLeafBytes(
      entry.index,
      entry.timestamp,
      entry.userHash,
      unhex(encFingerprint),
      unhex(signFingerprint),
    ),
  );
  if (!(await verifyInclusion(leaf, entry.index, head.treeSize, proof, head.rootHash))) {
    fail("not_in_log", `the keys served for ${name} are not in the log`);
  }
  return {
    username: name,
    encSpki,
    signSpki,
    encFingerprint,
    signFingerprint,
    entry: { index: entry.index, timestamp: entry.timestamp },
    treeHead: head,
  };
}

/**
 * Check a keys answer without keys: its entry must be a tombstone, rebuilt with zero
 * fingerprints (never the ones stated), included in a head signed by the directory. Returns
 * {status, entry: {index, timestamp}, treeHead}; throws DirectoryError.
 */
export async function verifyTombstone(json, { username, directoryKey }) {
  if (!["deleted", "withdrawn"].includes(json.status)) fail("bad_response", "unknown key status");
  let proof;
  let head;
  try {
    if (!Array.isArray(json.inclusion_proof)) throw new TypeError("the proof is a list");
    proof = json.inclusion_proof.map(b64decode);
    if (proof.some((p) => p.length !== 32)) throw new TypeError("a proof hash is 32 bytes");
    head = parseTreeHead(json.tree_head);
  } catch (error) {
    fail("bad_response", `malformed key response: ${error.message}`);
  }
  const entry = parseEntry(json.entry);
  if (!(await verifyTreeHead(directoryKey, json.tree_head))) {
    fail("bad_signature", "the tree head is not signed by the directory");
  }
  if (json.username !== username || !equalBytes(entry.userHash, await userHash(username))) {
    fail("wrong_user", `the log entry is not ${username}'s`);
  }
  const zero = new Uint8Array(32);
  const leaf = await leafHash(
    entryLeafBytes(entry.index, entry.timestamp, entry.userHash, zero, zero),
  );
  if (!(await verifyInclusion(leaf, entry.index, head.treeSize, proof, head.rootHash))) {
    fail("not_in_log", `no tombstone for ${username} is in the log`);
  }
  return {
    status: json.status,
    entry: { index: entry.index, timestamp: entry.timestamp },
    treeHead: head,
  };
}

/** Tell whether json is an object with exactly the given keys. */
function hasExactly(json, keys) {
  const got = json && typeof json === "object" && !Array.isArray(json) ? Object.keys(json) : [];
  return got.length === keys.length && keys.every((k) => got.includes(k));
}

/**
 * Check a GET /api/v1/keys/<username>/history answer against the pinned directory key (SPKI
 * bytes): each entry the user's, newest first, below the head's size, its leaf (rebuilt from the
 * fingerprints stated, which are what the log commits to) proved included in the one head, whose
 * signature is checked. The caller then checks the head's consistency with the heads seen.
 * Returns {username, entries: [{index, timestamp, encFingerprint, signFingerprint}], treeHead,
 * signFingerprints: Set of the hex sign fingerprints published (tombstones left out)}; throws
 * DirectoryError. The twin of securechat/client/keys.py's verify_key_history.
 */
export async function verifyKeyHistory(json, { username, directoryKey }) {
  const name = normalizeUsername(username);
  let head;
  const proved = [];
  try {
    if (!hasExactly(json, ["username", "entries", "tree_head"])) {
      throw new TypeError("a key history has exactly username, entries, tree_head");
    }
    head = parseTreeHead(json.tree_head);
    if (!Array.isArray(json.entries) || json.entries.length === 0) {
      throw new TypeError("a key history has entries");
    }
    for (const item of json.entries) {
      if (!hasExactly(item, ["entry", "inclusion_proof"])) {
        throw new TypeError("a history item has exactly entry, inclusion_proof");
      }
      if (!Array.isArray(item.inclusion_proof)) throw new TypeError("the proof is a list");
      const proof = item.inclusion_proof.map(b64decode);
      if (proof.some((p) => p.length !== 32)) throw new TypeError("a proof hash is 32 bytes");
      proved.push([parseEntry(item.entry), proof]);
    }
  } catch (error) {
    fail("bad_response", `malformed key history: ${error.message}`);
  }
  if (!(await verifyTreeHead(directoryKey, json.tree_head))) {
    fail("bad_signature", "the tree head is not signed by the directory");
  }
  if (json.username !== name) fail("wrong_user", `the key history is not ${name}'s`);
  const mine = await userHash(name);
  let below = head.treeSize;
  for (const [entry, proof] of proved) {
    if (!equalBytes(entry.userHash, mine)) {
      fail("wrong_user", `log entry ${entry.index} is not ${name}'s`);
    }
    if (entry.index >= below) fail("bad_response", "a key history is newest first, in the head");
    below = entry.index;
    const leaf = await entryLeafHash(entry);
    if (!(await verifyInclusion(leaf, entry.index, head.treeSize, proof, head.rootHash))) {
      fail("not_in_log", `log entry ${entry.index} is not in the log`);
    }
  }
  const entries = proved.map(([e]) => ({
    index: e.index,
    timestamp: e.timestamp,
    encFingerprint: e.encFingerprint,
    signFingerprint: e.signFingerprint,
  }));
  const published = entries.filter(
    (e) =>
      e.encFingerprint !== TOMBSTONE_FINGERPRINT || e.signFingerprint !== TOMBSTONE_FINGERPRINT,
  );
  return {
    username: name,
    entries,
    treeHead: head,
    signFingerprints: new Set(published.map((e) => e.signFingerprint)),
  };
}

/**
 * Check a parsed head against the last one kept, with a consistency proof (Uint8Array list)
 * from the smaller size to the larger (null for equal sizes). Returns the head to keep.
 */
export async function checkHeadConsistency(last, head, proof) {
  if (last === null) return head;
  if (head.treeSize === last.treeSize) {
    if (!sameHead(head, last)) fail("log_forked", `two different heads of size ${head.treeSize}`);
    return last;
  }
  const [older, newer] = last.treeSize < head.treeSize ? [last, head] : [head, last];
  const ok =
    proof !== null
    && (await verifyConsistency(
      older.treeSize,
      newer.treeSize,
      older.rootHash,
      newer.rootHash,
      proof,
    ));
  if (!ok) {
    fail(
      "log_forked",
      `the head of size ${head.treeSize} is not consistent with the head of `
        + `size ${last.treeSize} seen before`,
    );
  }
  return newer;
}

/**
 * Append a leaf hash to the frontier of a tree of `size` leaves (the roots of its perfect
 * subtrees, largest first: one per bit set in size). Changes the array in place.
 */
async function frontierAppend(frontier, size, leaf) {
  let hash = leaf;
  for (let n = size; n % 2 === 1; n = Math.floor(n / 2))
    hash = await nodeHash(frontier.pop(), hash);
  frontier.push(hash);
}

/** The RFC 9162 root of the tree whose frontier this is. */
async function frontierRoot(frontier) {
  if (frontier.length === 0) return sha256(new Uint8Array(0));
  let hash = frontier[frontier.length - 1];
  for (let i = frontier.length - 2; i >= 0; i -= 1) hash = await nodeHash(frontier[i], hash);
  return hash;
}

/**
 * Judge my entries, in index order, against my current fingerprints and the pairs known as mine:
 * the foreign ones (see "Self-monitoring"). `first`: no scan before on this device.
 */
export function foreignEntries(all, current, known, first) {
  // A tombstone publishes no key, so nobody can pose as me with it: never foreign.
  const mine = all.filter(
    (e) =>
      e.encFingerprint !== TOMBSTONE_FINGERPRINT || e.signFingerprint !== TOMBSTONE_FINGERPRINT,
  );
  const pair = (e) => `${e.encFingerprint}:${e.signFingerprint}`;
  const now = `${current.encFingerprint}:${current.signFingerprint}`;
  const accepted = new Set(known);
  if (first && mine.length > 0 && pair(mine[mine.length - 1]) === now) {
    for (const e of mine) accepted.add(pair(e));
  }
  const lastCurrent = mine.reduce((at, e) => (pair(e) === now ? e.index : at), -1);
  return mine.filter((e) => pair(e) !== now && !(accepted.has(pair(e)) && e.index < lastCurrent));
}

/** The 60-digit safety number between me and them ({username, encSpki, signSpki} each). */
export function safetyNumberFor(me, them) {
  return safetyNumber(
    me.username,
    me.signSpki,
    me.encSpki,
    them.username,
    them.signSpki,
    them.encSpki,
  );
}

/** A safety number as 12 groups of 5 digits, the way Signal shows it. */
export function formatSafetyNumber(digits) {
  return digits.match(/\d{5}/g) ?? [];
}

/** A head in its JSON form, for storage. */
function headJson(head) {
  return {
    tree_size: head.treeSize,
    timestamp: head.timestamp,
    root_hash: b64encode(head.rootHash),
    signature: b64encode(head.signature),
  };
}

/** One user's view of the key directory, kept in storage (localStorage by default). */
export class KeyDirectory {
  constructor({ me = null, storage = globalThis.localStorage, get = request } = {}) {
    this.me = me === null ? null : normalizeUsername(me);
    this.storage = storage;
    this.get = get;
    this.contactsKey = CONTACTS_STORAGE + (this.me ?? "");
  }

  #load(key) {
    try {
      return JSON.parse(this.storage.getItem(key) ?? "{}") ?? {};
    } catch {
      return {};
    }
  }

  #saveDirectory(changes) {
    const data = { ...this.#load(DIRECTORY_STORAGE), ...changes };
    this.storage.setItem(DIRECTORY_STORAGE, JSON.stringify(data));
  }

  #contacts() {
    return this.#load(this.contactsKey);
  }

  #saveContacts(contacts) {
    this.storage.setItem(this.contactsKey, JSON.stringify(contacts));
  }

  #raiseAlarm(error) {
    if (ALARMS.includes(error.code)) {
      this.#saveDirectory({ alarm: { code: error.code, message: error.message, at: Date.now() } });
    }
    throw error;
  }

  /** The persistent serious warning, or null. */
  alarm() {
    return this.#load(DIRECTORY_STORAGE).alarm ?? null;
  }

  /**
   * Read the log entries added since the last call up to a freshly verified head, prove them
   * against it, and check the ones under my name (see "Self-monitoring" at the top). me:
   * {encSpki, signSpki} of the keys this device holds. Throws DirectoryError (foreign_key_for_me
   * and bad_entries set the alarm), or the transport's error when offline.
   */
  async checkMyEntries({ encSpki, signSpki }) {
    if (this.me === null) throw new DirectoryError("bad_request", "no user to check");
    const head = await this.checkHead();
    const storageKey = SELF_STORAGE + this.me;
    const saved = this.#load(storageKey);
    const first = !Number.isSafeInteger(saved.size);
    const start = first ? 0 : saved.size;
    const known = Array.isArray(saved.known) ? saved.known : [];
    if (head.treeSize <= start) return { treeSize: start, mine: [] };
    const frontier = first ? [] : (saved.frontier ?? []).map(b64decode);
    const me = await userHash(this.me);
    const mine = [];
    let size = start;
    try {
      while (size < head.treeSize) {
        const page = await this.get(`/api/v1/directory/entries?start=${size}&end=${head.treeSize}`);
        const entries = Array.isArray(page?.entries) ? page.entries : [];
        if (entries.length === 0) fail("bad_entries", `no log entries served from ${size}`);
        for (const json of entries) {
          if (size === head.treeSize) break;
          const entry = parseEntry(json);
          if (entry.index !== size) fail("bad_entries", `entry ${entry.index} served at ${size}`);
          await frontierAppend(frontier, size, await entryLeafHash(entry));
          size += 1;
          if (equalBytes(entry.userHash, me)) {
            mine.push({
              index: entry.index,
              encFingerprint: entry.encFingerprint,
              signFingerprint: entry.signFingerprint,
            });
          }
        }
      }
      if (!equalBytes(await frontierRoot(frontier), head.rootHash)) {
        fail("bad_entries", `the log entries served do not hash to the head of size ${size}`);
      }
      const current = await fingerprints(encSpki, signSpki);
      const foreign = foreignEntries(mine, current, known, first);
      if (foreign.length > 0) {
        fail(
          "foreign_key_for_me",
          `the key directory lists keys for ${this.me} that this device `
            + `does not hold (log entries ${foreign.map((e) => e.index).join(", ")}, encryption key `
            + `${foreign[0].encFingerprint}). Unless you reset your keys on another device, the `
            + "server may be giving others its own key in your name.",
        );
      }
      const pairs = new Set(known);
      const now = `${current.encFingerprint}:${current.signFingerprint}`;
      for (const e of mine) pairs.add(`${e.encFingerprint}:${e.signFingerprint}`);
      if (mine.length > 0) pairs.add(now);
      this.storage.setItem(
        storageKey,
        JSON.stringify({
          size,
          frontier: frontier.map(b64encode),
          known: [...pairs],
        }),
      );
      return { treeSize: size, mine };
    } catch (error) {
      if (error instanceof DirectoryError && error.code === "bad_response") {
        return this.#raiseAlarm(new DirectoryError("bad_entries", error.message));
      }
      if (error instanceof DirectoryError) return this.#raiseAlarm(error);
      throw error;
    }
  }

  /** The pinned directory key (SPKI bytes), or null before first use. */
  pinnedDirectoryKey() {
    const pinned = this.#load(DIRECTORY_STORAGE).directoryKey;
    return pinned ? b64decode(pinned) : null;
  }

  /** The server's directory key, pinned on first use; directory_key_changed if it differs. */
  async directoryKey() {
    const body = await this.get("/api/v1/directory");
    let spki;
    try {
      spki = b64decode(body.public_key);
    } catch {
      fail("bad_response", "no directory key");
    }
    const pinned = this.pinnedDirectoryKey();
    if (pinned === null) {
      this.#saveDirectory({ directoryKey: b64encode(spki) });
    } else if (!equalBytes(pinned, spki)) {
      this.#raiseAlarm(
        new DirectoryError(
          "directory_key_changed",
          `the server's directory key is now ${await fingerprint(spki)}, not the pinned `
            + `${await fingerprint(pinned)}`,
        ),
      );
    }
    return spki;
  }

  /** Re-pin the directory key after a rotation checked out of band; the last head is kept. */
  acceptDirectoryKey(spki) {
    this.#saveDirectory({ directoryKey: b64encode(spki), alarm: null });
  }

  /** The last head kept (parsed), or null. */
  lastHead() {
    const json = this.#load(DIRECTORY_STORAGE).lastHead;
    return json ? parseTreeHead(json) : null;
  }

  /**
   * Check a head against the last one kept and keep the larger. Without an argument, fetch the
   * server's latest and verify its signature; a parsed head passed in must already be verified
   * (fetchVerifiedKeys passes the head verifyKeyResponse checked).
   */
  async checkHead(head = null) {
    let checked = head;
    if (checked === null) {
      const directoryKey = this.pinnedDirectoryKey() ?? (await this.directoryKey());
      const json = await this.get("/api/v1/directory/head");
      if (!(await verifyTreeHead(directoryKey, json))) {
        fail("bad_signature", "the head is not signed by the directory");
      }
      checked = parseTreeHead(json);
    }
    const last = this.lastHead();
    let proof = null;
    if (last !== null && last.treeSize !== checked.treeSize) {
      const [from, to] = [last.treeSize, checked.treeSize].sort((a, b) => a - b);
      proof = await this.#consistencyProof(from, to);
    }
    try {
      const keep = await checkHeadConsistency(last, checked, proof);
      this.#saveDirectory({ lastHead: headJson(keep) });
    } catch (error) {
      this.#raiseAlarm(error);
    }
    return checked;
  }

  async #consistencyProof(from, to) {
    let body;
    try {
      body = await this.get(`/api/v1/directory/consistency?from=${from}&to=${to}`);
    } catch (error) {
      // Only the server's refusal (a 4xx) to prove two sizes it has signed is evidence: an honest
      // log proves any two of its sizes. A network failure, throttling, a server error or a get
      // that failed with no answer at all says nothing about the log: let the caller retry later,
      // and raise no alarm.
      const refused = error instanceof ApiError && !isTransient(error);
      if (!refused) throw error;
      return null;
    }
    try {
      return body.proof.map(b64decode);
    } catch {
      return fail("bad_response", "malformed consistency proof");
    }
  }

  /** A user's keys, proved in the log, consistent with the heads seen, compared with the pin. */
  async fetchVerifiedKeys(username) {
    const name = normalizeUsername(username);
    const directoryKey = this.pinnedDirectoryKey() ?? (await this.directoryKey());
    const json = await this.get(`/api/v1/keys/${encodeURIComponent(name)}`);
    let keys;
    try {
      keys = await verifyKeyResponse(json, { username: name, directoryKey });
    } catch (error) {
      // A proved tombstone: the head it came with must still fit the heads seen.
      if (error instanceof NoKeysError) await this.checkHead(error.tombstone.treeHead);
      if (error.code === "bad_signature") await this.directoryKey(); // rotated: key changed
      throw error;
    }
    await this.checkHead(keys.treeHead);
    return { ...keys, ...this.#pin(keys) };
  }

  /**
   * Every key the user published, as the directory's history proves it (verifyKeyHistory), its
   * head consistent with the heads seen: what a group entry under an earlier key is checked
   * against (docs/CONTRACTS.md "Groups", step 2). Throws DirectoryError or the transport's error.
   */
  async fetchVerifiedHistory(username) {
    const name = normalizeUsername(username);
    const directoryKey = this.pinnedDirectoryKey() ?? (await this.directoryKey());
    const json = await this.get(`/api/v1/keys/${encodeURIComponent(name)}/history`);
    let history;
    try {
      history = await verifyKeyHistory(json, { username: name, directoryKey });
    } catch (error) {
      if (error.code === "bad_signature") await this.directoryKey(); // rotated: key changed
      throw error;
    }
    await this.checkHead(history.treeHead);
    return history;
  }

  /** Compare keys with the contact's pin, pinning on first sight. */
  #pin(keys) {
    const contacts = this.#contacts();
    const seen = {
      encFingerprint: keys.encFingerprint,
      signFingerprint: keys.signFingerprint,
      index: keys.entry.index,
    };
    const isSelf = keys.username === this.me;
    const pin = contacts[keys.username];
    if (!pin) {
      contacts[keys.username] = { ...seen, verified: false, pending: null };
      this.#saveContacts(contacts);
      return { state: "new", verified: false, isSelf, canSend: true, previous: null };
    }
    const verified = Boolean(pin.verified);
    if (
      pin.encFingerprint === seen.encFingerprint
      && pin.signFingerprint === seen.signFingerprint
    ) {
      if (pin.pending) {
        pin.pending = null; // the pinned keys are back: nothing left to accept
        this.#saveContacts(contacts);
      }
      return { state: "same", verified, isSelf, canSend: true, previous: null };
    }
    pin.pending = seen;
    this.#saveContacts(contacts);
    const previous = {
      encFingerprint: pin.encFingerprint,
      signFingerprint: pin.signFingerprint,
      index: pin.index,
      verified,
    };
    return { state: "changed", verified, isSelf, canSend: !verified, previous };
  }

  /** The contact's pin, or null. */
  contact(username) {
    return this.#contacts()[normalizeUsername(username)] ?? null;
  }

  /** Record that the safety number was compared out of band (or un-mark it). */
  markVerified(username, verified = true) {
    const contacts = this.#contacts();
    const pin = contacts[normalizeUsername(username)];
    if (!pin) throw new DirectoryError("bad_request", "fetch the contact's keys first");
    pin.verified = Boolean(verified);
    this.#saveContacts(contacts);
  }

  /** Pin the contact's new keys after the user looked at them; verification starts over. */
  acceptChange(username) {
    const contacts = this.#contacts();
    const name = normalizeUsername(username);
    const pending = contacts[name]?.pending;
    if (!pending) return;
    contacts[name] = { ...pending, verified: false, pending: null };
    this.#saveContacts(contacts);
  }

  /** What a verification panel shows: the safety number, its QR text, both fingerprints. */
  async verificationPanel(me, keys) {
    const digits = await safetyNumberFor(me, keys);
    return {
      safetyNumber: digits,
      groups: formatSafetyNumber(digits),
      qrText: digits,
      state: keys.state,
      verified: keys.verified,
      mine: await fingerprints(me.encSpki, me.signSpki),
      theirs: { encFingerprint: keys.encFingerprint, signFingerprint: keys.signFingerprint },
    };
  }
}
