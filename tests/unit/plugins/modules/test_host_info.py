# -*- coding: utf-8 -*-
# Copyright: autopilot.kvm contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""host_info's main() against libvirt's test driver."""

from __future__ import annotations

import mmap
import os
import re
import struct

import pytest

from ansible.module_utils.testing import patch_module_args

from ansible_collections.autopilot.kvm.plugins.module_utils import _host_facts
from ansible_collections.autopilot.kvm.plugins.module_utils import _ksm_estimate
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


# ------------------------------------------------------------------ ksm_estimate

def test_no_estimate_by_default(fixture_paths):
    kind, result = run({"uri": NODE_URI})
    assert kind is ExitJson
    assert "estimate" not in result["host"]["ksm"]


def test_estimate_on_a_hypervisor_other_than_qemu_is_null_with_the_reason(fixture_paths):
    kind, result = run({"uri": NODE_URI, "ksm_estimate": True})
    assert kind is ExitJson, result
    estimate = result["host"]["ksm"]["estimate"]
    assert estimate["reason"] == "the estimate reads QEMU processes; this hypervisor is TEST"
    assert estimate["pages_sharing"] is None and estimate["saving_mib"] is None
    assert estimate["budget_mib"] == 4096
    assert estimate["method"] == "page hashes of mergeable guest memory (smaps mg + pagemap present)"
    assert result["host"]["ksm"]["run_state"] == "running"   # the rest of the facts as usual


def test_estimate_budget_must_be_positive(fixture_paths):
    kind, result = run({"uri": NODE_URI, "ksm_estimate": True, "ksm_estimate_max_mib": 0})
    assert kind is FailJson
    assert result["msg"] == "ksm_estimate_max_mib must be at least 1, got 0"


def _fake_guest(proc_dir, pid, name, pages):
    """A QEMU process in a fake /proc with one mergeable area of ``pages`` (all present, its own)."""
    base = os.path.join(proc_dir, str(pid))
    os.makedirs(base)
    start = 0x100000
    with open(os.path.join(base, "cmdline"), "wb") as handle:
        handle.write(b"qemu-system-x86_64\0-name\0guest=%s,debug-threads=on\0" % name.encode())
    with open(os.path.join(base, "smaps"), "w", encoding="ascii") as handle:
        handle.write("%x-%x rw-p 00000000 00:00 0 \nVmFlags: rd wr mr mw me ac sd mg\n" % (start, start + len(pages) * 4096))
    with open(os.path.join(base, "pagemap"), "wb") as pagemap, open(os.path.join(base, "mem"), "wb") as mem:
        pagemap.seek(start // 4096 * 8)
        mem.seek(start)
        for page in pages:
            pagemap.write(struct.pack("=Q", _ksm_estimate.PM_PRESENT | _ksm_estimate.PM_EXCLUSIVE))
            mem.write(page)


@pytest.mark.skipif(mmap.PAGESIZE != 4096, reason="the fake guests have 4 KiB pages")
def test_estimate_over_fake_qemu_processes(fixture_paths, monkeypatch, tmp_path):
    proc_dir, pid_dir = tmp_path / "proc", tmp_path / "run"
    pid_dir.mkdir()
    fixture_paths["proc_dir"] = str(proc_dir)
    same, zero = b"S" * 4096, b"\0" * 4096
    # the test driver's active guests (paused1 is active too) as QEMU processes
    for pid, (name, pages) in enumerate(sorted({"web1": [same] * 200 + [zero] * 10, "db1": [same] * 300 + [b"d" * 4096],
                                                "paused1": [zero] * 40}.items()), 100):
        _fake_guest(str(proc_dir), pid, name, pages)
        (pid_dir / (name + ".pid")).write_text(str(pid))
    running_guests = _ksm_estimate.running_guests
    monkeypatch.setattr(_ksm_estimate, "running_guests", lambda client: ("QEMU", running_guests(client)[1]))

    kind, result = run({"uri": NODE_URI, "ksm_estimate": True, "qemu_pid_dir": str(pid_dir)})
    assert kind is ExitJson, result
    estimate = result["host"]["ksm"]["estimate"]
    assert estimate["reason"] is None
    assert estimate["guests"] == ["db1", "paused1", "web1"]
    # the fixture's KSM settings: use_zero_pages absent (0), max_page_sharing 256
    assert estimate["use_zero_pages"] is False and estimate["max_page_sharing"] == 256
    assert estimate["present_pages"] == 551 and estimate["distinct_pages"] == 3 and estimate["zero_pages"] == 50
    # S: 500 copies -> 2 KSM pages, 498 sharing; zero: 50 copies -> 1, 49
    assert (estimate["pages_shared"], estimate["pages_sharing"]) == (3, 498 + 49)
    assert estimate["saving_mib"] == 547 * 4096 // 1048576 == 2

    kind, result = run({"uri": NODE_URI, "ksm_estimate": True, "qemu_pid_dir": str(pid_dir), "ksm_estimate_max_mib": 1})
    estimate = result["host"]["ksm"]["estimate"]
    assert estimate["reason"] == "3 MiB of mergeable guest memory is over the budget of 1 MiB (ksm_estimate_max_mib)"
    assert estimate["saving_mib"] is None and estimate["read_mib"] == 0

    kind, result = run({"uri": NODE_URI, "ksm_estimate": True})   # the default pid dir has no such guests
    assert kind is ExitJson
    assert result["host"]["ksm"]["estimate"]["reason"].startswith("guest db1: cannot read its pid file /run/libvirt/qemu/db1.pid")
