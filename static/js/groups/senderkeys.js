/**
 * Sender keys: the byte-for-byte twin of securechat/groups/senderkeys.py.
 *
 * Each device of a member has one ratcheting chain per group, named by a random chain id every
 * message carries (docs/CONTRACTS.md, "Sender chain"): a message is encrypted once with
 * AES-256-GCM under a key derived from the chain by HKDF-SHA256, the chain is ratcheted forward
 * (a leaked current chain key does not open earlier messages), and the message is signed with the
 * sender's Ed25519 identity key. Chains reach the other members as distribution
 * messages inside the pairwise envelopes of crypto.js. Only WebCrypto: no DOM, socket or storage.
 */

import { b64decode, b64encode } from "../crypto.js";
import {
  concat,
  fixed,
  GROUP_ID_BYTES,
  HASH_BYTES,
  lp,
  lpName,
  MAX_NAME_BYTES,
  uint,
} from "./membership.js";

const subtle = globalThis.crypto.subtle;
const encoder = new TextEncoder();
const strictDecoder = new TextDecoder("utf-8", { fatal: true });
const ED25519 = { name: "Ed25519" };

export const VERSION = 1;
const CHAIN_KEY_BYTES = 32;
const CHAIN_ID_BYTES = 16;
const IV_BYTES = 12; // NIST SP 800-38D 8.2
const TAG_BYTES = 16;
const SIGNATURE_BYTES = 64;
const MESSAGE_KEY_INFO = encoder.encode("securechat/v1/group-message-key");
const CHAIN_KEY_INFO = encoder.encode("securechat/v1/group-chain-key");
const AAD_LABEL = encoder.encode("securechat/v1/group-aad");
const SIG_LABEL = encoder.encode("securechat/v1/group-sig");
const DISTRIBUTION_LABEL = encoder.encode("securechat/v1/group-keys");
export const MAX_ITERATION = 2 ** 32 - 1;
// How far ahead a receiver derives in one step, and how many skipped message keys it keeps:
// Signal's sender keys use 2000 for both.
export const MAX_SKIP = 2000;
export const MAX_SKIPPED_KEYS = 2000;
const WIRE_KEYS = ["cid", "ct", "it", "iv", "sig", "v"];

/** A group message that cannot be opened; code is "unverifiable" or "undecryptable". */
export class GroupMessageError extends Error {
  constructor(code, message) {
    super(message);
    this.name = "GroupMessageError";
    this.code = code;
  }
}

/** HKDF-SHA256 (RFC 5869), no salt, 32 bytes. */
async function hkdf(chainKey, info) {
  const key = await subtle.importKey("raw", chainKey, "HKDF", false, ["deriveBits"]);
  const params = { name: "HKDF", hash: "SHA-256", salt: new Uint8Array(0), info };
  return new Uint8Array(await subtle.deriveBits(params, key, 256));
}

/** The AES-256-GCM key of the message at this chain key's iteration (raw bytes). */
export function messageKey(chainKey) {
  return hkdf(chainKey, MESSAGE_KEY_INFO);
}

/** The chain key of the next iteration (one-way). */
export function nextChainKey(chainKey) {
  return hkdf(chainKey, CHAIN_KEY_INFO);
}

/** The sender's own chain: its id, and the key and iteration of its next message. */
export class SenderChain {
  constructor(chainId, chainKey, iteration = 0) {
    this.chainId = fixed(chainId, CHAIN_ID_BYTES, "chainId");
    this.chainKey = fixed(chainKey, CHAIN_KEY_BYTES, "chainKey");
    this.iteration = iteration;
  }

  /** A new chain, with a new id (at creation, and after every removal or leave). */
  static fresh() {
    return new SenderChain(
      crypto.getRandomValues(new Uint8Array(CHAIN_ID_BYTES)),
      crypto.getRandomValues(new Uint8Array(CHAIN_KEY_BYTES)),
    );
  }

  /** The next [iteration, message key]; the chain moves past it for good. */
  async step() {
    if (this.iteration > MAX_ITERATION) throw new RangeError("this chain is used up");
    const out = [this.iteration, await messageKey(this.chainKey)];
    this.chainKey = await nextChainKey(this.chainKey);
    this.iteration += 1;
    return out;
  }

  /** What the other members need to read this chain from its next message on. */
  distribution(groupId, head, sender) {
    return {
      groupId,
      head,
      sender,
      chainId: this.chainId.slice(),
      iteration: this.iteration,
      chainKey: this.chainKey.slice(),
    };
  }
}

/** One sender's chain as a reader holds it, with the keys of skipped iterations. */
export class ReceiverChain {
  #queue = Promise.resolve();

  constructor(chainKey, iteration = 0) {
    this.chainKey = fixed(chainKey, CHAIN_KEY_BYTES, "chainKey");
    this.iteration = iteration;
    this.skipped = new Map(); // iteration -> message key, oldest first
  }

  /** The chain a distribution message hands over. */
  static fromDistribution(distribution) {
    return new ReceiverChain(distribution.chainKey.slice(), distribution.iteration);
  }

  /** Run attempt(messageKey) for iteration; only if it resolves is the new state kept. */
  take(iteration, attempt) {
    // One at a time per chain: two messages opened at once must not both move it.
    const run = this.#queue.then(() => this.#take(iteration, attempt));
    this.#queue = run.catch(() => {});
    return run;
  }

  async #take(iteration, attempt) {
    if (iteration < this.iteration) {
      const key = this.skipped.get(iteration);
      if (key === undefined) throw undecryptable("this message key was used or dropped");
      const result = await attempt(key);
      this.skipped.delete(iteration);
      return result;
    }
    if (iteration - this.iteration > MAX_SKIP) {
      throw undecryptable(`more than ${MAX_SKIP} messages ahead`);
    }
    let chain = this.chainKey;
    const skipped = [];
    for (let i = this.iteration; i < iteration; i++) {
      skipped.push([i, await messageKey(chain)]);
      chain = await nextChainKey(chain);
    }
    const result = await attempt(await messageKey(chain));
    for (const [i, key] of skipped) this.skipped.set(i, key);
    while (this.skipped.size > MAX_SKIPPED_KEYS) {
      this.skipped.delete(this.skipped.keys().next().value);
    }
    this.chainKey = await nextChainKey(chain);
    this.iteration = iteration + 1;
    return result;
  }
}

function undecryptable(message) {
  return new GroupMessageError("undecryptable", message);
}

function ids(groupId, head) {
  return concat(fixed(groupId, GROUP_ID_BYTES, "groupId"), fixed(head, HASH_BYTES, "head"));
}

/** AES-GCM associated data: group, membership head, sender, chain, iteration and message id. */
export function groupAad(groupId, head, sender, chainId, iteration, messageId) {
  return concat(
    AAD_LABEL,
    ids(groupId, head),
    lp(encoder.encode(sender)),
    fixed(chainId, CHAIN_ID_BYTES, "chainId"),
    uint(iteration, 4),
    lp(encoder.encode(messageId)),
  );
}

/** The bytes the sender's Ed25519 identity key signs. */
export function groupSignedBytes(groupId, head, messageId, sender, chainId, iteration, iv, ct) {
  return concat(
    SIG_LABEL,
    ids(groupId, head),
    lp(encoder.encode(messageId)),
    lp(encoder.encode(sender)),
    fixed(chainId, CHAIN_ID_BYTES, "chainId"),
    uint(iteration, 4),
    lp(iv),
    lp(ct),
  );
}

/**
 * Encrypt plaintext (bytes) once for the whole group under the chain's next key, ratchet and
 * sign with identity ({signKey}, as crypto.js makes). Returns the wire object.
 */
export async function encryptGroupMessage({
  chain,
  groupId,
  head,
  sender,
  messageId,
  plaintext,
  identity,
  _iv,
}) {
  const [iteration, rawKey] = await chain.step();
  const iv = _iv ?? crypto.getRandomValues(new Uint8Array(IV_BYTES));
  const key = await subtle.importKey("raw", rawKey, "AES-GCM", false, ["encrypt"]);
  const { chainId } = chain;
  const additionalData = groupAad(groupId, head, sender, chainId, iteration, messageId);
  const ct = new Uint8Array(
    await subtle.encrypt({ name: "AES-GCM", iv, additionalData }, key, plaintext),
  );
  const signed = groupSignedBytes(groupId, head, messageId, sender, chainId, iteration, iv, ct);
  const sig = new Uint8Array(await subtle.sign(ED25519, identity.signKey, signed));
  return {
    v: VERSION,
    cid: b64encode(chainId),
    it: iteration,
    iv: b64encode(iv),
    ct: b64encode(ct),
    sig: b64encode(sig),
  };
}

/** Parse the wire object and check its signature; anything wrong is unverifiable. */
async function verifyWire(wire, groupId, head, sender, messageId, senderSignSpki) {
  let valid = false;
  let fields = null;
  try {
    const keys = Object.keys(wire ?? {}).sort();
    if (keys.join() !== WIRE_KEYS.join() || wire.v !== VERSION) throw new TypeError("bad wire");
    if (!Number.isInteger(wire.it)) throw new TypeError("bad iteration");
    const [chainId, iv, ct, sig] = [wire.cid, wire.iv, wire.ct, wire.sig].map(b64decode);
    if (iv.length !== IV_BYTES || ct.length < TAG_BYTES || sig.length !== SIGNATURE_BYTES) {
      throw new TypeError("bad field length");
    }
    const signed = groupSignedBytes(groupId, head, messageId, sender, chainId, wire.it, iv, ct);
    const key = await subtle.importKey("spki", senderSignSpki, ED25519, false, ["verify"]);
    valid = await subtle.verify(ED25519, key, sig, signed);
    fields = { chainId, iteration: wire.it, iv, ct };
  } catch {
    valid = false;
  }
  if (!valid) {
    throw new GroupMessageError("unverifiable", "the sender's signature does not verify");
  }
  return fields;
}

/**
 * The chain id a wire object names (base64, as a key to pick the reader's chain by), or null.
 * Not verified: the signature, checked when the message is opened, covers it.
 */
export function wireChainId(wire) {
  try {
    return b64decode(wire?.cid).length === CHAIN_ID_BYTES ? wire.cid : null;
  } catch {
    return null;
  }
}

/**
 * Verify the sender's signature, then decrypt with the chain's key for its iteration; chain is
 * the one the message names (wireChainId), which the caller picks.
 */
export async function openGroupMessage(
  wire,
  { chain, groupId, head, sender, messageId, senderSignSpki },
) {
  const { chainId, iteration, iv, ct } = await verifyWire(
    wire,
    groupId,
    head,
    sender,
    messageId,
    senderSignSpki,
  );
  const additionalData = groupAad(groupId, head, sender, chainId, iteration, messageId);
  return chain.take(iteration, async (rawKey) => {
    const key = await subtle.importKey("raw", rawKey, "AES-GCM", false, ["decrypt"]);
    try {
      return new Uint8Array(await subtle.decrypt({ name: "AES-GCM", iv, additionalData }, key, ct));
    } catch {
      throw undecryptable("the message does not decrypt");
    }
  });
}

/** The distribution message's bytes: {groupId, head, sender, chainId, iteration, chainKey}. */
export function encodeDistribution(d) {
  return concat(
    DISTRIBUTION_LABEL,
    ids(d.groupId, d.head),
    lpName(d.sender),
    fixed(d.chainId, CHAIN_ID_BYTES, "chainId"),
    uint(d.iteration, 4),
    fixed(d.chainKey, CHAIN_KEY_BYTES, "chainKey"),
  );
}

/** Decode a distribution strictly; TypeError on any deviation. */
export function decodeDistribution(data) {
  const fixedEnd = DISTRIBUTION_LABEL.length + GROUP_ID_BYTES + HASH_BYTES;
  const label = data.subarray(0, DISTRIBUTION_LABEL.length);
  if (data.length < fixedEnd + 4 || !label.every((b, i) => b === DISTRIBUTION_LABEL[i])) {
    throw new TypeError("not a sender-key distribution");
  }
  const view = new DataView(data.buffer, data.byteOffset, data.byteLength);
  const size = view.getUint32(fixedEnd);
  const rest = data.slice(fixedEnd + 4);
  const tail = CHAIN_ID_BYTES + 4 + CHAIN_KEY_BYTES;
  if (size < 1 || size > MAX_NAME_BYTES || rest.length !== size + tail) {
    throw new TypeError("a sender-key distribution has a bad length");
  }
  return {
    groupId: data.slice(DISTRIBUTION_LABEL.length, DISTRIBUTION_LABEL.length + GROUP_ID_BYTES),
    head: data.slice(fixedEnd - HASH_BYTES, fixedEnd),
    sender: strictDecoder.decode(rest.subarray(0, size)),
    chainId: rest.slice(size, size + CHAIN_ID_BYTES),
    iteration: view.getUint32(fixedEnd + 4 + size + CHAIN_ID_BYTES),
    chainKey: rest.slice(size + CHAIN_ID_BYTES + 4),
  };
}
