/**
 * The outbox: messages written here wait in IndexedDB (store.js) until the server acknowledges
 * them, and go out oldest first whenever the socket has caught up ("synced"). Each is sent under
 * the id it was given when written, with the same envelope every time, so a retry after a lost
 * ack is recognised by the server and stored once (docs/protocol.md, "ack").
 *
 * One recipient's messages never overtake each other: if one cannot go yet (their keys cannot
 * be checked, or the user must first accept a verified contact's new keys), the later ones to
 * that recipient wait too; messages to others go on.
 *
 * Events: "failed" (detail {id, to, reason, code}) when a message will never go out;
 * "blocked" (detail {to}) when a recipient's messages wait for the user; "waiting" (detail
 * {to}) when the server holds too many of my messages the recipient has not received yet.
 */

import { ApiError, isTransient } from "../api.js";
import { DirectoryError, NoKeysError } from "../directory.js";
import { SendBlocked } from "./keys.js";
import { MessageTooLong } from "./messages.js";

const RETRY_MS = 3000;
// "queue_full": my messages wait for the recipient to come online; a receipt from them makes
// room at once (roomMade), so this is only the fallback.
const QUEUE_FULL_RETRY_MS = 30_000;
// Error codes after which the same frame would only be refused again.
const FINAL_CODES = new Set([
  "unknown_recipient",
  "self_recipient",
  "bad_field",
  "envelope_too_large",
  "unknown_type",
]);

export class Outbox extends EventTarget {
  #store;
  #socket;
  #messages;
  #inflight = new Set();
  #running = false;
  #again = false;
  #retryTimer = null;
  #retryAt = 0;
  #waitingForRoom = false;

  constructor({ store, socket, messages }) {
    super();
    this.#store = store;
    this.#socket = socket;
    this.#messages = messages;
    // A new connection has caught up: everything not yet acknowledged goes (again).
    socket.addEventListener("synced", () => {
      this.#inflight.clear();
      this.flush();
    });
  }

  /** Send what waits, oldest first; safe to call at any time (runs once at a time). */
  async flush() {
    if (this.#running) {
      this.#again = true;
      return;
    }
    this.#running = true;
    try {
      do {
        this.#again = false;
        await this.#sendWaiting();
      } while (this.#again);
    } finally {
      this.#running = false;
    }
  }

  async #sendWaiting() {
    const held = new Set();
    for (const entry of await this.#store.outbox()) {
      if (!this.#socket.online) return;
      if (held.has(entry.to) || this.#inflight.has(entry.id)) continue;
      const envelope = await this.#envelope(entry);
      if (envelope === null) {
        held.add(entry.to);
        continue;
      }
      if (this.#socket.send({ type: "send", id: entry.id, to: entry.to, envelope }))
        this.#inflight.add(entry.id);
    }
  }

  /** The entry's envelope, or null when it must wait (a failure is reported and final). */
  async #envelope(entry) {
    try {
      return await this.#messages.seal(entry);
    } catch (error) {
      if (error instanceof SendBlocked) {
        this.dispatchEvent(new CustomEvent("blocked", { detail: { to: entry.to } }));
      } else if (isTransient(error)) {
        this.#retryLater();
      } else {
        await this.#fail(entry, this.#reason(error, entry.to), error.code ?? null);
      }
      return null;
    }
  }

  #reason(error, to) {
    if (error instanceof ApiError && error.status === 404)
      return `There is no user called “${to}”.`;
    if (error instanceof NoKeysError) return `${to}: ${error.message} Nothing was sent.`;
    if (error instanceof DirectoryError) {
      return (
        `SecureChat could not confirm ${to}'s keys in the key directory, so nothing was sent. `
        + "The server may be giving out wrong keys."
      );
    }
    if (error instanceof MessageTooLong) return error.message;
    return "The message could not be encrypted.";
  }

  async #fail(entry, reason, code) {
    this.#inflight.delete(entry.id);
    await this.#store.failOutgoing(entry.id, reason);
    this.dispatchEvent(
      new CustomEvent("failed", { detail: { id: entry.id, to: entry.to, reason, code } }),
    );
  }

  /** Flush again after delay, unless a flush is already due sooner (one timer serves all). */
  #retryLater(delay = RETRY_MS) {
    const at = Date.now() + delay;
    if (this.#retryTimer !== null && this.#retryAt <= at) return;
    clearTimeout(this.#retryTimer);
    this.#retryAt = at;
    this.#retryTimer = setTimeout(() => {
      this.#retryTimer = null;
      this.flush();
    }, delay);
  }

  /** A receipt came for one of my messages: a recipient caught up, so a full queue has room. */
  roomMade() {
    if (!this.#waitingForRoom) return;
    this.#waitingForRoom = false;
    this.flush();
  }

  /** The server acknowledged id. */
  acknowledged(id) {
    this.#inflight.delete(id);
  }

  /**
   * The server answered id with an error frame: final ones fail the message, others send it
   * again shortly: "unavailable" (the database was busy) and "rate_limited". "queue_full" (too
   * many of my messages wait for the recipient, who has to come online and catch up first)
   * waits for a receipt, or 30 s; the message shows "Sending…" until then. Resolves to whether
   * it failed.
   */
  async refused(frame) {
    this.#inflight.delete(frame.id);
    if (frame.code === "queue_full") {
      this.#waitingForRoom = true;
      this.#retryLater(QUEUE_FULL_RETRY_MS);
      const entry = (await this.#store.outbox()).find((candidate) => candidate.id === frame.id);
      if (entry) this.dispatchEvent(new CustomEvent("waiting", { detail: { to: entry.to } }));
      return false;
    }
    if (!FINAL_CODES.has(frame.code)) {
      this.#retryLater();
      return false;
    }
    const entry = (await this.#store.outbox()).find((candidate) => candidate.id === frame.id);
    if (!entry) return false;
    const reason =
      frame.code === "unknown_recipient"
        ? `There is no user called “${entry.to}”. The message was not sent.`
        : `The server refused the message: ${frame.message}`;
    await this.#fail(entry, reason, frame.code);
    return true;
  }
}
