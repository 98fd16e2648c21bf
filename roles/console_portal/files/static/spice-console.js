// Copyright: vmconsole.secure contributors
// GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
// SPDX-License-Identifier: GPL-3.0-or-later
//
// The console portal's SPICE console in the browser (spice-html5, Debian's package, served as ES
// modules under /static/spice-html5/). spice-html5 opens one WebSocket per SPICE channel, all to
// wss://<this portal>/relay/v1/spice?ticket=<the page's relay ticket>; the relay completes each
// channel's link with the SPICE ticket, which never reaches this page (the password given to
// spice-html5 is empty and the relay drops what it makes of it). spice-html5 does not follow a
// migration: after one the main channel's relay closes with "moved" and the page opens the console
// again with a new ticket (console-reconnect.js). No inline script: the page only carries the relay
// ticket in a data attribute.
import { SpiceMainConn } from "./spice-html5/main.js";
import { REASONS, reconnection } from "./console-reconnect.js";

const screen = document.getElementById("spice-screen");
const state = document.getElementById("console-state");

function say(text) {
  state.textContent = text;
  screen.setAttribute("data-state", text);
}

function open(ticket) {
  const url = "wss://" + window.location.host + "/relay/v1/spice?ticket=" + encodeURIComponent(ticket);
  let connection = null;
  let connected = false;
  let ended = false;
  let failure = null;

  // The main channel's close code says why the relay ended the console (spice-html5 does not pass it on).
  function end(code, text) {
    if (ended) {
      return;
    }
    ended = true;
    if (connection !== null) {
      connection.stop();            // every channel closed, the canvas gone; a new connection draws a new one
    }
    if (!again.closed(code, connected)) {
      say("disconnected: " + (REASONS[code] || text || failure || ("code " + code)));
    }
  }

  try {
    connection = new SpiceMainConn({
      uri: url, screen_id: "spice-screen", password: "",
      onsuccess: () => {
        connected = true;
        say("connected");
        again.connected();
      },
      // The main channel's error: its close event (which follows, and knows the relay's reason) decides.
      onerror: (error) => {
        failure = error && error.message ? error.message : String(error);
      }
    });
    connection.ws.addEventListener("close", (event) => end(event.code));
  } catch (error) {
    end(null, error.message);
  }
}

const again = screen ? reconnection(screen, "spice", say, open) : null;
if (screen) {
  const ticket = screen.getAttribute("data-ticket");
  screen.removeAttribute("data-ticket");
  open(ticket);
}
