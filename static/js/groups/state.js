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

import { b64decode, b64encode } from "../crypto.js";
import { Action, decodeEntry, entryHash, verifyChain } from "./membership.js";
import { openName } from "./names.js";
import { nextChainKey, ReceiverChain, SenderChain } from "./senderkeys.js";

// A receiver keeps at most this many distributions per sender (older generations are dropped).
const DISTRIBUTIONS_KEPT = 8;

export const hexOf = (bytes) => Array.from(bytes, (b) => b.toString(16).padStart(2, "0")).join("");
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
 * someone was removed or left after it was drawn: a removed member holds the old one.
 */
export function myChain(record, view) {
  const since = record.mine ? record.mine.madeAt : view.index;
  const departed = view.decoded
    .slice(since + 1)
    .some((e) => e.action === Action.REMOVE || e.action === Action.LEAVE);
  if (!record.mine || departed) {
    const gen = (record.mine?.gen ?? 0) + 1;
    record.mine = { ...chainJson(SenderChain.fresh()), gen, sentTo: {}, madeAt: view.index };
  }
  return new SenderChain(b64decode(record.mine.chainKey), record.mine.iteration);
}

/** Keep chain's new position (before anything it encrypted leaves). */
export function keepChain(record, chain) {
  Object.assign(record.mine, chainJson(chain));
}

function chainJson(chain) {
  return { chainKey: b64encode(chain.chainKey), iteration: chain.iteration };
}

// --- the others' chains ---------------------------------------------------------------------

/**
 * Keep a distribution from sender for the head at chain index. One that only moves a chain
 * already kept forward (the same generation, a later iteration) changes nothing: the kept one
 * opens those messages and the earlier ones still in flight.
 */
export async function addDistribution(record, sender, index, d) {
  const kept = record.receivers[sender] ?? [];
  for (const old of kept) {
    const ahead = d.iteration - old.iteration;
    if (ahead < 0 || ahead > 2000) continue;
    let key = b64decode(old.chainKey);
    for (let i = 0; i < ahead; i++) key = await nextChainKey(key);
    if (b64encode(key) === b64encode(d.chainKey)) return false;
  }
  const entry = { index, chainKey: b64encode(d.chainKey), iteration: d.iteration, skipped: [] };
  record.receivers[sender] = [...kept, entry]
    .sort((a, b) => a.index - b.index)
    .slice(-DISTRIBUTIONS_KEPT);
  return true;
}

/** The receiver chain that opens sender's message sent under the head at index, or null. */
export function receiverFor(record, sender, index) {
  const kept = (record.receivers[sender] ?? []).filter((d) => d.index <= index);
  const found = kept.at(-1);
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
