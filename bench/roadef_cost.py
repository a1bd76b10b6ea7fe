"""ROADEF/EURO 2012 machine reassignment: exact objective and hard-constraint checker (numpy).

Objective (challenge specification, section 3), for assignment ``a`` against the initial ``a0``:
  load      = sum_r w_load[r] * sum_m max(0, U[m,r] - SC[m,r])
  balance   = sum_b w_b * sum_m max(0, target_b * A[m,r1_b] - A[m,r2_b]),  A = C - U
  process   = w_pmc * sum_{p moved} PMC[p]
  service   = w_smc * max_s |{p in s moved}|
  machine   = w_mmc * sum_p MMC[a0[p], a[p]]
U[m,r] is the usage of the processes assigned to m. All arithmetic is exact int64 (the largest
A-instance terms are about 1e10, far from 9.2e18).

Hard constraints (section 2): capacity (for transient resources a moved process also counts on
its original machine), conflict (processes of one service on distinct machines), spread (a
service's processes on at least spread_min distinct locations), dependency (if s depends on d,
every neighbourhood holding a process of s holds one of d).
"""
from __future__ import annotations

import numpy as np


def usage(inst, a):
    """U[m, r]: resource usage per machine under assignment ``a``."""
    u = np.zeros((inst.M, inst.R), dtype=np.int64)
    np.add.at(u, a, inst.req)
    return u


def cost(inst, a, u=None):
    """Cost components and total (Python ints) of assignment ``a``."""
    a = np.asarray(a, dtype=np.int64)
    if u is None:
        u = usage(inst, a)
    over = np.maximum(0, u - inst.scap).sum(axis=0)
    load = int((inst.wload * over).sum())
    balance = 0
    if inst.bal.shape[0]:
        avail = inst.cap - u
        for r1, r2, target, w in inst.bal.tolist():
            balance += int(w) * int(np.maximum(0, target * avail[:, r1] - avail[:, r2]).sum())
    moved = a != inst.a0
    n_moved = int(moved.sum())
    pmove = inst.w_pmc * int(inst.pmc[moved].sum())
    smove = inst.w_smc * (int(np.bincount(inst.serv[moved], minlength=inst.S).max()) if n_moved else 0)
    mmove = inst.w_mmc * int(inst.mmc[inst.a0, a].sum())
    return {"total": load + balance + pmove + smove + mmove, "load": load, "balance": balance,
            "process_move": pmove, "service_move": smove, "machine_move": mmove, "moved": n_moved}


def violations(inst, a, limit=20):
    """Hard-constraint violations of ``a``: list of {"kind", "count", "examples"} (empty = valid).

    kinds: range, capacity, transient_capacity, conflict, spread, dependency.
    """
    # pylint: disable=too-many-locals
    a = np.asarray(a, dtype=np.int64)
    out = []

    def add(kind, items):
        if items:
            out.append({"kind": kind, "count": len(items), "examples": items[:limit]})

    if a.shape != (inst.P,) or (a.size and (a.min() < 0 or a.max() >= inst.M)):
        add("range", ["assignment must hold %d machine indexes in 0..%d" % (inst.P, inst.M - 1)])
        return out
    u = usage(inst, a)
    over = u > inst.cap
    add("capacity", ["m%d r%d: %d > %d" % (m, r, u[m, r], inst.cap[m, r]) for m, r in np.argwhere(over).tolist()])
    if inst.transient.any():
        moved = np.flatnonzero(a != inst.a0)
        ut = u.copy()
        np.add.at(ut, inst.a0[moved], inst.req[moved])
        tr = np.flatnonzero(inst.transient)
        bad = (ut[:, tr] > inst.cap[:, tr]) & ~over[:, tr]
        add("transient_capacity", ["m%d r%d: %d > %d" % (m, tr[k], ut[m, tr[k]], inst.cap[m, tr[k]])
                                   for m, k in np.argwhere(bad).tolist()])
    # conflict: (service, machine) pairs holding two or more processes
    key = inst.serv * inst.M + a
    uniq, cnt = np.unique(key, return_counts=True)
    dup = cnt > 1
    add("conflict", ["s%d on m%d x%d" % (k // inst.M, k % inst.M, c)
                     for k, c in zip(uniq[dup].tolist(), cnt[dup].tolist())])
    # spread: distinct locations per service
    loc_ids = np.unique(inst.loc, return_inverse=True)[1].reshape(-1)
    n_loc = int(loc_ids.max()) + 1 if loc_ids.size else 1
    sl = np.unique(inst.serv * n_loc + loc_ids[a])
    per_service = np.bincount(sl // n_loc, minlength=inst.S)
    bad = np.flatnonzero(per_service < inst.spread)
    add("spread", ["s%d on %d < %d locations" % (s, per_service[s], inst.spread[s]) for s in bad.tolist()])
    # dependency: neighbourhoods of s must be a subset of those of d
    if inst.dep_idx.size:
        nb_ids = np.unique(inst.neigh, return_inverse=True)[1].reshape(-1)
        n_nb = int(nb_ids.max()) + 1
        present = np.zeros((inst.S, n_nb), dtype=bool)
        present[inst.serv, nb_ids[a]] = True
        src = np.repeat(np.arange(inst.S), np.diff(inst.dep_ptr))
        missing = present[src] & ~present[inst.dep_idx]
        rows = np.flatnonzero(missing.any(axis=1))
        add("dependency", ["s%d -> s%d" % (src[i], inst.dep_idx[i]) for i in rows.tolist()])
    return out


def is_valid(inst, a):
    return not violations(inst, a)


def lower_bound_gap(value, initial, lb):
    """(value - LB) / (initial - LB): 0 at the lower bound, 1 at the initial assignment."""
    return None if initial == lb else (value - lb) / float(initial - lb)
