/**
 * The chat page (chat.html): the signed-in header, whether this browser holds my keys, and the
 * chat itself (static/js/chat/), which starts only when it does: without the private keys
 * nothing could be read or signed.
 */

import { ChatApp } from "../chat/app.js";
import { showError } from "../ui.js";
import { showDeviceKeys, startSignedInPage } from "./session.js";

const username = await startSignedInPage();
const identity = username ? await showDeviceKeys(username) : null;
if (identity) {
  try {
    await new ChatApp({ me: username, identity }).start();
  } catch (error) {
    document.getElementById("chat-app").dataset.ready = "failed";
    showError("The chat could not start in this browser. Reload the page to try again. " +
      `(${error?.message ?? error})`);
  }
}
