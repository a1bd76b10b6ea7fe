"""Consolidation: fewest hosts, then fewest migrations.

Migration-aware construction plus local search, bounded by work units (deterministic per seed):

1. *Stay sets*: on every host keep the most guests that may stay (hard rules hold, the fewest
   evictions bring it under its limits): exactly the guests the migration lower bound lets stay.
2. *Host order*: hosts with the largest stay sets first (pinned guests and hosts that may not be
   emptied before all); on mixed fleets also biggest hosts first.
3. *Construction* on the first k hosts: the other guests, largest first, go home when they can, else
   best-fit on the scarcest resource. Guests that fit nowhere are put where they overload least and a
   tabu search relocates/swaps guests until no host is over its limits (overload search).
4. *Phases*: (1) a first plan a little above the capacity bound, growing k until it works; (2) fewer
   hosts with long overload searches; (3) improvement: moved guests go back home, ejecting other moved
   guests to make room; (4) restarts at the best host count with perturbed orders and evictions,
   until the migration lower bound is reached (proven optimal) or the work budget is spent.
5. *Migration budget* (option ``migration_budget``): phases 1-2 give way to the fewest hosts whose
   improved plan stays within the budget (the migration bound says where to start; host orders that
   weigh capacity against staying guests are tried first on mixed fleets); phase 4 then lowers the
   migrations at that host count.
"""

from __future__ import annotations

import bisect
import random
import time

from .bounds import capacity_lb, cover_k, migration_lb_curve
from .packing import EPS

# Hosts tried per guest in the best-fit scan before falling back to a full scan.
SCAN_LIMIT = 48
# Overload search effort as (steps per unplaced guest, extra steps): a quick try while looking for
# any solution, a long one when trying to save a host.
QUICK_EFFORT = (2, 50)
# A quick try gives up at once when best fit left more than this many host-fractions unplaced.
QUICK_MAX_FAILED = 1.0
FULL_EFFORT = (500, 20000)
# Overload tabu search: guests of the overloaded host and random hosts examined per step, tabu
# tenure (a guest may not return to a host it just left), and the migration penalty in
# host-capacity fractions (small: the overload must reach zero first).
OVERLOAD_ITEMS = 8
OVERLOAD_HOSTS = 12
OVERLOAD_TABU = 10
OVERLOAD_SEED_HOSTS = 32
MIG_PENALTY = 1e-4
# Work units per second of budget (a unit is about 1 us of construction, overload search or
# improvement on the 2-core reference machine, idle: the weights below were fitted on 10k and 30k
# guests; 450k/s leaves some headroom when the machine is shared),
# a fixed cost per guest for the parts outside the search (parsing, scheduling, explaining), and the
# least share of the budget the search gets.
WORK_PER_S = 450000
WORK_FIXED_PER_GUEST = 12
WORK_MIN_SHARE = 0.2
# Cap on relocations made to spread migrations over hosts (each costs a scan of the used hosts).
SPREAD_MAX_MOVES = 200
# Restarts swap which guest leaves an overloaded host on this share of such hosts (tries per host).
PERTURB_HOST_P = 0.3
PERTURB_TRIES = 8
# Restarts perturb guest sizes by up to this fraction when ordering them.
RESTART_NOISE = 0.15
# Phase 1 starts this fraction of the host bound above it (at least one host).
PHASE1_MARGIN = 0.002
# Under a migration budget on mixed fleets, extra host orders weigh capacity against staying guests
# at these multiples of the fleet's guests per unit of capacity.
BLEND_RATES = (0.1, 0.2, 0.3, 0.5)
# A budgeted search first tries the host count whose migration bound is this fraction below the
# budget (constructions land a few per cent above the bound on the reference families).
BUDGET_FIRST_GAP = 0.05
# Share of the time left after the first solution spent on saving hosts (the rest: migrations).
PHASE2_SHARE = 0.5


def may_empty(pk):
    """Hosts the objective may empty: power_saving's list when given, else every usable host."""
    cons = pk.cons
    if cons.power_saving is not None:
        return set(cons.may_power_off)
    return set(range(pk.nh))


class _Free:
    """Hosts sorted by free capacity of one resource, for best-fit lookups."""

    def __init__(self, pk, hosts, r):
        self.pk, self.r = pk, r
        self.key = {}
        self.lst = []
        for h in hosts:
            k = (pk.lim[r][h] - pk.used[r][h], h)
            self.key[h] = k
            self.lst.append(k)
        self.lst.sort()

    def update(self, h):
        old = self.key.get(h)
        if old is None:
            return
        i = bisect.bisect_left(self.lst, old)
        del self.lst[i]
        k = (self.pk.lim[self.r][h] - self.pk.used[self.r][h], h)
        self.key[h] = k
        bisect.insort(self.lst, k)

    def best_fit(self, i, exclude=-1):
        """Host with the least free capacity (on this resource) that can take item ``i``."""
        pk = self.pk
        lst = self.lst
        start = bisect.bisect_left(lst, (pk.dem[self.r][i] - EPS, -1))
        n = len(lst)
        stop = min(n, start + SCAN_LIMIT)
        for pos in range(start, stop):
            h = lst[pos][1]
            if h != exclude and pk.can_place(i, h):
                return h
        for pos in range(stop, n):
            h = lst[pos][1]
            if h != exclude and pk.can_place(i, h):
                return h
        return None


def _scarce_resource(pk, hosts):
    tot_d = [0.0] * pk.nr
    for r in range(pk.nr):
        d = pk.dem[r]
        tot_d[r] = sum(d[i] for i in range(len(pk.asg)) if pk.home[i] >= 0)
    best, ratio = 0, -1.0
    for r in range(pk.nr):
        cap = sum(pk.lim[r][h] for h in hosts)
        x = tot_d[r] / cap if cap > 0 else float("inf")
        if x > ratio:
            best, ratio = r, x
    return best


class Consolidator:
    """One consolidation run on a Packing (mutates it; the caller keeps the repair result as fallback)."""

    def __init__(self, pk, reasons, deadline, opts, ref, stats, evictor, rng):
        self.pk, self.reasons, self.deadline = pk, reasons, deadline
        self.base_deadline = deadline
        # Scheduling and explaining cost time per migration: a plan with more moves must stop earlier.
        self.post_per_move = stats.pop("post_per_move", 0.0)
        self.rng = rng
        self.hard_deadline = stats.pop("hard_deadline", deadline)
        self.free = None
        self.noise = 0.0
        self.interrupted = False
        self.lb_at = None            # migration bound per host count (set by run)
        self.last_migrations = None  # migrations of the last budgeted try, within the budget or not
        self.failed_size = 0.0      # host fractions left unplaced by the last construction's best fit
        # Work units (deterministic counts of placements and evaluations) bound the search so the result
        # depends on the seed only; the wall-clock deadline is a safety net for slow machines.
        self.work = 0
        self.work_budget = max(WORK_MIN_SHARE * WORK_PER_S * opts["budget_s"],
                               WORK_PER_S * opts["budget_s"] - WORK_FIXED_PER_GUEST * len(pk.asg))
        self.opts, self.ref, self.stats = opts, ref, stats
        self.evictor = evictor
        st = pk.state
        self.eid = pk.cons.power_saving.id if pk.cons.power_saving is not None else "objective:consolidate"
        self.emptiable = may_empty(pk)
        self.hosts = [h for h in range(pk.nh) if pk.usable[h] and (st.power_on[h] or pk.cnt[h] > 0)]
        self.items = [i for i in range(len(pk.asg)) if pk.home[i] >= 0 or pk.asg[i] >= 0]
        self.sizes = pk.sizes(ref)

    def stay_config(self):
        """Reset to the start placement minus the evictions hard rules force; returns forced items."""
        pk = self.pk
        if isinstance(self.evictor, list):
            forced = set(self.evictor)
            pk.reset([-1 if i in forced else h for i, h in enumerate(pk.home)])
            return self.evictor
        pk.reset(pk.home)
        return self.evictor(pk)

    def run(self):
        pk = self.pk
        self.stay_config()
        stay = list(pk.asg)
        stay_members = [0] * pk.nh
        for i, h in enumerate(stay):
            if h >= 0:
                stay_members[h] += pk.nmem[i]
        must = set()
        for i, h in enumerate(stay):
            if h >= 0 and (pk.pinned[i] or h not in self.emptiable):
                must.add(h)
        hosts = self.hosts
        capw = {h: round(sum(pk.lim[r][h] / self.ref[r] for r in range(pk.nr)), 6) for h in hosts}
        # Host orders (a construction keeps a prefix): the hosts where most guests stay; on mixed fleets
        # also the biggest hosts, and the most loaded ones now (in reference-capacity units: big hosts
        # that carry many guests, the order migration-aware FFD keeps). Each key ends in a tie-breaker.
        start_load = [0.0] * pk.nh
        for i, h in enumerate(pk.home):
            if h >= 0:
                start_load[h] += self.sizes[i]
        keys = [lambda h, t: (h not in must, -stay_members[h], -capw[h], t(h))]
        mixed = len(set(capw.values())) > 1
        if mixed:
            keys.append(lambda h, t: (h not in must, -capw[h], -stay_members[h], t(h)))
        if mixed and self.stats.get("migration_cap") is not None:
            # Only under a budget: in the fewest-hosts phases a third order costs time on big fleets.
            keys.append(lambda h, t: (h not in must, -start_load[h], -capw[h], t(h)))
            # Under a migration budget: keep guests (stay sets) and capacity both, weighing a host's
            # capacity against its staying guests at a few exchange rates around the fleet's average
            # (tried first: they move the fewest guests on the host counts a budget leads to).
            rate = (sum(stay_members[h] for h in hosts) or 1) / (sum(capw[h] for h in hosts) or 1.0)
            keys[:0] = [lambda h, t, w=mult * rate: (h not in must, -(stay_members[h] + w * capw[h]), t(h))
                        for mult in BLEND_RATES]
        orders = [sorted(hosts, key=lambda h, k=k: k(h, int)) for k in keys]
        # Rates that give the same order as another add nothing.
        distinct = {}
        for k, order in zip(keys, orders):
            distinct.setdefault(tuple(order), k)
        keys, orders = list(distinct.values()), [list(o) for o in distinct]
        demand = [sum(pk.dem[r][i] for i in self.items) for r in range(pk.nr)]
        lb = capacity_lb(pk, hosts, demand)
        self.stats["host_lb"] = lb
        self.lb_at = migration_lb_curve(pk, set(hosts))
        t0 = time.monotonic()
        cap = self.stats.pop("migration_cap", None)
        if cap is None:
            best = self._fewest_hosts(stay, orders, must, lb, demand)
        else:
            best = self._fewest_hosts_within(stay, orders, must, lb, cap)
        if best is None:
            return False
        n = best[3]
        self.stats["improve_s"] = round(time.monotonic() - t0, 3)
        # Phase 3: restarts at the best host count with perturbed guest order and a fresh random
        # stream; keep the best. Every restart is self-contained, so a deadline cut loses nothing.
        restarts = 0
        last = None
        while self.work < self.work_budget:
            now = time.monotonic()
            if now + (last or 0.0) * 1.2 > self.deadline:
                self.stats["deadline_cut"] = True
                break
            if best[1] <= self.lb_at(best[0]):
                self.stats["proven_optimal"] = best[0] == lb
                break
            self.rng = random.Random(self.rng.random())
            self.noise = RESTART_NOISE
            # Ties in the host order are broken at random (the migration bound does not care which).
            tie = {h: self.rng.random() for h in hosts}
            order = sorted(orders[n], key=lambda h: keys[n](h, tie.get))
            if self._attempt(self._perturbed_stay(stay), order, best[0], FULL_EFFORT, self.deadline):
                kept = self._improve_used()
                # A restart's plan replaces the best only when complete and within every limit.
                if pk.hosts_used() <= best[0] and not self.interrupted and not any(pk.over(h) for h in kept):
                    best = self._better(best, n)
            restarts += 1
            last = time.monotonic() - now
        self.noise = 0.0
        self.stats["restarts"] = restarts
        self.stats["work"] = self.work
        pk.reset(best[2])
        return True

    def _fewest_hosts(self, stay, orders, must, lb, demand):
        """Phases 1 and 2 and the improvement: the fewest hosts, then fewer migrations on them."""
        pk = self.pk
        best = None
        t0 = time.monotonic()
        # Phase 1 (anytime): for each host order, the first host count where a quick construction works.
        for n, order in enumerate(orders):
            k = max(len(must), lb, cover_k(pk, order, demand) or len(order))
            # Start a little above the bound: a first plan quickly, then phase 2 works downwards.
            k = max(k, min(len(order), lb + max(1, int(PHASE1_MARGIN * lb))))
            step = 1
            while k <= len(order):
                # Until a first plan exists, the hard deadline applies (the repair plan is poor here).
                limit = self.deadline if best is not None else max(self.deadline, self.hard_deadline)
                if time.monotonic() >= limit or (best is not None and k > best[0]):   # pylint: disable=unsubscriptable-object
                    break
                if best is not None and self.work >= self.work_budget:
                    break
                if self._attempt(stay, order, k, QUICK_EFFORT, limit):
                    best = self._better(best, n)
                    break
                # Grow the step (at least what the unplaced guests would fill): a first plan fast;
                # phase 2 walks back down.
                k += max(step, int(self.failed_size) + 1)
                step *= 2
        self.stats["phase1_s"] = round(time.monotonic() - t0, 3)
        if best is None:
            return None
        # Phase 2: fewer hosts with longer ejection chains, on half of the remaining time.
        phase2_work = self.work + PHASE2_SHARE * max(0.0, self.work_budget - self.work)
        n = best[3]
        k = best[0] - 1
        while k >= max(lb, len(must)) and self.work < phase2_work and time.monotonic() < self.deadline:
            if not self._attempt(stay, orders[n], k, FULL_EFFORT, self.deadline):
                break
            best = self._better(best, n)
            k = best[0] - 1
        self.stats["phase2_s"] = round(time.monotonic() - t0, 3)
        pk.reset(best[2])
        self._improve_used()
        return self._better(None, n)

    def _fewest_hosts_within(self, stay, orders, must, lb, cap):
        """Migration budget: the fewest hosts whose plan moves at most ``cap`` guests (required moves
        included). The migration bound rules out every host count below its first fit; the first try is
        where the bound leaves a few per cent of room, then upwards (each step guessed from how far the
        last plan was over the budget) and back down by bisection to the fewest hosts that worked."""
        hosts = self.hosts
        lo = self._first_k_within(max(lb, len(must)), len(hosts), cap)
        if lo is None:
            return None
        self.stats["budget_k_min"] = lo
        t0 = time.monotonic()
        best, failed_k = None, lo - 1
        # First try where the bound leaves room for a plan's usual distance from it; back down later.
        k = self._first_k_within(lo, len(hosts), cap * (1.0 - BUDGET_FIRST_GAP)) or lo
        step = 1
        # Only the deadline: the time left before the hard deadline is the budget fallback's.
        while k <= len(hosts) and time.monotonic() < self.deadline:
            plan = self._within_at(stay, orders, k, cap, QUICK_EFFORT)
            if plan is not None:
                best = plan
                break
            failed_k = max(failed_k, k)
            if self.last_migrations is None:
                k += step
                step *= 2
            else:
                # Assume the plan stays as far above the bound as here: the host count whose bound is
                # lower by the excess.
                excess = self.last_migrations - cap
                target = self.lb_at(k) - excess
                k = max(k + 1, self._first_k_within(k + 1, len(hosts), target) or len(hosts))
        if best is None:
            return None
        # Back down between the last host count that failed (or the bound) and the one that worked.
        lo_k, hi_k = failed_k + 1, best[0] - 1
        while lo_k <= hi_k and self.work < self.work_budget and time.monotonic() < self.deadline:
            mid = (lo_k + hi_k) // 2
            plan = self._within_at(stay, orders, mid, cap, QUICK_EFFORT)
            if plan is not None and plan[:2] < best[:2]:
                best, hi_k = plan, min(mid, plan[0]) - 1
            else:
                lo_k = mid + 1
        self.stats["budget_s"] = round(time.monotonic() - t0, 3)
        self.deadline = self.base_deadline - self.post_per_move * best[1]
        return best

    def _first_k_within(self, lo, hi, cap):
        """Smallest host count in [lo, hi] whose migration bound is at most ``cap`` (None: none is):
        the bound does not grow with the host count, so bisect."""
        lb_at = self.lb_at
        if lo > hi or lb_at(hi) > cap:
            return None
        while lo < hi:
            mid = (lo + hi) // 2
            if lb_at(mid) <= cap:
                hi = mid
            else:
                lo = mid + 1
        return lo

    def _within_at(self, stay, orders, k, cap, effort):
        """A plan on ``k`` hosts with at most ``cap`` migrations, or None. Host orders are constructed
        in turn until one moves at most ``cap`` guests (else the one that moves the fewest is kept);
        that construction is then improved."""
        pk = self.pk
        best = None
        self.last_migrations = None
        for n, order in enumerate(orders):
            if self._attempt(stay, order, k, effort, self.deadline):
                cand = (pk.migrations(), n, list(pk.asg))
                if best is None or cand[:2] < best[:2]:
                    best = cand
                if cand[0] <= cap:
                    break
        if best is None:
            return None
        pk.reset(best[2])
        kept = self._improve_used()
        self.last_migrations = pk.migrations()
        if self.interrupted or any(pk.over(h) for h in kept) or pk.migrations() > cap:
            return None
        return (pk.hosts_used(), pk.migrations(), list(pk.asg), best[1])

    def _perturbed_stay(self, stay):
        """Same number of guests leave each host, but on some hosts a different one: swap an evicted guest
        with a staying one when the host still fits (the packing then has other guests to place)."""
        pk, rng = self.pk, self.rng
        out = list(stay)
        evicted = {}
        for i, h in enumerate(pk.home):
            if stay[i] < 0 <= h and not pk.aa[i] and not pk.pinned[i] and pk.allowed(i, h):
                evicted.setdefault(h, []).append(i)
        if not evicted:
            return out
        staying, used_by = {}, {}
        for i, h in enumerate(stay):
            if h >= 0 and h in evicted:
                u = used_by.setdefault(h, [0] * pk.nr)
                for r in range(pk.nr):
                    u[r] += pk.dem[r][i]
                if not pk.aa[i] and not pk.pinned[i]:
                    staying.setdefault(h, []).append(i)
        for h in sorted(evicted):
            if rng.random() >= PERTURB_HOST_P or h not in staying:
                continue
            e = evicted[h][rng.randrange(len(evicted[h]))]
            s_items = staying[h]
            used = used_by[h]
            for _t in range(PERTURB_TRIES):
                x = s_items[rng.randrange(len(s_items))]
                if all(used[r] - pk.dem[r][x] + pk.dem[r][e] <= pk.lim[r][h] + EPS for r in range(pk.nr)):
                    out[x], out[e] = -1, h
                    break
        return out

    def _attempt(self, stay, order, k, effort, deadline):
        self.stats["constructions"] = self.stats.get("constructions", 0) + 1
        return self.construct(stay, order[:k], deadline, effort)

    def _better(self, best, order_no):
        pk = self.pk
        cand = (pk.hosts_used(), pk.migrations(), list(pk.asg), order_no)
        if best is None or cand[:2] < best[:2]:
            self.deadline = self.base_deadline - self.post_per_move * cand[1]
            return cand
        return best

    def construct(self, stay, kept, deadline, effort):
        """Place everything on ``kept`` starting from the stay sets; False when it cannot."""
        pk = self.pk
        keptset = set(kept)
        pk.reset([h if h in keptset else -1 for h in stay])
        todo = [i for i in self.items if pk.asg[i] < 0]
        self.work += (5 * len(pk.asg)) // 4 + 25 * len(todo) + 3 * len(kept)
        r = _scarce_resource(pk, kept)
        self.free = free = _Free(pk, kept, r)
        if self.noise:
            noise, rnd = self.noise, self.rng.random
            todo.sort(key=lambda i: (-self.sizes[i] * (1.0 + noise * rnd()), i))
        else:
            todo.sort(key=lambda i: (-self.sizes[i], i))
        failed = []
        for n, i in enumerate(todo):
            if n % 256 == 255 and time.monotonic() > deadline:
                return False
            h = pk.home[i]
            if h in keptset and pk.can_place(i, h):
                dest = h
            else:
                dest = free.best_fit(i)
            if dest is None:
                failed.append(i)
                continue
            pk.move(i, dest)
            free.update(dest)
        self.failed_size = sum(self.sizes[i] for i in failed)
        if not failed:
            return True
        if effort is QUICK_EFFORT and self.failed_size > QUICK_MAX_FAILED:
            return False    # far from fitting: a quick search will not fix it, more hosts will
        self.stats["overload_starts"] = self.stats.get("overload_starts", 0) + len(failed)
        return self.overload_search(failed, kept, deadline, effort)

    def overload_search(self, failed, kept, deadline, effort):
        """Tight packing at a fixed host count: put the unplaced guests where they overload least, then
        relocate/swap guests between hosts to drive the total overload to zero (tabu search; moving a
        guest that stays home costs a small migration penalty, bringing one home earns it)."""
        pk, rng = self.pk, self.rng
        nr = pk.nr
        lim = pk.lim
        used = pk.used
        inv = [1.0 / x if x > 0 else 0.0 for x in self.ref]

        def ov(h, add=None, sub=None):
            t = 0.0
            for r in range(nr):
                u = used[r][h]
                if add is not None:
                    u += pk.dem[r][add]
                if sub is not None:
                    u -= pk.dem[r][sub]
                x = u - lim[r][h]
                if x > EPS:
                    t += x * inv[r]
            return t

        on = self._by_host()
        over = set()
        lst = self.free.lst if self.free is not None else [(0, h) for h in kept]
        for u in sorted(failed, key=lambda j: (-self.sizes[j], j)):
            dest, dest_d = None, 0.0
            # Candidates: the hosts with most room on the scarce resource, plus random ones.
            cands = [x[1] for x in lst[-OVERLOAD_SEED_HOSTS:]]
            cands += [kept[rng.randrange(len(kept))] for _x in range(OVERLOAD_SEED_HOSTS // 2)]
            for h in cands:
                if pk.allowed(u, h) and pk.aa_ok(u, h):
                    d = ov(h, add=u) - ov(h)
                    if dest is None or d < dest_d:
                        dest, dest_d = h, d
            if dest is None:
                dest = next((h for h in kept if pk.allowed(u, h) and pk.aa_ok(u, h)), None)
            if dest is None:
                return False
            pk.move(u, dest)
            on[dest].append(u)
            if ov(dest) > 0:
                over.add(dest)
        tabu = {}
        it = 0
        nk = len(kept)
        max_iter = effort[0] * len(failed) + effort[1]
        while over:
            it += 1
            if it > max_iter or (it % 16 == 0 and time.monotonic() > deadline):
                self.stats["overload_iters"] = self.stats.get("overload_iters", 0) + it
                return False
            a = sorted(over)[rng.randrange(len(over))]
            base_a = ov(a)
            ia = [i for i in on[a] if pk.asg[i] == a and not pk.pinned[i]]
            on[a] = [i for i in on[a] if pk.asg[i] == a]
            if not ia:
                return False
            if len(ia) > OVERLOAD_ITEMS:
                ia = rng.sample(ia, OVERLOAD_ITEMS)
            self.work += 20 * len(ia) * OVERLOAD_HOSTS
            hosts = [kept[rng.randrange(nk)] for _x in range(OVERLOAD_HOSTS)]
            best_d, best = None, None
            rr = range(nr)
            dem = pk.dem
            home = pk.home
            ua = [used[r][a] - lim[r][a] for r in rr]     # slack (negative) or excess on a
            dvec = {x: [dem[r][x] for r in rr] for x in ia}
            for b in set(hosts):
                if b == a:
                    continue
                base_b = ov(b)
                base = base_a + base_b
                ub = [used[r][b] - lim[r][b] for r in rr]
                jb = [j for j in on[b] if pk.asg[j] == b and not pk.pinned[j] and tabu.get((j, a), 0) <= it
                      and not pk.aa[j] and pk.allowed(j, a)]
                jvec = [(j, [dem[r][j] for r in rr],
                         MIG_PENALTY * pk.nmem[j] * ((a != home[j]) - (b != home[j]))) for j in jb]
                for i in ia:
                    if tabu.get((i, b), 0) > it or not pk.allowed(i, b):
                        continue
                    di = dvec[i]
                    mi = MIG_PENALTY * pk.nmem[i] * ((b != home[i]) - (a != home[i]))
                    if pk.aa_ok(i, b):
                        d = ov(a, sub=i) + ov(b, add=i) - base + mi
                        if best_d is None or d < best_d:
                            best_d, best = d, (i, b, None)
                    if pk.aa[i]:
                        continue   # swaps of anti-affinity members: plain moves only
                    for j, dj, mj in jvec:
                        t = mi + mj - base
                        for r in rr:
                            dd = dj[r] - di[r]
                            xa = ua[r] + dd
                            if xa > EPS:
                                t += xa * inv[r]
                            xb = ub[r] - dd
                            if xb > EPS:
                                t += xb * inv[r]
                        if best_d is None or t < best_d:
                            best_d, best = t, (i, b, j)
            if best is None:
                continue
            i, b, j = best
            pk.move(i, b)
            on[b].append(i)
            tabu[(i, a)] = it + OVERLOAD_TABU
            if j is not None:
                pk.move(j, a)
                on[a].append(j)
                tabu[(j, b)] = it + OVERLOAD_TABU
            for h in (a, b):
                if ov(h) > 0:
                    over.add(h)
                else:
                    over.discard(h)
        self.stats["overload_iters"] = self.stats.get("overload_iters", 0) + it
        # The best-fit index is stale after free moves: rebuild it for the improvement phase.
        self.free = _Free(pk, kept, self.free.r)
        return True

    def _improve_used(self):
        """Improve the current placement on the hosts it uses (fresh best-fit index); returns them."""
        pk = self.pk
        kept = [h for h in self.hosts if pk.cnt[h] > 0]
        self.free = _Free(pk, kept, _scarce_resource(pk, kept))
        self.improve(kept)
        return kept

    def _by_host(self):
        return self.pk.items_by_host()

    def improve(self, kept):
        """Send moved guests home while it fits, ejecting moved guests from home when needed."""
        pk, free = self.pk, self.free
        keptset = set(kept)
        on = self._by_host()
        improved = True
        rounds = 0
        self.interrupted = False
        while improved and time.monotonic() < self.deadline:
            improved = False
            rounds += 1
            self.work += 2 * len(self.items)
            for i in self.items:
                h = pk.home[i]
                a = pk.asg[i]
                if a == h or h not in keptset or a < 0:
                    continue
                if time.monotonic() > self.deadline:
                    self.interrupted = True
                    break
                if pk.can_place(i, h):
                    pk.move(i, h)
                    free.update(a)
                    free.update(h)
                    on[h].append(i)
                    improved = True
                    continue
                if not (pk.allowed(i, h) and pk.aa_ok(i, h)):
                    continue
                # Eject one moved guest from home to anywhere else (not back to a).
                for j in sorted((j for j in on[h] if pk.asg[j] == h and pk.home[j] != h and not pk.pinned[j]),
                                key=lambda j: (self.sizes[j], j)):
                    pk.move(j, -1)
                    pk.move(i, -1)
                    if pk.can_place(i, h):
                        pk.move(i, h)
                        free.update(a)
                        free.update(h)
                        dest = free.best_fit(j, exclude=h)
                        if dest is not None:
                            pk.move(j, dest)
                            free.update(dest)
                            on[h].append(i)
                            on[dest].append(j)
                            improved = True
                            break
                        pk.move(i, a)
                        free.update(a)
                        free.update(h)
                    else:
                        pk.move(i, a)
                    pk.move(j, h)
                    free.update(h)
        self.stats["improve_rounds"] = rounds


def consolidate(pk, reasons, deadline, opts, ref, stats, forced, rng):
    """Run the consolidation from the start placement minus ``forced``; True when it found a valid
    placement (left in ``pk``), False otherwise (``pk`` is then undefined)."""
    t0 = time.monotonic()
    c = Consolidator(pk, reasons, deadline, opts, ref, stats, forced, rng)
    stats["init_s"] = round(time.monotonic() - t0, 3)
    ok = c.run()
    stats["run_s"] = round(time.monotonic() - t0, 3)
    if not ok or pk.hard_violations():
        stats["consolidated"] = False
        return False
    stats["consolidated"] = True
    st = pk.state
    for i, h in enumerate(pk.asg):
        if h != pk.home[i] and h >= 0:
            src = pk.home[i]
            if src >= 0 and i not in reasons.by_item:
                reasons.set(i, c.eid, "empty %s" % st.host_ids[src] if pk.cnt[src] == 0 else
                            "consolidate: make room on %s" % st.host_ids[h])
        elif h == pk.home[i]:
            reasons.by_item.pop(i, None)
    stats["check_s"] = round(time.monotonic() - t0, 3)
    return True


def spread_arrivals(pk, deadline, max_scan=64):
    """Fewer waves: the busiest host (moves in + out) bounds the wave count, so relocate guests that move
    anyway from it to used hosts with fewer moves (same host count, same migrations). Returns moves made."""
    nh = pk.nh
    touches = [0] * nh
    arrivals = [[] for _unused in range(nh)]
    for i, h in enumerate(pk.asg):
        o = pk.home[i]
        if h >= 0 and h != o:
            touches[h] += pk.nmem[i]
            arrivals[h].append(i)
            if o >= 0:
                touches[o] += pk.nmem[i]
    used = [h for h in range(nh) if pk.cnt[h] > 0]
    moved = 0
    for _round in range(SPREAD_MAX_MOVES):
        if time.monotonic() > deadline:
            break
        h = max(range(nh), key=lambda x: (touches[x], -x))
        top = touches[h]
        if top <= 2:
            break
        # The least-loaded eligible hosts have the most room.
        cands = sorted((g for g in used if touches[g] + 2 <= top), key=lambda g: (pk.load(g), g))[:max_scan]
        done = False
        for i in sorted(arrivals[h], key=lambda j: (pk.dem[0][j], j)):
            if pk.pinned[i] or pk.asg[i] != h:
                continue
            for g in cands:
                if g != pk.home[i] and touches[g] + pk.nmem[i] < top and pk.can_place(i, g):
                    pk.move(i, g)
                    arrivals[h].remove(i)
                    arrivals[g].append(i)
                    touches[h] -= pk.nmem[i]
                    touches[g] += pk.nmem[i]
                    moved += 1
                    done = True
                    break
            if done:
                break
        if not done:
            break
    return moved


def empty_within_budget(pk, reasons, budget, deadline, eid):
    """Migration-budget fallback: from a valid placement, empty the hosts with the fewest guests while
    their guests fit on the other used hosts (most loaded first) and the optional moves stay within
    ``budget``. Returns the moves made."""
    emptiable = may_empty(pk)
    by_host = pk.items_by_host()
    cand = sorted((h for h in range(pk.nh) if pk.cnt[h] > 0 and h in emptiable),
                  key=lambda h: (sum(pk.nmem[i] for i in by_host[h]), pk.load(h), h))
    closed, made = set(), 0
    # Most loaded first, ranked once (a placement changes loads a little; the order is a heuristic).
    ranked = sorted((g for g in range(pk.nh) if pk.cnt[g] > 0 and pk.usable[g]), key=lambda g: (-pk.load(g), g))
    for h in cand:
        items = [i for i in by_host[h] if pk.asg[i] == h]
        cost = sum(pk.nmem[i] for i in items)
        if made + cost > budget or time.monotonic() > deadline:
            break
        if any(pk.pinned[i] for i in items):
            continue
        done = []
        for i in sorted(items, key=lambda j: (-pk.dem[0][j], j)):
            dest = next((g for g in ranked if g != h and g not in closed and pk.can_place(i, g)), None)
            if dest is None:
                break
            pk.move(i, dest)
            done.append(i)
        if len(done) < len(items):
            for i in done:
                pk.move(i, h)
            continue
        closed.add(h)
        made += cost
        for i in done:
            by_host[pk.asg[i]].append(i)
            reasons.set(i, eid, "empty %s" % pk.state.host_ids[h])
    return made
