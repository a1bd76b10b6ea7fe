# -*- coding: utf-8 -*-
# Copyright: autopilot.kvm contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""autopilot.kvm.tune against libvirt's test:/// driver, and a fake domain for the CPU scheduler.

The test driver keeps memtune, blkiotune (with device lists) and interface bandwidth, get and set,
live and config. ``test:///default`` is one shared state per process (domain "test", running,
persistent, with disk vda and interface testnet0 / aa:bb:cc:dd:ee:ff), so a second run sees the
first one's changes; every test uses its own values or devices. The driver's scheduler only knows
``weight`` and refuses the live/config flags, so CPU tuning runs against ``SchedulerDomain``
below (and the real driver's refusal is checked as a failure path). Its setBlockIoTune refuses
everything ("cannot be set higher than ..._max"), which is used to check a failure while setting.
"""

from __future__ import annotations

import os

import pytest

from ansible_collections.autopilot.kvm.plugins.module_utils import _libvirt_client
from ansible_collections.autopilot.kvm.plugins.modules import tune

from .module_runner import run_module

libvirt = pytest.importorskip("libvirt")

NODE_XML = os.path.join(os.path.dirname(__file__), "fixtures", "node.xml")
DEFAULT = "test:///default"
NODE = "test://" + NODE_XML
UNLIMITED_KIB = 9007199254740991
LIVE = libvirt.VIR_DOMAIN_AFFECT_LIVE
CONFIG = libvirt.VIR_DOMAIN_AFFECT_CONFIG


@pytest.fixture(scope="module", autouse=True)
def restore_default_domain():
    """Puts the tuning of test:///default's "test" back as it was, for the test files that run after these."""
    conn = libvirt.open(DEFAULT)
    dom = conn.lookupByName("test")
    memory = dom.memoryParameters(LIVE)
    blkio = dom.blkioParameters(LIVE)
    bandwidth = dom.interfaceParameters("testnet0", LIVE)
    yield
    dom.setMemoryParameters(memory, LIVE)
    now = dom.blkioParameters(LIVE)
    for key, value in blkio.items():
        if key.startswith("device_"):
            # libvirt merges device lists: a device is removed by setting it to 0
            added = set(now[key].split(",")[::2]) - set(value.split(",")[::2]) - {""}
            for path in added:
                dom.setBlkioParameters({key: "%s,0" % path}, LIVE)
    dom.setBlkioParameters({"weight": blkio["weight"]}, LIVE)
    dom.setInterfaceParameters("testnet0", bandwidth, LIVE)
    assert dom.memoryParameters(LIVE) == memory
    assert dom.blkioParameters(LIVE) == blkio
    assert dom.interfaceParameters("testnet0", LIVE) == bandwidth
    conn.close()


@pytest.fixture
def default_dom():
    """The running domain "test" of test:///default, read directly (not through the module)."""
    conn = libvirt.open(DEFAULT)
    yield conn.lookupByName("test")
    conn.close()


def tune_test(monkeypatch, check_mode=False, diff=True, **options):
    args = dict(uri=DEFAULT, name="test")
    args.update(options)
    return run_module(monkeypatch, tune.main, args, check_mode=check_mode, diff=diff)


def test_check_mode_reports_the_change_and_changes_nothing(monkeypatch, default_dom):
    before = default_dom.memoryParameters(LIVE)
    result = tune_test(monkeypatch, check_mode=True, memory=dict(soft_limit_mib=300))
    assert not result.get("failed"), result
    assert result["changed"] is True
    assert result["changes"] == ["live.memory.soft_limit_mib"]
    # the return value shows the values as they would be
    assert result["tuning"]["live"]["memory"]["soft_limit_mib"] == 300
    assert result["diff"]["after"] == {"live.memory.soft_limit_mib": 300}
    assert default_dom.memoryParameters(LIVE) == before


def test_real_run_changes_then_the_repeat_is_unchanged(monkeypatch, default_dom):
    options = dict(memory=dict(soft_limit_mib=320, hard_limit_mib=3072, swap_hard_limit_mib="unlimited"))
    first = tune_test(monkeypatch, **options)
    assert not first.get("failed"), first
    assert first["changed"] is True
    assert sorted(first["changes"]) == ["live.memory.hard_limit_mib", "live.memory.soft_limit_mib"]
    # converted once: MiB in the options, KiB in libvirt
    params = default_dom.memoryParameters(LIVE)
    assert params["soft_limit"] == 320 * 1024
    assert params["hard_limit"] == 3072 * 1024
    assert first["tuning"]["live"]["memory"] == {"soft_limit_mib": 320, "hard_limit_mib": 3072,
                                                 "swap_hard_limit_mib": "unlimited"}
    second = tune_test(monkeypatch, **options)
    assert second["changed"] is False, second
    assert second["changes"] == []
    assert second["diff"] == {"before": {}, "after": {}}
    third = tune_test(monkeypatch, check_mode=True, **options)
    assert third["changed"] is False


def test_only_given_keys_are_compared_and_changed(monkeypatch, default_dom):
    default_dom.setMemoryParameters({"hard_limit": 4096 * 1024}, LIVE)
    result = tune_test(monkeypatch, memory=dict(soft_limit_mib=330))
    assert result["changes"] == ["live.memory.soft_limit_mib"]
    assert default_dom.memoryParameters(LIVE)["hard_limit"] == 4096 * 1024
    # "unlimited" is libvirt's no-limit value, and changing back to it is a change
    result = tune_test(monkeypatch, memory=dict(hard_limit_mib="unlimited"))
    assert result["changes"] == ["live.memory.hard_limit_mib"]
    assert result["diff"] == {"before": {"live.memory.hard_limit_mib": 4096},
                              "after": {"live.memory.hard_limit_mib": "unlimited"}}
    assert default_dom.memoryParameters(LIVE)["hard_limit"] == UNLIMITED_KIB


def test_a_limit_set_in_kib_elsewhere_is_seen_exactly(monkeypatch, default_dom):
    default_dom.setMemoryParameters({"soft_limit": 600000}, LIVE)  # virsh memtune --soft-limit 600000
    result = tune_test(monkeypatch, check_mode=True, memory=dict(soft_limit_mib=586))
    assert result["changed"] is True
    assert result["diff"]["before"] == {"live.memory.soft_limit_mib": 585.9375}


def test_blkio_weight_and_device_throttles(monkeypatch, default_dom):
    options = dict(blkio=dict(weight=250, devices=[dict(path="/dev/tune-a", read_bytes_sec=1048576),
                                                   dict(path="/dev/tune-b", write_iops_sec=40, weight=200)]))
    result = tune_test(monkeypatch, **options)
    assert not result.get("failed"), result
    assert sorted(result["changes"]) == [
        "live.blkio.devices[/dev/tune-a].read_bytes_sec",
        "live.blkio.devices[/dev/tune-b].weight",
        "live.blkio.devices[/dev/tune-b].write_iops_sec",
        "live.blkio.weight",
    ]
    params = default_dom.blkioParameters(LIVE)
    assert params["weight"] == 250
    assert "/dev/tune-a,1048576" in params["device_read_bytes_sec"]
    assert "/dev/tune-b,40" in params["device_write_iops_sec"]
    assert "/dev/tune-b,200" in params["device_weight"]
    devices = dict((d["path"], d) for d in result["tuning"]["live"]["blkio"]["devices"])
    assert devices["/dev/tune-a"]["read_bytes_sec"] == 1048576
    assert devices["/dev/tune-b"]["write_iops_sec"] == 40
    assert tune_test(monkeypatch, **options)["changed"] is False

    # changing one device's throttle leaves the other device alone
    result = tune_test(monkeypatch, blkio=dict(devices=[dict(path="/dev/tune-a", read_bytes_sec=2097152)]))
    assert result["changes"] == ["live.blkio.devices[/dev/tune-a].read_bytes_sec"]
    assert result["diff"] == {"before": {"live.blkio.devices[/dev/tune-a].read_bytes_sec": 1048576},
                              "after": {"live.blkio.devices[/dev/tune-a].read_bytes_sec": 2097152}}
    params = default_dom.blkioParameters(LIVE)
    assert "/dev/tune-a,2097152" in params["device_read_bytes_sec"]
    assert "/dev/tune-b,40" in params["device_write_iops_sec"]


@pytest.mark.parametrize("key", [dict(dev="testnet0"), dict(mac="aa:bb:cc:dd:ee:ff")])
def test_interface_bandwidth_by_device_or_mac(monkeypatch, default_dom, key):
    average = 2000 if "dev" in key else 3000
    entry = dict(key, inbound=dict(average=average, burst=64), outbound=dict(average=500))
    result = tune_test(monkeypatch, interfaces=[entry])
    assert not result.get("failed"), result
    assert "live.interfaces[%s].inbound.average" % list(key.values())[0] in result["changes"]
    params = default_dom.interfaceParameters("testnet0", LIVE)
    assert (params["inbound.average"], params["inbound.burst"], params["outbound.average"]) == (average, 64, 500)
    returned = result["tuning"]["live"]["interfaces"][0]
    assert returned["device"] == list(key.values())[0]
    assert returned["inbound"]["average"] == average
    assert returned["outbound"] == {"average": 500, "peak": 0, "burst": 0}
    assert tune_test(monkeypatch, interfaces=[entry])["changed"] is False


def test_changing_one_bandwidth_value_keeps_the_others(monkeypatch, default_dom):
    # libvirt replaces a whole direction with what it is given: the module sends the rest along
    tune_test(monkeypatch, interfaces=[dict(dev="testnet0", inbound=dict(average=4000, peak=8000, burst=128))])
    result = tune_test(monkeypatch, interfaces=[dict(dev="testnet0", inbound=dict(average=4500))])
    assert result["changes"] == ["live.interfaces[testnet0].inbound.average"]
    params = default_dom.interfaceParameters("testnet0", LIVE)
    assert (params["inbound.average"], params["inbound.peak"], params["inbound.burst"]) == (4500, 8000, 128)


def test_config_scope_on_a_stopped_guest(monkeypatch):
    # test:///<file> is a fresh copy on each open: one run sees its own change, nothing more
    result = run_module(monkeypatch, tune.main, dict(uri=NODE, name="off1", live=False, config=True,
                                                     memory=dict(soft_limit_mib=128)), diff=True)
    assert not result.get("failed"), result
    assert result["changes"] == ["config.memory.soft_limit_mib"]
    assert set(result["tuning"]) == {"config"}
    assert result["tuning"]["config"]["memory"]["soft_limit_mib"] == 128


def test_live_tuning_of_a_stopped_guest_is_refused(monkeypatch):
    result = run_module(monkeypatch, tune.main, dict(uri=NODE, name="off1", memory=dict(soft_limit_mib=128)))
    assert result["failed"]
    assert "'off1' is not running" in result["msg"]
    assert "config: true" in result["msg"]


def test_config_on_a_transient_guest_is_refused(monkeypatch):
    conn = libvirt.open(DEFAULT)
    dom = conn.createXML("<domain type='test'><name>tune-transient</name><memory>65536</memory>"
                         "<os><type>hvm</type></os></domain>", 0)
    try:
        result = tune_test(monkeypatch, name="tune-transient", config=True, memory=dict(soft_limit_mib=64))
        assert result["failed"]
        assert "'tune-transient' is transient" in result["msg"]
        assert dom.memoryParameters(LIVE)["soft_limit"] == UNLIMITED_KIB  # not even the live part was set
    finally:
        dom.destroy()
        conn.close()


def test_unknown_guest_is_a_clear_failure(monkeypatch):
    result = tune_test(monkeypatch, name="ghost", memory=dict(soft_limit_mib=64))
    assert result["failed"]
    assert result["msg"] == "Guest 'ghost' not found on test:///default"


def test_a_read_failure_carries_libvirts_text_and_nothing_is_set(monkeypatch, default_dom):
    before = default_dom.memoryParameters(LIVE)
    # the test driver refuses scheduler flags: every reading happens before anything is set
    result = tune_test(monkeypatch, memory=dict(soft_limit_mib=340), cpu=dict(shares=512))
    assert result["failed"]
    assert result["msg"].startswith("Cannot read the CPU scheduler parameters of guest 'test' (live): ")
    assert "unsupported flags" in result["libvirt_error"]
    assert default_dom.memoryParameters(LIVE) == before


def test_an_unknown_interface_is_libvirts_error(monkeypatch):
    result = tune_test(monkeypatch, interfaces=[dict(dev="nosuch0", inbound=dict(average=1))])
    assert result["failed"]
    assert "bandwidth of interface nosuch0" in result["msg"]
    assert "'nosuch0' is not a known interface" in result["libvirt_error"]


def test_a_set_failure_names_the_parameter_and_what_was_applied(monkeypatch, default_dom):
    result = tune_test(monkeypatch, memory=dict(soft_limit_mib=350), disks=[dict(target="vda", total_bytes_sec=100)])
    assert result["failed"]
    assert result["msg"].startswith("Cannot set live.disks[vda].total_bytes_sec=100 on guest 'test': ")
    assert "total_bytes_sec" in result["libvirt_error"]
    assert result["parameters"] == ["live.disks[vda].total_bytes_sec"]
    assert result["applied"] == ["live.memory.soft_limit_mib"]
    assert default_dom.memoryParameters(LIVE)["soft_limit"] == 350 * 1024


@pytest.mark.parametrize("options, message", [
    (dict(cpu=dict(shares=-1)), "cpu.shares must not be negative"),
    (dict(cpu=dict(vcpu_quota=999)), "cpu.vcpu_quota must be between 1000"),
    (dict(cpu=dict(emulator_period=10)), "cpu.emulator_period must be between 1000 and 1000000"),
    (dict(memory=dict(hard_limit_mib=-1)), "memory.hard_limit_mib must not be negative"),
    (dict(memory=dict(soft_limit_mib="plenty")), "memory.soft_limit_mib must be a size in MiB or 'unlimited'"),
    (dict(memory=dict(hard_limit_mib=900, swap_hard_limit_mib=800)), "must not exceed memory.swap_hard_limit_mib"),
    (dict(blkio=dict(weight=50)), "blkio.weight must be between 100 and 1000"),
    (dict(blkio=dict(devices=[dict(path="/dev/vda", read_bytes_sec=-5)])),
     "blkio.devices[/dev/vda].read_bytes_sec must not be negative"),
    (dict(interfaces=[dict(dev="vnet0", outbound=dict(peak=-2))]), "interfaces[vnet0].outbound.peak must not be negative"),
    (dict(live=False, config=False, memory=dict(soft_limit_mib=1)), "set live, config or both"),
])
def test_bad_input_is_refused_before_connecting(monkeypatch, options, message):
    # an unreachable URI: the refusal must come before any connection attempt
    args = dict(uri="qemu+tcp://127.0.0.1:1/system", name="test")
    args.update(options)
    result = run_module(monkeypatch, tune.main, args)
    assert result["failed"]
    assert result["msg"].startswith("Invalid tuning for guest 'test': ")
    assert message in result["msg"]
    assert "Cannot connect" not in result["msg"]


def test_dev_and_mac_are_mutually_exclusive(monkeypatch):
    result = tune_test(monkeypatch, interfaces=[dict(dev="testnet0", mac="aa:bb:cc:dd:ee:ff", inbound=dict(average=1))])
    assert result["failed"]
    assert "mutually exclusive" in result["msg"]


def test_missing_libvirt_binding_gives_the_requirement(monkeypatch):
    monkeypatch.setattr(_libvirt_client, "libvirt", None)
    result = tune_test(monkeypatch, memory=dict(soft_limit_mib=64))
    assert result["failed"]
    assert "python3-libvirt" in result["msg"]


# ---------------------------------------------------------------- CPU scheduler (fake domain)

class SchedulerDomain:
    """A running, persistent domain whose scheduler behaves like QEMU's: live values and a config
    where 0 means "not set"; quotas below 1000 are refused with libvirt's wording."""

    def __init__(self):
        self.live = {"cpu_shares": 1024, "vcpu_period": 100000, "vcpu_quota": -1,
                     "emulator_period": 100000, "emulator_quota": -1, "global_period": 100000, "global_quota": -1}
        self.config = dict((key, 0) for key in self.live)
        self.sets = []

    def isActive(self):  # noqa: N802 (libvirt's name)
        return 1

    def isPersistent(self):  # noqa: N802
        return 1

    def _scope(self, flags):
        if flags not in (LIVE, CONFIG):
            raise libvirt.libvirtError("Flags 'VIR_DOMAIN_AFFECT_LIVE' and 'VIR_DOMAIN_AFFECT_CONFIG' are "
                                       "mutually exclusive")
        return self.live if flags == LIVE else self.config

    def schedulerParametersFlags(self, flags):  # noqa: N802
        return dict(self._scope(flags))

    def setSchedulerParametersFlags(self, params, flags):  # noqa: N802
        for key, value in params.items():
            if key.endswith("_quota") and 0 <= value < 1000:
                raise libvirt.libvirtError("invalid argument: value of '%s' is out of range [1000, 17592186044415]"
                                           % key)
        self.sets.append((dict(params), flags))
        self._scope(flags).update(params)
        return 0


@pytest.fixture
def sched_dom(monkeypatch):
    dom = SchedulerDomain()
    monkeypatch.setattr(_libvirt_client.LibvirtClient, "domain", lambda self, name: dom)
    return dom


def test_cpu_live_and_config_check_real_repeat(monkeypatch, sched_dom):
    options = dict(config=True, cpu=dict(shares=512, vcpu_quota=50000, vcpu_period=100000))
    check = tune_test(monkeypatch, check_mode=True, **options)
    assert not check.get("failed"), check
    assert check["changed"] is True
    assert sorted(check["changes"]) == ["config.cpu.shares", "config.cpu.vcpu_period", "config.cpu.vcpu_quota",
                                        "live.cpu.shares", "live.cpu.vcpu_quota"]
    assert check["diff"]["before"]["config.cpu.shares"] is None  # not set in the definition
    assert check["diff"]["before"]["live.cpu.vcpu_quota"] == -1
    assert sched_dom.sets == []

    real = tune_test(monkeypatch, **options)
    assert real["changed"] is True
    # one call per scope with only the changed parameters, live first
    assert sched_dom.sets == [({"cpu_shares": 512, "vcpu_quota": 50000}, LIVE),
                              ({"cpu_shares": 512, "vcpu_quota": 50000, "vcpu_period": 100000}, CONFIG)]
    assert real["tuning"]["live"]["cpu"]["shares"] == 512
    assert real["tuning"]["config"]["cpu"] == {"shares": 512, "vcpu_period": 100000, "vcpu_quota": 50000,
                                               "emulator_period": None, "emulator_quota": None,
                                               "global_period": None, "global_quota": None}

    again = tune_test(monkeypatch, **options)
    assert again["changed"] is False
    assert len(sched_dom.sets) == 2


def test_cpu_quota_back_to_unlimited(monkeypatch, sched_dom):
    sched_dom.live["global_quota"] = 80000
    result = tune_test(monkeypatch, cpu=dict(global_quota=-1))
    assert result["diff"] == {"before": {"live.cpu.global_quota": 80000}, "after": {"live.cpu.global_quota": -1}}
    assert sched_dom.live["global_quota"] == -1


def test_libvirt_refusing_a_value_names_it(monkeypatch, sched_dom):
    def refuse(params, flags):
        raise libvirt.libvirtError("invalid argument: value of 'cpu_shares' is out of range [2, 262144]")

    sched_dom.setSchedulerParametersFlags = refuse
    result = tune_test(monkeypatch, cpu=dict(shares=4096))
    assert result["failed"]
    assert result["msg"] == ("Cannot set live.cpu.shares=4096 on guest 'test': invalid argument: value of "
                             "'cpu_shares' is out of range [2, 262144]")
    assert result["applied"] == []


def test_a_value_libvirt_does_not_keep_is_warned_about(monkeypatch, sched_dom):
    warnings = []
    monkeypatch.setattr(_libvirt_client.AnsibleModule, "warn", lambda self, text: warnings.append(text))
    sched_dom.setSchedulerParametersFlags = lambda params, flags: 0  # accepted, then ignored
    result = tune_test(monkeypatch, cpu=dict(shares=700))
    assert result["changed"] is True
    assert result["tuning"]["live"]["cpu"]["shares"] == 1024
    assert warnings == ["libvirt accepted live.cpu.shares=700 for guest 'test' but now reports 1024"]
