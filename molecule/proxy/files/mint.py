# -*- coding: utf-8 -*-
# SPDX-License-Identifier: GPL-3.0-or-later
"""Mint proxy tokens on a node with the token code the role installed (test code, verify only).

Reads {"name": {"user": U, "vm": V, "console": spice|vnc|serial (default spice), "age": seconds in the past,
"ttl": seconds}, ...} on stdin and
prints {"name": {"username": ..., "token": ...}}: tokens the node's own signing key signed (root reads
it), e.g. an expired one that console_ticket cannot make. The output holds secrets: the task that runs this is no_log.
"""

import json
import sys
import time

sys.path.insert(0, "/usr/lib/vmconsole/proxy")
import _tickets  # noqa: E402  pylint: disable=wrong-import-position


def main():
    keys = _tickets.load_proxy_signer("/etc/vmconsole/proxy-signing.json")
    out = {}
    for name, want in json.load(sys.stdin).items():
        token = _tickets.mint_proxy_token(keys, want["user"], want["vm"], want.get("console", "spice"),
                                          ttl=want.get("ttl", 3600),
                                          now=time.time() - want.get("age", 0))
        out[name] = {"username": token.username, "token": token.token}
    json.dump(out, sys.stdout)
    return 0


if __name__ == "__main__":
    sys.exit(main())
