/**
 * The groups I am in, as this page knows them: each group's kept record (state.js), sealed by
 * vault.js in the chat store, and its verified view, made again from the chain with keys the
 * key directory proved. A group whose chain fails, or whose member list from the server names
 * anyone the chain does not justify (a ghost member) or leaves a member out, gets a problem:
 * nothing is encrypted to it or accepted from it (docs/CONTRACTS.md, "Groups").
 *
 * Events: "change" (detail {group}) when a group's name, members, problem or messages changed.
 * No DOM.
 */

import { ApiError, request } from "../api.js";
import { fingerprint } from "../crypto.js";
import { NoKeysError } from "../directory.js";
import { Action, MAX_SUBJECTS, MembershipError } from "./membership.js";
import {
  describeEntry,
  GROUP_HEX,
  hexOf,
  nameOf,
  newRecord,
  threadOf,
  verifyRecord,
} from "./state.js";

const INDEX = "groups";

/** What a problem means, in plain words, naming the group. */
export function problemText(problem, name) {
  if (problem.code === "ghost_member") {
    return (
      `The server lists ${problem.names.join(", ")} as a member of ${name}, but no admin added them. `
      + "Messages are not sent to this group until this is resolved."
    );
  }
  if (problem.code === "hidden_member" && problem.unproved) {
    return (
      `The server says the accounts of ${problem.names.join(", ")} were deleted, but the key `
      + `directory does not prove it: they would be cut off from ${name}. Messages are not sent `
      + "to this group until this is resolved."
    );
  }
  if (problem.code === "ghost_member" && problem.gone) {
    return (
      `The server lists ${problem.names.join(", ")} as a deleted member of ${name}, but no admin `
      + "added them. Messages are not sent to this group until this is resolved."
    );
  }
  if (problem.code === "old_key") {
    return (
      `The membership of ${name} ends with changes signed with a key its signer has since `
      + "replaced, and no later change signed with a current key vouches for them. Messages are "
      + "not sent to or accepted from this group until a member's next change is signed with a "
      + "current key."
    );
  }
  if (problem.code === "hidden_member") {
    return (
      `The server leaves ${problem.names.join(", ")} out of ${name}, though the signed membership `
      + "lists them. Messages are not sent to this group until this is resolved."
    );
  }
  if (problem.code === "rewritten") {
    return (
      `The server now shows a different membership history for ${name} than it showed this browser `
      + "before. Messages are not sent to or accepted from this group until this is resolved."
    );
  }
  return (
    `The membership of ${name} could not be verified (${problem.code}). Messages are not sent to `
    + "or accepted from this group until it can be."
  );
}

export class GroupBook extends EventTarget {
  #groups = new Map(); // group -> {record, view, problem, name, listed, unread}
  #queues = new Map(); // group -> the tail of its one-at-a-time work
  #loading = new Map(); // group -> the promise of its entry, while it loads
  #indexed = new Set(); // groups known to be in the kept list
  #deleted = new Set(); // accounts whose deletion the key directory proved (it is for good)
  #contacts = null; // my accepted contacts, as last read: who may add me to a group

  constructor({ me, identity, store, vault, keys }) {
    super();
    Object.assign(this, { me, identity, store, vault, keys });
  }

  /** Run work() after the group's earlier work: one change to a record at a time. */
  serial(group, work) {
    const run = (this.#queues.get(group) ?? Promise.resolve()).then(work);
    this.#queues.set(
      group,
      run.catch(() => {}),
    );
    return run;
  }

  changed(group) {
    this.dispatchEvent(new CustomEvent("change", { detail: { group } }));
  }

  // --- kept records -----------------------------------------------------------------------

  async #loadKept(group) {
    const box = await this.store.meta(`group:${group}`);
    if (!box) return null;
    try {
      return await this.vault.open(`group:${group}`, box);
    } catch {
      return null; // sealed under keys this browser no longer has
    }
  }

  /** Keep the entry's record, sealed (it holds chain keys), and list its group once. */
  async save(entry) {
    const { record } = entry;
    await this.store.setMeta(
      `group:${record.group}`,
      await this.vault.seal(`group:${record.group}`, record),
    );
    if (this.#indexed.has(record.group)) return;
    const index = (await this.store.meta(INDEX)) ?? [];
    if (!index.includes(record.group)) await this.store.setMeta(INDEX, [...index, record.group]);
    this.#indexed.add(record.group);
  }

  /** The group's entry, loaded from the store (and verified) or made new; one per group. */
  entry(group) {
    const known = this.#groups.get(group);
    if (known) return Promise.resolve(known);
    // Two callers at once must share one entry, or each would keep (and save) its own.
    if (!this.#loading.has(group)) {
      const loading = this.#load(group).finally(() => this.#loading.delete(group));
      this.#loading.set(group, loading);
    }
    return this.#loading.get(group);
  }

  async #load(group) {
    const record = (await this.#loadKept(group)) ?? newRecord(group);
    const entry = {
      record,
      view: null,
      problem: null,
      name: null,
      listed: null, // the server's member list of the last fetch, checked against the chain
      goneListed: [], // the server's gone of the last fetch, believed only where proved
      gone: new Set(), // members whose deletion the directory proved: handed no keys
      rewritten: false, // the last fetch did not continue the chain kept here
      unread: 0,
    };
    if (record.entries.length) await this.verify(entry);
    this.#groups.set(group, entry);
    return entry;
  }

  known(group) {
    return this.#groups.get(group) ?? null;
  }

  /**
   * The thread's notice of the entry at index (decoded), placed at its stream position seq;
   * once per entry. Resolves to the notice record, or null if it was already there.
   */
  async notice(entry, index, decoded, seq) {
    const group = entry.record.group;
    const id = `group-entry:${group}:${index}`;
    if (await this.store.message(id)) return null;
    const removesMe =
      decoded.action === Action.REMOVE && decoded.subjects.some((s) => s.username === this.me);
    const text = removesMe
      ? `You were removed from ${this.title(group)} by ${decoded.actor}.`
      : describeEntry(decoded, this.me);
    const record = {
      id,
      peer: threadOf(group),
      group,
      from: null,
      to: null,
      seq: null,
      ts: decoded.writtenMs,
      order: Number.isSafeInteger(seq) ? seq : entry.record.lastSeq + 0.5,
      direction: "notice",
      status: null,
      state: "notice",
      notice: { kind: "group", text, removed: removesMe },
    };
    await this.store.putMessage(record);
    return record;
  }

  // --- verification -----------------------------------------------------------------------

  /**
   * The current Ed25519 key the directory proves for user, fetched afresh (a copy kept from
   * before may predate a key reset), or null (a deleted account, offline, refused).
   */
  async #currentKey(user) {
    if (user === this.me) return this.identity.signSpki;
    try {
      return (await this.keys.get(user, { maxAge: 0 })).signSpki;
    } catch {
      return null;
    }
  }

  /**
   * The hex fingerprints of every sign key the directory's history proves user published (its
   * head consistent with the heads seen); empty when nothing is proved, so an entry under an
   * earlier key is unknown_key.
   */
  async #formerKeys(user) {
    try {
      return (await this.keys.directory.fetchVerifiedHistory(user)).signFingerprints;
    } catch {
      return new Set();
    }
  }

  /**
   * The keys to check new entries (decoded) with: each actor's current sign key and, only for
   * an actor an entry names by another key, the fingerprints of their earlier ones
   * (docs/CONTRACTS.md "Groups", step 2).
   */
  async #signerKeys(decoded) {
    const named = new Map();
    for (const e of decoded) {
      if (!named.has(e.actor)) named.set(e.actor, new Set());
      named.get(e.actor).add(hexOf(e.actorFingerprint));
    }
    const keys = new Map();
    const former = new Map();
    for (const [actor, fingerprints] of named) {
      const current = await this.#currentKey(actor);
      keys.set(actor, current ? [current] : []);
      const currentHex = current ? await fingerprint(current) : null;
      if (currentHex === null || fingerprints.size !== 1 || !fingerprints.has(currentHex)) {
        former.set(actor, await this.#formerKeys(actor));
      }
    }
    return { keys, former };
  }

  /**
   * Verify the entry's chain (and the server's member list, if known); sets view/problem.
   * Entries verified here before are not checked again (a signer's key reset since must not
   * undo a group accepted): record.verified counts them.
   */
  async verify(entry) {
    const { record } = entry;
    const verified = Math.min(record.verified ?? 0, record.entries.length);
    try {
      entry.view = await verifyRecord(record, (decoded) => this.#signerKeys(decoded), verified);
      record.verified = record.entries.length;
      // A rewrite found by the last fetch stands until a fetch continues the chain kept here.
      entry.problem = entry.rewritten ? { code: "rewritten", names: [] } : null;
      if (entry.listed && !entry.problem) this.#checkListed(entry);
      // Gone: members the server says were deleted, where the directory proved it.
      entry.gone = new Set(
        entry.goneListed.filter((n) => this.#deleted.has(n) && entry.view.members.has(n)),
      );
    } catch (error) {
      // Anything else (an entry that is not even base64) is a chain that does not verify too.
      const code = error instanceof MembershipError ? error.code : "malformed";
      entry.view = null;
      entry.problem = { code, names: [], message: error.message };
    }
    entry.name = entry.view ? await nameOf(entry.record, entry.view) : null;
    if (entry.view) entry.record.removed = !entry.view.members.has(this.me);
    if (entry.view && entry.record.admission === "new") await this.#admit(entry);
  }

  // --- invites ----------------------------------------------------------------------------

  /**
   * Decide, once, whether a group new here is an invite: someone who is not my contact added
   * me (the message request rule, docs/protocol.md "Contacts and message requests"). A group I
   * created, or was added to by a contact, is joined. Undecided while contacts cannot be read.
   */
  async #admit(entry) {
    const { record, view } = entry;
    const adding = view.decoded.findLast(
      (e) =>
        (e.action === Action.CREATE || e.action === Action.ADD)
        && e.subjects.some((s) => s.username === this.me),
    );
    const adder = adding?.actor ?? this.me;
    if (adder === this.me || record.removed) {
      record.admission = "joined";
      return;
    }
    const contact = await this.#isContact(adder);
    if (contact === null) return;
    record.admission = contact ? "joined" : "invited";
    record.invitedBy = contact ? null : adder;
  }

  /** Whether name is my accepted contact (GET /api/v1/contacts), or null when it cannot be read. */
  async #isContact(name) {
    if (this.#contacts?.has(name)) return true;
    try {
      this.#contacts = new Set((await request("/api/v1/contacts")).contacts ?? []);
    } catch {
      return null;
    }
    return this.#contacts.has(name);
  }

  /** Whether group waits for me to join or leave it (messages kept, not shown; nothing sent). */
  invited(group) {
    return this.#groups.get(group)?.record.admission === "invited";
  }

  /** The invites to list: [{group, name, by}]. */
  invites() {
    return [...this.#groups.values()]
      .filter(({ record }) => record.admission === "invited")
      .map(({ record }) => ({
        group: record.group,
        name: this.title(record.group),
        by: record.invitedBy,
      }));
  }

  /** Settle group's invite (joined, or declined once I left it); resolves to who added me. */
  async answer(group, admission) {
    const entry = await this.entry(group);
    const adder = entry.record.invitedBy;
    await this.serial(group, async () => {
      entry.record.admission = admission;
      await this.save(entry);
    });
    if (admission === "joined") this.#contacts?.add(adder);
    this.changed(group);
    return adder;
  }

  #checkListed(entry) {
    const { members } = entry.view;
    const ghosts = entry.listed.filter((n) => !members.has(n)).sort();
    const hidden = [...members.keys()].filter((n) => !entry.listed.includes(n)).sort();
    if (ghosts.length) entry.problem = { code: "ghost_member", names: ghosts };
    else if (hidden.length) entry.problem = { code: "hidden_member", names: hidden };
    if (entry.problem) return;
    // The server's gone is believed only where the key directory proved the deletion.
    const goneGhosts = entry.goneListed.filter((n) => !members.has(n)).sort();
    const unproved = entry.goneListed.filter((n) => !this.#deleted.has(n)).sort();
    if (goneGhosts.length) entry.problem = { code: "ghost_member", names: goneGhosts, gone: true };
    else if (unproved.length)
      entry.problem = { code: "hidden_member", names: unproved, unproved: true };
  }

  /** Prove what the directory says of names: those whose account deletion it proves are kept. */
  async #proveDeleted(names) {
    if (names.length > MAX_SUBJECTS) return; // more than any chain holds: refused as ghosts
    for (const name of names) {
      if (this.#deleted.has(name)) continue;
      try {
        await this.keys.get(name, { maxAge: 0 });
      } catch (error) {
        // A proved tombstone, its head consistent with the heads seen (directory.js).
        if (error instanceof NoKeysError && error.tombstone.status === "deleted") {
          this.#deleted.add(name);
        }
      }
    }
  }

  /**
   * Fetch the group's chain and member list and verify both. A chain that does not continue
   * the one kept here is refused. Resolves to the entry; 404 (not a member) leaves it as kept.
   */
  async refresh(group) {
    const entry = await this.entry(group);
    let body;
    try {
      body = await request(`/api/v1/groups/${group}`);
    } catch (error) {
      // 404: not a member (any more); offline or refused: what is kept stands until next time.
      if (error instanceof ApiError) return entry;
      throw error;
    }
    // Only the entries verified here before are fixed: any kept after them failed to verify.
    const kept = entry.record.entries.slice(0, entry.record.verified ?? 0);
    const fetched = Array.isArray(body?.entries) ? body.entries : [];
    entry.rewritten = kept.some((e, i) => fetched[i] !== e);
    if (entry.rewritten) {
      entry.problem = { code: "rewritten", names: [] };
    } else {
      entry.record.entries = fetched;
      entry.listed = Array.isArray(body.members) ? body.members.map(String) : [];
      entry.goneListed = Array.isArray(body.gone) ? [...new Set(body.gone.map(String))] : [];
      await this.#proveDeleted(entry.goneListed);
      await this.verify(entry);
    }
    await this.save(entry);
    this.changed(group);
    return entry;
  }

  /** Every group kept here and every one the server lists, verified. */
  async load() {
    let rows = [];
    try {
      rows = (await request("/api/v1/groups")).groups ?? [];
    } catch {
      rows = []; // offline: what is kept here is shown
    }
    const groups = new Set((await this.store.meta(INDEX)) ?? []);
    for (const row of rows) if (GROUP_HEX.test(row.group)) groups.add(row.group);
    for (const group of groups) {
      const row = rows.find((r) => r.group === group);
      const entry = await this.entry(group);
      if (row) {
        entry.unread = row.unread ?? 0;
        entry.record.lastSeq = Math.max(entry.record.lastSeq, row.last_seq ?? 0);
        await this.serial(group, () => this.refresh(group));
      }
    }
  }

  /** The groups to list, most recent first: {group, name, members, removed, problem, unread, order}. */
  list() {
    return [...this.#groups.values()]
      .filter((g) => g.record.entries.length)
      .filter((g) => !["invited", "declined"].includes(g.record.admission))
      .map(({ record, view, problem, name, unread }) => ({
        group: record.group,
        name: this.title(record.group),
        named: name !== null,
        members: view ? view.members.size : 0,
        removed: record.removed,
        problem,
        unread,
        order: record.lastSeq,
      }))
      .sort((a, b) => b.order - a.order);
  }

  /** The name to show for group: its decrypted name, or words saying it is not here yet. */
  title(group) {
    const entry = this.#groups.get(group);
    return entry?.name ?? "Unnamed group";
  }

  /** The members other than me who can be handed keys: not gone (their accounts deleted). */
  reachable(entry) {
    if (!entry.view) return [];
    return [...entry.view.members.keys()].filter((n) => n !== this.me && !entry.gone.has(n));
  }

  /** Whether I may send to group now, and if not, why (plain words), else null. */
  refusal(group) {
    const entry = this.#groups.get(group);
    if (!entry?.view && !entry?.problem) return "This group is still being checked.";
    if (entry.record.removed) return `You are no longer a member of ${this.title(group)}.`;
    if (entry.record.admission === "invited")
      return `You have not joined ${this.title(group)}: join it from Requests first.`;
    if (entry.problem) return problemText(entry.problem, this.title(group));
    return null;
  }

  /**
   * The members as the verified chain has them, with what the directory says of their keys:
   * [{name, admin, verified, changed, unknown, gone}]; changed: their key is not the one the
   * chain recorded when they were added, or it changed after I verified them; gone: their
   * account was deleted (the server's gone, or the directory's tombstone, proved).
   */
  async members(group) {
    const entry = await this.entry(group);
    if (!entry.view) return [];
    const row = async ([name, fp]) => {
      const out = { name, admin: entry.view.admins.has(name), verified: false, changed: false };
      if (name === this.me) return out;
      if (entry.gone.has(name) || this.#deleted.has(name)) return { ...out, gone: true };
      try {
        // Fetched now: a member list shows what the directory says today.
        const keys = await this.keys.get(name, { maxAge: 0 });
        out.verified = keys.verified && keys.canSend;
        out.changed = keys.signFingerprint !== hexOf(fp) || !keys.canSend;
      } catch (error) {
        // A deletion the directory proves (for good): shown, and an admin may remove them.
        if (error instanceof NoKeysError && error.tombstone.status === "deleted") {
          this.#deleted.add(name);
          out.gone = true;
        } else {
          out.unknown = true;
        }
      }
      return out;
    };
    const out = await Promise.all([...entry.view.members].map(row));
    return out.sort((a, b) =>
      a.name === this.me ? -1 : b.name === this.me ? 1 : a.name.localeCompare(b.name),
    );
  }
}
