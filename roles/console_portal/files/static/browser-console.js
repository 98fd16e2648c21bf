// Copyright: vmconsole.secure contributors
// GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
// SPDX-License-Identifier: GPL-3.0-or-later
//
// The console portal's browser console (serial, with xterm.js): opens the portal's relay
// (wss://<this portal>/relay/v1), sends the page's single-use relay ticket as the first message,
// then copies keystrokes to the console and the console's bytes to the terminal. After a live
// migration the relay closes with "moved" and the page opens the console again with a new ticket
// (console-reconnect.js); the terminal stays. No inline script: the page only carries the ticket in
// a data attribute.
import { REASONS, reconnection } from "./console-reconnect.js";

const box = document.getElementById("console");
const state = document.getElementById("console-state");

function say(text) {
  state.textContent = text;
  box.setAttribute("data-state", text);
}

if (box && window.Terminal) {
  const term = new window.Terminal({convertEol: false, cursorBlink: true, scrollback: 5000});
  term.open(box);
  let socket = null;

  const open = (ticket) => {
    const decoder = new TextDecoder("utf-8");
    const current = new WebSocket("wss://" + window.location.host + "/relay/v1");
    let connected = false;
    socket = current;
    current.binaryType = "arraybuffer";
    current.onopen = () => {
      current.send(ticket);
      connected = true;
      say("connected");
      again.connected();
      term.focus();
    };
    current.onmessage = (event) => {
      term.write(decoder.decode(new Uint8Array(event.data), {stream: true}));
    };
    current.onclose = (event) => {
      if (!again.closed(event.code, connected)) {
        say("disconnected: " + (REASONS[event.code] || ("code " + event.code)));
      }
    };
  };
  const again = reconnection(box, "serial", say, open);
  term.onData((data) => {
    if (socket !== null && socket.readyState === WebSocket.OPEN) {
      socket.send(data);
    }
  });
  const ticket = box.getAttribute("data-ticket");
  box.removeAttribute("data-ticket");
  open(ticket);
}
