/**
 * The chat page (chat.html): the signed-in header, whether this browser holds my keys, and the
 * chat itself (static/js/chat/), which starts only when it does: without the private keys
 * nothing could be read or signed. The chat is imported only then, so the header and the key
 * status work even if the chat cannot start.
 */

import { showError } from "../ui.js";
import { showDeviceKeys, startSignedInPage } from "./session.js";

const username = await startSignedInPage();
const identity = username ? await showDeviceKeys(username) : null;
if (identity) {
  try {
    const { ChatApp } = await import("../chat/app.js");
    await new ChatApp({ me: username, identity }).start();
  } catch (error) {
    document.getElementById("chat-app").dataset.ready = "failed";
    showError(
      `The chat could not start in this browser. Reload the page to try again. (${error?.message ?? error})`,
    );
  }
}
