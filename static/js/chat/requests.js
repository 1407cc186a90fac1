/**
 * Who may message me, in the page (docs/protocol.md "Contacts and message requests"): accept,
 * delete or block a message request, start a conversation (which accepts the person), and the
 * names the recipient picker offers before anything is typed.
 *
 * The server keeps the decisions; here they change the conversation list's model
 * (conversations.js entries carry the server's `contact`), which sidebar.js draws: requests in
 * their own section, blocked and deleted ones not at all.
 */

import { describeError, request } from "../api.js";
import { showError } from "../ui.js";

const STATE_AFTER = { accept: "accepted", block: "blocked", delete: "deleted" };
// Names offered by the picker on focus, at most.
const SUGGESTIONS = 8;

/** What "Block" and "Delete" say before they act: each is hard to undo from the page. */
export const CONFIRM = {
  block: (peer) =>
    `Block ${peer}? Their messages will no longer reach you and neither of you will see the `
    + "other online or typing. They are not told.",
  delete: (peer) =>
    `Delete the request from ${peer}? It leaves your list; a new message from them brings it back.`,
};

export class Requests {
  /**
   * conversations: the list's model; onGone(peer): the conversation left the list (the page
   * closes it if it is open); confirm(text): asks before Block and Delete.
   */
  constructor({ conversations, onGone, confirm = (text) => window.confirm(text) }) {
    Object.assign(this, { conversations, onGone, confirm });
  }

  /** Accept, delete or block peer's request (the latter two after a confirmation). */
  async decide(peer, action) {
    if (CONFIRM[action] && !this.confirm(CONFIRM[action](peer))) return false;
    try {
      await request("/api/v1/contacts", { method: "POST", body: { user: peer, action } });
    } catch (error) {
      showError(describeError(error));
      return false;
    }
    this.conversations.set(peer, { contact: STATE_AFTER[action] });
    this.conversations.render();
    if (action !== "accept") this.onGone(peer);
    return true;
  }

  /** I chose to write to peer: they become my contact (as my first message would make them). */
  async start(peer) {
    if (this.conversations.get(peer)?.contact === "accepted") return;
    try {
      await request("/api/v1/contacts", { method: "POST", body: { user: peer, action: "accept" } });
      this.conversations.set(peer, { contact: "accepted" });
    } catch {
      // Offline, or no such user (the thread says so): the first message accepts them anyway.
    }
  }

  /** I wrote to peer: that accepts a request of theirs (the server records it with the message). */
  wrote(peer) {
    if (this.conversations.get(peer)?.contact === "request")
      this.conversations.set(peer, { contact: "accepted" });
  }

  /** The people the picker offers on focus: my conversations, then my other contacts. */
  async suggestions() {
    const mine = this.conversations
      .peers()
      .filter((entry) => !["request", "blocked", "deleted"].includes(entry.contact))
      .map((entry) => entry.peer);
    let contacts = [];
    try {
      contacts = (await request(`/api/v1/contacts?limit=${SUGGESTIONS}`)).contacts;
    } catch {
      // offline: the conversations alone
    }
    return [...new Set([...mine, ...contacts])].slice(0, SUGGESTIONS);
  }
}
