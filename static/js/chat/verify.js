/**
 * The verification panel (a modal <dialog>): the safety number with a contact (60 digits in 12
 * groups of 5, the same on both people's screens), the same number as a QR code, both people's
 * key fingerprints, and "Mark as verified". When a verified contact's keys changed, the panel
 * says so first and offers to accept the new safety number, which lets sending resume.
 *
 * The QR code is drawn with the vendored encoder (static/vendor/qr, MIT OR Apache-2.0) as SVG
 * nodes made here, never as markup.
 */

import encodeQR from "../../vendor/qr/qr.js";
import { el, groupHex } from "../ui.js";

const SVG = "http://www.w3.org/2000/svg";

/** A QR code of text as an <svg> element (dark modules as one path). */
export function qrSvg(text, label) {
  const rows = encodeQR(text, "raw", { ecc: "medium", border: 2 });
  const size = rows.length;
  let d = "";
  for (const [y, row] of rows.entries()) {
    for (const [x, dark] of row.entries()) {
      if (dark) d += `M${x} ${y}h1v1h-1z`;
    }
  }
  const svg = document.createElementNS(SVG, "svg");
  svg.setAttribute("viewBox", `0 0 ${size} ${size}`);
  svg.setAttribute("role", "img");
  svg.setAttribute("aria-label", label);
  svg.setAttribute("class", "qr");
  svg.setAttribute("shape-rendering", "crispEdges");
  const background = document.createElementNS(SVG, "rect");
  background.setAttribute("width", String(size));
  background.setAttribute("height", String(size));
  background.setAttribute("class", "qr__light");
  const path = document.createElementNS(SVG, "path");
  path.setAttribute("d", d);
  path.setAttribute("class", "qr__dark");
  svg.append(background, path);
  return svg;
}

function fingerprintList(title, prints) {
  return [
    el("dt", { text: title }),
    el(
      "dd",
      {},
      el("span", { className: "fingerprint-kind", text: "Encryption " }),
      el("code", { text: groupHex(prints.encFingerprint) }),
    ),
    el(
      "dd",
      {},
      el("span", { className: "fingerprint-kind", text: "Signing " }),
      el("code", { text: groupHex(prints.signFingerprint) }),
    ),
  ];
}

/** What the panel says about the contact's state. */
function stateLine(peer, { keys, pin }) {
  if (keys.state === "changed" && pin?.pending) {
    return {
      kind: "warning",
      text:
        `${peer}'s keys changed since you verified them, so this is a new safety number. Compare it with `
        + `${peer} again, in person or on a call where you know their voice. Accept it only if it matches: until `
        + "then, nothing is sent to them.",
    };
  }
  if (keys.verified) return { kind: "verified", text: `You have verified ${peer}.` };
  return { kind: "plain", text: `You have not verified ${peer} yet.` };
}

/** The dialog; open(peer, data) fills it from KeyBook.panel(peer). */
export class VerifyPanel {
  #peer = null;

  /**
   * load(peer, {fresh}) gives the panel's data. onMark(peer, verified) and onAccept(peer) are
   * awaited and refresh the keys themselves; then the panel is redrawn from those keys.
   */
  constructor({ dialog, load, onMark, onAccept }) {
    this.dialog = dialog;
    this.load = load;
    this.onMark = onMark;
    this.onAccept = onAccept;
    this.body = dialog.querySelector("[data-verify-body]");
    dialog.querySelector("[data-verify-close]").addEventListener("click", () => dialog.close());
  }

  get peer() {
    return this.dialog.open ? this.#peer : null;
  }

  /** Open the panel for peer (or refresh it; fresh: false takes keys fetched just now). */
  async open(peer, { fresh = true } = {}) {
    this.#peer = peer;
    this.dialog.querySelector("[data-verify-title]").textContent = `Verify ${peer}`;
    this.body.replaceChildren(el("p", { className: "muted", text: "Checking keys…" }));
    if (!this.dialog.open) this.dialog.showModal();
    try {
      this.#fill(peer, await this.load(peer, { fresh }));
    } catch (error) {
      this.body.replaceChildren(
        el("p", { className: "verify__state verify__state--warning", text: error.message }),
      );
    }
  }

  #fill(peer, data) {
    const { panel } = data;
    const state = stateLine(peer, data);
    const number = el(
      "div",
      { className: "safety-number", attrs: { role: "group", "aria-label": "Safety number" } },
      ...panel.groups.map((group) =>
        el("span", { className: "safety-number__group", text: group }),
      ),
    );
    const actions = el("div", { className: "verify__actions" });
    if (state.kind === "warning") {
      actions.append(
        this.#button("Accept the new safety number", "button button--primary", () =>
          this.onAccept(peer),
        ),
      );
    } else if (panel.verified) {
      actions.append(
        this.#button("Mark as not verified", "button button--quiet", () =>
          this.onMark(peer, false),
        ),
      );
    } else {
      actions.append(
        this.#button("Mark as verified", "button button--primary", () => this.onMark(peer, true)),
      );
    }
    this.body.replaceChildren(
      el("p", {
        className: `verify__state verify__state--${state.kind}`,
        text: state.text,
        attrs: { id: "verify-state" },
      }),
      el("p", {
        className: "help",
        text:
          `If ${peer} sees the same number on their screen, your messages are encrypted end to end for the two of `
          + "you and no one in between. Compare it in person or on a call, not through this chat.",
      }),
      number,
      el(
        "figure",
        { className: "verify__qr" },
        qrSvg(panel.qrText, `Safety number with ${peer} as a QR code`),
        el("figcaption", {
          className: "help",
          text: "The same number as a QR code, for a phone's QR reader.",
        }),
      ),
      el(
        "details",
        { className: "verify__keys" },
        el("summary", { text: "Key fingerprints (SHA-256)" }),
        el(
          "dl",
          { className: "fingerprints fingerprints--stacked" },
          ...fingerprintList("Yours", panel.mine),
          ...fingerprintList(`${peer}'s`, panel.theirs),
        ),
      ),
      actions,
    );
  }

  #button(text, className, action) {
    const button = el("button", { className, text, attrs: { type: "button" } });
    button.addEventListener("click", async () => {
      button.disabled = true;
      await action();
      await this.open(this.#peer, { fresh: false });
      this.dialog.querySelector(".verify__actions button")?.focus();
    });
    return button;
  }
}
