// Copyright: vmconsole.secure contributors
// GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
// SPDX-License-Identifier: GPL-3.0-or-later
//
// The console portal's browser console (serial, with xterm.js): opens the portal's relay
// (wss://<this portal>/relay/v1), sends the page's single-use relay ticket as the first message,
// then copies keystrokes to the console and the console's bytes to the terminal. No inline
// script: the page only carries the ticket in a data attribute.
(function () {
  "use strict";
  var box = document.getElementById("console");
  var state = document.getElementById("console-state");
  if (!box || !window.Terminal) {
    return;
  }
  var reasons = {
    1000: "closed", 4001: "your session ended: log in again", 4401: "this page's console was already used: open it again",
    4408: "the console's token expired: open it again", 4429: "you have as many browser consoles open as allowed",
    4502: "the VM's console cannot be reached now"
  };
  var term = new window.Terminal({convertEol: false, cursorBlink: true, scrollback: 5000});
  term.open(box);
  var decoder = new TextDecoder("utf-8");
  var socket = new WebSocket("wss://" + window.location.host + "/relay/v1");
  socket.binaryType = "arraybuffer";
  function say(text) {
    state.textContent = text;
    box.setAttribute("data-state", text);
  }
  socket.onopen = function () {
    socket.send(box.getAttribute("data-ticket"));
    box.removeAttribute("data-ticket");
    say("connected");
    term.focus();
  };
  socket.onmessage = function (event) {
    term.write(decoder.decode(new Uint8Array(event.data), {stream: true}));
  };
  socket.onclose = function (event) {
    say("disconnected: " + (reasons[event.code] || ("code " + event.code)));
  };
  term.onData(function (data) {
    if (socket.readyState === WebSocket.OPEN) {
      socket.send(data);
    }
  });
}());
