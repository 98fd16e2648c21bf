# -*- coding: utf-8 -*-
# Copyright: vmconsole.secure contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later

"""module_utils/_qemu_spice.py and the filter qemu_spice_errors: the qemu_spice role's input
checks (the cases of molecule/qemu_source's bad-input step, and the others). The settings start
from the role's own defaults/main.yml."""

from __future__ import annotations

import copy

import pytest

from ansible.errors import AnsibleFilterError

from ansible_collections.vmconsole.secure.plugins.filter.qemu_spice_errors import qemu_spice_errors
from ansible_collections.vmconsole.secure.tests.unit.roles import role_settings

SHA = "a" * 64


SETTINGS = role_settings("qemu_spice", {"qemu_spice_packages": ["qemu-system-x86"]})
DEBIAN = {"os_family": "Debian", "src_stat": {"skipped": True}}


def errors(host=None, **changes):
    s = copy.deepcopy(SETTINGS)
    s.update(changes)
    return qemu_spice_errors(s, DEBIAN if host is None else host)


def source(**changes):
    out = {"qemu_spice_install_method": "source", "qemu_spice_source_url": "https://example.org/qemu.tar.xz",
           "qemu_spice_source_sha256": SHA}
    out.update(changes)
    return out


def test_the_defaults_and_a_good_source_build_have_no_error():
    assert errors() == []
    assert errors(**source()) == []
    assert errors(**source(qemu_spice_source_sha256=" " + SHA.upper() + "\n", qemu_spice_source_version="9.2.0+ds-1",
                           qemu_spice_source_ccache_dir="/var/cache/ccache", qemu_spice_source_build_user="",
                           qemu_spice_source_jobs="4")) == []


def controller_file(checksum=SHA, exists=True, isreg=True):
    return {"os_family": "Debian", "src_stat": {"stat": {"exists": exists, "isreg": isreg, "checksum": checksum}}}


def test_a_tarball_on_the_controller_is_checked_against_the_pinned_sha256():
    settings = source(qemu_spice_source_url="", qemu_spice_source_src="/srv/qemu.tar.xz")
    assert errors(controller_file(), **settings) == []
    assert errors(controller_file("b" * 64), **settings) == [
        "the checksum of qemu_spice_source_src (/srv/qemu.tar.xz) does not match qemu_spice_source_sha256: the file has "
        + "b" * 64 + ", expected " + SHA + "; nothing was installed"]
    assert errors(controller_file(exists=False), **settings) == [
        "qemu_spice_source_src is '/srv/qemu.tar.xz', which is not a file on the controller"]
    assert errors(controller_file(isreg=False), **settings)[0].endswith("which is not a file on the controller")


@pytest.mark.parametrize("changes, expect", [
    ({"qemu_spice_install_method": "apt"}, "qemu_spice_install_method is 'apt': use 'package' (Debian's "
                                           "qemu-system-x86) or 'source' (a build from a tarball)"),
    ({"qemu_spice_packages": []}, "qemu_spice_packages must be a non-empty list of package names"),
    ({"qemu_spice_packages": "qemu-system-x86"}, "qemu_spice_packages must be a non-empty list of package names"),
    (source(qemu_spice_source_url=""), "method source needs a tarball: set qemu_spice_source_url"),
    (source(qemu_spice_source_src="/srv/q.tar"), "qemu_spice_source_url and qemu_spice_source_src are both set"),
    (source(qemu_spice_source_url="qemu.tar.xz"), "qemu_spice_source_url is 'qemu.tar.xz', which is not an http(s), "
                                                  "ftp or file URL"),
    (source(qemu_spice_source_sha256=""), "qemu_spice_source_sha256 is missing: method source builds only a tarball"),
    (source(qemu_spice_source_sha256="12345abc"), "qemu_spice_source_sha256 is '12345abc', which is not a SHA-256"),
    (source(qemu_spice_source_targets=[]), "qemu_spice_source_targets must be a non-empty list of system targets"),
    (source(qemu_spice_source_targets="x86_64-softmmu"), "qemu_spice_source_targets must be a non-empty list"),
    (source(qemu_spice_source_targets=["x86_64"]), "qemu_spice_source_targets contains 'x86_64', which is not a "
                                                   "system target"),
    (source(qemu_spice_source_version="v9"), "qemu_spice_source_version is 'v9': a version starts with a digit"),
    (source(qemu_spice_source_root="/"), "qemu_spice_source_root is '/': give an absolute path, not / itself"),
    (source(qemu_spice_source_build_dir="cache/"), "qemu_spice_source_build_dir is 'cache/': give an absolute path"),
    (source(qemu_spice_source_ccache_dir="ccache"), "qemu_spice_source_ccache_dir is 'ccache': give an absolute path"),
    (source(qemu_spice_source_build_user="Build User"), "qemu_spice_source_build_user is 'Build User', which is not "
                                                        "a user name"),
    (source(qemu_spice_source_jobs=-1), "qemu_spice_source_jobs is '-1': give a number of jobs, or 0 for one per CPU"),
    (source(qemu_spice_source_jobs=True), "qemu_spice_source_jobs is 'True'"),
    (source(qemu_spice_source_firmware_path=["/usr/share/qemu:/x"]), "qemu_spice_source_firmware_path must be a list "
                                                                     "of absolute folders"),
    (source(qemu_spice_source_firmware_path="/usr/share/qemu"), "qemu_spice_source_firmware_path must be a list"),
])
def test_bad_input(changes, expect):
    found = errors(**changes)
    assert len(found) == 1 and expect in found[0], found


def test_only_debian_hosts():
    assert errors({"os_family": "RedHat"}) == ["the role supports Debian hosts only (apt), this one is RedHat"]


def test_source_options_are_not_checked_for_the_package_method():
    assert errors(qemu_spice_source_jobs="many", qemu_spice_source_root="/") == []


def test_the_filter_refuses_what_is_not_a_dict():
    with pytest.raises(AnsibleFilterError, match="must be dicts"):
        qemu_spice_errors([], DEBIAN)
