/**
 * Small, accessible UI pieces shared by the pages: DOM building, pop-ups, field errors and
 * the busy state of a form.
 *
 * Data reaches the page only as textContent or attribute values set here, never parsed as
 * HTML from a string, so a hostile username or user agent stays text.
 * Pop-ups (WAI-ARIA 1.2): an error is a new role="alert" element, announced at once; news is
 * added to the page's persistent role="status" region, announced politely.
 */

const INFO_TIMEOUT_MS = 6000;

/**
 * Build an element: el("p", {className: "help", text: name, attrs: {id: "x"}}, child, ...).
 * Children may be nodes or strings (added as text).
 */
export function el(tag, { className, text, attrs = {} } = {}, ...children) {
  const node = document.createElement(tag);
  if (className) node.className = className;
  if (text !== undefined) node.textContent = text;
  for (const [name, value] of Object.entries(attrs)) {
    if (value === null || value === undefined || value === false) continue;
    node.setAttribute(name, value === true ? "" : value);
  }
  node.append(...children);
  return node;
}

/** The toast stack of base.html, with its status region. */
function toastStack() {
  return {
    stack: document.getElementById("toasts"),
    status: document.getElementById("toast-status"),
  };
}

/** A toast with its message and a close button; removed when closed. */
function toast(message, kind, role) {
  const close = el("button", {
    className: "toast__close",
    text: "×",
    attrs: { type: "button", "aria-label": "Dismiss" },
  });
  const node = el(
    "div",
    { className: `toast toast--${kind}`, attrs: { role } },
    el("p", { className: "toast__text", text: message }),
    close,
  );
  close.addEventListener("click", () => node.remove());
  return node;
}

/** An error pop-up (role="alert"). It stays until dismissed: errors must not vanish unread. */
export function showError(message) {
  const { stack } = toastStack();
  const node = toast(message, "error", "alert");
  stack.append(node);
  return node;
}

/** A short notice in the page's status region (role="status"); it fades after a few seconds. */
export function showInfo(message) {
  const { status } = toastStack();
  const node = toast(message, "info", null);
  status.append(node);
  setTimeout(() => node.remove(), INFO_TIMEOUT_MS);
  return node;
}

/** Remove every pop-up, before a new attempt. */
export function dismissToasts() {
  const { stack, status } = toastStack();
  for (const node of stack.querySelectorAll("[role=alert]")) node.remove();
  status.replaceChildren();
}

/** The element that holds the error of an input: #<input id>-error. */
function errorOf(input) {
  return document.getElementById(`${input.id}-error`);
}

/** Mark input invalid with a message read out with it (aria-describedby names #<id>-error). */
export function setFieldError(input, message) {
  const slot = errorOf(input);
  slot.textContent = message;
  slot.hidden = false;
  input.setAttribute("aria-invalid", "true");
}

/** Clear the error of input. */
export function clearFieldError(input) {
  const slot = errorOf(input);
  slot.textContent = "";
  slot.hidden = true;
  input.removeAttribute("aria-invalid");
}

/**
 * The busy state of a form: its controls disabled, aria-busy set, and a progress line (a
 * role="status" element with a spinner) telling what is happening, since deriving keys and
 * generating an RSA key take a second or two.
 */
export function formProgress(form, progress) {
  const label = progress.querySelector(".progress__text");
  const controls = () => form.querySelectorAll("input, button");
  return {
    step(message) {
      form.setAttribute("aria-busy", "true");
      controls().forEach((control) => {
        control.disabled = true;
      });
      label.textContent = message;
      progress.hidden = false;
      // It sits below the form's button, which may be at the window's bottom edge: bring the
      // whole line into view, or the person watches a button that does nothing.
      progress.scrollIntoView({ block: "nearest" });
    },
    done() {
      form.removeAttribute("aria-busy");
      controls().forEach((control) => {
        control.disabled = false;
      });
      label.textContent = "";
      progress.hidden = true;
    },
  };
}

const DATE_TIME = new Intl.DateTimeFormat(undefined, { dateStyle: "medium", timeStyle: "short" });
const RELATIVE = new Intl.RelativeTimeFormat(undefined, { numeric: "auto" });

/** A timestamp (ms since the epoch) as a local date and time. */
export function formatDateTime(ms) {
  return DATE_TIME.format(new Date(ms));
}

/** How long ago ms was, in words ("2 minutes ago", "yesterday"). */
export function formatAgo(ms, now = Date.now()) {
  const seconds = Math.round((ms - now) / 1000);
  const units = [
    ["day", 86400],
    ["hour", 3600],
    ["minute", 60],
  ];
  for (const [unit, size] of units) {
    if (Math.abs(seconds) >= size) return RELATIVE.format(Math.round(seconds / size), unit);
  }
  return "just now";
}

/** A hex fingerprint in blocks of four, easier to read aloud and compare. */
export function groupHex(hex) {
  return hex.match(/.{1,4}/g).join(" ");
}
