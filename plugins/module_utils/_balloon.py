# -*- coding: utf-8 -*-
# Copyright: autopilot.kvm contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""Balloon arithmetic and safety rules for autopilot.kvm.balloon (PRIVATE to the collection).

Everything here is pure (no libvirt): the module reads the guest, these functions decide.
All sizes are KiB, as libvirt counts them.

Which memoryStats() key means what (virtio-balloon, see virDomainMemoryStatTags):

- ``actual``: the memory the guest has now (the balloon's current value);
- ``available``: the guest's MemTotal (``actual`` minus what the guest kernel reserved);
- ``usable``: the guest's MemAvailable, what it can give up without swapping or OOM;
- ``unused``: the guest's MemFree (page cache counts as used: a conservative fallback).

So what the guest uses, on the ``actual`` scale, is ``actual - usable`` (or ``actual - unused``
when the guest does not report ``usable``). ``actual - available`` would only be the kernel's
reservation, not what the guest uses.
"""

from __future__ import annotations

import time
import xml.etree.ElementTree as ET

from ansible_collections.autopilot.kvm.plugins.module_utils._difference import DifferenceTracker
from ansible_collections.autopilot.kvm.plugins.module_utils._host_facts import HostFactsError, to_kib

MIB = 1024  # KiB in a MiB

DEFAULT_TOLERANCE_MIB = 8
DEFAULT_USED_MARGIN_MIB = 32
DEFAULT_TIMEOUT = 60
POLL_INTERVAL = 0.25


class BalloonError(Exception):
    """The requested balloon change is refused or failed; the message carries the numbers."""


def mib(kib):
    """KiB as MiB for messages (one decimal when not whole)."""
    if kib is None:
        return None
    value = kib / float(MIB)
    return int(value) if value == int(value) else round(value, 1)


def target_kib(memory_mib=None, memory_kib=None):
    """The requested size in KiB from exactly one of ``memory_mib`` and ``memory_kib``."""
    if (memory_mib is None) == (memory_kib is None):
        raise BalloonError("Give exactly one of memory_mib and memory_kib")
    value = memory_kib if memory_kib is not None else memory_mib * MIB
    if value <= 0:
        raise BalloonError("The target memory must be positive, got %s KiB" % value)
    return value


def within(current, target, tolerance):
    """Whether ``current`` is within ``tolerance`` (KiB) of ``target``."""
    return current is not None and abs(current - target) <= tolerance


def used_memory(stats):
    """``(used_kib, rule)`` from memoryStats(), or ``(None, why)`` when it cannot be known.

    used = actual - usable (guest MemAvailable), else actual - unused (guest MemFree). A guest cannot have
    more available than its balloon holds: such figures predate the last balloon change (``actual`` moves
    at once, the guest reports every stats period), so what it uses is not known yet.
    """
    stats = stats or {}
    actual = stats.get("actual")
    if actual is None:
        return None, "the guest reports no balloon statistics (no 'actual' value)"
    for key, rule in (("usable", "actual - usable (guest MemAvailable)"),
                      ("unused", "actual - unused (guest MemFree)")):
        value = stats.get(key)
        if value is not None and value > actual:
            return None, ("the guest's statistics predate its last balloon change ('%s' %d KiB is more than the "
                          "balloon's %d KiB; it reports every stats period)" % (key, value, actual))
        if value is not None:
            return actual - value, rule
    return None, ("the guest reports neither 'usable' nor 'unused' memory statistics (is the balloon "
                  "driver loaded and <memballoon><stats period='N'/> set?)")


def parse_config_memory(xml_text):
    """``(current_kib, max_kib)`` of a domain's (inactive) XML; current defaults to max."""
    try:
        root = ET.fromstring(xml_text)
    except ET.ParseError as error:
        raise BalloonError("Cannot parse the guest's XML: %s" % error)

    def read(tag):
        element = root.find(tag)
        if element is None or not (element.text or "").strip():
            return None
        try:
            return to_kib(element.text.strip(), element.get("unit"))
        except (HostFactsError, ValueError) as error:
            raise BalloonError("Cannot read <%s> of the guest's XML: %s" % (tag, error))

    maximum = read("memory")
    current = read("currentMemory")
    return (current if current is not None else maximum), maximum


def check_request(target, max_kib, guaranteed_kib=None, live_kib=None, stats=None,
                  used_margin_kib=DEFAULT_USED_MARGIN_MIB * MIB, force=False, shrink_live=False):
    """Refuse a target below the guaranteed memory, above the maximum, or below what the guest uses.

    ``shrink_live`` says whether the live balloon would be inflated (the only case in which what the
    guest uses matters). Returns ``{'used_kib', 'used_rule', 'floor_kib', 'warnings'}``; raises
    BalloonError with the numbers when the request is refused.
    """
    info = {"used_kib": None, "used_rule": None, "floor_kib": guaranteed_kib, "warnings": []}
    if guaranteed_kib is not None and target < guaranteed_kib:
        raise BalloonError(
            "Refusing to set the memory to %s MiB (%d KiB): below the guest's guaranteed %s MiB (%d KiB)"
            % (mib(target), target, mib(guaranteed_kib), guaranteed_kib))
    if max_kib is not None and target > max_kib:
        raise BalloonError(
            "Cannot set the memory to %s MiB (%d KiB): higher than the guest's max memory %s MiB (%d KiB)"
            % (mib(target), target, mib(max_kib), max_kib))
    if not shrink_live:
        return info
    used, rule = used_memory(stats)
    if used is None:
        if not force:
            raise BalloonError(
                "Refusing to shrink the guest from %s MiB to %s MiB: %s, so what it uses cannot be checked "
                "(set force: true to shrink anyway)" % (mib(live_kib), mib(target), rule))
        info["warnings"].append("Shrinking without knowing what the guest uses: %s (force: true)" % rule)
        return info
    info["used_kib"], info["used_rule"] = used, rule
    needed = used + used_margin_kib
    info["floor_kib"] = max(needed, guaranteed_kib or 0)
    if target < needed:
        raise BalloonError(
            "Refusing to shrink the guest from %s MiB to %s MiB: it uses %s MiB (%s = %d KiB) and needs "
            "%s MiB with the %s MiB margin (used_margin_mib)"
            % (mib(live_kib), mib(target), mib(used), rule, used, mib(needed), mib(used_margin_kib)))
    return info


def plan(target, tolerance, live_kib=None, config_kib=None, want_config=False):
    """What to change: ``(tracker, set_live, set_config)``.

    ``live_kib`` is None for a guest that is not running. The live value counts as reached when it
    is within ``tolerance``; the persistent value (``currentMemory``) is exact and only looked at
    when ``want_config``.
    """
    tracker = DifferenceTracker()
    set_live = live_kib is not None and not within(live_kib, target, tolerance)
    if live_kib is not None:
        tracker.add("memory_kib", live_kib, target if set_live else live_kib)
    set_config = bool(want_config) and config_kib != target
    if want_config:
        tracker.add("config_memory_kib", config_kib, target)
    return tracker, set_live, set_config


def wait_for_target(read_actual, target, tolerance, timeout, sleep=time.sleep, clock=time.monotonic,
                    interval=POLL_INTERVAL):
    """Poll ``read_actual()`` until it is within ``tolerance`` of ``target``.

    Returns ``(reached, last_value, waited_seconds)``; never raises for a timeout.
    """
    started = clock()
    while True:
        value = read_actual()
        waited = clock() - started
        if within(value, target, tolerance):
            return True, value, round(waited, 2)
        if waited >= timeout:
            return False, value, round(waited, 2)
        sleep(min(interval, max(timeout - waited, 0.01)))
