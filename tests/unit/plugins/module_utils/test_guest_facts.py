# -*- coding: utf-8 -*-
# Copyright: autopilot.kvm contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""Unit tests of the guest fact helpers: pure parsers, and collection against libvirt's test driver."""

from __future__ import annotations

import os

import pytest

from ansible_collections.autopilot.kvm.plugins.module_utils import _guest_facts as gf
from ansible_collections.autopilot.kvm.plugins.module_utils import _libvirt_client

NODE_XML = os.path.abspath(os.path.join(os.path.dirname(__file__), "..", "modules", "fixtures", "node.xml"))
NODE_URI = "test://" + NODE_XML

DOMAIN_XML = """
<domain type='kvm'>
  <name>web1</name>
  <vcpu placement='static' current='2'>4</vcpu>
  <devices>
    <disk type='file' device='disk'>
      <source file='/var/lib/libvirt/images/web1.qcow2'/>
      <target dev='vda' bus='virtio'/>
    </disk>
    <disk type='block' device='disk'>
      <source dev='/dev/vg0/data'/>
      <target dev='vdb' bus='virtio'/>
    </disk>
    <disk type='file' device='cdrom'>
      <target dev='sda' bus='sata'/>
      <readonly/>
    </disk>
    <interface type='bridge'>
      <mac address='52:54:00:aa:bb:cc'/>
      <source bridge='br0'/>
      <target dev='vnet3'/>
      <model type='virtio'/>
    </interface>
    <interface type='network'>
      <mac address='52:54:00:aa:bb:cd'/>
      <source network='default'/>
    </interface>
    <memballoon model='virtio'>
      <stats period='2'/>
    </memballoon>
  </devices>
</domain>
"""


class FakeModule:
    """Just enough of AnsibleModule for LibvirtClient: fail_json raises."""

    def __init__(self, uri):
        self.params = {"uri": uri}

    def fail_json(self, **kwargs):
        raise Failed(kwargs)


class Failed(Exception):
    pass


@pytest.fixture
def client():
    if _libvirt_client.libvirt is None:
        pytest.skip("libvirt-python is not installed")
    _libvirt_client.libvirt.registerErrorHandler(lambda _c, _e: None, None)
    result = _libvirt_client.LibvirtClient(FakeModule(NODE_URI))
    yield result
    result.close()


# ------------------------------------------------------------------ pure helpers

def test_parse_domain_xml():
    parsed = gf.parse_domain_xml(DOMAIN_XML)
    assert parsed["vcpus_max"] == 4
    assert parsed["vcpus_current"] == 2
    assert parsed["balloon_model"] == "virtio"
    assert parsed["disks"] == [
        {"dev": "vda", "bus": "virtio", "device": "disk", "type": "file",
         "path": "/var/lib/libvirt/images/web1.qcow2", "readonly": False},
        {"dev": "vdb", "bus": "virtio", "device": "disk", "type": "block", "path": "/dev/vg0/data", "readonly": False},
        {"dev": "sda", "bus": "sata", "device": "cdrom", "type": "file", "path": None, "readonly": True},
    ]
    assert parsed["interfaces"] == [
        {"dev": "vnet3", "mac": "52:54:00:aa:bb:cc", "type": "bridge", "source": "br0", "model": "virtio"},
        {"dev": None, "mac": "52:54:00:aa:bb:cd", "type": "network", "source": "default", "model": None},
    ]


def test_parse_domain_xml_error():
    with pytest.raises(gf.GuestFactsError, match="Cannot parse the domain XML"):
        gf.parse_domain_xml("<domain>")


@pytest.mark.parametrize("code, reason, state, reason_name", [
    (1, 2, "running", "migrated"),
    (3, 2, "paused", "migration"),
    (5, 4, "shutoff", "migrated"),
    (7, 0, "pmsuspended", "unknown"),
    (42, 99, "unknown", "reason_99"),
])
def test_state_names(code, reason, state, reason_name):
    assert gf.state_name(code) == state
    assert gf.state_reason_name(code, reason) == reason_name


def test_balloon_missing_keys_are_not_zero():
    facts = gf.balloon_facts("virtio", {"actual": 1048576, "rss": 400000, "swap_in": 0}, None)
    assert facts["actual"] == 1048576
    assert facts["rss"] == 400000
    assert facts["unused"] is None
    assert facts["usable"] is None
    assert facts["available"] is None
    assert facts["last_update"] is None
    assert facts["missing"] == ["unused", "usable", "available", "last_update"]
    assert facts["stats"] == {"actual": 1048576, "rss": 400000, "swap_in": 0}
    assert facts["device"] == "virtio"


def test_balloon_zero_is_kept():
    facts = gf.balloon_facts("virtio", dict((key, 0) for key in gf.BALLOON_KEYS), None)
    assert facts["missing"] == []
    assert facts["unused"] == 0


def _sample(time, cpu, block=None, net=None, state=1):
    return {"error": None, "time": time, "state": state, "cpu_time_ns": cpu,
            "block": block or {}, "net": net or {}}


def test_rates():
    first = _sample(10.0, 1000000000,
                    {"vda": {"rd_bytes": 1000, "wr_bytes": 0, "rd_req": 10, "wr_req": 0},
                     "vdb": {"rd_bytes": 0, "wr_bytes": 500, "rd_req": 0, "wr_req": 5}},
                    {0: {"rx_bytes": 100, "tx_bytes": 200}})
    second = _sample(12.0, 2500000000,
                     {"vda": {"rd_bytes": 5000, "wr_bytes": 0, "rd_req": 30, "wr_req": 0},
                      "vdb": {"rd_bytes": 0, "wr_bytes": 2500, "rd_req": 0, "wr_req": 9}},
                     {0: {"rx_bytes": 2100, "tx_bytes": 200}})
    assert gf.compute_rates(first, second, 2) == {
        "interval": 2.0,
        "cpu_percent": 75.0,  # 1.5 s of CPU in 2 s
        "cpu_percent_of_vcpus": 37.5,
        "disk_read_bytes_per_sec": 2000.0,
        "disk_write_bytes_per_sec": 1000.0,
        "disk_read_requests_per_sec": 10.0,
        "disk_write_requests_per_sec": 2.0,
        "net_rx_bytes_per_sec": 1000.0,
        "net_tx_bytes_per_sec": 0.0,
    }


def test_rates_counter_reset_and_unsupported():
    first = _sample(0.0, 5000, {"vda": {"rd_bytes": 9000, "wr_bytes": None, "rd_req": 1, "wr_req": 1}})
    second = _sample(1.0, 1000, {"vda": {"rd_bytes": 10, "wr_bytes": None, "rd_req": 2, "wr_req": 1}})
    rates = gf.compute_rates(first, second, 1)
    assert rates["cpu_percent"] is None
    assert rates["cpu_percent_of_vcpus"] is None
    assert rates["disk_read_bytes_per_sec"] is None
    assert rates["disk_write_bytes_per_sec"] is None
    assert rates["disk_read_requests_per_sec"] == 1.0


def test_rates_need_two_live_samples():
    live = _sample(0.0, 0)
    assert gf.compute_rates(None, live, 1) is None
    assert gf.compute_rates(live, _sample(1.0, 0, state=5), 1) is None
    assert gf.compute_rates(live, _sample(0.0, 0), 1) is None
    assert gf.compute_rates({"error": "gone"}, live, 1) is None


def test_memory_tuning_unlimited_is_null():
    assert gf._memory_tuning({"hard_limit": 3072000, "soft_limit": gf.MEMORY_PARAM_UNLIMITED}) == {
        "hard_limit": 3072000, "soft_limit": None}
    assert gf._memory_tuning(None) is None


# ------------------------------------------------------------------ against the test driver

def test_collect_guests_from_node_xml(client):
    slept = []
    guests, not_found = gf.collect_guests(client, interval=0.25, sleep=slept.append)
    assert slept == [0.25]  # one sleep, whatever the number of guests
    assert not_found == []
    assert sorted(guests) == ["db1", "off1", "paused1", "web1"]

    web1 = guests["web1"]
    assert web1["state"] == "running"
    assert web1["active"] is True
    assert web1["vcpus"] == 2
    assert web1["memory"] == {"max_kib": 1048576, "max_mib": 1024, "current_kib": 786432, "current_mib": 768}
    assert web1["balloon"]["device"] == "virtio"
    assert web1["balloon"]["missing"] == []
    assert web1["balloon"]["actual"] == 786432
    assert [d["dev"] for d in web1["block"]] == ["vda", "sda"]
    assert isinstance(web1["block"][0]["rd_bytes"], int)
    assert web1["interfaces"][0]["mac"] == "52:54:00:00:00:01"
    assert isinstance(web1["interfaces"][0]["rx_bytes"], int)  # found by MAC: the test driver renames vnet0
    assert web1["interfaces"][0]["error"] is None
    assert web1["rates"] is not None  # the fake sleep means the elapsed time is tiny but positive

    db1 = guests["db1"]
    assert db1["balloon"]["device"] is None
    assert db1["balloon"]["missing"] == list(gf.BALLOON_KEYS)
    assert db1["tuning"]["memory"]["hard_limit"] == 3000 * 1024
    assert db1["tuning"]["memory"]["soft_limit"] is None

    assert guests["paused1"]["state"] == "paused"
    off1 = guests["off1"]
    assert off1["state"] == "shutoff"
    assert off1["active"] is False
    assert off1["id"] is None
    assert off1["rates"] is None
    assert off1["balloon"]["error"] == "the guest is not running"


def test_collect_guests_by_name_without_rates(client):
    slept = []
    guests, not_found = gf.collect_guests(client, names=["off1", "ghost", "off1"], interval=0, sleep=slept.append)
    assert list(guests) == ["off1"]
    assert not_found == ["ghost"]
    assert slept == []


def test_no_sleep_when_nothing_runs(client):
    slept = []
    guests, _not_found = gf.collect_guests(client, names=["off1"], interval=5, sleep=slept.append)
    assert slept == []
    assert guests["off1"]["rates"] is None


def test_rates_over_a_real_interval(client):
    """The test driver's CPU time is the wall clock, so a running guest uses 100 % of one core."""
    guests, _not_found = gf.collect_guests(client, names=["web1"], interval=0.2)
    rates = guests["web1"]["rates"]
    assert 0.19 <= rates["interval"] <= 1.0
    assert 80.0 <= rates["cpu_percent"] <= 120.0
    assert rates["cpu_percent_of_vcpus"] == pytest.approx(rates["cpu_percent"] / 2, abs=0.01)
    assert rates["disk_read_bytes_per_sec"] > 0
    assert rates["net_rx_bytes_per_sec"] > 0


def test_guest_undefined_while_gathering_is_left_out(client):
    """A guest that disappears between listAllDomains() and its first call is skipped, not an error."""
    conn = client.conn
    real_list = conn.listAllDomains

    def list_then_undefine(flags=0):
        domains = real_list(flags)
        conn.lookupByName("off1").undefine()
        return domains

    conn.listAllDomains = list_then_undefine
    guests, not_found = gf.collect_guests(client, interval=0)
    assert sorted(guests) == ["db1", "paused1", "web1"]
    assert not_found == []


def test_broken_domain_xml_names_the_guest(client, monkeypatch):
    def broken(_text):
        raise gf.GuestFactsError("bad XML")

    monkeypatch.setattr(gf, "parse_domain_xml", broken)
    with pytest.raises(gf.GuestFactsError, match="Guest 'db1': bad XML"):
        gf.collect_guests(client, names=["db1"], interval=0)


def _metadata_domain(payload):
    return ("<domain><name>g</name><vcpu>1</vcpu><metadata>"
            "<ap:expectations xmlns:ap='http://autopilot.kvm/xmlns/expectations/1'>%s</ap:expectations>"
            "</metadata><devices/></domain>" % payload)


def test_metadata_expectations_are_read_from_the_domain_xml():
    parsed = gf.parse_domain_xml(_metadata_domain('[{"type": "anti_affinity", "group": "web"}]'))
    assert parsed["expectations"] == [{"type": "anti_affinity", "group": "web"}]
    assert parsed["expectations_error"] is None


def test_bad_metadata_expectations_are_reported_not_raised():
    parsed = gf.parse_domain_xml(_metadata_domain("{not json"))
    assert parsed["expectations"] == [] and "not valid JSON" in parsed["expectations_error"]
    parsed = gf.parse_domain_xml(_metadata_domain('{"type": "ban"}'))
    assert parsed["expectations_error"] == "metadata expectations must be a JSON list of objects"


def test_a_domain_without_metadata_declares_nothing():
    parsed = gf.parse_domain_xml("<domain><name>g</name><devices/></domain>")
    assert parsed["expectations"] == [] and parsed["expectations_error"] is None
