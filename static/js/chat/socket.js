/**
 * The chat's WebSocket (docs/protocol.md, "Real-time chat"): connect, sync from the last
 * position this browser kept, hand frames over strictly one at a time, stay within the server's
 * frame rate, and reconnect with exponential backoff and full jitter when the line drops.
 *
 * The socket is opened as /ws?after=<cursor>: the server replays every position above the
 * cursor, then "synced", then live frames, so frames arrive in strictly increasing position and
 * the cursor can follow each "message", "receipt", "ack" and group frame (docs/protocol.md,
 * "Positions, and the cursor"). It moves only after the frame has been handled, so a crash never skips one.
 *
 * Events: "state" (detail {state, retryAt, code, reason}) with state "connecting", "syncing",
 * "online", "offline" (a retry is scheduled at retryAt) or "closed" (the server refused us,
 * e.g. too many connections: no automatic retry) or "stopped" (stop() was called); "synced"
 * once each connection has caught up.
 */

// AWS Architecture Blog, "Exponential Backoff And Jitter": full jitter spreads the reconnects
// of many clients after a server restart.
const BACKOFF_BASE_MS = 500;
const BACKOFF_CAP_MS = 30_000;
const BACKOFF_FLOOR_MS = 250;
// At most this often; more often when the server's idle window is short: the server closes a
// socket it has heard nothing from for ws_idle_timeout, so it never takes a live page for gone.
const PING_EVERY_MS = 25_000;
const PONG_TIMEOUT_MS = 10_000;
// The server closes a connection past 50 frames/s after a burst of 100 (close 1008): stay well
// below, so a backlog of receipts never costs the connection.
const RATE_PER_S = 20;
const BURST = 40;
const SEEN_IDS_MAX = 10_000;
// RFC 6455 7.4.1: 1008 is policy (flood, session ended, too many connections). The protocol
// says a client does not reconnect after it on its own.
const POLICY_VIOLATION = 1008;
// The frames that take a position of mine (docs/protocol.md, "Positions" and "Group positions").
const POSITIONED = new Set([
  "message",
  "receipt",
  "ack",
  "group_message",
  "group_keys",
  "group_entry",
]);

/** The delay before reconnect attempt n (0-based): uniform in [floor, min(cap, base * 2^n)]. */
export function backoffDelay(attempt, random = Math.random) {
  const ceiling = Math.min(BACKOFF_CAP_MS, BACKOFF_BASE_MS * 2 ** attempt);
  return Math.max(BACKOFF_FLOOR_MS, Math.round(random() * ceiling));
}

export class ChatSocket extends EventTarget {
  #url;
  #loadCursor;
  #saveCursor;
  #onFrame;
  #pingEveryMs;
  #conn = null;
  #state = "idle";
  #attempt = 0;
  #retryTimer = null;
  #retryAt = null;
  #chain = Promise.resolve();
  #queue = [];
  #tokens = BURST;
  #refilledAt = 0;
  #pumpTimer = null;
  #seen = new Set();

  /**
   * url: the ws(s) URL; loadCursor() and saveCursor(seq): the persisted position;
   * onFrame(frame, {replay}): handles one frame (awaited; frames are never handled concurrently);
   * replay is true until this connection's sync has caught up; idleMs: the server's idle
   * window (ws_idle_timeout), pinged three times within it.
   */
  constructor({ url, loadCursor, saveCursor, onFrame, idleMs = Infinity }) {
    super();
    this.#pingEveryMs = Math.max(1000, Math.min(PING_EVERY_MS, Math.floor(idleMs / 3)));
    this.#url = url;
    this.#loadCursor = loadCursor;
    this.#saveCursor = saveCursor;
    this.#onFrame = onFrame;
    window.addEventListener("online", () => this.retryNow());
    document.addEventListener("visibilitychange", () => {
      if (document.visibilityState === "visible") this.retryNow();
    });
  }

  get state() {
    return this.#state;
  }

  /** True once this connection has caught up: frames sent now are answered in order. */
  get online() {
    return this.#state === "online";
  }

  start() {
    if (this.#state === "idle") this.#connect();
  }

  /** Close for good (the session ended): no more retries. */
  stop() {
    clearTimeout(this.#retryTimer);
    const conn = this.#conn;
    this.#conn = null;
    this.#state = "stopped";
    if (conn && !conn.ended) {
      conn.ended = true;
      clearInterval(conn.pingTimer);
      clearTimeout(conn.pongTimer);
      conn.ws?.close();
    }
    this.dispatchEvent(new CustomEvent("state", { detail: { state: "stopped" } }));
  }

  /** Reconnect at once if waiting to retry (the network is back, the user asked). */
  retryNow() {
    if (this.#state !== "offline" && this.#state !== "closed") return;
    clearTimeout(this.#retryTimer);
    this.#attempt = 0;
    this.#connect();
  }

  /**
   * Queue a frame for the current connection. Frames go out in order, paced under the
   * server's rate limit. Returns false (and drops the frame) when not connected: the caller
   * keeps what must not be lost (the outbox resends, receipts are sent again on sync).
   */
  send(frame) {
    if (!this.#conn?.open) return false;
    this.#queue.push(JSON.stringify(frame));
    this.#pump();
    return true;
  }

  #setState(state, extra = {}) {
    this.#state = state;
    this.dispatchEvent(
      new CustomEvent("state", { detail: { state, retryAt: this.#retryAt, ...extra } }),
    );
  }

  async #connect() {
    this.#retryAt = null;
    this.#setState("connecting");
    const conn = {
      ws: null,
      open: false,
      synced: false,
      pingTimer: null,
      pongTimer: null,
      ended: false,
    };
    this.#conn = conn;
    let after;
    try {
      after = await this.#loadCursor();
    } catch {
      this.#ended(conn, 1006, ""); // storage failed: try again later, as for a lost line
      return;
    }
    if (this.#conn !== conn) return; // stopped meanwhile
    const ws = new WebSocket(`${this.#url}?after=${after}`);
    conn.ws = ws;
    ws.addEventListener("open", () => this.#opened(conn));
    ws.addEventListener("message", (event) => this.#received(conn, event.data));
    ws.addEventListener("close", (event) => this.#ended(conn, event.code, event.reason));
  }

  #opened(conn) {
    conn.open = true;
    this.#setState("syncing");
    conn.pingTimer = setInterval(() => this.#ping(conn), this.#pingEveryMs);
  }

  #received(conn, data) {
    let frame;
    try {
      frame = JSON.parse(data);
    } catch {
      return; // not JSON: nothing a client could do with it
    }
    if (frame?.type === "pong") {
      clearTimeout(conn.pongTimer);
      return;
    }
    this.#chain = this.#chain
      .then(() => this.#handle(conn, frame))
      .catch((error) => {
        // The frame could not be kept (storage failed): start over from the cursor.
        this.dispatchEvent(new CustomEvent("failure", { detail: error }));
        this.#drop(conn);
      });
  }

  async #handle(conn, frame) {
    if (frame.type === "synced") {
      await this.#saveCursor(frame.seq);
      conn.synced = true;
      this.#attempt = 0;
      if (!conn.ended) this.#setState("online");
      this.dispatchEvent(new Event("synced"));
      return;
    }
    const positioned = POSITIONED.has(frame.type) && Number.isSafeInteger(frame.seq);
    const once = frame.type === "message" || frame.type === "group_message";
    const duplicate = once && this.#seen.has(frame.id);
    if (!duplicate) await this.#onFrame(frame, { replay: !conn.synced });
    if (once) this.#remember(frame.id);
    if (positioned) await this.#saveCursor(frame.seq);
  }

  #remember(id) {
    this.#seen.add(id);
    if (this.#seen.size > SEEN_IDS_MAX) this.#seen.delete(this.#seen.values().next().value);
  }

  #ping(conn) {
    if (!conn.open || conn.ended) return;
    this.#take();
    conn.ws.send(JSON.stringify({ type: "ping" }));
    clearTimeout(conn.pongTimer);
    // No answer: the line is dead even if the browser has not noticed. Start again.
    conn.pongTimer = setTimeout(() => this.#drop(conn), PONG_TIMEOUT_MS);
  }

  /** Give up on conn now, without waiting for a closing handshake over a dead line. */
  #drop(conn) {
    if (conn.ended) return;
    try {
      conn.ws.close();
    } catch {
      // Already closing.
    }
    this.#ended(conn, 1006, "");
  }

  #ended(conn, code, reason) {
    if (conn.ended) return;
    conn.ended = true;
    conn.open = false;
    clearInterval(conn.pingTimer);
    clearTimeout(conn.pongTimer);
    if (this.#conn !== conn) return;
    this.#queue = [];
    clearTimeout(this.#pumpTimer);
    this.#pumpTimer = null;
    if (code === POLICY_VIOLATION) {
      this.#setState("closed", { code, reason });
      return;
    }
    const delay = backoffDelay(this.#attempt);
    this.#attempt = Math.min(this.#attempt + 1, 16);
    this.#retryAt = Date.now() + delay;
    this.#retryTimer = setTimeout(() => this.#connect(), delay);
    this.#setState("offline", { code, reason, opened: conn.synced });
  }

  // --- pacing (a token bucket, as the server's) ---------------------------------------

  #refill() {
    const now = performance.now();
    this.#tokens = Math.min(BURST, this.#tokens + ((now - this.#refilledAt) / 1000) * RATE_PER_S);
    this.#refilledAt = now;
  }

  /** Spend a token for a frame sent outside the queue (sync, ping). */
  #take() {
    this.#refill();
    this.#tokens -= 1;
  }

  #pump() {
    if (this.#pumpTimer !== null) return;
    this.#refill();
    while (this.#queue.length > 0 && this.#tokens >= 1 && this.#conn?.open) {
      this.#tokens -= 1;
      this.#conn.ws.send(this.#queue.shift());
    }
    if (this.#queue.length > 0 && this.#conn?.open) {
      const wait = Math.ceil(((1 - this.#tokens) / RATE_PER_S) * 1000);
      this.#pumpTimer = setTimeout(() => {
        this.#pumpTimer = null;
        this.#pump();
      }, wait);
    }
  }
}
