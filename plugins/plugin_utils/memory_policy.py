# -*- coding: utf-8 -*-
# Copyright: autopilot.kvm contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""The memory policy: balloon targets and KSM settings for one host, from its facts.

Pure functions, controller side, stdlib only (no Ansible imports). The filter
``autopilot.kvm.memory_controls`` and the ``memory`` role's policy mode call it; a planner step
factory can call :func:`host_controls` (or :func:`balloon_controls` / :func:`ksm_controls`) directly.

Input: one entry of the facts role's ``facts_cluster`` (``{name, host: host_info's host, guests:
guest_info's guests, capacity: {memory_mib}, ...}``). Output: controls shaped like the apply role's
steps (``{kind: balloon, vm, host, target_mib, guaranteed_mib?}`` and ``{kind: ksm, host, enable,
pages_to_scan?, sleep_millisecs?}``) plus ``effect`` (MiB returned or saved), ``cost`` (risk, ksmd CPU)
and a ``reason``. Every number below has a name, a unit and a derivation; docs/memory-policy.md lists
them beside oVirt MoM's (vdsm 02-balloon.policy / 03-ksm.policy) defaults and says where ours differ.

Units: memory in MiB (integers, rounded down from KiB), fractions in [0, 1], time in seconds unless a
name says ``_MS``. Deterministic: guests are visited in name order and no clock is read.
"""

from __future__ import annotations

import math
import numbers
import re

# ---------------------------------------------------------------- units
# KiB in one MiB (binary units, as /proc/meminfo's "kB" and libvirt's KiB).
KIB_PER_MIB = 1024
# KiB in one base page: the unit of KSM's pages_* counters and of pages_to_scan (x86-64, aarch64 4K).
PAGE_SIZE_KIB = 4

# ---------------------------------------------------------------- host pressure
# Free fraction (free MiB / size MiB, the binding view) below which the host is under pressure and
# balloons shrink. MoM: pressure_threshold 0.20 (same value).
PRESSURE_FREE_FRACTION = 0.20
# Free fraction below which pressure is critical: the per-run shrink bound is multiplied by
# CRITICAL_RATE_FACTOR. MoM: pressure_critical 0.05 (same value; MoM instead makes the guest free
# percent negative, forcing guests to swap - we never go below used + margin).
CRITICAL_FREE_FRACTION = 0.05
# Free fraction the host is brought back to when it shrinks balloons, and above which balloons may grow
# back (only with the memory above it). The band between PRESSURE and RELIEF holds (no change):
# hysteresis of 0.10 of the host. MoM has none (grows as soon as free >= 0.20, so it oscillates).
RELIEF_FREE_FRACTION = 0.30
# Multiplier of the per-run shrink bound under critical pressure (dimensionless): two runs' worth.
CRITICAL_RATE_FACTOR = 2

# ---------------------------------------------------------------- balloon
# Share of the guest's maximum memory kept free above what it uses when it is shrunk, at the pressure
# threshold; scaled down linearly to 0 as the host's free fraction goes to 0 (vdsm's scaling).
# MoM: min_guest_free_percent 0.20 of balloon_cur; ours is of max memory, so the floor does not creep
# down as the balloon shrinks.
GUEST_FREE_FRACTION = 0.20
# Headroom (MiB) always kept above what the guest uses: the autopilot.kvm.balloon module's own
# used_margin_mib default, so a target we choose is never refused by the module. MoM has no floor.
USED_MARGIN_MIB = 32
# Most a balloon shrinks in one run, as a share of the guest's maximum memory. MoM: 0.05 of balloon_cur
# per 15 s tick; our runs are minutes apart, so 0.25 (a guest reaches any floor in <= 4 runs and its
# statistics are re-read between steps).
SHRINK_FRACTION_PER_RUN = 0.25
# Most a balloon grows in one run, as a share of the guest's maximum memory. MoM: 0.05 of balloon_cur per
# tick (geometric: slow from a small balloon); ours is linear in max, back to max in <= 4 runs.
GROW_FRACTION_PER_RUN = 0.25
# Smallest balloon change worth making, MiB: twice the balloon module's 8 MiB tolerance, so a chosen
# change is never one the module would count as already reached.
MIN_CHANGE_MIB = 16
# Smallest balloon change worth making as a share of max memory (2 % of a 16 GiB guest = 328 MiB).
# MoM: min_balloon_change_percent 0.0025 of balloon_cur (2.6 MiB of 1 GiB: below the balloon's tolerance).
MIN_CHANGE_FRACTION = 0.02
# How far (MiB) below its guarantee a balloon may be before it is grown back to it: the balloon module's
# tolerance_mib default.
BALLOON_TOLERANCE_MIB = 8

# ---------------------------------------------------------------- KSM
# KSM is switched on when the host's free fraction drops below this. MoM: ksm_free_percent 0.20.
KSM_ON_FREE_FRACTION = 0.20
# KSM is switched off when the free fraction is at or above this; between the two it keeps its state
# (hysteresis). MoM switches on and off at the same 0.20.
KSM_OFF_FREE_FRACTION = 0.30
# Seconds one full pass of ksmd over the guests' memory should take while KSM runs: the scan rate
# needed is guest pages / this. 600 s is the kernel default rate's pass over 12 GiB (5000 pages/s) and
# lies inside MoM's range for 16 GiB (33 s at 1250 pages/10 ms .. 655 s at 64 pages/10 ms).
KSM_FULL_SCAN_S = 600
# Sleep between ksmd batches, ms, used when the rate fits [KSM_PAGES_MIN, KSM_PAGES_MAX] pages per batch:
# the kernel default. MoM: 10 ms for 16 GiB, scaled as 10 * 16 GiB / MemTotal.
KSM_SLEEP_MS = 20
# Shortest sleep, ms (MoM's max(10, ...) floor).
KSM_SLEEP_MIN_MS = 10
# Longest sleep, ms: one batch a second is the slowest useful ksmd.
KSM_SLEEP_MAX_MS = 1000
# Fewest pages per batch (MoM: ksm_npages_min 64).
KSM_PAGES_MIN = 64
# Most pages per batch (MoM: ksm_npages_max 1250); with KSM_SLEEP_MIN_MS this caps the rate at
# 125000 pages/s (488 MiB/s).
KSM_PAGES_MAX = 1250
# ksmd CPU budget, as a fraction of one core (ksmd is one kernel thread): the scan rate is cut to what
# fits. MoM measures ksmd_cpu_usage but never bounds it.
KSMD_CPU_BUDGET = 0.10
# ksmd CPU seconds per page scanned, assumed when it cannot be measured: ksmd near 100 % of a core at
# MoM's ceiling of 125000 pages/s (the reports in PLANNERS.md 4.6) gives 8 microseconds per page.
KSMD_ASSUMED_S_PER_PAGE = 8e-6
# A running ksmd's settings change only when the rate they give differs from the wanted rate by more
# than this fraction (avoids rewriting sysfs every run for a few pages).
KSM_RATE_TOLERANCE = 0.25
# Share of guest memory KSM is assumed to save when nothing is measured: the planner's
# KSM_SHARE_FRACTION (the low end of published savings, ~10 % for mixed guests).
KSM_ASSUMED_SHARE_FRACTION = 0.10
# Full scans after which the measured sharing is trusted to say whether KSM is worth it.
KSM_MIN_FULL_SCANS = 2
# KSM is not worth its CPU when, after KSM_MIN_FULL_SCANS full scans, it saves less than this share of
# the guests' memory.
KSM_MIN_SAVING_FRACTION = 0.01

# Guests in these states occupy host memory (as cluster_document.RUNNING_STATES).
RUNNING_STATES = ("running", "paused", "blocked", "pmsuspended")
# Only these can move their balloon (a paused guest's driver does not run).
BALLOON_STATES = ("running", "blocked")

NUMA_POLICIES = ("auto", "merge", "node_local", "leave")
PRESSURE_SOURCES = ("both", "meminfo", "capacity")
MODES = ("policy", "candidates")

DEFAULT_OPTIONS = {
    "mode": "policy",
    "pressure_source": "both",
    "pressure_free_fraction": PRESSURE_FREE_FRACTION,
    "critical_free_fraction": CRITICAL_FREE_FRACTION,
    "relief_free_fraction": RELIEF_FREE_FRACTION,
    "critical_rate_factor": CRITICAL_RATE_FACTOR,
    "balloon_enabled": True,
    "guest_free_fraction": GUEST_FREE_FRACTION,
    "used_margin_mib": USED_MARGIN_MIB,
    "shrink_fraction_per_run": SHRINK_FRACTION_PER_RUN,
    "grow_fraction_per_run": GROW_FRACTION_PER_RUN,
    "min_change_mib": MIN_CHANGE_MIB,
    "min_change_fraction": MIN_CHANGE_FRACTION,
    "ksm_enabled": True,
    "ksm_on_free_fraction": KSM_ON_FREE_FRACTION,
    "ksm_off_free_fraction": KSM_OFF_FREE_FRACTION,
    "ksm_full_scan_s": KSM_FULL_SCAN_S,
    "ksmd_cpu_budget": KSMD_CPU_BUDGET,
    "ksmd_assumed_s_per_page": KSMD_ASSUMED_S_PER_PAGE,
    "ksm_min_saving_fraction": KSM_MIN_SAVING_FRACTION,
    "numa_policy": "auto",
    "managed_guests": ".*",
}


class MemoryPolicyError(ValueError):
    """Bad options or facts; the message names the bad value."""


# ---------------------------------------------------------------- helpers

def _num(value, where, lo=None, hi=None):
    if isinstance(value, bool) or not isinstance(value, numbers.Number):
        raise MemoryPolicyError("%s must be a number, got %r" % (where, value))
    if (lo is not None and value < lo) or (hi is not None and value > hi):
        raise MemoryPolicyError("%s must be within [%s, %s], got %r" % (where, lo, hi, value))
    return value


def options_with_defaults(options=None):
    """The options merged over DEFAULT_OPTIONS and checked; unknown keys are an error."""
    options = dict(options or {})
    unknown = sorted(set(options) - set(DEFAULT_OPTIONS))
    if unknown:
        raise MemoryPolicyError("unknown memory policy option(s) %s; allowed: %s"
                                % (", ".join(unknown), ", ".join(sorted(DEFAULT_OPTIONS))))
    merged = dict(DEFAULT_OPTIONS)
    merged.update(dict((k, v) for k, v in options.items() if v is not None))
    choices = {"mode": MODES, "pressure_source": PRESSURE_SOURCES, "numa_policy": NUMA_POLICIES}
    for key, allowed in choices.items():
        if merged[key] not in allowed:
            raise MemoryPolicyError("option %s must be one of %s, got %r" % (key, ", ".join(allowed), merged[key]))
    if not isinstance(merged["managed_guests"], str):
        raise MemoryPolicyError("option managed_guests must be a regular expression, got %r" % (merged["managed_guests"],))
    try:
        re.compile(merged["managed_guests"])
    except re.error as error:
        raise MemoryPolicyError("option managed_guests is not a valid regular expression (%s): %r"
                                % (error, merged["managed_guests"]))
    for key in ("balloon_enabled", "ksm_enabled"):
        if not isinstance(merged[key], bool):
            raise MemoryPolicyError("option %s must be true or false, got %r" % (key, merged[key]))
    for key in ("pressure_free_fraction", "critical_free_fraction", "relief_free_fraction", "guest_free_fraction",
                "shrink_fraction_per_run", "grow_fraction_per_run", "min_change_fraction", "ksm_on_free_fraction",
                "ksm_off_free_fraction", "ksmd_cpu_budget", "ksm_min_saving_fraction"):
        _num(merged[key], "option " + key, 0, 1)
    for key in ("used_margin_mib", "min_change_mib", "critical_rate_factor"):
        _num(merged[key], "option " + key, 0)
    _num(merged["ksm_full_scan_s"], "option ksm_full_scan_s", 1)
    _num(merged["ksmd_assumed_s_per_page"], "option ksmd_assumed_s_per_page", 1e-9)
    if not merged["critical_free_fraction"] <= merged["pressure_free_fraction"] <= merged["relief_free_fraction"]:
        raise MemoryPolicyError("options need critical_free_fraction <= pressure_free_fraction <= relief_free_fraction, "
                                "got %r <= %r <= %r" % (merged["critical_free_fraction"], merged["pressure_free_fraction"],
                                                        merged["relief_free_fraction"]))
    if merged["ksm_on_free_fraction"] > merged["ksm_off_free_fraction"]:
        raise MemoryPolicyError("options need ksm_on_free_fraction <= ksm_off_free_fraction, got %r > %r"
                                % (merged["ksm_on_free_fraction"], merged["ksm_off_free_fraction"]))
    return merged


def _entry(host):
    """A facts_cluster entry from either an entry or host_info's bare ``host`` dict."""
    if not isinstance(host, dict):
        raise MemoryPolicyError("a host must be a facts_cluster entry (a mapping), got %r" % (host,))
    if isinstance(host.get("host"), dict):
        return host
    return {"host": host, "name": host.get("hostname")}


def _guests(entry, guests):
    if guests is None:
        guests = entry.get("guests") or {}
    if isinstance(guests, list):
        guests = dict((g.get("name"), g) for g in guests)
    if not isinstance(guests, dict):
        raise MemoryPolicyError("guests must be a mapping of name to guest_info facts, got %r" % (guests,))
    return guests


def _mib(kib):
    return None if kib is None else int(kib) // KIB_PER_MIB


def _pct(fraction):
    return "%.1f%%" % (100.0 * fraction)


def guest_used_mib(stats):
    """``(used_mib, rule)`` from a guest's balloon statistics (KiB), or ``(None, why)`` when missing.

    The same rule as the autopilot.kvm.balloon module (module_utils/_balloon.used_memory), so a target
    the policy picks is one the module accepts: used = actual - usable (the guest's MemAvailable), else
    actual - unused (its MemFree, which counts the page cache as used); figures above ``actual`` predate the
    last balloon change, so what the guest uses is not known yet.
    """
    stats = stats or {}
    actual = stats.get("actual")
    if actual is None:
        return None, "no balloon statistics (no 'actual' value)"
    for key, rule in (("usable", "actual - usable"), ("unused", "actual - unused")):
        value = stats.get(key)
        if value is not None and value > actual:
            return None, "stale balloon statistics ('%s' above 'actual': they predate the last balloon change)" % key
        if value is not None:
            return _mib(actual - value), rule
    return None, "the guest reports neither 'usable' nor 'unused' (balloon driver or <stats period> missing)"


def guest_memory_mib(guest):
    """MiB a running guest holds on its host: the balloon's actual size, else its current memory."""
    balloon = guest.get("balloon") or {}
    if balloon.get("actual"):
        return _mib(balloon["actual"])
    memory = guest.get("memory") or {}
    if memory.get("current_mib") is not None:
        return int(memory["current_mib"])
    return _mib(memory.get("current_kib")) or 0


def _max_mib(guest, actual_mib):
    memory = guest.get("memory") or {}
    if memory.get("max_mib") is not None:
        return int(memory["max_mib"])
    if memory.get("max_kib") is not None:
        return _mib(memory["max_kib"])
    return actual_mib


def guest_guarantees(guests, guarantees=None):
    """Guaranteed MiB per guest: ``guarantees`` (name -> MiB) and metadata ``memory_guarantee`` expectations
    (``min_mib``); when both name a guest the larger wins."""
    result = {}
    for name, value in sorted((guarantees or {}).items()):
        result[name] = int(_num(value, "guarantees.%s" % name, 0))
    for name, guest in sorted(guests.items()):
        for index, item in enumerate(guest.get("expectations") or []):
            if isinstance(item, dict) and item.get("type") == "memory_guarantee":
                value = int(_num(item.get("min_mib"), "guest %s expectations[%d].min_mib" % (name, index), 0))
                result[name] = max(result.get(name, 0), value)
    return result


# ---------------------------------------------------------------- pressure

def host_pressure(host, guests=None, options=None):
    """How short of memory the host is.

    Two views, each ``free_mib / size_mib``:

    - ``meminfo``: MemAvailable / MemTotal of the host's kernel;
    - ``capacity`` (only when ``capacity.memory_mib`` is declared): (declared capacity - memory held by
      running guests) / declared capacity, where a guest holds its balloon's ``actual`` (else its current
      memory) - the planner's own accounting (cluster_document).

    The lower fraction binds (``binding``). ``need_mib`` is what must be freed to bring every view back to
    the relief fraction; ``grow_budget_mib`` is what may be given back while every view stays at or above it.
    """
    opts = options_with_defaults(options)
    entry = _entry(host)
    guests = _guests(entry, guests)
    memory = (entry.get("host") or {}).get("memory") or {}
    views = {}
    source = opts["pressure_source"]
    if source in ("both", "meminfo") and memory.get("total_kib") and memory.get("available_kib") is not None:
        views["meminfo"] = {"size_mib": _mib(memory["total_kib"]), "free_mib": _mib(memory["available_kib"])}
    capacity = (entry.get("capacity") or {}).get("memory_mib")
    if source in ("both", "capacity") and capacity:
        capacity = int(_num(capacity, "capacity.memory_mib", 1))
        held = sum(guest_memory_mib(g) for _name, g in sorted(guests.items()) if g.get("state") in RUNNING_STATES)
        views["capacity"] = {"size_mib": capacity, "free_mib": capacity - held, "guests_mib": held}
    result = {"views": views, "binding": None, "free_fraction": None, "state": "unknown", "need_mib": 0,
              "grow_budget_mib": 0}
    if not views:
        result["reason"] = "no memory figures (neither /proc/meminfo facts nor a declared capacity)"
        return result
    for view in views.values():
        view["free_fraction"] = round(float(view["free_mib"]) / view["size_mib"], 4)
    binding = min(sorted(views), key=lambda name: views[name]["free_fraction"])
    fraction = views[binding]["free_fraction"]
    relief = opts["relief_free_fraction"]
    if fraction < opts["critical_free_fraction"]:
        state = "critical"
    elif fraction < opts["pressure_free_fraction"]:
        state = "pressure"
    elif fraction >= relief:
        state = "relief"
    else:
        state = "hold"
    need = max(int(math.ceil(round(relief * v["size_mib"] - v["free_mib"], 6))) for v in views.values())
    budget = min(int(math.floor(round(v["free_mib"] - relief * v["size_mib"], 6))) for v in views.values())
    result.update(binding=binding, free_fraction=fraction, state=state,
                  need_mib=max(need, 0) if state in ("pressure", "critical") else 0,
                  grow_budget_mib=max(budget, 0) if state == "relief" else 0)
    view = views[binding]
    result["reason"] = "%s view: %d MiB free of %d MiB (%s); %s" % (
        binding, view["free_mib"], view["size_mib"], _pct(fraction),
        {"critical": "below the critical %s" % _pct(opts["critical_free_fraction"]),
         "pressure": "below the pressure threshold %s" % _pct(opts["pressure_free_fraction"]),
         "hold": "between %s and %s: hold" % (_pct(opts["pressure_free_fraction"]), _pct(relief)),
         "relief": "at or above the relief threshold %s" % _pct(relief)}[state])
    return result


# ---------------------------------------------------------------- balloon

def _guest_figures(name, guest, guarantee, pressure, opts):
    """Per-guest numbers, or a skip reason."""
    state = guest.get("state")
    if state not in BALLOON_STATES:
        return None, "state %s: the balloon driver cannot act" % state
    balloon = guest.get("balloon") or {}
    if balloon.get("device") in ("none",):
        return None, "no balloon device"
    used, rule = guest_used_mib(balloon)
    if used is None:
        return None, "statistics missing: %s%s" % (rule, (" (%s)" % balloon["error"]) if balloon.get("error") else "")
    actual = _mib(balloon["actual"])
    maximum = max(_max_mib(guest, actual), actual)
    scale = 1.0
    if pressure["free_fraction"] is not None:
        scale = max(0.0, min(1.0, pressure["free_fraction"] / opts["pressure_free_fraction"])) \
            if opts["pressure_free_fraction"] else 1.0
    margin = max(int(opts["used_margin_mib"]), int(math.ceil(round(opts["guest_free_fraction"] * scale * maximum, 6))))
    floor = min(max(guarantee or 0, used + margin), maximum)
    min_change = max(int(opts["min_change_mib"]), int(math.ceil(round(opts["min_change_fraction"] * maximum, 6))))
    return {"vm": name, "actual_mib": actual, "max_mib": maximum, "used_mib": used, "used_rule": rule,
            "guaranteed_mib": guarantee, "margin_mib": margin, "floor_mib": floor, "min_change_mib": min_change}, None


def _risk(figures, target, opts):
    """Guest performance risk in [0, 1]: 0 while the margin above used memory is at least
    guest_free_fraction of max memory, rising linearly to 1 as that margin reaches 0."""
    full = opts["guest_free_fraction"] * figures["max_mib"]
    margin = target - figures["used_mib"]
    if full <= 0:
        return 0.0 if margin > 0 else 1.0
    return round(1.0 - max(0.0, min(1.0, margin / full)), 3)


def _balloon_control(host_name, figures, target, reason, opts, rss_mib=None):
    delta = figures["actual_mib"] - target
    control = {"kind": "balloon", "host": host_name, "vm": figures["vm"], "target_mib": int(target),
               "current_mib": figures["actual_mib"], "max_mib": figures["max_mib"], "used_mib": figures["used_mib"],
               "used_rule": figures["used_rule"], "floor_mib": figures["floor_mib"],
               "effect": {"memory_returned_mib": delta},
               "cost": {"risk": _risk(figures, target, opts) if delta > 0 else 0.0,
                        "margin_before_mib": figures["actual_mib"] - figures["used_mib"],
                        "margin_after_mib": int(target) - figures["used_mib"]},
               "reason": reason}
    if rss_mib is not None and delta > 0:
        # A guest page never touched is not resident on the host: shrinking frees at most what is resident.
        control["effect"]["resident_returned_mib_max"] = max(0, min(delta, rss_mib - int(target)))
    if figures["guaranteed_mib"] is not None:
        control["guaranteed_mib"] = figures["guaranteed_mib"]
    return control


def balloon_controls(host, guests=None, guarantees=None, options=None):
    """Balloon targets for the guests of one host.

    ``host``: a facts_cluster entry (or host_info's ``host``); ``guests``: guest_info's guests (default:
    the entry's); ``guarantees``: name -> guaranteed MiB (metadata ``memory_guarantee`` expectations are
    added). Returns ``{host, pressure, controls, unchanged, skipped}``; each control is an apply-role
    balloon step with ``effect.memory_returned_mib`` (negative when it grows), ``cost.risk`` and ``reason``.

    With ``options.mode = candidates`` host pressure is ignored: every guest gets its largest per-run
    shrink towards its floor, for a planner to weigh against migrations.
    """
    opts = options_with_defaults(options)
    entry = _entry(host)
    guests = _guests(entry, guests)
    name = entry.get("name")
    pressure = host_pressure(entry, guests, opts)
    owed = guest_guarantees(guests, guarantees)
    result = {"host": name, "pressure": pressure, "controls": [], "unchanged": [], "skipped": []}
    if not opts["balloon_enabled"]:
        result["unchanged"] = [{"vm": n, "reason": "ballooning disabled (balloon_enabled: false)"} for n in sorted(guests)
                               if guests[n].get("state") in BALLOON_STATES]
        return result
    figures = []
    managed = re.compile(opts["managed_guests"])
    for vm in sorted(guests):
        guest = guests[vm]
        if guest.get("state") not in RUNNING_STATES:
            continue  # not on the host's memory: nothing to do, nothing to report
        if not managed.fullmatch(vm):
            result["unchanged"].append({"vm": vm, "reason": "not managed (managed_guests %r): counted as load only"
                                        % opts["managed_guests"]})
            continue
        item, why = _guest_figures(vm, guest, owed.get(vm), pressure, opts)
        if item is None:
            result["skipped"].append({"vm": vm, "reason": why + "; left alone"})
            continue
        item["rss_mib"] = _mib((guest.get("balloon") or {}).get("rss"))
        figures.append(item)

    pending = []
    for item in figures:
        owed_mib = item["guaranteed_mib"]
        target = None if owed_mib is None else min(owed_mib, item["max_mib"])
        if target is not None and item["actual_mib"] < target - BALLOON_TOLERANCE_MIB:
            result["controls"].append(_balloon_control(
                name, item, target, "below its guarantee: %d MiB < %d MiB guaranteed; restored whatever the pressure"
                % (item["actual_mib"], owed_mib), opts, item["rss_mib"]))
        else:
            pending.append(item)

    mode, state = opts["mode"], pressure["state"]
    if mode == "candidates" or state in ("pressure", "critical"):
        _shrink(result, pending, pressure, opts, candidates=(mode == "candidates"))
    elif state == "relief":
        _grow(result, pending, pressure, opts)
    else:
        for item in pending:
            result["unchanged"].append({"vm": item["vm"], "reason": "host %s: %s" % (
                state, pressure.get("reason", "pressure unknown"))})
    return result


def _shrink(result, items, pressure, opts, candidates):
    factor = opts["critical_rate_factor"] if pressure["state"] == "critical" else 1
    avail = {}
    for item in items:
        bound = int(math.ceil(round(opts["shrink_fraction_per_run"] * factor * item["max_mib"], 6)))
        avail[item["vm"]] = max(0, min(item["actual_mib"] - item["floor_mib"], bound))
    total = sum(avail.values())
    need = total if candidates else pressure["need_mib"]
    for item in items:
        vm = item["vm"]
        if avail[vm] <= 0:
            result["unchanged"].append({"vm": vm, "reason": "at its floor: %d MiB actual, floor %d MiB (%s)"
                                        % (item["actual_mib"], item["floor_mib"], _floor_why(item))})
            continue
        take = avail[vm] if total <= need else need * avail[vm] // total
        if 0 < take < item["min_change_mib"] <= avail[vm]:
            take = item["min_change_mib"]
        if take < item["min_change_mib"]:
            result["unchanged"].append({"vm": vm, "reason": "shrink of %d MiB is below the minimum change of %d MiB"
                                        % (take, item["min_change_mib"])})
            continue
        target = item["actual_mib"] - take
        bounded = take == avail[vm] and avail[vm] < item["actual_mib"] - item["floor_mib"]
        if candidates:
            why = "candidate: shrinking returns %d MiB" % take
        else:
            why = "host %s (%s): %d MiB to free, this guest gives %d MiB" % (
                pressure["state"], pressure["reason"], pressure["need_mib"], take)
        why += "; floor %d MiB (%s)%s" % (item["floor_mib"], _floor_why(item),
                                          "; bounded by the per-run shrink limit" if bounded else "")
        result["controls"].append(_balloon_control(result["host"], item, target, why, opts, item["rss_mib"]))


def _floor_why(item):
    parts = ["used %d MiB (%s) + margin %d MiB" % (item["used_mib"], item["used_rule"], item["margin_mib"])]
    if item["guaranteed_mib"] is not None:
        parts.append("guarantee %d MiB" % item["guaranteed_mib"])
    return "max of " + ", ".join(parts) if len(parts) > 1 else parts[0]


def _grow(result, items, pressure, opts):
    budget = pressure["grow_budget_mib"]

    def neediest(item):
        free = item["actual_mib"] - item["used_mib"]
        return (float(free) / item["actual_mib"] if item["actual_mib"] else 0.0, item["vm"])

    for item in sorted(items, key=neediest):
        vm = item["vm"]
        room = item["max_mib"] - item["actual_mib"]
        if room <= 0:
            continue  # at max: nothing to say
        bound = int(math.ceil(round(opts["grow_fraction_per_run"] * item["max_mib"], 6)))
        give = min(room, bound, budget)
        if give < item["min_change_mib"] and give < room:
            result["unchanged"].append({"vm": vm, "reason": "growth of %d MiB (of %d MiB below max) is below the minimum "
                                        "change of %d MiB (host grow budget left %d MiB)"
                                        % (give, room, item["min_change_mib"], budget)})
            continue
        if give < min(item["min_change_mib"], BALLOON_TOLERANCE_MIB * 2):
            result["unchanged"].append({"vm": vm, "reason": "only %d MiB below max: within tolerance" % room})
            continue
        budget -= give
        why = "host relieved (%s): %d MiB may be given back; grows %d MiB towards max %d MiB" % (
            pressure["reason"], pressure["grow_budget_mib"], give, item["max_mib"])
        if give == bound and bound < room:
            why += "; bounded by the per-run grow limit"
        result["controls"].append(_balloon_control(result["host"], item, item["actual_mib"] + give, why, opts))


# ---------------------------------------------------------------- KSM

def ksmd_cost_per_page(host, opts):
    """``(seconds of ksmd CPU per page scanned, measured CPU fraction or None, basis)``.

    Measured only while KSM runs (``run == 1``), at the current rate pages_to_scan * 1000 / sleep_millisecs:

    - two samples: the entry's ``ksmd_previous`` ``{cpu_seconds, elapsed_s}`` (an earlier reading of
      host.ksm.ksmd.cpu_seconds and the seconds between it and these facts, settings unchanged since);
    - else ksmd's cpu_seconds over the entry's ``uptime_s`` (a mean since boot: a lower bound when KSM did
      not run the whole time, so the assumed cost stays the floor);
    - else the assumed cost (option ksmd_assumed_s_per_page).
    """
    entry = _entry(host)
    ksm = (entry.get("host") or {}).get("ksm") or {}
    settings = ksm.get("settings") or {}
    assumed = float(opts["ksmd_assumed_s_per_page"])
    ksmd = ksm.get("ksmd") or {}
    cpu = ksmd.get("cpu_seconds")
    run = settings.get("run", ksm.get("run"))
    pages, sleep = settings.get("pages_to_scan"), settings.get("sleep_millisecs")
    if run != 1 or cpu is None or not pages or not sleep:
        return assumed, None, "assumed %.1f us/page (ksmd not running or not visible)" % (assumed * 1e6)
    rate = pages * 1000.0 / sleep
    previous = entry.get("ksmd_previous") or {}
    if previous.get("cpu_seconds") is not None and previous.get("elapsed_s"):
        fraction = max(0.0, (cpu - previous["cpu_seconds"]) / float(previous["elapsed_s"]))
        if fraction > 0:
            return fraction / rate, round(fraction, 4), "measured: ksmd %s of a core over %g s at %d pages/s" % (
                _pct(fraction), previous["elapsed_s"], rate)
        return assumed, 0.0, "assumed %.1f us/page (ksmd used no CPU between the samples)" % (assumed * 1e6)
    uptime = entry.get("uptime_s")
    if uptime:
        fraction = cpu / float(uptime)
        per_page = max(fraction / rate, assumed)
        return per_page, round(fraction, 4), "mean since boot: ksmd %s of a core; %.1f us/page (floored at the assumed %.1f)" % (
            _pct(fraction), per_page * 1e6, assumed * 1e6)
    return assumed, None, "assumed %.1f us/page (one ksmd sample and no uptime)" % (assumed * 1e6)


def scan_settings(rate):
    """``(pages_to_scan, sleep_millisecs)`` giving at most ``rate`` pages/s, as close as the bounds allow.

    KSM_SLEEP_MS when rate * sleep fits [KSM_PAGES_MIN, KSM_PAGES_MAX]; otherwise the sleep moves (within
    [KSM_SLEEP_MIN_MS, KSM_SLEEP_MAX_MS]) and the page count sits at its bound. Pages are rounded down so the
    rate (and so ksmd's CPU) never exceeds what was asked, except at the floor of 64 pages/s.
    """
    sleep = KSM_SLEEP_MS
    pages = int(rate * sleep // 1000)
    if pages > KSM_PAGES_MAX:
        sleep = max(KSM_SLEEP_MIN_MS, int(math.ceil(KSM_PAGES_MAX * 1000.0 / rate)))
        pages = min(KSM_PAGES_MAX, int(rate * sleep // 1000))
    elif pages < KSM_PAGES_MIN:
        pages = KSM_PAGES_MIN
        sleep = min(KSM_SLEEP_MAX_MS, int(math.ceil(KSM_PAGES_MIN * 1000.0 / rate))) if rate > 0 else KSM_SLEEP_MAX_MS
    return pages, sleep


def ksm_saving(host, guests=None):
    """``(saved MiB predicted with KSM running, saved MiB now, basis)`` from the measured page sharing."""
    entry = _entry(host)
    guests = _guests(entry, guests)
    ksm = (entry.get("host") or {}).get("ksm") or {}
    counters = ksm.get("counters") or {}
    scanned = _scan_mib(entry, guests)
    sharing = counters.get("pages_sharing")
    if ksm.get("sharing_bytes") is not None:
        now = int(ksm["sharing_bytes"]) // (KIB_PER_MIB * KIB_PER_MIB)
    elif sharing is not None:
        now = int(sharing) * PAGE_SIZE_KIB // KIB_PER_MIB
    else:
        now = 0
    assumed = int(KSM_ASSUMED_SHARE_FRACTION * scanned)
    scans = counters.get("full_scans") or 0
    if now and scans >= 1:
        return now, now, "measured: pages_sharing = %d MiB after %d full scan(s)" % (now, scans)
    if now:
        return max(now, assumed), now, "partial scan: %d MiB shared so far, at least the assumed %s of %d MiB" % (
            now, _pct(KSM_ASSUMED_SHARE_FRACTION), scanned)
    return assumed, 0, "assumed %s of %d MiB of guest memory (nothing measured)" % (_pct(KSM_ASSUMED_SHARE_FRACTION), scanned)


def _scan_mib(entry, guests):
    """Guest memory ksmd scans: the running guests' memory, else MemTotal - MemAvailable."""
    held = sum(guest_memory_mib(g) for _n, g in sorted(guests.items()) if g.get("state") in RUNNING_STATES)
    if held:
        return held
    memory = (entry.get("host") or {}).get("memory") or {}
    if memory.get("total_kib") and memory.get("available_kib") is not None:
        return _mib(memory["total_kib"] - memory["available_kib"])
    return 0


def _wanted_merge_across_nodes(entry, opts):
    policy = opts["numa_policy"]
    if policy == "merge":
        return True
    if policy == "node_local":
        return False
    if policy == "leave":
        return None
    facts = entry.get("host") or {}
    nodes = max((facts.get("numa") or {}).get("cell_count") or 0, (facts.get("node") or {}).get("numa_nodes") or 0)
    return False if nodes >= 2 else None


def ksm_controls(host, options=None, guests=None):
    """KSM for one host: on/off with hysteresis, the scan rate, merge_across_nodes.

    Returns ``{host, pressure, enable, control, candidate, reason, notes}``. ``control`` is an apply-role
    KSM step (``{kind: ksm, host, enable, run, pages_to_scan?, sleep_millisecs?, merge_across_nodes?, effect,
    cost, reason}``) when something must change, else None; ``candidate`` is the step KSM on would be (for a
    planner), whatever the pressure.
    """
    opts = options_with_defaults(options)
    entry = _entry(host)
    guests = _guests(entry, guests)
    name = entry.get("name")
    ksm = (entry.get("host") or {}).get("ksm") or {}
    pressure = host_pressure(entry, guests, opts)
    result = {"host": name, "pressure": pressure, "enable": None, "control": None, "candidate": None, "notes": []}
    if not ksm.get("available"):
        result["reason"] = "KSM is not available on this host"
        return result
    settings = ksm.get("settings") or {}
    run = settings.get("run", ksm.get("run"))
    running = run == 1
    counters = ksm.get("counters") or {}
    fraction = pressure["free_fraction"]

    predicted, now, saving_basis = ksm_saving(entry, guests)
    scanned = _scan_mib(entry, guests)
    per_page, measured, cost_basis = ksmd_cost_per_page(entry, opts)
    needed = int(math.ceil(round(scanned * KIB_PER_MIB / PAGE_SIZE_KIB / float(opts["ksm_full_scan_s"]), 6)))
    allowed = int(round(opts["ksmd_cpu_budget"] / per_page, 6))
    ceiling = KSM_PAGES_MAX * 1000 // KSM_SLEEP_MIN_MS
    floor_rate = KSM_PAGES_MIN * 1000.0 / KSM_SLEEP_MAX_MS
    rate = min(needed, allowed, ceiling)
    rate_why = "%d pages/s scans %d MiB in %d s" % (needed, scanned, opts["ksm_full_scan_s"])
    if rate < needed:
        if allowed <= ceiling:
            by = "the ksmd CPU budget of %s of a core at %.1f us/page (%s)" % (
                _pct(opts["ksmd_cpu_budget"]), per_page * 1e6, cost_basis)
        else:
            by = "the ceiling of %d pages per %d ms" % (KSM_PAGES_MAX, KSM_SLEEP_MIN_MS)
        rate_why += "; cut to %d pages/s by %s" % (rate, by)
    pages, sleep = scan_settings(max(rate, floor_rate))
    real_rate = pages * 1000.0 / sleep
    on_cost = {"ksmd_cpu_fraction": round(real_rate * per_page, 4), "s_per_page": per_page, "cost_basis": cost_basis,
               "measured_cpu_fraction": measured, "rate_pages_per_s": int(real_rate)}

    # on or off
    scans = counters.get("full_scans") or 0
    if not opts["ksm_enabled"]:
        enable, why = False, "KSM disabled by option (ksm_enabled: false)"
    elif fraction is None:
        enable, why = running, "pressure unknown (%s): KSM left %s" % (pressure.get("reason"), "on" if running else "off")
    elif fraction < opts["ksm_on_free_fraction"]:
        enable, why = True, "free %s < %s (%s)" % (_pct(fraction), _pct(opts["ksm_on_free_fraction"]), pressure["reason"])
    elif fraction >= opts["ksm_off_free_fraction"]:
        enable, why = False, "free %s >= %s (%s)" % (_pct(fraction), _pct(opts["ksm_off_free_fraction"]), pressure["reason"])
    else:
        enable, why = running, "free %s between %s and %s: KSM stays %s (hysteresis)" % (
            _pct(fraction), _pct(opts["ksm_on_free_fraction"]), _pct(opts["ksm_off_free_fraction"]), "on" if running else "off")
    if enable and scans >= KSM_MIN_FULL_SCANS and scanned and now < opts["ksm_min_saving_fraction"] * scanned:
        enable, why = False, "not worth it: %d MiB shared after %d full scans is below %s of %d MiB of guest memory" % (
            now, scans, _pct(opts["ksm_min_saving_fraction"]), scanned)
    if enable and allowed < floor_rate:
        enable, why = False, "the ksmd CPU budget (%s of a core at %.1f us/page) is below the slowest scan (%d pages/s)" % (
            _pct(opts["ksmd_cpu_budget"]), per_page * 1e6, floor_rate)
    result["enable"] = enable

    # NUMA
    wanted_man = _wanted_merge_across_nodes(entry, opts)
    current_man = settings.get("merge_across_nodes")
    man_change = None
    if wanted_man is not None:
        if current_man is None:
            result["notes"].append("merge_across_nodes wanted %d but this kernel has no such setting" % int(wanted_man))
        elif bool(current_man) != wanted_man:
            shared = counters.get("pages_shared") or 0
            if shared and pressure["state"] in ("pressure", "critical"):
                result["notes"].append("merge_across_nodes %d -> %d deferred: it unmerges %d MiB while the host is under %s"
                                       % (int(current_man), int(wanted_man), now, pressure["state"]))
            else:
                man_change = wanted_man

    candidate = {"kind": "ksm", "host": name, "enable": True, "run": "merge", "sleep_millisecs": sleep,
                 "effect": {"memory_saved_mib": predicted, "memory_returned_mib": max(0, predicted - now) if not running else 0,
                            "basis": saving_basis},
                 "cost": on_cost, "reason": "KSM on: " + rate_why}
    if settings.get("advisor_mode") == "scan-time":
        result["notes"].append("advisor_mode=scan-time: the kernel sets pages_to_scan itself")
    else:
        candidate["pages_to_scan"] = pages
    result["candidate"] = candidate

    if enable:
        control = dict(candidate, reason=why + "; " + rate_why)
        if running:
            current_rate = (settings.get("pages_to_scan") or 0) * 1000.0 / (settings.get("sleep_millisecs") or 1)
            close = real_rate and abs(current_rate - real_rate) <= KSM_RATE_TOLERANCE * real_rate
            if close and man_change is None:
                result["reason"] = why + "; running at %d pages/s, within %s of %d pages/s: unchanged" % (
                    current_rate, _pct(KSM_RATE_TOLERANCE), real_rate)
                return result
            if close:
                control.pop("pages_to_scan", None)
                control.pop("sleep_millisecs", None)
    else:
        control = {"kind": "ksm", "host": name, "enable": False, "run": "stop",
                   "effect": {"memory_saved_mib": now, "memory_returned_mib": 0,
                              "basis": "stopping keeps the %d MiB merged so far (they unshare as guests write)" % now},
                   "cost": {"ksmd_cpu_fraction": 0.0, "measured_cpu_fraction": measured, "cost_basis": cost_basis},
                   "reason": why}
        if run in (0, 2) and man_change is None:
            result["reason"] = why + "; KSM is already off"
            return result
        if run == 2:
            control["run"] = "unmerge"  # keep unmerging: it was asked for
    if man_change is not None:
        control["merge_across_nodes"] = man_change
        control["effect"] = dict(control["effect"], memory_returned_mib=control["effect"]["memory_returned_mib"] - now)
        control["reason"] += "; merge_across_nodes %d -> %d (numa_policy %s; unmerges %d MiB first)" % (
            int(current_man), int(man_change), opts["numa_policy"], now)
    result["control"] = control
    result["reason"] = control["reason"]
    return result


# ---------------------------------------------------------------- one host, the cluster

def host_controls(host, guarantees=None, options=None, guests=None):
    """Balloon and KSM controls for one host: ``{host, pressure, controls, unchanged, skipped, ksm, notes}``.

    ``controls`` lists the balloon steps (name order) then the KSM step, each with ``reason``; guests left
    alone are in ``skipped`` (missing statistics ...) or ``unchanged`` with their reason.
    """
    opts = options_with_defaults(options)
    balloons = balloon_controls(host, guests, guarantees, opts)
    ksm = ksm_controls(host, opts, guests)
    controls = list(balloons["controls"])
    if ksm["control"] is not None:
        controls.append(ksm["control"])
    return {"host": balloons["host"], "pressure": balloons["pressure"], "controls": controls,
            "unchanged": balloons["unchanged"], "skipped": balloons["skipped"],
            "ksm": {"enable": ksm["enable"], "reason": ksm["reason"], "candidate": ksm["candidate"]},
            "notes": ksm["notes"]}


def cluster_controls(cluster, guarantees=None, options=None, uptimes=None):
    """:func:`host_controls` for every host of a facts_cluster (name -> entry), keyed by host name.

    ``uptimes`` (host -> seconds since boot) lets ksmd's CPU be measured as a mean since boot.
    """
    if not isinstance(cluster, dict):
        raise MemoryPolicyError("the facts must be facts_cluster (host name -> entry), got %r" % (cluster,))
    result = {}
    for name in sorted(cluster):
        entry = dict(cluster[name] or {})
        entry["name"] = name  # the facts_cluster key (the inventory name) is where controls are applied
        if uptimes and uptimes.get(name) is not None:
            entry["uptime_s"] = _num(uptimes[name], "uptimes.%s" % name, 0)
        if not isinstance(entry.get("host"), dict):
            raise MemoryPolicyError("facts_cluster[%s] has no host facts (did the facts role run there?)" % name)
        result[name] = host_controls(entry, guarantees, options)
    return result
