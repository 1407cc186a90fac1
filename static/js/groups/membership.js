/**
 * Signed, hash-chained group membership: the byte-for-byte twin of securechat/groups/membership.py.
 *
 * Every change to a group is an entry signed by its actor's Ed25519 identity key and chained to the
 * previous entry by SHA-256 (docs/CONTRACTS.md, "Membership entry"). verifyChain() replays a chain
 * from its creation with the keys the reader verified through the key directory and returns the
 * members and admins it justifies; checkRoster() then refuses a member list from the server that
 * names anyone else (a ghost member). Only WebCrypto and crypto.js's byte helpers are used: no DOM,
 * no socket, no storage.
 */

import { concat, hex, lp } from "../crypto.js";

export { concat, lp };

const subtle = globalThis.crypto.subtle;
const encoder = new TextEncoder();
const strictDecoder = new TextDecoder("utf-8", { fatal: true });
const ED25519 = { name: "Ed25519" };

const ENTRY_LABEL = encoder.encode("securechat/v1/group-entry");
export const GROUP_ID_BYTES = 16;
export const HASH_BYTES = 32;
const FINGERPRINT_BYTES = 32;
const SIGNATURE_BYTES = 64;
export const MAX_NAME_BYTES = 256;
export const MAX_DETAIL_BYTES = 4096;
// The default of SECURECHAT_GROUP_MEMBERS_MAX (issue 13); a caller passes the server's bound.
export const GROUP_MEMBERS_MAX = 256;
// Subjects one entry may name: the decoder's bound, so SECURECHAT_GROUP_MEMBERS_MAX stays below it.
export const MAX_SUBJECTS = 1024;
const MAX_SAFE = 2 ** 53 - 1; // seq and timestamps: a JavaScript number holds them exactly

export const Action = Object.freeze({
  CREATE: 1,
  ADD: 2,
  REMOVE: 3,
  LEAVE: 4,
  RENAME: 5,
  MAKE_ADMIN: 6,
});
const ACTION_NAMES = new Map(Object.entries(Action).map(([k, v]) => [v, k.toLowerCase()]));

/**
 * A membership entry or chain is refused; code names what failed: malformed, reordered,
 * broken_link, unknown_key, old_key, bad_signature, not_admin, bad_change, ghost_member,
 * hidden_member.
 */
export class MembershipError extends Error {
  constructor(code, message, seq = null) {
    super(`${code}: ${seq === null ? "" : `entry ${seq}: `}${message}`);
    this.name = "MembershipError";
    this.code = code;
    this.seq = seq;
  }
}

// --- bytes ------------------------------------------------------------------------------------

/** Big-endian unsigned integer of `size` bytes (1, 4 or 8). */
export function uint(value, size) {
  if (!Number.isSafeInteger(value) || value < 0 || value >= 2 ** (8 * size)) {
    throw new RangeError("integer out of range");
  }
  const out = new Uint8Array(8);
  new DataView(out.buffer).setBigUint64(0, BigInt(value));
  return out.slice(8 - size);
}

/** lp(UTF-8 username), refusing an empty or too long name. */
export function lpName(username) {
  const raw = encoder.encode(username);
  if (raw.length < 1 || raw.length > MAX_NAME_BYTES) {
    throw new RangeError(`a username must be 1 to ${MAX_NAME_BYTES} bytes`);
  }
  return lp(raw);
}

/** Check a fixed-size byte field. */
export function fixed(bytes, size, what) {
  if (!(bytes instanceof Uint8Array) || bytes.length !== size) {
    throw new RangeError(`${what} must be ${size} bytes`);
  }
  return bytes;
}

function equal(a, b) {
  return a.length === b.length && a.every((x, i) => x === b[i]);
}

async function sha256(bytes) {
  return new Uint8Array(await subtle.digest("SHA-256", bytes));
}

// --- entries ----------------------------------------------------------------------------------

/** Encode an entry's body (the bytes its actor signs). */
export function entryBody(e) {
  if (!ACTION_NAMES.has(e.action)) throw new RangeError("unknown action");
  if (e.seq > MAX_SAFE || e.writtenMs > MAX_SAFE) throw new RangeError("out of range");
  const detail = e.detail ?? new Uint8Array(0);
  if (detail.length > MAX_DETAIL_BYTES) throw new RangeError("detail too long");
  const subjects = e.subjects ?? [];
  if (subjects.length > MAX_SUBJECTS) throw new RangeError("too many subjects");
  return concat(
    ENTRY_LABEL,
    fixed(e.groupId, GROUP_ID_BYTES, "groupId"),
    uint(e.seq, 8),
    fixed(e.prevHash, HASH_BYTES, "prevHash"),
    uint(e.action, 1),
    uint(e.writtenMs, 8),
    lpName(e.actor),
    fixed(e.actorFingerprint, FINGERPRINT_BYTES, "fingerprint"),
    uint(subjects.length, 4),
    ...subjects.map((s) =>
      concat(lpName(s.username), fixed(s.fingerprint, FINGERPRINT_BYTES, "fingerprint")),
    ),
    lp(detail),
  );
}

/**
 * Build and sign an entry with the actor's identity ({signKey, signSpki}, as crypto.js makes);
 * fields as entryBody takes them, without actorFingerprint. Returns the entry's wire bytes.
 */
export async function signEntry(fields, identity) {
  const actorFingerprint = await sha256(identity.signSpki);
  const body = entryBody({ ...fields, actorFingerprint });
  const sig = new Uint8Array(await subtle.sign(ED25519, identity.signKey, body));
  return concat(body, sig);
}

/** SHA-256 of an entry's wire bytes (signature included): the next entry's prevHash. */
export function entryHash(entry) {
  return sha256(entry);
}

/** A strict cursor over an entry: any short read is malformed. */
class Reader {
  constructor(data) {
    this.data = data;
    this.view = new DataView(data.buffer, data.byteOffset, data.byteLength);
    this.at = 0;
  }

  take(size) {
    if (this.at + size > this.data.length) {
      throw new MembershipError("malformed", "the entry ends early");
    }
    this.at += size;
    return this.data.slice(this.at - size, this.at);
  }

  uint(size) {
    const at = this.at;
    this.take(size);
    if (size === 1) return this.view.getUint8(at);
    if (size === 4) return this.view.getUint32(at);
    const big = this.view.getBigUint64(at);
    if (big > BigInt(MAX_SAFE)) throw new MembershipError("malformed", "integer out of range");
    return Number(big);
  }

  name() {
    const raw = this.take(this.uint(4));
    if (raw.length < 1 || raw.length > MAX_NAME_BYTES) {
      throw new MembershipError("malformed", "a username has a bad length");
    }
    try {
      return strictDecoder.decode(raw);
    } catch {
      throw new MembershipError("malformed", "a username is not UTF-8");
    }
  }
}

/** Decode an entry's wire bytes strictly; MembershipError("malformed") otherwise. */
export function decodeEntry(data) {
  const r = new Reader(data);
  if (!equal(r.take(ENTRY_LABEL.length), ENTRY_LABEL)) {
    throw new MembershipError("malformed", "not a membership entry");
  }
  const groupId = r.take(GROUP_ID_BYTES);
  const seq = r.uint(8);
  const prevHash = r.take(HASH_BYTES);
  const action = r.uint(1);
  if (!ACTION_NAMES.has(action)) throw new MembershipError("malformed", "unknown action");
  const writtenMs = r.uint(8);
  const actor = r.name();
  const actorFingerprint = r.take(FINGERPRINT_BYTES);
  const count = r.uint(4);
  if (count > MAX_SUBJECTS) throw new MembershipError("malformed", "too many subjects");
  const subjects = [];
  for (let i = 0; i < count; i++) {
    subjects.push({ username: r.name(), fingerprint: r.take(FINGERPRINT_BYTES) });
  }
  const detailLength = r.uint(4);
  if (detailLength > MAX_DETAIL_BYTES) throw new MembershipError("malformed", "detail too long");
  const detail = r.take(detailLength);
  const bodyEnd = r.at;
  const signature = r.take(SIGNATURE_BYTES);
  if (r.at !== data.length) {
    throw new MembershipError("malformed", "trailing bytes after the signature");
  }
  const body = data.slice(0, bodyEnd);
  return {
    groupId,
    seq,
    prevHash,
    action,
    writtenMs,
    actor,
    actorFingerprint,
    subjects,
    detail,
    signature,
    body,
  };
}

/**
 * Check an entry's signature under the actor's key that the caller verified: true. An entry
 * signed with one of the actor's `former` keys (hex fingerprints the reader proved in the key
 * directory's history; their public keys are gone with the reset) cannot have its signature
 * checked: false, and the caller needs a later entry under a current key to vouch for it.
 */
export async function verifyEntry(entry, keys, former = null) {
  for (const spki of keysOf(keys, entry.actor)) {
    if (equal(await sha256(spki), entry.actorFingerprint)) {
      let valid = false;
      try {
        const key = await subtle.importKey("spki", spki, ED25519, false, ["verify"]);
        valid = await subtle.verify(ED25519, key, entry.signature, entry.body);
      } catch {
        valid = false;
      }
      if (!valid) {
        throw new MembershipError(
          "bad_signature",
          `${entry.actor}'s signature does not verify`,
          entry.seq,
        );
      }
      return true;
    }
  }
  if (former !== null && new Set(keysOf(former, entry.actor)).has(hex(entry.actorFingerprint))) {
    return false;
  }
  throw new MembershipError(
    "unknown_key",
    `signed by a key of ${entry.actor} the reader has not verified`,
    entry.seq,
  );
}

/** keys: a Map or plain object, username -> verified SPKIs (or, for former, hex fingerprints). */
function keysOf(keys, username) {
  const found =
    keys instanceof Map
      ? keys.get(username)
      : Object.hasOwn(keys, username)
        ? keys[username]
        : undefined;
  return found ?? [];
}

// --- the replay -------------------------------------------------------------------------------

/** Apply one verified entry to {members: Map, admins: Set, name}, checking the actor's rights. */
function apply(state, e, maxMembers) {
  const names = e.subjects.map((s) => s.username);
  const fail = (code, message) => new MembershipError(code, message, e.seq);
  if (new Set(names).size !== names.length) throw fail("bad_change", "a subject is named twice");
  const need = (members) => {
    if (names.length === 0) throw fail("bad_change", "the entry names nobody");
    const wrong = names.filter((n) => state.members.has(n) !== members);
    if (wrong.length) {
      throw fail(
        "bad_change",
        `${wrong.join(", ")}: ${members ? "not a member" : "already a member"}`,
      );
    }
  };
  if (e.action === Action.CREATE) {
    if (e.seq !== 0) throw fail("bad_change", "only the first entry creates");
    if (names.includes(e.actor)) throw fail("bad_change", "the creator is not a subject");
    state.members = new Map([
      [e.actor, e.actorFingerprint],
      ...e.subjects.map((s) => [s.username, s.fingerprint]),
    ]);
    state.admins = new Set([e.actor]);
    state.name = e.detail;
  } else if (e.action === Action.LEAVE) {
    if (names.length || !state.members.has(e.actor))
      throw fail("bad_change", `${e.actor} cannot leave`);
    state.members.delete(e.actor);
    state.admins.delete(e.actor);
    if (state.members.size && !state.admins.size)
      throw fail("bad_change", "the last admin cannot leave");
  } else {
    if (!state.admins.has(e.actor)) {
      throw fail("not_admin", `${e.actor} is not an admin here (${ACTION_NAMES.get(e.action)})`);
    }
    if (e.action === Action.ADD) {
      need(false);
      for (const s of e.subjects) state.members.set(s.username, s.fingerprint);
    } else if (e.action === Action.REMOVE) {
      need(true);
      if (names.includes(e.actor)) throw fail("bad_change", "an admin leaves rather than removes");
      for (const n of names) {
        state.members.delete(n);
        state.admins.delete(n);
      }
    } else if (e.action === Action.RENAME) {
      if (names.length) throw fail("bad_change", "a rename names nobody");
      state.name = e.detail;
    } else {
      need(true);
      if (names.some((n) => state.admins.has(n))) throw fail("bad_change", "already an admin");
      for (const n of names) state.admins.add(n);
    }
  }
  if (state.members.size > maxMembers) throw fail("bad_change", `more than ${maxMembers} members`);
}

/**
 * Verify a whole chain (wire bytes, seq 0 first) and return what it justifies:
 * {groupId, head, seq, members: Map username -> fingerprint, admins: Set, name}.
 * keys maps each username to the Ed25519 SPKIs the reader verified for them (their current keys).
 * former maps a username to the hex fingerprints of their earlier sign keys, proved in the key
 * directory's history (docs/CONTRACTS.md "Groups", step 2): an entry signed with one is accepted
 * only if a later entry is signed with its actor's current key (old_key otherwise), since that
 * entry's signer verified the whole prefix the hash links fix, and an old, maybe compromised key
 * must not append anything new. The first `verified` entries are ones this reader verified
 * before (the caller checks the chain served extends them): their rules are replayed, their
 * signatures not checked again. Throws MembershipError. The twin of membership.py's verify_chain.
 */
export async function verifyChain(
  entries,
  keys,
  { maxMembers = GROUP_MEMBERS_MAX, former = null, verified = 0 } = {},
) {
  if (!entries.length) throw new MembershipError("malformed", "an empty chain");
  const state = { members: new Map(), admins: new Set(), name: new Uint8Array(0) };
  let prev = new Uint8Array(HASH_BYTES);
  let groupId = null;
  let lastCurrent = -1;
  let lastFormer = -1;
  for (const [position, data] of entries.entries()) {
    const e = decodeEntry(data);
    groupId ??= e.groupId;
    if (e.seq !== position || !equal(e.groupId, groupId)) {
      throw new MembershipError("reordered", `found at position ${position}`, e.seq);
    }
    if ((position === 0) !== (e.action === Action.CREATE)) {
      throw new MembershipError("bad_change", "a chain starts with its one create", e.seq);
    }
    if (!equal(e.prevHash, prev)) {
      throw new MembershipError("broken_link", "prev_hash is not the previous entry's", e.seq);
    }
    if (position >= verified) {
      if (await verifyEntry(e, keys, former)) lastCurrent = position;
      else lastFormer = position;
    }
    if (!state.members.has(e.actor) && e.action !== Action.CREATE) {
      throw new MembershipError("not_admin", `${e.actor} is not a member here`, e.seq);
    }
    apply(state, e, maxMembers);
    prev = await entryHash(data);
  }
  if (lastFormer > lastCurrent) {
    const e = decodeEntry(entries[lastFormer]);
    throw new MembershipError(
      "old_key",
      `signed with a former key of ${e.actor}, and no later entry under a current key vouches for it`,
      e.seq,
    );
  }
  return { groupId, head: prev, seq: entries.length - 1, ...state };
}

/** Refuse a member list (the server's) that differs from the verified chain's. */
export function checkRoster(state, listed) {
  const names = new Set(listed);
  const ghosts = [...names].filter((n) => !state.members.has(n)).sort();
  if (ghosts.length) {
    throw new MembershipError(
      "ghost_member",
      `not justified by the signed membership: ${ghosts.join(", ")}`,
    );
  }
  const hidden = [...state.members.keys()].filter((n) => !names.has(n)).sort();
  if (hidden.length)
    throw new MembershipError("hidden_member", `members left out: ${hidden.join(", ")}`);
}
