// Copyright: vmconsole.secure contributors
// GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
// SPDX-License-Identifier: GPL-3.0-or-later
//
// A browser console opens itself again after its VM moved (a live migration). The relay decides (the portal's
// _relay.console_fate): it closes the WebSocket with CLOSE_MOVED (4301) only when the VM runs elsewhere now, never
// after a cut, a logout or the token's expiry. Then this asks the portal for a new relay ticket (same session, the
// ticket endpoint of the API) and hands it to the page's open(ticket). The bounds come with the page (data-reconnect-*
// of the console element): so many tries, the first at once and each next one twice as long after the last, all
// within so many seconds of the close; then the page says the console is lost. data-reconnect-gap gets the
// milliseconds from the close to "connected" again.
export const CLOSE_MOVED = 4301;
export const REASONS = {
  1000: "the console was closed", 1002: "the relay did not understand the link", 4001: "your session ended: log in again",
  4401: "this page's console was already used: open it again", 4408: "the console's token expired: open it again",
  4429: "you have as many browser consoles open as allowed", 4502: "the VM's console cannot be reached now"
};

export function reconnection(box, consoleName, say, open) {
  const tries = Number(box.getAttribute("data-reconnect-tries")) || 0;
  const delay = Number(box.getAttribute("data-reconnect-delay")) * 1000;
  const within = Number(box.getAttribute("data-reconnect-within")) * 1000;
  const vm = box.getAttribute("data-vm");
  let since = null;
  let tried = 0;

  function lost(text) {
    since = null;
    say("disconnected: " + text);
  }

  async function ticket() {
    const csrf = document.querySelector("input[name=csrf]");
    const response = await fetch("/api/v1/vms/" + encodeURIComponent(vm) + "/relay/" + consoleName, {
      method: "POST", credentials: "same-origin", headers: {"X-CSRF-Token": csrf ? csrf.value : ""}});
    if (response.status === 401) {
      return {stop: REASONS[4001]};
    }
    if (response.status === 403 || response.status === 404) {
      return {stop: "the portal no longer opens this console (" + response.status + ")"};
    }
    return response.ok ? {ticket: (await response.json()).ticket} : {};
  }

  function attempt() {
    if (tried >= tries || performance.now() - since >= within) {
      lost("the VM moved and its console could not be opened again");
      return;
    }
    const wait = tried === 0 ? 0 : delay * 2 ** (tried - 1);
    tried += 1;
    window.setTimeout(() => {
      ticket().then((got) => {
        if (got.stop) {
          lost(got.stop);
        } else if (got.ticket) {
          open(got.ticket);
        } else {
          attempt();                // the VM is not listed as running yet (409, 503): the next try
        }
      }, () => attempt());
    }, wait);
  }

  return {
    // Whether a console that ended now is to be opened again: the relay said moved, or a try did not connect.
    closed(code, connected) {
      if (code === CLOSE_MOVED || (since !== null && !connected && (code === 4502 || code === 1006 || code === null))) {
        if (since === null) {
          since = performance.now();
          tried = 0;
        }
        say("reconnecting\u2026 (the VM moved)");
        attempt();
        return true;
      }
      since = null;
      return false;
    },
    connected() {
      if (since !== null) {
        box.setAttribute("data-reconnect-gap", String(Math.round(performance.now() - since)));
        box.setAttribute("data-reconnects", String(Number(box.getAttribute("data-reconnects") || 0) + 1));
        since = null;
      }
    }
  };
}
