/**
 * Settings: my sessions (end one, or all the others), my password, my recovery key, my keys on
 * this device and a key reset, and the server's key directory key to compare with the
 * operator's. Destructive actions ask first.
 */

import { accounts, describeError, request } from "../api.js";
import {
  b64decode,
  b64encode,
  createIdentity,
  deriveKeys,
  fingerprint,
  MIN_ITERATIONS,
  rewrapKeyBackup,
  SALT_BYTES,
} from "../crypto.js";
import { KeyDirectory } from "../directory.js";
import { saveIdentity } from "../keystore.js";
import { loadCommonPasswords, passwordProblem } from "../passwords.js";
import {
  clearFieldError,
  dismissToasts,
  el,
  formatAgo,
  formatDateTime,
  formProgress,
  groupHex,
  setFieldError,
  showError,
  showInfo,
} from "../ui.js";
import { credentials, offerRecoveryKey } from "./recovery.js";
import { logOut, showDeviceKeys, startSignedInPage } from "./session.js";

const list = document.getElementById("session-list");
const loading = document.getElementById("sessions-loading");
const revokeOthers = document.getElementById("revoke-others");

const BROWSERS = [
  [/Edg\//, "Edge"],
  [/OPR\//, "Opera"],
  [/Firefox\//, "Firefox"],
  [/HeadlessChrome\//, "Headless Chrome"],
  [/Chrom(e|ium)\//, "Chrome"],
  [/Safari\//, "Safari"],
  [/python-httpx/, "Python client"],
];
const SYSTEMS = [
  [/Android/, "Android"],
  [/iPhone|iPad/, "iOS"],
  [/Windows/, "Windows"],
  [/Mac OS X/, "macOS"],
  [/CrOS/, "ChromeOS"],
  [/Linux/, "Linux"],
];

/** "Firefox on Linux" from a User-Agent header; a guess, with the full string in a tooltip. */
function deviceName(userAgent) {
  const browser = BROWSERS.find(([pattern]) => pattern.test(userAgent))?.[1];
  const system = SYSTEMS.find(([pattern]) => pattern.test(userAgent))?.[1];
  if (browser && system) return `${browser} on ${system}`;
  return browser ?? system ?? (userAgent.slice(0, 60) || "Unknown device");
}

/** One session as a list item, with an "End session" button unless it is this one. */
function sessionItem(session) {
  const describedBy = `session-${session.id}-details`;
  const title = el(
    "p",
    { className: "session__name" },
    el("span", {
      text: deviceName(session.user_agent),
      attrs: { title: session.user_agent || null },
    }),
  );
  if (session.current) title.append(" ", el("span", { className: "badge", text: "This device" }));
  const details = el("p", {
    className: "session__details",
    // A server clock slightly ahead of this one must not read as "active in 1 minute".
    text:
      `Signed in ${formatDateTime(session.created_at)} · `
      + `active ${formatAgo(Math.min(session.last_seen_at, Date.now()))}`
      + (session.address ? ` · ${session.address}` : ""),
    attrs: { id: describedBy },
  });
  const item = el(
    "li",
    { className: "session" },
    el("div", { className: "session__text" }, title, details),
  );
  if (!session.current) {
    const end = el("button", {
      className: "button button--quiet button--small",
      text: "End session",
      attrs: { type: "button", "aria-describedby": describedBy },
    });
    end.addEventListener("click", () => endSession(session, end));
    item.append(end);
  }
  return item;
}

/** Fetch my sessions and show them. */
async function showSessions() {
  let sessions;
  try {
    ({ sessions } = await accounts.sessions());
  } catch (error) {
    if (error.status === 401) window.location.replace("/login");
    else showError(describeError(error));
    return;
  }
  loading.hidden = true;
  list.replaceChildren(...sessions.map(sessionItem));
  revokeOthers.disabled = !sessions.some((session) => !session.current);
}

/** End one other session. */
async function endSession(session, button) {
  button.disabled = true;
  try {
    await accounts.revokeSession(session.id);
    showInfo(`Ended the session of ${deviceName(session.user_agent)}.`);
  } catch (error) {
    showError(describeError(error));
  }
  await showSessions();
  // The button that had focus is gone with its row: put focus back at the top of the list.
  document.getElementById("sessions-title").focus();
}

/** End every session but this one. */
async function endOtherSessions() {
  revokeOthers.disabled = true;
  try {
    const { revoked } = await accounts.revokeOtherSessions();
    showInfo(
      revoked === 1 ? "Logged out 1 other session." : `Logged out ${revoked} other sessions.`,
    );
  } catch (error) {
    showError(describeError(error));
  }
  await showSessions();
}

/** The fingerprints of my keys on this device, to compare with what others see. */
async function showFingerprints(identity) {
  if (!identity) return;
  document.getElementById("fingerprint-enc").textContent = groupHex(
    await fingerprint(identity.encSpki),
  );
  document.getElementById("fingerprint-sign").textContent = groupHex(
    await fingerprint(identity.signSpki),
  );
  document.getElementById("key-fingerprints").hidden = false;
}

/**
 * Ask before a destructive action, in the page's confirmation dialog; resolves to whether the
 * person confirmed.
 */
function confirmAction({ title, text, confirm }) {
  const dialog = document.getElementById("confirm-dialog");
  document.getElementById("confirm-title").textContent = title;
  document.getElementById("confirm-text").textContent = text;
  document.getElementById("confirm-ok").textContent = confirm;
  const cancel = document.getElementById("confirm-cancel");
  const form = dialog.querySelector("form");
  return new Promise((resolve) => {
    const finish = (confirmed) => {
      cancel.removeEventListener("click", onCancel);
      form.removeEventListener("submit", onSubmit);
      dialog.removeEventListener("close", onClose);
      if (dialog.open) dialog.close();
      resolve(confirmed);
    };
    const onCancel = () => finish(false);
    const onClose = () => finish(false); // Escape
    const onSubmit = (event) => {
      event.preventDefault();
      finish(true);
    };
    cancel.addEventListener("click", onCancel);
    form.addEventListener("submit", onSubmit);
    dialog.addEventListener("close", onClose);
    dialog.showModal();
  });
}

/** The password's keys for me, from pre-login's salt and iterations. */
async function derivePasswordKeys(password) {
  const { salt, iterations } = await accounts.prelogin(username);
  return { ...(await deriveKeys(password, b64decode(salt), iterations)), iterations };
}

/** True when error says the password typed was wrong (the backup or the server said so). */
function wrongPassword(error) {
  return error.code === "key_backup" || error.code === "invalid_credentials";
}

/** Run a form's action with its progress line; a wrong password is shown under passwordField. */
async function runForm(form, progress, passwordField, action) {
  if (form.getAttribute("aria-busy") === "true") return;
  dismissToasts();
  for (const input of form.querySelectorAll("input")) clearFieldError(input);
  if (!passwordField.value) {
    setFieldError(passwordField, "Enter your password.");
    passwordField.focus();
    return;
  }
  try {
    await action();
  } catch (error) {
    if (wrongPassword(error)) {
      setFieldError(passwordField, "Wrong password.");
      passwordField.focus();
    } else {
      showError(describeError(error));
    }
  } finally {
    progress.done();
  }
}

// --- password change ------------------------------------------------------------------------

const commonPasswords = loadCommonPasswords();

/** The new password if it passes the rules and is repeated, else null with the errors shown. */
async function checkNewPassword(fields) {
  const password = fields.next.value;
  let common;
  try {
    common = await commonPasswords;
  } catch {
    showError("The list of common passwords could not be loaded. Reload the page and try again.");
    return null;
  }
  const problem = passwordProblem(password, { common, username });
  const mismatch = fields.confirm.value !== password ? "The passwords don't match." : null;
  if (problem || mismatch) {
    const [input, message] = problem ? [fields.next, problem] : [fields.confirm, mismatch];
    setFieldError(input, message);
    input.focus();
    return null;
  }
  return password;
}

/**
 * Change my password: the backup is opened with the current password's wrap key and sealed
 * under the new one's (a new salt), and the server swaps both after checking the old auth key.
 */
async function changePassword(fields, progress) {
  const next = await checkNewPassword(fields);
  if (next === null) return;
  progress.step("Checking your current password…");
  const old = await derivePasswordKeys(fields.current.value);
  const stored = await credentials.keyBackup();
  progress.step("Sealing your keys under the new password…");
  const salt = crypto.getRandomValues(new Uint8Array(SALT_BYTES));
  const iterations = Math.max(old.iterations, MIN_ITERATIONS);
  const keys = await deriveKeys(next, salt, iterations);
  const keyBackup = await rewrapKeyBackup(stored.key_backup, old.wrapKey, keys.wrapKey);
  progress.step("Changing your password…");
  const { revoked } = await credentials.changePassword({
    old_auth_key: b64encode(old.authKey),
    salt: b64encode(salt),
    iterations,
    auth_key: b64encode(keys.authKey),
    key_backup: keyBackup,
  });
  for (const input of Object.values(fields)) input.value = "";
  showInfo(
    revoked === 0
      ? "Password changed."
      : `Password changed. ${revoked === 1 ? "1 other session was" : `${revoked} other sessions were`} logged out.`,
  );
  await showSessions();
}

function wirePasswordForm() {
  const form = document.getElementById("password-form");
  const progress = formProgress(form, document.getElementById("password-progress"));
  const fields = {
    current: document.getElementById("current-password"),
    next: document.getElementById("new-password"),
    confirm: document.getElementById("new-password-confirm"),
  };
  form.addEventListener("submit", (event) => {
    event.preventDefault();
    runForm(form, progress, fields.current, () => changePassword(fields, progress));
  });
}

// --- recovery key ---------------------------------------------------------------------------

/** Say whether I have a recovery key, and since when. */
async function showRecoveryStatus() {
  const status = document.getElementById("recovery-status");
  try {
    const { recovery_key_set_at: setAt } = await credentials.keyBackup();
    status.textContent =
      setAt === null
        ? "You have no recovery key. If you forget your password, only a key reset is left, "
          + "and your message history is lost."
        : `Your recovery key was created ${formatDateTime(setAt)}.`;
    status.dataset.state = setAt === null ? "none" : "set";
  } catch (error) {
    status.textContent = describeError(error);
  }
}

/** Make a new recovery key: the password opens the backup, which is sealed again under it. */
async function newRecoveryKey(passwordField, progress) {
  progress.step("Unlocking your key backup…");
  const keys = await derivePasswordKeys(passwordField.value);
  const { key_backup: keyBackup } = await credentials.keyBackup();
  const set = await offerRecoveryKey({
    authKey: keys.authKey,
    wrapKey: keys.wrapKey,
    keyBackup,
    replacing: true,
  });
  passwordField.value = "";
  if (set) showInfo("Your new recovery key is saved. The old one no longer works.");
  await showRecoveryStatus();
}

function wireRecoveryForm() {
  const form = document.getElementById("recovery-form");
  const progress = formProgress(form, document.getElementById("recovery-progress"));
  const password = document.getElementById("recovery-password");
  form.addEventListener("submit", (event) => {
    event.preventDefault();
    runForm(form, progress, password, () => newRecoveryKey(password, progress));
  });
}

// --- key reset ------------------------------------------------------------------------------

/** Make new keys here, publish them, and keep them in this browser. */
async function resetKeys(passwordField, progress) {
  const confirmed = await confirmAction({
    title: "Reset your keys?",
    text:
      "Messages from before the reset can no longer be read on this account, your contacts are "
      + "warned that your keys changed, your recovery key stops working, and your other "
      + "sessions are logged out.",
    confirm: "Reset my keys",
  });
  if (!confirmed) return;
  progress.step("Generating your new keys…");
  const keys = await derivePasswordKeys(passwordField.value);
  const { identity, keyBackup } = await createIdentity(keys.wrapKey);
  progress.step("Publishing your new keys…");
  await credentials.resetKeys({
    auth_key: b64encode(keys.authKey),
    enc_public_key: b64encode(identity.encSpki),
    sign_public_key: b64encode(identity.signSpki),
    key_backup: keyBackup,
  });
  await saveIdentity(username, identity);
  passwordField.value = "";
  showInfo("Your keys were reset. Create a new recovery key to be able to recover them.");
  await Promise.all([showFingerprints(identity), showRecoveryStatus(), showSessions()]);
}

function wireResetForm() {
  const form = document.getElementById("reset-form");
  const progress = formProgress(form, document.getElementById("reset-progress"));
  const password = document.getElementById("reset-password");
  form.addEventListener("submit", (event) => {
    event.preventDefault();
    runForm(form, progress, password, () => resetKeys(password, progress));
  });
}

// --- the directory key ----------------------------------------------------------------------

/** The directory key pinned here and the one served now, by fingerprint, for comparing. */
async function showDirectoryKey() {
  const status = document.getElementById("directory-status");
  try {
    const { public_key: served } = await request("/api/v1/directory");
    const servedSpki = b64decode(served);
    const pinned = new KeyDirectory({ me: username }).pinnedDirectoryKey();
    const servedPrint = await fingerprint(servedSpki);
    const pinnedPrint = pinned ? await fingerprint(pinned) : null;
    document.getElementById("directory-served").textContent = servedPrint;
    document.getElementById("directory-pinned").textContent =
      pinnedPrint ?? "none yet (pinned when you first open a chat)";
    document.getElementById("directory-fingerprints").hidden = false;
    if (pinnedPrint !== null && pinnedPrint !== servedPrint) {
      status.textContent =
        "The server now shows another directory key than the one pinned here. Ask the operator why.";
      status.dataset.state = "differs";
    } else {
      status.textContent = "";
      status.dataset.state = pinnedPrint === null ? "unpinned" : "same";
    }
  } catch (error) {
    status.textContent = `The directory key could not be read: ${describeError(error)}`;
  }
}

// --- wiring ---------------------------------------------------------------------------------

const username = await startSignedInPage();
if (username) {
  revokeOthers.addEventListener("click", async () => {
    const confirmed = await confirmAction({
      title: "Log out other sessions?",
      text: "Every other browser and app signed in to your account is logged out at once.",
      confirm: "Log out other sessions",
    });
    if (confirmed) await endOtherSessions();
  });
  const forget = document.getElementById("forget-device");
  forget.addEventListener("click", async () => {
    const confirmed = await confirmAction({
      title: "Forget keys on this device?",
      text:
        "You are logged out and your keys and messages are removed from this browser. Your next "
        + "login restores them from the encrypted backup.",
      confirm: "Log out and forget",
    });
    if (confirmed) await logOut({ forget: true, username });
  });
  wirePasswordForm();
  wireRecoveryForm();
  wireResetForm();
  await showSessions();
  await showFingerprints(await showDeviceKeys(username));
  await Promise.all([showRecoveryStatus(), showDirectoryKey()]);
}
