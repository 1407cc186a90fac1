/**
 * Sign up: check the username and password here, derive keys, make an identity, register,
 * then log in and keep the keys in this browser (docs/CONTRACTS.md, issue 2).
 */

import { accounts, checkUsername, describeError, request } from "../api.js";
import { b64encode, createIdentity, deriveKeys, MIN_ITERATIONS, SALT_BYTES } from "../crypto.js";
import { loadCommonPasswords, passwordProblem, passwordStrength } from "../passwords.js";
import { clearFieldError, dismissToasts, formProgress, setFieldError, showError } from "../ui.js";
import { offerRecoveryKey } from "./recovery.js";
import { logInWithKeys } from "./session.js";

// OWASP Password Storage Cheat Sheet: PBKDF2-HMAC-SHA256 with at least 600,000 iterations.
const ITERATIONS = MIN_ITERATIONS;

const form = document.getElementById("signup-form");
const fields = {
  username: document.getElementById("username"),
  password: document.getElementById("password"),
  confirm: document.getElementById("password-confirm"),
};
const meter = document.getElementById("password-meter");
const strength = document.getElementById("password-strength");
const strengthDefault = strength.textContent;
const progress = formProgress(form, document.getElementById("signup-progress"));

// Fetched at once so the hint can use it; a failure is reported when the form is sent.
const commonPasswords = loadCommonPasswords();
let common = new Set();
commonPasswords.then(
  (list) => {
    common = list;
    showStrength();
  },
  () => {},
);

/** The live strength hint under the password field. */
function showStrength() {
  const password = fields.password.value;
  strength.hidden = false;
  if (!password) {
    meter.dataset.score = "none";
    strength.textContent = strengthDefault;
    return;
  }
  const { username } = checkUsername(fields.username.value);
  const problem = passwordProblem(password, { common, username });
  const { score, label, advice } = passwordStrength(password, { common, username });
  meter.dataset.score = problem ? "0" : String(score);
  strength.textContent = problem ? `Not allowed. ${problem}` : `${label}. ${advice}`;
}

/** {username, password} when both pass the rules, else null with the errors shown. */
async function validate() {
  const errors = [];
  const { username, error } = checkUsername(fields.username.value);
  if (error) errors.push([fields.username, error]);
  let list;
  try {
    list = await commonPasswords;
  } catch {
    showError("The list of common passwords could not be loaded. Reload the page and try again.");
    return null;
  }
  const password = fields.password.value;
  const problem = passwordProblem(password, { common: list, username });
  if (problem) errors.push([fields.password, problem]);
  else if (fields.confirm.value !== password)
    errors.push([fields.confirm, "The passwords don't match."]);
  for (const [input, message] of errors) setFieldError(input, message);
  // The error under the password says what the hint would: show it once.
  if (problem) strength.hidden = true;
  if (errors.length > 0) {
    errors[0][0].focus();
    return null;
  }
  fields.username.value = username;
  if (!(await available(username))) return null;
  return { username, password };
}

/**
 * Ask the server whether username is free before spending seconds on keys: it answers what a
 * registration would (409 if taken), on the same budget (docs/protocol.md, register/check).
 */
async function available(username) {
  progress.step("Checking the username…");
  try {
    await request("/api/v1/register/check", { method: "POST", body: { username } });
  } catch (error) {
    progress.done();
    reportFailure(error);
    return false;
  }
  return true;
}

/** The account is created but the log-in that follows failed: logging in by hand will do. */
class NotLoggedInError extends Error {
  constructor(cause) {
    super(
      `Your account was created, but logging in failed: ${describeError(cause)} Log in to continue.`,
    );
    this.name = "NotLoggedInError";
  }
}

/** Derive, generate, register, log in: each step named in the progress line. */
async function signUp(username, password) {
  progress.step("Deriving keys from your password…");
  const salt = crypto.getRandomValues(new Uint8Array(SALT_BYTES));
  const keys = await deriveKeys(password, salt, ITERATIONS);
  progress.step("Generating your encryption keys…");
  const { identity, keyBackup } = await createIdentity(keys.wrapKey);
  progress.step("Creating your account…");
  await accounts.register({
    username,
    salt: b64encode(salt),
    iterations: ITERATIONS,
    auth_key: b64encode(keys.authKey),
    enc_public_key: b64encode(identity.encSpki),
    sign_public_key: b64encode(identity.signSpki),
    key_backup: keyBackup,
  });
  progress.step("Signing in…");
  // No pre-login: the salt and iterations were chosen just above, and deriving the keys again
  // would cost another 600,000 iterations for the same answer.
  try {
    await logInWithKeys(username, keys);
  } catch (error) {
    throw new NotLoggedInError(error);
  }
  // Last: the account exists and is logged in; the recovery key is offered (pages/recovery.js).
  await offerRecoveryKey({ authKey: keys.authKey, wrapKey: keys.wrapKey, keyBackup });
}

/** Tell what went wrong, next to the field it concerns when there is one. */
function reportFailure(error) {
  if (error.code === "username_taken") {
    showError("Username already exists.");
    setFieldError(fields.username, "Choose another username.");
    fields.username.focus();
  } else if (error.code === "invalid" && error.field === "username") {
    setFieldError(fields.username, error.message);
    fields.username.focus();
  } else {
    showError(error instanceof NotLoggedInError ? error.message : describeError(error));
    document.getElementById("signup-submit").focus();
  }
}

form.addEventListener("submit", async (event) => {
  event.preventDefault();
  if (form.getAttribute("aria-busy") === "true") return;
  dismissToasts();
  Object.values(fields).forEach(clearFieldError);
  const input = await validate();
  if (!input) return;
  try {
    await signUp(input.username, input.password);
  } catch (error) {
    progress.done();
    reportFailure(error);
    return;
  }
  window.location.assign("/chat");
});
for (const input of Object.values(fields))
  input.addEventListener("input", () => clearFieldError(input));
fields.password.addEventListener("input", showStrength);
fields.username.addEventListener("input", showStrength);
