#!/usr/bin/python
# -*- coding: utf-8 -*-
# Copyright: vmconsole.secure contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later

from __future__ import annotations

DOCUMENTATION = r"""
module: proxy_token_key
short_description: Make and rotate a node's proxy token signing key, on the node
version_added: 0.2.0
description:
  - Every node of a cluster signs the proxy tokens M(vmconsole.secure.console_ticket) issues with an Ed25519 key of
    its own, and every node's squid helper verifies tokens with the public keys of all nodes. The helper (user
    C(proxy), facing the client networks) holds public keys only, so it cannot make a token; a node holds no other
    node's private key.
  - This module keeps the node's signing keys file (O(path), 0600 root:root). The private keys are made here, by the
    node's own random source, and never leave it - not in the result, not in a log. The result gives the public
    keys; the P(vmconsole.secure.connect_proxy#role) role installs those of every node on every node.
  - A key rotation runs in three stages on every node at once, and each stage may run again without changing
    anything - O(stage=1) adds a pending key, O(stage=2) makes it current (the old one is retiring but still
    verifies), O(stage=3) drops the retiring keys once O(overlap) seconds have passed since stage 2.
  - A stage that does not fit the keys (stage 2 without a pending key, stage 3 too early) fails with a message
    naming the stage and what to run, before anything changes.
author:
  - vmconsole.secure developers (@vmconsole)
extends_documentation_fragment:
  - vmconsole.secure.attributes
attributes:
  check_mode:
    support: full
    details:
      - In check mode the module reads the files and reports what the stage would change; a key it would make is not
        in RV(public_keys).
  diff_mode:
    support: none
  idempotent:
    support: full
options:
  path:
    description: The node's signing keys file. Made 0600 root:root; its folder must exist.
    type: path
    default: /etc/vmconsole/proxy-signing.json
  public_keys_file:
    description:
      - The public keys file the node holds now (read only, for RV(known_keys)); missing is fine.
    type: path
    default: /etc/vmconsole/proxy-keys.json
  stage:
    description: The rotation stage; V(0) keeps the keys and makes the first one when there is none.
    type: int
    choices: [0, 1, 2, 3]
    default: 0
  overlap:
    description:
      - Seconds stage 3 waits after stage 2 before it drops the retiring keys - the longest lifetime of a token.
    type: int
    default: 28800
requirements:
  - cryptography (Debian python3-cryptography) on the node
seealso:
  - module: vmconsole.secure.console_ticket
"""

EXAMPLES = r"""
- name: Make this node's token signing key when it has none
  vmconsole.secure.proxy_token_key:
  become: true

- name: Rotation stage 1 on every node - a pending key, public everywhere before anyone signs with it
  vmconsole.secure.proxy_token_key:
    stage: 1
  become: true
"""

RETURN = r"""
key_id:
  description: The id of the key that signs now (12 hex digits of its public key's SHA-256); in check mode on a node
    without keys, V(null).
  returned: success
  type: str
  sample: 3f2a9c0d51be
pending:
  description: The id of the pending key (stage 1 made it), or V(null).
  returned: success
  type: str
retiring:
  description: The ids of the keys that still verify after a switch, until stage 3.
  returned: success
  type: list
  elements: str
promoted:
  description: When the current key became current (epoch seconds; V(0) for the first key).
  returned: success
  type: int
public_keys:
  description: Every key the node holds - C({KEY_ID PUBLIC_KEY}), unpadded base64url of the raw Ed25519 public key.
  returned: success
  type: dict
known_keys:
  description: The entries of the public keys file the node holds now - C({KEY_ID {node, public}}), C({}) without one.
  returned: success
  type: dict
"""

import os
import time

from ansible.module_utils.basic import AnsibleModule

from ansible_collections.vmconsole.secure.plugins.module_utils._connect_proxy import signing_keys
from ansible_collections.vmconsole.secure.plugins.module_utils._files import write_file_atomic
from ansible_collections.vmconsole.secure.plugins.module_utils._tickets import (
    HAS_CRYPTOGRAPHY, dump_signing_keys, load_public_keys, load_signing_keys, new_proxy_signer,
)


def run(params, check_mode, now=None):
    """The module's work: (result, error message or None). Never returns a private key."""
    path, stage = params["path"], params["stage"]
    if params["overlap"] < 0:
        return None, "overlap must be 0 or more seconds, got %d" % params["overlap"]
    try:
        try:
            known = load_public_keys(params["public_keys_file"])
        except ValueError as exc:
            raise ValueError("public_keys_file: %s" % exc) from None
        exists = os.path.lexists(path)
        if not HAS_CRYPTOGRAPHY:
            if check_mode and not exists and stage == 0:    # a preflight before the role installed cryptography
                return dict(changed=True, key_id=None, pending=None, retiring=[], promoted=0, public_keys={},
                            known_keys=known), None
            return None, "proxy_token_key needs the Python package cryptography on the node (Debian: python3-cryptography)"
        stored = load_signing_keys(path) if exists else None
    except ValueError as exc:
        return None, "%s; repair or remove it (a removed signing key makes a new one: tokens it signed stop working)" % exc
    plan = signing_keys(stored, stage, int(time.time() if now is None else now), params["overlap"],
                        new_proxy_signer, path)
    if plan["errors"]:
        return None, "; ".join(plan["errors"])
    keys = plan["keys"]
    loose = stored is not None and os.stat(path).st_mode & 0o077     # readable by others: rewritten 0600
    changed = plan["changed"] or bool(loose)
    if changed and not check_mode:
        try:
            write_file_atomic(path, dump_signing_keys(keys), mode=0o600, owner=(0, 0) if os.geteuid() == 0 else None)
        except OSError as exc:
            return None, "path %s cannot be written: %s" % (path, exc.strerror or exc)
    made = {} if stored is None else stored.keys
    public = keys.public()
    if check_mode:      # a key check mode would make is not made
        public = {key_id: text for key_id, text in public.items() if key_id in made}
    return dict(changed=changed, key_id=keys.current if keys.current in public else None,
                pending=keys.pending if keys.pending in public else None, retiring=list(keys.retiring),
                promoted=keys.promoted, public_keys=public, known_keys=known), None


def main():
    module = AnsibleModule(
        argument_spec=dict(
            path=dict(type="path", default="/etc/vmconsole/proxy-signing.json"),
            public_keys_file=dict(type="path", default="/etc/vmconsole/proxy-keys.json"),
            stage=dict(type="int", choices=[0, 1, 2, 3], default=0),
            overlap=dict(type="int", default=28800),
        ),
        supports_check_mode=True,
    )
    result, error = run(module.params, module.check_mode)
    if error:
        module.fail_json(msg=error)
    module.exit_json(**result)


if __name__ == "__main__":
    main()
