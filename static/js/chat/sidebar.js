/**
 * The side of the chat: the connection's state, the recipient search (a WAI-ARIA 1.2 combobox
 * over GET /api/v1/users, offering my conversations and contacts before anything is typed), the
 * message requests and the conversation list with presence and unread counts.
 */

import { normalizeUsername } from "../api.js";
import { el } from "../ui.js";

const SEARCH_DELAY_MS = 150;
const SEARCH_LIMIT = 8;
// What a username may start with (securechat/chat/conversations.py): anything else finds no one.
const PREFIX = /^[a-z0-9._-]{1,32}$/;
const TIME = new Intl.DateTimeFormat(undefined, { timeStyle: "short" });
const DATE = new Intl.DateTimeFormat(undefined, { day: "numeric", month: "short" });
const AVATAR_COLOURS = 6;
// Conversations not drawn: ones I blocked or whose request I deleted (chat/requests.js).
const HIDDEN = new Set(["blocked", "deleted"]);
const REQUEST_ACTIONS = [
  ["accept", "Accept", ""],
  ["delete", "Delete", "button--quiet"],
  ["block", "Block", "button--danger"],
];

/** A stable small number for name, to colour its avatar. */
function hue(name) {
  let hash = 0x811c9dc5; // FNV-1a, 32 bits
  for (const char of name) hash = Math.imul(hash ^ char.codePointAt(0), 0x01000193) >>> 0;
  return hash % AVATAR_COLOURS;
}

/** The first letter of name, for its avatar. */
export function avatar(name, online = null) {
  const node = el("span", {
    className: `avatar avatar--${hue(name)}`,
    text: [...name][0]?.toUpperCase() ?? "?",
    attrs: { "aria-hidden": "true" },
  });
  if (online !== null)
    node.append(el("span", { className: `presence-dot${online ? " presence-dot--online" : ""}` }));
  return node;
}

function shortTime(ms) {
  const sameDay = new Date(ms).toDateString() === new Date().toDateString();
  return sameDay ? TIME.format(ms) : DATE.format(ms);
}

/**
 * The list of conversations; onOpen(peer) when one is chosen. Conversations with strangers
 * (contact "request") go to the Requests section instead, each with Accept, Delete and Block
 * (onDecide(peer, action)); blocked and deleted ones are not drawn.
 */
/** The unread count of a conversation or group in the sidebar (99+ past 99). */
export function unreadBadge(count) {
  return el(
    "span",
    { className: "conv__unread", text: count > 99 ? "99+" : String(count) },
    el("span", { className: "visually-hidden", text: " unread" }),
  );
}

export class ConversationList {
  constructor({ list, empty, onOpen, requests = null, onDecide = () => {} }) {
    this.list = list;
    this.empty = empty;
    this.requests = requests; // {section, list}
    const open = (event) => {
      const action = event.target.closest("button[data-action]");
      if (action) {
        onDecide(action.dataset.for, action.dataset.action);
        return;
      }
      const button = event.target.closest("button[data-peer]");
      if (button) onOpen(button.dataset.peer);
    };
    list.addEventListener("click", open);
    requests?.list.addEventListener("click", open);
  }

  /** conversations: [{peer, unread, online, preview, lastAt, contact}], most recent first. */
  render(conversations, current) {
    const focused = document.activeElement?.dataset?.peer ?? null;
    const shown = conversations.filter(({ contact }) => !HIDDEN.has(contact));
    const mine = shown.filter(({ contact }) => contact !== "request");
    const asking = shown.filter(({ contact }) => contact === "request");
    this.list.replaceChildren(...mine.map((conversation) => this.#item(conversation, current)));
    if (this.requests) {
      this.requests.list.replaceChildren(
        ...asking.map((conversation) => this.#request(conversation, current)),
      );
      // Shared with the group invites (groupsview.js InviteList): shown while either lists any.
      this.requests.section.hidden = !this.requests.section.querySelector("li");
    }
    this.empty.hidden = mine.length > 0;
    if (focused) {
      const selector = `button[data-peer="${CSS.escape(focused)}"]`;
      (this.list.querySelector(selector) ?? this.requests?.list.querySelector(selector))?.focus();
    }
  }

  /** A request: the conversation (opens it) and what I may do about its sender. */
  #request(conversation, current) {
    const item = this.#item(conversation, current);
    const { peer } = conversation;
    const actions = el("div", {
      className: "request__actions",
      attrs: { role: "group", "aria-label": `Message request from ${peer}` },
    });
    for (const [action, label, style] of REQUEST_ACTIONS) {
      actions.append(
        el("button", {
          className: `button button--small ${style}`,
          text: label,
          attrs: { type: "button", "data-action": action, "data-for": peer },
        }),
      );
    }
    item.className = "request";
    item.append(actions);
    return item;
  }

  #item({ peer, unread, online, preview, lastAt }, current) {
    const name = el("span", { className: "conv__name", text: peer });
    const body = el("span", { className: "conv__body" }, name);
    if (online !== null)
      body.append(
        el("span", { className: "visually-hidden", text: online ? ", online" : ", offline" }),
      );
    if (preview) body.append(el("span", { className: "conv__preview", text: preview }));
    const side = el("span", { className: "conv__side" });
    if (lastAt) side.append(el("span", { className: "conv__time", text: shortTime(lastAt) }));
    if (unread > 0) side.append(unreadBadge(unread));
    const button = el(
      "button",
      {
        className: "conv",
        attrs: {
          type: "button",
          "data-peer": peer,
          "aria-current": peer === current ? "true" : null,
        },
      },
      avatar(peer, online),
      body,
      side,
    );
    return el("li", {}, button);
  }
}

/**
 * The recipient search: type a name, pick from what the server finds. search(prefix) resolves
 * to usernames; onPick(name) opens that conversation; onUnknown(name) says there is no such user.
 */
export class RecipientPicker {
  #options = [];
  #active = -1;
  #timer = null;
  #asked = 0;

  /** suggest(): the names to offer before anything is typed (my conversations and contacts). */
  constructor({ form, input, listbox, empty, search, onPick, onUnknown, suggest = null }) {
    Object.assign(this, { form, input, listbox, empty, search, onPick, onUnknown, suggest });
    input.addEventListener("input", () => this.#schedule());
    input.addEventListener("focus", () => this.#suggest());
    input.addEventListener("keydown", (event) => this.#key(event));
    input.addEventListener("blur", () => setTimeout(() => this.#close(), 150));
    form.addEventListener("submit", (event) => {
      event.preventDefault();
      this.#choose();
    });
    // mousedown, not click: the option must be taken before the input's blur closes the list.
    listbox.addEventListener("mousedown", (event) => {
      const option = event.target.closest("[role=option]");
      if (!option) return;
      event.preventDefault();
      this.#pick(option.dataset.name);
    });
  }

  /** What is typed, in the server's canonical form. A search box forgives the spaces a paste
   * brings around a name (a username never has any), so they are trimmed before the rule. */
  #query() {
    return normalizeUsername(this.input.value.trim());
  }

  #schedule() {
    clearTimeout(this.#timer);
    this.#timer = setTimeout(() => this.#find(), SEARCH_DELAY_MS);
  }

  /** Nothing typed yet: offer the people I already talk with (no request to the search). */
  async #suggest() {
    if (this.#query().trim() || !this.suggest) return;
    const asked = ++this.#asked;
    const names = await this.suggest().catch(() => []);
    if (asked === this.#asked && !this.#query().trim()) this.#show(names.length ? names : null);
  }

  async #find() {
    const prefix = this.#query();
    if (!PREFIX.test(prefix)) {
      if (prefix.trim()) this.#show([]);
      else this.#suggest(); // emptied again: back to the people I talk with
      return;
    }
    const asked = ++this.#asked;
    let names;
    try {
      names = await this.search(prefix, SEARCH_LIMIT);
    } catch {
      names = [];
    }
    if (asked === this.#asked) this.#show(names); // a slower, older answer must not win
  }

  /** names: the options, [] for "no one", null to close. */
  #show(names) {
    this.#options = names ?? [];
    this.#active = this.#options.length ? 0 : -1;
    this.listbox.replaceChildren(
      ...this.#options.map((name, index) =>
        el(
          "li",
          {
            className: "picker__option",
            attrs: {
              role: "option",
              id: `recipient-option-${index}`,
              "data-name": name,
              "aria-selected": "false",
            },
          },
          avatar(name),
          el("span", { text: name }),
        ),
      ),
    );
    const open = names !== null && this.#options.length > 0;
    this.listbox.hidden = !open;
    this.empty.hidden = names === null || this.#options.length > 0;
    this.input.setAttribute("aria-expanded", String(open));
    this.#highlight();
  }

  #highlight() {
    [...this.listbox.children].forEach((option, index) => {
      option.setAttribute("aria-selected", String(index === this.#active));
    });
    if (this.#active >= 0) {
      this.input.setAttribute("aria-activedescendant", `recipient-option-${this.#active}`);
      this.listbox.children[this.#active].scrollIntoView({ block: "nearest" });
    } else {
      this.input.removeAttribute("aria-activedescendant");
    }
  }

  #key(event) {
    const count = this.#options.length;
    if (event.key === "ArrowDown" || event.key === "ArrowUp") {
      if (!count) return;
      event.preventDefault();
      const step = event.key === "ArrowDown" ? 1 : -1;
      this.#active = (this.#active + step + count) % count;
      this.#highlight();
    } else if (event.key === "Escape") {
      this.#close();
    }
  }

  /** Enter: the highlighted option, else exactly the name typed if the server knows it. */
  async #choose() {
    if (this.#active >= 0 && !this.listbox.hidden) {
      this.#pick(this.#options[this.#active]);
      return;
    }
    const name = this.#query();
    if (!name.trim()) return; // nothing typed: no one to look for
    const found = PREFIX.test(name) ? await this.search(name, SEARCH_LIMIT).catch(() => null) : [];
    if (found === null) return; // offline: the search itself said nothing; keep the text
    if (found.includes(name)) this.#pick(name);
    else this.onUnknown(name);
  }

  #pick(name) {
    this.input.value = "";
    this.#close();
    this.onPick(name);
  }

  #close() {
    this.#show(null);
  }
}

const STATES = {
  connecting: "Connecting…",
  syncing: "Catching up…",
  online: "Connected",
  offline: "Offline",
  closed: "Disconnected",
  stopped: "Logged out",
};

/**
 * The connection line: the socket's state (a polite live region, changed only when the state
 * does) and, while offline, a countdown to the next attempt (not announced) with "Retry now".
 */
export class ConnectionStatus {
  #timer = null;

  constructor({ root, text, wait, retry, onRetry }) {
    Object.assign(this, { root, text, wait, retry });
    retry.addEventListener("click", onRetry);
  }

  show({ state, retryAt = null, reason = "" }) {
    clearInterval(this.#timer);
    this.root.dataset.state = state;
    this.retry.hidden = state !== "offline" && state !== "closed";
    this.retry.textContent = state === "closed" ? "Reconnect" : "Retry now";
    const words =
      state === "closed" && reason ? `Disconnected: ${reason}` : (STATES[state] ?? state);
    if (this.text.textContent !== words) this.text.textContent = words;
    const tick = () => {
      const seconds = retryAt ? Math.ceil((retryAt - Date.now()) / 1000) : 0;
      this.wait.textContent = seconds > 0 ? `· trying again in ${seconds} s` : "";
    };
    tick();
    if (state === "offline" && retryAt) this.#timer = setInterval(tick, 1000);
  }
}
