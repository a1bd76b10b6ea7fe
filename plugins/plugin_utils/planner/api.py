"""Public entry point: ``plan_document(doc) -> dict``.

Pure and deterministic for a given ``options.seed``: the search is bounded by work units derived from
``options.budget_s``; the wall clock only cuts it short on a slow or overloaded machine
(``metrics.search.deadline_cut`` then says so).

Input: ``resources`` (packing resources, default ["cpu", "mem"]), ``transient_resources`` (those a guest
still uses on the host it left), ``hosts`` (id, cap, features, labels, power "on"/"off", maintenance,
migration_bandwidth_mbps [default 10000], move_cost_to {host: cost}), ``vms`` (id, dem, vcpu, mem_alloc_mib,
dirty_mbps, host, requires, last_migrated_s_ago, mem_used_mib, mem_max_mib, see memory.py; move_cost,
service), hosts may carry ``ksm`` (parse.KSM_KEYS), ``expectations`` (types in ``expectations.TYPES``; ``id``
defaults to "<type>-<index>", ``hard`` to true except power_saving and free_ratio, ``weight`` to 1) and
``options`` (``parse.DEFAULT_OPTIONS``). A FORMAT.md instance (top-level
``anti_affinity``, ``bans``, ``limits``, no ``expectations``) is accepted as is: groups become hard
anti-affinity "aa-<i>", bans hard bans "ban-<vm>", limits the per-host migration limit, and the
objective defaults to "consolidate" (fewest hosts, then fewest migrations).

Output: ``feasible``, ``steps`` (id, wave, kind, vm/host, from/to, reason {expectation, text}, cost,
predicted, loads_after), ``waves`` (FORMAT.md waves: migrations only; a wave may be empty when it
only holds power/tune steps), ``assignment``, ``metrics``, ``conflicts``, ``explain``. Steps of one
wave run together; a wave starts when the previous one is done. Infeasible: no steps, no waves,
``conflicts`` lists small sets of hard expectations that cannot hold together.
"""

from __future__ import annotations

import time

from .conflicts import search_conflicts, static_conflicts
from .errors import PlanInputError
from .explain import build_steps, summary_lines
from .factories import power_off_steps, power_on_steps, tune_steps
from .memory import plan_memory
from .ordering import schedule_target
from .parse import DEFAULT_OPTIONS, parse_document
from .schedule import ScheduleError
from .search import _repair, ref_caps, search

__all__ = ["plan_document", "PlanInputError", "DEFAULT_OPTIONS"]


# Time kept back from the search for scheduling and explaining the plan, measured on the 2-core
# reference machine when idle: about 10 us per guest plus 150-200 us per migration. The machine's current
# speed is gauged by the parse time (about 10 us per guest, host or expectation member when idle, see
# ``_parsed_items``) and scales both. The fixed part
# is reserved up front (at most half the budget); the per-migration part is charged by the search
# against its best plan (consolidation can move thousands of guests).
POST_S_PER_GUEST = 10e-6
POST_S_PER_MOVE = 200e-6
PARSE_S_PER_GUEST = 10e-6
POST_MAX_SHARE = 0.5
# Objective "cost": the share of the budget (at most COST_SCHEDULE_MAX_S) kept from the search for ordering the
# migrations and, when the final placement cannot be ordered safely, for the fallbacks of ordering.py.
COST_SCHEDULE_SHARE = 0.1
COST_SCHEDULE_MAX_S = 30.0
# Share of the budget kept as a margin against timing noise (GC pauses, a busy machine).
SAFETY_SHARE = 0.05
# Small documents parse slowly per guest (fixed costs): never assume worse than this.
MAX_SLOWDOWN = 4.0


def _parsed_items(st, doc):
    """What the parse works through: guests, hosts and the guests and hosts each expectation names. Counting guests
    and hosts alone read documents with many expectations as a slow machine: idle, ROADEF a2_2 (1,100 guests and
    hosts, 2,878 members) and a 55,000-guest-and-host document (115,001 members) parsed in 25-26 us per guest or
    host, 7-8.5 us per item counted this way; the second's scheduling and explanation then took 0.13 ms per
    migration, where its slowdown of 2.65 reserved 0.53 ms."""
    members = 0
    for e in doc.get("expectations") or ():
        for key in ("vms", "hosts"):
            if isinstance(e.get(key), list):
                members += len(e[key])
    return st.n_vms + st.n_hosts + members


def _slowdown(items, parse_s):
    return min(MAX_SLOWDOWN, max(1.0, parse_s / (PARSE_S_PER_GUEST * max(1, items))))


def _post_reserve(st, budget, slowdown):
    return min(POST_MAX_SHARE * budget, SAFETY_SHARE * budget + slowdown * POST_S_PER_GUEST * st.n_vms)


def _apply_planning_demand(prob):
    """CPU caps (tune steps, applied first) and memory guarantees change what the search packs."""
    st, cons = prob.state, prob.cons
    pre = []
    for step, eid in tune_steps(st, cons):
        v = step.vm
        text = "cap %s cpu at %.0f" % (st.vm_ids[v], step.cpu_limit)
        step.apply(st)
        pre.append((step, (eid, text), {"vm": st.vm_ids[v], "cpu_limit": step.cpu_limit}))
    if "mem" in st.res:
        r = st.res.index("mem")
        for v, (_e, mn) in cons.guarantee.items():
            if st.dem[r][v] < mn:
                st.set_demand(v, r, mn)
    return pre


def _soft_report(prob, final):
    """Soft expectations that the final placement does not meet (reported, weighted in later work)."""
    st, cons = prob.state, prob.cons
    out = []
    for e, is_fence, hosts in cons.soft_place:
        bad = [st.vm_ids[v] for v in e.vms if final[v] >= 0 and ((final[v] in hosts) != is_fence)]
        if bad:
            out.append((e.id, "%d guest(s) misplaced, e.g. %s" % (len(bad), bad[0])))
    for e, vms in cons.soft_aff:
        hs = {final[v] for v in vms if final[v] >= 0}
        if len(hs) > 1:
            out.append((e.id, "guests spread over %d hosts" % len(hs)))
    for e, vms, lab in cons.soft_aa:
        keys = [final[v] if lab is None else cons.label_key[lab][final[v]] for v in vms if final[v] >= 0]
        if len(set(keys)) < len(keys):
            out.append((e.id, "%d guests share a host" % (len(keys) - len(set(keys)) + 1)))
    loads = {}    # resource -> final load per host, one pass over the guests per resource (not per ceiling)
    for e, r, hosts, pct in cons.soft_ceil:
        used = loads.get(r)
        if used is None:
            used = loads[r] = _final_used(st, final, r)
        cap = st.cap[r]
        # Only the hosts in the ceiling's scope, in host order: an imported instance may have thousands of
        # ceilings of a few hosts each.
        over = [st.host_ids[h] for h in (range(st.n_hosts) if hosts is None else sorted(hosts))
                if used[h] > cap[h] * pct / 100.0 + 1e-9]
        if over:
            out.append((e.id, "%d host(s) above %s%% %s, e.g. %s" % (len(over), pct, st.res[r], over[0])))
    return out


def _final_used(st, final, r):
    """Load of resource ``r`` per host once every guest is on its ``final`` host (O(guests))."""
    used = [0.0] * st.n_hosts
    dem = st.dem[r]
    for v, h in enumerate(final):
        if h >= 0:
            used[h] += dem[v]
    return used


def _infeasible(prob, conflicts, t0, stats):
    metrics = {"hosts_used": sum(1 for h in set(prob.state.host_of) if h >= 0), "migrations": 0, "gib_moved": 0.0,
               "waves": 0, "makespan_s": 0.0, "hard_violations": None, "objective": None,
               "search": dict(stats, wall_s=round(time.monotonic() - t0, 3))}
    return {"feasible": False, "steps": [], "waves": [], "assignment": {}, "metrics": metrics,
            "conflicts": conflicts, "explain": summary_lines(prob, metrics, [], conflicts, [])}


def plan_document(doc):
    """Plan for ``doc`` (see the collection docs for the format); never returns a partial plan."""
    t0 = time.monotonic()
    prob = parse_document(doc)
    st, cons, opts = prob.state, prob.cons, prob.options
    deadline = t0 + opts["budget_s"]
    phases = {"parse_s": round(time.monotonic() - t0, 3)}
    static = static_conflicts(prob)
    if static:
        return _infeasible(prob, static, t0, {"phase": "static"})
    pre = _apply_planning_demand(prob)
    mem_pre, mem_notes = plan_memory(prob)
    pre += mem_pre
    slow = _slowdown(_parsed_items(st, doc), phases["parse_s"])
    reserve = _post_reserve(st, opts["budget_s"], slow)
    if opts["objective"] == "cost":
        reserve = max(reserve, min(COST_SCHEDULE_SHARE * opts["budget_s"], COST_SCHEDULE_MAX_S))
    t1 = time.monotonic()
    pk, reasons, stats = search(prob, deadline - reserve, deadline - 0.5 * reserve, slow * POST_S_PER_MOVE)
    stats["slowdown"] = round(slow, 2)
    phases["search_s"] = round(time.monotonic() - t1, 3)
    stats["phases"] = phases
    violations = pk.hard_violations()
    if violations and opts["objective"] != "cost" and (cons.spread or cons.depends or st.transient):
        # Consolidation's swaps test capacity and placement rules but not spread, depends or transient usage:
        # a plan that breaks them gives way to the repair's.
        rpk, rreasons, left, _f = _repair(st, cons, opts, ref_caps(st), allow_off=opts["allow_power_on"])
        if not left and not rpk.hard_violations():
            pk, reasons, violations = rpk, rreasons, []
            stats["rules_fallback"] = True
    if violations:
        ref = ref_caps(st)

        def feasible_with(cons2):
            _p, _r, left, _f = _repair(st, cons2, opts, ref, allow_off=opts["allow_power_on"])
            return not left and not _p.hard_violations()
        extra = max(0.5, opts["budget_s"])
        conflicts = search_conflicts(prob, pk, violations, time.monotonic() + extra, feasible_with)
        return _infeasible(prob, conflicts, t0, stats)
    t1 = time.monotonic()
    try:
        pk, reasons, sched, unreached = schedule_target(prob, pk, reasons, deadline, stats)
    except ScheduleError as exc:
        ids = set()
        for i in exc.items:
            for v in pk.members[i]:
                ids.update(cons.place_exps[v] or ())
                ids.update(cons.aa[gi][0].id for gi in cons.vm_aa[v] or ())
        ids.update(e.id for e in cons.exps if e.hard and e.type in ("ceiling", "maintenance", "affinity"))
        ids = sorted(ids)
        return _infeasible(prob, [{"expectations": ids or ["capacity"], "text": "no safe migration order: %s" % exc}],
                           t0, stats)
    final = [-1] * st.n_vms
    for i, h in enumerate(pk.asg):
        for v in pk.members[i]:
            final[v] = h if h >= 0 else st.host_of[v]
    for step in power_on_steps(st, final):
        pre.append((step, ("capacity", "%s is needed to host guests" % st.host_ids[step.host]),
                    {"host": st.host_ids[step.host]}))
    post = []
    for step, eid in power_off_steps(st, cons, final):
        post.append((step, (eid, "%s is empty" % st.host_ids[step.host]), {"host": st.host_ids[step.host]}))
    phases["schedule_s"] = round(time.monotonic() - t1, 3)
    t1 = time.monotonic()
    offset = 1 if pre else 0
    steps, waves, gib = build_steps(prob, reasons, sched, pre, post, offset)
    if post:
        waves.append([])
    moved = sum(1 for v in range(st.n_vms) if final[v] != st.host_of[v])
    used_hosts = len({h for h in final if h >= 0})
    imbalance = _imbalance(st, pk)
    # Power and tune steps run in their own waves: the slowest of each adds to the makespan.
    makespan = sched.makespan_s + sum(max((s.cost(st)["duration_s"] for s, _r, _e in group), default=0.0)
                                      for group in (pre, post))
    metrics = {"hosts_used": used_hosts, "migrations": moved, "gib_moved": round(gib, 3), "waves": len(waves),
               "makespan_s": round(makespan, 3), "hard_violations": 0,
               "objective": {"name": opts["objective"], "hosts_used": used_hosts, "migrations": moved,
                             "gib_moved": round(gib, 3), "imbalance": imbalance},
               "search": dict(stats, wall_s=round(time.monotonic() - t0, 3), temp_moves=len(sched.temp))}
    if prob.memory is not None:
        metrics["memory"] = mem_notes
    soft = _soft_report(prob, final)
    phases["explain_s"] = round(time.monotonic() - t1, 3)
    out = {"feasible": True, "steps": steps, "waves": waves,
           "assignment": {st.vm_ids[v]: st.host_ids[final[v]] for v in range(st.n_vms) if final[v] >= 0},
           "metrics": metrics, "conflicts": [], "explain": summary_lines(prob, metrics, steps, [], soft)}
    if unreached is not None:
        target, total = unreached
        out["unreached_target"] = {
            "weighted_cost": round(total, 3),
            "assignment": {st.vm_ids[v]: st.host_ids[h] for i, h in enumerate(target) if h >= 0
                           for v in pk.members[i]},
            "text": "the search's placement (weighted cost %.0f) meets every hard expectation once reached, but no "
                    "safe order of migrations to it was found (it needs a host that is free meanwhile): the plan "
                    "stops short of it" % total}
    return out


def _imbalance(st, pk):
    """Max host utilisation minus min over used hosts, in percent points (worst resource)."""
    hosts = [h for h in range(st.n_hosts) if pk.cnt[h] > 0]
    worst = 0.0
    for r in range(len(st.res)):
        utils = [100.0 * pk.used[r][h] / st.cap[r][h] for h in hosts if st.cap[r][h] > 0]
        if utils:
            worst = max(worst, max(utils) - min(utils))
    return round(worst, 1)
