/**
 * A forgotten password, recovered with the recovery key (issue 12, item 2): prove the key, get
 * the backup wrapped under it, seal it again under the new password and under a new recovery
 * key, and let the server swap all of it at once; then log in and show the new recovery key.
 * Nothing secret leaves the page (docs/protocol.md "Recovery key").
 */

import { checkUsername, describeError } from "../api.js";
import {
  b64encode,
  deriveKeys,
  deriveRecoveryKeys,
  MIN_ITERATIONS,
  parseRecoveryKey,
  rewrapKeyBackup,
  SALT_BYTES,
} from "../crypto.js";
import { loadCommonPasswords, passwordProblem } from "../passwords.js";
import { clearFieldError, dismissToasts, formProgress, setFieldError, showError } from "../ui.js";
import { credentials, prepareRecoveryKey, showRecoveryKey } from "./recovery.js";
import { logInWithKeys } from "./session.js";

const form = document.getElementById("recover-form");
const fields = {
  username: document.getElementById("username"),
  code: document.getElementById("recovery-key-input"),
  password: document.getElementById("password"),
  confirm: document.getElementById("password-confirm"),
};
const progress = formProgress(form, document.getElementById("recover-progress"));
const commonPasswords = loadCommonPasswords();

/** {username, keyBytes, password}, or null with the errors shown. */
async function validate() {
  const errors = [];
  const { username, error } = checkUsername(fields.username.value);
  if (error) errors.push([fields.username, error]);
  let keyBytes = null;
  try {
    keyBytes = parseRecoveryKey(fields.code.value);
  } catch (problem) {
    errors.push([fields.code, problem.message]);
  }
  let common;
  try {
    common = await commonPasswords;
  } catch {
    showError("The list of common passwords could not be loaded. Reload the page and try again.");
    return null;
  }
  const password = fields.password.value;
  const problem = passwordProblem(password, { common, username });
  if (problem) errors.push([fields.password, problem]);
  else if (fields.confirm.value !== password)
    errors.push([fields.confirm, "The passwords don't match."]);
  for (const [input, message] of errors) setFieldError(input, message);
  if (errors.length > 0) {
    errors[0][0].focus();
    return null;
  }
  return { username, keyBytes, password };
}

/** Each step named in the progress line; resolves to {code: the new recovery key, keys}. */
async function recover({ username, keyBytes, password }) {
  progress.step("Checking your recovery key…");
  const recovery = await deriveRecoveryKeys(keyBytes);
  const proof = { username, recovery_auth: b64encode(recovery.authKey) };
  const { recovery_backup: recoveryBackup } = await credentials.recoveryBackup(proof);
  progress.step("Sealing your keys under the new password…");
  const salt = crypto.getRandomValues(new Uint8Array(SALT_BYTES));
  const keys = await deriveKeys(password, salt, MIN_ITERATIONS);
  const keyBackup = await rewrapKeyBackup(recoveryBackup, recovery.wrapKey, keys.wrapKey);
  const next = await prepareRecoveryKey(recoveryBackup, recovery.wrapKey);
  progress.step("Setting your new password…");
  await credentials.completeRecovery({
    ...proof,
    salt: b64encode(salt),
    iterations: MIN_ITERATIONS,
    auth_key: b64encode(keys.authKey),
    key_backup: keyBackup,
    new_recovery_auth: b64encode(next.authKey),
    new_recovery_backup: next.recoveryBackup,
  });
  return { code: next.code, keys };
}

/** A sentence for what went wrong, next to the field it concerns. */
function reportFailure(error) {
  if (error.code === "invalid_recovery_key" || error.code === "key_backup") {
    setFieldError(fields.code, "Wrong username or recovery key.");
    fields.code.focus();
  } else if (error.code === "recovery_key_used") {
    setFieldError(
      fields.code,
      "This recovery key was already used or replaced: use the newest one you saved.",
    );
    fields.code.focus();
  } else {
    showError(describeError(error));
  }
}

form.addEventListener("submit", async (event) => {
  event.preventDefault();
  if (form.getAttribute("aria-busy") === "true") return;
  dismissToasts();
  Object.values(fields).forEach(clearFieldError);
  const input = await validate();
  if (!input) return;
  let recovered;
  try {
    recovered = await recover(input);
  } catch (error) {
    progress.done();
    reportFailure(error);
    return;
  }
  // The new key is already stored, and the old one is spent: it is shown before anything else
  // can fail, and must be acknowledged, not skipped.
  await showRecoveryKey(recovered.code, { optional: false });
  progress.step("Signing in…");
  try {
    await logInWithKeys(input.username, recovered.keys);
  } catch (error) {
    progress.done();
    showError(`Your new password is set, but signing in failed: ${describeError(error)} Log in.`);
    return;
  }
  window.location.assign("/chat");
});
for (const input of Object.values(fields))
  input.addEventListener("input", () => clearFieldError(input));
