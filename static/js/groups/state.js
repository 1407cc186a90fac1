/**
 * What the page keeps of one group, and what it makes of it. The kept part (a plain,
 * JSON-able record, sealed by vault.js before it reaches IndexedDB): the chain's entries, the
 * name keys received, the sign keys verified for each actor, my sender chain and whom I handed
 * it to, the receiver chains of the others, and my messages not yet acknowledged.
 *
 * The verified view is never kept: it is made again from the entries with verifyChain and the
 * keys verified through the key directory, so nothing the server says is taken on its word.
 * No DOM, no socket.
 */

import { b64decode, b64encode, hex } from "../crypto.js";
import { Action, decodeEntry, entryHash, verifyChain } from "./membership.js";
import { openName } from "./names.js";
import { ReceiverChain, SenderChain } from "./senderkeys.js";

// A receiver keeps at most this many chains per sender (each device of theirs draws one; the
// oldest heads' are dropped first).
const DISTRIBUTIONS_KEPT = 8;

export const hexOf = hex;
export const bytesOfHex = (hex) => Uint8Array.from(hex.match(/../g) ?? [], (b) => parseInt(b, 16));
export const GROUP_HEX = /^[0-9a-f]{32}$/;

/** A new kept record for group (hex). */
export function newRecord(group) {
  return {
    group,
    entries: [],
    nameKeys: {},
    signKeys: {},
    removed: false,
    mine: null,
    receivers: {},
    pending: [],
    lastSeq: 0,
    // "new" until the verified chain says who added me: "joined", or "invited" (by invitedBy,
    // not my contact) until I join or leave ("declined"). A record kept before has none: joined.
    admission: "new",
    invitedBy: null,
  };
}

/** The thread's key in the message store: a group's records share it, apart from any peer's. */
export const threadOf = (group) => `group:${group}`;

/** Names of those the entry names, in words. */
function listed(names) {
  if (names.length <= 1) return names.join("");
  return `${names.slice(0, -1).join(", ")} and ${names.at(-1)}`;
}

/** The entry at index in plain words, for the thread ("alice added carol"). */
export function describeEntry(e, me) {
  const who = (name) => (name === me ? "you" : name);
  const actor = e.actor === me ? "You" : e.actor;
  const subjects = listed(e.subjects.map((s) => who(s.username)));
  switch (e.action) {
    case Action.CREATE:
      return `${actor} created the group${subjects ? ` with ${subjects}` : ""}`;
    case Action.ADD:
      return `${actor} added ${subjects}`;
    case Action.REMOVE:
      return e.subjects.length === 1 && e.subjects[0].username !== me
        ? `${subjects} was removed by ${who(e.actor)}`
        : `${actor} removed ${subjects}`;
    case Action.LEAVE:
      return `${actor} left the group`;
    case Action.RENAME:
      return `${actor} renamed the group`;
    default:
      return `${actor} made ${subjects} ${e.subjects.length > 1 ? "admins" : "an admin"}`;
  }
}

/** Who is a member after each entry (names only: the chain was verified as a whole). */
function rosters(decoded) {
  const out = [];
  let members = new Set();
  for (const e of decoded) {
    members = new Set(members);
    const names = e.subjects.map((s) => s.username);
    if (e.action === Action.CREATE) members = new Set([e.actor, ...names]);
    else if (e.action === Action.ADD) for (const n of names) members.add(n);
    else if (e.action === Action.REMOVE) for (const n of names) members.delete(n);
    else if (e.action === Action.LEAVE) members.delete(e.actor);
    out.push(members);
  }
  return out;
}

/**
 * Verify record's chain; its first `verified` entries were verified here before, and the keys
 * to check the others with are signerKeys(those entries decoded): {keys, former}, each actor's
 * current sign key fetched afresh from the directory and, for an actor an entry names by another
 * key, the fingerprints of earlier keys the directory's history proves (membership.js
 * verifyChain; never a key kept from before, which a reset may have replaced).
 * Returns the view: {groupId, head, headB64, index, members, admins, heads, decoded, rosters}.
 * Throws MembershipError.
 */
export async function verifyRecord(record, signerKeys, verified = 0) {
  const raw = record.entries.map(b64decode);
  const decoded = raw.map(decodeEntry);
  const { keys, former } = await signerKeys(decoded.slice(verified));
  const state = await verifyChain(raw, keys, { former, verified });
  const heads = new Map();
  for (const [index, entry] of raw.entries()) heads.set(b64encode(await entryHash(entry)), index);
  return {
    ...state,
    headB64: b64encode(state.head),
    index: state.seq,
    heads,
    decoded,
    rosters: rosters(decoded),
  };
}

/** The group's name, if a name key for its current name entry has come; else null. */
export async function nameOf(record, view) {
  const index = view.decoded.findLastIndex(
    (e) => e.action === Action.CREATE || e.action === Action.RENAME,
  );
  const key = record.nameKeys[index];
  if (index < 0 || !key) return null;
  try {
    return await openName(b64decode(key), view.groupId, index, view.decoded[index].detail);
  } catch {
    return null;
  }
}

// --- my sender chain ------------------------------------------------------------------------

/**
 * My chain for the group (view: its verified view), drawn fresh at first use and whenever
 * someone was removed or left after it was drawn: a removed member holds the old one. This
 * browser's own (every device draws its own, named by its id); outbound.js reads it afresh
 * from the store under a lock before stepping it, as another tab may have stepped it.
 */
export function myChain(record, view) {
  const since = record.mine ? record.mine.madeAt : view.index;
  const departed = view.decoded
    .slice(since + 1)
    .some((e) => e.action === Action.REMOVE || e.action === Action.LEAVE);
  if (!record.mine?.cid || departed) {
    const gen = (record.mine?.gen ?? 0) + 1;
    record.mine = { ...chainJson(SenderChain.fresh()), gen, sentTo: {}, madeAt: view.index };
  }
  const { cid, chainKey, iteration } = record.mine;
  return new SenderChain(b64decode(cid), b64decode(chainKey), iteration);
}

/** Keep chain's new position (before anything it encrypted leaves). */
export function keepChain(record, chain) {
  Object.assign(record.mine, chainJson(chain));
}

function chainJson(chain) {
  return {
    cid: b64encode(chain.chainId),
    chainKey: b64encode(chain.chainKey),
    iteration: chain.iteration,
  };
}

// --- the others' chains ---------------------------------------------------------------------

/**
 * Keep a distribution from sender (my other device's too) for the head at chain index, by its
 * chain id. One of a chain already kept (only further along) changes nothing: the kept one
 * opens those messages and the earlier ones still in flight. A copy of this browser's own
 * sending chain is not kept: it is not a chain to read.
 */
export function addDistribution(record, sender, index, d) {
  const cid = b64encode(d.chainId);
  const kept = (record.receivers[sender] ?? []).filter((old) => old.cid);
  if (kept.some((old) => old.cid === cid) || record.mine?.cid === cid) return false;
  const entry = {
    cid,
    index,
    chainKey: b64encode(d.chainKey),
    iteration: d.iteration,
    skipped: [],
  };
  record.receivers[sender] = [...kept, entry]
    .sort((a, b) => a.index - b.index)
    .slice(-DISTRIBUTIONS_KEPT);
  return true;
}

/** The receiver chain of sender's with id cid (base64), which their message names, or null. */
export function receiverFor(record, sender, cid) {
  const found = (record.receivers[sender] ?? []).find((d) => d.cid === cid);
  if (!found) return null;
  const chain = new ReceiverChain(b64decode(found.chainKey), found.iteration);
  for (const [i, key] of found.skipped) chain.skipped.set(i, b64decode(key));
  return { found, chain };
}

/** Keep what opening a message did to the receiver chain (used keys are gone). */
export function keepReceiver({ found, chain }) {
  found.chainKey = b64encode(chain.chainKey);
  found.iteration = chain.iteration;
  found.skipped = [...chain.skipped].map(([i, key]) => [i, b64encode(key)]);
}
