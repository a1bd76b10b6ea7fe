# -*- coding: utf-8 -*-
# Copyright: autopilot.kvm contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""Unit tests of the tuning helpers: validation, unit conversion, comparison, payloads and views (no libvirt)."""

from __future__ import annotations

import pytest

from ansible_collections.autopilot.kvm.plugins.module_utils import _tuning as t

UNLIMITED_KIB = 9007199254740991


def request(**kwargs):
    params = dict(name="vm1", live=True, config=False, cpu=None, memory=None, blkio=None, disks=None, interfaces=None)
    params.update(kwargs)
    return params


def items(target):
    return [(option, name, value) for option, name, _kind, value in target.items]


# ---------------------------------------------------------------- check_value

@pytest.mark.parametrize("kind, value, expected", [
    ("shares", 2, 2),
    ("shares", 262144, 262144),
    ("period", 1000, 1000),
    ("period", 1000000, 1000000),
    ("quota", -1, -1),
    ("quota", 1000, 1000),
    ("quota", 17592186044415, 17592186044415),
    ("mib", 1, 1),
    ("mib", "512", 512),
    ("mib", "unlimited", "unlimited"),
    ("mib", " Unlimited ", "unlimited"),
    ("weight", 100, 100),
    ("weight", 1000, 1000),
    ("device_weight", 0, 0),
    ("rate", 0, 0),
    ("bandwidth", 4294967295, 4294967295),
])
def test_valid_values_are_accepted_in_canonical_form(kind, value, expected):
    assert t.check_value(kind, value) == expected


@pytest.mark.parametrize("kind, value, message", [
    ("shares", 1, "between 2 and 262144"),
    ("shares", -5, "must not be negative"),
    ("period", 999, "between 1000 and 1000000"),
    ("period", 1000001, "between 1000 and 1000000"),
    ("quota", 999, "between 1000 and 17592186044415 (or -1)"),
    ("quota", 0, "between 1000"),
    ("quota", -2, "(or -1)"),
    ("quota", 17592186044416, "between 1000"),
    ("mib", 0, "between 1 and"),
    ("mib", -1, "must not be negative"),
    ("mib", "lots", "a size in MiB or 'unlimited'"),
    ("mib", 1.5, "a size in MiB"),
    ("mib", True, "a size in MiB"),
    ("weight", 99, "between 100 and 1000"),
    ("weight", 1001, "between 100 and 1000"),
    ("weight", 0, "between 100 and 1000"),
    ("device_weight", 50, "between 100 and 1000 (or 0)"),
    ("rate", -1, "must not be negative"),
    ("bandwidth", 4294967296, "between 0 and 4294967295"),
])
def test_bad_values_are_refused_with_the_reason(kind, value, message):
    with pytest.raises(ValueError) as caught:
        t.check_value(kind, value)
    assert message in str(caught.value)


# ---------------------------------------------------------------- units

@pytest.mark.parametrize("kind, value, expected", [
    ("mib", 512, 524288),
    ("mib", "unlimited", UNLIMITED_KIB),
    ("shares", 512, 512),
    ("quota", -1, -1),
    ("rate", 1048576, 1048576),
])
def test_to_libvirt_converts_memory_to_kib_only(kind, value, expected):
    assert t.to_libvirt(kind, value) == expected


@pytest.mark.parametrize("kind, value, expected", [
    ("mib", 524288, 512),
    ("mib", 600000, 585.9375),          # set in KiB by someone else: the exact fraction, not rounded
    ("mib", UNLIMITED_KIB, "unlimited"),
    ("mib", 9007199254740988, "unlimited"),  # cgroup v1's page-rounded "max", in KiB
    ("shares", 1024, 1024),
    ("shares", 0, None),                # a persistent definition without <shares>
    ("period", 0, None),
    ("quota", 0, None),
    ("quota", -1, -1),
    ("quota", -5, -1),
    ("quota", 50000, 50000),
    ("weight", 0, None),
    ("device_weight", 0, 0),
    ("rate", 0, 0),
    ("bandwidth", 0, 0),
    ("mib", None, None),
])
def test_to_user_converts_and_normalises(kind, value, expected):
    assert t.to_user(kind, value) == expected


@pytest.mark.parametrize("kind, option_value", [
    ("mib", 1), ("mib", 4096), ("mib", "unlimited"), ("quota", -1), ("quota", 2000), ("shares", 2), ("rate", 0),
])
def test_a_value_survives_the_round_trip(kind, option_value):
    assert t.to_user(kind, t.to_libvirt(kind, option_value)) == option_value


def test_differs_uses_the_normalised_values():
    assert not t.differs("mib", 9007199254740988, UNLIMITED_KIB)
    assert not t.differs("quota", -7, -1)
    assert t.differs("mib", 600000, 585 * 1024)
    assert t.differs("shares", 0, 1024)      # config scope: unset -> set
    assert not t.differs("shares", 512, 512)


# ---------------------------------------------------------------- build_targets

def test_only_the_given_keys_become_targets():
    targets = t.build_targets(request(
        cpu=dict(shares=512, vcpu_quota=None, vcpu_period=100000),
        memory=dict(soft_limit_mib=256, hard_limit_mib=None),
    ))
    assert [target.label for target in targets] == ["cpu", "memory"]
    assert items(targets[0]) == [("shares", "cpu_shares", 512), ("vcpu_period", "vcpu_period", 100000)]
    assert items(targets[1]) == [("soft_limit_mib", "soft_limit", 262144)]


def test_an_empty_request_has_no_targets():
    assert t.build_targets(request(cpu=dict(shares=None), blkio=dict(weight=None, devices=[]))) == []


def test_device_targets_are_keyed_by_path_target_dev_or_mac():
    targets = t.build_targets(request(
        blkio=dict(weight=300, devices=[dict(path="/dev/sda", read_bytes_sec=1048576, weight=None),
                                        dict(path="/dev/sdb", weight=None)]),
        disks=[dict(target="vda", write_iops_sec=500)],
        interfaces=[dict(dev="vnet0", mac=None, inbound=dict(average=1000, peak=None), outbound=None),
                    dict(dev=None, mac="52:54:00:00:00:01", inbound=None, outbound=dict(burst=64))],
    ))
    assert [target.label for target in targets] == [
        "blkio", "blkio.devices[/dev/sda]", "disks[vda]", "interfaces[vnet0]", "interfaces[52:54:00:00:00:01]"]
    assert items(targets[1]) == [("read_bytes_sec", "device_read_bytes_sec", 1048576)]
    assert items(targets[3]) == [("inbound.average", "inbound.average", 1000)]
    assert items(targets[4]) == [("outbound.burst", "outbound.burst", 64)]
    assert targets[0].source == targets[1].source == ("blkio", None)
    assert targets[2].source == ("disk", "vda")


def test_every_bad_value_is_reported_at_once():
    with pytest.raises(t.TuningError) as caught:
        t.build_targets(request(
            cpu=dict(shares=-1, vcpu_quota=500),
            memory=dict(hard_limit_mib="big"),
            blkio=dict(weight=50, devices=[dict(path="/dev/sda", read_iops_sec=-3)]),
            interfaces=[dict(dev="vnet0", inbound=dict(average=-1))],
        ))
    errors = caught.value.errors
    assert len(errors) == 6, errors
    assert "cpu.shares must not be negative, got -1" in errors
    assert any(e.startswith("cpu.vcpu_quota must be between 1000") for e in errors)
    assert any(e.startswith("memory.hard_limit_mib must be a size in MiB") for e in errors)
    assert any(e.startswith("blkio.weight must be between 100 and 1000") for e in errors)
    assert "blkio.devices[/dev/sda].read_iops_sec must not be negative, got -3" in errors
    assert "interfaces[vnet0].inbound.average must not be negative, got -1" in errors


@pytest.mark.parametrize("params, message", [
    (dict(live=False, config=False, cpu=dict(shares=512)), "set live, config or both"),
    (dict(memory=dict(hard_limit_mib=1024, swap_hard_limit_mib=512)), "must not exceed memory.swap_hard_limit_mib"),
    (dict(blkio=dict(devices=[dict(path="/dev/sda", weight=200), dict(path="/dev/sda", weight=300)])),
     "blkio.devices lists /dev/sda twice"),
    (dict(blkio=dict(devices=[dict(path="/dev/a,b", weight=200)])), "cannot contain a comma"),
    (dict(disks=[dict(target="vda", read_bytes_sec=1), dict(target="vda", read_bytes_sec=2)]), "disks lists vda twice"),
    (dict(interfaces=[dict(dev=None, mac=None, inbound=dict(average=1))]), "needs dev or mac"),
])
def test_inconsistent_requests_are_refused(params, message):
    with pytest.raises(t.TuningError) as caught:
        t.build_targets(request(**params))
    assert message in str(caught.value)


def test_unlimited_memory_passes_the_swap_check():
    targets = t.build_targets(request(memory=dict(hard_limit_mib="unlimited", swap_hard_limit_mib="unlimited")))
    assert items(targets[0]) == [("hard_limit_mib", "hard_limit", UNLIMITED_KIB),
                                 ("swap_hard_limit_mib", "swap_hard_limit", UNLIMITED_KIB)]


# ---------------------------------------------------------------- readings, payloads

def test_device_lists_parse_and_format():
    assert t.parse_device_list("") == {}
    assert t.parse_device_list(None) == {}
    assert t.parse_device_list("/dev/vda,1048576") == {"/dev/vda": 1048576}
    assert t.parse_device_list("/dev/vda,10,/dev/sdb,20") == {"/dev/vda": 10, "/dev/sdb": 20}
    assert t.parse_device_list("/dev/vda,bad,/dev/sdb,20") == {"/dev/sdb": 20}
    assert t.format_device_list({"/dev/sdb": 20, "/dev/vda": 10}) == "/dev/sdb,20,/dev/vda,10"


BLKIO_READING = {
    "weight": 300, "device_weight": "/dev/sdb,200", "device_read_iops_sec": "",
    "device_write_iops_sec": "", "device_read_bytes_sec": "/dev/vda,1048576,/dev/sdb,5",
    "device_write_bytes_sec": "",
}


def test_blkio_devices_compare_against_their_own_entry():
    target = t.build_targets(request(blkio=dict(devices=[
        dict(path="/dev/vda", read_bytes_sec=1048576, write_bytes_sec=2048, weight=None)])))[0]
    compared = t.compare(target, BLKIO_READING)
    assert [(option, before, wanted) for option, _n, _k, before, wanted in compared] == [
        ("read_bytes_sec", 1048576, 1048576), ("write_bytes_sec", 0, 2048)]
    changes = [c for c in compared if t.differs(c[2], c[3], c[4])]
    # only the changed parameter, and only for this device: libvirt merges it into its list
    assert t.payload(target, changes, BLKIO_READING) == {"device_write_bytes_sec": "/dev/vda,2048"}
    predicted = t.apply_to_reading(target, BLKIO_READING, changes)
    assert predicted["device_write_bytes_sec"] == "/dev/vda,2048"
    assert BLKIO_READING["device_write_bytes_sec"] == ""  # the reading itself is left alone


def test_payload_of_plain_parameters_is_in_libvirt_units():
    target = t.build_targets(request(memory=dict(soft_limit_mib=256, hard_limit_mib=512)))[0]
    reading = {"soft_limit": UNLIMITED_KIB, "hard_limit": 512 * 1024, "swap_hard_limit": UNLIMITED_KIB}
    changes = [c for c in t.compare(target, reading) if t.differs(c[2], c[3], c[4])]
    assert t.payload(target, changes, reading) == {"soft_limit": 262144}


IFACE_READING = {"inbound.average": 1000, "inbound.peak": 2000, "inbound.burst": 64, "inbound.floor": 0,
                 "outbound.average": 500, "outbound.peak": 0, "outbound.burst": 32}


@pytest.mark.parametrize("inbound, outbound, expected", [
    # libvirt replaces a whole direction: its other current values go along (a zero floor does not)
    (dict(average=1500), None, {"inbound.average": 1500, "inbound.peak": 2000, "inbound.burst": 64}),
    (None, dict(burst=16), {"outbound.average": 500, "outbound.burst": 16}),
    (dict(peak=0), dict(average=600), {"inbound.average": 1000, "inbound.peak": 0, "inbound.burst": 64,
                                       "outbound.average": 600, "outbound.burst": 32}),
    (dict(average=1000), None, {}),
])
def test_interface_payload_keeps_the_rest_of_a_changed_direction(inbound, outbound, expected):
    target = t.build_targets(request(interfaces=[dict(dev="vnet0", inbound=inbound, outbound=outbound)]))[0]
    changes = [c for c in t.compare(target, IFACE_READING) if t.differs(c[2], c[3], c[4])]
    assert (t.payload(target, changes, IFACE_READING) if changes else {}) == expected


class RecordingDomain:
    """Records which libvirt method a getter/setter would call, with which arguments."""

    def __getattr__(self, method):
        return lambda *args: (method, args)


@pytest.mark.parametrize("params, get_call, set_call", [
    (dict(cpu=dict(shares=512)), ("schedulerParametersFlags", (2,)),
     ("setSchedulerParametersFlags", ({"cpu_shares": 512}, 2))),
    (dict(memory=dict(soft_limit_mib=1)), ("memoryParameters", (2,)), ("setMemoryParameters", ({"soft_limit": 1024}, 2))),
    (dict(blkio=dict(weight=500)), ("blkioParameters", (2,)), ("setBlkioParameters", ({"weight": 500}, 2))),
    (dict(disks=[dict(target="vdb", read_iops_sec=9)]), ("blockIoTune", ("vdb", 2)),
     ("setBlockIoTune", ("vdb", {"read_iops_sec": 9}, 2))),
    (dict(interfaces=[dict(mac="52:54:00:00:00:09", outbound=dict(average=7))]),
     ("interfaceParameters", ("52:54:00:00:00:09", 2)),
     ("setInterfaceParameters", ("52:54:00:00:00:09", {"outbound.average": 7}, 2))),
])
def test_each_category_reads_and_sets_through_its_libvirt_call(params, get_call, set_call):
    target = t.build_targets(request(**params))[0]
    dom = RecordingDomain()
    func, args = t.getter(dom, target, t.AFFECT_CONFIG)
    assert func(*args) == get_call
    changes = [(option, name, kind, None, wanted) for option, name, kind, wanted in target.items]
    func, args = t.setter(dom, target, t.payload(target, changes, {}), t.AFFECT_CONFIG)
    assert func(*args) == set_call


def test_scope_flags_are_libvirts():
    libvirt = pytest.importorskip("libvirt")
    assert dict(t.SCOPES) == {"live": libvirt.VIR_DOMAIN_AFFECT_LIVE, "config": libvirt.VIR_DOMAIN_AFFECT_CONFIG}


# ---------------------------------------------------------------- views

def test_view_lays_values_out_like_the_options():
    readings = {
        ("cpu", None): {"cpu_shares": 512, "vcpu_period": 100000, "vcpu_quota": -1, "emulator_quota": 0},
        ("memory", None): {"soft_limit": 262144, "hard_limit": UNLIMITED_KIB, "swap_hard_limit": UNLIMITED_KIB},
        ("blkio", None): BLKIO_READING,
        ("disk", "vda"): {"total_bytes_sec": 0, "read_iops_sec": 5, "group_name": ""},
        ("interface", "vnet0"): {"inbound.average": 100, "inbound.floor": 0, "outbound.average": 0},
    }
    values = t.view(readings)
    assert values["cpu"] == {"shares": 512, "vcpu_period": 100000, "vcpu_quota": -1, "emulator_quota": None}
    assert values["memory"] == {"soft_limit_mib": 256, "hard_limit_mib": "unlimited", "swap_hard_limit_mib": "unlimited"}
    assert values["blkio"]["weight"] == 300
    assert values["blkio"]["devices"] == [
        {"path": "/dev/sdb", "weight": 200, "read_bytes_sec": 5, "write_bytes_sec": 0, "read_iops_sec": 0,
         "write_iops_sec": 0},
        {"path": "/dev/vda", "weight": 0, "read_bytes_sec": 1048576, "write_bytes_sec": 0, "read_iops_sec": 0,
         "write_iops_sec": 0},
    ]
    assert values["disks"] == [{"target": "vda", "total_bytes_sec": 0, "read_iops_sec": 5}]
    assert values["interfaces"] == [{"device": "vnet0", "inbound": {"average": 100, "floor": 0},
                                     "outbound": {"average": 0}}]


def test_view_has_only_what_was_read():
    assert t.view({}) == {}
    assert list(t.view({("memory", None): {"soft_limit": 1024}})) == ["memory"]


def test_parameter_names_carry_scope_group_and_device():
    targets = t.build_targets(request(cpu=dict(shares=512), blkio=dict(devices=[dict(path="/dev/vda", read_iops_sec=1)]),
                                      interfaces=[dict(dev="vnet0", inbound=dict(average=1))]))
    assert [t.parameter_name("live", target, target.items[0][0]) for target in targets] == [
        "live.cpu.shares", "live.blkio.devices[/dev/vda].read_iops_sec", "live.interfaces[vnet0].inbound.average"]
