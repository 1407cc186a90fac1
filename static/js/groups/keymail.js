/**
 * Key distributions inside pairwise envelopes (docs/protocol.md, "group_keys"): the same crypto
 * as a pair message (crypto.js), id = the group_keys frame's id, to = the recipient, and the
 * plaintext {"text": "", "ts", "group_keys": b64(distribution), "name_keys": {index: b64(key)}}.
 * The pairwise envelope is what authenticates a distribution: the reader checks that its
 * verified sender is the distribution's sender. crypto.js's openMessage keeps only a message's
 * own fields, so the envelope is opened here with its exported layouts.
 */

import {
  b64decode,
  b64encode,
  EnvelopeError,
  encryptMessage,
  envelopeAad,
  envelopeSignedBytes,
} from "../crypto.js";
import { decodeDistribution, encodeDistribution } from "./senderkeys.js";

const subtle = globalThis.crypto.subtle;
const strictDecoder = new TextDecoder("utf-8", { fatal: true });
const RSA_OAEP = { name: "RSA-OAEP", hash: "SHA-256" };
const ED25519 = { name: "Ed25519" };
const ENVELOPE_KEYS = ["ct", "iv", "rk", "sig", "sk", "v"];
const NAME_KEY_BYTES = 32;

/** The envelope for recipient carrying my distribution (senderkeys.js shape) and name keys. */
export function sealKeys({
  id,
  me,
  recipient,
  identity,
  recipientEncSpki,
  distribution,
  nameKeys,
}) {
  const names = Object.fromEntries(
    Object.entries(nameKeys ?? {}).map(([index, key]) => [index, b64encode(key)]),
  );
  return encryptMessage({
    messageId: id,
    sender: me,
    recipient,
    text: "",
    writtenMs: Date.now(),
    senderIdentity: identity,
    recipientEncSpki,
    extra: { group_keys: b64encode(encodeDistribution(distribution)), name_keys: names },
  });
}

async function verified(envelope, id, sender, me, senderSignSpki) {
  const keys = envelope && typeof envelope === "object" ? Object.keys(envelope).sort() : [];
  if (keys.join() !== ENVELOPE_KEYS.join() || envelope.v !== 1) {
    throw new EnvelopeError("unverifiable", "the envelope does not have the expected fields");
  }
  let fields;
  let valid = false;
  try {
    fields = Object.fromEntries(
      ["iv", "ct", "rk", "sk", "sig"].map((k) => [k, b64decode(envelope[k])]),
    );
    const signed = envelopeSignedBytes(id, sender, me, fields.iv, fields.ct, fields.rk, fields.sk);
    const key = await subtle.importKey("spki", senderSignSpki, ED25519, false, ["verify"]);
    valid = await subtle.verify(ED25519, key, fields.sig, signed);
  } catch {
    valid = false;
  }
  if (!valid) throw new EnvelopeError("unverifiable", "the sender's signature does not verify");
  return fields;
}

/**
 * Open a group_keys envelope sent to me (verified against the sender's directory-checked
 * Ed25519 key first); or, with to (the recipient the server names), my own copy of one my
 * other device sent, which my keys open through its sk. Returns {distribution, nameKeys:
 * {index: Uint8Array}}; throws EnvelopeError, or TypeError for a distribution that is not the
 * sender's.
 */
export async function openKeys(envelope, { id, sender, me, to = null, identity, senderSignSpki }) {
  const recipient = to ?? me;
  const fields = await verified(envelope, id, sender, recipient, senderSignSpki);
  let body;
  try {
    const wrapped = to === null ? fields.rk : fields.sk;
    const raw = new Uint8Array(await subtle.decrypt(RSA_OAEP, identity.encKey, wrapped));
    const key = await subtle.importKey("raw", raw, "AES-GCM", false, ["decrypt"]);
    const additionalData = envelopeAad(id, sender, recipient);
    const params = { name: "AES-GCM", iv: fields.iv, additionalData };
    body = JSON.parse(strictDecoder.decode(await subtle.decrypt(params, key, fields.ct)));
  } catch {
    throw new EnvelopeError("undecryptable", "the key distribution does not decrypt");
  }
  const distribution = decodeDistribution(b64decode(body?.group_keys));
  if (distribution.sender !== sender) throw new TypeError("a distribution of someone else's chain");
  const nameKeys = {};
  for (const [index, value] of Object.entries(body.name_keys ?? {})) {
    const key = b64decode(value);
    if (/^\d{1,15}$/.test(index) && key.length === NAME_KEY_BYTES) nameKeys[index] = key;
  }
  return { distribution, nameKeys };
}
