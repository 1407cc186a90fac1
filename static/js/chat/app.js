/**
 * The chat page's controller: the socket, the outbox, the messages and the views, and what
 * happens between them. The pieces do the work; this module decides when.
 */

import { ApiError, describeError, isTransient, request } from "../api.js";
import { DirectoryError, NoKeysError } from "../directory.js";
import { showError, showInfo } from "../ui.js";
import { Conversations } from "./conversations.js";
import { GroupsUI } from "./groups.js";
import { History, PAGE } from "./history.js";
import { KeyBook } from "./keys.js";
import { Messages, wellFormed } from "./messages.js";
import { Notifier } from "./notify.js";
import { Outbox } from "./outbox.js";
import { Receipts } from "./receipts.js";
import { Requests } from "./requests.js";
import { ConnectionStatus, ConversationList, RecipientPicker } from "./sidebar.js";
import { ChatSocket } from "./socket.js";
import { ChatStore } from "./store.js";
import { Vault } from "./vault.js";
import { VerifyPanel } from "./verify.js";
import { Composer, ThreadView } from "./view.js";

const TYPING_SEND_EVERY_MS = 3000;
const TYPING_SHOWN_MS = 6000;
// A reply quotes at most this much of the message it answers (crypto.REPLY_SNIPPET_MAX).
const SNIPPET_CHARS = 140;
// Delete for everyone is offered this long after the server stored a message (chat.html gives
// the server's SECURECHAT_DELETE_WINDOW; the server decides in the end).
const DELETE_WINDOW_MS = 3600 * 1000;
// How often the open page re-reads the key log for entries under my name.
const SELF_CHECK_EVERY_MS = 10 * 60 * 1000;

const byId = (id) => document.getElementById(id);

export class ChatApp {
  #current = null;
  #typingTimer = null;
  #typingSentAt = 0;
  #offlineToast = null;
  #closedToast = null;
  #offlineSaid = false;
  #storageSaid = false;
  #maxSeq = 0;
  #opening = 0;
  #toldWaiting = new Set();
  #deleting = new Map(); // id -> my message asked to be deleted for everyone, until answered

  constructor({ me, identity }) {
    this.me = me;
    this.identity = identity;
    this.root = byId("chat-app");
  }

  async start() {
    this.store = await ChatStore.open(this.me);
    const { vault, keysChanged } = await Vault.open(this.store, this.identity);
    this.keys = new KeyBook(this.me, this.identity);
    this.messages = new Messages({
      me: this.me,
      identity: this.identity,
      store: this.store,
      vault,
      keys: this.keys,
    });
    this.history = new History({ store: this.store, messages: this.messages });
    this.#buildViews();
    if (keysChanged) this.#banner("mine");
    this.#checkDirectory();
    setInterval(() => this.#checkDirectory(), SELF_CHECK_EVERY_MS);
    this.keys.addEventListener("keychange", (event) => this.#keyChanged(event.detail));
    const rows = await this.conversations.load();
    // A browser new to this account starts from the newest position: the history of each
    // conversation comes page by page when it is opened, not all at once.
    if ((await this.store.cursor()) === null) await this.store.setCursor(rows[0]?.last_seq ?? 0);
    this.#maxSeq = await this.store.cursor();
    this.#startSocket();
    await this.groups.start(this.socket);
    document.addEventListener("visibilitychange", () => this.#markThreadRead());
    window.addEventListener("securechat:logout", () => this.socket.stop());
    this.root.dataset.ready = "true";
  }

  // --- views ---------------------------------------------------------------------------

  #buildViews() {
    this.conversations = new Conversations({
      store: this.store,
      messages: this.messages,
      placeholderTitle: byId("chat-placeholder-title"),
      view: new ConversationList({
        list: byId("conversation-list"),
        empty: byId("conversations-empty"),
        onOpen: (peer) => this.open(peer),
        requests: { section: byId("requests"), list: byId("request-list") },
        onDecide: (peer, action) => this.requests.decide(peer, action),
      }),
      current: () => this.#current,
      onChange: () => this.#header(),
    });
    this.requests = new Requests({
      conversations: this.conversations,
      onGone: (peer) => peer === this.#current && this.#close(),
    });
    this.picker = new RecipientPicker({
      form: byId("recipient-form"),
      input: byId("recipient-search"),
      listbox: byId("recipient-options"),
      empty: byId("recipient-none"),
      search: async (prefix, limit) =>
        (await request(`/api/v1/users?q=${encodeURIComponent(prefix)}&limit=${limit}`)).users,
      onPick: async (peer) => {
        await this.requests.start(peer); // writing to someone accepts them
        this.open(peer);
      },
      suggest: () => this.requests.suggestions(),
      onUnknown: (name) =>
        showError(`There is no user called “${name}”. Check the spelling of the username.`),
    });
    this.connection = new ConnectionStatus({
      root: byId("connection"),
      text: byId("connection-text"),
      wait: byId("connection-wait"),
      retry: byId("connection-retry"),
      onRetry: () => this.socket.retryNow(),
    });
    this.thread = new ThreadView({
      list: byId("messages"),
      scroller: byId("thread-scroll"),
      older: byId("load-older"),
      actions: {
        onReply: (item) => this.#replyTo(item),
        onDelete: (item, mode) =>
          mode === "everyone" ? this.#deleteForEveryone(item) : this.#deleteForMe(item.id),
        canDeleteForEveryone: (item) => this.#mayDeleteForEveryone(item),
      },
    });
    byId("load-older").addEventListener("click", () => this.#loadOlder());
    // Scrolling up to the top of the thread loads older messages too.
    byId("thread-scroll").addEventListener(
      "scroll",
      (event) => {
        const older = byId("load-older");
        if (event.currentTarget.scrollTop < 48 && !older.hidden && !older.disabled)
          this.#loadOlder();
      },
      { passive: true },
    );
    this.composer = new Composer({
      form: byId("composer"),
      field: byId("composer-text"),
      button: byId("composer-send"),
      blockedNote: byId("send-blocked"),
      counter: byId("composer-count"),
      onSend: (text, reply) => this.#send(text, reply),
      onTyping: () => this.#typing(),
    });
    this.verify = new VerifyPanel({
      dialog: byId("verify-dialog"),
      load: (peer, options) => this.keys.panel(peer, options),
      onMark: (peer, verified) =>
        this.#afterVerification(peer, () => this.keys.markVerified(peer, verified)),
      onAccept: (peer) => this.#afterVerification(peer, () => this.keys.acceptChange(peer)),
    });
    byId("verify-open").addEventListener("click", () => this.verify.open(this.#current));
    byId("send-blocked-review").addEventListener("click", () =>
      this.groups.current === null ? this.verify.open(this.#current) : this.groups.openMembers(),
    );
    this.groups = new GroupsUI({
      me: this.me,
      identity: this.identity,
      store: this.store,
      vault: this.messages.vault,
      keys: this.keys,
      thread: this.thread,
      composer: this.composer,
      verify: this.verify,
      onOpenThread: () => this.#showGroupPane(),
      onAccept: (peer) => this.requests.start(peer),
    });
    byId("thread-back").addEventListener("click", () => this.#close());
    this.notifier = new Notifier({
      me: this.me,
      enable: byId("notify-enable"),
      state: byId("notify-state"),
      previews: byId("notify-previews"),
      sound: byId("notify-sound"),
      onOpen: (peer) => this.open(peer),
    });
  }

  /** A serious notice above the chat: the key directory misbehaved, or my own keys changed. */
  #banner(kind, message = "") {
    const node = byId(kind === "mine" ? "chat-mykeys" : "chat-alarm");
    node.hidden = false;
    if (kind === "alarm") {
      node.querySelector("[data-detail]").textContent = message;
    }
  }

  async #checkDirectory() {
    // The head's signature and consistency first (checkMyEntries checks it itself), then keys
    // logged under my name that I do not hold: only I can notice (directory.js sets the
    // alarm). Offline or refused: checked again next time.
    await this.keys.directory.checkMyEntries(this.keys.mine).catch(() => {});
    const alarm = this.keys.alarm();
    if (alarm) this.#banner("alarm", alarm.message);
  }

  // --- the open conversation ---------------------------------------------------------

  /** Show the conversation with peer: what is kept here at once, then what the server adds. */
  async open(peer) {
    this.groups.leave();
    const opening = ++this.#opening;
    this.#current = peer;
    this.conversations.set(peer, { unread: 0 });
    this.conversations.render();
    this.#showThread(peer);
    const kept = await this.history.kept(peer);
    if (opening !== this.#opening) return;
    this.thread.upsert(kept, { follow: true });
    this.thread.setMore(kept.length >= PAGE);
    await this.#refreshKeys(peer);
    const page = await this.history.fetch(peer);
    if (opening !== this.#opening) return;
    if (page) {
      this.thread.upsert(page.records);
      this.thread.setMore(page.more || kept.length >= PAGE);
      await this.conversations.preview(peer);
    }
    this.#markThreadRead();
  }

  /** A group's thread takes the pane (groups.js fills it): no pair conversation is open. */
  #showGroupPane() {
    this.#current = null;
    this.#opening += 1;
    this.root.dataset.view = "thread";
    byId("chat-placeholder").hidden = true;
    byId("thread").hidden = false;
    this.#showTyping(null);
    this.composer.setBlocked(false);
    this.conversations.render();
  }

  #showThread(peer) {
    this.root.dataset.view = "thread";
    byId("chat-placeholder").hidden = true;
    byId("thread").hidden = false;
    byId("thread-title").textContent = peer;
    byId("composer-text").setAttribute("aria-label", `Message to ${peer}`);
    byId("send-blocked-text").textContent =
      `Sending to ${peer} is paused: their keys changed after you verified them. Compare the new safety number first.`;
    this.#header();
    this.thread.reset(peer);
    this.#showTyping(null);
    this.composer.setBlocked(false);
    if (window.matchMedia("(min-width: 40.01rem)").matches) byId("composer-text").focus();
  }

  #close() {
    this.groups.leave();
    this.#current = null;
    this.#opening += 1;
    this.root.dataset.view = "list";
    byId("thread").hidden = true;
    byId("chat-placeholder").hidden = false;
    this.conversations.render();
    byId("conversation-list").querySelector("button")?.focus();
  }

  #header() {
    const peer = this.#current;
    if (peer === null) return;
    const online = this.conversations.get(peer)?.online ?? null;
    const presence = byId("thread-presence");
    presence.hidden = online === null;
    presence.dataset.online = String(Boolean(online));
    presence.textContent = online ? "Online" : "Offline";
    const keys = this.keys.cached(peer);
    byId("thread-verified").hidden = !keys?.verified || !keys.canSend;
  }

  async #refreshKeys(peer) {
    try {
      const keys = await this.keys.get(peer, { maxAge: 0 });
      if (peer !== this.#current) return;
      this.composer.setBlocked(!keys.canSend);
      this.#header();
    } catch (error) {
      if (peer !== this.#current || isTransient(error)) return;
      if (error instanceof ApiError && error.status === 404) {
        showError(`There is no user called “${peer}”.`);
      } else if (error instanceof NoKeysError) {
        // A proved tombstone: nothing can be encrypted to them (account deleted, keys withdrawn);
        // a message sent anyway fails with the same words (outbox.js).
        showError(`${peer}: ${error.message}`);
      } else if (error instanceof DirectoryError) {
        showError(
          `SecureChat could not confirm ${peer}'s keys in the key directory (${error.code}). `
            + "Nothing can be sent to them or read from them until it can. The server may be giving out wrong keys.",
        );
        this.#checkDirectory();
      }
    }
  }

  /** The page before the oldest message shown: from the server, then what is kept here. */
  async #loadOlder() {
    if (this.groups.current !== null) {
      await this.groups.loadOlder();
      return;
    }
    const peer = this.#current;
    const button = byId("load-older");
    button.disabled = true;
    const oldest = this.thread.oldestSeq();
    const page = oldest === null ? null : await this.history.fetch(peer, oldest);
    const kept = await this.history.kept(peer, this.thread.items()[0]?.order ?? Infinity);
    if (peer === this.#current) {
      this.thread.upsert([...(page?.records ?? []), ...kept]);
      this.thread.setMore(Boolean(page?.more) || kept.length >= PAGE);
      this.#markThreadRead();
    }
    button.disabled = false;
  }

  // --- the socket ----------------------------------------------------------------------

  #startSocket() {
    const scheme = window.location.protocol === "https:" ? "wss" : "ws";
    this.socket = new ChatSocket({
      url: `${scheme}://${window.location.host}/ws`,
      loadCursor: async () => (await this.store.cursor()) ?? 0,
      saveCursor: (seq) => {
        this.#maxSeq = Math.max(this.#maxSeq, seq);
        return this.store.setCursor(seq);
      },
      onFrame: (frame, context) => this.#frame(frame, context),
      idleMs: Number(this.root.dataset.wsIdleMs) || undefined,
    });
    this.outbox = new Outbox({ store: this.store, socket: this.socket, messages: this.messages });
    this.receipts = new Receipts({ socket: this.socket, store: this.store });
    this.outbox.addEventListener("failed", (event) => this.#failed(event.detail));
    this.outbox.addEventListener("blocked", (event) => {
      if (event.detail.to === this.#current) this.composer.setBlocked(true);
    });
    this.outbox.addEventListener("waiting", (event) => this.#waiting(event.detail.to));
    this.socket.addEventListener("state", (event) => this.#socketState(event.detail));
    this.socket.addEventListener("synced", () => this.#synced());
    this.socket.addEventListener("failure", () => {
      if (this.#storageSaid) return;
      this.#storageSaid = true;
      showError(
        "This browser could not store a message, so the chat will catch up again shortly. If this keeps "
          + "happening, the browser's storage may be full.",
      );
    });
    this.socket.start();
  }

  #socketState(detail) {
    this.connection.show(detail);
    if (detail.state === "online") {
      // Back online: what was said about being offline is no longer true.
      this.#offlineSaid = false;
      this.#offlineToast?.remove();
      this.#closedToast?.remove();
      this.#offlineToast = this.#closedToast = null;
    }
    if (detail.state === "offline" || detail.state === "closed") this.#checkSession(detail);
  }

  /**
   * After a refused or ended connection: if the session is over (logged out here or elsewhere,
   * revoked, expired), stop, take every decrypted word off the page and leave for the log-in
   * page, which says why. Whoever finds the screen after a remote log-out finds nothing to read.
   */
  async #checkSession(detail) {
    try {
      await request("/api/v1/me");
    } catch (error) {
      if (error.status === 401) {
        this.#ended();
        return;
      }
    }
    if (detail.state === "closed") {
      this.#closedToast?.remove();
      this.#closedToast = showError(
        `The chat connection was closed by the server${detail.reason ? ` (${detail.reason})` : ""}. `
          + "Choose Reconnect to try again.",
      );
    }
  }

  #ended() {
    this.socket.stop();
    this.#current = null;
    this.root.dataset.ended = "true";
    this.composer.disable();
    this.thread.reset(null);
    byId("thread").hidden = true;
    byId("conversation-list").replaceChildren();
    byId("recipient-search").disabled = true;
    byId("chat-ended").hidden = false;
    // replace, not assign: Back must not return to this page.
    window.location.replace("/login?ended=1");
  }

  async #synced() {
    this.conversations.refresh();
    this.groups.synced();
    for (const record of await this.messages.retryPending())
      await this.#incoming(record, { counts: false });
  }

  async #frame(frame, { replay }) {
    if (await this.groups.frame(frame, { replay })) return;
    // A group frame's answer goes to groups.js, which waits for it.
    if ((frame.type === "ack" || frame.type === "error") && this.groups.answer(frame)) return;
    switch (frame.type) {
      case "message":
        if (wellFormed(frame)) {
          const { record, isNew } = await this.messages.receive(frame);
          // Replayed messages are in the unread counts the server gives after the sync.
          await this.#incoming(record, { counts: isNew && !replay });
        }
        break;
      case "ack":
        await this.#acknowledged(frame);
        break;
      case "receipt": {
        const record = await this.messages.receipt(frame.id, frame.status);
        if (record) this.thread.update(record);
        this.outbox.roomMade();
        break;
      }
      case "deleted":
        if (this.#deleting.has(frame.id)) await this.#deletedOnServer(frame.id);
        break;
      case "error":
        if (typeof frame.id === "string" && this.#deleting.has(frame.id))
          await this.#deleteRefused(frame);
        else if (typeof frame.id === "string") await this.outbox.refused(frame);
        break;
      case "presence":
        this.#presence(frame.user, frame.status === "online");
        break;
      case "typing":
        if (frame.from === this.#current) this.#showTyping(frame.from);
        break;
      default:
        break; // a newer server's frame: nothing to do with it
    }
  }

  async #incoming(record, { counts }) {
    if (record.group) return; // a pair message under an id a group's message already has
    const peer = record.peer;
    if (record.hidden) {
      // A tombstone (or a message deleted here): read at once, shown never; what it takes back
      // leaves the screen.
      if (record.direction === "in") this.receipts.mark(record, "read");
      if (peer === this.#current) this.thread.remove(record.id); // shown while it was checked
      if (record.takesBack && peer === this.#current) this.thread.remove(record.takesBack);
      if (record.takesBack) await this.conversations.preview(peer);
      this.conversations.render();
      return;
    }
    const visible = peer === this.#current && document.visibilityState === "visible";
    if (record.direction === "in" && counts && !visible) {
      this.conversations.addUnread(peer);
    }
    // Nothing when the conversation is open in a focused window: the person is reading it.
    if (record.direction === "in" && counts && !(visible && document.hasFocus()))
      this.notifier.message(peer, await this.messages.text(record));
    if (record.direction === "in") {
      this.receipts.mark(record, visible ? "read" : "delivered");
      if (peer === this.#current) this.#showTyping(null);
    }
    await this.conversations.preview(peer, record.state === "pending" ? null : record);
    this.conversations.set(peer, { order: record.seq ?? 0 });
    if (peer === this.#current)
      this.thread.upsert([{ ...record, ...(await this.messages.content(record)) }]);
    this.conversations.render();
  }

  async #acknowledged(frame) {
    const record = await this.messages.acknowledged(frame.id, frame.seq, frame.ts);
    this.outbox.acknowledged(frame.id);
    if (!record) return;
    if (record.peer === this.#current) this.thread.update(record);
    // The first message to someone makes them a conversation on the server: ask for their
    // presence now (it is pushed only when it changes).
    if (this.conversations.get(record.peer)?.online === null) this.conversations.refresh();
    this.conversations.set(record.peer, { order: frame.seq });
    this.conversations.render();
  }

  async #failed({ id, reason }) {
    showError(reason);
    const record = await this.store.message(id);
    if (record?.peer === this.#current) this.thread.update(record);
  }

  #presence(user, online) {
    if (this.conversations.get(user) === null && user !== this.#current) return;
    this.conversations.set(user, { online });
    this.conversations.render();
  }

  #markThreadRead() {
    if (this.groups.current !== null) {
      this.groups.markRead();
      return;
    }
    if (this.#current === null || document.visibilityState !== "visible") return;
    this.receipts.markRead(this.thread.items());
    this.conversations.set(this.#current, { unread: 0 });
    this.conversations.render();
  }

  // --- sending -------------------------------------------------------------------------

  async #send(text, reply = null) {
    if (this.groups.current !== null) return this.groups.send(text);
    const peer = this.#current;
    const keys = this.keys.cached(peer);
    if (this.composer.blocked || (keys && !keys.canSend)) {
      showError(
        `Not sent. ${peer}'s keys changed after you verified them: open the safety number and `
          + "compare it with them before sending.",
      );
      return false;
    }
    let record;
    try {
      record = await this.messages.compose(peer, text, { reply });
    } catch (error) {
      showError(
        `The message could not be saved on this device, so it was not sent. ${describeError(error)}`,
      );
      return false;
    }
    this.thread.upsert([record], { follow: true });
    this.#typingSentAt = 0; // the message ended "typing" on the other side: say it again if need be
    await this.conversations.preview(peer, record);
    this.requests.wrote(peer);
    this.conversations.render();
    const offline = this.socket.state === "offline" || this.socket.state === "closed";
    if (offline && !this.#offlineSaid) {
      this.#offlineSaid = true;
      this.#offlineToast = showError(
        "You're offline. Your message is saved on this device and will be sent when the connection is back.",
      );
    }
    this.outbox.flush();
    return true;
  }

  // --- message actions -------------------------------------------------------------------

  #replyTo(item) {
    const snippet = [...(item.text ?? "")].slice(0, SNIPPET_CHARS).join("");
    this.composer.setReply({ id: item.id, from: item.from, snippet });
  }

  /** Delete for me: off the screen and out of this device's cache; the server is not told. */
  async #deleteForMe(id) {
    await this.messages.deleteForMe(id);
    this.thread.remove(id);
    if (this.#current !== null) await this.conversations.preview(this.#current);
    this.conversations.render();
  }

  #mayDeleteForEveryone(item) {
    const windowMs = Number(this.root.dataset.deleteWindowMs) || DELETE_WINDOW_MS;
    return (
      item.direction === "out"
      && !item.group // a group message has no delete for everyone
      && Number.isSafeInteger(item.seq)
      && Number.isSafeInteger(item.ts)
      && Date.now() - item.ts < windowMs
    );
  }

  /** Ask the server to delete my message; the tombstone follows once it has (#deletedOnServer). */
  #deleteForEveryone(item) {
    if (!this.socket.send({ type: "delete", id: item.id })) {
      showError(
        "You're offline. Delete for everyone needs the connection: try again when it is back.",
      );
      return;
    }
    this.#deleting.set(item.id, item);
  }

  /** Gone from the server: tell every device (theirs and mine) with a signed tombstone. */
  async #deletedOnServer(id) {
    const item = this.#deleting.get(id);
    this.#deleting.delete(id);
    await this.messages.compose(item.peer, "", { deletes: id });
    this.outbox.flush();
    await this.#deleteForMe(id);
  }

  async #deleteRefused(frame) {
    const item = this.#deleting.get(frame.id);
    if (frame.code === "unknown_message") {
      await this.#deletedOnServer(frame.id); // already gone (a repeated delete): finish it
      return;
    }
    this.#deleting.delete(frame.id);
    showError(
      frame.code === "delete_expired"
        ? "This message is too old to delete for everyone. You can still delete it for yourself."
        : `The message could not be deleted for ${item.peer}: ${frame.message}`,
    );
  }

  #typing() {
    const now = Date.now();
    if (now - this.#typingSentAt < TYPING_SEND_EVERY_MS || !this.socket.online) return;
    if (this.#current === null) return; // a group: no typing frames
    this.#typingSentAt = now;
    this.socket.send({ type: "typing", to: this.#current });
  }

  #showTyping(peer) {
    clearTimeout(this.#typingTimer);
    const line = byId("typing");
    line.hidden = peer === null;
    line.textContent = peer === null ? "" : `${peer} is typing…`;
    if (peer !== null)
      this.#typingTimer = setTimeout(() => this.#showTyping(null), TYPING_SHOWN_MS);
  }

  // --- keys ----------------------------------------------------------------------------

  async #keyChanged({ peer, keys }) {
    if (keys.isSelf) return; // my own keys: the banner speaks of it, never as someone else's doing
    const record = await this.messages.keyNotice(peer, keys, this.#maxSeq + 0.5);
    if (record && peer === this.#current) this.thread.upsert([record], { follow: true });
    if (peer === this.#current) {
      this.composer.setBlocked(!keys.canSend);
      this.#header();
    }
  }

  /** Said once per person: the server holds as many of my messages for them as it will. */
  #waiting(peer) {
    if (this.#toldWaiting.has(peer)) return;
    this.#toldWaiting.add(peer);
    showInfo(
      `${peer} has not received your earlier messages yet. New ones will be sent when they have.`,
    );
  }

  async #afterVerification(peer, change) {
    change();
    await this.#refreshKeys(peer);
    if (peer === this.#current) this.#header();
    this.outbox.flush();
  }
}
