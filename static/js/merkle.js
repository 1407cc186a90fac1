// Key transparency checks for the browser: RFC 9162 (Certificate Transparency 2.0)
// Merkle proofs and the directory's signed tree head.  The twin of securechat/merkle.py
// and securechat/transparency.py; the byte formats must stay identical.
//
// Pure: no DOM, no network.  Verifiers resolve to false, never throw, on hostile
// input.  Hashes are Uint8Array(32); sizes and indices are safe integers or BigInts
// (the proof algorithms shift 64-bit values, so they run on BigInt).

import { b64decode } from "./crypto.js";

const HASH_SIZE = 32;
const SIGNATURE_SIZE = 64; // Ed25519, RFC 8032 section 5.1.6
const U64_MAX = (1n << 64n) - 1n;
const STH_KEYS = ["root_hash", "signature", "timestamp", "tree_size"];

const encoder = new TextEncoder();
const ENTRY_LABEL = encoder.encode("securechat/v1/key-entry\0");
const USERNAME_LABEL = encoder.encode("securechat/v1/username\0");
const TREE_HEAD_LABEL = encoder.encode("securechat/v1/tree-head\0");

/** Return the concatenation of byte arrays. */
function concat(...parts) {
  const out = new Uint8Array(parts.reduce((n, p) => n + p.length, 0));
  let offset = 0;
  for (const p of parts) {
    out.set(p, offset);
    offset += p.length;
  }
  return out;
}

/** Return SHA-256 of bytes (WebCrypto digest is async). */
export async function sha256(bytes) {
  return new Uint8Array(await crypto.subtle.digest("SHA-256", bytes));
}

/** Tell whether two byte arrays are equal (public data: no need for constant time). */
export function equalBytes(a, b) {
  return a.length === b.length && a.every((x, i) => x === b[i]);
}

/** Tell whether value is a 32-byte hash. */
function isHash(value) {
  return value instanceof Uint8Array && value.length === HASH_SIZE;
}

/** Return value as a BigInt uint64, or null if it is not one. */
function toU64(value) {
  let big;
  if (typeof value === "bigint") big = value;
  else if (Number.isSafeInteger(value)) big = BigInt(value);
  else return null;
  return big >= 0n && big <= U64_MAX ? big : null;
}

/** Encode value as a uint64, big-endian; throw RangeError if it is not one. */
function u64(value, name) {
  const big = toU64(value);
  if (big === null) throw new RangeError(`${name} must be an integer in [0, 2**64)`);
  const out = new Uint8Array(8);
  new DataView(out.buffer).setBigUint64(0, big, false);
  return out;
}

/** Return value after checking it is a 32-byte hash; throw TypeError otherwise. */
function hash32(value, name) {
  if (!isHash(value)) throw new TypeError(`${name} must be a Uint8Array of 32 bytes`);
  return value;
}

/** Return the leaf hash SHA-256(0x00 || data) (RFC 9162 section 2.1.1). */
export async function leafHash(data) {
  return sha256(concat(Uint8Array.of(0), data));
}

/** Return the interior node hash SHA-256(0x01 || left || right) (RFC 9162 section 2.1.1). */
export async function nodeHash(left, right) {
  return sha256(concat(Uint8Array.of(1), left, right));
}

/** Check an inclusion proof with the algorithm of RFC 9162 section 2.1.3.2. */
export async function verifyInclusion(leaf, index, size, proof, root) {
  const fn0 = toU64(index);
  const size0 = toU64(size);
  if (!isHash(leaf) || !isHash(root) || !Array.isArray(proof)) return false;
  // Step 1: the index must lie inside the tree.
  if (fn0 === null || size0 === null || fn0 >= size0) return false;
  // Steps 2 and 3.
  let fn = fn0;
  let sn = size0 - 1n;
  let r = leaf;
  // Step 4.
  for (const p of proof) {
    if (sn === 0n || !isHash(p)) return false; // 4a: the proof is too long.
    if ((fn & 1n) === 1n || fn === sn) {
      r = await nodeHash(p, r); // 4b.i
      // 4b.ii: climb past the levels where this subtree is a lone right edge.
      while (fn !== 0n && (fn & 1n) === 0n) {
        fn >>= 1n;
        sn >>= 1n;
      }
    } else {
      r = await nodeHash(r, p);
    }
    fn >>= 1n; // 4c
    sn >>= 1n;
  }
  // Step 5: sn === 0 also rejects a proof that is too short.
  return sn === 0n && equalBytes(r, root);
}

/**
 * Check a consistency proof with the algorithm of RFC 9162 section 2.1.4.2.
 * Sizes 0 and equal sizes, which the RFC leaves out, take an empty proof: the empty
 * tree (root SHA-256("")) is consistent with every tree, and a tree only with itself.
 */
export async function verifyConsistency(oldSize, newSize, oldRoot, newRoot, proof) {
  const first = toU64(oldSize);
  const second = toU64(newSize);
  if (!isHash(oldRoot) || !isHash(newRoot) || !Array.isArray(proof)) return false;
  if (first === null || second === null || first > second) return false;
  if (first === 0n) {
    return proof.length === 0 && equalBytes(oldRoot, await sha256(new Uint8Array(0)));
  }
  if (first === second) return proof.length === 0 && equalBytes(oldRoot, newRoot);
  return verifyConsistencyPath(first, second, oldRoot, newRoot, proof);
}

/** Run steps 1 to 7 of RFC 9162 section 2.1.4.2 for 0 < first < second (BigInts). */
async function verifyConsistencyPath(first, second, firstHash, secondHash, proof) {
  if (proof.length === 0) return false; // Step 1.
  // Step 2: first is a power of two.
  const path = (first & (first - 1n)) === 0n ? [firstHash, ...proof] : proof;
  let fn = first - 1n; // Step 3.
  let sn = second - 1n;
  while ((fn & 1n) === 1n) {
    // Step 4.
    fn >>= 1n;
    sn >>= 1n;
  }
  if (!isHash(path[0])) return false;
  let fr = path[0]; // Step 5.
  let sr = path[0];
  for (const c of path.slice(1)) {
    // Step 6.
    if (sn === 0n || !isHash(c)) return false; // 6a: the proof is too long.
    if ((fn & 1n) === 1n || fn === sn) {
      fr = await nodeHash(c, fr); // 6b.i
      sr = await nodeHash(c, sr);
      while (fn !== 0n && (fn & 1n) === 0n) {
        // 6b.ii
        fn >>= 1n;
        sn >>= 1n;
      }
    } else {
      sr = await nodeHash(sr, c);
    }
    fn >>= 1n; // 6c
    sn >>= 1n;
  }
  // Step 7.
  return equalBytes(fr, firstHash) && equalBytes(sr, secondHash) && sn === 0n;
}

/** Return SHA-256(label || UTF-8(username)), the name under which the log lists a user. */
export async function userHash(username) {
  return sha256(concat(USERNAME_LABEL, encoder.encode(username)));
}

/**
 * Return the leaf bytes of a log entry: label || u64(index) || u64(timestampMs)
 * || userHash(32) || encFingerprint(32) || signFingerprint(32).  Throws on bad input.
 */
export function entryLeafBytes(index, timestampMs, userHashBytes, encFingerprint, signFingerprint) {
  return concat(
    ENTRY_LABEL,
    u64(index, "index"),
    u64(timestampMs, "timestampMs"),
    hash32(userHashBytes, "userHash"),
    hash32(encFingerprint, "encFingerprint"),
    hash32(signFingerprint, "signFingerprint"),
  );
}

/** Return the signed bytes of a tree head: label || u64(size) || u64(ms) || root(32). */
export function treeHeadBytes(treeSize, timestampMs, rootHash) {
  return concat(
    TREE_HEAD_LABEL,
    u64(treeSize, "treeSize"),
    u64(timestampMs, "timestampMs"),
    hash32(rootHash, "rootHash"),
  );
}

/** Decode canonical padded base64 of exactly `size` bytes; throw TypeError otherwise. */
function bytesField(value, size, name) {
  const bytes = b64decode(value); // canonical standard base64 only, as in Python
  if (bytes.length !== size) throw new TypeError(`${name} must be the base64 of ${size} bytes`);
  return bytes;
}

/** Return an I-JSON integer (RFC 7493 section 2.2) in [0, 2**53); throw TypeError otherwise. */
function jsonInt(value, name) {
  if (!Number.isSafeInteger(value) || value < 0) {
    throw new TypeError(`${name} must be an integer in [0, 2**53)`);
  }
  return value;
}

/**
 * Parse a tree head's JSON form (as from response.json()) strictly, like
 * SignedTreeHead.from_json: exact keys, types and lengths.  Returns
 * {treeSize, timestamp, rootHash, signature}; throws TypeError on bad input.
 */
export function parseTreeHead(sthJson) {
  if (sthJson === null || typeof sthJson !== "object" || Array.isArray(sthJson)) {
    throw new TypeError("a tree head is a JSON object");
  }
  const keys = Object.keys(sthJson).sort();
  if (keys.length !== STH_KEYS.length || keys.some((k, i) => k !== STH_KEYS[i])) {
    throw new TypeError(`a tree head has exactly the keys ${STH_KEYS.join(", ")}`);
  }
  return {
    treeSize: jsonInt(sthJson.tree_size, "tree_size"),
    timestamp: jsonInt(sthJson.timestamp, "timestamp"),
    rootHash: bytesField(sthJson.root_hash, HASH_SIZE, "root_hash"),
    signature: bytesField(sthJson.signature, SIGNATURE_SIZE, "signature"),
  };
}

/**
 * Tell whether a tree head's JSON form carries a valid Ed25519 signature by the
 * directory key in spkiBytes (SPKI DER).  Resolves to false, never rejects, on any
 * malformed key or tree head.
 */
export async function verifyTreeHead(spkiBytes, sthJson) {
  try {
    const sth = parseTreeHead(sthJson);
    const key = await crypto.subtle.importKey("spki", spkiBytes, { name: "Ed25519" }, false, [
      "verify",
    ]);
    const message = treeHeadBytes(sth.treeSize, sth.timestamp, sth.rootHash);
    return await crypto.subtle.verify({ name: "Ed25519" }, key, sth.signature, message);
  } catch {
    return false;
  }
}
