/**
 * What I do to groups: create one, change its membership (add, remove, make admin, rename,
 * leave) with entries signed by my identity key, hand my sender chain to members, and send
 * messages (docs/protocol.md, "Groups"; the layouts: docs/CONTRACTS.md, "Groups").
 *
 * Before a message goes, every current member other than me has my current chain (a
 * group_keys frame to those who have not); after a removal or leave a fresh chain is drawn
 * first (state.js myChain). A message is encrypted once, under the chain's next key, and kept
 * with its envelope until acknowledged, so a resend after a lost ack sends the same bytes;
 * stale_head (the group changed first) re-encrypts under the new head and sends the same id.
 *
 * My chain is this browser's (each device draws its own), shared by its tabs: it is read afresh
 * from the store, stepped, kept and used under a Web Lock per group, so two tabs never send
 * under one iteration (the second message would not open: a reader deletes a used key).
 */

import { ApiError, isTransient, request } from "../api.js";
import { SendBlocked } from "../chat/keys.js";
import { PENDING_ORDER } from "../chat/store.js";
import { b64decode, b64encode } from "../crypto.js";
import { NoKeysError } from "../directory.js";
import { sealKeys } from "./keymail.js";
import { Action, decodeEntry, signEntry } from "./membership.js";
import { MAX_GROUP_NAME_CHARS, newNameKey, sealName } from "./names.js";
import { encryptGroupMessage } from "./senderkeys.js";
import { hexOf, keepChain, myChain, threadOf } from "./state.js";

const KEYS_PER_FRAME = 25; // ~1.5 KiB an envelope: well inside the 56 KiB of one frame
const SEND_LOCK = "securechat-group-send-"; // + the group: one tab at a time steps my chain
const ANSWER_MS = 20_000;
const RETRY_MS = 3000;
const FINAL = new Set(["unknown_group", "bad_field", "envelope_too_large", "unknown_type"]);
const encoder = new TextEncoder();

/** A change to a group the server refused, with its words. */
export class GroupChangeError extends Error {
  constructor(message, code = null) {
    super(message);
    this.name = "GroupChangeError";
    this.code = code;
  }
}

async function sha256(bytes) {
  return new Uint8Array(await crypto.subtle.digest("SHA-256", bytes));
}

export class GroupSender extends EventTarget {
  #waiting = new Map(); // frame id -> resolve(answer frame | null)
  #flushing = new Map(); // group -> whether another flush was asked for meanwhile
  #written = 0;
  #told = new Set(); // groups whose failure to send was reported

  constructor({ book, socket }) {
    super();
    this.book = book;
    this.socket = socket;
    // A lost connection answers nothing: what waited is sent again once it is back (flush).
    socket.addEventListener("state", ({ detail }) => {
      if (detail.state === "online") return;
      for (const resolve of this.#waiting.values()) resolve(null);
      this.#waiting.clear();
    });
  }

  get me() {
    return this.book.me;
  }

  /** An ack or error frame for a frame of mine: taken (true), or not mine (false). */
  answer(frame) {
    const resolve = typeof frame.id === "string" ? this.#waiting.get(frame.id) : undefined;
    if (!resolve) return false;
    this.#waiting.delete(frame.id);
    resolve(frame);
    return true;
  }

  /** Send frame and wait for its ack or error; null when it could not go or was not answered. */
  #ask(frame) {
    if (!this.socket.send(frame)) return Promise.resolve(null);
    return new Promise((resolve) => {
      const timer = setTimeout(() => {
        this.#waiting.delete(frame.id);
        resolve(null);
      }, ANSWER_MS);
      this.#waiting.set(frame.id, (answer) => {
        clearTimeout(timer);
        resolve(answer);
      });
    });
  }

  // --- membership -------------------------------------------------------------------------

  /** {username, fingerprint} of each name, with keys the directory proved just now. */
  async #subjects(names) {
    const out = [];
    for (const username of names) {
      const keys = await this.book.keys.forSending(username);
      out.push({ username, fingerprint: await sha256(keys.signSpki) });
    }
    return out;
  }

  async #post(path, entryBytes) {
    try {
      return await request(path, { method: "POST", body: { entry: b64encode(entryBytes) } });
    } catch (error) {
      if (error instanceof ApiError) throw new GroupChangeError(error.message, error.code);
      throw error;
    }
  }

  /** Create a group named name with members (names, not me); resolves to its hex id. */
  async create(name, members) {
    const groupId = crypto.getRandomValues(new Uint8Array(16));
    const group = hexOf(groupId);
    const nameKey = newNameKey();
    const fields = {
      groupId,
      seq: 0,
      prevHash: new Uint8Array(32),
      action: Action.CREATE,
      writtenMs: Date.now(),
      actor: this.me,
      subjects: await this.#subjects(members),
      detail: await sealName(nameKey, groupId, 0, name.slice(0, MAX_GROUP_NAME_CHARS)),
    };
    const bytes = await signEntry(fields, this.book.identity);
    const answer = await this.#post("/api/v1/groups", bytes);
    const entry = await this.book.entry(group);
    entry.record.nameKeys[0] = b64encode(nameKey);
    await this.#appended(entry, bytes, answer.seq);
    await this.#distribute(entry, members);
    return group;
  }

  /**
   * Sign and post the next entry: action with names (add, remove, make admin), or a rename to
   * name, or my leave. A stale head (someone changed the group first) is fetched and the
   * change signed again once.
   */
  async change(group, action, { names = [], name = null } = {}) {
    for (let attempt = 0; ; attempt++) {
      const entry = await this.book.serial(group, () => this.book.refresh(group));
      if (!entry.view || entry.problem) {
        throw new GroupChangeError(this.book.refusal(group) ?? "This group cannot be changed now.");
      }
      const { view } = entry;
      const seq = view.index + 1;
      const subjects =
        action === Action.ADD
          ? await this.#subjects(names)
          : names.map((username) => ({ username, fingerprint: view.members.get(username) }));
      const nameKey = action === Action.RENAME ? newNameKey() : null;
      const fields = {
        groupId: view.groupId,
        seq,
        prevHash: view.head,
        action,
        writtenMs: Date.now(),
        actor: this.me,
        subjects,
        detail: nameKey ? await sealName(nameKey, view.groupId, seq, name) : new Uint8Array(0),
      };
      const bytes = await signEntry(fields, this.book.identity);
      let answer;
      try {
        answer = await this.#post(`/api/v1/groups/${group}/entries`, bytes);
      } catch (error) {
        if (error.code === "stale_head" && attempt === 0) continue;
        throw error;
      }
      if (nameKey) entry.record.nameKeys[seq] = b64encode(nameKey);
      await this.#appended(entry, bytes, answer.seq);
      const others = this.book.reachable(entry); // a gone member is handed no key
      if (action === Action.ADD) await this.#distribute(entry, names);
      if (action === Action.RENAME) await this.#distribute(entry, others);
      return;
    }
  }

  /** My entry is stored at seq: keep it, verify, and say so in the thread. */
  async #appended(entry, bytes, seq) {
    await this.book.serial(entry.record.group, async () => {
      const decoded = decodeEntry(bytes);
      const index = decoded.seq;
      // Its group_entry frame may have come first (and the chain been fetched with it).
      if (entry.record.entries[index] === undefined) {
        entry.record.entries.push(b64encode(bytes));
        entry.listed = null; // the server's list of before; the next refresh checks the new one
      }
      entry.record.lastSeq = Math.max(entry.record.lastSeq, seq ?? 0);
      await this.book.verify(entry);
      await this.book.save(entry);
      await this.book.notice(entry, index, decoded, seq);
    });
    this.book.changed(entry.record.group);
  }

  // --- keys -------------------------------------------------------------------------------

  /** The name key of the group's current name, for the members I hand my chain to. */
  #nameKeys(entry) {
    const index = entry.view.decoded.findLastIndex(
      (e) => e.action === Action.CREATE || e.action === Action.RENAME,
    );
    const key = entry.record.nameKeys[index];
    return key ? { [index]: b64decode(key) } : {};
  }

  /**
   * recipient's keys to hand my chain to, or null for one left out for now: a verified member
   * whose new keys I have not accepted (the group shows the warning; they get the chain once I
   * do), or an account with no keys any more (deleted). The others still get it.
   */
  async #keysFor(recipient) {
    try {
      return await this.book.keys.forSending(recipient);
    } catch (error) {
      if (error instanceof SendBlocked || error instanceof NoKeysError) return null;
      throw error;
    }
  }

  /**
   * The members who lack my current chain: never handed it, or handed it under encryption keys
   * they no longer have (a key reset, a new device: what they kept is gone with the old keys).
   */
  async #lacking(entry) {
    const { record } = entry;
    const out = [];
    for (const name of this.book.reachable(entry)) {
      const handed = record.mine.sentTo[name];
      if (handed?.gen !== record.mine.gen) {
        out.push(name);
        continue;
      }
      const keys = await this.book.keys.get(name).catch(() => null);
      if (keys && keys.encFingerprint !== handed.enc) out.push(name);
    }
    return out;
  }

  // --- my chain, across this browser's tabs ----------------------------------------------

  /**
   * Run work() holding the group's send lock (navigator.locks: one tab of this browser at a
   * time), with my chain read afresh from the store before and kept there after: another tab
   * may have stepped it, or drawn a fresh one, since this tab last read it.
   */
  async #withMyChain(entry, work) {
    const group = entry.record.group;
    const run = async () => {
      await this.book.serial(group, async () => {
        const kept = await this.#keptChain(group);
        if (kept) entry.record.mine = kept;
      });
      try {
        return await work();
      } finally {
        await this.book.serial(group, () => this.#keepMyChain(entry));
      }
    };
    const locks = globalThis.navigator?.locks;
    return locks ? locks.request(SEND_LOCK + group, run) : run();
  }

  /** My chain as the store has it (sealed apart from the group's record, which any tab saves). */
  async #keptChain(group) {
    const box = await this.book.store.meta(`group-chain:${group}`);
    if (!box) return null;
    try {
      return await this.book.vault.open(`group-chain:${group}`, box);
    } catch {
      return null; // sealed under keys this browser no longer has: a fresh chain is drawn
    }
  }

  async #keepMyChain({ record }) {
    if (!record.mine) return;
    const name = `group-chain:${record.group}`;
    await this.book.store.setMeta(name, await this.book.vault.seal(name, record.mine));
  }

  /** Hand my current chain (and the name key) to recipients; resolves to an error frame or null. */
  #distribute(entry, recipients) {
    if (!recipients.length) return Promise.resolve(null);
    return this.#withMyChain(entry, () => this.#handChain(entry, recipients));
  }

  /** #distribute, holding the send lock already. */
  async #handChain(entry, recipients) {
    const { record, view } = entry;
    if (!recipients.length) return null;
    const chain = myChain(record, view);
    await this.book.save(entry); // a fresh chain is kept before anyone has it
    await this.#keepMyChain(entry);
    const distribution = chain.distribution(view.groupId, view.head, this.me);
    const nameKeys = this.#nameKeys(entry);
    for (let at = 0; at < recipients.length; at += KEYS_PER_FRAME) {
      const id = crypto.randomUUID();
      const keys = {};
      const sealedTo = {}; // recipient -> the encryption key's fingerprint it was sealed to
      for (const recipient of recipients.slice(at, at + KEYS_PER_FRAME)) {
        const theirs = await this.#keysFor(recipient);
        if (theirs === null) continue;
        sealedTo[recipient] = theirs.encFingerprint;
        keys[recipient] = await sealKeys({
          id,
          me: this.me,
          recipient,
          identity: this.book.identity,
          recipientEncSpki: theirs.encSpki,
          distribution,
          nameKeys,
        });
      }
      if (!Object.keys(keys).length) continue;
      const answer = await this.#ask({
        type: "group_keys",
        id,
        group: record.group,
        head: view.headB64,
        keys,
      });
      if (answer?.type !== "ack") return answer ?? { type: "error", code: "offline" };
      await this.book.serial(record.group, async () => {
        for (const [recipient, enc] of Object.entries(sealedTo))
          record.mine.sentTo[recipient] = { gen: record.mine.gen, enc };
        await this.book.save(entry);
      });
    }
    return null;
  }

  // --- messages ---------------------------------------------------------------------------

  /** A message written here: kept sealed, queued, and sent when it can be; resolves to its record. */
  async compose(group, text) {
    const refusal = this.book.refusal(group);
    if (refusal) throw new GroupChangeError(refusal);
    const id = crypto.randomUUID();
    const written = Math.max(Date.now(), this.#written + 1);
    this.#written = written;
    const record = {
      id,
      peer: threadOf(group),
      group,
      from: this.me,
      to: null,
      seq: null,
      ts: null,
      writtenMs: written,
      order: PENDING_ORDER + written,
      direction: "out",
      status: "sending",
      state: "ok",
      hidden: false,
      box: await this.book.vault.seal(id, { text }),
    };
    await this.book.store.putMessage(record);
    const entry = await this.book.entry(group);
    await this.book.serial(group, async () => {
      entry.record.pending.push({ id, writtenMs: written, envelope: null, head: null });
      await this.book.save(entry);
    });
    this.flush(group);
    return { ...record, text };
  }

  /** Send what waits for group, in order; runs once at a time per group. */
  async flush(group) {
    if (this.#flushing.has(group)) {
      this.#flushing.set(group, true);
      return;
    }
    this.#flushing.set(group, false);
    try {
      let again = true;
      while (again) {
        this.#flushing.set(group, false);
        await this.#sendWaiting(group);
        again = this.#flushing.get(group);
      }
    } catch (error) {
      // Said once per group until something goes again: it is retried every few seconds.
      if (!isTransient(error) && !this.#told.has(group)) {
        this.#told.add(group);
        this.dispatchEvent(new CustomEvent("error", { detail: { group, error } }));
      }
      setTimeout(() => this.flush(group), RETRY_MS);
    } finally {
      this.#flushing.delete(group);
    }
  }

  async #sendWaiting(group) {
    const entry = await this.book.entry(group);
    while (entry.record.pending.length && this.socket.online && !this.book.refusal(group)) {
      if (!(await this.#withMyChain(entry, () => this.#sendFirst(entry)))) return;
    }
  }

  /**
   * Send the first message waiting, my chain handed first to whoever lacks it; resolves to
   * whether to go on at once. Runs holding the send lock (#withMyChain).
   */
  async #sendFirst(entry) {
    const { record } = entry;
    const { group } = record;
    myChain(record, entry.view);
    const refused = await this.#handChain(entry, await this.#lacking(entry));
    if (refused) return this.#settleRefusal(group, refused);
    const item = record.pending[0];
    if (!item) return true;
    if (item.head !== entry.view.headB64) await this.#encrypt(entry, item);
    const answer = await this.#ask({
      type: "send",
      id: item.id,
      group,
      head: item.head,
      envelope: item.envelope,
    });
    if (answer?.type === "ack") {
      await this.#sent(entry, item, answer);
      return true;
    }
    return this.#settleRefusal(group, answer ?? { code: "offline" }, item);
  }

  async #encrypt(entry, item) {
    const { record, view } = entry;
    const stored = await this.book.store.message(item.id);
    const { text } = await this.book.vault.open(item.id, stored.box);
    const chain = myChain(record, view);
    const plaintext = encoder.encode(JSON.stringify({ text, ts: item.writtenMs }));
    item.envelope = await encryptGroupMessage({
      chain,
      groupId: view.groupId,
      head: view.head,
      sender: this.me,
      messageId: item.id,
      plaintext,
      identity: this.book.identity,
    });
    item.head = view.headB64;
    keepChain(record, chain); // the key is spent before the message leaves
    await this.book.serial(record.group, async () => {
      await this.#keepMyChain(entry);
      await this.book.save(entry);
    });
  }

  async #sent(entry, item, ack) {
    this.#told.delete(entry.record.group);
    await this.book.serial(entry.record.group, async () => {
      entry.record.pending = entry.record.pending.filter((p) => p.id !== item.id);
      entry.record.lastSeq = Math.max(entry.record.lastSeq, ack.seq ?? 0);
      await this.book.save(entry);
    });
    const record = await this.book.store.settleOutgoing(item.id, (r) => ({
      ...r,
      seq: ack.seq,
      ts: ack.ts,
      order: ack.seq,
      status: r.status === "sending" ? "sent" : r.status,
    }));
    this.dispatchEvent(new CustomEvent("sent", { detail: { group: entry.record.group, record } }));
  }

  /** After a refusal: whether to go on at once (true) or stop and try later (false). */
  async #settleRefusal(group, answer, item = null) {
    // The group changed first, or a member is gone (their account deleted): fetch it again.
    if (["stale_head", "unknown_recipient", "not_a_member"].includes(answer.code)) {
      await this.book.serial(group, () => this.book.refresh(group));
      return true;
    }
    if (item && FINAL.has(answer.code)) {
      const entry = await this.book.entry(group);
      entry.record.pending = entry.record.pending.filter((p) => p.id !== item.id);
      await this.book.serial(group, () => this.book.save(entry));
      const reason = `The server refused the message: ${answer.message ?? answer.code}`;
      const record = await this.book.store.failOutgoing(item.id, reason);
      this.dispatchEvent(new CustomEvent("sent", { detail: { group, record } }));
      return true;
    }
    if (answer.code !== "offline") setTimeout(() => this.flush(group), RETRY_MS);
    return false;
  }
}
