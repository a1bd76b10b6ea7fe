# -*- coding: utf-8 -*-
# Copyright: autopilot.kvm contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""guest_info's main() against libvirt's test driver."""

from __future__ import annotations

import os

import pytest

from ansible.module_utils.testing import patch_module_args

from ansible_collections.autopilot.kvm.plugins.module_utils import _libvirt_client
from .module_runner import ExitJson, FailJson, capture  # noqa: F401  pylint: disable=unused-import
from ansible_collections.autopilot.kvm.plugins.modules import guest_info

HERE = os.path.dirname(os.path.abspath(__file__))
NODE_URI = "test://" + os.path.join(HERE, "fixtures", "node.xml")

GUEST_KEYS = {
    "name", "uuid", "id", "active", "persistent", "autostart", "state", "state_code", "state_reason",
    "vcpus", "vcpus_max", "cpu_time_ns", "memory", "balloon", "block", "interfaces", "tuning", "rates", "expectations", "expectations_error",
}
RATE_KEYS = {
    "interval", "cpu_percent", "cpu_percent_of_vcpus", "disk_read_bytes_per_sec", "disk_write_bytes_per_sec",
    "disk_read_requests_per_sec", "disk_write_requests_per_sec", "net_rx_bytes_per_sec", "net_tx_bytes_per_sec",
}

# every test here sees exit_json / fail_json as ExitJson / FailJson (fixture from module_runner)
pytestmark = [pytest.mark.skipif(_libvirt_client.libvirt is None, reason="libvirt-python is not installed"),
              pytest.mark.usefixtures("capture")]


def run(args):
    with patch_module_args(args):
        with pytest.raises((ExitJson, FailJson)) as caught:
            guest_info.main()
    return caught.type, caught.value.args[0]


def test_default_test_driver():
    kind, result = run({"uri": "test:///default", "interval": 0.1})
    assert kind is ExitJson, result
    assert result["changed"] is False
    assert result["not_found"] == []
    guest = result["guests"]["test"]
    assert set(guest) == GUEST_KEYS
    assert guest["name"] == "test"
    assert guest["state"] == "running"
    assert guest["vcpus"] == 2
    assert guest["memory"]["max_kib"] == 8388608
    assert guest["memory"]["max_mib"] == 8192
    assert guest["block"][0]["dev"] == "vda"
    assert guest["block"][0]["path"] == "/guest/diskimage1"
    assert guest["interfaces"][0]["dev"] == "testnet0"
    assert isinstance(guest["interfaces"][0]["tx_bytes"], int)
    assert guest["tuning"]["scheduler"] == {"weight": 50}
    assert set(guest["rates"]) == RATE_KEYS
    assert guest["rates"]["cpu_percent"] > 0


def test_node_xml_every_state():
    kind, result = run({"uri": NODE_URI, "interval": 0.05})
    assert kind is ExitJson, result
    guests = result["guests"]
    assert {name: guest["state"] for name, guest in guests.items()} == {
        "web1": "running", "db1": "running", "paused1": "paused", "off1": "shutoff",
    }
    assert guests["web1"]["balloon"]["usable"] == 393216
    assert guests["db1"]["balloon"]["usable"] is None
    assert "usable" in guests["db1"]["balloon"]["missing"]
    assert guests["db1"]["tuning"]["memory"]["hard_limit"] == 3072000
    assert guests["off1"]["rates"] is None
    assert guests["paused1"]["rates"]["disk_read_bytes_per_sec"] == 0.0  # no disks


def test_name_filter_and_not_found():
    kind, result = run({"uri": NODE_URI, "name": ["web1", "nope"], "interval": 0})
    assert kind is ExitJson
    assert list(result["guests"]) == ["web1"]
    assert result["not_found"] == ["nope"]
    assert result["guests"]["web1"]["rates"] is None


def test_check_mode():
    kind, result = run({"uri": NODE_URI, "name": ["db1"], "interval": 0, "_ansible_check_mode": True})
    assert kind is ExitJson
    assert result["changed"] is False
    assert result["guests"]["db1"]["vcpus"] == 4


def test_negative_interval():
    kind, result = run({"uri": NODE_URI, "interval": -1})
    assert kind is FailJson
    assert result["msg"] == "interval must be 0 or more seconds, not -1.0"


def test_unreachable_uri():
    kind, result = run({"uri": "qemu+tcp://127.0.0.1:1/system", "interval": 0})
    assert kind is FailJson
    assert result["msg"].startswith("Cannot connect to libvirt at qemu+tcp://127.0.0.1:1/system: ")
    assert "exception" not in result


def test_missing_libvirt_binding(monkeypatch):
    monkeypatch.setattr(_libvirt_client, "libvirt", None)
    kind, result = run({"uri": NODE_URI})
    assert kind is FailJson
    assert "Failed to import the required Python library (libvirt-python" in result["msg"]


def test_unparsable_domain_xml_fails_with_the_guest_name(monkeypatch):
    from ansible_collections.autopilot.kvm.plugins.module_utils import _guest_facts

    def broken(_text):
        raise _guest_facts.GuestFactsError("Cannot parse the domain XML: no element found")

    monkeypatch.setattr(_guest_facts, "parse_domain_xml", broken)
    kind, result = run({"uri": NODE_URI, "name": ["web1"], "interval": 0})
    assert kind is FailJson
    assert result["msg"] == "Guest 'web1': Cannot parse the domain XML: no element found"
