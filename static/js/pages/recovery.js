/**
 * The recovery key (issue 12, item 2): offered at sign-up and from settings, shown once, and
 * stored on the server only as what it cannot use: the argon2id hash of a value derived from
 * it, and a second copy of the key backup wrapped under another key derived from it
 * (docs/protocol.md "Recovery key"). With it a person who forgot the password sets a new one
 * and keeps their keys and history (pages/recover.js).
 */

import { describeError, request } from "../api.js";
import {
  b64encode,
  deriveRecoveryKeys,
  newRecoveryKey,
  parseRecoveryKey,
  rewrapKeyBackup,
} from "../crypto.js";
import { el, showError } from "../ui.js";

/** The calls of the credentials API (docs/protocol.md "Password change, recovery key ..."). */
export const credentials = {
  keyBackup: () => request("/api/v1/account/key-backup"),
  changePassword: (body) => request("/api/v1/account/password", { method: "POST", body }),
  setRecoveryKey: (body) => request("/api/v1/account/recovery-key", { method: "POST", body }),
  resetKeys: (body) => request("/api/v1/account/keys", { method: "POST", body }),
  recoveryBackup: (body) => request("/api/v1/recovery/backup", { method: "POST", body }),
  completeRecovery: (body) => request("/api/v1/recovery/complete", { method: "POST", body }),
};

/** What each way back into an account keeps and loses, said the same way on every page. */
export const WHAT_RECOVERY_KEEPS =
  "If you forget your password, your recovery key lets you set a new one and keep your keys "
  + "and your whole message history.";
export const WHAT_RESET_LOSES =
  "Without a recovery key, a forgotten password can only be fixed by a key reset: you keep "
  + "your username and contacts, but messages sent before the reset can no longer be read "
  + "on this account, and your contacts are told that your keys changed.";

/**
 * A fresh recovery key and the backup (sealed under wrapKey) re-wrapped under it: {code,
 * authKey, recoveryBackup}, ready to send; nothing is sent here.
 */
export async function prepareRecoveryKey(keyBackup, wrapKey) {
  const code = newRecoveryKey();
  const recovery = await deriveRecoveryKeys(parseRecoveryKey(code));
  const recoveryBackup = await rewrapKeyBackup(keyBackup, wrapKey, recovery.wrapKey);
  return { code, authKey: recovery.authKey, recoveryBackup };
}

/**
 * Offer a recovery key for the keys keyBackup holds (opened with wrapKey), proving the account
 * with the password's authKey: show it, and store it on the server once the person says it is
 * saved; if that fails, say why and show it again, to retry or skip. Resolves to true when a
 * key was set, false when skipped (an existing key then stays as it was: with replacing, the
 * dialog says so).
 */
export async function offerRecoveryKey({ authKey, wrapKey, keyBackup, replacing = false }) {
  const prepared = await prepareRecoveryKey(keyBackup, wrapKey);
  while (await showRecoveryKey(prepared.code, { replacing })) {
    try {
      await credentials.setRecoveryKey({
        auth_key: b64encode(authKey),
        recovery_auth: b64encode(prepared.authKey),
        recovery_backup: prepared.recoveryBackup,
      });
      return true;
    } catch (error) {
      showError(
        `Your recovery key could not be saved: ${describeError(error)} Try again, or skip it `
          + "and create one later in Settings.",
      );
    }
  }
  return false;
}

/**
 * Show a recovery key in a modal dialog until the person ticks "I have saved it" and closes
 * it (true), or, when optional, skips it (false). With replacing (from settings, where a key
 * may exist), skipping is a "Cancel" that keeps the current key.
 */
export function showRecoveryKey(code, { optional = true, replacing = false } = {}) {
  const parts = recoveryDialog(code, optional, replacing);
  document.body.append(parts.dialog);
  parts.dialog.showModal();
  return new Promise((resolve) => {
    const finish = (saved) => {
      parts.dialog.close();
      parts.dialog.remove();
      resolve(saved);
    };
    parts.saved.addEventListener("change", () => {
      parts.done.disabled = !parts.saved.checked;
    });
    parts.copy.addEventListener("click", () => copyCode(code, parts.copy));
    parts.form.addEventListener("submit", (event) => {
      event.preventDefault();
      if (parts.saved.checked) finish(true);
    });
    parts.skip?.addEventListener("click", () => finish(false));
    // Escape: a skip where skipping is allowed; otherwise the key must be acknowledged.
    parts.dialog.addEventListener("cancel", (event) => {
      event.preventDefault();
      if (optional) finish(false);
    });
  });
}

/** The dialog's elements: {dialog, form, saved, copy, done, skip}. */
function recoveryDialog(code, optional, replacing) {
  const saved = el("input", {
    attrs: { type: "checkbox", id: "recovery-saved", "aria-describedby": "recovery-key" },
  });
  const copy = el("button", {
    className: "button button--quiet button--small",
    text: "Copy",
    attrs: { type: "button", id: "recovery-copy" },
  });
  const done = el("button", {
    className: "button button--primary",
    text: "Done",
    attrs: { type: "submit", id: "recovery-done", disabled: true },
  });
  const skip = optional
    ? el("button", {
        className: "button button--quiet",
        text: replacing ? "Cancel: keep my current key" : "Skip: no recovery key",
        attrs: { type: "button", id: "recovery-skip" },
      })
    : null;
  const form = el(
    "form",
    { className: "confirm__form", attrs: { method: "dialog" } },
    el("h2", { text: "Your recovery key", attrs: { id: "recovery-title" } }),
    el("p", { className: "help", text: WHAT_RECOVERY_KEEPS }),
    el(
      "p",
      { className: "recovery-key" },
      el("code", { text: code, attrs: { id: "recovery-key" } }),
    ),
    el("p", {
      className: "help",
      text:
        "Write it down or keep it in a password manager: it is shown only now, and the server "
        + "never sees it. Anyone who has it and your username can take over your account.",
    }),
    copy,
    el(
      "div",
      { className: "check" },
      saved,
      el("label", { text: "I have saved my recovery key", attrs: { for: "recovery-saved" } }),
    ),
    optional && !replacing ? el("p", { className: "help", text: WHAT_RESET_LOSES }) : "",
    el("div", { className: "confirm__actions" }, ...(skip ? [skip] : []), done),
  );
  const dialog = el(
    "dialog",
    { className: "confirm", attrs: { "aria-labelledby": "recovery-title" } },
    form,
  );
  return { dialog, form, saved, copy, done, skip };
}

/** Copy the key to the clipboard, saying so on the button; a refusal leaves it to be typed. */
async function copyCode(code, button) {
  try {
    await navigator.clipboard.writeText(code);
    button.textContent = "Copied";
  } catch {
    button.textContent = "Copy it by hand";
  }
}
