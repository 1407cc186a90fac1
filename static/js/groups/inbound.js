/**
 * What reaches me from groups: membership entries, key distributions, messages and receipt
 * counts (docs/protocol.md, "Group frames, server to client"), and the history endpoint.
 *
 * Nothing is taken on the server's word. An entry is kept only as part of a chain that
 * verifies; a distribution only from a member at its head, inside a pairwise envelope signed
 * by them; a message only from a member at the head it was sent under, its signature checked
 * with the key the directory proved before any key is derived. A group with a problem (a ghost
 * member, a chain that fails) has its messages kept unopened ("refused").
 */

import { isTransient, request } from "../api.js";
import { b64decode, b64encode } from "../crypto.js";
import { openKeys } from "./keymail.js";
import { Action, decodeEntry } from "./membership.js";
import { openName } from "./names.js";
import { GroupMessageError, openGroupMessage, wireChainId } from "./senderkeys.js";
import {
  addDistribution,
  GROUP_HEX,
  keepReceiver,
  nameOf,
  receiverFor,
  threadOf,
} from "./state.js";

const decoder = new TextDecoder("utf-8", { fatal: true });
const RANK = { delivered: 1, read: 2 };
export const HISTORY_PAGE = 50;
// A group message kept, not yet opened: its sender's chain has not come yet.
const WAITING = "waiting";

/** Whether a group_message frame (or history item) has the shape the protocol promises. */
export function wellFormedGroupMessage(frame) {
  return (
    typeof frame?.id === "string"
    && Number.isSafeInteger(frame.seq)
    && Number.isSafeInteger(frame.ts)
    && typeof frame.from === "string"
    && GROUP_HEX.test(frame.group ?? "")
    && typeof frame.head === "string"
    && frame.envelope !== null
    && typeof frame.envelope === "object"
  );
}

export class GroupInbox {
  constructor({ book, socket }) {
    this.book = book;
    this.socket = socket;
  }

  get me() {
    return this.book.me;
  }

  // --- entries ----------------------------------------------------------------------------

  /** A membership change; resolves to its notice record (or null). */
  async entry(frame) {
    if (!GROUP_HEX.test(frame.group ?? "") || !Number.isSafeInteger(frame.index)) return null;
    let decoded;
    try {
      decoded = decodeEntry(b64decode(frame.entry));
    } catch {
      return null; // not an entry: nothing a client could do with it
    }
    const { group } = frame;
    const notice = await this.book.serial(group, async () => {
      const entry = await this.book.entry(group);
      const { record } = entry;
      const had = record.entries.length;
      if (frame.index >= had) await this.book.refresh(group);
      if (record.entries.length === frame.index) {
        // Not served (a removed member gets 404): the frame's entry, if it continues the chain.
        // The server's member list of before it says nothing of the chain after it.
        record.entries.push(frame.entry);
        entry.listed = null;
        await this.book.verify(entry);
        if (entry.problem) {
          record.entries.pop(); // not kept: the chain stays as it verified
          await this.book.verify(entry);
        }
      }
      if (record.entries[frame.index] !== frame.entry || entry.problem || !entry.view) return null;
      record.lastSeq = Math.max(record.lastSeq, frame.seq ?? 0);
      await this.book.save(entry);
      return this.book.notice(entry, frame.index, decoded, frame.seq);
    });
    this.book.changed(group);
    return notice;
  }

  // --- key distributions ------------------------------------------------------------------

  /**
   * A sender chain handed to me, or my own copy of one my other device handed to frame.to (it
   * draws its own chain: with it I read what that device sends); opens what waited for it.
   * Resolves to records now readable.
   */
  async keys(frame) {
    const { group } = frame;
    const mine = frame.from === this.me;
    if (!GROUP_HEX.test(group ?? "") || !frame.envelope) return [];
    if (mine && typeof frame.to !== "string") return [];
    const taken = await this.book.serial(group, async () => {
      const entry = await this.book.entry(group);
      if (!entry.view?.heads.has(frame.head)) await this.book.refresh(group);
      if (!entry.view || entry.problem || !entry.view.heads.has(frame.head)) return false;
      let opened;
      try {
        const senderSignSpki = mine
          ? this.book.identity.signSpki
          : (await this.book.keys.get(frame.from)).signSpki;
        opened = await openKeys(frame.envelope, {
          id: frame.id,
          sender: frame.from,
          me: this.me,
          to: mine ? frame.to : null,
          identity: this.book.identity,
          senderSignSpki,
        });
      } catch (error) {
        if (isTransient(error)) throw error; // the socket starts over from the cursor
        return false;
      }
      const { distribution, nameKeys } = opened;
      const index = entry.view.heads.get(b64encode(distribution.head));
      const sameGroup = b64encode(distribution.groupId) === b64encode(entry.view.groupId);
      if (!sameGroup || index === undefined || !entry.view.rosters[index].has(frame.from))
        return false;
      addDistribution(entry.record, frame.from, index, distribution);
      for (const [i, key] of Object.entries(nameKeys)) {
        const named = entry.view.decoded[Number(i)];
        if (!named || !(await opens(key, entry.view.groupId, Number(i), named))) continue;
        entry.record.nameKeys[i] = b64encode(key);
      }
      entry.name = await nameOf(entry.record, entry.view);
      await this.book.save(entry);
      return true;
    });
    if (!taken) return [];
    this.book.changed(group);
    return this.retryPending(group);
  }

  // --- messages ---------------------------------------------------------------------------

  /**
   * A group_message frame or history item: kept once by id, then opened. {record, isNew};
   * record is null for an id that another thread's message already has.
   */
  async message(frame, history = null) {
    const store = this.book.store;
    const existing = await store.message(frame.id);
    // An id already taken by another thread's message: not this group's to show.
    if (existing && existing.group !== frame.group) return { record: null, isNew: false };
    if (existing) {
      if (existing.direction === "out" && history) {
        return { record: (await this.#counted(frame.id, history)) ?? existing, isNew: false };
      }
      return { record: existing, isNew: false };
    }
    const mine = frame.from === this.me;
    const record = {
      id: frame.id,
      peer: threadOf(frame.group),
      group: frame.group,
      from: frame.from,
      to: null,
      seq: frame.seq,
      ts: frame.ts,
      writtenMs: null,
      order: frame.seq,
      direction: mine ? "out" : "in",
      status: mine ? "sent" : "received",
      marked: null,
      // Not "pending": that is a pair message's state, which messages.js opens as one.
      state: WAITING,
      head: frame.head,
      envelope: frame.envelope,
      box: null,
      counts: history ? countsOf(history) : null,
    };
    await store.putMessage(record);
    const entry = await this.book.entry(frame.group);
    entry.record.lastSeq = Math.max(entry.record.lastSeq, frame.seq);
    return { record: await this.open(record), isNew: true };
  }

  /** Verify and decrypt a kept record; resolves to it, with .text when readable. */
  open(record) {
    return this.book.serial(record.group, async () => {
      const outcome = await this.#outcome(record);
      if (outcome === null) return record; // waits: keys not here yet
      const { state, text = null } = outcome;
      const opened = {
        ...record,
        state,
        envelope: state === "refused" ? record.envelope : null,
        box: text === null ? null : await this.book.vault.seal(record.id, { text }),
      };
      await this.book.store.putMessage(opened);
      return { ...opened, text };
    });
  }

  async #outcome(record) {
    const entry = await this.book.entry(record.group);
    if (!entry.view?.heads.has(record.head) && !entry.problem)
      await this.book.refresh(record.group);
    if (!entry.view || entry.problem) return { state: "refused" };
    const index = entry.view.heads.get(record.head);
    if (index === undefined || !entry.view.rosters[index].has(record.from))
      return { state: "unverifiable" };
    const cid = wireChainId(record.envelope);
    if (cid === null) return { state: "unverifiable" };
    // Mine too, from another device of mine: its chain came in my copy of its distribution.
    const receiver = receiverFor(entry.record, record.from, cid);
    if (!receiver) return null;
    let raw;
    try {
      const keys = await this.book.keys.get(record.from);
      raw = await openGroupMessage(record.envelope, {
        chain: receiver.chain,
        groupId: entry.view.groupId,
        head: b64decode(record.head),
        sender: record.from,
        messageId: record.id,
        senderSignSpki: keys.signSpki,
      });
    } catch (error) {
      if (error instanceof GroupMessageError) return { state: error.code };
      if (isTransient(error)) return null;
      return { state: "unverifiable" };
    }
    keepReceiver(receiver);
    await this.book.save(entry);
    let body = null;
    try {
      body = JSON.parse(decoder.decode(raw));
    } catch {
      body = null;
    }
    if (typeof body?.text !== "string") return { state: "undecryptable" };
    return { state: "ok", text: body.text };
  }

  /** Open again the group's messages still waiting (a distribution came). */
  async retryPending(group) {
    const waiting = (await this.book.store.inState(WAITING)).filter((r) => r.group === group);
    const opened = [];
    for (const record of waiting.sort((a, b) => a.order - b.order)) {
      const done = await this.open(record);
      if (done.state !== WAITING) opened.push(done);
    }
    return opened;
  }

  // --- receipts ---------------------------------------------------------------------------

  /** How many have my message now; resolves to the record if it changed. */
  receipt(frame) {
    return this.#counted(frame.id, frame, frame.group);
  }

  #counted(id, counts, group = null) {
    return this.book.store.updateMessage(id, (record) => {
      if (record.direction !== "out" || !record.group || (group && record.group !== group))
        return null;
      return { ...record, counts: countsOf(counts) };
    });
  }

  /** Mark a group message to me delivered or read (with the group field), once each. */
  async mark(record, status) {
    if (record.direction !== "in" || !record.group || !Number.isSafeInteger(record.seq)) return;
    if ((RANK[record.marked] ?? 0) >= RANK[status]) return;
    if (!this.socket.send({ type: status, seq: record.seq, group: record.group })) return;
    record.marked = status;
    await this.book.store.updateMessage(record.id, (stored) => ({ ...stored, marked: status }));
  }

  // --- history ----------------------------------------------------------------------------

  /** A page of the group's messages before seq, from the server: {records, more}, or null. */
  async history(group, before = null) {
    const query = `limit=${HISTORY_PAGE}${before === null ? "" : `&before=${before}`}`;
    let page;
    try {
      page = await request(`/api/v1/groups/${group}/messages?${query}`);
    } catch {
      return null; // offline, or no longer a member: what is kept here is shown
    }
    const records = [];
    const items = (page.messages ?? []).filter(wellFormedGroupMessage).reverse();
    for (const item of items) {
      const { record } = await this.message(item, item);
      if (record) records.push(record.text === undefined ? await this.withText(record) : record);
    }
    return { records, more: Boolean(page.more) };
  }

  /** record with .text from its sealed box (null when not readable). */
  async withText(record) {
    if (record.state !== "ok" || !record.box) return { ...record, text: null };
    try {
      return { ...record, text: (await this.book.vault.open(record.id, record.box)).text };
    } catch {
      return { ...record, text: null };
    }
  }
}

/** Whether key opens the name in the create or rename entry e at index (else it is not kept). */
async function opens(key, groupId, index, e) {
  if (e.action !== Action.CREATE && e.action !== Action.RENAME) return false;
  try {
    await openName(key, groupId, index, e.detail);
    return true;
  } catch {
    return false;
  }
}

function countsOf(item) {
  const number = (n) => (Number.isSafeInteger(n) && n >= 0 ? n : 0);
  return {
    delivered: number(item.delivered),
    read: number(item.read),
    members: number(item.members),
  };
}
