# -*- coding: utf-8 -*-
# Copyright: autopilot.kvm contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""Unit tests of the host fact readers and parsers (fixture text, no libvirt needed)."""

from __future__ import annotations

import os

import pytest

from ansible_collections.autopilot.kvm.plugins.module_utils import _host_facts as hf

FIXTURES = os.path.join(os.path.dirname(__file__), "fixtures")


def fixture(name):
    return os.path.join(FIXTURES, name)


def text(name):
    with open(fixture(name), encoding="utf-8") as handle:
        return handle.read()


# ------------------------------------------------------------------ meminfo

def test_meminfo_is_parsed_exactly():
    kib, counts = hf.parse_meminfo(text("meminfo.txt"))
    assert kib["MemTotal"] == 16384000
    assert kib["Active(anon)"] == 512000
    assert kib["Hugepagesize"] == 2048
    assert counts == {"HugePages_Total": 4, "HugePages_Free": 2, "HugePages_Rsvd": 1, "HugePages_Surp": 0}
    assert "HugePages_Total" not in kib


def test_memory_facts_units():
    facts = hf.read_memory(fixture("meminfo.txt"))
    assert facts["source"] == fixture("meminfo.txt")
    assert facts["total_kib"] == 16384000
    assert facts["total_bytes"] == 16384000 * 1024
    assert facts["total_mib"] == 16000  # 16384000 / 1024 exactly
    assert facts["available_kib"] == 12288000
    assert facts["used_kib"] == 16384000 - 12288000
    assert facts["used_mib"] == 4000
    assert facts["swap_free_kib"] == 1048000
    assert facts["swap_free_mib"] == 1023  # 1023.4 rounded down
    assert facts["committed_as_kib"] == 4096000
    assert facts["hugepages"] == {"total": 4, "free": 2, "reserved": 1, "surplus": 0, "size_kib": 2048}
    assert facts["meminfo_kib"]["DirectMap4k"] == 204800


def test_memory_missing_optional_fields_are_null():
    facts = hf.read_memory(fixture("meminfo_minimal.txt"))
    assert facts["total_kib"] == 16384000
    assert facts["buffers_kib"] is None
    assert facts["buffers_mib"] is None
    assert facts["buffers_bytes"] is None
    assert facts["hugepages"]["total"] is None


def test_meminfo_missing_file_is_a_clear_error(tmp_path):
    missing = str(tmp_path / "nope")
    with pytest.raises(hf.HostFactsError, match="Cannot read memory information from %s" % missing):
        hf.read_memory(missing)


def test_meminfo_bad_value_names_the_line():
    with pytest.raises(hf.HostFactsError, match="line 2 has a non-integer value"):
        hf.read_memory(fixture("meminfo_bad_value.txt"))


@pytest.mark.parametrize("content, message", [
    ("", "is empty"),
    ("MemTotal 100 kB\n", "line 1 is malformed"),
    ("MemTotal: 100 MB\n", "line 1 is malformed"),
    ("MemTotal: 100 kB extra\n", "line 1 is malformed"),
    ("MemTotal: 1 kB\nMemFree: 1 kB\nMemTotal: 2 kB\n", "line 3 repeats the field MemTotal"),
    ("MemTotal: 1 kB\nMemFree: 1 kB\n", "lacks the required field.s. MemAvailable"),
])
def test_meminfo_malformed(content, message):
    with pytest.raises(hf.HostFactsError, match=message):
        hf.parse_meminfo(content, source="/fake/meminfo")


def test_meminfo_is_read_once(monkeypatch):
    """No retries: the file is opened exactly once even when it is broken."""
    calls = []
    real = hf.read_text

    def counting(path, what):
        calls.append(path)
        return real(path, what)

    monkeypatch.setattr(hf, "read_text", counting)
    with pytest.raises(hf.HostFactsError):
        hf.read_memory(fixture("meminfo_bad_value.txt"))
    assert calls == [fixture("meminfo_bad_value.txt")]


# ------------------------------------------------------------------ KSM

def test_ksm_settings_and_counters():
    facts = hf.read_ksm(fixture("ksm"), proc_dir=fixture("proc"), clk_tck=100, page_size=4096)
    assert facts["available"] is True
    assert facts["run"] == 1
    assert facts["run_state"] == "running"
    assert facts["settings"] == {
        "run": 1, "pages_to_scan": 100, "sleep_millisecs": 20, "merge_across_nodes": 1,
        "max_page_sharing": 256, "advisor_mode": "none",
    }
    assert facts["counters"] == {
        "pages_shared": 8016, "pages_sharing": 69962, "pages_unshared": 120, "pages_volatile": 3,
        "full_scans": 12, "general_profit": 286000000,
    }
    assert facts["sharing_bytes"] == 69962 * 4096


def test_ksm_absent(tmp_path):
    facts = hf.read_ksm(str(tmp_path / "no-ksm"), proc_dir=fixture("proc"), clk_tck=100, page_size=4096)
    assert facts["available"] is False
    assert facts["run"] is None
    assert facts["settings"] == {}
    assert facts["counters"] == {}
    assert facts["ksmd"] is None


@pytest.mark.parametrize("raw, value", [
    ("1\n", 1),
    ("[none] scan-time\n", "none"),
    ("none [scan-time]", "scan-time"),
    ("weird\n", "weird"),
])
def test_ksm_value(raw, value):
    assert hf.parse_ksm_value(raw) == value


def test_ksmd_is_the_kernel_thread():
    """PID 4242 is a user process that calls itself ksmd: only the kernel thread counts."""
    ksmd = hf.find_ksmd(fixture("proc"), clk_tck=100)
    assert ksmd == {
        "pid": 36, "utime_ticks": 30, "stime_ticks": 95, "clock_ticks_per_second": 100, "cpu_seconds": 1.25,
    }


def test_ksmd_ticks_use_clk_tck():
    assert hf.find_ksmd(fixture("proc"), clk_tck=250)["cpu_seconds"] == 0.5


def test_ksmd_not_visible(tmp_path):
    (tmp_path / "1").mkdir()
    (tmp_path / "1" / "stat").write_text(text(os.path.join("proc", "1", "stat")))
    assert hf.find_ksmd(str(tmp_path), clk_tck=100) is None
    assert hf.find_ksmd(str(tmp_path / "missing"), clk_tck=100) is None


def test_proc_stat_with_odd_comm():
    line = "77 (a) b (ksmd)) S 2 0 0 0 -1 2129984 0 0 0 0 5 6 0 0 25 5 1 0 12 0\n"
    stat = hf.parse_proc_stat(line)
    assert stat["comm"] == "a) b (ksmd)"
    assert (stat["pid"], stat["utime"], stat["stime"]) == (77, 5, 6)
    assert hf.parse_proc_stat("garbage") is None
    assert hf.parse_proc_stat("1 (x) S 1 2") is None


# ------------------------------------------------------------------ load

def test_loadavg():
    assert hf.read_load(fixture("loadavg.txt")) == {
        "load1": 0.16, "load5": 0.2, "load15": 0.09, "runnable": 1, "tasks": 85, "last_pid": 5889,
    }


@pytest.mark.parametrize("content", ["", "0.1 0.2 0.3 1/85", "a b c 1/2 3", "0.1 0.2 0.3 185 3"])
def test_loadavg_malformed(content):
    with pytest.raises(hf.HostFactsError, match="is malformed"):
        hf.parse_loadavg(content)


def test_loadavg_missing(tmp_path):
    with pytest.raises(hf.HostFactsError, match="Cannot read load averages"):
        hf.read_load(str(tmp_path / "loadavg"))


# ------------------------------------------------------------------ cgroup

def test_cgroup_v2():
    facts = hf.cgroup_facts(hf.parse_mountinfo(text("mountinfo_v2.txt")))
    assert facts == {"version": "v2", "v2_mountpoint": "/sys/fs/cgroup", "v2_controllers": None, "v1_controllers": []}


def test_cgroup_hybrid_reads_v2_controllers():
    read = {}

    def reader(path):
        read[path] = True
        return "cpu memory\n"

    facts = hf.cgroup_facts(hf.parse_mountinfo(text("mountinfo_hybrid.txt")), read_file=reader)
    assert facts["version"] == "hybrid"
    assert facts["v2_mountpoint"] == "/sys/fs/cgroup/unified"
    assert facts["v2_controllers"] == ["cpu", "memory"]
    assert facts["v1_controllers"] == ["blkio", "cpu", "cpuacct", "memory", "name=systemd"]
    assert list(read) == ["/sys/fs/cgroup/unified/cgroup.controllers"]


def test_cgroup_v1():
    facts = hf.cgroup_facts(hf.parse_mountinfo(text("mountinfo_v1.txt")))
    assert facts["version"] == "v1"
    assert facts["v2_mountpoint"] is None
    assert facts["v1_controllers"] == ["cpu", "cpuacct", "memory"]


def test_cgroup_none():
    assert hf.cgroup_facts([("/", "ext4", "rw")])["version"] == "none"


def test_cgroup_falls_back_to_proc_mounts(tmp_path):
    facts = hf.read_cgroup(str(tmp_path / "no-mountinfo"), fixture("mounts_hybrid.txt"))
    assert facts["version"] == "hybrid"
    assert facts["source"] == fixture("mounts_hybrid.txt")
    assert facts["v1_controllers"] == ["cpu", "memory"]


def test_cgroup_without_any_mount_table(tmp_path):
    with pytest.raises(hf.HostFactsError, match="Cannot read the mount table"):
        hf.read_cgroup(str(tmp_path / "a"), str(tmp_path / "b"))


def test_mountinfo_unescapes_paths():
    mounts = hf.parse_mountinfo("41 31 0:38 / /sys/fs/my\\040cgroup rw - cgroup2 cgroup2 rw\n")
    assert mounts == [("/sys/fs/my cgroup", "cgroup2", "rw")]


# ------------------------------------------------------------------ migration address

def test_qemu_conf_migration_host():
    assert hf.parse_qemu_conf_migration_host(text("qemu.conf")) == "kvm1.mgmt.example.com"
    assert hf.parse_qemu_conf_migration_host('#migration_host = "x"\n') is None
    assert hf.parse_qemu_conf_migration_host(None) is None


def test_default_route_lowest_metric():
    assert hf.parse_default_route(text("route.txt")) == ("eth0", "192.0.2.1")
    assert hf.parse_default_route("Iface\tDestination\n") is None


def test_migration_address_order(tmp_path):
    def address_of(interface):
        return {"eth0": "192.0.2.10"}.get(interface)

    missing = str(tmp_path / "missing")
    assert hf.migration_address("kvm1", fixture("qemu.conf"), fixture("route.txt"), address_of) == {
        "address": "kvm1.mgmt.example.com", "source": "qemu.conf", "interface": None}
    assert hf.migration_address("kvm1", missing, fixture("route.txt"), address_of) == {
        "address": "192.0.2.10", "source": "default_route", "interface": "eth0"}
    assert hf.migration_address("kvm1", missing, fixture("route.txt"), lambda i: None) == {
        "address": "kvm1", "source": "hostname", "interface": None}
    assert hf.migration_address("kvm1", missing, missing, address_of)["source"] == "hostname"


def test_interface_ipv4_of_loopback():
    assert hf.interface_ipv4("lo") == "127.0.0.1"
    assert hf.interface_ipv4("no-such-if0") is None


# ------------------------------------------------------------------ libvirt-derived parsers

@pytest.mark.parametrize("number, version", [
    (9000000, "9.0.0"), (7002005, "7.2.5"), (10010000, "10.10.0"), (2, "0.0.2"), (None, None),
])
def test_decode_version(number, version):
    assert hf.decode_version(number) == version


def test_capabilities_of_a_qemu_host():
    caps = hf.parse_capabilities(text("capabilities_qemu.xml"))
    assert caps["uuid"] == "4c4c4544-0033-4610-8048-b4c04f4e4a32"
    assert caps["cpu"] == {
        "arch": "x86_64", "model": "EPYC-Rome", "vendor": "AMD", "features": ["svm", "x2apic"],
        "topology": {"sockets": 1, "dies": 1, "cores": 4, "threads": 2},
    }
    assert caps["cells"] == [
        {"id": 0, "memory_kib": 8167972, "cpus": [0, 1, 4, 5]},
        {"id": 1, "memory_kib": 8192 * 1024, "cpus": [2, 3, 6, 7]},
    ]


def test_capabilities_errors():
    with pytest.raises(hf.HostFactsError, match="Cannot parse libvirt capabilities XML"):
        hf.parse_capabilities("<capabilities>")
    with pytest.raises(hf.HostFactsError, match="no <host> element"):
        hf.parse_capabilities("<capabilities/>")


def test_numa_free_memory_is_bytes():
    cells = [{"id": 0, "memory_kib": 2048, "cpus": [0, 1]}, {"id": 1, "memory_kib": 4096, "cpus": [2]}]
    numa = hf.numa_facts(cells, [1048576, 3 * 1048576])
    assert numa["cell_count"] == 2
    assert numa["cells"][1] == {
        "id": 1, "cpus": [2], "cpu_count": 1,
        "memory_kib": 4096, "memory_mib": 4, "memory_bytes": 4096 * 1024,
        "free_kib": 3072, "free_mib": 3, "free_bytes": 3 * 1048576,
    }
    unknown = hf.numa_facts(cells, None, "not supported")
    assert unknown["error"] == "not supported"
    assert unknown["cells"][0]["free_bytes"] is None
    assert unknown["cells"][0]["free_mib"] is None


def test_to_kib_units():
    assert hf.to_kib("1", "GiB") == 1048576
    assert hf.to_kib("2048", "bytes") == 2
    assert hf.to_kib("5", None) == 5
    with pytest.raises(hf.HostFactsError, match="Unknown memory unit"):
        hf.to_kib("1", "parsecs")
