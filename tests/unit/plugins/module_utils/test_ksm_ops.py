# -*- coding: utf-8 -*-
# Copyright: autopilot.kvm contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""Unit tests of the KSM planner and writer, against a sysfs directory in tmp_path and a fake kernel."""

from __future__ import annotations

import errno
import os

import pytest

from ansible_collections.autopilot.kvm.plugins.module_utils import _ksm as k

# What /sys/kernel/mm/ksm holds on the lab's 6.18 kernel (trimmed)
SYSFS = {
    "run": "0", "pages_to_scan": "100", "sleep_millisecs": "20", "merge_across_nodes": "1",
    "advisor_mode": "[none] scan-time", "max_page_sharing": "256",
    "pages_shared": "0", "pages_sharing": "0", "pages_unshared": "0", "pages_volatile": "0",
    "full_scans": "0", "general_profit": "0", "pages_scanned": "0", "ksm_zero_pages": "0",
}


def make_sysfs(path, **values):
    os.makedirs(str(path), exist_ok=True)
    for name, value in dict(SYSFS, **dict((key, str(val)) for key, val in values.items())).items():
        with open(os.path.join(str(path), name), "w", encoding="ascii") as handle:
            handle.write(value + "\n")
    return str(path)


def read(path, name):
    with open(os.path.join(path, name), encoding="ascii") as handle:
        return handle.read().strip()


class FakeKernel(k.KsmSysfs):
    """Behaves like mm/ksm.c for the files the module writes.

    run=2 unmerges (pages_shared/pages_sharing drop to 0 after ``unmerge_reads`` reads of pages_shared);
    merge_across_nodes is refused with EBUSY while pages are shared, or while ksmd runs (it would
    merge again). Every write is recorded.
    """

    def __init__(self, path, unmerge_reads=0, fail=None):
        super().__init__(path, proc_dir=os.path.join(path, "no-proc"))
        self.writes = []
        self.unmerge_reads = unmerge_reads
        self.unmerging = False
        self.fail = fail or {}

    def read(self, name):
        if name == "pages_shared" and self.unmerging:
            if self.unmerge_reads <= 0:
                self._set("pages_shared", 0)
                self._set("pages_sharing", 0)
                self.unmerging = False
            self.unmerge_reads -= 1
        return super().read(name)

    def _set(self, name, value):
        with open(os.path.join(self.path, name), "w", encoding="ascii") as handle:
            handle.write("%d\n" % value)

    def write(self, name, value):
        self.writes.append("%s=%d" % (name, value))
        if (name, value) in self.fail:
            raise k.KsmError("Cannot write %d to %s: %s" % (value, name, os.strerror(self.fail[(name, value)])))
        if name == "merge_across_nodes" and (int(read(self.path, "pages_shared")) > 0
                                             or int(read(self.path, "run")) == 1):
            target = os.path.join(self.path, name)
            raise k.KsmError("Cannot write %d to %s: %s" % (value, target, os.strerror(errno.EBUSY)))
        if name == "run" and value == 2:
            self.unmerging = True
        super().write(name, value)


def test_desired_values():
    assert k.desired_values() == {}
    assert k.desired_values("merge", 5000, 10, False) == {
        "run": 1, "pages_to_scan": 5000, "sleep_millisecs": 10, "merge_across_nodes": 0}
    assert k.desired_values(run="unmerge") == {"run": 2}
    with pytest.raises(k.KsmError, match="run must be one of merge, stop, unmerge"):
        k.desired_values(run="1")
    with pytest.raises(k.KsmError, match="pages_to_scan must not be negative"):
        k.desired_values(pages_to_scan=-1)


def settings(**values):
    base = {"run": 0, "pages_to_scan": 100, "sleep_millisecs": 20, "merge_across_nodes": 1}
    base.update(values)
    return base


def test_plan_nothing_to_do():
    tracker, steps = k.plan(settings(), 0, {"run": 0, "pages_to_scan": 100, "merge_across_nodes": 1})
    assert not tracker.changed
    assert steps == []
    assert tracker.diff()["before"] == {"run": "stop", "pages_to_scan": 100, "merge_across_nodes": True}


def test_plan_turn_on_writes_scan_settings_before_run():
    tracker, steps = k.plan(settings(), 0, {"run": 1, "pages_to_scan": 5000, "sleep_millisecs": 20})
    assert tracker.changes() == ["run", "pages_to_scan"]
    assert steps == [("write", "pages_to_scan", 5000), ("write", "run", 1)]
    assert tracker.diff() == {
        "before": {"run": "stop", "pages_to_scan": 100, "sleep_millisecs": 20},
        "after": {"run": "merge", "pages_to_scan": 5000, "sleep_millisecs": 20},
    }


def test_plan_merge_across_nodes_while_running_unmerges_first_and_restores_run():
    tracker, steps = k.plan(settings(run=1), 500, {"merge_across_nodes": 0})
    assert tracker.diff() == {"before": {"merge_across_nodes": True}, "after": {"merge_across_nodes": False}}
    assert steps == [("write", "run", 2), ("wait_unmerged",), ("write", "merge_across_nodes", 0), ("write", "run", 1)]


def test_plan_merge_across_nodes_when_stopped_with_shared_pages():
    _tracker, steps = k.plan(settings(run=0), 12, {"merge_across_nodes": 0, "run": 1})
    assert steps == [("write", "run", 2), ("wait_unmerged",), ("write", "merge_across_nodes", 0), ("write", "run", 1)]


def test_plan_merge_across_nodes_when_idle_is_a_single_write():
    _tracker, steps = k.plan(settings(run=0), 0, {"merge_across_nodes": 0})
    assert steps == [("write", "merge_across_nodes", 0)]
    _tracker, steps = k.plan(settings(run=2), 0, {"merge_across_nodes": 0, "run": 1})
    assert steps == [("write", "merge_across_nodes", 0), ("write", "run", 1)]


def test_plan_requested_unmerge_with_merge_across_nodes_ends_unmerged():
    _tracker, steps = k.plan(settings(run=1), 3, {"merge_across_nodes": 0, "run": 2})
    assert steps == [("write", "run", 2), ("wait_unmerged",), ("write", "merge_across_nodes", 0)]


def test_plan_without_merge_across_nodes_on_this_kernel():
    current = settings()
    del current["merge_across_nodes"]
    with pytest.raises(k.KsmError, match="no merge_across_nodes"):
        k.plan(current, 0, {"merge_across_nodes": 0})
    assert k.plan(current, 0, {"run": 1})[1] == [("write", "run", 1)]


def test_counters_and_user_settings(tmp_path):
    facts = k.KsmSysfs(make_sysfs(tmp_path / "ksm", pages_sharing=42)).facts()
    assert k.counters(facts) == {"pages_shared": 0, "pages_sharing": 42, "pages_unshared": 0, "pages_volatile": 0,
                                 "full_scans": 0, "general_profit": 0}
    assert k.user_settings(facts["settings"]) == {
        "run": "stop", "pages_to_scan": 100, "sleep_millisecs": 20, "merge_across_nodes": True}
    os.remove(str(tmp_path / "ksm" / "general_profit"))
    assert "general_profit" not in k.counters(k.KsmSysfs(str(tmp_path / "ksm")).facts())


def test_sysfs_write_and_error(tmp_path):
    sysfs = k.KsmSysfs(make_sysfs(tmp_path / "ksm"))
    sysfs.write("pages_to_scan", 5000)
    assert read(sysfs.path, "pages_to_scan") == "5000"
    assert sysfs.read("pages_to_scan") == 5000
    with pytest.raises(k.KsmError, match=r"Cannot write 1 to .*/nodir/run: No such file or directory"):
        k.KsmSysfs(str(tmp_path / "nodir")).write("run", 1)
    with pytest.raises(k.KsmError, match="Cannot read KSM's run"):
        k.KsmSysfs(str(tmp_path / "nodir")).read("run")


def test_the_fake_kernel_refuses_the_naive_order(tmp_path):
    """Writing merge_across_nodes directly while pages are shared fails: the order matters."""
    kernel = FakeKernel(make_sysfs(tmp_path / "ksm", run=1, pages_shared=300, pages_sharing=2000))
    with pytest.raises(k.KsmError, match="Device or resource busy"):
        k.apply(kernel, [("write", "merge_across_nodes", 0)], original_run=1)


def test_apply_unmerges_then_writes_merge_across_nodes_then_restores_run(tmp_path):
    path = make_sysfs(tmp_path / "ksm", run=1, pages_shared=300, pages_sharing=2000)
    kernel = FakeKernel(path, unmerge_reads=2)
    _tracker, steps = k.plan(kernel.facts()["settings"], 300, {"merge_across_nodes": 0})
    clock = [0.0]
    done, waited = k.apply(kernel, steps, original_run=1, sleep=lambda s: clock.__setitem__(0, clock[0] + s),
                           clock=lambda: clock[0])
    assert kernel.writes == ["run=2", "merge_across_nodes=0", "run=1"]
    assert done == ["run=2", "wait until pages_shared=0", "merge_across_nodes=0", "run=1"]
    assert waited == pytest.approx(0.4)
    assert (read(path, "run"), read(path, "merge_across_nodes"), read(path, "pages_shared")) == ("1", "0", "0")


def test_unmerge_timeout_puts_run_back(tmp_path):
    path = make_sysfs(tmp_path / "ksm", run=1, pages_shared=300)
    kernel = FakeKernel(path, unmerge_reads=10 ** 6)
    _tracker, steps = k.plan(kernel.facts()["settings"], 300, {"merge_across_nodes": 0})
    clock = [0.0]
    with pytest.raises(k.KsmError) as caught:
        k.apply(kernel, steps, original_run=1, timeout=3,
                sleep=lambda s: clock.__setitem__(0, clock[0] + s), clock=lambda: clock[0])
    message = str(caught.value)
    assert "still shares 300 pages 3.0 s after run=2" in message
    assert "done: run=2" in message
    assert "run was put back to 1" in message
    assert kernel.writes == ["run=2", "run=1"]
    assert read(path, "merge_across_nodes") == "1"


def test_failed_write_after_unmerge_says_what_state_is_left(tmp_path):
    path = make_sysfs(tmp_path / "ksm", run=1, pages_shared=5)
    kernel = FakeKernel(path, fail={("merge_across_nodes", 0): errno.EPERM, ("run", 1): errno.EINVAL})
    _tracker, steps = k.plan(kernel.facts()["settings"], 5, {"merge_across_nodes": 0})
    with pytest.raises(k.KsmError) as caught:
        k.apply(kernel, steps, original_run=1)
    message = str(caught.value)
    assert "Cannot write 0 to merge_across_nodes: Operation not permitted" in message
    assert "run stays 2 (unmerged and stopped): Cannot write 1 to run: Invalid argument" in message
