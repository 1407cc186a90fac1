/**
 * The accounts API (docs/protocol.md) over fetch: JSON in, JSON out.
 *
 * Every POST carries Content-Type: application/json, which the server requires of any
 * state-changing request (securechat/security.py). A failed request throws an ApiError with
 * status, code, message, field and retryAfter, so pages can tell a taken name from a throttle.
 */

/** The server's username rule (securechat/chat/protocol.py): NFKC, lower-case, then 3..32 of: */
export const USERNAME_PATTERN = /^[a-z0-9._-]{3,32}$/;

/** A request the server refused, or one that never reached it (status 0, code "network"). */
export class ApiError extends Error {
  constructor({ status, code, message, field = null, retryAfter = null }) {
    super(message);
    this.name = "ApiError";
    this.status = status;
    this.code = code;
    this.field = field;
    this.retryAfter = retryAfter;
  }
}

/**
 * A failure that may pass: the network (status 0), throttling (429), the server's trouble (5xx).
 * A refusal (any other 4xx) is an answer, and so is any error that is not an ApiError: a key
 * that fails a check, a message too long. Retrying would only meet them again.
 */
export function isTransient(error) {
  return (
    error instanceof ApiError && (error.status === 0 || error.status === 429 || error.status >= 500)
  );
}

/** Retry-After in whole seconds, or null (RFC 9110 10.2.3; we only ever send delta-seconds). */
function parseRetryAfter(value) {
  const seconds = Number.parseInt(value ?? "", 10);
  return Number.isFinite(seconds) && seconds >= 0 ? seconds : null;
}

/** The JSON body, or null when there is none or it is not JSON (an HTML error page). */
async function readJson(response) {
  if (response.status === 204) return null;
  try {
    return await response.json();
  } catch {
    return null;
  }
}

/** One request; resolves to the JSON body (null for 204), throws ApiError otherwise. */
export async function request(path, { method = "GET", body } = {}) {
  const init = {
    method,
    credentials: "same-origin",
    cache: "no-store",
    headers: { Accept: "application/json" },
  };
  if (body !== undefined) {
    init.headers["Content-Type"] = "application/json";
    init.body = JSON.stringify(body);
  }
  let response;
  try {
    response = await fetch(path, init);
  } catch {
    throw new ApiError({
      status: 0,
      code: "network",
      message: "Could not reach the server. Check your connection and try again.",
    });
  }
  const data = await readJson(response);
  if (!response.ok) {
    throw new ApiError({
      status: response.status,
      code: data?.error ?? `http_${response.status}`,
      message:
        data?.message ?? `The server answered ${response.status} ${response.statusText}.`.trim(),
      field: data?.field ?? null,
      retryAfter: parseRetryAfter(response.headers.get("Retry-After")),
    });
  }
  return data;
}

const post = (path, body = {}) => request(path, { method: "POST", body });

/**
 * A username's canonical form, exactly as the server's normalize_username makes it: NFKC, then
 * lower-case. Nothing is trimmed: the server refuses " alice", so the page must not make it
 * "alice" (the pages, the recipient search and the key directory's pins all use this one).
 */
export function normalizeUsername(name) {
  return String(name).normalize("NFKC").toLowerCase();
}

/**
 * Check a typed username against the server's rule; returns {username, error}, error a sentence
 * to show or null. The server checks again: this only saves a round trip and explains the rule.
 * The spaces a keyboard or autofill leaves around a name are dropped first (a username has
 * none, so nothing else can be meant); a space inside one is refused, as on the server.
 */
export function checkUsername(raw) {
  const username = normalizeUsername(String(raw).trim());
  if (/\s/u.test(username)) return { username, error: "Remove the spaces: a username has none." };
  if (username.length < 3) return { username, error: "Use at least 3 characters." };
  if (username.length > 32) return { username, error: "Use at most 32 characters." };
  if (!USERNAME_PATTERN.test(username)) {
    return { username, error: "Use only letters a–z, digits 0–9, dot, underscore and hyphen." };
  }
  return { username, error: null };
}

/** The calls of the accounts API, named after what they do. */
export const accounts = {
  prelogin: (username) => post("/api/v1/prelogin", { username }),
  register: (registration) => post("/api/v1/register", registration),
  login: (username, authKey) => post("/api/v1/login", { username, auth_key: authKey }),
  logout: ({ forgetDevice = false } = {}) =>
    post("/api/v1/logout", { forget_device: forgetDevice }),
  me: () => request("/api/v1/me"),
  sessions: () => request("/api/v1/sessions"),
  revokeOtherSessions: () => post("/api/v1/sessions/revoke-others"),
  revokeSession: (id) => post(`/api/v1/sessions/${encodeURIComponent(id)}/revoke`),
};

/** A sentence for the person in front of the page, for any error a call may throw. */
export function describeError(error) {
  if (!(error instanceof ApiError)) return "Something went wrong. Reload the page and try again.";
  if (error.status === 429) {
    const wait = error.retryAfter
      ? ` Try again in ${error.retryAfter} seconds.`
      : " Try again later.";
    return `Too many attempts.${wait}`;
  }
  return error.message;
}
