# -*- coding: utf-8 -*-
# Copyright: autopilot.kvm contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""KSM settings through sysfs for autopilot.kvm.ksm (PRIVATE to the collection: the API may change).

Reading reuses the host fact reader (_host_facts.read_ksm). Planning is pure: it turns the
current settings and the request into a DifferenceTracker and an ordered list of steps.
Applying runs the steps against a KsmSysfs, which unit tests can replace with a fake kernel.

Write order. The kernel refuses to change ``merge_across_nodes`` (EBUSY) while any page is
shared, and a running ksmd may merge pages again at any moment. So when merge_across_nodes must
change and ksmd runs or pages are shared, the steps are: ``run=2`` (unmerge every page and stop
ksmd), wait until ``pages_shared`` is 0, write ``merge_across_nodes``, then write the requested
``run`` (or put back the one found). ``pages_to_scan`` and ``sleep_millisecs`` go first: they can
change at any time, and ksmd then starts with them.
"""

from __future__ import annotations

import os
import time

from ansible_collections.autopilot.kvm.plugins.module_utils._difference import DifferenceTracker
from ansible_collections.autopilot.kvm.plugins.module_utils._host_facts import (
    KSM_DIR,
    PROC_DIR,
    HostFactsError,
    parse_ksm_value,
    read_ksm,
    read_text,
)

RUN_MODES = {"stop": 0, "merge": 1, "unmerge": 2}
RUN_NAMES = dict((value, key) for key, value in RUN_MODES.items())
SETTINGS = ("run", "pages_to_scan", "sleep_millisecs", "merge_across_nodes")
COUNTERS = ("pages_shared", "pages_sharing", "pages_unshared", "pages_volatile", "full_scans", "general_profit")

DEFAULT_TIMEOUT = 60
POLL_INTERVAL = 0.2


class KsmError(Exception):
    """A KSM file could not be read or written, or unmerging did not finish."""


class KsmSysfs:
    """The KSM sysfs directory (``/sys/kernel/mm/ksm``, or a test directory)."""

    def __init__(self, path=KSM_DIR, proc_dir=PROC_DIR):
        self.path = path
        self.proc_dir = proc_dir

    def available(self):
        return os.path.isdir(self.path)

    def has(self, name):
        return os.path.isfile(os.path.join(self.path, name))

    def read(self, name):
        try:
            return parse_ksm_value(read_text(os.path.join(self.path, name), "KSM's %s" % name))
        except HostFactsError as error:
            raise KsmError(str(error))

    def write(self, name, value):
        path = os.path.join(self.path, name)
        try:
            with open(path, "w", encoding="ascii") as handle:
                handle.write("%d\n" % value)
        except OSError as error:
            raise KsmError("Cannot write %d to %s: %s" % (value, path, error.strerror or error))

    def facts(self):
        """host.ksm as host_info reports it (settings, counters, ksmd)."""
        return read_ksm(self.path, self.proc_dir)


def counters(facts):
    """The counters the module returns (general_profit only where the kernel has it)."""
    found = facts.get("counters", {})
    return dict((name, found[name]) for name in COUNTERS if name in found)


def user_settings(settings):
    """The four managed settings as the module's options spell them (run by name, merge_across_nodes bool)."""
    result = {}
    for name in SETTINGS:
        value = settings.get(name)
        if name == "run":
            value = RUN_NAMES.get(value, value)
        elif name == "merge_across_nodes" and value is not None:
            value = bool(value)
        result[name] = value
    return result


def desired_values(run=None, pages_to_scan=None, sleep_millisecs=None, merge_across_nodes=None):
    """The requested settings as the integers sysfs takes; options left unset are not managed."""
    wanted = {}
    if run is not None:
        if run not in RUN_MODES:
            raise KsmError("run must be one of %s, got %r" % (", ".join(sorted(RUN_MODES)), run))
        wanted["run"] = RUN_MODES[run]
    for name, value in (("pages_to_scan", pages_to_scan), ("sleep_millisecs", sleep_millisecs)):
        if value is not None:
            if value < 0:
                raise KsmError("%s must not be negative, got %s" % (name, value))
            wanted[name] = int(value)
    if merge_across_nodes is not None:
        wanted["merge_across_nodes"] = int(bool(merge_across_nodes))
    return wanted


def plan(settings, shared, wanted):
    """``(tracker, steps)`` taking the KSM ``settings`` (sysfs integers) to ``wanted``.

    ``shared`` is the current pages_shared. Steps are ``('write', name, value)`` and
    ``('wait_unmerged',)``, in the order the kernel needs (see the module docstring).
    """
    missing = [name for name in wanted if name not in settings]
    if missing:
        raise KsmError("This kernel's KSM has no %s (merge_across_nodes exists only on kernels built with NUMA "
                       "support)" % ", ".join(missing))
    tracker = DifferenceTracker()
    before = user_settings(settings)
    after = user_settings(dict(settings, **wanted))
    for name in SETTINGS:
        if name in wanted:
            tracker.add(name, before[name], after[name])

    steps = []
    for name in ("pages_to_scan", "sleep_millisecs"):
        if name in wanted and wanted[name] != settings[name]:
            steps.append(("write", name, wanted[name]))
    run_now = settings["run"]
    final_run = wanted.get("run", run_now)
    if "merge_across_nodes" in wanted and wanted["merge_across_nodes"] != settings["merge_across_nodes"]:
        if run_now == RUN_MODES["merge"] or (shared or 0) > 0:
            steps.append(("write", "run", RUN_MODES["unmerge"]))
            steps.append(("wait_unmerged",))
            run_now = RUN_MODES["unmerge"]
        steps.append(("write", "merge_across_nodes", wanted["merge_across_nodes"]))
    if final_run != run_now:
        steps.append(("write", "run", final_run))
    return tracker, steps


def describe(step):
    """A step as text for the ``actions`` return value."""
    if step[0] == "wait_unmerged":
        return "wait until pages_shared=0"
    return "%s=%d" % (step[1], step[2])


def wait_unmerged(sysfs, timeout, sleep=time.sleep, clock=time.monotonic, interval=POLL_INTERVAL):
    """Wait until pages_shared is 0; returns the seconds waited, raises KsmError on timeout."""
    started = clock()
    while True:
        shared = sysfs.read("pages_shared")
        waited = clock() - started
        if shared == 0:
            return round(waited, 2)
        if waited >= timeout:
            raise KsmError("KSM still shares %s pages %s s after run=2 (unmerge); merge_across_nodes was not changed"
                           % (shared, round(waited, 2)))
        sleep(min(interval, max(timeout - waited, 0.01)))


def apply(sysfs, steps, original_run, timeout=DEFAULT_TIMEOUT, sleep=time.sleep, clock=time.monotonic):
    """Run ``steps``; returns ``(done, unmerge_wait_s)``.

    A failure after KSM was stopped to unmerge puts ``run`` back to ``original_run`` (best effort)
    and says so in the KsmError's message, with the steps already done.
    """
    done = []
    waited = None
    stopped = False
    for step in steps:
        try:
            if step[0] == "wait_unmerged":
                waited = wait_unmerged(sysfs, timeout, sleep=sleep, clock=clock)
            else:
                sysfs.write(step[1], step[2])
                if step[1] == "run" and step[2] == RUN_MODES["unmerge"]:
                    stopped = True
        except KsmError as error:
            message = "%s (done: %s)" % (error, ", ".join(done) or "nothing")
            if stopped and original_run != RUN_MODES["unmerge"]:
                try:
                    sysfs.write("run", original_run)
                    message += "; run was put back to %d" % original_run
                except KsmError as restore_error:
                    message += "; run stays 2 (unmerged and stopped): %s" % restore_error
            raise KsmError(message)
        done.append(describe(step))
    return done, waited
