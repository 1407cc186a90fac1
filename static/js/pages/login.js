/**
 * Log in: pre-login for the salt, derive keys, log in, and make sure this browser holds the
 * private keys (restored from the encrypted backup on a new browser).
 */

import { accounts, checkUsername, describeError } from "../api.js";
import { b64decode, deriveKeys } from "../crypto.js";
import { clearFieldError, dismissToasts, formProgress, setFieldError, showError } from "../ui.js";
import { isSharedDevice, logInWithKeys, markSharedDevice } from "./session.js";

const form = document.getElementById("login-form");
const fields = {
  username: document.getElementById("username"),
  password: document.getElementById("password"),
};
const progress = formProgress(form, document.getElementById("login-progress"));
const shared = document.getElementById("shared-device");
shared.checked = isSharedDevice();
// Sent here by a chat page whose session ended elsewhere (chat/app.js): say why.
if (new URLSearchParams(window.location.search).get("ended") === "1")
  document.getElementById("login-ended").hidden = false;

/** {username, password}, or null with the errors shown. */
function validate() {
  const { username, error } = checkUsername(fields.username.value);
  if (error) {
    setFieldError(fields.username, error);
    fields.username.focus();
    return null;
  }
  if (!fields.password.value) {
    setFieldError(fields.password, "Enter your password.");
    fields.password.focus();
    return null;
  }
  return { username, password: fields.password.value };
}

/** Each step named in the progress line. */
async function logIn(username, password) {
  progress.step("Deriving keys from your password…");
  const { salt, iterations } = await accounts.prelogin(username);
  // deriveKeys refuses fewer iterations than the floor this page owns, whatever the server says.
  const keys = await deriveKeys(password, b64decode(salt), iterations);
  progress.step("Signing in and unlocking your keys…");
  return logInWithKeys(username, keys);
}

/** A sentence for what went wrong. */
function failureMessage(error) {
  if (error.code === "invalid_credentials") return "Wrong username or password.";
  if (error.code === "key_backup") return "Your key backup could not be opened with this password.";
  if (error.name === "KeyMismatchError") return error.message;
  if (error instanceof RangeError) {
    return "The server asked for weaker password protection than this app accepts. Not logging in.";
  }
  return describeError(error);
}

form.addEventListener("submit", async (event) => {
  event.preventDefault();
  if (form.getAttribute("aria-busy") === "true") return;
  dismissToasts();
  Object.values(fields).forEach(clearFieldError);
  const input = validate();
  if (!input) return;
  let account;
  try {
    account = await logIn(input.username, input.password);
    markSharedDevice(shared.checked);
  } catch (error) {
    progress.done();
    showError(failureMessage(error));
    fields.password.select();
    fields.password.focus();
    return;
  }
  // The operator withdrew this account's keys (docs/protocol.md, "Tombstones"): nobody can
  // write to it until new ones are published, which the settings' key reset does.
  window.location.assign(account.keys_withdrawn ? "/settings?keys=withdrawn#reset-title" : "/chat");
});
for (const input of Object.values(fields))
  input.addEventListener("input", () => clearFieldError(input));
