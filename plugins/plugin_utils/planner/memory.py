"""Memory overcommit in the plan: balloon shrinks/grows and KSM weighed against migrations.

Runs before the placement search (``api.plan_document``), on hosts whose memory exceeds the hard limit
(capacity with ceilings applied): the cheapest of (a) shrinking guests' balloons towards their floor,
(b) switching KSM on, (c) both, is compared with (d) the migrations the search would make to relieve the
host (``search.evict_for_limits``' choice: the smallest guest that is enough, else the largest first).
When (a)-(c) is cheaper and enough, its steps become wave-0 steps and the search sees the host under
its limit; otherwise nothing is changed and the search migrates as before. Hosts well under their limit
(GROW_HYSTERESIS_FRACTION) give memory back to shrunk guests. Costs are in points (costs.py).

Input per guest: ``mem_used_mib`` (what it uses, from balloon statistics; absent = unknown, never
ballooned) and ``mem_max_mib`` (its maximum; default mem_alloc_mib). Per host: ``ksm`` (see parse.KSM_KEYS).
"""

from __future__ import annotations

import math

from .costs import (BALLOON_TOLERANCE_MIB, CRITICAL_FREE_FRACTION, CRITICAL_RATE_FACTOR, GROW_FRACTION_PER_RUN,
                    GROW_HYSTERESIS_FRACTION, GUEST_FREE_FRACTION, KSM_ENABLE_POINTS, MIN_CHANGE_FRACTION,
                    MIN_CHANGE_MIB, PRESSURE_FREE_FRACTION, SHRINK_FRACTION_PER_RUN, USED_MARGIN_MIB,
                    balloon_points, effective_bandwidth_mbs, migration_points, migration_prediction)
from .steps import Balloon, Ksm

EPS = 1e-9
INF = float("inf")
MIB_BYTES = 1048576
# Fraction of the guests' memory KSM is assumed to merge when nothing is measured (reported, never counted
# towards a hard limit here): factories.KSM_SHARE_FRACTION
# (kept here too: factories imports the step classes, and this module must not import the search).
KSM_SHARE_FRACTION = 0.10


def _ceil(x):
    return int(math.ceil(round(x, 6)))


class MemoryFacts:
    """What the document says about guest memory use and host KSM (validated by parse)."""

    def __init__(self, state, hosts, vms):
        self.used = [v.get("mem_used_mib") for v in vms]
        self.maximum = [v.get("mem_max_mib") if v.get("mem_max_mib") is not None else state.mem_alloc[i]
                        for i, v in enumerate(vms)]
        self.ksm = [dict(h.get("ksm") or {}) for h in hosts]
        self.credited = [0] * len(hosts)

    def measured_sharing_mib(self, h):
        """MiB KSM saves on host ``h`` now (pages_sharing x page_size), 0 when not measured."""
        k = self.ksm[h]
        if k.get("pages_sharing") and k.get("page_size"):
            return k["pages_sharing"] * k["page_size"] // MIB_BYTES
        return 0

    def credit_running_ksm(self, state, cons):
        """A host where KSM runs saves what it measurably shares: its memory limit rises by that much.

        With a page-hash estimate (``estimate_basis``), the larger of the two: ksmd needs full scans to reach
        what the page contents allow, and a plan made meanwhile must not migrate for the lag."""
        if "mem" not in state.res:
            return
        r = state.res.index("mem")
        for h in range(state.n_hosts):
            if self.ksm[h].get("run") == 1:
                saved = self.measured_sharing_mib(h)
                if self.ksm[h].get("estimate_basis") and self.ksm[h].get("estimated_saving_mib"):
                    saved = max(saved, int(self.ksm[h]["estimated_saving_mib"]))
                if saved > 0:
                    cons.limit[r][h] += saved
                    self.credited[h] = saved

    def enable_saving(self, h, guests_mib):
        """(MiB KSM is predicted to save if switched on, basis), or (0, why) when it cannot be switched on."""
        k = self.ksm[h]
        if not k.get("available"):
            return 0, "KSM not available"
        if k.get("managed") is False:
            return 0, "KSM on this host is not the plan's to switch (ksm_hosts)"
        if k.get("run") == 1:
            return 0, "KSM already runs"
        if k.get("estimated_saving_mib") is not None:
            # the document says how it was estimated: from page hashes (host_info ksm_estimate), else measured
            return int(k["estimated_saving_mib"]), k.get("estimate_basis") or "measured pages_sharing"
        measured = self.measured_sharing_mib(h)
        if measured:
            return measured, "measured: pages_sharing x page_size"
        # A hard limit is not bet on a guess: the assumed share is reported, never counted.
        return 0, "not measured (the assumed %.0f%% of guest memory, %d MiB, is not relied on; the facts role's " \
                  "facts_ksm_estimate measures it)" % (100 * KSM_SHARE_FRACTION, int(guests_mib * KSM_SHARE_FRACTION))


def _figures(st, cons, mf, v, r, h):
    """Balloon figures of guest ``v`` on host ``h`` (the memory policy's floor rule, costs.py)."""
    dem = st.dem[r][v]
    maximum = max(mf.maximum[v], dem)
    cap = st.cap[r][h]
    free = (cap - st.used[r][h]) / float(cap) if cap > 0 else 0.0
    scale = max(0.0, min(1.0, free / PRESSURE_FREE_FRACTION))
    margin = max(USED_MARGIN_MIB, _ceil(GUEST_FREE_FRACTION * scale * maximum))
    g = cons.guarantee.get(v)
    guarantee = g[1] if g else None
    floor = max(guarantee or 0, min(mf.used[v] + margin, maximum))
    factor = CRITICAL_RATE_FACTOR if free < CRITICAL_FREE_FRACTION else 1
    bound = _ceil(SHRINK_FRACTION_PER_RUN * factor * maximum)
    return {"vm": v, "dem": dem, "max": maximum, "used": mf.used[v], "margin": margin, "guarantee": guarantee,
            "floor": floor, "avail": max(0, min(int(dem - floor), bound)), "bounded": dem - floor > bound,
            "min_change": max(MIN_CHANGE_MIB, _ceil(MIN_CHANGE_FRACTION * maximum))}


def _allocate(cands, need):
    """Shrinks (figures, MiB) returning at least ``need`` MiB, spread in proportion to what each guest can
    give (plus BALLOON_TOLERANCE_MIB per guest, since a balloon may settle that far above its target); None
    when the guests cannot give enough."""
    usable = [c for c in cands if c["avail"] >= c["min_change"]]
    total = sum(c["avail"] for c in usable)
    if need <= 0 or total < need:
        return None
    want = min(total, need + BALLOON_TOLERANCE_MIB * len(usable))
    out = []
    for c in usable:
        take = min(c["avail"], max(c["min_change"], _ceil(want * c["avail"] / float(total))))
        out.append((c, take))
    if sum(t for _c, t in out) < need:
        out = [(c, c["avail"]) for c in usable]
    return out


def _shrink_points(alloc):
    return sum(balloon_points(c["dem"] - c["used"], c["dem"] - take - c["used"]) for c, take in alloc)


def _migration_alternative(st, cons, r, h, vms, excess):
    """(points, guests) of the migrations that would relieve host ``h``: the smallest movable guest that is
    enough, else the largest first (search.evict_for_limits' rule); (INF, []) when no move can."""
    movable = [v for v in vms if any(g != h and st.power_on[g] and cons.allowed(st, v, g) for g in range(st.n_hosts))]
    enough = [v for v in movable if st.dem[r][v] >= excess - EPS]
    if enough:
        chosen = [min(enough, key=lambda v: (st.dem[r][v], v))]
    else:
        chosen, freed = [], 0.0
        for v in sorted(movable, key=lambda v: (-st.dem[r][v], v)):
            if freed >= excess - EPS:
                break
            chosen.append(v)
            freed += st.dem[r][v]
        if freed < excess - EPS:
            return INF, []
    bw = effective_bandwidth_mbs(st.bw_mbps[h])
    pts = sum(migration_points(migration_prediction(st.mem_alloc[v], st.dirty[v], bw)) for v in chosen)
    return pts, chosen


def _pct(st, r, h, x):
    return 100.0 * x / st.cap[r][h] if st.cap[r][h] else INF


def _relieve(prob, r, h, vms, pre, notes):
    st, cons, mf = prob.state, prob.cons, prob.memory
    used, lim = st.used[r][h], cons.limit[r][h]
    excess = used - lim
    eid = cons.limit_exp[r][h] or "capacity"
    head = "%s mem %.0f%% > limit %.0f%%" % (st.host_ids[h], _pct(st, r, h, used), _pct(st, r, h, lim))
    cands = [_figures(st, cons, mf, v, r, h) for v in vms if mf.used[v] is not None]
    saving, basis = mf.enable_saving(h, sum(st.dem[r][v] for v in vms))
    options = []
    alloc = _allocate(cands, excess)
    if alloc:
        options.append((_shrink_points(alloc), "balloon", alloc, 0))
    if saving >= excess:
        options.append((KSM_ENABLE_POINTS, "ksm", [], saving))
    elif saving > 0:
        alloc = _allocate(cands, excess - saving)
        if alloc:
            options.append((KSM_ENABLE_POINTS + _shrink_points(alloc), "ksm+balloon", alloc, saving))
    mig_pts, mig_vms = _migration_alternative(st, cons, r, h, vms, excess)
    if mig_vms:
        mig_text = "migrating %s (%s MiB; %.2f points)" % (
            ", ".join(st.vm_ids[v] for v in mig_vms), "+".join("%d" % st.mem_alloc[v] for v in mig_vms), mig_pts)
    else:
        mig_text = "no migration can relieve it"
    note = {"host": st.host_ids[h], "excess_mib": round(excess, 1), "migrate_points": None if mig_pts == INF else round(mig_pts, 3),
            "balloon_mib_available": sum(c["avail"] for c in cands), "ksm_saving_mib": saving, "ksm_basis": basis}
    if not options:
        why = []
        if not cands:
            why.append("no guest with balloon statistics")
        else:
            why.append("balloons can return %d MiB at most (guests use their memory)" % sum(c["avail"] for c in cands))
        why.append(basis if saving == 0 else "KSM would save %d MiB" % saving)
        note.update(chosen="migrate", text="%s: %s; %s" % (head, "; ".join(why), mig_text))
        notes.append(note)
        return
    options.sort(key=lambda o: (o[0], o[1]))
    pts, kind, alloc, saving = options[0]
    note["options"] = {o[1]: round(o[0], 3) for o in options}
    if pts >= mig_pts:
        note.update(chosen="migrate", text="%s: %s is cheaper than %s (%.2f points)" % (head, mig_text, kind, pts))
        notes.append(note)
        return
    alt = "instead of %s" % mig_text
    if saving:
        step = Ksm(h, True, saving)
        cons.limit[r][h] += saving
        k = mf.ksm[h]
        scan = dict((key, k[key]) for key in ("pages_to_scan", "sleep_millisecs") if k.get(key))
        rate = "; %s" % k["scan_reason"] if k.get("scan_reason") else ""
        text = "%s: switch KSM on, saving %d MiB (%s) %s%s" % (head, saving, basis, alt, rate)
        pre.append((step, (eid, text), dict(scan, host=st.host_ids[h], enable=True,
                                            predicted={"memory_saved_mib": saving, "basis": basis})))
    for c, take in alloc:
        v = c["vm"]
        target = int(c["dem"] - take)
        step = Balloon(v, target, c["dem"], c["used"])
        step.apply(st)
        g = "" if c["guarantee"] is None else ", guarantee %d MiB" % c["guarantee"]
        text = "%s: shrink %s %d->%d MiB (used %d MiB, floor %d MiB%s) %s" % (
            head, st.vm_ids[v], c["dem"], target, c["used"], c["floor"], g, alt)
        extra = {"vm": st.vm_ids[v], "host": st.host_ids[h], "target_mib": target,
                 "predicted": {"memory_returned_mib": int(take), "used_mib": c["used"], "floor_mib": c["floor"]}}
        if c["guarantee"] is not None:
            extra["guaranteed_mib"] = int(c["guarantee"])
        pre.append((step, (eid, text), extra))
    note.update(chosen=kind, text="%s: %s (%.2f points) %s" % (head, kind, pts, alt))
    notes.append(note)


def _grow(prob, r, h, vms, pre):
    st, cons, mf = prob.state, prob.cons, prob.memory
    lim = cons.limit[r][h]
    budget = int(math.floor(lim * (1.0 - GROW_HYSTERESIS_FRACTION) - st.used[r][h]))
    if budget <= 0:
        return
    cands = [v for v in vms if mf.used[v] is not None and st.dem[r][v] < mf.maximum[v]]

    def neediest(v):
        d = st.dem[r][v]
        return ((d - mf.used[v]) / float(d) if d else 0.0, st.vm_ids[v])

    for v in sorted(cands, key=neediest):
        d = st.dem[r][v]
        maximum = mf.maximum[v]
        room = int(maximum - d)
        min_change = max(MIN_CHANGE_MIB, _ceil(MIN_CHANGE_FRACTION * maximum))
        give = min(room, _ceil(GROW_FRACTION_PER_RUN * maximum), budget)
        if (give < min_change and give < room) or give < min(min_change, 2 * BALLOON_TOLERANCE_MIB):
            continue
        budget -= give
        target = int(d + give)
        step = Balloon(v, target, d, mf.used[v])
        text = "%s mem %.0f%% is well under its limit %.0f%%: grow %s %d->%d MiB back towards its max %d MiB" % (
            st.host_ids[h], _pct(st, r, h, st.used[r][h]), _pct(st, r, h, lim), st.vm_ids[v], d, target, maximum)
        step.apply(st)
        pre.append((step, ("memory:grow", text), {"vm": st.vm_ids[v], "host": st.host_ids[h], "target_mib": target,
                                                  "predicted": {"memory_returned_mib": -give}}))


def _ksm_off(prob, r, h, pre):
    """KSM running on a host that would stay well under its limit without what KSM saves is stopped.

    "Well under" is the grow rule's GROW_HYSTERESIS_FRACTION below the limit, so KSM is not switched on and
    off on alternate runs. Stopping (run=0, as MoM does) leaves merged pages merged until guests write them:
    the host's use rises gradually, by at most the credited sharing, which the condition leaves room for.
    """
    st, cons, mf = prob.state, prob.cons, prob.memory
    if mf.ksm[h].get("run") != 1 or mf.ksm[h].get("managed") is False:
        return
    credited = mf.credited[h]
    limit_without = cons.limit[r][h] - credited
    if st.used[r][h] + EPS > limit_without * (1.0 - GROW_HYSTERESIS_FRACTION):
        return
    # The credit was a raise of the limit (credit_running_ksm), not a cut of the use: only the limit goes back.
    step = Ksm(h, False, credited)
    cons.limit[r][h] = limit_without
    mf.credited[h] = 0
    text = "%s mem %.0f%% stays well under its limit %.0f%% without the %d MiB KSM shares: switch KSM off" % (
        st.host_ids[h], _pct(st, r, h, st.used[r][h]), _pct(st, r, h, limit_without), credited)
    pre.append((step, ("memory:ksm-off", text), {"host": st.host_ids[h], "enable": False,
                                                 "predicted": {"memory_saved_mib": -credited}}))


def plan_memory(prob):
    """Balloon/KSM steps chosen over migrations, applied to ``prob.state`` (and KSM to the limits).

    Returns (pre steps [(step, (expectation, text), extra)], notes: one per host over its limit)."""
    st, mf = prob.state, prob.memory
    if mf is None or "mem" not in st.res:
        return [], []
    r = st.res.index("mem")
    on = st.vms_on()
    pre, notes = [], []
    for h in range(st.n_hosts):
        if not st.power_on[h] or not on[h]:
            continue
        if st.used[r][h] > prob.cons.limit[r][h] + EPS:
            _relieve(prob, r, h, on[h], pre, notes)
        else:
            _ksm_off(prob, r, h, pre)
            _grow(prob, r, h, on[h], pre)
    for h in range(st.n_hosts):
        if st.power_on[h] and not on[h]:
            _ksm_off(prob, r, h, pre)
    # A guest whose balloon changes in this plan counts as just migrated (options.cooldown_s): it moves
    # only when a hard expectation needs it, not for the objective's sake right after being resized.
    resized = {step.vm for step, _reason, _extra in pre if isinstance(step, Balloon)}
    if resized:
        st.last_migrated = [0.0 if v in resized else ago for v, ago in enumerate(st.last_migrated)]
    return pre, notes
