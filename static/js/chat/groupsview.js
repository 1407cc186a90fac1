/**
 * The groups' pieces on screen: the list in the side bar, the people picker of the create and
 * add forms (a WAI-ARIA 1.2 combobox over GET /api/v1/users), and the member list of the
 * members dialog. Every name and word from anyone is set as text (ui.el), never as markup.
 */

import { request } from "../api.js";
import { el } from "../ui.js";
import { avatar, unreadBadge } from "./sidebar.js";

const SEARCH_DELAY_MS = 150;
const SEARCH_LIMIT = 8;
const PREFIX = /^[a-z0-9._-]{1,32}$/;

/** The groups in the side bar; onOpen(group) when one is chosen. */
export class GroupList {
  constructor({ list, empty, onOpen }) {
    Object.assign(this, { list, empty });
    list.addEventListener("click", (event) => {
      const button = event.target.closest("button[data-group]");
      if (button) onOpen(button.dataset.group);
    });
  }

  /** groups: GroupBook.list(); current: the open group or null. */
  render(groups, current) {
    this.list.replaceChildren(...groups.map((g) => this.#item(g, current)));
    this.empty.hidden = groups.length > 0;
  }

  #item({ group, name, members, removed, problem, unread }, current) {
    let line = `${members} ${members === 1 ? "member" : "members"}`;
    if (removed) line = "You are no longer a member";
    else if (problem) line = "Warning: membership not verified";
    const body = el(
      "span",
      { className: "conv__body" },
      el("span", { className: "conv__name", text: name }),
      el("span", {
        className: `conv__preview${problem ? " conv__preview--alarm" : ""}`,
        text: line,
      }),
    );
    const side = el("span", { className: "conv__side" });
    if (unread > 0) side.append(unreadBadge(unread));
    const button = el(
      "button",
      {
        className: "conv",
        attrs: {
          type: "button",
          "data-group": group,
          "aria-current": group === current ? "true" : null,
        },
      },
      avatar(name),
      body,
      side,
    );
    return el("li", {}, button);
  }
}

/**
 * The groups I was added to by someone who is not my contact, in the Requests section: each
 * with its name, who added me, and Join and Leave (onDecide(group, "join" | "leave")).
 */
export class InviteList {
  constructor({ list, section, onDecide }) {
    Object.assign(this, { list, section });
    list.addEventListener("click", (event) => {
      const button = event.target.closest("button[data-invite]");
      if (button) onDecide(button.dataset.invite, button.dataset.action);
    });
  }

  /** invites: GroupBook.invites(). The section shows while it lists anything. */
  render(invites) {
    this.list.replaceChildren(...invites.map((invite) => this.#item(invite)));
    this.section.hidden = !this.section.querySelector("li");
  }

  #item({ group, name, by }) {
    const about = el(
      "div",
      { className: "conv" },
      avatar(name),
      el(
        "span",
        { className: "conv__body" },
        el("span", { className: "conv__name", text: name }),
        el("span", { className: "conv__preview", text: `Group: ${by} added you` }),
      ),
    );
    const actions = el("div", {
      className: "request__actions",
      attrs: { role: "group", "aria-label": `Invitation to ${name} from ${by}` },
    });
    for (const [action, label, style] of [
      ["join", "Join", ""],
      ["leave", "Leave", "button--danger"],
    ]) {
      actions.append(
        el("button", {
          className: `button button--small ${style}`,
          text: label,
          attrs: { type: "button", "data-invite": group, "data-action": action },
        }),
      );
    }
    return el("li", { className: "request", attrs: { "data-invite": group } }, about, actions);
  }
}

/**
 * Choose several people: type, pick from what the server finds (click, or arrows and Enter),
 * and see the chosen ones with a button to take each out again. exclude() names who may not be
 * chosen (me, and for an add the members already in).
 */
export class PeoplePicker {
  #chosen = [];
  #options = [];
  #active = -1;
  #timer = null;
  #asked = 0;

  constructor(root, { id, label, exclude = () => [] }) {
    this.exclude = exclude;
    this.input = el("input", {
      className: "picker__input",
      attrs: {
        id: `${id}-search`,
        type: "text",
        role: "combobox",
        "aria-autocomplete": "list",
        "aria-expanded": "false",
        "aria-controls": `${id}-options`,
        placeholder: "Find someone by username",
        autocapitalize: "none",
        spellcheck: "false",
        maxlength: "32",
      },
    });
    this.listbox = el("ul", {
      className: "picker__options",
      attrs: { id: `${id}-options`, role: "listbox", "aria-label": "People found", hidden: true },
    });
    this.chosenList = el("ul", {
      className: "group-people__chosen",
      attrs: { "aria-label": "People chosen" },
    });
    this.id = id;
    root.replaceChildren(
      el("label", { text: label, attrs: { for: `${id}-search` } }),
      el("div", { className: "picker" }, this.input, this.listbox),
      this.chosenList,
    );
    this.input.addEventListener("input", () => {
      clearTimeout(this.#timer);
      this.#timer = setTimeout(() => this.#find(), SEARCH_DELAY_MS);
    });
    this.input.addEventListener("keydown", (event) => this.#key(event));
    this.input.addEventListener("blur", () => setTimeout(() => this.#show([]), 150));
    this.listbox.addEventListener("mousedown", (event) => {
      const option = event.target.closest("[role=option]");
      if (!option) return;
      event.preventDefault();
      this.#pick(option.dataset.name);
    });
    this.chosenList.addEventListener("click", (event) => {
      const button = event.target.closest("button[data-name]");
      if (!button) return;
      this.#chosen = this.#chosen.filter((n) => n !== button.dataset.name);
      this.#drawChosen();
      this.input.focus();
    });
  }

  get chosen() {
    return [...this.#chosen];
  }

  reset() {
    this.#chosen = [];
    this.input.value = "";
    this.#drawChosen();
    this.#show([]);
  }

  async #find() {
    const prefix = this.input.value.trim().normalize("NFKC").toLowerCase();
    if (!PREFIX.test(prefix)) {
      this.#show([]);
      return;
    }
    const asked = ++this.#asked;
    let names = [];
    try {
      const path = `/api/v1/users?q=${encodeURIComponent(prefix)}&limit=${SEARCH_LIMIT}`;
      names = (await request(path)).users ?? [];
    } catch {
      names = [];
    }
    const excluded = new Set([...this.exclude(), ...this.#chosen]);
    if (asked === this.#asked) this.#show(names.filter((n) => !excluded.has(n)));
  }

  #show(names) {
    this.#options = names;
    this.#active = names.length ? 0 : -1;
    this.listbox.replaceChildren(
      ...names.map((name, index) =>
        el(
          "li",
          {
            className: "picker__option",
            attrs: { role: "option", id: `${this.id}-option-${index}`, "data-name": name },
          },
          avatar(name),
          el("span", { text: name }),
        ),
      ),
    );
    this.listbox.hidden = names.length === 0;
    this.input.setAttribute("aria-expanded", String(names.length > 0));
    this.#highlight();
  }

  #highlight() {
    [...this.listbox.children].forEach((option, index) => {
      option.setAttribute("aria-selected", String(index === this.#active));
    });
    if (this.#active >= 0)
      this.input.setAttribute("aria-activedescendant", `${this.id}-option-${this.#active}`);
    else this.input.removeAttribute("aria-activedescendant");
  }

  #key(event) {
    const count = this.#options.length;
    if ((event.key === "ArrowDown" || event.key === "ArrowUp") && count) {
      event.preventDefault();
      this.#active = (this.#active + (event.key === "ArrowDown" ? 1 : -1) + count) % count;
      this.#highlight();
    } else if (event.key === "Enter" && this.#active >= 0 && !this.listbox.hidden) {
      event.preventDefault(); // picks a person; it does not submit the form
      this.#pick(this.#options[this.#active]);
    } else if (event.key === "Escape" && !this.listbox.hidden) {
      event.preventDefault();
      this.#show([]);
    }
  }

  #pick(name) {
    if (!this.#chosen.includes(name)) this.#chosen.push(name);
    this.input.value = "";
    this.#show([]);
    this.#drawChosen();
    this.input.focus();
  }

  #drawChosen() {
    this.chosenList.replaceChildren(
      ...this.#chosen.map((name) =>
        el(
          "li",
          { className: "group-people__person" },
          el("span", { text: name }),
          el("button", {
            className: "button button--quiet button--small",
            text: "Remove",
            attrs: {
              type: "button",
              "data-name": name,
              "aria-label": `Remove ${name} from the list`,
            },
          }),
        ),
      ),
    );
  }
}

/** What the member list says of a member's keys. */
function keyState(member) {
  if (member.gone) return { kind: "plain", text: "Account deleted" };
  if (member.changed) return { kind: "warning", text: "Keys changed" };
  if (member.unknown) return { kind: "warning", text: "Keys not checked yet" };
  return member.verified
    ? { kind: "verified", text: "Verified" }
    : { kind: "plain", text: "Not verified" };
}

/**
 * One member's row: name, admin badge, verified state, safety number, and the buttons I may
 * use (onAction(name, action): "verify", "remove", "admin").
 */
export function memberRow(member, { me, iAmAdmin, number, onAction }) {
  const state = keyState(member);
  const title = el(
    "p",
    { className: "group-member__name" },
    el("strong", { text: member.name === me ? `${member.name} (you)` : member.name }),
  );
  if (member.admin) title.append(" ", el("span", { className: "verified-badge", text: "Admin" }));
  const row = el("li", { className: "group-member", attrs: { "data-member": member.name } }, title);
  if (member.name === me) return row;
  row.append(
    el("p", { className: `verify__state verify__state--${state.kind}`, text: state.text }),
  );
  if (number) {
    row.append(
      el(
        "p",
        {
          className: "safety-number safety-number--small",
          attrs: { role: "group", "aria-label": `Safety number with ${member.name}` },
        },
        ...number.map((group) => el("span", { className: "safety-number__group", text: group })),
      ),
    );
  }
  const actions = el("div", {
    className: "group-member__actions",
    attrs: { role: "group", "aria-label": `Actions for ${member.name}` },
  });
  const button = (text, action, style = "button--quiet") => {
    const node = el("button", {
      className: `button button--small ${style}`,
      text,
      attrs: { type: "button" },
    });
    node.addEventListener("click", () => onAction(member.name, action));
    actions.append(node);
  };
  if (!member.gone) button("Verify", "verify"); // a deleted account has no keys to compare
  if (iAmAdmin && !member.admin && !member.gone) button("Make admin", "admin");
  if (iAmAdmin) button("Remove", "remove", "button--danger");
  row.append(actions);
  return row;
}
