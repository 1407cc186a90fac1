/**
 * A conversation's history, page by page: what this browser keeps (store.js) first, then what
 * the server has (GET /api/v1/messages, newest first, bounded pages), each message stored and
 * opened once by id whichever way it came.
 */

import { describeError, isTransient, request } from "../api.js";
import { showError } from "../ui.js";
import { wellFormed } from "./messages.js";

export const PAGE = 50;

export class History {
  constructor({ store, messages }) {
    this.store = store;
    this.messages = messages;
  }

  /** Records with their text (null when not readable) and reply quote, for the thread view. */
  withText(records) {
    return Promise.all(
      records.map(async (record) => ({ ...record, ...(await this.messages.content(record)) })),
    );
  }

  /** Up to a page of what is kept here for peer, below order; with text. */
  async kept(peer, before = Infinity) {
    return this.withText(await this.store.thread(peer, { before, limit: PAGE }));
  }

  /**
   * A page from the server, seq below before (null: the newest); resolves to {records, more},
   * or null when it could not be had (offline: what is kept here has to do).
   */
  async fetch(peer, before = null) {
    const query = `with=${encodeURIComponent(peer)}&limit=${PAGE}${before === null ? "" : `&before=${before}`}`;
    let page;
    try {
      page = await request(`/api/v1/messages?${query}`);
    } catch (error) {
      if (!isTransient(error) && error.status !== 404) showError(describeError(error));
      return null;
    }
    const records = [];
    for (const item of page.messages.filter(wellFormed).reverse()) {
      records.push((await this.messages.receive(item, { history: item })).record);
    }
    return { records: await this.withText(records), more: Boolean(page.more) };
  }
}
