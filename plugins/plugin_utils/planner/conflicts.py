"""Explain infeasibility: a small set of hard expectations that cannot hold together."""

from __future__ import annotations

import time

from .expectations import Constraints

# Deletion filtering re-runs the repair once per candidate; cap the candidates to bound the time.
MAX_CANDIDATES = 24


def static_conflicts(prob):
    """Cheap, certain conflicts found without searching."""
    st, cons = prob.state, prob.cons
    out = []
    usable = [cons.blocked[h] is None and (st.power_on[h] or prob.options["allow_power_on"]) for h in range(st.n_hosts)]
    for e in cons.exps:
        if e.type == "must_run":
            idle = [st.vm_ids[v] for v in e.vms if st.host_of[v] < 0]
            if idle:
                out.append({"expectations": [e.id], "text": "guest(s) %s not running; starting guests is not a planner step"
                            % ", ".join(idle[:5])})
    usable_hosts = [h for h in range(st.n_hosts) if usable[h]]  # once: many blocked hosts made this guests x hosts
    for v in range(st.n_vms):
        if st.host_of[v] < 0:
            continue
        if not any(cons.allowed(st, v, h) for h in usable_hosts):
            cand = list(cons.place_exps[v] or []) + sorted({b for b in cons.blocked if b is not None})
            out.append({"expectations": _min_hostless(st, cons, v, cand, usable),
                        "text": "no host may run guest %s" % st.vm_ids[v]})
            if len(out) > 10:
                return out
    counted = {}
    for e, vms, lab in cons.aa:
        if lab not in counted:
            keys, all_keys = set(), set()
            for h in range(st.n_hosts):
                k = h if lab is None else cons.label_key[lab][h]
                all_keys.add(k)
                if usable[h]:
                    keys.add(k)
            counted[lab] = (len(keys), len(all_keys))
        n_keys, n_all = counted[lab]
        if n_keys < len(vms):
            # Maintenance is part of the conflict only when the group would fit without it.
            blocked = sorted({b for b in cons.blocked if b is not None}) if n_all >= len(vms) else []
            where = "hosts" if lab is None else "values of label " + lab
            out.append({"expectations": [e.id] + blocked,
                        "text": "%d guests in anti-affinity over %d %s" % (len(vms), n_keys, where)})
    for e, vms in cons.aff:
        # the anti-affinity groups of the affinity group's own guests (cons.vm_aa), not every pair of groups
        members = {}
        for v in vms:
            for gi in cons.vm_aa[v] or ():
                members.setdefault(gi, set()).add(v)
        for gi in sorted(members):
            common = members[gi]
            if len(common) >= 2:
                out.append({"expectations": [e.id, cons.aa[gi][0].id], "text": "guests %s must be together and apart"
                            % ", ".join(sorted(st.vm_ids[v] for v in common))})
    for r, name in enumerate(st.res):
        if name not in st.packing and not any(x is not None for x in cons.limit_exp[r]):
            continue
        need = sum(st.dem[r][v] for v in range(st.n_vms) if st.host_of[v] >= 0)
        have = sum(cons.limit[r][h] for h in range(st.n_hosts) if usable[h])
        if need > have + 1e-9:
            ids = sorted({x for x in cons.limit_exp[r] if x is not None} | {b for b in cons.blocked if b is not None})
            out.append({"expectations": ids or ["capacity"],
                        "text": "%s demand %.0f exceeds the usable limit %.0f" % (name, need, have)})
    return out


def _min_hostless(st, cons, v, cand, usable):
    """Deletion filter on the restrictions that leave guest ``v`` without a host."""
    keep = list(dict.fromkeys(cand))
    for c in list(keep):
        trial = [x for x in keep if x != c]
        if not _has_host(st, cons, v, set(trial), usable):
            keep = trial
    return keep or cand or ["requires-" + st.vm_ids[v]]


def _has_host(st, cons, v, active, usable):
    for h in range(st.n_hosts):
        b = cons.blocked[h]
        if b is not None and b in active:
            continue
        if b is not None and b.startswith("maintenance-flag-"):
            continue
        if not usable[h] and b is None:
            continue
        ok = True
        for e in cons.exps:
            if e.id not in active or v not in e.vms:
                continue
            if e.type == "ban" and h in e.hosts:
                ok = False
            elif e.type == "fence" and h not in e.hosts:
                ok = False
            elif e.type == "features":
                m = st.mask_of(e.features)
                ok = st.fmask[h] & m == m
            if not ok:
                break
        if ok and st.requires[v] and st.fmask[h] & st.requires[v] != st.requires[v]:
            ok = False
        if ok:
            return True
    return False


def search_conflicts(prob, pk, violations, deadline, repair):
    """Deletion filter over the hard expectations involved in what the repair left unsolved."""
    st, cons = prob.state, prob.cons
    cand = []
    for eid, _text in violations:
        if eid in cons.by_id:
            cand.append(eid)
    for i, h in enumerate(pk.asg):
        if h >= 0 or pk.home[i] < 0:
            continue
        for v in pk.members[i]:
            cand.extend(cons.place_exps[v] or [])
            for gi in cons.vm_aa[v] or []:
                cand.append(cons.aa[gi][0].id)
    for e in cons.exps:
        if e.hard and e.type in ("ceiling", "maintenance", "affinity"):
            cand.append(e.id)
    cand = [c for c in dict.fromkeys(cand) if c in cons.by_id][:MAX_CANDIDATES]
    text = "; ".join(t for _e, t in violations[:3]) or "no placement found"
    if not cand:
        return [{"expectations": ["capacity"], "text": text}]
    keep = list(cand)
    for c in cand:
        if time.monotonic() > deadline:
            break
        trial = set(keep) - {c}
        exps = [e for e in cons.exps if e.id in trial or e.id not in cand]
        if not repair(Constraints(st, exps)):
            keep = [x for x in keep if x != c]
    return [{"expectations": keep or ["capacity"], "text": text}]
