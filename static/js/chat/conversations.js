/**
 * The conversation list's model: one entry per person I write with (unread count, presence,
 * the last message as a preview), kept in step with the server and drawn by sidebar.js.
 *
 * Unread counts: the server's, read after each sync (it has counted what the sync replayed),
 * plus one for each live message that arrives while its conversation is not on screen.
 */

import { describeError, request } from "../api.js";
import { showError } from "../ui.js";
import { wellFormed } from "./messages.js";

const PREVIEW_CHARS = 80;
// Records looked through for the newest one not deleted (a run of deletes longer leaves it empty).
const PREVIEW_SCAN = 50;
const REFRESH_MS = 300;
// A browser new to the account has no messages kept: the last one of each of this many
// conversations is fetched (one small request each, one at a time) for its preview and time.
const PREVIEWS_FETCHED = 20;

export class Conversations {
  #entries = new Map(); // peer -> {peer, unread, online, preview, lastAt, order}
  #refreshTimer = null;
  #live = false;

  /**
   * messages: for previews; view: a ConversationList; current(): the peer on screen, or null;
   * onChange(): called after each drawing (the thread's header may follow).
   */
  constructor({ store, messages, view, placeholderTitle, current, onChange }) {
    Object.assign(this, { store, messages, view, placeholderTitle, current, onChange });
  }

  /** The first list from the server and what waits in the outbox; resolves to the server's rows. */
  async load() {
    let rows = [];
    try {
      rows = (await request("/api/v1/conversations")).conversations;
    } catch (error) {
      if (error.status !== 401) showError(describeError(error)); // 401: the page says "logged out"
    }
    for (const row of rows)
      this.set(row.peer, {
        unread: row.unread,
        online: row.online,
        order: row.last_seq,
        contact: row.contact,
      });
    for (const entry of await this.store.outbox()) this.set(entry.to, {});
    await Promise.all([...this.#entries.keys()].map((peer) => this.preview(peer)));
    this.#live = true;
    this.render();
    this.#fetchMissingPreviews();
    return rows;
  }

  /** The last message of each conversation this browser keeps nothing of, from the server. */
  async #fetchMissingPreviews() {
    const missing = [...this.#entries.values()].filter((entry) => entry.lastAt === null);
    for (const { peer } of missing.slice(0, PREVIEWS_FETCHED)) {
      let page;
      try {
        page = await request(`/api/v1/messages?with=${encodeURIComponent(peer)}&limit=1`);
      } catch {
        return; // offline or refused: opening the conversation fetches its history anyway
      }
      const item = page.messages.find(wellFormed);
      if (!item || this.get(peer)?.lastAt !== null) continue;
      const { record } = await this.messages.receive(item, { history: item });
      await this.preview(peer, record);
      this.render();
    }
  }

  get(peer) {
    return this.#entries.get(peer) ?? null;
  }

  /** Every entry, most recent first. */
  peers() {
    return [...this.#entries.values()].sort((a, b) => b.order - a.order);
  }

  /** Change peer's entry (made if new: then the server is asked who is online). */
  set(peer, changes) {
    const known = this.#entries.get(peer);
    if (!known && this.#live) this.refresh();
    const base = known ?? { peer, unread: 0, online: null, preview: "", lastAt: null, order: 0 };
    // A deleted request whose sender writes again is a request again (requests.js).
    const again = base.contact === "deleted" && (changes.order ?? 0) > base.order;
    this.#entries.set(peer, {
      ...base,
      ...(again ? { contact: "request" } : {}),
      ...changes,
      order: Math.max(base.order, changes.order ?? 0),
    });
  }

  /** One more unread message from peer. */
  addUnread(peer) {
    this.set(peer, { unread: (this.get(peer)?.unread ?? 0) + 1 });
  }

  /** The last message of peer's thread (record, or the newest kept) as the preview. */
  async preview(peer, record = null) {
    // Deleted messages and tombstones are kept hidden: the newest one shown is the preview.
    const kept = record ? [record] : await this.store.thread(peer, { limit: PREVIEW_SCAN });
    const last = kept.findLast((candidate) => !candidate.hidden);
    if (!last && kept.length > 0) {
      this.set(peer, { preview: "" }); // everything here was deleted: nothing to quote
      return;
    }
    if (!last || last.direction === "notice") return;
    const text = await this.messages.text(last);
    const preview =
      text === null ? "Message not shown" : `${last.direction === "out" ? "You: " : ""}${text}`;
    this.set(peer, {
      preview: preview.slice(0, PREVIEW_CHARS),
      lastAt: last.ts ?? last.writtenMs,
      order: last.seq ?? this.#pendingOrder(peer),
    });
  }

  /**
   * Where a conversation whose newest message is not yet stored by the server sorts: above
   * every position known now, yet below the next one the server gives out (positions are
   * whole numbers), so a message that arrives later still lands above it.
   */
  #pendingOrder(peer) {
    const own = this.get(peer)?.order ?? 0;
    const top = Math.max(0, ...[...this.#entries.values()].map((entry) => entry.order));
    if (own === top && top % 1 !== 0) return own; // already on top, waiting
    const whole = Math.floor(top);
    return top === whole ? whole + 0.5 : whole + (top - whole + 1) / 2;
  }

  /**
   * Ask the server for unread counts and presence (presence is pushed only when it changes,
   * so a conversation new here learns it this way). The one on screen keeps 0 unread.
   */
  refresh() {
    clearTimeout(this.#refreshTimer);
    this.#refreshTimer = setTimeout(async () => {
      let rows;
      try {
        rows = (await request("/api/v1/conversations")).conversations;
      } catch {
        return; // offline: the next sync asks again
      }
      for (const row of rows) {
        const reading = row.peer === this.current() && document.visibilityState === "visible";
        this.set(row.peer, {
          online: row.online,
          contact: row.contact,
          ...(reading ? {} : { unread: row.unread }),
        });
      }
      this.render();
    }, REFRESH_MS);
  }

  /** Draw the list, most recent first; the unread total goes in the tab's title. */
  render() {
    const sorted = [...this.#entries.values()].sort((a, b) => b.order - a.order);
    this.view.render(sorted, this.current());
    const unread = sorted.reduce((sum, entry) => sum + entry.unread, 0);
    document.title = `${unread ? `(${unread}) ` : ""}Chat · SecureChat`;
    this.placeholderTitle.textContent = sorted.length
      ? "Choose a conversation"
      : "No conversations yet";
    this.onChange();
  }
}
