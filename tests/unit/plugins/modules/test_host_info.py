# -*- coding: utf-8 -*-
# Copyright: autopilot.kvm contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""host_info's main() against libvirt's test driver."""

from __future__ import annotations

import os
import re

import pytest

from ansible.module_utils.testing import patch_module_args

from ansible_collections.autopilot.kvm.plugins.module_utils import _host_facts
from ansible_collections.autopilot.kvm.plugins.module_utils import _libvirt_client
from .module_runner import ExitJson, FailJson, capture  # noqa: F401  pylint: disable=unused-import
from ansible_collections.autopilot.kvm.plugins.modules import host_info

HERE = os.path.dirname(os.path.abspath(__file__))
NODE_URI = "test://" + os.path.join(HERE, "fixtures", "node.xml")
UTIL_FIXTURES = os.path.join(HERE, "..", "module_utils", "fixtures")

# every test here sees exit_json / fail_json as ExitJson / FailJson (fixture from module_runner)
pytestmark = [pytest.mark.skipif(_libvirt_client.libvirt is None, reason="libvirt-python is not installed"),
              pytest.mark.usefixtures("capture")]


@pytest.fixture
def fixture_paths(monkeypatch):
    paths = dict(_host_facts.DEFAULT_PATHS)
    paths.update(
        meminfo=os.path.join(UTIL_FIXTURES, "meminfo.txt"),
        ksm_dir=os.path.join(UTIL_FIXTURES, "ksm"),
        loadavg=os.path.join(UTIL_FIXTURES, "loadavg.txt"),
        mountinfo=os.path.join(UTIL_FIXTURES, "mountinfo_v2.txt"),
        proc_dir=os.path.join(UTIL_FIXTURES, "proc"),
        net_route=os.path.join(UTIL_FIXTURES, "route.txt"),
        qemu_conf=os.path.join(UTIL_FIXTURES, "qemu.conf"),
    )
    monkeypatch.setattr(_host_facts, "DEFAULT_PATHS", paths)
    return paths


def run(args):
    with patch_module_args(args):
        with pytest.raises((ExitJson, FailJson)) as caught:
            host_info.main()
    return caught.type, caught.value.args[0]


def test_default_test_driver():
    kind, result = run({"uri": "test:///default"})
    assert kind is ExitJson, result
    assert result["changed"] is False
    host = result["host"]
    assert set(host) == {"hostname", "uuid", "node", "cpu", "numa", "memory", "ksm", "load",
                         "cgroup", "libvirt", "migration"}
    assert host["node"]["cpus"] == 16
    assert host["node"]["numa_nodes"] == 2
    assert host["cpu"]["features"] == ["nonpae", "pae"]
    assert host["numa"]["cell_count"] == 2
    assert [cell["cpus"] for cell in host["numa"]["cells"]] == [list(range(8)), list(range(8, 16))]
    assert host["numa"]["cells"][1]["memory_kib"] == 4194304
    assert host["numa"]["error"] is None
    assert isinstance(host["numa"]["cells"][0]["free_bytes"], int)
    assert host["libvirt"]["uri"] == "test:///default"
    assert host["libvirt"]["hypervisor_type"] == "TEST"
    assert host["libvirt"]["qemu_version"] is None
    assert re.match(r"^\d+\.\d+\.\d+$", host["libvirt"]["version"])
    assert host["libvirt"]["version"] == _host_facts.decode_version(host["libvirt"]["version_int"])
    # the real files of the machine running the tests
    assert host["memory"]["total_kib"] > 0
    assert host["memory"]["total_bytes"] == host["memory"]["total_kib"] * 1024
    assert host["cgroup"]["version"] in ("v1", "v2", "hybrid", "none")
    assert host["migration"]["address"]


def test_node_xml_and_fixture_files(fixture_paths):
    kind, result = run({"uri": NODE_URI})
    assert kind is ExitJson, result
    host = result["host"]
    assert host["node"] == {
        "arch": "AMD EPYC", "memory_mib": 16384, "cpus": 8, "mhz": 2400, "numa_nodes": 1,
        "sockets_per_node": 1, "cores_per_socket": 4, "threads_per_core": 2,
    }
    # no <topology> in the test driver's capabilities: derived from getInfo
    assert host["cpu"]["topology"] == {"sockets": 1, "dies": None, "cores": 4, "threads": 2}
    assert host["numa"] == {"cell_count": 0, "cells": [], "error": None}
    assert host["memory"]["total_mib"] == 16000
    assert host["memory"]["available_kib"] == 12288000
    assert host["ksm"]["run_state"] == "running"
    assert host["ksm"]["counters"]["pages_sharing"] == 69962
    assert host["ksm"]["ksmd"]["pid"] == 36
    assert host["load"]["load15"] == 0.09
    assert host["cgroup"]["version"] == "v2"
    assert host["migration"] == {"address": "kvm1.mgmt.example.com", "source": "qemu.conf", "interface": None}


def test_check_mode_gives_the_same_facts(fixture_paths):
    _kind, normal = run({"uri": NODE_URI})
    kind, checked = run({"uri": NODE_URI, "_ansible_check_mode": True})
    assert kind is ExitJson
    assert checked["changed"] is False
    assert checked["host"]["node"] == normal["host"]["node"]
    assert checked["host"]["memory"] == normal["host"]["memory"]


def test_missing_meminfo_fails_clearly(fixture_paths, tmp_path):
    fixture_paths["meminfo"] = str(tmp_path / "meminfo")
    kind, result = run({"uri": NODE_URI})
    assert kind is FailJson
    assert result["msg"].startswith("Cannot read memory information from %s" % (tmp_path / "meminfo"))


def test_malformed_meminfo_fails_clearly(fixture_paths):
    fixture_paths["meminfo"] = os.path.join(UTIL_FIXTURES, "meminfo_bad_value.txt")
    kind, result = run({"uri": NODE_URI})
    assert kind is FailJson
    assert "line 2 has a non-integer value" in result["msg"]


def test_unreachable_uri():
    kind, result = run({"uri": "qemu+tcp://127.0.0.1:1/system"})
    assert kind is FailJson
    assert result["msg"].startswith("Cannot connect to libvirt at qemu+tcp://127.0.0.1:1/system: ")
    assert "127.0.0.1" in result["libvirt_error"]
    assert "exception" not in result
    assert "Traceback" not in result["msg"]


def test_bad_test_driver_file(tmp_path):
    kind, result = run({"uri": "test://" + str(tmp_path / "missing.xml")})
    assert kind is FailJson
    assert result["msg"].startswith("Cannot connect to libvirt at test://")


def test_missing_libvirt_binding(monkeypatch):
    monkeypatch.setattr(_libvirt_client, "libvirt", None)
    kind, result = run({"uri": "test:///default"})
    assert kind is FailJson
    assert "Failed to import the required Python library (libvirt-python" in result["msg"]
