// Copyright: vmconsole.secure contributors
// GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
// SPDX-License-Identifier: GPL-3.0-or-later
//
// The console portal's VNC console in the browser (noVNC, vendored under /static/novnc/): opens the
// portal's relay (wss://<this portal>/relay/v1), sends the page's single-use relay ticket as the
// first message, then hands the open WebSocket to noVNC's RFB. The relay has already authenticated
// to QEMU (VeNCrypt, X.509, the VNC ticket) and offers noVNC RFB with security type None. No inline
// script: the page only carries the ticket in a data attribute.
import RFB from "./novnc/core/rfb.js";

const box = document.getElementById("console");
const state = document.getElementById("console-state");
const reasons = {
  1000: "closed", 4001: "your session ended: log in again", 4401: "this page's console was already used: open it again",
  4408: "the console's token expired: open it again", 4429: "you have as many browser consoles open as allowed",
  4502: "the VM's console cannot be reached now"
};

function say(text) {
  state.textContent = text;
  box.setAttribute("data-state", text);
}

if (box) {
  const socket = new WebSocket("wss://" + window.location.host + "/relay/v1");
  socket.binaryType = "arraybuffer";
  let closed = null;
  socket.addEventListener("close", (event) => {
    closed = "disconnected: " + (reasons[event.code] || ("code " + event.code));
    say(closed);
  });
  socket.addEventListener("open", () => {
    socket.send(box.getAttribute("data-ticket"));
    box.removeAttribute("data-ticket");
    say("connecting to the VM's screen");
    const rfb = new RFB(box, socket, {shared: true});
    rfb.scaleViewport = false;
    rfb.focusOnClick = true;
    rfb.addEventListener("connect", () => {
      say("connected");
      rfb.focus();
    });
    rfb.addEventListener("disconnect", () => {
      say(closed || "disconnected");
    });
    rfb.addEventListener("securityfailure", (event) => {
      say("refused: " + (event.detail.reason || "security failure"));
    });
    rfb.addEventListener("desktopname", (event) => {
      box.setAttribute("data-desktop", event.detail.name);
    });
  }, {once: true});
}
