/**
 * The browser side of a session: finishing a login with the keys in place, the header of the
 * signed-in pages, and logging out.
 *
 * Logging out keeps this browser's copy of the keys by default. They are non-extractable, so no
 * script can read them out, and the next login here checks them against the server's public
 * keys. Whoever can run script in this browser profile could still use them, though, so on a
 * shared computer the settings page offers "Log out and forget keys on this device", which
 * deletes them; the next login restores them from the encrypted backup.
 */

import { accounts, describeError } from "../api.js";
import { b64encode } from "../crypto.js";
import { forgetIdentity, loadIdentity, restoreIdentity } from "../keystore.js";
import { showError } from "../ui.js";

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
  try {
    if (forget && username) await forgetIdentity(username);
    await accounts.logout();
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
  document.getElementById("logout").addEventListener("click", () => logOut());
  return me.username;
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
