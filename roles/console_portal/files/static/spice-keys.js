// Copyright: vmconsole.secure contributors
// GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
// SPDX-License-Identifier: GPL-3.0-or-later
//
// The SPICE page's keyboard: the keys a person presses reach the guest as the physical keys they are, whatever the
// browser's keyboard layout, as noVNC sends them (QEMU's extended key events) on the VNC page.
//
// spice-html5 0.3.0 (Debian 12's) makes a key's scan code from its keyCode, which follows the layout's characters:
// on a German keyboard the key labelled Z (where a US keyboard has Y) reached the guest as the US Z key (scan code
// 2C), so a German guest typed "y"; AltGr went as the left Alt. This module takes the key events of spice-html5's
// canvas before spice-html5 does (capture phase on the document) and sends the AT set 1 scan code of the physical
// key (KeyboardEvent.code, through the vendored noVNC's table, the one noVNC uses) with spice-html5's own messages
// on its inputs channel. A key without a scan code in that table is left to spice-html5.
import XtScancode from "./novnc/core/input/xtscancodes.js";
import { Constants } from "./spice-html5/enums.js";
import { SpiceMiniData, SpiceMsgcKeyDown, SpiceMsgcKeyUp } from "./spice-html5/spicemsg.js";

function physicalKey(event, down) {
  var connection = event.target && event.target.sc;      // spice-html5 sets it on its display canvas
  var scan = XtScancode[event.code];
  if (!connection || scan === undefined) {
    return;
  }
  event.stopImmediatePropagation();                       // spice-html5's own keyCode handler does not run
  event.preventDefault();
  if (!connection.inputs || connection.inputs.state !== "ready") {
    return;
  }
  // spice-html5's encoding: the bytes in the order the keyboard sends them (an extended key's E0 first), a release
  // with bit 7 set in the last byte.
  var code = scan > 0xff ? 0xe0 | ((scan & 0xff) << 8) : scan;
  var key = down ? new SpiceMsgcKeyDown() : new SpiceMsgcKeyUp();
  key.code = down ? code : code | (scan > 0xff ? 0x8000 : 0x80);
  var message = new SpiceMiniData();
  message.build_msg(down ? Constants.SPICE_MSGC_INPUTS_KEY_DOWN : Constants.SPICE_MSGC_INPUTS_KEY_UP, key);
  connection.inputs.send_msg(message);
}

document.addEventListener("keydown", function (event) { physicalKey(event, true); }, true);
document.addEventListener("keyup", function (event) { physicalKey(event, false); }, true);
