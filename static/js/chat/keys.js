/**
 * Contacts' public keys for the chat, always through directory.js: every key is checked against
 * the signed, append-only key log before it is used, and compared with the keys pinned for that
 * contact. Answers are kept for a short while per contact so a burst of messages costs one check.
 *
 * A change of a contact's keys is reported once per new key as a "keychange" event (detail
 * {peer, keys}); for a contact the user had verified, directory.js keeps the change pending
 * (keys.canSend false) until the user has looked at the new safety number and accepted it.
 * For anyone else the new keys are pinned at once: the notice in the conversation says so.
 */

import { KeyDirectory } from "../directory.js";

// Keys used to encrypt are at most this old; ones used to verify an incoming message, a little
// older (a failed check fetches them again at once).
const SEND_FRESH_MS = 10_000;
const READ_FRESH_MS = 120_000;

/** Sending to this contact waits until the user accepts their new keys. */
export class SendBlocked extends Error {
  constructor(peer) {
    super(`${peer}'s keys changed after you verified them`);
    this.name = "SendBlocked";
    this.peer = peer;
  }
}

export class KeyBook extends EventTarget {
  #cache = new Map(); // peer -> {keys, at}
  #pending = new Map(); // peer -> Promise of keys

  constructor(me, identity) {
    super();
    this.me = me;
    this.identity = identity;
    this.directory = new KeyDirectory({ me });
  }

  /** My public side, as verificationPanel wants it. */
  get mine() {
    return { username: this.me, encSpki: this.identity.encSpki, signSpki: this.identity.signSpki };
  }

  /**
   * peer's verified keys, fetched again if the copy kept is older than maxAge ms. Throws
   * DirectoryError (a failed check: use no key) or ApiError (404: no such user; 0: offline).
   */
  async get(peer, { maxAge = READ_FRESH_MS } = {}) {
    const kept = this.#cache.get(peer);
    if (kept && Date.now() - kept.at <= maxAge) return kept.keys;
    if (!this.#pending.has(peer)) {
      const fetching = this.#fetch(peer).finally(() => this.#pending.delete(peer));
      this.#pending.set(peer, fetching);
    }
    return this.#pending.get(peer);
  }

  /** Keys fresh enough to encrypt to; SendBlocked while a verified contact's change is pending. */
  async forSending(peer) {
    const keys = await this.get(peer, { maxAge: SEND_FRESH_MS });
    if (!keys.canSend) throw new SendBlocked(peer);
    return keys;
  }

  /** The copy kept for peer, if any (no network). */
  cached(peer) {
    return this.#cache.get(peer)?.keys ?? null;
  }

  async #fetch(peer) {
    const keys = await this.directory.fetchVerifiedKeys(peer);
    if (keys.state === "changed") {
      this.dispatchEvent(new CustomEvent("keychange", { detail: { peer, keys } }));
      // Not verified: nothing to re-check against, so the new keys become the pin (the
      // conversation says so). Verified: keep it pending until the user accepts it.
      if (keys.canSend) this.directory.acceptChange(peer);
    }
    this.#cache.set(peer, { keys, at: Date.now() });
    return keys;
  }

  /** Forget what is kept for peer (its keys may have changed). */
  invalidate(peer) {
    this.#cache.delete(peer);
  }

  /** What the verification panel shows for peer: from the directory now, unless fresh is false. */
  async panel(peer, { fresh = true } = {}) {
    const keys = await this.get(peer, fresh ? { maxAge: 0 } : {});
    const pin = this.directory.contact(peer);
    return { keys, pin, panel: await this.directory.verificationPanel(this.mine, keys) };
  }

  /** Record that the user compared the safety number with peer (or take it back). */
  markVerified(peer, verified) {
    this.directory.markVerified(peer, verified);
    this.invalidate(peer);
  }

  /** The user looked at peer's new safety number and accepts the new keys. */
  acceptChange(peer) {
    this.directory.acceptChange(peer);
    this.invalidate(peer);
  }

  /** The serious warning directory.js keeps (a forked log, a changed directory key), or null. */
  alarm() {
    return this.directory.alarm();
  }
}
