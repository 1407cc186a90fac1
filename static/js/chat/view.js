/**
 * The open conversation on screen: its header, the thread of messages in order with sender,
 * time and status, the typing line and the composer.
 *
 * Text from anyone reaches the page only through textContent (ui.el), so a message that looks
 * like markup stays text. Web addresses in it become links built as nodes: http and https
 * only, the whole address shown as the link's text, opened with rel="noopener noreferrer" so
 * the page opened neither controls this one nor learns where it came from. A message that
 * could not be verified or decrypted has no text at all here: the thread says what went
 * wrong instead.
 */

import { el, showError } from "../ui.js";

/** The most characters one message may have (the composer says so instead of cutting it). */
export const MAX_CHARS = 10_000;
// The counter shows from here on.
const COUNT_FROM = 9_000;
const COPIED_MS = 2000;
// An address as people write them; what it ends with is trimmed below.
const URL_RE = /\bhttps?:\/\/[^\s<>"]+/giu;
const TRAILING = /[.,;:!?'"»”’]+$/u;

const TIME = new Intl.DateTimeFormat(undefined, { timeStyle: "short" });
const FULL = new Intl.DateTimeFormat(undefined, { dateStyle: "full", timeStyle: "short" });
const DAY = new Intl.DateTimeFormat(undefined, { weekday: "long", day: "numeric", month: "long" });
const DAY_WITH_YEAR = new Intl.DateTimeFormat(undefined, { dateStyle: "long" });
const NEAR_BOTTOM_PX = 96;

const STATUS = {
  sending: { ticks: "◷", label: "Sending…" },
  sent: { ticks: "✓", label: "Sent" },
  delivered: { ticks: "✓✓", label: "Delivered" },
  read: { ticks: "✓✓", label: "Read" },
  failed: { ticks: "!", label: "Not sent" },
};

/** The moment a message stands for: when the server stored it, else when it was written. */
function momentOf(item) {
  return item.ts ?? item.writtenMs ?? Date.now();
}

/** "Today", "Yesterday", or the date, for a day divider. */
export function dayLabel(ms, now = new Date()) {
  const date = new Date(ms);
  const startOf = (d) => new Date(d.getFullYear(), d.getMonth(), d.getDate()).getTime();
  const days = Math.round((startOf(now) - startOf(date)) / 86_400_000);
  if (days === 0) return "Today";
  if (days === 1) return "Yesterday";
  return date.getFullYear() === now.getFullYear() ? DAY.format(date) : DAY_WITH_YEAR.format(date);
}

function dayKey(ms) {
  const date = new Date(ms);
  return `${date.getFullYear()}-${date.getMonth()}-${date.getDate()}`;
}

/** The words for a message that cannot be shown, by what went wrong. */
function problemText(item) {
  if (item.state === "pending") return "Checking this message…";
  if (item.state === "waiting") return "Waiting for the sender's keys to open this message…";
  if (item.state === "refused") {
    return "This message was not opened: the group's membership could not be verified (see the warning above).";
  }
  if (item.state === "unverifiable" && item.direction === "out") {
    return (
      "This message could not be verified with your current keys: it may have been sent before your keys "
      + "changed. It is not shown."
    );
  }
  if (item.state === "unverifiable") {
    return (
      `This message could not be verified: its signature does not match ${item.from}'s keys. It may have `
      + `been altered on the way, or sent before ${item.from}'s keys changed. It is not shown.`
    );
  }
  if (item.state === "undecryptable") {
    return (
      "This message could not be decrypted: it was encrypted to keys this device does not have (for "
      + "example, keys from before a key change)."
    );
  }
  return "This message cannot be shown on this device.";
}

/** A notice in the thread, in plain words: what happened, then what to do. */
function noticeNode(item, peer) {
  const node = el("li", {
    className: "thread-notice",
    attrs: { "data-id": item.id, "data-day": dayKey(momentOf(item)) },
  });
  if (item.notice?.kind === "group") {
    // A membership change of a group, in words groups/state.js made ("alice added carol").
    node.dataset.notice = item.notice.removed ? "removed" : "group";
    node.append(el("p", { text: item.notice.text }));
    return node;
  }
  if (item.notice?.kind !== "keychange") return node;
  const what =
    `This happens when ${peer} resets their keys or starts over on a new device, but it could also `
    + "mean someone is trying to read your messages.";
  const todo = item.notice.verified
    ? `You had verified ${peer}, so sending is paused: open the safety number, compare it with ${peer} again `
      + "(in person or on a call), and accept it to continue."
    : `New messages are encrypted to the new keys. If this is unexpected, compare your safety number with ${peer} `
      + "before you send anything sensitive.";
  node.append(
    el("p", {}, el("strong", { text: `${peer}'s security keys changed. ` }), `${what} ${todo}`),
  );
  return node;
}

function statusNode(status) {
  const shown = STATUS[status];
  if (!shown) return null;
  return el(
    "span",
    { className: "msg__status", attrs: { "data-status": status } },
    el("span", { className: "msg__ticks", text: shown.ticks, attrs: { "aria-hidden": "true" } }),
    ` ${shown.label}`,
  );
}

/** "Read by 2 of 4" of my group message (group_receipt frames and the history's counts). */
function readCount({ read, members }) {
  return el("span", {
    className: "msg__status msg__read-count",
    text: ` · Read by ${read} of ${members}`,
  });
}

/** An address found in text, without the punctuation around it that belongs to the sentence. */
function trimUrl(raw) {
  let url = raw.replace(TRAILING, "");
  // A closing parenthesis belongs to the address only if it opened one: "(see https://x/y)".
  while (url.endsWith(")") && url.split("(").length < url.split(")").length)
    url = url.slice(0, -1).replace(TRAILING, "");
  return url;
}

/** text as nodes: strings, and <a> for each http(s) address in it. */
export function linkify(text) {
  const parts = [];
  let at = 0;
  for (const match of text.matchAll(URL_RE)) {
    const url = trimUrl(match[0]);
    let parsed = null;
    try {
      parsed = new URL(url);
    } catch {
      continue; // not an address after all: it stays text
    }
    if (parsed.protocol !== "http:" && parsed.protocol !== "https:") continue;
    parts.push(text.slice(at, match.index));
    parts.push(
      el("a", {
        className: "msg__link",
        text: url, // exactly as written: the person sees where it goes
        attrs: { href: parsed.href, rel: "noopener noreferrer", target: "_blank" },
      }),
    );
    at = match.index + url.length;
  }
  parts.push(text.slice(at));
  return parts.filter((part) => part !== "");
}

/** A button that copies text to the clipboard, and says it did. */
function copyButton(text) {
  const button = el("button", {
    className: "msg__copy",
    text: "Copy",
    attrs: { type: "button" },
  });
  button.addEventListener("click", async () => {
    try {
      await navigator.clipboard.writeText(text);
    } catch {
      showError("This browser did not allow copying. Select the text and copy it instead.");
      return;
    }
    button.textContent = "Copied";
    setTimeout(() => {
      button.textContent = "Copy";
    }, COPIED_MS);
  });
  return button;
}

function bodyNode(item) {
  if (item.state === "ok" && typeof item.text === "string") {
    return el("p", { className: "msg__text" }, ...linkify(item.text));
  }
  const waits = item.state === "pending" || item.state === "waiting";
  const kind = waits ? "msg__text msg__text--pending" : "msg__problem";
  return el("p", { className: kind, text: problemText(item) });
}

/** A quote of the message item answers; clicking it shows the original when it is here. */
function quoteNode(reply, onQuote) {
  const quote = el(
    "button",
    { className: "msg__quote", attrs: { type: "button", title: "Show the message replied to" } },
    el("span", {
      className: "msg__quote-from",
      // Not found here: only the replier vouches for the words, not their claimed author.
      text: reply.quotedBy ? `quoted by ${reply.quotedBy}` : reply.from,
    }),
    el("span", { className: "msg__quote-text", text: reply.snippet }),
  );
  quote.addEventListener("click", () => onQuote(reply.id));
  return quote;
}

/** A plain button of a message's actions. */
function actionButton(label, className, onClick) {
  const button = el("button", { className, text: label, attrs: { type: "button" } });
  button.addEventListener("click", onClick);
  return button;
}

/**
 * Delete: asks first, in the message itself, for me only or (my own message, acknowledged and
 * recent enough) for everyone.
 */
function deleteButton(item, node, actions) {
  const trigger = el("button", {
    className: "msg__delete",
    text: "Delete",
    attrs: { type: "button" },
  });
  trigger.addEventListener("click", () => {
    const choices = el("div", {
      className: "msg__confirm",
      attrs: { role: "group", "aria-label": "Delete this message?" },
    });
    const choose = (mode) => () => {
      choices.remove();
      actions.onDelete(item, mode);
    };
    const forMe = actionButton("Delete for me", "msg__delete-me", choose("me"));
    choices.append(forMe);
    if (actions.canDeleteForEveryone(item))
      choices.append(actionButton("Delete for everyone", "msg__delete-all", choose("everyone")));
    choices.append(
      actionButton("Cancel", "msg__delete-cancel", () => {
        choices.remove();
        trigger.focus();
      }),
    );
    node.querySelector(".msg__confirm")?.remove();
    node.append(choices);
    forMe.focus();
  });
  return trigger;
}

/** Fill a message's list item from item (the record with .text). */
function fillMessage(node, item, actions = null) {
  const moment = momentOf(item);
  const time = el("time", {
    className: "msg__time",
    text: TIME.format(moment),
    attrs: { datetime: new Date(moment).toISOString(), title: FULL.format(moment) },
  });
  const sender = el("span", {
    className: "msg__sender",
    text: item.direction === "out" ? "You" : item.from,
  });
  const meta = el(
    "p",
    { className: "msg__meta" },
    sender,
    el("span", { text: " · ", attrs: { "aria-hidden": "true" } }),
    time,
  );
  if (item.direction === "out") {
    const status = statusNode(item.status);
    if (status) meta.append(status);
    if (item.counts?.members) meta.append(readCount(item.counts));
  }
  if (item.state === "ok" && typeof item.text === "string") meta.append(copyButton(item.text));
  const replies = !item.group; // a group message has no reply (its plaintext is text and ts)
  if (
    actions
    && replies
    && item.state === "ok"
    && typeof item.text === "string"
    && item.seq !== null
  )
    meta.append(actionButton("Reply", "msg__reply", () => actions.onReply(item)));
  if (actions && item.status !== "sending") meta.append(deleteButton(item, node, actions));
  const parts = [bodyNode(item), meta];
  if (actions && item.reply) parts.unshift(quoteNode(item.reply, actions.onQuote));
  if (item.status === "failed" && item.error)
    parts.push(el("p", { className: "msg__error", text: item.error }));
  node.dataset.state = item.state;
  node.dataset.status = item.status ?? "";
  node.dataset.day = dayKey(moment);
  // A Delete question still open stays open through a receipt's redraw.
  const asking = node.querySelector(".msg__confirm");
  node.replaceChildren(...parts);
  if (asking) node.append(asking);
}

function messageNode(item, peer, actions) {
  if (item.direction === "notice") return noticeNode(item, peer);
  const node = el("li", { className: `msg msg--${item.direction}`, attrs: { "data-id": item.id } });
  fillMessage(node, item, actions);
  return node;
}

/** The thread of the open conversation. */
export class ThreadView {
  #items = new Map(); // id -> {item, node}
  #peer = null;

  /**
   * actions (optional): onReply(item), onDelete(item, "me" | "everyone"),
   * canDeleteForEveryone(item), and onQuote(id) for a click on a reply's quote.
   */
  constructor({ list, scroller, older, actions = null }) {
    this.list = list;
    this.scroller = scroller;
    this.older = older;
    this.actions = actions && { onQuote: (id) => this.reveal(id), ...actions };
  }

  /** Take message id off the screen (deleted). */
  remove(id) {
    const known = this.#items.get(id);
    if (!known) return;
    known.node.remove();
    this.#items.delete(id);
    this.#dividers();
  }

  /** Scroll message id into view and draw the eye to it; false if it is not shown. */
  reveal(id) {
    const known = this.#items.get(id);
    if (!known) return false;
    known.node.scrollIntoView({ block: "center" });
    known.node.classList.add("msg--found");
    setTimeout(() => known.node.classList.remove("msg--found"), 2000);
    return true;
  }

  /** Start showing the conversation with peer, empty. */
  reset(peer) {
    this.#peer = peer;
    this.#items.clear();
    this.list.replaceChildren();
    this.list.setAttribute("aria-busy", "true");
    this.older.hidden = true;
  }

  /** The items shown, in order. */
  items() {
    return [...this.#items.values()].map(({ item }) => item).sort((a, b) => a.order - b.order);
  }

  /** The smallest server position shown, or null. */
  oldestSeq() {
    const seqs = this.items()
      .map((item) => item.seq)
      .filter((seq) => Number.isSafeInteger(seq));
    return seqs.length ? Math.min(...seqs) : null;
  }

  has(id) {
    return this.#items.has(id);
  }

  /** Show items (new ones in place, known ones updated); follow the end if the reader was there. */
  upsert(items, { follow = false } = {}) {
    const atEnd = this.#nearBottom();
    const keepFrom = this.scroller.scrollHeight - this.scroller.scrollTop;
    let before = false;
    const last = this.items().at(-1);
    for (const item of items) {
      if (item.hidden) {
        this.remove(item.id); // deleted, or a tombstone: never shown
        continue;
      }
      before ||= last !== undefined && item.order < last.order && !this.#items.has(item.id);
      this.#place(item);
    }
    this.#dividers();
    this.list.removeAttribute("aria-busy");
    if (follow || (atEnd && !before)) this.scrollToEnd();
    else if (before) this.scroller.scrollTop = this.scroller.scrollHeight - keepFrom; // older: keep the view still
  }

  /** Update a shown message's status (a receipt, an ack); no-op if not shown. */
  update(record) {
    const known = this.#items.get(record.id);
    if (!known) return;
    this.upsert([
      { ...record, text: record.text ?? known.item.text, reply: record.reply ?? known.item.reply },
    ]);
  }

  #place(update) {
    const known = this.#items.get(update.id);
    // A late copy of a message still being checked never hides the outcome already shown.
    const stale = known && known.item.state !== "pending" && update.state === "pending";
    const item = stale ? { ...update, state: known.item.state, text: known.item.text } : update;
    const node = known?.node ?? messageNode(item, this.#peer, this.actions);
    if (known && item.direction !== "notice") fillMessage(node, item, this.actions);
    this.#items.set(item.id, { item, node });
    const next = this.items().find((other) => other.order > item.order && other.id !== item.id);
    const anchor = next ? this.#items.get(next.id).node : null;
    if (node.nextElementSibling !== anchor || !node.isConnected)
      this.list.insertBefore(node, anchor);
  }

  /** A divider before the first message of each day. */
  #dividers() {
    for (const node of this.list.querySelectorAll(".day-divider")) node.remove();
    let day = null;
    for (const node of [...this.list.children]) {
      if (node.dataset.day !== day) {
        day = node.dataset.day;
        const { item } = this.#items.get(node.dataset.id);
        this.list.insertBefore(
          el("li", { className: "day-divider", text: dayLabel(momentOf(item)) }),
          node,
        );
      }
    }
  }

  #nearBottom() {
    const { scrollHeight, scrollTop, clientHeight } = this.scroller;
    return scrollHeight - scrollTop - clientHeight < NEAR_BOTTOM_PX;
  }

  scrollToEnd() {
    this.scroller.scrollTop = this.scroller.scrollHeight;
  }

  /** Show or hide "Load older messages". */
  setMore(more) {
    this.older.hidden = !more;
  }
}

/**
 * The composer: Enter sends, Shift+Enter starts a new line. onSend(text) resolves true once the
 * message is safely queued; when it resolves false (refused), the text is put back.
 */
export class Composer {
  #blocked = false;
  #reply = null; // {id, from, snippet} of the message being answered, or null
  #replyBar = null;

  constructor({ form, field, button, blockedNote, counter, onSend, onTyping }) {
    Object.assign(this, { form, field, button, blockedNote, counter });
    field.addEventListener("keydown", (event) => {
      // isComposing: Enter that ends an IME composition is not a send.
      if (
        event.key !== "Enter"
        || event.shiftKey
        || event.isComposing
        || event.altKey
        || event.ctrlKey
        || event.metaKey
      )
        return;
      event.preventDefault();
      form.requestSubmit();
    });
    field.addEventListener("input", () => {
      this.#count();
      if (field.value.trim()) onTyping();
    });
    form.addEventListener("submit", async (event) => {
      event.preventDefault();
      const text = field.value;
      if (!text.trim()) return;
      if (this.#over() > 0) {
        field.focus(); // the counter already says why; nothing is cut or lost
        return;
      }
      // Cleared at once, not after the message is saved: the next one may be typed meanwhile.
      const reply = this.#reply;
      field.value = "";
      this.setReply(null);
      this.#count();
      field.focus();
      if (!(await onSend(text, reply)) && !field.value) {
        field.value = text; // refused: give it back
        this.setReply(reply);
        this.#count();
      }
    });
  }

  /** Characters past MAX_CHARS (as a person counts them: code points), or 0. */
  #over() {
    return Math.max(0, [...this.field.value].length - MAX_CHARS);
  }

  /** Show how much room is left once the message nears the limit, and what to do past it. */
  #count() {
    const length = [...this.field.value].length;
    const over = this.#over();
    this.counter.hidden = length < COUNT_FROM;
    this.counter.dataset.over = String(over > 0);
    this.counter.textContent =
      over > 0
        ? `${over.toLocaleString()} characters too long to send (at most ${MAX_CHARS.toLocaleString()}). Shorten it or split it into several messages.`
        : `${length.toLocaleString()} / ${MAX_CHARS.toLocaleString()} characters`;
    if (over > 0) this.field.setAttribute("aria-invalid", "true");
    else this.field.removeAttribute("aria-invalid");
  }

  /** Answer a message (its quote shown above the field, with a way out), or null: no reply. */
  setReply(reply) {
    this.#reply = reply;
    this.#replyBar?.remove();
    this.#replyBar = null;
    if (reply === null) return;
    const cancel = el("button", {
      className: "composer__reply-cancel",
      text: "Cancel reply",
      attrs: { type: "button" },
    });
    cancel.addEventListener("click", () => {
      this.setReply(null);
      this.field.focus();
    });
    this.#replyBar = el(
      "div",
      { className: "composer__reply" },
      el("span", { className: "composer__reply-to", text: `Replying to ${reply.from}: ` }),
      el("span", { className: "composer__reply-text", text: reply.snippet }),
      cancel,
    );
    this.form.prepend(this.#replyBar);
    this.field.focus();
  }

  /** Pause sending (a verified contact's keys changed), with the note that says why. */
  setBlocked(blocked) {
    this.#blocked = blocked;
    this.button.disabled = blocked;
    this.blockedNote.hidden = !blocked;
    if (blocked) this.field.setAttribute("aria-describedby", this.blockedNote.id);
    else this.field.removeAttribute("aria-describedby");
  }

  /** No more sending from this page (the session ended). */
  disable() {
    this.field.disabled = true;
    this.button.disabled = true;
  }

  get blocked() {
    return this.#blocked;
  }
}
