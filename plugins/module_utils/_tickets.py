# -*- coding: utf-8 -*-
# Copyright: vmconsole.secure contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later

"""Console tickets: the one-time passwords QEMU checks when a SPICE or VNC client links.

Private to the collection. Stdlib only (runs on managed hosts and on the controller).

Error texts never contain the ticket itself: they say which rule it broke.
"""

from __future__ import annotations

import re
import secrets
import string

PROTOCOLS = ("spice", "vnc")

# Letters and digits only: remote-viewer takes `password=` verbatim from the .vv, the
# SPICE link and the VNC DES challenge take raw bytes, and nothing in the path ever
# needs to escape them. 62 symbols give 5.95 bits each (40 chars: 238 bits).
TICKET_ALPHABET = string.ascii_letters + string.digits
SPICE_TICKET_LENGTH = 40
SPICE_TICKET_MAX = 59      # QEMU 7.2 answers "Could not set password" from 60 on
VNC_TICKET_LENGTH = 8      # VNC authentication DES-encrypts the first 8 bytes only

TTL_MIN = 1
TTL_MAX = 86400            # one day; a console ticket is meant to live seconds

_MAX_LENGTH = {"spice": SPICE_TICKET_MAX, "vnc": VNC_TICKET_LENGTH}
_INTEGER_TEXT = re.compile(r"^[+-]?[0-9]+$")


def _check_protocol(protocol):
    if protocol not in PROTOCOLS:
        raise ValueError("protocol must be one of %s, got %r" % (", ".join(PROTOCOLS), protocol))


def new_ticket(protocol):
    """A fresh random ticket of the protocol's full length, from `secrets`."""
    _check_protocol(protocol)
    length = SPICE_TICKET_LENGTH if protocol == "spice" else VNC_TICKET_LENGTH
    return "".join(secrets.choice(TICKET_ALPHABET) for dummy in range(length))


def validate_ticket(protocol, value):
    """Raise ValueError (saying why, never echoing the value) unless `value` is a usable ticket."""
    _check_protocol(protocol)
    if not isinstance(value, str):
        raise ValueError("a ticket must be a string, got %s" % type(value).__name__)
    limit = _MAX_LENGTH[protocol]
    if not 1 <= len(value) <= limit:
        raise ValueError("a %s ticket must be 1 to %d characters long, this one has %d"
                         % (protocol.upper(), limit, len(value)))
    if value.strip(TICKET_ALPHABET):
        raise ValueError("a %s ticket may contain only letters and digits [A-Za-z0-9]" % protocol.upper())


def validate_ttl(value):
    """Return the ticket lifetime in whole seconds (1..86400) or raise ValueError naming `ttl`.

    Accepts an int, an integral float (30.0) or a string holding a decimal integer ("30"),
    as they arrive from YAML, `-a k=v` and `-e`. Refuses booleans (`true` is not a
    duration), fractions (QEMU expires in whole seconds), other strings, 0 and negatives.
    """
    if isinstance(value, bool):
        raise ValueError("ttl must be a number of seconds, got a boolean (%r)" % value)
    if isinstance(value, float):
        if not value.is_integer():
            raise ValueError("ttl must be a whole number of seconds (QEMU expires in whole seconds), got %r" % value)
        value = int(value)
    elif isinstance(value, str):
        if not _INTEGER_TEXT.match(value.strip()):
            raise ValueError("ttl must be a whole number of seconds, got %r (not an integer)" % value)
        value = int(value.strip())
    elif not isinstance(value, int):
        raise ValueError("ttl must be a whole number of seconds, got %s" % type(value).__name__)
    if not TTL_MIN <= value <= TTL_MAX:
        raise ValueError("ttl must be between %d and %d seconds, got %d" % (TTL_MIN, TTL_MAX, value))
    return value


# Proxy tokens -------------------------------------------------------------------------
# The HMAC-SHA256 proxy token (user, VM, node, expiry; `[A-Za-z0-9_-]` only, because
# remote-viewer neither decodes percent escapes nor allows ':' in a proxy password)
# belongs here, next to the tickets, when the connect_proxy role needs it.
