// Copyright: vmconsole.secure contributors
// GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
// SPDX-License-Identifier: GPL-3.0-or-later
//
// The console portal's VNC console in the browser (noVNC, vendored under /static/novnc/): opens the portal's relay
// (wss://<this portal>/relay/v1), sends the page's single-use relay ticket as the first message, then hands the open
// WebSocket to noVNC's RFB. The relay has already authenticated to QEMU (VeNCrypt, X.509, the VNC ticket) and offers
// noVNC RFB with security type None. After a live migration the relay closes with "moved" and the page opens the
// console again with a new ticket (console-reconnect.js). No inline script: the page only carries the ticket in a data
// attribute.
import RFB from "./novnc/core/rfb.js";
import { REASONS, reconnection } from "./console-reconnect.js";

const box = document.getElementById("console");
const state = document.getElementById("console-state");

function say(text) {
  state.textContent = text;
  box.setAttribute("data-state", text);
}

function open(ticket) {
  const socket = new WebSocket("wss://" + window.location.host + "/relay/v1");
  socket.binaryType = "arraybuffer";
  let closed = null;
  let connected = false;
  socket.addEventListener("close", (event) => {
    if (again.closed(event.code, connected)) {
      closed = "reconnecting";      // noVNC's disconnect event (after this) leaves the state to the reconnection
      return;
    }
    closed = "disconnected: " + (REASONS[event.code] || ("code " + event.code));
    say(closed);
  });
  socket.addEventListener("open", () => {
    socket.send(ticket);
    say("connecting to the VM's screen");
    const rfb = new RFB(box, socket, {shared: true});
    rfb.scaleViewport = false;
    rfb.focusOnClick = true;
    rfb.addEventListener("connect", () => {
      connected = true;
      say("connected");
      again.connected();
      rfb.focus();
    });
    rfb.addEventListener("disconnect", () => {
      if (closed !== "reconnecting") {
        say(closed || "disconnected");
      }
    });
    rfb.addEventListener("securityfailure", (event) => {
      say("refused: " + (event.detail.reason || "security failure"));
    });
    rfb.addEventListener("desktopname", (event) => {
      box.setAttribute("data-desktop", event.detail.name);
    });
  }, {once: true});
}

const again = box ? reconnection(box, "vnc", say, open) : null;
if (box) {
  const ticket = box.getAttribute("data-ticket");
  box.removeAttribute("data-ticket");
  open(ticket);
}
