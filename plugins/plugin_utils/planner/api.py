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
from .objective import CostModel
from .parse import DEFAULT_OPTIONS, parse_document
from .schedule import ScheduleError, concatenate, schedule
from .search import _repair, ref_caps, search

__all__ = ["plan_document", "PlanInputError", "DEFAULT_OPTIONS"]


# Time kept back from the search for scheduling and explaining the plan, measured on the 2-core
# reference machine when idle: about 10 us per guest plus 150-200 us per migration. The machine's current
# speed is gauged by the parse time (about 10 us per guest when idle) and scales both. The fixed part
# is reserved up front (at most half the budget); the per-migration part is charged by the search
# against its best plan (consolidation can move thousands of guests).
POST_S_PER_GUEST = 10e-6
POST_S_PER_MOVE = 200e-6
PARSE_S_PER_GUEST = 10e-6
POST_MAX_SHARE = 0.5
# Objective "cost": wave bound per migration of the target, plus a floor (a plan needing more is mostly one
# migration at a time; successful ROADEF plans of 400-900 migrations need under 20 waves), and the share of the
# budget (at most COST_SCHEDULE_MAX_S) kept from the search for ordering the migrations and, when the final
# placement cannot be ordered safely, for the stages through the placements the search kept (each stage: a
# few attempts, galloping then bisection).
COST_WAVES_PER_MOVE = 0.25
COST_WAVES_MIN = 50
COST_SCHEDULE_SHARE = 0.1
COST_SCHEDULE_MAX_S = 30.0
# Objective "cost": rounds of sending blocked guests elsewhere, and the most blocked guests worth it.
REDIRECT_ROUNDS = 5
REDIRECT_MAX = 20
# Share of the budget kept as a margin against timing noise (GC pauses, a busy machine).
SAFETY_SHARE = 0.05
# Small documents parse slowly per guest (fixed costs): never assume worse than this.
MAX_SLOWDOWN = 4.0


def _slowdown(st, parse_s):
    return min(MAX_SLOWDOWN, max(1.0, parse_s / (PARSE_S_PER_GUEST * max(1, st.n_vms + st.n_hosts))))


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
    slow = _slowdown(st, phases["parse_s"])
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
        pk, reasons, sched = _schedule_target(prob, pk, reasons, deadline, stats)
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
    return {"feasible": True, "steps": steps, "waves": waves,
            "assignment": {st.vm_ids[v]: st.host_ids[final[v]] for v in range(st.n_vms) if final[v] >= 0},
            "metrics": metrics, "conflicts": [], "explain": summary_lines(prob, metrics, steps, [], soft)}


def _schedule_target(prob, pk, reasons, deadline, stats):
    """(Packing, Reasons, Schedule) for the search's target; when its migrations cannot be ordered safely,
    the latest placement the cost search passed through that can be (objective "cost"), else the fewest
    required moves. Raises ScheduleError when even those cannot be ordered."""
    st, cons, opts = prob.state, prob.cons, prob.options
    try:
        return pk, reasons, schedule(pk, list(pk.asg), _wave_cap(pk, opts))
    except ScheduleError as exc:
        first = exc
    if opts["objective"] == "cost":
        # (no "cost" entry when the search left guests unplaced and so did not run the cost search)
        stats.setdefault("cost", {})
        final = list(pk.asg)
        sched = _schedule_redirected(pk, reasons, opts, first.items, deadline)
        if sched is not None:
            stats["cost"]["redirected"] = sum(1 for i, h in enumerate(pk.asg) if h != final[i])
            stats["cost"]["scheduled"] = round(CostModel(pk, opts["service_move_cost"]).total()["total"], 3)
            return pk, reasons, sched
        pk.reset(final)
        sched = _schedule_checkpoint(pk, reasons, opts, deadline, stats)
        if sched is not None:
            return pk, reasons, sched
    pk, reasons, left, _f = _repair(st, cons, opts, ref_caps(st), allow_off=opts["allow_power_on"])
    if left or pk.hard_violations():
        raise first
    stats["schedule_fallback"] = True
    return pk, reasons, schedule(pk, list(pk.asg), opts)


def _wave_cap(pk, opts):
    """Objective "cost": a target whose migrations need more waves than ``COST_WAVES_PER_MOVE`` of their
    number is given up early (the scheduler otherwise bounces blocked guests between temporary hosts up to
    three waves per move before it gives up, seconds the checkpoint fallback needs)."""
    if opts["objective"] != "cost" or opts["max_waves"] is not None:
        return opts
    return dict(opts, max_waves=int(COST_WAVES_PER_MOVE * pk.migrations()) + COST_WAVES_MIN)


def _schedule_redirected(pk, reasons, opts, blocked, deadline):
    """Objective "cost": send the guests the scheduler could not order (a swap of two guests that fit
    nowhere else meanwhile, say) to another host their target allows, home first, and schedule again, up to
    ``REDIRECT_ROUNDS`` times. Returns the schedule (``pk`` on the changed target) or None."""
    st = pk.state
    for _round in range(REDIRECT_ROUNDS):
        if len(blocked) > REDIRECT_MAX or time.monotonic() > deadline:
            return None
        # All of them out first: two guests swapping hosts can both go home only once both have left.
        movers = [i for i in blocked if pk.nmem[i] == 1 and pk.asg[i] != pk.home[i]]
        was = {i: pk.asg[i] for i in movers}
        for i in movers:
            pk.move(i, -1)
        for i in movers:
            dests = [pk.home[i]] + sorted((h for h in range(pk.nh) if st.power_on[h] and h != was[i]), key=pk.load)
            dest = next((h for h in dests if h >= 0 and pk.can_place(i, h)), was[i])
            pk.move(i, dest)
            if dest != was[i]:
                reasons.set(i, "objective:cost", "sent to %s: its first target could not be reached safely"
                            % st.host_ids[dest], force=True)
        if pk.hard_violations():
            return None
        try:
            return schedule(pk, list(pk.asg), _wave_cap(pk, opts))
        except ScheduleError as exc:
            blocked = exc.items
    return None


def _furthest(pk, cps, reached, start, opts, deadline):
    """(index, schedule) of the furthest kept placement after ``reached`` the scheduler can order from
    ``start``: galloping (the next one, then 2, 4, ... further) then bisection, so a stage costs about twice the
    logarithm of its length in attempts (failed ones are the slow ones). None when not even the next one can."""

    def attempt(k):
        pk.reset(cps[k][1])
        try:
            return schedule(pk, list(pk.asg), _wave_cap(pk, opts), start)
        except ScheduleError:
            return None
    last = len(cps) - 1
    found, step, bad = None, 1, None
    while time.monotonic() < deadline:
        k = min(reached + step, last)
        sched = attempt(k)
        if sched is None:
            bad = k
            break
        found = (k, sched)
        if k == last:
            return found
        step *= 2
    if found is None:
        return None
    lo, hi = found[0] + 1, bad - 1 if bad is not None else found[0]
    while lo <= hi and time.monotonic() < deadline:
        mid = (lo + hi) // 2
        sched = attempt(mid)
        if sched is None:
            hi = mid - 1
        else:
            found, lo = (mid, sched), mid + 1
    return found


def _schedule_checkpoint(pk, reasons, opts, deadline, stats):
    """Stages through the placements the cost search kept on its way: from where the last stage ends, the
    furthest kept placement (the final one included) the scheduler can order safely, found by bisection,
    while time is left. Returns the stages' schedule run one after the other (``pk`` left on the placement
    the last stage reaches), or None when not even the first can be ordered."""
    cps = list(getattr(pk, "checkpoints", None) or [])
    if not cps:
        return None
    cps.append((CostModel(pk, opts["service_move_cost"]).total()["total"], list(pk.asg)))
    st = pk.state
    start, reached, stages = list(st.host_of), -1, []
    while reached < len(cps) - 1 and time.monotonic() < deadline:
        found = _furthest(pk, cps, reached, start, opts, deadline)
        if found is None:
            break
        reached, sched = found
        stages.append(sched)
        for i, h in enumerate(cps[reached][1]):
            for v in pk.members[i]:
                start[v] = h if h >= 0 else start[v]
    if not stages:
        return None
    pk.reset(cps[reached][1])
    stats["cost"]["scheduled"] = round(cps[reached][0], 3)
    stats["cost"]["stages"] = len(stages)
    stats["cost"]["checkpoint"] = "%d of %d" % (reached + 1, len(cps))
    before = stats["cost"].get("before", {}).get("total", cps[0][0])
    text = "weighted cost %.0f -> %.0f (in %d stages: the migrations to the lowest-cost placement cannot be " \
           "ordered safely in one)" % (before, cps[reached][0], len(stages))
    for i, h in enumerate(pk.asg):
        if h != pk.home[i]:
            reasons.set(i, "objective:cost", text, force=True)
    return concatenate(stages)


def _imbalance(st, pk):
    """Max host utilisation minus min over used hosts, in percent points (worst resource)."""
    hosts = [h for h in range(st.n_hosts) if pk.cnt[h] > 0]
    worst = 0.0
    for r in range(len(st.res)):
        utils = [100.0 * pk.used[r][h] / st.cap[r][h] for h in hosts if st.cap[r][h] > 0]
        if utils:
            worst = max(worst, max(utils) - min(utils))
    return round(worst, 1)
