# -*- coding: utf-8 -*-
# Copyright: autopilot.kvm contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""Turns gathered facts and declared ceilings into the planner's input document.

Controller side, no Ansible imports: the lookup ``autopilot.kvm.plan`` is a thin
adapter over this and the planner library (plugins/plugin_utils/planner).

Units in the document: CPU in millicores (1000 = one core), memory in MiB.
"""

from __future__ import annotations

import numbers
import re

from .memory_policy import BALLOON_STATES, MemoryPolicyError, guest_used_mib, ksm_controls, ksm_saving

# A guest with no CPU rate measured (rates disabled, or it just started) is counted
# at this share of one core per vCPU: an idle TCG/KVM guest measures 1-3 %, so 5 %
# is a deliberately pessimistic "idle" figure rather than zero.
UNMEASURED_CPU_MILLICORES_PER_VCPU = 50

# Dirty-page rate assumed for a guest when nothing better is known, MB/s. It feeds the
# planner's pre-copy duration model; 0 would predict every migration as one pass.
DEFAULT_DIRTY_MBPS = 1.0

CEILING_KEYS = {"memory_pct": "mem", "cpu_pct": "cpu"}

# Guests in these states occupy their host's memory and CPU.
RUNNING_STATES = ("running", "paused", "blocked", "pmsuspended")


class ClusterDocumentError(ValueError):
    """Bad facts or declarations; the message names the bad value."""


def _number(value, where):
    if isinstance(value, bool) or not isinstance(value, numbers.Number):
        raise ClusterDocumentError("%s must be a number, got %r" % (where, value))
    return value


def validate_ceiling(ceiling, where):
    """A ceiling is a mapping of memory_pct / cpu_pct to a percentage in (0, 100]."""
    if not isinstance(ceiling, dict):
        raise ClusterDocumentError("%s must be a mapping with memory_pct and/or cpu_pct, got %r" % (where, ceiling))
    unknown = sorted(set(ceiling) - set(CEILING_KEYS))
    if unknown:
        raise ClusterDocumentError("%s has unknown key(s) %s; allowed: %s"
                                   % (where, ", ".join(unknown), ", ".join(sorted(CEILING_KEYS))))
    checked = {}
    for key, value in ceiling.items():
        if value is None:
            continue
        value = _number(value, "%s.%s" % (where, key))
        if not 0 < value <= 100:
            raise ClusterDocumentError("%s.%s must be a percentage above 0 and at most 100, got %r" % (where, key, value))
        checked[key] = value
    return checked


def host_ceilings(host_names, ceilings=None, default_ceiling=None):
    """Effective ceiling of each host: the default, overridden per host; unknown hosts are an error."""
    ceilings = ceilings or {}
    if not isinstance(ceilings, dict):
        raise ClusterDocumentError("ceilings must be a mapping of host name to ceiling, got %r" % (ceilings,))
    unknown = sorted(set(ceilings) - set(host_names))
    if unknown:
        raise ClusterDocumentError("ceilings name unknown host(s) %s; the hosts are: %s"
                                   % (", ".join(repr(h) for h in unknown), ", ".join(sorted(host_names))))
    default = validate_ceiling(default_ceiling or {}, "default_ceiling")
    result = {}
    for name in host_names:
        effective = dict(default)
        effective.update(validate_ceiling(ceilings.get(name, {}), "ceilings.%s" % name))
        result[name] = effective
    return result


def _host_capacity(name, entry):
    """(cpu millicores, memory MiB) the host may give to guests.

    The inventory's ``autopilot_kvm_capacity`` (cpus, memory_mib) wins: operators reserve
    CPU and memory for the host itself, and lab hosts sharing one kernel must declare theirs.
    Otherwise the host's own figures from host_info are used.
    """
    declared = entry.get("capacity") or {}
    facts = entry.get("host") or {}
    node = facts.get("node") or {}
    memory = facts.get("memory") or {}
    cpus = declared.get("cpus", node.get("cpus"))
    memory_mib = declared.get("memory_mib")
    if memory_mib is None:
        memory_mib = memory.get("total_mib", node.get("memory_mib"))
    if cpus is None or memory_mib is None:
        raise ClusterDocumentError("host %r: no CPU or memory capacity known (declare autopilot_kvm_capacity: "
                                   "{cpus: N, memory_mib: M} or gather host_info)" % name)
    cpus = _number(cpus, "host %r capacity cpus" % name)
    memory_mib = _number(memory_mib, "host %r capacity memory_mib" % name)
    if cpus <= 0 or memory_mib <= 0:
        raise ClusterDocumentError("host %r: capacity must be positive, got cpus=%r memory_mib=%r" % (name, cpus, memory_mib))
    return int(round(cpus * 1000)), int(memory_mib)


def _guests_of(entry):
    guests = entry.get("guests") or {}
    if isinstance(guests, dict):
        return [dict(g, name=g.get("name", n)) for n, g in sorted(guests.items())]
    return list(guests)


def _guest_demand(guest):
    """(cpu millicores, memory MiB, allocated MiB) a running guest uses on its host."""
    memory = guest.get("memory") or {}
    current_mib = memory.get("current_mib")
    if current_mib is None and memory.get("current_kib") is not None:
        current_mib = memory["current_kib"] // 1024
    max_mib = memory.get("max_mib", current_mib)
    balloon = guest.get("balloon") or {}
    if balloon.get("actual"):  # KiB, what the balloon really leaves the guest
        current_mib = balloon["actual"] // 1024
    vcpus = guest.get("vcpus") or 1
    rates = guest.get("rates") or {}
    cpu_pct = rates.get("cpu_percent")  # percent of one core
    if cpu_pct is None:
        cpu_millicores = UNMEASURED_CPU_MILLICORES_PER_VCPU * vcpus
    else:
        cpu_millicores = int(round(cpu_pct * 10))
    return cpu_millicores, int(current_mib or 0), int(max_mib or current_mib or 0), vcpus


GROUP_TYPES = ("anti_affinity", "affinity")
SINGLE_VM_TYPES = ("memory_guarantee", "cpu_cap")


def metadata_expectations(declared):
    """Planner expectations from what running guests declare in their libvirt metadata.

    ``declared`` is [(guest, [expectation, ...])]. An anti-affinity or affinity entry names a
    ``group``: every guest declaring the same type and group joins one expectation. Any other
    entry applies to the declaring guest alone.
    """
    groups, singles = {}, []
    for guest, items in declared:
        for index, item in enumerate(items):
            kind = item.get("type")
            if kind in GROUP_TYPES:
                group = item.get("group")
                if not isinstance(group, str) or not group:
                    raise ClusterDocumentError("guest %r: metadata %s expectation needs a 'group' name, got %r"
                                               % (guest, kind, group))
                entry = groups.setdefault((kind, group), {"decl": dict((k, v) for k, v in item.items() if k != "group"),
                                                          "first": guest, "vms": []})
                this = dict((k, v) for k, v in item.items() if k != "group")
                if this != entry["decl"]:
                    raise ClusterDocumentError("guests %r and %r declare %s group %r differently: %r vs %r"
                                               % (entry["first"], guest, kind, group, entry["decl"], this))
                entry["vms"].append(guest)
            else:
                single = dict(item)
                single.setdefault("id", "meta-%s-%s-%d" % (guest, kind, index))
                if kind in SINGLE_VM_TYPES:
                    single["vm"] = guest
                else:
                    single["vms"] = [guest]
                singles.append(single)
    grouped = []
    for (kind, group), entry in sorted(groups.items()):
        expectation = dict(entry["decl"], id="meta-%s-%s" % (kind, group), vms=sorted(entry["vms"]))
        if kind == "anti_affinity" and len(expectation["vms"]) < 2:
            continue  # a group of one keeps nothing apart
        grouped.append(expectation)
    return grouped + singles


def build_document(cluster, ceilings=None, default_ceiling=None, expectations=None, options=None, managed_guests=None,
                   ksm_hosts=None, ksm_policy=None):
    """The planner document for ``cluster`` (the facts role's facts_cluster).

    Each host's ceiling becomes a hard ``ceiling`` expectation per resource; hosts with the
    same ceiling share one expectation, named after it, so a plan step can say which it serves.
    Guests whose name does not match the ``managed_guests`` regular expression still count
    as load but are pinned where they run (a hard ``fence`` to their host). KSM on hosts whose name does not
    match ``ksm_hosts`` is never switched by the plan (what it shares still counts). ``ksm_policy``: memory
    policy options (``ksm_full_scan_s``, ``ksmd_cpu_budget``) for the scan rate a KSM step sets.
    """
    try:
        managed = re.compile(managed_guests or ".*")
    except re.error as error:
        raise ClusterDocumentError("managed_guests is not a valid regular expression (%s): %r" % (error, managed_guests))
    try:
        ksm_managed = re.compile(ksm_hosts or ".*")
    except re.error as error:
        raise ClusterDocumentError("ksm_hosts is not a valid regular expression (%s): %r" % (error, ksm_hosts))
    if not isinstance(cluster, dict) or not cluster:
        raise ClusterDocumentError("no hosts in the gathered facts (did the facts role run on the KVM hosts?)")
    names = sorted(cluster)
    effective = host_ceilings(names, ceilings, default_ceiling)

    hosts, vms, declared = [], [], []
    copies = {}
    for name in names:
        entry = cluster[name] or {}
        cpu_cap, mem_cap = _host_capacity(name, entry)
        facts = entry.get("host") or {}
        cpu = facts.get("cpu") or {}
        hosts.append({
            "id": name,
            "cap": {"cpu": cpu_cap, "mem": mem_cap},
            "features": list(cpu.get("features") or []),
            "labels": dict(entry.get("labels") or {}),
        })
        try:
            ksm = _host_ksm(entry, ksm_policy)
        except MemoryPolicyError as error:
            raise ClusterDocumentError("KSM scan rate for %s: %s" % (name, error))
        if ksm is not None:
            if not ksm_managed.fullmatch(name):
                ksm["managed"] = False
            hosts[-1]["ksm"] = ksm
        for guest in _guests_of(entry):
            if guest.get("state") in RUNNING_STATES:
                copies.setdefault(guest["name"], []).append((name, guest))

    in_flight = []
    for gname in sorted(copies):
        placed = copies[gname]
        if len(placed) > 1:
            # A migration in progress shows the guest on both hosts: running on one, paused on the
            # other (incoming, or the source after a post-copy switch). It is the same guest: plan
            # it where it runs, count its memory on the other host too, and move neither copy.
            running = [item for item in placed if item[1].get("state") == "running"]
            if len(running) != 1 or len(placed) != 2:
                raise ClusterDocumentError("guest %r runs on %s; resolve that before planning"
                                           % (gname, " and ".join(host for host, _g in placed)))
            other = [item for item in placed if item is not running[0]][0]
            placed = running
            in_flight.append((gname, running[0][0], other[0], other[1]))
        host_name, guest = placed[0]
        if guest.get("expectations_error"):
            raise ClusterDocumentError("guest %r on %s: %s" % (gname, host_name, guest["expectations_error"]))
        if guest.get("expectations"):
            declared.append((gname, guest["expectations"]))
        cpu_m, mem_mib, alloc_mib, vcpus = _guest_demand(guest)
        vms.append({
            "id": gname,
            "dem": {"cpu": cpu_m, "mem": mem_mib},
            "vcpu": vcpus,
            "mem_alloc_mib": alloc_mib,
            "dirty_mbps": DEFAULT_DIRTY_MBPS,
            "host": host_name,
            "requires": [],
        })
        if len(copies[gname]) == 1 and managed.fullmatch(gname):
            vms[-1].update(_guest_memory_use(guest, alloc_mib))

    busy = []
    for gname, host_name, other_host, copy in in_flight:
        cpu_m, mem_mib, alloc_mib, vcpus = _guest_demand(copy)
        twin = "%s@%s" % (gname, other_host)
        vms.append({"id": twin, "dem": {"cpu": cpu_m, "mem": mem_mib}, "vcpu": vcpus, "mem_alloc_mib": alloc_mib,
                    "dirty_mbps": DEFAULT_DIRTY_MBPS, "host": other_host, "requires": []})
        busy.append({"id": "migrating-%s" % gname, "type": "fence", "vms": [gname], "hosts": [host_name], "hard": True})
        busy.append({"id": "migrating-%s" % twin, "type": "fence", "vms": [twin], "hosts": [other_host], "hard": True})

    moving = set(e["vms"][0] for e in busy)
    pinned = [{"id": "unmanaged-%s" % vm["id"], "type": "fence", "vms": [vm["id"]], "hosts": [vm["host"]], "hard": True}
              for vm in vms if not managed.fullmatch(vm["id"]) and vm["id"] not in moving]

    grouped = {}
    for name in names:
        for key, pct in effective[name].items():
            grouped.setdefault((CEILING_KEYS[key], pct), []).append(name)
    ceiling_expectations = [
        {"id": "ceiling-%s-%s%%" % (resource, _fmt(pct)), "type": "ceiling", "hosts": hosts_,
         "resource": resource, "max_pct": pct, "hard": True}
        for (resource, pct), hosts_ in sorted(grouped.items())
    ]
    return {
        "resources": ["cpu", "mem"],
        "units": {"cpu": "millicore", "mem": "MiB"},
        "hosts": hosts,
        "vms": vms,
        "expectations": ceiling_expectations + pinned + busy + metadata_expectations(declared) + list(expectations or []),
        "options": dict(options or {}),
    }


def _guest_memory_use(guest, max_mib):
    """``mem_used_mib`` / ``mem_max_mib`` of a managed guest whose balloon reports its use (memory_policy's
    rule), so the planner may weigh shrinking it against a migration; nothing when unknown (never ballooned)."""
    balloon = guest.get("balloon") or {}
    # only guests in memory_policy.BALLOON_STATES can move their balloon
    if guest.get("state") not in BALLOON_STATES or balloon.get("device") == "none":
        return {}
    used, _rule = guest_used_mib(balloon)
    if used is None:
        return {}
    return {"mem_used_mib": used, "mem_max_mib": max_mib}


def _host_ksm(entry, ksm_policy=None):
    """The planner's ``ksm`` mapping from host_info's KSM facts; None when KSM is not available."""
    ksm = (entry.get("host") or {}).get("ksm") or {}
    if not ksm.get("available"):
        return None
    counters = ksm.get("counters") or {}
    settings = ksm.get("settings") or {}
    run = settings.get("run", ksm.get("run"))
    out = {"available": True, "run": run if run in (0, 1, 2) else 0}
    for key in ("pages_sharing", "pages_shared"):
        if isinstance(counters.get(key), int) and not isinstance(counters.get(key), bool) and counters[key] >= 0:
            out[key] = counters[key]
    if ksm.get("sharing_bytes") and out.get("pages_sharing"):
        out["page_size"] = int(ksm["sharing_bytes"]) // out["pages_sharing"]
    elif out.get("pages_sharing"):
        out["page_size"] = 4096
    # The scan rate KSM would run at: the memory policy's derivation from the guests' memory, the full-scan
    # time wanted and ksmd's CPU budget (docs/memory-policy.md); a KSM step of the plan sets it.
    candidate = ksm_controls(entry, options=ksm_policy).get("candidate") or {}
    for key in ("pages_to_scan", "sleep_millisecs"):
        if candidate.get(key):
            out[key] = int(candidate[key])
    if candidate.get("reason"):
        out["scan_reason"] = candidate["reason"]
    estimate = ksm.get("estimate") or {}
    saving = estimate.get("saving_mib")
    if isinstance(saving, int) and not isinstance(saving, bool) and saving >= 0:
        # host_info ksm_estimate: what KSM shares once its scans are through, from the guests' page contents
        # (while KSM runs, the planner credits the larger of this and what it measurably shares so far)
        out["estimated_saving_mib"] = saving
        out["estimate_basis"] = _page_hash_basis(estimate)
        return out
    predicted, now, _basis = ksm_saving(entry)
    if now:
        # Only a measured sharing makes an estimate; without one the planner relies on no KSM saving.
        out["estimated_saving_mib"] = predicted
    return out


def _page_hash_basis(estimate):
    """``estimated from page hashes (2 guests, 1536 MiB read)``: the plan's reason for a KSM saving."""
    guests = len(estimate.get("guests") or [])
    read = estimate.get("read_mib")
    read = ("%.2f" % read).rstrip("0").rstrip(".") if isinstance(read, numbers.Real) else "?"
    return "estimated from page hashes (%d guest%s, %s MiB read)" % (guests, "" if guests == 1 else "s", read)


def _fmt(number):
    return ("%g" % number).replace(".", "_")


def placement(document, assignment=None):
    """Guests and load (percent of capacity per resource) of every host, for ``assignment``
    (guest -> host; the document's current placement when None)."""
    where = dict((vm["id"], vm["host"]) for vm in document["vms"])
    where.update(assignment or {})
    table = {}
    for host in document["hosts"]:
        table[host["id"]] = {"guests": [], "used": dict((r, 0) for r in host["cap"]), "load_pct": {}}
    for vm in document["vms"]:
        row = table[where[vm["id"]]]
        row["guests"].append(vm["id"])
        for resource, amount in vm["dem"].items():
            row["used"][resource] = row["used"].get(resource, 0) + amount
    for host in document["hosts"]:
        row = table[host["id"]]
        row["guests"].sort()
        for resource, cap in host["cap"].items():
            row["load_pct"][resource] = round(100.0 * row["used"].get(resource, 0) / cap, 1) if cap else None
    return table
