/**
 * Messages in and out, between the socket and the page: what is stored, what is verified, what
 * can be shown. No DOM here.
 *
 * In: every message is kept first (with its envelope), then opened: the sender's keys come
 * from keys.js (checked against the key log), the signature is verified and only then is the
 * text decrypted (crypto.openMessage). One that fails is kept as "unverifiable" or
 * "undecryptable", with no text at all: the page can only say so. One whose sender's keys
 * cannot be fetched right now stays "pending" and is opened again later.
 *
 * Out: a message written here is stored sealed and queued in the outbox at once; it is
 * encrypted when it is about to go out, to keys checked moments before (seal()).
 */

import { isTransient } from "../api.js";
import { EnvelopeError, encryptMessage, openMessage } from "../crypto.js";
import { PENDING_ORDER } from "./store.js";

// A quote shown from the original kept here is at most this long (crypto.REPLY_SNIPPET_MAX).
const QUOTE_CHARS = 140;

export const STATUS_RANK = { sending: 0, sent: 1, delivered: 2, read: 3 };
// The server refuses an envelope whose canonical JSON exceeds envelope_max_bytes (56 KiB).
const ENVELOPE_MAX_BYTES = 56 * 1024;

/** The later of two statuses of my message (statuses only move forward). */
export function laterStatus(current, next) {
  return (STATUS_RANK[next] ?? -1) > (STATUS_RANK[current] ?? -1) ? next : current;
}

/** The status a history item tells of my message. */
function historyStatus(item) {
  if (!item) return "sent";
  if (item.read_ts !== null && item.read_ts !== undefined) return "read";
  if (item.delivered_ts !== null && item.delivered_ts !== undefined) return "delivered";
  return "sent";
}

/** The receipt already made for a message to me, as a history item tells it. */
function historyMark(item) {
  if (!item) return null;
  if (item.read_ts) return "read";
  return item.delivered_ts ? "delivered" : null;
}

/** The envelope's size as the server measures it: compact JSON, keys sorted. */
function envelopeSize(envelope) {
  const sorted = Object.fromEntries(
    Object.keys(envelope)
      .sort()
      .map((key) => [key, envelope[key]]),
  );
  return new TextEncoder().encode(JSON.stringify(sorted)).length;
}

/** The message is too long for one envelope. */
export class MessageTooLong extends Error {
  constructor() {
    super("This message is too long to send. Split it into shorter messages.");
    this.name = "MessageTooLong";
  }
}

/** Whether a message frame (or history item) has the shape the protocol promises. */
export function wellFormed(frame) {
  return (
    typeof frame?.id === "string"
    && Number.isSafeInteger(frame.seq)
    && Number.isSafeInteger(frame.ts)
    && typeof frame.from === "string"
    && typeof frame.to === "string"
    && frame.envelope !== null
    && typeof frame.envelope === "object"
  );
}

/** What is sealed and encrypted: the text, and a reply's quote or a tombstone's target. */
function contentOf(text, reply, deletes) {
  const content = text === undefined ? {} : { text };
  if (reply) content.reply = reply;
  if (deletes) content.delete = deletes;
  return content;
}

/** A record taken out of view and cache: no text, no envelope, only what keeps it gone. */
function gone(record) {
  return { ...record, state: "deleted", hidden: true, box: null, envelope: null };
}

export class Messages {
  #lastWritten = 0;
  #receiving = new Map(); // id -> the promise of its receive()

  constructor({ me, identity, store, vault, keys }) {
    this.me = me;
    this.identity = identity;
    this.store = store;
    this.vault = vault;
    this.keys = keys;
  }

  // --- out ---------------------------------------------------------------------------------

  /**
   * A message written here, stored sealed and queued; resolves to the record with its text.
   * reply: {id, from, snippet} of the message it answers; deletes: the id of my message this
   * one takes back (a tombstone, never shown).
   */
  async compose(peer, text, { reply = null, deletes = null } = {}) {
    const id = crypto.randomUUID();
    // Strictly increasing, so messages written in the same millisecond keep their order.
    const written = Math.max(Date.now(), this.#lastWritten + 1);
    this.#lastWritten = written;
    const record = {
      id,
      peer,
      from: this.me,
      to: peer,
      seq: null,
      ts: null,
      writtenMs: written,
      order: PENDING_ORDER + written,
      direction: "out",
      status: "sending",
      state: "ok",
      hidden: deletes !== null,
      box: await this.vault.seal(id, contentOf(text, reply, deletes)),
    };
    await this.store.addOutgoing(record, {
      id,
      to: peer,
      createdAt: written,
      writtenMs: written,
      envelope: null,
    });
    return { ...record, text, reply };
  }

  /**
   * The envelope of an outbox entry. Sealed once, to keys checked moments before, and kept, so
   * every retry sends the same bytes under the same id. Throws SendBlocked, DirectoryError,
   * ApiError (404: no such user; transient: try later) or MessageTooLong.
   */
  async seal(entry) {
    if (entry.envelope) return entry.envelope;
    const keys = await this.keys.forSending(entry.to);
    const record = await this.store.message(entry.id);
    const { text, reply, delete: deletes } = await this.vault.open(entry.id, record.box);
    const envelope = await encryptMessage({
      extra: contentOf(undefined, reply, deletes),
      messageId: entry.id,
      sender: this.me,
      recipient: entry.to,
      text,
      writtenMs: entry.writtenMs,
      senderIdentity: this.identity,
      recipientEncSpki: keys.encSpki,
    });
    if (envelopeSize(envelope) > ENVELOPE_MAX_BYTES) throw new MessageTooLong();
    await this.store.putOutbox({ ...entry, envelope });
    return envelope;
  }

  /** The server stored my message id at seq: record it; resolves to the record (or null). */
  acknowledged(id, seq, ts, status = "sent") {
    return this.store.settleOutgoing(id, (record) => ({
      ...record,
      seq,
      ts,
      order: seq,
      status: laterStatus(laterStatus(record.status, "sent"), status),
      error: null,
    }));
  }

  /** A receipt for my message id: move its status on; resolves to the record if it changed. */
  receipt(id, status) {
    return this.store.updateMessage(id, (record) => {
      if (record.direction !== "out" || laterStatus(record.status, status) === record.status)
        return null;
      return { ...record, status };
    });
  }

  // --- in ----------------------------------------------------------------------------------

  /**
   * A message frame (live or synced) or a history item: stored once by id, then opened.
   * Resolves to {record, isNew}; record carries .text when it could be read. The same message
   * may come both ways at once (a live frame while its history page loads): the second waits
   * for the first.
   */
  receive(frame, options = {}) {
    const running = this.#receiving.get(frame.id);
    if (running) return running.then(({ record }) => ({ record, isNew: false }));
    const job = this.#receive(frame, options).finally(() => this.#receiving.delete(frame.id));
    this.#receiving.set(frame.id, job);
    return job;
  }

  async #receive(frame, { history = null }) {
    const mine = frame.from === this.me;
    let existing = await this.store.message(frame.id);
    // Taken back by a tombstone before it came: only its own sender's tombstone counts.
    if (existing?.deletedBy !== undefined && existing.deletedBy !== frame.from) existing = null;
    if (existing && (existing.seq !== null || !mine)) {
      // Known. A history page may still tell a newer status of my own message.
      const changed = mine && history ? await this.receipt(frame.id, historyStatus(history)) : null;
      return { record: changed ?? existing, isNew: false };
    }
    if (existing) {
      // Mine, sent from here, its ack lost: the server has it, so it counts as acknowledged.
      return {
        record: await this.acknowledged(frame.id, frame.seq, frame.ts, historyStatus(history)),
        isNew: false,
      };
    }
    const record = {
      id: frame.id,
      peer: mine ? frame.to : frame.from,
      from: frame.from,
      to: frame.to,
      seq: frame.seq,
      ts: frame.ts,
      writtenMs: null,
      order: frame.seq,
      direction: mine ? "out" : "in",
      status: mine ? historyStatus(history) : "received",
      marked: mine ? null : historyMark(history),
      state: "pending",
      envelope: frame.envelope,
      box: null,
    };
    await this.store.putMessage(record);
    return { record: await this.open(record), isNew: true };
  }

  /** Verify and decrypt a pending record; resolves to the record, with .text if readable. */
  async open(record) {
    let result;
    try {
      result = await this.#verifyAndDecrypt(record);
    } catch (error) {
      if (isTransient(error)) return record; // the sender's keys could not be had: later
      result = { state: error instanceof EnvelopeError ? error.code : "unverifiable", text: null };
    }
    const claimed = result.delete ?? null;
    const content = contentOf(result.text, result.reply, claimed);
    const opened = {
      ...record,
      state: result.state,
      envelope: null,
      writtenMs: result.writtenMs ?? null,
      hidden: claimed !== null,
      box: result.text === null ? null : await this.vault.seal(record.id, content),
    };
    await this.store.putMessage(opened);
    // Only what the tombstone really took back may leave the screen.
    const takesBack = claimed !== null && (await this.#takeBack(claimed, opened)) ? claimed : null;
    const reply = await this.#quoted(result.reply, opened);
    return { ...opened, text: result.text, reply, takesBack };
  }

  /**
   * A verified tombstone takes back its sender's message id: removed here, its id kept so no
   * sync or history page brings it back. Someone else's message is left alone. Resolves to
   * whether the tombstone was honoured.
   */
  async #takeBack(id, tombstone) {
    const target = await this.store.message(id);
    if (target && target.from !== tombstone.from) return false;
    const base = target ?? {
      id,
      peer: tombstone.peer,
      from: tombstone.from,
      to: tombstone.to,
      seq: null,
      ts: tombstone.ts,
      order: tombstone.order,
      direction: tombstone.direction,
      status: null,
    };
    await this.store.putMessage({ ...gone(base), deletedBy: tombstone.from });
    return true;
  }

  /** Delete for me: the message leaves this device's view and cache; its id stays, hidden. */
  deleteForMe(id) {
    return this.store.updateMessage(id, (record) => gone(record));
  }

  async #verifyAndDecrypt(record) {
    const mine = record.from === this.me;
    const options = {
      messageId: record.id,
      sender: record.from,
      recipient: record.to,
      reader: this.identity,
      asSender: mine,
    };
    const open = async (signSpki) => {
      const opened = await openMessage(record.envelope, { ...options, senderSignSpki: signSpki });
      return { state: "ok", ...opened };
    };
    if (mine) return open(this.identity.signSpki);
    try {
      return await open((await this.keys.get(record.from)).signSpki);
    } catch (error) {
      if (!(error instanceof EnvelopeError) || error.code !== "unverifiable") throw error;
      // The sender's keys may have changed since they were kept: check once more, fresh.
      return open((await this.keys.get(record.from, { maxAge: 0 })).signSpki);
    }
  }

  /** The text of a stored record, or null (not readable: never verified, or not opened yet). */
  async text(record) {
    return (await this.content(record)).text;
  }

  /** {text, reply} of a stored record: null text when not readable, null reply when none. */
  async content(record) {
    if (record.text !== undefined) return { text: record.text, reply: record.reply ?? null };
    if (record.hidden || record.state !== "ok" || !record.box) return { text: null, reply: null };
    const { text, reply } = await this.#sealed(record);
    return { text, reply: await this.#quoted(reply, record) };
  }

  async #sealed(record) {
    try {
      const { text, reply } = await this.vault.open(record.id, record.box);
      return { text, reply: reply ?? null };
    } catch {
      return { text: null, reply: null };
    }
  }

  /**
   * A reply's quote as shown. What the body quotes is the replier's say-so: when the message
   * it names is kept here (in this conversation, readable) its own author and words are
   * shown; otherwise the snippet, marked quotedBy: its author is the replier, not the one
   * the body claims.
   */
  async #quoted(reply, record) {
    if (!reply) return null;
    const original = await this.store.message(reply.id);
    if (original && original.peer === record.peer && !original.hidden && original.state === "ok") {
      const text = original.text ?? (original.box ? (await this.#sealed(original)).text : null);
      if (typeof text === "string") {
        const snippet = [...text].slice(0, QUOTE_CHARS).join("");
        return { id: reply.id, from: original.from, snippet, quotedBy: null };
      }
    }
    return { id: reply.id, from: record.from, snippet: reply.snippet, quotedBy: record.from };
  }

  /** Open again every message still pending (after the network came back). */
  async retryPending() {
    const opened = [];
    for (const record of await this.store.inState("pending")) opened.push(await this.open(record));
    return opened.filter((record) => record.state !== "pending");
  }

  /**
   * A notice in the conversation with peer that their keys changed, once per new key; placed
   * after everything seen so far (order). Resolves to the new record, or null if already there.
   */
  async keyNotice(peer, keys, order) {
    const id = `notice:keys:${peer}:${keys.encFingerprint}:${keys.signFingerprint}`;
    if (await this.store.message(id)) return null;
    const record = {
      id,
      peer,
      from: null,
      to: null,
      seq: null,
      ts: Date.now(),
      order,
      direction: "notice",
      status: null,
      state: "notice",
      notice: { kind: "keychange", verified: keys.verified },
    };
    await this.store.putMessage(record);
    return record;
  }
}
