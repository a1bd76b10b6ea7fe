# -*- coding: utf-8 -*-
# Copyright: autopilot.kvm contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""autopilot.kvm.ksm against a KSM sysfs directory in tmp_path (sysfs_path)."""

from __future__ import annotations

import errno
import os

from ansible_collections.autopilot.kvm.plugins.module_utils import _ksm
from ansible_collections.autopilot.kvm.plugins.modules import ksm

from .module_runner import run_module

SYSFS = {
    "run": "0", "pages_to_scan": "100", "sleep_millisecs": "20", "merge_across_nodes": "1",
    "advisor_mode": "[none] scan-time",
    "pages_shared": "0", "pages_sharing": "0", "pages_unshared": "0", "pages_volatile": "0",
    "full_scans": "3", "general_profit": "0", "pages_scanned": "0",
}


def make_sysfs(tmp_path, **values):
    path = tmp_path / "ksm"
    path.mkdir()
    for name, value in dict(SYSFS, **dict((key, str(val)) for key, val in values.items())).items():
        (path / name).write_text(value + "\n", encoding="ascii")
    return str(path)


def snapshot(path):
    return dict((name, open(os.path.join(path, name), encoding="ascii").read().strip()) for name in sorted(os.listdir(path)))


def run(monkeypatch, path, check_mode=False, diff=True, **args):
    args["sysfs_path"] = path
    return run_module(monkeypatch, ksm.main, args, check_mode=check_mode, diff=diff)


def test_check_mode_reports_and_writes_nothing(tmp_path, monkeypatch):
    path = make_sysfs(tmp_path)
    before = snapshot(path)
    result = run(monkeypatch, path, check_mode=True, run="merge", pages_to_scan=5000, sleep_millisecs=10)
    assert not result.get("failed"), result
    assert result["changed"] is True
    assert result["diff"] == {
        "before": {"run": "stop", "pages_to_scan": 100, "sleep_millisecs": 20},
        "after": {"run": "merge", "pages_to_scan": 5000, "sleep_millisecs": 10},
    }
    assert result["ksm"]["actions"] == ["pages_to_scan=5000", "sleep_millisecs=10", "run=1"]
    assert result["ksm"]["settings_after"]["run"] == "merge"
    assert snapshot(path) == before


def test_real_run_writes_and_repeat_is_unchanged(tmp_path, monkeypatch):
    path = make_sysfs(tmp_path)
    result = run(monkeypatch, path, run="merge", pages_to_scan=5000, sleep_millisecs=10)
    assert result["changed"] is True
    assert result["ksm"]["actions"] == ["pages_to_scan=5000", "sleep_millisecs=10", "run=1"]
    assert result["ksm"]["settings_before"] == {"run": "stop", "pages_to_scan": 100, "sleep_millisecs": 20,
                                                "merge_across_nodes": True}
    assert result["ksm"]["settings_after"] == {"run": "merge", "pages_to_scan": 5000, "sleep_millisecs": 10,
                                               "merge_across_nodes": True}
    assert result["ksm"]["counters_before"]["full_scans"] == 3
    assert set(result["ksm"]["counters_after"]) == {"pages_shared", "pages_sharing", "pages_unshared",
                                                    "pages_volatile", "full_scans", "general_profit"}
    state = snapshot(path)
    assert (state["run"], state["pages_to_scan"], state["sleep_millisecs"]) == ("1", "5000", "10")

    again = run(monkeypatch, path, run="merge", pages_to_scan=5000, sleep_millisecs=10)
    assert again["changed"] is False
    assert again["ksm"]["actions"] == []
    assert again["diff"]["before"] == again["diff"]["after"]
    assert snapshot(path) == state


def test_unset_options_are_left_alone(tmp_path, monkeypatch):
    path = make_sysfs(tmp_path, run=1)
    result = run(monkeypatch, path, sleep_millisecs=50)
    assert result["changed"] is True
    assert result["diff"] == {"before": {"sleep_millisecs": 20}, "after": {"sleep_millisecs": 50}}
    assert snapshot(path)["run"] == "1"
    assert run(monkeypatch, path)["changed"] is False


def test_merge_across_nodes_unmerges_first_with_the_kernels_rules(tmp_path, monkeypatch):
    path = make_sysfs(tmp_path, run=1, pages_shared=100, pages_sharing=900)

    class Kernel(_ksm.KsmSysfs):
        writes = []

        def write(self, name, value):
            Kernel.writes.append((name, value))
            current = snapshot(self.path)
            if name == "merge_across_nodes" and (current["pages_shared"] != "0" or current["run"] == "1"):
                target = os.path.join(self.path, name)
                raise _ksm.KsmError("Cannot write %d to %s: %s" % (value, target, os.strerror(errno.EBUSY)))
            super().write(name, value)
            if name == "run" and value == 2:  # the kernel unmerges synchronously
                super().write("pages_shared", 0)
                super().write("pages_sharing", 0)

    monkeypatch.setattr(ksm, "KsmSysfs", Kernel)
    checked = run(monkeypatch, path, check_mode=True, merge_across_nodes=False)
    assert checked["changed"] is True
    assert checked["ksm"]["unmerged"] is True
    assert checked["ksm"]["actions"] == ["run=2", "wait until pages_shared=0", "merge_across_nodes=0", "run=1"]
    assert Kernel.writes == []

    result = run(monkeypatch, path, merge_across_nodes=False)
    assert not result.get("failed"), result
    assert Kernel.writes == [("run", 2), ("merge_across_nodes", 0), ("run", 1)]
    assert result["ksm"]["counters_before"]["pages_sharing"] == 900
    assert result["ksm"]["counters_after"]["pages_sharing"] == 0
    assert result["ksm"]["settings_after"]["merge_across_nodes"] is False
    assert result["ksm"]["settings_after"]["run"] == "merge"
    assert result["ksm"]["unmerge_wait_s"] >= 0
    assert result["diff"] == {"before": {"merge_across_nodes": True}, "after": {"merge_across_nodes": False}}
    assert run(monkeypatch, path, merge_across_nodes=False)["changed"] is False


def test_kernel_refusal_is_reported_with_its_text(tmp_path, monkeypatch):
    path = make_sysfs(tmp_path)

    def refuse(self, name, value):
        target = os.path.join(self.path, name)
        raise _ksm.KsmError("Cannot write %d to %s: %s" % (value, target, os.strerror(errno.EINVAL)))

    monkeypatch.setattr(_ksm.KsmSysfs, "write", refuse)
    result = run(monkeypatch, path, pages_to_scan=5000)
    assert result["failed"]
    assert result["msg"].startswith("Cannot write 5000 to %s/pages_to_scan: Invalid argument" % path)
    assert result["ksm"]["settings_before"]["pages_to_scan"] == 100


def test_no_ksm(tmp_path, monkeypatch):
    result = run(monkeypatch, str(tmp_path / "absent"), run="merge")
    assert result["failed"]
    assert "KSM is not available" in result["msg"]


def test_no_merge_across_nodes(tmp_path, monkeypatch):
    path = make_sysfs(tmp_path)
    os.remove(os.path.join(path, "merge_across_nodes"))
    result = run(monkeypatch, path, merge_across_nodes=False)
    assert result["failed"]
    assert "no merge_across_nodes" in result["msg"]
    result = run(monkeypatch, path, run="merge")
    assert result["changed"] is True
    assert result["ksm"]["settings_after"]["merge_across_nodes"] is None


def test_bad_arguments(tmp_path, monkeypatch):
    path = make_sysfs(tmp_path)
    assert "value of run must be one of" in run(monkeypatch, path, run="1")["msg"]
    assert "must not be negative" in run(monkeypatch, path, sleep_millisecs=-5)["msg"]
    assert "timeout must be a positive" in run(monkeypatch, path, run="stop", timeout=0)["msg"]
