#!/usr/bin/python
# -*- coding: utf-8 -*-
# Copyright: vmconsole.secure contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later

from __future__ import annotations

DOCUMENTATION = r"""
module: console_probe
short_description: Check that a console ticket opens a VM's SPICE or VNC console, without disturbing its user
version_added: 0.1.0
description:
  - Connects to a SPICE or VNC console the way a viewer would and reports whether the server accepts O(ticket),
    refuses it, or could not be asked (TLS, proxy or network trouble).
  - B(SPICE) - links the C(inputs) channel with a random 32-bit connection id, which no session has (odds of a clash
    are 2^-32 per session). The server checks the ticket first and then refuses the link for its unknown connection id
    (C(SPICE_LINK_ERR_BAD_CONNECTION_ID), 8), so a good ticket is recognised and nobody is connected or disconnected.
    A C(main) channel link would disconnect the current user; this module never makes one.
  - B(SPICE) - QEMU still emits C(SPICE_CONNECTED) and C(SPICE_DISCONNECTED) events for the probe's TCP connection,
    but never C(SPICE_INITIALIZED).
  - B(SPICE) - with O(tls=true) (the default) the server certificate must be signed by the CA in O(ca_pem) or O(ca_file)
    and, when O(host_subject) is given, carry that subject, as remote-viewer checks a C(.vv) file's C(ca) and
    C(host-subject).
  - B(SPICE) - with O(proxy) the connection goes through an HTTP CONNECT proxy, as remote-viewer does for C(proxy=).
  - B(VNC) - runs VNC authentication (RFB security type 2) and stops after the result, before C(ClientInit), so the VM's
    share policy never applies to the probe and a connected viewer stays connected.
  - B(VNC) - when the server offers VeNCrypt (RFB security type 19, QEMU C(-vnc ...,tls-creds=...)), the probe negotiates
    VeNCrypt 0.2 and an X.509 sub-type, checks the server certificate against the CA in O(ca_pem) or O(ca_file) (and
    O(host_subject) when given), sends O(client_cert) when given, and then authenticates inside TLS - with SASL
    (sub-type X509SASL, mechanism C(SCRAM-SHA-256) or C(SCRAM-SHA-1), the server signature verified) when
    O(vnc_sasl_user) is given, else with VNC authentication (X509VNC). It stops before C(ClientInit) here too.
  - B(VNC) - VeNCrypt sub-types with anonymous TLS (C(TLSNone), C(TLSVNC), C(TLSSASL)) are never run, since they have no
    certificate to check; X509None (TLS, no password) is reported as C(accepted), like an RFB server asking for no
    authentication.
  - The probe changes nothing; the module never reports a change and runs in check mode as well.
  - A refused ticket is a result, not a failure. Use O(expect) to make the task fail when the status differs.
author:
  - vmconsole.secure developers (@vmconsole)
requirements:
  - cryptography >= 3.1 on the host that runs the module (RSA-OAEP for the SPICE ticket, DES for VNC authentication)
extends_documentation_fragment:
  - vmconsole.secure.attributes
attributes:
  check_mode:
    support: full
    details:
      - The probe only reads; it runs in check mode too.
  diff_mode:
    support: N/A
    details:
      - The probe does not change anything.
  idempotent:
    support: full
    details:
      - The probe does not change anything. Its result changes when the ticket expires or is replaced.
options:
  host:
    description:
      - Host name or IP address of the console, as seen from the host that runs the module.
      - With O(proxy), the proxy resolves this name (it is the C(CONNECT) target).
    type: str
    default: 127.0.0.1
  port:
    description:
      - TCP port of the console. For SPICE with O(tls=true) that is the TLS port (C(tls-port)).
    type: int
    required: true
  protocol:
    description:
      - Console protocol.
    type: str
    choices: [spice, vnc]
    default: spice
  ticket:
    description:
      - The ticket (password) to try. SPICE takes at most 59 bytes; VNC authentication uses the first 8 bytes only.
      - With O(vnc_sasl_user), the SASL password of that user.
    type: str
    required: true
  ca_file:
    description:
      - File with the PEM CA certificate(s) that must have signed the SPICE or VNC (VeNCrypt) server certificate, on the
        host that runs the module.
      - Read only for O(protocol=spice) with O(tls=true), or for O(protocol=vnc) when the server offers VeNCrypt, and only
        when O(ca_pem) is not given. For VNC, point it at the CA of QEMU's C(tls-creds-x509) directory
        (C(ca-cert.pem)), usually not the SPICE default.
    type: path
    default: /etc/pki/libvirt-spice/ca-cert.pem
  ca_pem:
    description:
      - The PEM CA certificate(s) as text, instead of O(ca_file).
    type: str
  host_subject:
    description:
      - Subject the SPICE or VNC (VeNCrypt) server certificate must carry, in the form of a C(.vv) C(host-subject), for example
        C(C=XX,O=Example,CN=node1), in the certificate's own attribute order, with commas and backslashes in values
        escaped by a backslash.
      - Compared as spice-gtk does (C(X509_NAME_cmp)), so case and runs of white space in values do not matter.
      - Without it, only the CA signature is checked (the host name is never compared with the certificate).
      - For VNC, only checked when the server offers VeNCrypt.
    type: str
  client_cert:
    description:
      - PEM client certificate file to present in the VeNCrypt TLS handshake, for QEMU C(tls-creds-x509) objects with
        C(verify-peer=on) (the default for QEMU; libvirt's C(vnc_tls_x509_verify)). Without it such a server closes
        the connection right after the handshake and the status is C(unreachable).
      - Only for O(protocol=vnc). Needs O(client_key).
    type: path
  client_key:
    description:
      - PEM private key file of O(client_cert).
    type: path
  vnc_sasl_user:
    description:
      - SASL user name for a VNC server with VeNCrypt X509SASL (QEMU C(-vnc ...,tls-creds=...,sasl=on)); O(ticket) is
        then the user's SASL password. The user name appears in RV(detail).
      - With it, a server that does not offer VeNCrypt X509SASL is C(unreachable); without it, a server that only offers
        X509SASL is C(unreachable).
      - Only for O(protocol=vnc).
    type: str
  tls:
    description:
      - Whether to connect to SPICE with TLS. Use V(false) to probe a plain SPICE port.
      - Only for O(protocol=spice).
    type: bool
    default: true
  proxy:
    description:
      - HTTP proxy to tunnel through with C(CONNECT), as a URL C(http://[user:password@]host[:port]); the port defaults
        to 3128 and an IPv6 address goes in brackets.
      - Read as remote-viewer reads it - the user name ends at the first C(:) and no percent escapes are decoded.
        Credentials with C(@), or a password with C(:), are refused because remote-viewer would cut them short.
      - Only for O(protocol=spice). Kept out of logs, since it carries credentials.
    type: str
  timeout:
    description:
      - Seconds the whole probe may take (connection, proxy, TLS handshake, link or authentication).
    type: float
    default: 10
  expect:
    description:
      - Status the probe must end with. When given and the status differs, the task fails with the probe's detail.
    type: str
    choices: [accepted, refused, tls_mismatch, proxy_refused, unreachable]
"""

EXAMPLES = r"""
- name: Issue a SPICE ticket and keep it for the probe
  vmconsole.secure.console_ticket:
    vm: web1
    return_secret: true
  become: true
  register: ticket

- name: Check that the ticket opens the SPICE console
  vmconsole.secure.console_probe:
    port: "{{ ticket.tls_port }}"
    ticket: "{{ ticket.ticket }}"
    ca_file: /etc/pki/libvirt-spice/ca-cert.pem
    host_subject: "{{ ticket.host_subject }}"
    expect: accepted

- name: Wait until the ticket has expired
  vmconsole.secure.console_probe:
    port: 61000
    ticket: "{{ old_ticket }}"
    ca_pem: "{{ lookup('ansible.builtin.file', 'pki/ca-cert.pem') }}"
  register: probe
  until: probe.status == 'refused'
  retries: 10
  delay: 5

- name: Go through the cluster's console proxy as remote-viewer would
  vmconsole.secure.console_probe:
    host: node2
    port: 61003
    ticket: "{{ ticket.password }}"
    proxy: "http://{{ proxy_user }}:{{ proxy_token }}@node1.example.com:3128"
    expect: accepted
  delegate_to: localhost

- name: A plain SPICE port must not serve the console (TLS only)
  vmconsole.secure.console_probe:
    port: 61500
    tls: false
    ticket: "{{ ticket.password }}"
  register: plain
  failed_when: plain.link_result != 5

- name: Check a VNC password
  vmconsole.secure.console_probe:
    protocol: vnc
    port: 5901
    ticket: "{{ vnc_ticket }}"
    expect: accepted

- name: Check a SASL user on a VNC console with VeNCrypt (QEMU tls-creds with verify-peer=on, sasl=on)
  vmconsole.secure.console_probe:
    protocol: vnc
    port: 5902
    vnc_sasl_user: alice
    ticket: "{{ alice_sasl_password }}"
    ca_file: /etc/pki/qemu/ca-cert.pem
    client_cert: /etc/pki/qemu/client-cert.pem
    client_key: /etc/pki/qemu/client-key.pem
    host_subject: "C=XX,O=Example,CN=node1"
    expect: accepted
"""

RETURN = r"""
status:
  description:
    - C(accepted) - the server accepted the ticket.
    - C(refused) - the server refused the ticket (wrong, expired or never set). For SPICE, RV(link_result) is 7. For
      VNC with SASL, also an unknown user (QEMU then closes the connection during the SASL exchange).
    - C(tls_mismatch) - the server certificate is not signed by the CA, or its subject is not O(host_subject).
    - C(proxy_refused) - the proxy answered C(CONNECT) with a non-2xx status (RV(http_status)).
    - C(unreachable) - no verdict on the ticket - connection refused, name not resolved, timeout, TLS handshake
      failure, not a SPICE/VNC server, or a SPICE link error before the ticket check (for example 5,
      C(NEED_SECURED) - the channel needs TLS); for VNC also no security type or VeNCrypt sub-type the probe runs, or
      a client certificate missing or refused by the server.
  returned: always
  type: str
  sample: accepted
link_result:
  description:
    - The SPICE link result (C(SpiceLinkErr)) - 8 (C(BAD_CONNECTION_ID)) for an accepted ticket, 7
      (C(PERMISSION_DENIED)) for a refused one, 5 (C(NEED_SECURED)) on a port that needs TLS.
    - Null when no link was tried, and for VNC.
  returned: always
  type: int
  sample: 8
http_status:
  description: The proxy's HTTP status for C(CONNECT), or null without a proxy or when no answer came.
  returned: always
  type: int
  sample: 200
detail:
  description: What happened, in words a person can act on. Never contains the ticket (or SASL password) or the proxy password.
  returned: always
  type: str
  sample: "ticket accepted by 127.0.0.1:61000 (the probe link then stopped at SPICE_LINK_ERR_BAD_CONNECTION_ID, as intended)"
subject:
  description:
    - Subject of the SPICE or VNC (VeNCrypt) server certificate in C(host-subject) form, or null when no TLS handshake
      completed.
  returned: always
  type: str
  sample: "C=XX,O=Example,CN=node1"
vencrypt_subtype:
  description:
    - The VeNCrypt sub-type the VNC probe ran - 261 (X509VNC), 263 (X509SASL) or 260 (X509None); null without VeNCrypt
      and for SPICE.
  returned: always
  type: int
  sample: 263
sasl_mechanism:
  description: The SASL mechanism the VNC probe used (C(SCRAM-SHA-256) or C(SCRAM-SHA-1)), or null.
  returned: always
  type: str
  sample: SCRAM-SHA-256
security_types:
  description:
    - The RFB security types the VNC server offered (19 is VeNCrypt, 2 VNC authentication, 1 none), or null when
      the probe did not get that far, and for SPICE.
  returned: always
  type: list
  elements: int
  sample: [19]
"""

from ansible.module_utils.basic import AnsibleModule, missing_required_lib

from ansible_collections.vmconsole.secure.plugins.module_utils._crypto import CRYPTOGRAPHY_IMPORT_ERROR, HAS_CRYPTOGRAPHY
from ansible_collections.vmconsole.secure.plugins.module_utils._spice import (
    PROBE_STATUSES,
    proxy_from_url,
    spice_link_probe,
)
from ansible_collections.vmconsole.secure.plugins.module_utils._vnc import vnc_auth_probe


def read_ca(params):
    """The CA PEM text for a SPICE TLS probe, from ca_pem or ca_file."""
    if params["ca_pem"] is not None:
        return params["ca_pem"]
    path = params["ca_file"]
    try:
        with open(path, "r", encoding="ascii") as f:
            return f.read()
    except (OSError, UnicodeDecodeError) as exc:
        raise ValueError("ca_file %s cannot be read: %s (give ca_file or ca_pem, or tls=false for a plain port)"
                         % (path, getattr(exc, "strerror", None) or exc)) from None


def probe(params):
    """Run the probe the options ask for; ValueError for unusable options."""
    if not 1 <= params["port"] <= 65535:
        raise ValueError("port must be 1..65535, got %d" % params["port"])
    if params["timeout"] <= 0:
        raise ValueError("timeout must be more than 0 seconds")
    if params["protocol"] == "vnc":
        if params["proxy"] is not None:
            raise ValueError("proxy is SPICE-only (remote-viewer does not tunnel VNC through a proxy)")
        if params["vnc_sasl_user"] == "":
            raise ValueError("vnc_sasl_user must not be empty")
        ca = dict(ca_pem=params["ca_pem"]) if params["ca_pem"] is not None else dict(ca_file=params["ca_file"])
        result = vnc_auth_probe(params["host"], params["port"], params["ticket"], timeout=params["timeout"],
                                host_subject=params["host_subject"], client_cert=params["client_cert"],
                                client_key=params["client_key"], sasl_user=params["vnc_sasl_user"], **ca)
        return dict(status=result["status"], detail=result["detail"], link_result=None, http_status=None,
                    subject=result["subject"], vencrypt_subtype=result["vencrypt_subtype"],
                    sasl_mechanism=result["sasl_mechanism"], security_types=result["security_types"])

    for option in ("client_cert", "client_key", "vnc_sasl_user"):
        if params[option] is not None:
            raise ValueError("%s is VNC-only (SPICE has no client certificates or SASL here)" % option)

    proxy = proxy_from_url(params["proxy"]) if params["proxy"] is not None else None
    if params["host_subject"] is not None and not params["tls"]:
        raise ValueError("host_subject needs tls=true: a plain SPICE port has no certificate")
    ca_pem = read_ca(params) if params["tls"] else None
    result = spice_link_probe(params["host"], params["port"], params["ticket"], ca_pem=ca_pem,
                              host_subject=params["host_subject"], proxy=proxy, tls=params["tls"],
                              timeout=params["timeout"])
    return dict(result, vencrypt_subtype=None, sasl_mechanism=None, security_types=None)


def main():
    module = AnsibleModule(
        argument_spec=dict(
            host=dict(type="str", default="127.0.0.1"),
            port=dict(type="int", required=True),
            protocol=dict(type="str", choices=["spice", "vnc"], default="spice"),
            ticket=dict(type="str", required=True, no_log=True),
            ca_file=dict(type="path", default="/etc/pki/libvirt-spice/ca-cert.pem"),
            ca_pem=dict(type="str"),
            host_subject=dict(type="str"),
            client_cert=dict(type="path"),
            client_key=dict(type="path", no_log=False),
            vnc_sasl_user=dict(type="str"),
            tls=dict(type="bool", default=True),
            proxy=dict(type="str", no_log=True),
            timeout=dict(type="float", default=10),
            expect=dict(type="str", choices=list(PROBE_STATUSES)),
        ),
        mutually_exclusive=[("ca_file", "ca_pem")],
        required_together=[("client_cert", "client_key")],
        supports_check_mode=True,
    )
    if not HAS_CRYPTOGRAPHY:
        module.fail_json(msg=missing_required_lib("cryptography"), exception=CRYPTOGRAPHY_IMPORT_ERROR)

    try:
        result = probe(module.params)
    except ValueError as exc:
        module.fail_json(msg=str(exc))

    expect = module.params["expect"]
    if expect is not None and result["status"] != expect:
        module.fail_json(msg="console probe: expected status %s, got %s: %s" % (expect, result["status"], result["detail"]),
                         changed=False, **result)
    module.exit_json(changed=False, **result)


if __name__ == "__main__":
    main()
