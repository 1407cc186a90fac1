/** Settings: my sessions (end one, or all the others), and my keys on this device. */

import { accounts, describeError } from "../api.js";
import { fingerprint } from "../crypto.js";
import { el, formatAgo, formatDateTime, groupHex, showError, showInfo } from "../ui.js";
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

const username = await startSignedInPage();
if (username) {
  revokeOthers.addEventListener("click", endOtherSessions);
  const forget = document.getElementById("forget-device");
  forget.addEventListener("click", () => logOut({ forget: true, username }));
  await showSessions();
  await showFingerprints(await showDeviceKeys(username));
}
