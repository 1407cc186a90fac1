/**
 * The browser side of a session: finishing a login with the keys in place, the header of the
 * signed-in pages, and logging out.
 *
 * Logging out asks first, and offers to forget this device's keys and its message cache. They
 * are kept by default on a personal device: the keys are non-extractable, so no script can read
 * them out, and the next login here checks them against the server's public keys. Whoever can
 * run script in this browser profile could still use them, though, so on a device marked shared
 * at login (kept in localStorage, see SHARED_DEVICE) forgetting is chosen already; the next
 * login restores the keys from the encrypted backup and the history from the server.
 */

import { accounts, describeError } from "../api.js";
import { ChatStore } from "../chat/store.js";
import { b64encode } from "../crypto.js";
import { forgetIdentity, loadIdentity, restoreIdentity } from "../keystore.js";
import { showError } from "../ui.js";

/** localStorage: "1" when the person said at login that this is a shared or public computer. */
export const SHARED_DEVICE = "securechat.shared-device";

/** Whether this browser was marked shared at the last login here. */
export function isSharedDevice() {
  try {
    return window.localStorage.getItem(SHARED_DEVICE) === "1";
  } catch {
    return false; // storage refused: assume a personal device, as before
  }
}

/** Remember (or forget) that this browser is a shared one. */
export function markSharedDevice(shared) {
  try {
    if (shared) window.localStorage.setItem(SHARED_DEVICE, "1");
    else window.localStorage.removeItem(SHARED_DEVICE);
  } catch {
    // Storage refused: Log out then simply does not pre-select forgetting.
  }
}

/** Delete username's keys and message cache from this browser. */
async function forgetDevice(username) {
  await forgetIdentity(username);
  const store = await ChatStore.open(username);
  await store.clear();
}

/**
 * Log in with keys already derived, and make sure this browser holds the user's private keys
 * (restored from the backup on a new browser). If they cannot be had, the new session is ended
 * again: a session without keys could neither read nor sign anything.
 */
export async function logInWithKeys(username, { authKey, wrapKey }) {
  const account = await accounts.login(username, b64encode(authKey));
  try {
    await restoreIdentity(account, wrapKey);
  } catch (error) {
    await accounts.logout().catch(() => {});
    throw error;
  }
  return account;
}

/** Leave for the login page. */
function toLogin() {
  window.location.replace("/login");
}

/** End the session on the server (and with forget, drop the keys here), then go to /login. */
export async function logOut({ forget = false, username = null } = {}) {
  // The chat stops its socket first, so the log-out is not taken for a remote one.
  window.dispatchEvent(new Event("securechat:logout"));
  try {
    if (forget && username) await forgetDevice(username);
    await accounts.logout({ forgetDevice: forget });
  } catch (error) {
    // 401: the session had already ended, which is what we wanted.
    if (error.status !== 401) {
      showError(describeError(error));
      return;
    }
  }
  toLogin();
}

/**
 * Fill in the header of a signed-in page and wire its log-out button. Resolves to my username,
 * or to null when there is no session (then the page is on its way to /login).
 */
export async function startSignedInPage() {
  let me;
  try {
    me = await accounts.me();
  } catch (error) {
    if (error.status === 401) toLogin();
    else showError(describeError(error));
    return null;
  }
  document.getElementById("whoami").textContent = me.username;
  wireLogOut(me.username);
  return me.username;
}

/** The header's Log out: a dialog that asks, with "forget this device" pre-set if shared. */
function wireLogOut(username) {
  const dialog = document.getElementById("logout-dialog");
  const forget = document.getElementById("logout-forget");
  document.getElementById("logout").addEventListener("click", () => {
    forget.checked = isSharedDevice();
    dialog.showModal();
  });
  document.getElementById("logout-cancel").addEventListener("click", () => dialog.close());
  dialog.querySelector("form").addEventListener("submit", (event) => {
    event.preventDefault();
    dialog.close();
    logOut({ forget: forget.checked, username });
  });
}

/** Say in #device-keys whether this browser holds username's keys; resolves to them or null. */
export async function showDeviceKeys(username) {
  const status = document.getElementById("device-keys");
  const identity = await loadIdentity(username).catch(() => null);
  if (identity) {
    status.textContent = "Your private keys are on this device, where they cannot be exported.";
    status.dataset.state = "present";
  } else {
    status.textContent =
      "This browser does not hold your keys. Log out and log in again to restore them "
      + "from your encrypted backup.";
    status.dataset.state = "missing";
  }
  return identity;
}
