# -*- coding: utf-8 -*-
# Copyright: autopilot.kvm contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""autopilot.kvm.balloon against libvirt's test:/// driver.

The test driver applies setMemoryFlags at once and its memoryStats() are fake but scale with the
current memory: actual = current, usable = unused = current / 2. So web1 (768 of 1024 MiB) "uses"
384 MiB, and with the default 32 MiB margin it cannot be shrunk below 416 MiB.
"""

from __future__ import annotations

import os
import re

import pytest

from ansible.module_utils import basic

from ansible_collections.autopilot.kvm.plugins.module_utils import _libvirt_client
from ansible_collections.autopilot.kvm.plugins.modules import balloon

from .module_runner import run_module

libvirt = pytest.importorskip("libvirt")

NODE_URI = "test://" + os.path.join(os.path.dirname(__file__), "fixtures", "node.xml")
MIB = 1024


@pytest.fixture
def node(monkeypatch):
    """One copy of node.xml shared by the module and the test (test:///file gives a fresh copy per open)."""
    conn = libvirt.open(NODE_URI)
    real_open = libvirt.open

    class Shared:
        def __getattr__(self, name):
            return getattr(conn, name)

        def close(self):
            return 0

    monkeypatch.setattr(_libvirt_client.libvirt, "open", lambda uri: Shared() if uri == NODE_URI else real_open(uri))
    yield conn
    conn.close()


def run(monkeypatch, check_mode=False, diff=True, **args):
    args.setdefault("uri", NODE_URI)
    return run_module(monkeypatch, balloon.main, args, check_mode=check_mode, diff=diff)


def live_kib(conn, name):
    return conn.lookupByName(name).info()[2]


def config_kib(conn, name):
    xml = conn.lookupByName(name).XMLDesc(libvirt.VIR_DOMAIN_XML_INACTIVE)
    return int(re.search(r"<currentMemory unit='KiB'>(\d+)</currentMemory>", xml).group(1))


def test_check_mode_reports_the_shrink_and_changes_nothing(node, monkeypatch):
    result = run(monkeypatch, check_mode=True, name="web1", memory_mib=512)
    assert not result.get("failed"), result
    assert result["changed"] is True
    assert result["diff"] == {"before": {"memory_kib": 786432}, "after": {"memory_kib": 524288}}
    assert result["balloon"]["live_changed"] is True
    assert result["balloon"]["after_kib"] == 786432
    assert result["balloon"]["used_kib"] == 384 * MIB
    assert live_kib(node, "web1") == 786432


def test_shrink_then_repeat_is_unchanged(node, monkeypatch):
    result = run(monkeypatch, name="web1", memory_mib=512)
    assert not result.get("failed"), result
    assert result["changed"] is True
    assert result["balloon"]["reached"] is True
    assert result["balloon"]["before_kib"] == 786432
    assert result["balloon"]["after_kib"] == 524288
    assert live_kib(node, "web1") == 524288
    assert config_kib(node, "web1") == 768 * MIB  # config: false leaves the definition alone

    again = run(monkeypatch, name="web1", memory_mib=512)
    assert again["changed"] is False
    assert again["diff"]["before"] == again["diff"]["after"]
    assert again["balloon"]["reached"] is True


def test_memory_kib(node, monkeypatch):
    result = run(monkeypatch, name="web1", memory_kib=600000, tolerance_mib=0)
    assert result["changed"] is True
    assert live_kib(node, "web1") == 600000


def test_within_tolerance_is_unchanged_and_zero_tolerance_is_exact(node, monkeypatch):
    assert run(monkeypatch, name="web1", memory_mib=764)["changed"] is False
    assert live_kib(node, "web1") == 786432
    assert run(monkeypatch, name="web1", memory_mib=764, tolerance_mib=0)["changed"] is True
    assert live_kib(node, "web1") == 764 * MIB


def test_below_what_the_guest_uses_is_refused_with_numbers(node, monkeypatch):
    for check_mode in (True, False):
        result = run(monkeypatch, check_mode=check_mode, name="web1", memory_mib=400)
        assert result["failed"]
        assert "Refusing to shrink the guest from 768 MiB to 400 MiB" in result["msg"]
        assert "uses 384 MiB" in result["msg"]
        assert "needs 416 MiB" in result["msg"]
        assert result["balloon_stats"]["usable"] == 393216
    assert live_kib(node, "web1") == 786432
    assert run(monkeypatch, name="web1", memory_mib=400, used_margin_mib=0)["changed"] is True


def test_below_the_guarantee_is_refused(node, monkeypatch):
    result = run(monkeypatch, name="web1", memory_mib=600, guaranteed_mib=700)
    assert result["failed"]
    assert "below the guest's guaranteed 700 MiB" in result["msg"]
    assert live_kib(node, "web1") == 786432


def test_above_max_fails_with_libvirts_text(node, monkeypatch):
    result = run(monkeypatch, name="web1", memory_mib=2048)
    assert result["failed"]
    assert "cannot set memory higher than max memory" in result["msg"]
    assert result["libvirt_error"] == "invalid argument: cannot set memory higher than max memory"
    checked = run(monkeypatch, check_mode=True, name="web1", memory_mib=2048)
    assert checked["failed"]
    assert "higher than the guest's max memory 1024 MiB" in checked["msg"]
    assert live_kib(node, "web1") == 786432


def test_grow_back(node, monkeypatch):
    assert run(monkeypatch, name="web1", memory_mib=512)["changed"] is True
    result = run(monkeypatch, name="web1", memory_mib=1024)
    assert result["changed"] is True
    assert result["balloon"]["used_kib"] is None  # growing is never checked against use
    assert live_kib(node, "web1") == 1024 * MIB


def test_missing_stats_refuse_unless_forced(node, monkeypatch):
    result = run(monkeypatch, name="db1", memory_mib=1024)
    assert result["failed"]
    assert "no balloon statistics" in result["msg"]
    assert "force: true" in result["msg"]
    assert live_kib(node, "db1") == 2048 * MIB
    # record the module's warnings where they are raised: where Ansible keeps them depends on what other
    # tests in the same process have loaded (a controller display prints them instead of keeping them)
    warned = []
    original_warn = basic.AnsibleModule.warn

    def warn(self, warning):
        warned.append(warning)
        return original_warn(self, warning)
    monkeypatch.setattr(basic.AnsibleModule, "warn", warn)
    forced = run(monkeypatch, name="db1", memory_mib=1024, force=True)
    assert forced["changed"] is True
    assert [w for w in warned if "force: true" in w], warned
    assert live_kib(node, "db1") == 1024 * MIB


def test_config_sets_the_persistent_current_memory(node, monkeypatch):
    checked = run(monkeypatch, check_mode=True, name="web1", memory_mib=512, config=True)
    assert checked["changed"] is True
    assert checked["diff"] == {"before": {"memory_kib": 786432, "config_memory_kib": 786432},
                               "after": {"memory_kib": 524288, "config_memory_kib": 524288}}
    assert config_kib(node, "web1") == 786432

    result = run(monkeypatch, name="web1", memory_mib=512, config=True)
    assert result["changed"] is True
    assert result["balloon"]["config_changed"] and result["balloon"]["live_changed"]
    assert result["balloon"]["config_after_kib"] == 524288
    assert config_kib(node, "web1") == 524288
    assert live_kib(node, "web1") == 524288
    assert run(monkeypatch, name="web1", memory_mib=512, config=True)["changed"] is False


def test_config_only_when_live_is_already_there(node, monkeypatch):
    run(monkeypatch, name="web1", memory_mib=512)
    result = run(monkeypatch, name="web1", memory_mib=512, config=True)
    assert result["changed"] is True
    assert result["balloon"]["live_changed"] is False and result["balloon"]["config_changed"] is True
    assert result["diff"]["before"]["memory_kib"] == result["diff"]["after"]["memory_kib"] == 524288


def test_stopped_guest_needs_config(node, monkeypatch):
    result = run(monkeypatch, name="off1", memory_mib=256)
    assert result["failed"]
    assert "'off1' is not running" in result["msg"] and "config: true" in result["msg"]
    result = run(monkeypatch, name="off1", memory_mib=256, config=True)
    assert result["changed"] is True
    assert result["balloon"]["active"] is False
    assert result["diff"] == {"before": {"config_memory_kib": 524288}, "after": {"config_memory_kib": 262144}}
    assert config_kib(node, "off1") == 262144
    assert run(monkeypatch, name="off1", memory_mib=256, config=True)["changed"] is False


def test_timeout_fails_and_says_the_target_stays(node, monkeypatch):
    monkeypatch.setattr(balloon, "wait_for_target", lambda *args, **kwargs: (False, 700000, 5.0))
    result = run(monkeypatch, name="web1", memory_mib=512, timeout=5)
    assert result["failed"]
    assert "is at 700000 KiB, not within 8192 KiB of the target 524288 KiB after 5.0 s" in result["msg"]
    assert result["balloon"]["reached"] is False


def test_no_wait(node, monkeypatch):
    result = run(monkeypatch, name="web1", memory_mib=512, wait=False)
    assert result["changed"] is True
    assert result["balloon"]["reached"] is None


def test_unknown_guest(node, monkeypatch):
    result = run(monkeypatch, name="ghost", memory_mib=512)
    assert result["failed"]
    assert "'ghost' not found" in result["msg"]


@pytest.mark.parametrize("args, message", [
    (dict(name="web1", memory_mib=512, memory_kib=1), "mutually exclusive"),
    (dict(name="web1"), "one of the following is required"),
    (dict(name="web1", memory_mib=0), "must be positive"),
    (dict(name="web1", memory_mib=512, timeout=0), "timeout must be a positive"),
    (dict(name="web1", memory_mib=512, tolerance_mib=-1), "tolerance_mib must not be negative"),
])
def test_bad_arguments(node, monkeypatch, args, message):
    result = run(monkeypatch, **args)
    assert result["failed"]
    assert message in result["msg"]


def test_above_max_within_tolerance_is_unchanged_in_both_modes(node, monkeypatch):
    assert run(monkeypatch, name="web1", memory_mib=1024)["changed"] is True
    for check_mode in (True, False):
        result = run(monkeypatch, check_mode=check_mode, name="web1", memory_mib=1028)
        assert not result.get("failed"), result
        assert result["changed"] is False


def test_transient_guest_has_no_config(node, monkeypatch):
    node.createXML("<domain type='test'><name>temp1</name><memory unit='MiB'>512</memory>"
                   "<os><type>hvm</type></os></domain>", 0)
    result = run(monkeypatch, name="temp1", memory_mib=256, config=True)
    assert result["failed"]
    assert "'temp1' is transient" in result["msg"]
    assert run(monkeypatch, name="temp1", memory_mib=256, force=True)["changed"] is True
    assert live_kib(node, "temp1") == 256 * MIB


def test_config_above_max_fails_with_libvirts_text(node, monkeypatch):
    result = run(monkeypatch, name="off1", memory_mib=1024, config=True)
    assert result["failed"]
    assert result["msg"] == ("Cannot set the persistent memory of guest 'off1' to 1048576 KiB: "
                             "invalid argument: cannot set memory higher than max memory")
    assert config_kib(node, "off1") == 524288


def test_the_wait_lasts_until_libvirt_reports_the_new_size_too():
    # The balloon's actual is at the target at once; dom.info() (QEMU's events, at most one a second) follows two
    # reads later. The wait counts the target reached only then, so the next reader sees the new size.
    class Dom:
        reads = 0

        def memoryStats(self):
            return {"actual": 163840}

        def info(self):
            Dom.reads += 1
            return [1, 262144, 262144 if Dom.reads < 3 else 163840, 1, 0]

    class Client:
        def try_call(self, fn, *args):
            return fn(*args), None

        def call(self, _what, fn, *args):
            return fn(*args)

    dom, client = Dom(), Client()
    reached, value, _waited = balloon.wait_for_target(lambda: balloon.settled_kib(client, dom, 163840), 163840,
                                                      8 * MIB, 30, sleep=lambda s: None)
    assert reached and value == 163840 and Dom.reads == 3
