/**
 * Desktop notifications for messages that arrive while their conversation is not in front of
 * the person: the sender's name only, unless they chose to see the text too, and a short
 * sound if they chose one. The tab's title carries the unread count (conversations.js).
 *
 * Permission is asked only when the person presses "Turn on notifications" (browsers ignore or
 * penalise a prompt on load, and a prompt nobody asked for is a nuisance). The choices are kept
 * per user in localStorage; nothing about them reaches the server. A notification is drawn by
 * the operating system, which may show it on a locked screen or keep it in a history: that is
 * why the text stays out unless the person opts in (docs/security.md, "Notifications").
 */

const KEY = (me, name) => `securechat.notify.${name}.${me}`;
const TONE_HZ = 880;
const TONE_S = 0.15;

function stored(me, name) {
  try {
    return window.localStorage.getItem(KEY(me, name)) === "1";
  } catch {
    return false;
  }
}

function store(me, name, on) {
  try {
    if (on) window.localStorage.setItem(KEY(me, name), "1");
    else window.localStorage.removeItem(KEY(me, name));
  } catch {
    // Storage refused: the choice lasts as long as the page.
  }
}

export class Notifier {
  #audio = null;

  /**
   * me: my username; panel: the notification settings' elements (enable button, state line,
   * previews and sound checkboxes); onOpen(peer): a notification was clicked.
   */
  constructor({ me, enable, state, previews, sound, onOpen }) {
    Object.assign(this, { me, enable, state, previews, sound, onOpen });
    this.supported = "Notification" in window;
    previews.checked = stored(me, "previews");
    sound.checked = stored(me, "sound");
    previews.addEventListener("change", () => store(me, "previews", previews.checked));
    sound.addEventListener("change", () => store(me, "sound", sound.checked));
    enable.addEventListener("click", () => this.#turnOn());
    this.#show();
  }

  /** Whether notifications are wanted here and allowed by the browser. */
  get on() {
    return this.supported && stored(this.me, "on") && Notification.permission === "granted";
  }

  async #turnOn() {
    if (!this.supported) return;
    let permission = Notification.permission;
    if (permission === "default") permission = await Notification.requestPermission();
    store(this.me, "on", permission === "granted");
    this.#show();
  }

  #show() {
    let words;
    if (!this.supported) words = "This browser cannot show notifications.";
    else if (this.on) words = "Notifications are on.";
    else if (Notification.permission === "denied")
      words = "Notifications are blocked for this site in the browser's settings.";
    else words = "Notifications are off.";
    this.state.textContent = words;
    this.enable.hidden = !this.supported || this.on || Notification.permission === "denied";
  }

  /** A message from peer arrived (text: its words, or null when it cannot be shown). */
  message(peer, text) {
    if (!this.on) return;
    const body = this.previews.checked && text ? text : "New message";
    try {
      // The tag folds a burst from one person into one notification.
      const note = new Notification(peer, { body, tag: `securechat:${peer}` });
      note.addEventListener("click", () => {
        window.focus();
        this.onOpen(peer);
        note.close();
      });
    } catch {
      return; // some browsers allow notifications only from a service worker
    }
    if (this.sound.checked) this.#beep();
  }

  /** A short tone (Web Audio: no sound file to fetch). */
  #beep() {
    try {
      this.#audio ??= new AudioContext();
      const oscillator = this.#audio.createOscillator();
      const gain = this.#audio.createGain();
      oscillator.frequency.value = TONE_HZ;
      gain.gain.value = 0.1;
      oscillator.connect(gain).connect(this.#audio.destination);
      oscillator.start();
      oscillator.stop(this.#audio.currentTime + TONE_S);
    } catch {
      // No audio here: the notification itself still shows.
    }
  }
}
