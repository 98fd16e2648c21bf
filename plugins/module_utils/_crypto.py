# -*- coding: utf-8 -*-
# Copyright: vmconsole.secure contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later

"""The collection's one import of ``cryptography`` (private).

The console protocols need two primitives the standard library lacks: RSA-OAEP for the
SPICE ticket and DES for the VNC challenge. Modules check ``HAS_CRYPTOGRAPHY`` and report
``CRYPTOGRAPHY_IMPORT_ERROR`` with ``missing_required_lib('cryptography')``. Works with
Debian 12's python3-cryptography (38) and current releases.
"""

from __future__ import annotations

import traceback

try:
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import padding
    from cryptography.hazmat.primitives.ciphers import Cipher, modes
    try:
        from cryptography.hazmat.decrepit.ciphers.algorithms import TripleDES   # cryptography >= 43
    except ImportError:
        from cryptography.hazmat.primitives.ciphers.algorithms import TripleDES
except ImportError:
    HAS_CRYPTOGRAPHY = False
    CRYPTOGRAPHY_IMPORT_ERROR = traceback.format_exc()
else:
    HAS_CRYPTOGRAPHY = True
    CRYPTOGRAPHY_IMPORT_ERROR = None


def rsa_oaep_sha1_encrypt(public_key_der, data):
    """RSA-OAEP with SHA-1 and MGF1-SHA-1 (what SPICE uses) of ``data`` under a DER SubjectPublicKeyInfo."""
    key = serialization.load_der_public_key(bytes(public_key_der))
    return key.encrypt(bytes(data), padding.OAEP(mgf=padding.MGF1(algorithm=hashes.SHA1()), algorithm=hashes.SHA1(), label=None))


def des_ecb_encrypt(key, data):
    """Single DES in ECB mode (3DES with K1 = K2 = K3; cryptography has no plain DES)."""
    encryptor = Cipher(TripleDES(bytes(key) * 3), modes.ECB()).encryptor()
    return encryptor.update(bytes(data)) + encryptor.finalize()
