/**
 * Settings, "Delete account" (issue 12, item 3; docs/protocol.md "Account deletion"): its own
 * module beside settings.js, wired to the template's #delete-account section.
 *
 * The person confirms (a checkbox saying it cannot be undone) and types the password; the page
 * derives auth_key as a login does and posts it with the signed-in name. Once the server has
 * deleted the account, this browser's keys and message cache are removed too, and the page says
 * what happened: nothing of the account is left to log in to.
 *
 * It also tells a person whose keys the operator withdrew (python -m securechat users
 * reset-keys), whom the login page sends here, to reset them in the section above.
 */

import { ApiError, accounts, describeError, request } from "../api.js";
import { ChatStore } from "../chat/store.js";
import { b64decode, b64encode, deriveKeys } from "../crypto.js";
import { forgetIdentity } from "../keystore.js";
import { clearFieldError, el, formProgress, setFieldError, showError } from "../ui.js";

const form = document.getElementById("delete-form");
const password = document.getElementById("delete-password");
const understood = document.getElementById("delete-understood");
const progress = formProgress(form, document.getElementById("delete-progress"));

/** The auth_key of username's password, derived as a login derives it. */
async function authKeyOf(username, secret) {
  const { salt, iterations } = await accounts.prelogin(username);
  const { authKey } = await deriveKeys(secret, b64decode(salt), iterations);
  return b64encode(authKey);
}

/** Remove this browser's copy of the account: its keys and its message cache. */
async function forgetHere(username) {
  await forgetIdentity(username);
  const store = await ChatStore.open(username);
  await store.clear();
}

/** Replace the settings with the news, and a way to the start page. */
function showDeleted(username, reusableAt) {
  const main = document.getElementById("main");
  const when = new Date(reusableAt).toLocaleDateString();
  main.replaceChildren(
    el("h1", { className: "page__title", text: "Account deleted" }),
    el("p", {
      attrs: { id: "account-deleted", role: "status" },
      text:
        `The account ${username} was deleted, with its keys and messages, and is gone from this `
        + `browser. Your contacts are shown that it was deleted. Nobody can sign up as `
        + `${username} before ${when}.`,
    }),
    el("p", {}, el("a", { text: "Back to the start page", attrs: { href: "/" } })),
  );
  main.focus();
}

/** What the form found wrong, on its fields; true when it may go ahead. */
function checked() {
  clearFieldError(understood);
  clearFieldError(password);
  if (!understood.checked) {
    setFieldError(understood, "Tick this box to confirm that you want to delete the account.");
    understood.focus();
    return false;
  }
  if (!password.value) {
    setFieldError(password, "Enter your password.");
    password.focus();
    return false;
  }
  return true;
}

async function deleteAccount(event) {
  event.preventDefault();
  if (!checked()) return;
  progress.step("Checking your password…");
  let username;
  try {
    username = (await accounts.me()).username;
    const authKey = await authKeyOf(username, password.value);
    progress.step("Deleting your account…");
    const answer = await request("/api/v1/account/delete", {
      method: "POST",
      body: { username, auth_key: authKey },
    });
    // The chat's socket is closed by the server; it must not be taken for a remote logout.
    window.dispatchEvent(new Event("securechat:logout"));
    await forgetHere(username).catch(() => {});
    showDeleted(username, answer.name_reusable_at);
  } catch (error) {
    progress.done();
    if (error instanceof ApiError && error.code === "invalid_credentials") {
      setFieldError(password, "That is not your password. Nothing was deleted.");
      password.focus();
    } else {
      showError(describeError(error));
    }
  }
}

form.addEventListener("submit", deleteAccount);

// The login page sends a person whose keys the operator withdrew here (login.js): say why.
if (new URLSearchParams(window.location.search).get("keys") === "withdrawn") {
  showError(
    "The server's operator withdrew your keys, so nobody can write to you for now. Reset your "
      + "keys below to publish new ones.",
  );
}
