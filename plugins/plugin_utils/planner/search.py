"""Target placement search: repair of hard violations, then the objective (balance or consolidate).

Anytime and deadline-bound; all randomness comes from one seeded ``random.Random``.
"""

from __future__ import annotations

import heapq
import random
import time

from .consolidate import consolidate, empty_within_budget, spread_arrivals
from .costsearch import improve_cost
from .packing import Packing
from .soft import improve_soft

INF = float("inf")


class Reasons:
    """Why each item moves: expectation id and a short text."""

    def __init__(self):
        self.by_item = {}

    def set(self, i, eid, text, force=False):
        if force or i not in self.by_item:
            self.by_item[i] = (eid, text)


class LoadHeap:
    """Hosts ordered by load (min-heap; ``sign=-1`` gives a max-heap) with lazy invalidation."""

    def __init__(self, pk, hosts, sign=1):
        self.pk, self.sign = pk, sign
        self.ver = {}
        self.h = []
        for h in hosts:
            self.push(h)

    def push(self, h):
        v = self.ver.get(h, 0) + 1
        self.ver[h] = v
        heapq.heappush(self.h, (self.sign * self.pk.load(h), h, v))

    def pop(self):
        while self.h:
            _l, h, v = heapq.heappop(self.h)
            if self.ver.get(h) == v:
                self.ver[h] = v + 1    # consumed: re-push to bring it back
                return h
        return None


def usable_hosts(state, cons, allow_off):
    return [(state.power_on[h] or allow_off) and cons.blocked[h] is None for h in range(state.n_hosts)]


def pin_cooldown(pk, state, cooldown_s):
    """Guests migrated less than ``cooldown_s`` ago stay unless a hard expectation moves them."""
    for i, m in enumerate(pk.members):
        for v in m:
            ago = state.last_migrated[v]
            if ago is not None and ago < cooldown_s:
                pk.pinned[i] = True


def evict_for_rules(pk, reasons):
    """Take out items on hosts they may not use, and anti-affinity duplicates. Returns the items."""
    st, cons = pk.state, pk.cons
    out = []
    for i, h in enumerate(pk.asg):
        if h >= 0 and not pk.allowed(i, h):
            why = None
            for v in pk.members[i]:
                why = why or cons.why_not_allowed(st, v, h)
            if why is None and not pk.usable[h]:
                why = "power"
            reasons.set(i, why or "rules", "%s may not run on %s" % (st.vm_ids[pk.members[i][0]], st.host_ids[h]))
            pk.move(i, -1)
            out.append(i)
    for gi, (e, vms, _lab) in enumerate(cons.aa):
        seen = {}
        kf = pk.keyf[gi]
        # Pinned guests keep their place first; then the order of the group.
        order = sorted({pk.item_of[v] for v in vms}, key=lambda i: (not pk.pinned[i], i))
        for i in order:
            h = pk.asg[i]
            if h < 0:
                continue
            k = h if kf is None else kf[h]
            if k in seen:
                reasons.set(i, e.id, "%s shares %s with %s" % (st.vm_ids[pk.members[i][0]], st.host_ids[h],
                                                               st.vm_ids[pk.members[seen[k]][0]]))
                pk.move(i, -1)
                out.append(i)
            else:
                seen[k] = i
    return out


def evict_for_limits(pk, reasons, ref):
    """Take items off hosts above a hard limit: fewest items, smallest sufficient first."""
    st, cons = pk.state, pk.cons
    out = []
    by_host = None
    for h in range(pk.nh):
        if not pk.over(h):
            continue
        if by_host is None:
            by_host = pk.items_by_host()
        items = [i for i in by_host[h] if pk.asg[i] == h]
        while pk.over(h) and items:
            # Worst resource by excess ratio.
            rw, worst = 0, -INF
            for r in range(pk.nr):
                lim = pk.lim[r][h]
                ex = (pk.used[r][h] - lim) / (lim if lim > 0 else 1.0)
                if ex > worst:
                    rw, worst = r, ex
            excess = pk.used[rw][h] - pk.lim[rw][h]
            cand = [i for i in items if not pk.pinned[i]] or items
            d = pk.dem[rw]
            enough = [i for i in cand if d[i] >= excess]
            if enough:
                i = min(enough, key=lambda j, d=d: (d[j], pk.size(j, ref), j))
            else:
                i = max(cand, key=lambda j, d=d: (d[j], -j))
            items.remove(i)
            eid = cons.limit_exp[rw][h] or "capacity"
            reasons.set(i, eid, "%s %s %.0f%% > limit %.0f%%" % (
                st.host_ids[h], st.res[rw], 100.0 * pk.used[rw][h] / st.cap[rw][h] if st.cap[rw][h] else INF,
                100.0 * pk.lim[rw][h] / st.cap[rw][h] if st.cap[rw][h] else 0.0))
            pk.move(i, -1)
            out.append(i)
    return out


def place_least_loaded(pk, items, ref, reasons):
    """Place items (largest first) on the least-loaded feasible host. Returns the unplaced ones."""
    hosts = [h for h in range(pk.nh) if pk.usable[h]]
    heap = LoadHeap(pk, hosts)
    failed = []
    for i in sorted(items, key=lambda j: (-pk.size(j, ref), j)):
        tried = []
        dest = None
        while True:
            h = heap.pop()
            if h is None:
                break
            tried.append(h)
            if pk.can_place(i, h):
                dest = h
                break
        if dest is not None:
            pk.move(i, dest)
        for h in tried:
            heap.push(h)
        if dest is None:
            failed.append(i)
    return _eject_repair(pk, failed, ref, reasons)


def _eject_repair(pk, failed, ref, reasons):
    """For each unplaced item, free room on some host by moving one movable item elsewhere."""
    st = pk.state
    left = []
    by_host = pk.items_by_host() if failed else None
    for i in failed:
        done = False
        for h in range(pk.nh):
            if not (pk.allowed(i, h) and pk.aa_ok(i, h)):
                continue
            for j in sorted(by_host[h], key=lambda x: (-pk.size(x, ref), x)):
                if pk.asg[j] != h or pk.pinned[j]:
                    continue
                pk.move(j, -1)
                if pk.fits(i, h):
                    pk.move(i, h)
                    dest = _first_fit(pk, j, exclude=h)
                    if dest is not None:
                        pk.move(j, dest)
                        by_host[h].append(i)
                        by_host[dest].append(j)
                        reasons.set(j, reasons.by_item.get(i, ("rules", ""))[0],
                                    "make room on %s for %s" % (st.host_ids[h], st.vm_ids[pk.members[i][0]]))
                        done = True
                        break
                    pk.move(i, -1)
                pk.move(j, h)
            if done:
                break
        if not done:
            left.append(i)
    return left


def _first_fit(pk, i, exclude=-1):
    for h in range(pk.nh):
        if h != exclude and pk.can_place(i, h):
            return h
    return None


def balance(pk, reasons, deadline, opts, budget_left):
    """Move items from the most-loaded host to the least-loaded while the gain per GiB pays off."""
    st = pk.state
    hosts = [h for h in range(pk.nh) if pk.usable[h] and st.power_on[h]]
    if len(hosts) < 2:
        return 0
    min_gain = opts["min_gain_per_gib"]
    # Only hosts clearly above the mean are relieved (hysteresis against migration storms).
    mean = sum(pk.load(h) for h in hosts) / len(hosts)
    hot = mean + opts["balance_threshold_pct"] / 100.0
    moves = 0
    by_host = pk.items_by_host()
    hi = LoadHeap(pk, hosts, sign=-1)
    lo = LoadHeap(pk, hosts)
    while time.monotonic() < deadline and (budget_left is None or moves < budget_left):
        src = hi.pop()
        if src is None:
            break
        best, best_gain = None, 0.0
        src_load = pk.load(src)
        if src_load <= hot:
            break
        dests = []
        for _k in range(8):
            d = lo.pop()
            if d is None:
                break
            dests.append(d)
        by_host[src] = [j for j in by_host[src] if pk.asg[j] == src]
        for i in by_host[src]:
            if pk.pinned[i] or pk.asg[i] != pk.home[i]:
                continue
            if budget_left is not None and moves + pk.nmem[i] > budget_left:
                continue    # a bundle moves all its guests: each counts against the budget
            for d in dests:
                if d == src or not pk.can_place(i, d):
                    continue
                gain = _sq_gain(pk, i, src, d)
                after = _load_with(pk, i, d)
                if after >= src_load - 1e-9 or gain <= 0 or gain < min_gain * max(pk.gib[i], 1e-3):
                    continue
                per_gib = gain / max(pk.gib[i], 1e-3)
                if best is None or per_gib > best_gain:
                    best, best_gain = (i, d), per_gib
        for d in dests:
            lo.push(d)
        if best is None:
            break   # the most loaded host cannot improve: the max cannot drop further
        i, d = best
        pk.move(i, d)
        by_host[d].append(i)
        reasons.set(i, "objective:balance", "%s load %.0f%% -> %.0f%%" % (
            st.host_ids[src], 100 * src_load, 100 * pk.load(src)))
        moves += pk.nmem[i]
        hi.push(src)
        hi.push(d)
        lo.push(src)
        lo.push(d)
    return moves


def _sq_gain(pk, i, a, b):
    g = 0.0
    for r in range(pk.nr):
        la, lb = pk.lim[r][a], pk.lim[r][b]
        if la <= 0 or lb <= 0:
            continue
        d = pk.dem[r][i]
        ua, ub = 100.0 * pk.used[r][a] / la, 100.0 * pk.used[r][b] / lb
        na, nb = ua - 100.0 * d / la, ub + 100.0 * d / lb
        g += ua * ua + ub * ub - na * na - nb * nb
    return g


def _load_with(pk, i, h):
    best = 0.0
    for r in range(pk.nr):
        lim = pk.lim[r][h]
        if lim > 0:
            best = max(best, (pk.used[r][h] + pk.dem[r][i]) / lim)
    return best


def ref_caps(state):
    return [max(c) if c else 1 for c in state.cap]


def search(problem, deadline=None, hard_deadline=None, post_per_move=0.0):
    """Find a target placement. Returns (Packing, Reasons, stats).

    ``deadline`` ends the search; ``hard_deadline`` (later) may only be used to finish a first plan."""
    st, cons, opts = problem.state, problem.cons, problem.options
    t0 = time.monotonic()
    if deadline is None:
        deadline = t0 + opts["budget_s"]
    rng = random.Random(opts["seed"])
    ref = ref_caps(st)
    stats = {"iterations": 0, "power_on": False}
    budget = opts["migration_budget"]
    if opts["objective"] == "consolidate" and budget != 0:
        # The repair placement is only a fallback here: build it when consolidation does not deliver.
        pk, reasons, forced = _evicted(st, cons, opts, ref, allow_off=False)
        required = sum(pk.nmem[i] for i in forced)
        stats["required_migrations"] = required + pk.stray
        stats["repair_s"] = round(time.monotonic() - t0, 3)
        stats["hard_deadline"] = hard_deadline or deadline
        stats["post_per_move"] = post_per_move
        if budget is not None:
            # Under a budget the consolidation looks for the fewest hosts it can reach within it.
            stats["migration_cap"] = required + budget
        ok = consolidate(pk, reasons, deadline, opts, ref, stats, forced, rng)
        for key in ("hard_deadline", "post_per_move", "migration_cap"):
            stats.pop(key, None)
        if ok and budget is not None and pk.migrations() - required > budget:
            stats["budget_fallback"] = True
            ok = False
        if not ok and budget is not None:
            # No consolidated plan within the budget: repair, then empty hosts greedily within it (the
            # time up to the hard deadline is this fallback's).
            greedy = _greedy_within(st, cons, opts, ref, budget, max(deadline, hard_deadline or deadline))
            if greedy is not None:
                pk, reasons, stats["required_migrations"] = greedy
                stats["budget_greedy"] = ok = True
        if ok:
            stats["unplaced"] = 0
            # Leave the scheduler and the explanation their time: it grows with the migrations.
            late = deadline - post_per_move * pk.migrations()
            stats["spread_moves"] = spread_arrivals(pk, late)
            if cons.has_soft():
                left_over = None if budget is None else max(0, budget - (pk.migrations() - required))
                stats["soft_moves"] = improve_soft(pk, reasons, late, True, left_over)
            stats["wall_s"] = round(time.monotonic() - t0, 3)
            return pk, reasons, stats
    pk, reasons, left, _forced = _repair(st, cons, opts, ref, allow_off=False)
    if left and opts["allow_power_on"] and not all(st.power_on):
        pk, reasons, left, _forced = _repair(st, cons, opts, ref, allow_off=True)
        stats["power_on"] = True
    stats["unplaced"] = len(left)
    # Everything the repair moved is required (guests it ejected to make room included).
    stats["required_migrations"] = pk.migrations() + pk.stray
    if not left and cons.has_soft() and opts["objective"] != "cost":
        before = pk.migrations()
        stats["soft_moves"] = improve_soft(pk, reasons, deadline, opts["objective"] == "consolidate", budget)
        if budget is not None:
            budget = max(0, budget - (pk.migrations() - before))
    if not left and opts["objective"] == "cost":
        stats["cost_moves"] = improve_cost(pk, reasons, deadline, opts, rng, stats, post_per_move)
    elif not left and opts["objective"] == "balance":
        stats["iterations"] += balance(pk, reasons, deadline, opts, budget)
    elif not left and budget:
        # Consolidating under a migration budget the full plan exceeds: empty what the budget allows.
        stats["budget_moves"] = empty_within_budget(pk, reasons, budget, deadline, _consolidate_eid(cons))
    stats["wall_s"] = round(time.monotonic() - t0, 3)
    return pk, reasons, stats


def _consolidate_eid(cons):
    return cons.power_saving.id if cons.power_saving is not None else "objective:consolidate"


def _greedy_within(st, cons, opts, ref, budget, deadline):
    """Repair, then empty the hosts with the fewest guests while the optional moves stay within
    ``budget``: (Packing, Reasons, required migrations), or None when the repair leaves guests
    unplaced."""
    pk, reasons, left, _forced = _repair(st, cons, opts, ref, allow_off=False)
    if left:
        return None
    required = pk.migrations() + pk.stray
    empty_within_budget(pk, reasons, budget, deadline, _consolidate_eid(cons))
    return pk, reasons, required


def _evicted(st, cons, opts, ref, allow_off):
    """Start placement minus the guests hard expectations force out (those are returned)."""
    pk = Packing(st, cons, usable_hosts(st, cons, allow_off))
    pin_cooldown(pk, st, opts["cooldown_s"])
    reasons = Reasons()
    out = evict_for_rules(pk, reasons)
    out += evict_for_limits(pk, reasons, ref)
    return pk, reasons, out


def _repair(st, cons, opts, ref, allow_off):
    """Fewest moves that satisfy the hard expectations: evict, then least-loaded placement."""
    pk, reasons, out = _evicted(st, cons, opts, ref, allow_off)
    forced = list(out)
    left = place_least_loaded(pk, out, ref, reasons)
    return pk, reasons, left, forced
