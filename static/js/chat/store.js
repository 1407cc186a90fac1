/**
 * The chat's local cache in IndexedDB: messages by conversation, the outbox, and small per-user
 * values (the sync cursor, the cache key). Every record carries its owner, so two people who use
 * one browser profile never see each other's data.
 *
 * Nothing readable is stored in the clear: a message's text is kept only sealed by vault.js
 * (AES-GCM under a key that only this user's private key unwraps). What stays in the clear is
 * the metadata the server has anyway: ids, names, sequence numbers, times and delivery status.
 *
 * Database "securechat-chat" (apart from keystore.js's "securechat", so neither module has to
 * know the other's schema versions):
 *   messages  [owner, id]    index "thread" [owner, peer, order]; index "state" [owner, state]
 *   outbox    [owner, id]    index "queue" [owner, createdAt]
 *   meta      [owner, name]  {value}
 *
 * Groups (static/js/groups/) use the same stores: a group's messages and notices are a thread
 * whose peer is "group:<hex id>"; meta "group:<hex id>" is the group's record (its chain, name
 * keys, sender and receiver chains), sealed by vault.js like message text; meta "groups" lists
 * the groups kept.
 */

const DB_NAME = "securechat-chat";
const DB_VERSION = 1;
// Messages not yet acknowledged sort after every stored one, in the order they were written.
export const PENDING_ORDER = 2 ** 52;

/** Open (and on first use create) the database. */
function openDatabase() {
  return new Promise((resolve, reject) => {
    const opening = indexedDB.open(DB_NAME, DB_VERSION);
    opening.onupgradeneeded = () => {
      const db = opening.result;
      const messages = db.createObjectStore("messages", { keyPath: ["owner", "id"] });
      messages.createIndex("thread", ["owner", "peer", "order"]);
      messages.createIndex("state", ["owner", "state"]);
      const outbox = db.createObjectStore("outbox", { keyPath: ["owner", "id"] });
      outbox.createIndex("queue", ["owner", "createdAt"]);
      db.createObjectStore("meta", { keyPath: ["owner", "name"] });
    };
    opening.onsuccess = () => resolve(opening.result);
    opening.onerror = () => reject(opening.error);
    opening.onblocked = () => reject(new Error("the chat cache is blocked by another tab"));
  });
}

/** A request's result as a promise. */
function done(request) {
  return new Promise((resolve, reject) => {
    request.onsuccess = () => resolve(request.result);
    request.onerror = () => reject(request.error);
  });
}

/** One user's view of the cache. Open it with ChatStore.open(owner). */
export class ChatStore {
  #db;

  constructor(db, owner) {
    this.#db = db;
    this.owner = owner;
    // Another tab upgrading the schema: step aside rather than block it.
    db.onversionchange = () => db.close();
  }

  static async open(owner) {
    return new ChatStore(await openDatabase(), owner);
  }

  /**
   * Run work(stores) in one transaction over the named stores; resolves with what work's
   * promise resolves to, once the transaction has committed. The outbox asks for strict
   * durability: a message accepted while offline must survive a crash.
   */
  async #transact(names, mode, work) {
    const tx = this.#db.transaction(names, mode, {
      durability: mode === "readwrite" ? "strict" : "default",
    });
    const stores = Object.fromEntries(names.map((name) => [name, tx.objectStore(name)]));
    const committed = new Promise((resolve, reject) => {
      tx.oncomplete = resolve;
      tx.onerror = () => reject(tx.error);
      tx.onabort = () => reject(tx.error ?? new Error("chat cache transaction aborted"));
    });
    let result;
    try {
      result = await work(stores);
    } catch (error) {
      committed.catch(() => {});
      try {
        tx.abort();
      } catch {
        // Already finished: nothing to undo.
      }
      throw error;
    }
    await committed;
    return result;
  }

  // --- meta -------------------------------------------------------------------------------

  async meta(name) {
    const record = await this.#transact(["meta"], "readonly", ({ meta }) =>
      done(meta.get([this.owner, name])),
    );
    return record?.value ?? null;
  }

  setMeta(name, value) {
    return this.#transact(["meta"], "readwrite", ({ meta }) =>
      done(meta.put({ owner: this.owner, name, value })),
    );
  }

  /** The last position synced (0 before the first sync). */
  async cursor() {
    return (await this.meta("cursor")) ?? null;
  }

  /** Keep the larger of the stored cursor and seq (several tabs may sync at once). */
  setCursor(seq) {
    return this.#transact(["meta"], "readwrite", async ({ meta }) => {
      const record = await done(meta.get([this.owner, "cursor"]));
      if ((record?.value ?? -1) < seq)
        await done(meta.put({ owner: this.owner, name: "cursor", value: seq }));
    });
  }

  // --- messages ---------------------------------------------------------------------------

  message(id) {
    return this.#transact(["messages"], "readonly", ({ messages }) =>
      done(messages.get([this.owner, id])),
    );
  }

  putMessage(record) {
    return this.#transact(["messages"], "readwrite", ({ messages }) =>
      done(messages.put({ ...record, owner: this.owner })),
    );
  }

  /**
   * Change the record of id with update(record) -> record | null (null: leave it), in one
   * transaction; resolves to the stored record, or null when there is none or nothing changed.
   */
  updateMessage(id, update) {
    return this.#transact(["messages"], "readwrite", async ({ messages }) => {
      const record = await done(messages.get([this.owner, id]));
      const changed = record ? update(record) : null;
      if (changed) await done(messages.put(changed));
      return changed;
    });
  }

  /** Up to limit records of the thread with peer whose order is below before, oldest first. */
  thread(peer, { before = Infinity, limit = 50 } = {}) {
    const range = IDBKeyRange.bound(
      [this.owner, peer, -Infinity],
      [this.owner, peer, before],
      false,
      true,
    );
    return this.#transact(
      ["messages"],
      "readonly",
      ({ messages }) =>
        new Promise((resolve, reject) => {
          const found = [];
          const cursor = messages.index("thread").openCursor(range, "prev");
          cursor.onerror = () => reject(cursor.error);
          cursor.onsuccess = () => {
            const at = cursor.result;
            if (!at || found.length >= limit) {
              resolve(found.reverse());
              return;
            }
            found.push(at.value);
            at.continue();
          };
        }),
    );
  }

  /** The newest record of the thread with peer, or null. */
  async last(peer) {
    return (await this.thread(peer, { limit: 1 }))[0] ?? null;
  }

  /** Every record in state (e.g. "pending": received, not yet verified). */
  inState(state) {
    return this.#transact(["messages"], "readonly", ({ messages }) =>
      done(messages.index("state").getAll([this.owner, state])),
    );
  }

  // --- outbox -----------------------------------------------------------------------------

  /** A message written here: its thread record and its outbox entry, stored together. */
  addOutgoing(record, entry) {
    return this.#transact(["messages", "outbox"], "readwrite", async ({ messages, outbox }) => {
      await done(messages.put({ ...record, owner: this.owner }));
      await done(outbox.put({ ...entry, owner: this.owner }));
    });
  }

  /** The outbox, oldest first. */
  outbox() {
    const range = IDBKeyRange.bound([this.owner, -Infinity], [this.owner, Infinity]);
    return this.#transact(["outbox"], "readonly", ({ outbox }) =>
      done(outbox.index("queue").getAll(range)),
    );
  }

  putOutbox(entry) {
    return this.#transact(["outbox"], "readwrite", ({ outbox }) =>
      done(outbox.put({ ...entry, owner: this.owner })),
    );
  }

  /**
   * The server has the message (an ack, or my own message replayed by a sync): record its
   * position, move its status on, and take it out of the outbox. Resolves to the record.
   */
  settleOutgoing(id, update) {
    return this.#transact(["messages", "outbox"], "readwrite", async ({ messages, outbox }) => {
      await done(outbox.delete([this.owner, id]));
      const record = await done(messages.get([this.owner, id]));
      if (!record) return null;
      const changed = update(record);
      if (changed) await done(messages.put(changed));
      return changed ?? record;
    });
  }

  /** The message will not be sent: out of the outbox, marked failed with a reason. */
  failOutgoing(id, reason) {
    return this.settleOutgoing(id, (record) => ({ ...record, status: "failed", error: reason }));
  }

  // --- housekeeping -----------------------------------------------------------------------

  /** Delete everything of this owner (the cache belongs to keys this browser no longer has). */
  clear() {
    const range = IDBKeyRange.bound([this.owner], [this.owner, []]);
    return this.#transact(["messages", "outbox", "meta"], "readwrite", async (stores) => {
      await Promise.all(Object.values(stores).map((store) => done(store.delete(range))));
    });
  }
}
