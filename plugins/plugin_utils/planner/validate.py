"""Plan checker: FORMAT.md validity rules 1-5 plus every hard expectation, independent of the search.

``check_plan(doc, result)`` returns a list of error strings (empty = valid). Usable by tests and the bench.
"""

from __future__ import annotations

from .parse import parse_document

EPS = 1e-6


def check_plan(doc, result, check_expectations=True):
    """Errors of ``result`` (plan_document output or a FORMAT.md result) against ``doc``."""
    prob = parse_document(doc)
    st, cons = prob.state, prob.cons
    errs = []
    if result.get("feasible") is False:
        if result.get("steps") or result.get("waves"):
            errs.append("infeasible result carries steps or waves")
        if not result.get("conflicts"):
            errs.append("infeasible result names no conflicts")
        return errs
    hosts = st.host_ids
    hidx = st.host_index
    init = {st.vm_ids[v]: hosts[h] for v, h in enumerate(st.host_of) if h >= 0}
    dem = {st.vm_ids[v]: [st.dem[r][v] for r in range(len(st.res))] for v in range(st.n_vms)}
    # Planning demand may differ from the document (cpu caps applied by tune steps, memory guarantees).
    tuned = {s["vm"] for s in result.get("steps", []) if s.get("kind") == "tune"}
    for v, (_e, capped) in cons.tune.items():
        if st.vm_ids[v] in tuned:
            dem[st.vm_ids[v]][st.res.index("cpu")] = min(dem[st.vm_ids[v]][st.res.index("cpu")], capped)
    if "mem" in st.res:
        for v, (_e, mn) in cons.guarantee.items():
            r = st.res.index("mem")
            dem[st.vm_ids[v]][r] = max(dem[st.vm_ids[v]][r], mn)
    ksm_credit = _memory_steps(st, cons, result, dem, errs)
    packing = [st.res.index(r) for r in st.packing]
    limit_rs = list(range(len(st.res))) if check_expectations else packing

    def limit(r, h):
        return (cons.limit[r][h] if check_expectations else st.cap[r][h]) + ksm_credit.get((r, h), 0)

    def allowed(vm, host):
        v, h = st.vm_index[vm], hidx[host]
        if not check_expectations:
            rq = st.requires[v]
            if rq and st.fmask[h] & rq != rq:
                return False
            return not (cons.ban[v] and h in cons.ban[v])
        return cons.allowed(st, v, h)

    groups = [(e.id, [st.vm_ids[v] for v in vms], lab) for (e, vms, lab) in cons.aa]

    def aa_ok(place, group):
        _gid, vms, lab = group
        seen = set()
        for vm in vms:
            if vm not in place:
                continue
            h = hidx[place[vm]]
            k = h if lab is None else cons.label_key[lab][h]
            if k in seen:
                return False
            seen.add(k)
        return True

    # Rule 2: replay the waves.
    cur = dict(init)
    limit_per_host = prob.options["max_migrations_per_host"]
    bundles = _affinity_bundles(st, cons)
    now = {}
    for vm, h in cur.items():
        lo = now.setdefault(h, [0] * len(st.res))
        for r in range(len(st.res)):
            lo[r] += dem[vm][r]
    for w, wave in enumerate(result.get("waves", [])):
        moved = set()
        touch = {}
        arrivals = {}
        for m in wave:
            vm, src, dst = m.get("vm"), m.get("from"), m.get("to")
            if vm not in cur:
                errs.append("wave %d: unknown or idle guest %r" % (w, vm))
                continue
            if vm in moved:
                errs.append("wave %d: %s moves twice" % (w, vm))
            moved.add(vm)
            if cur[vm] != src:
                errs.append("wave %d: %s moves from %s but is on %s" % (w, vm, src, cur[vm]))
            if dst not in hidx:
                errs.append("wave %d: %s to unknown host %r" % (w, vm, dst))
                continue
            if not allowed(vm, dst):
                errs.append("wave %d: %s to forbidden host %s (rule 4)" % (w, vm, dst))
            # Rule 5: an affinity bundle moving together between the same hosts counts once (nested or
            # overlapping groups form one bundle).
            tag = (bundles.get(vm) or vm, src, dst)
            for h in (src, dst):
                touch.setdefault(h, set()).add(tag)
            arrivals.setdefault(dst, []).append(vm)
        for h, tags in touch.items():
            if len(tags) > limit_per_host:
                errs.append("wave %d: %d migrations touch %s > %d (rule 5)" % (w, len(tags), h, limit_per_host))
        # Rule 3: receivers hold everything present at wave start plus arrivals.
        for h, arr in arrivals.items():
            for r in limit_rs:
                tot = now.get(h, [0] * len(st.res))[r] + sum(dem[vm][r] for vm in arr)
                if tot > limit(r, hidx[h]) + EPS:
                    errs.append("wave %d: %s %s %.0f > %.0f while guests move (rule 3)" % (w, h, st.res[r], tot,
                                                                                           limit(r, hidx[h])))
        before = [aa_ok(cur, g) for g in groups]
        rules_before = _label_rules(st, cons, cur) if check_expectations else None
        aff_before = [len({cur.get(st.vm_ids[v]) for v in vms if st.vm_ids[v] in cur}) <= 1 for _e, vms in cons.aff]
        for m in wave:
            vm = m.get("vm")
            if vm in cur and m.get("to") in hidx:
                src_load = now.setdefault(cur[vm], [0] * len(st.res))
                dst_load = now.setdefault(m["to"], [0] * len(st.res))
                for r in range(len(st.res)):
                    src_load[r] -= dem[vm][r]
                    dst_load[r] += dem[vm][r]
                cur[vm] = m["to"]
        for g, ok in zip(groups, before):
            if ok and not aa_ok(cur, g):
                errs.append("wave %d: anti-affinity %s broken (rule 4)" % (w, g[0]))
        if check_expectations:
            for (e, vms), ok in zip(cons.aff, aff_before):
                hs = {cur.get(st.vm_ids[v]) for v in vms if st.vm_ids[v] in cur}
                if ok and len(hs) > 1:
                    errs.append("wave %d: affinity %s split" % (w, e.id))
            # Spread and depends between waves, as anti-affinity: a rule that held before a wave holds after it.
            for eid, ok, ok_after in zip(rules_before[0], rules_before[1], _label_rules(st, cons, cur)[1]):
                if ok and not ok_after:
                    errs.append("wave %d: %s broken between waves" % (w, eid))
    final = result.get("assignment", {})
    for vm, h in cur.items():
        if final.get(vm) != h:
            errs.append("assignment of %s is %r but the waves end on %s (rule 2)" % (vm, final.get(vm), h))
    # Rule 1 on the final placement.
    for vm, h in final.items():
        if vm not in init:
            errs.append("assignment names unknown or idle guest %r" % (vm,))
        elif h not in hidx:
            errs.append("%s assigned to unknown host %r" % (vm, h))
        elif not allowed(vm, h):
            errs.append("%s on forbidden host %s (rule 1)" % (vm, h))
    load = {}
    for vm, h in final.items():
        if vm in dem and h in hidx:
            lo = load.setdefault(h, [0] * len(st.res))
            for r in range(len(st.res)):
                lo[r] += dem[vm][r]
    for h, lo in load.items():
        for r in limit_rs:
            if lo[r] > limit(r, hidx[h]) + EPS:
                errs.append("%s %s %.0f > %.0f at the end (rule 1)" % (h, st.res[r], lo[r], limit(r, hidx[h])))
    for g in groups:
        if not aa_ok(final, g):
            errs.append("anti-affinity %s broken at the end (rule 1)" % g[0])
    if check_expectations:
        for e, vms in cons.aff:
            if len({final.get(st.vm_ids[v]) for v in vms}) > 1:
                errs.append("affinity %s split at the end" % e.id)
        _final_rules(st, cons, final, init, dem, limit, errs)
        off = {s["host"] for s in result.get("steps", []) if s.get("kind") == "power_off"}
        for vm, h in final.items():
            if h in off:
                errs.append("%s ends on powered-off host %s" % (vm, h))
            elif h in hidx and not st.power_on[hidx[h]] and not any(
                    s.get("kind") == "power_on" and s.get("host") == h for s in result.get("steps", [])):
                errs.append("%s ends on host %s that is off" % (vm, h))
    return errs


def _label_values(st, cons, place, vms, lab):
    """Values of host label ``lab`` under the guests ``vms`` in ``place`` (guest id -> host id)."""
    hidx = st.host_index
    return {cons.label_key[lab][hidx[place[st.vm_ids[v]]]] for v in vms if place.get(st.vm_ids[v]) in hidx}


def _label_rules(st, cons, place):
    """(ids, holds) of the spread and depends expectations on ``place`` (guest id -> host id)."""
    ids = [e.id for e, _vms, _lab, _n in cons.spread] + [e.id for e, _dep, _on, _lab in cons.depends]
    holds = [len(_label_values(st, cons, place, vms, lab)) >= n for _e, vms, lab, n in cons.spread]
    holds += [not _label_values(st, cons, place, dep, lab) - _label_values(st, cons, place, on, lab)
              for _e, dep, on, lab in cons.depends]
    return ids, holds


def _final_rules(st, cons, final, init, dem, limit, errs):
    """Spread, depends and transient usage on the final placement."""
    hidx = st.host_index
    for e, vms, lab, n in cons.spread:
        got = len(_label_values(st, cons, final, vms, lab))
        if got < n:
            errs.append("spread %s covers %d %s value(s) < %d at the end" % (e.id, got, lab, n))
    for e, dep, on, lab in cons.depends:
        missing = _label_values(st, cons, final, dep, lab) - _label_values(st, cons, final, on, lab)
        if missing:
            errs.append("depends %s: %s %s holds dependants and none they depend on at the end" % (
                e.id, lab, sorted(map(str, missing))[0]))
    for r in st.transient:
        # A guest that left its host still holds its transient usage there.
        held = {}
        for vm, h in final.items():
            if vm in dem and h in hidx:
                held[h] = held.get(h, 0) + dem[vm][r]
                if init.get(vm) not in (None, h):
                    held[init[vm]] = held.get(init[vm], 0) + dem[vm][r]
        for h, x in held.items():
            if x > limit(r, hidx[h]) + EPS:
                errs.append("%s %s %.0f with guests that left > %.0f at the end (transient)" % (
                    h, st.res[r], x, limit(r, hidx[h])))


def _affinity_bundles(st, cons):
    """Guest id -> bundle name: hard affinity groups that share a guest are one bundle (they must all end
    on one host), named after one of its groups; guests in no hard affinity group are left out."""
    parent = {}

    def root(vm):
        while parent[vm] != vm:
            parent[vm] = parent[parent[vm]]
            vm = parent[vm]
        return vm
    first_group = {}
    for e, vms in cons.aff:
        names = [st.vm_ids[v] for v in vms]
        for vm in names:
            if vm not in parent:
                parent[vm] = vm
                first_group[vm] = e.id
        top = root(names[0])
        for vm in names[1:]:
            other = root(vm)
            if other != top:
                parent[other] = top
    return {vm: first_group[root(vm)] for vm in parent}


def _memory_steps(st, cons, result, dem, errs):
    """Balloon steps set a guest's memory demand (never below its guarantee, only before the first
    migration); KSM steps raise their host's memory limit by the predicted saving (switching KSM off lowers it
    by the sharing that was credited). Returns the credits."""
    credit = {}
    if "mem" not in st.res:
        return credit
    r = st.res.index("mem")
    first_move = min((s.get("wave", 0) for s in result.get("steps", []) if s.get("kind") == "migrate"), default=None)
    for s in result.get("steps", []):
        kind = s.get("kind")
        if kind not in ("balloon", "ksm"):
            continue
        if first_move is not None and s.get("wave", 0) >= first_move:
            errs.append("step %s: %s step in wave %s, not before the migrations" % (s.get("id"), kind, s.get("wave")))
        if kind == "ksm":
            h = st.host_index.get(s.get("host"))
            saved = (s.get("predicted") or {}).get("memory_saved_mib") or 0
            if h is None:
                errs.append("step %s: KSM on unknown host %r" % (s.get("id"), s.get("host")))
            elif (s.get("enable") and saved > 0) or (not s.get("enable") and saved < 0):
                # on: the predicted saving; off: the running KSM's credited sharing is given back
                credit[(r, h)] = credit.get((r, h), 0) + saved
            continue
        v = st.vm_index.get(s.get("vm"))
        target = s.get("target_mib")
        if v is None or not isinstance(target, (int, float)):
            errs.append("step %s: balloon of unknown guest %r or bad target %r" % (s.get("id"), s.get("vm"), target))
            continue
        g = cons.guarantee.get(v)
        if g is not None and target < g[1] - EPS:
            errs.append("step %s: balloon of %s to %s MiB crosses its guarantee of %s MiB (%s)" % (
                s.get("id"), s["vm"], target, g[1], g[0].id))
        dem[s["vm"]][r] = target
    return credit
