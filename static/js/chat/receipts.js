/**
 * Receipts I send: a message to me is marked "delivered" once it is stored here and "read" once
 * its conversation is on screen in a visible tab. Read implies delivered on the server, so a
 * message read at once is marked only "read". Each mark goes out at most once per message; one
 * that cannot go (no connection) is tried again the next time.
 */

const RANK = { delivered: 1, read: 2 };

export class Receipts {
  constructor({ socket, store }) {
    this.socket = socket;
    this.store = store;
  }

  /** Mark record (a message to me) with status, unless it already has that or more. */
  async mark(record, status) {
    if (record.direction !== "in" || !Number.isSafeInteger(record.seq)) return;
    if ((RANK[record.marked] ?? 0) >= RANK[status]) return;
    if (!this.socket.send({ type: status, seq: record.seq })) return;
    record.marked = status;
    await this.store.updateMessage(record.id, (stored) => ({ ...stored, marked: status }));
  }

  /** Mark every message to me among records as read. */
  markRead(records) {
    for (const record of records) this.mark(record, "read");
  }
}
