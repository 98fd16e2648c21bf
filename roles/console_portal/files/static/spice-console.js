// Copyright: vmconsole.secure contributors
// GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
// SPDX-License-Identifier: GPL-3.0-or-later
//
// The console portal's SPICE console in the browser (spice-html5, Debian's package, served as ES
// modules under /static/spice-html5/). spice-html5 opens one WebSocket per SPICE channel, all to
// wss://<this portal>/relay/v1/spice?ticket=<the page's relay ticket>; the relay completes each
// channel's link with the SPICE ticket, which never reaches this page (the password given to
// spice-html5 is empty and the relay drops what it makes of it). No inline script: the page only
// carries the relay ticket in a data attribute.
import { SpiceMainConn } from "./spice-html5/main.js";

var screen = document.getElementById("spice-screen");
var state = document.getElementById("console-state");
var reasons = {
  1000: "the console was closed", 1002: "the relay did not understand the link", 4001: "your session ended: log in again",
  4401: "this page's console was already used: open it again", 4408: "the console's token expired: open it again",
  4429: "you have as many browser consoles open as allowed", 4502: "the VM's console cannot be reached now"
};
var ended = false;

function say(text) {
  state.textContent = text;
  screen.setAttribute("data-state", text);
}

function closed(text) {
  if (!ended) {
    ended = true;
    say("disconnected: " + text);
  }
}

if (screen) {
  var ticket = screen.getAttribute("data-ticket");
  screen.removeAttribute("data-ticket");
  var url = "wss://" + window.location.host + "/relay/v1/spice?ticket=" + encodeURIComponent(ticket);
  try {
    var connection = new SpiceMainConn({
      uri: url, screen_id: "spice-screen", password: "",
      onsuccess: function () { say("connected"); },
      // Later than the main channel's close event below, which knows the relay's reason.
      onerror: function (error) {
        var text = error && error.message ? error.message : String(error);
        window.setTimeout(function () { closed(text); }, 0);
      }
    });
    // The main channel's close code says why the relay ended the console (spice-html5 does not pass it on).
    connection.ws.addEventListener("close", function (event) {
      closed(reasons[event.code] || ("code " + event.code));
    });
  } catch (error) {
    closed(error.message);
  }
}
