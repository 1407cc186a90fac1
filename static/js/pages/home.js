/** The signed-in home (chat.html): who I am, log out, and whether my keys are on this device. */

import { showDeviceKeys, startSignedInPage } from "./session.js";

const username = await startSignedInPage();
if (username) await showDeviceKeys(username);
