/**
 * Groups on the chat page: the list in the side bar, the group thread (sharing the thread view
 * and composer with pairs), the create and members dialogs, and the group frames. The work is
 * done by static/js/groups/ (book, inbound, outbound); this module decides what shows.
 *
 * A group with a problem (a ghost member, a chain that fails) shows a serious warning naming
 * it (role="alert") and refuses to send; a member whose keys changed gets a warning of their
 * own; a removed member sees that they were removed, and nothing after.
 */

import { describeError } from "../api.js";
import { GroupBook, problemText } from "../groups/book.js";
import { GroupInbox, wellFormedGroupMessage } from "../groups/inbound.js";
import { Action } from "../groups/membership.js";
import { GroupSender } from "../groups/outbound.js";
import { threadOf } from "../groups/state.js";
import { el, showError } from "../ui.js";
import { GroupList, InviteList, memberRow, PeoplePicker } from "./groupsview.js";

const byId = (id) => document.getElementById(id);
const GROUP_FRAMES = new Set(["group_entry", "group_keys", "group_message", "group_receipt"]);

export class GroupsUI {
  #current = null;
  #opening = 0;
  #shownRoster = ""; // the members and admins the open member list shows

  /**
   * onOpenThread(): the page leaves any pair conversation and shows the thread pane;
   * onAccept(user): I joined a group user added me to, so they become my contact.
   */
  constructor({
    me,
    identity,
    store,
    vault,
    keys,
    thread,
    composer,
    verify,
    onOpenThread,
    onAccept,
  }) {
    Object.assign(this, { me, thread, composer, verify, onOpenThread, onAccept, keys });
    this.book = new GroupBook({ me, identity, store, vault, keys });
    this.list = new GroupList({
      list: byId("group-list"),
      empty: byId("groups-empty"),
      onOpen: (group) => this.open(group),
    });
    this.invites = new InviteList({
      list: byId("group-invite-list"),
      section: byId("requests"),
      onDecide: (group, action) => (action === "join" ? this.join(group) : this.decline(group)),
    });
    this.book.addEventListener("change", (event) => this.#changed(event.detail.group));
    this.#buildDialogs();
  }

  /** Start with the socket: groups loaded and verified, their frames handled. */
  async start(socket) {
    this.socket = socket;
    this.inbox = new GroupInbox({ book: this.book, socket });
    this.sender = new GroupSender({ book: this.book, socket });
    this.sender.addEventListener("sent", ({ detail }) => {
      if (detail.record && detail.group === this.#current) this.thread.update(detail.record);
      this.render();
    });
    this.sender.addEventListener("error", ({ detail }) =>
      showError(
        `A message to ${this.book.title(detail.group)} could not be sent yet: ${detail.error.message}`,
      ),
    );
    await this.book.load();
    this.render();
  }

  get current() {
    return this.#current;
  }

  render() {
    if (!this.book) return;
    this.list.render(this.book.list(), this.#current);
    this.invites.render(this.book.invites());
  }

  // --- invites (docs/protocol.md "Contacts and message requests") -------------------------

  /** Join the group I was invited to: it moves to Groups, opens, and its adder is my contact. */
  async join(group) {
    const adder = await this.book.answer(group, "joined");
    if (adder) await this.onAccept(adder);
    this.render();
    await this.open(group);
    this.sender.flush(group);
  }

  /** Leave the group I was invited to (after asking), with a signed leave entry. */
  async decline(group) {
    const title = this.book.title(group);
    const by = this.book.known(group)?.record.invitedBy;
    if (!confirm(`Leave ${title}? ${by} added you; the members will see that you left.`)) return;
    try {
      await this.sender.change(group, Action.LEAVE, {});
    } catch (error) {
      showError(`You did not leave ${title}. ${error.message || describeError(error)}`);
      return;
    }
    await this.book.answer(group, "declined");
    this.render();
  }

  // --- the open group ---------------------------------------------------------------------

  /** Show group's thread: what is kept here at once, then what the server adds. */
  async open(group) {
    const opening = ++this.#opening;
    this.onOpenThread();
    this.#current = group;
    const entry = await this.book.entry(group);
    entry.unread = 0;
    this.render();
    this.#header(group);
    byId("verify-open").hidden = true;
    byId("group-members-open").hidden = false;
    byId("thread-presence").hidden = true;
    byId("thread-verified").hidden = true;
    this.thread.reset(threadOf(group));
    if (window.matchMedia("(min-width: 40.01rem)").matches) byId("composer-text").focus();
    const kept = await this.book.store.thread(threadOf(group), { limit: 50 });
    const shown = await Promise.all(kept.map((r) => this.inbox.withText(r)));
    if (opening !== this.#opening) return;
    this.thread.upsert(shown, { follow: true });
    await this.book.serial(group, () => this.book.refresh(group));
    if (opening !== this.#opening) return;
    await this.#showState(group);
    const page = await this.inbox.history(group);
    if (opening !== this.#opening || !page) return;
    this.thread.upsert(page.records);
    this.thread.setMore(page.more);
    this.markRead();
  }

  /** The page shows something else now (a pair conversation, or the list). */
  leave() {
    if (this.#current === null) return;
    this.#current = null;
    this.#opening += 1;
    byId("verify-open").hidden = false;
    byId("group-members-open").hidden = true;
    byId("group-alarm").hidden = true;
    byId("group-key-warnings").hidden = true;
    byId("send-blocked-review").hidden = false;
    this.render();
  }

  #header(group) {
    const title = this.book.title(group);
    byId("thread-title").textContent = title;
    byId("composer-text").setAttribute("aria-label", `Message to ${title}`);
  }

  /** The group's warnings and whether sending is refused, as the book has it now. */
  async #showState(group) {
    if (group !== this.#current) return;
    this.#header(group);
    const entry = this.book.known(group);
    const alarm = byId("group-alarm");
    alarm.hidden = !entry?.problem;
    byId("group-alarm-text").textContent = entry?.problem
      ? problemText(entry.problem, this.book.title(group))
      : "";
    const refusal = this.book.refusal(group);
    if (refusal) byId("send-blocked-text").textContent = refusal;
    byId("send-blocked-review").hidden = Boolean(entry?.record.removed);
    this.composer.setBlocked(Boolean(refusal));
    const changed = (await this.book.members(group)).filter((m) => m.changed);
    if (group !== this.#current) return;
    const warnings = byId("group-key-warnings");
    warnings.hidden = changed.length === 0;
    warnings.replaceChildren(
      ...changed.map((m) =>
        el("li", {
          className: "group-warning",
          text:
            `${m.name}'s security keys changed since they were added to this group. This happens when `
            + `${m.name} resets their keys or uses a new device, but it could also mean someone is trying to `
            + `read the group. Compare the safety number with ${m.name} (Members) before you send anything sensitive.`,
        }),
      ),
    );
  }

  #changed(group) {
    this.render();
    if (group !== this.#current) return;
    this.#showState(group);
    // Someone else's change to the members while their list is open: it follows.
    if (byId("group-members-dialog").open && this.#roster(group) !== this.#shownRoster)
      this.openMembers();
  }

  /** Who is in the group and who is an admin, as one comparable string. */
  #roster(group) {
    const entry = this.book.known(group);
    const view = entry?.view;
    if (!view) return "";
    return JSON.stringify([[...view.members.keys()], [...view.admins], entry.record.removed]);
  }

  // --- frames -----------------------------------------------------------------------------

  /** Handle a group frame; resolves to whether it was one. */
  async frame(frame, { replay }) {
    if (!GROUP_FRAMES.has(frame.type)) return false;
    const open = frame.group === this.#current && this.#current !== null;
    if (frame.type === "group_entry") {
      const notice = await this.inbox.entry(frame);
      if (notice && open) this.thread.upsert([notice], { follow: true });
    } else if (frame.type === "group_keys") {
      const opened = await this.inbox.keys(frame);
      if (open && opened.length) this.thread.upsert(opened);
    } else if (frame.type === "group_message") {
      if (wellFormedGroupMessage(frame)) await this.#message(frame, replay, open);
    } else {
      const record = await this.inbox.receipt(frame);
      if (record && open) this.thread.update(record);
    }
    this.render();
    return true;
  }

  async #message(frame, replay, open) {
    const { record, isNew } = await this.inbox.message(frame);
    if (!record) return;
    const visible = open && document.visibilityState === "visible";
    // An invite's messages are kept, unmarked and uncounted, until I join (nothing goes to it).
    if (record.direction === "in" && !this.book.invited(frame.group)) {
      await this.inbox.mark(record, visible ? "read" : "delivered");
      const entry = this.book.known(frame.group);
      if (isNew && !replay && !visible && entry) entry.unread += 1;
    }
    if (open) this.thread.upsert([await this.inbox.withText(record)]);
  }

  /** An ack or error for a group frame of mine: taken (true) or not (false). */
  answer(frame) {
    return this.sender?.answer(frame) ?? false;
  }

  /** The connection caught up: send what waits in every group. */
  synced() {
    for (const { group } of this.book.list()) this.sender.flush(group);
  }

  markRead() {
    if (this.#current === null || document.visibilityState !== "visible") return;
    for (const item of this.thread.items()) this.inbox.mark(item, "read");
    const entry = this.book.known(this.#current);
    if (entry) entry.unread = 0;
    this.render();
  }

  async loadOlder() {
    const group = this.#current;
    const oldest = this.thread.oldestSeq();
    const page = oldest === null ? null : await this.inbox.history(group, oldest);
    const before = this.thread.items()[0]?.order ?? Infinity;
    const kept = await this.book.store.thread(threadOf(group), { before, limit: 50 });
    if (group !== this.#current) return;
    const shown = await Promise.all(kept.map((r) => this.inbox.withText(r)));
    this.thread.upsert([...(page?.records ?? []), ...shown]);
    this.thread.setMore(Boolean(page?.more) || kept.length >= 50);
  }

  // --- sending ----------------------------------------------------------------------------

  /** Compose text to the open group; resolves true once it is queued, false if refused. */
  async send(text) {
    const group = this.#current;
    try {
      const record = await this.sender.compose(group, text);
      this.thread.upsert([record], { follow: true });
      this.render();
      return true;
    } catch (error) {
      showError(error.message || describeError(error));
      return false;
    }
  }

  // --- dialogs ----------------------------------------------------------------------------

  #buildDialogs() {
    for (const dialog of document.querySelectorAll(".group-dialog")) {
      dialog.querySelector("[data-close]").addEventListener("click", () => dialog.close());
    }
    this.createPicker = new PeoplePicker(byId("group-create-people"), {
      id: "group-create-people",
      label: "People in the group",
      exclude: () => [this.me],
    });
    this.addPicker = new PeoplePicker(byId("group-add-people"), {
      id: "group-add-people",
      label: "Add people",
      exclude: () => [this.me, ...(this.book.known(this.#current)?.view?.members.keys() ?? [])],
    });
    byId("group-new").addEventListener("click", () => this.#openCreate());
    byId("group-create-form").addEventListener("submit", (event) => {
      event.preventDefault();
      this.#create();
    });
    byId("group-members-open").addEventListener("click", () => this.openMembers());
    byId("group-rename-form").addEventListener("submit", (event) => {
      event.preventDefault();
      const name = byId("group-rename-name").value.trim();
      if (name) this.#change(Action.RENAME, { name }, () => (byId("group-rename-name").value = ""));
    });
    byId("group-add-form").addEventListener("submit", (event) => {
      event.preventDefault();
      const names = this.addPicker.chosen;
      if (names.length) this.#change(Action.ADD, { names }, () => this.addPicker.reset());
    });
    byId("group-leave").addEventListener("click", () => this.#leave());
    byId("verify-dialog").addEventListener("close", () => {
      if (byId("group-members-dialog").open) this.openMembers();
    });
  }

  #openCreate() {
    byId("group-create-name").value = "";
    byId("group-create-error").hidden = true;
    byId("group-create-name-error").hidden = true;
    this.createPicker.reset();
    byId("group-create-dialog").showModal();
    byId("group-create-name").focus();
  }

  async #create() {
    const name = byId("group-create-name").value.trim();
    const people = this.createPicker.chosen;
    const error = byId("group-create-error");
    error.hidden = true;
    if (!name || !people.length) {
      error.textContent = name
        ? "Choose at least one person to add to the group."
        : "Give the group a name.";
      error.hidden = false;
      return;
    }
    const button = byId("group-create-form").querySelector("button[type=submit]");
    button.disabled = true;
    try {
      const group = await this.sender.create(name, people);
      byId("group-create-dialog").close();
      this.render();
      await this.open(group);
    } catch (failure) {
      error.textContent = `The group was not created. ${failure.message || describeError(failure)}`;
      error.hidden = false;
    } finally {
      button.disabled = false;
    }
  }

  /** The members dialog of the open group, filled from the verified chain. */
  async openMembers() {
    const group = this.#current;
    if (group === null) return;
    const dialog = byId("group-members-dialog");
    this.#shownRoster = this.#roster(group);
    byId("group-members-title").textContent = `Members of ${this.book.title(group)}`;
    if (!dialog.open) dialog.showModal();
    const entry = this.book.known(group);
    const removed = Boolean(entry?.record.removed);
    const iAmAdmin = !removed && !entry?.problem && Boolean(entry?.view?.admins.has(this.me));
    const rows = [];
    for (const member of await this.book.members(group)) {
      let number = null;
      if (member.name !== this.me && !member.unknown) {
        number = await this.keys
          .panel(member.name, { fresh: false })
          .then((data) => data.panel.groups)
          .catch(() => null);
      }
      rows.push(
        memberRow(member, {
          me: this.me,
          iAmAdmin,
          number,
          onAction: (name, action) => this.#memberAction(name, action),
        }),
      );
    }
    if (group !== this.#current) return;
    byId("group-member-list").replaceChildren(...rows);
    byId("group-admin").hidden = !iAmAdmin;
    byId("group-leave").disabled = removed;
  }

  #memberAction(name, action) {
    if (action === "verify") {
      this.verify.open(name);
    } else if (action === "admin") {
      this.#change(Action.MAKE_ADMIN, { names: [name] });
    } else if (confirm(`Remove ${name} from ${this.book.title(this.#current)}?`)) {
      this.#change(Action.REMOVE, { names: [name] });
    }
  }

  async #leave() {
    const title = this.book.title(this.#current);
    const view = this.book.known(this.#current)?.view;
    const lastAdmin = view?.admins.size === 1 && view.admins.has(this.me) && view.members.size > 1;
    if (lastAdmin) {
      // The chain refuses a group with members and no admin: say what to do first.
      showError(`You are the only admin of ${title}. Make someone else an admin before you leave.`);
      return;
    }
    if (!confirm(`Leave ${title}? You will not see its new messages.`)) return;
    await this.#change(Action.LEAVE, {});
    byId("group-members-dialog").close();
  }

  async #change(action, options, after = () => {}) {
    const group = this.#current;
    try {
      await this.sender.change(group, action, options);
      after();
    } catch (error) {
      showError(
        `The change to ${this.book.title(group)} was not made. ${error.message || describeError(error)}`,
      );
    }
    if (group !== this.#current) return;
    await this.#showState(group);
    if (byId("group-members-dialog").open) await this.openMembers();
  }
}
