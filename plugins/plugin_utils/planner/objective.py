"""Weighted cost of a placement (objective "cost"): soft expectations by weight plus move costs.

Terms, each in the document's own units times its weight:
- soft ``ceiling``: weight x sum over its hosts of the load above the ceiling (resource units);
- soft ``free_ratio``: weight x sum over its hosts of max(0, ratio x free(per) - free(resource)), free =
  capacity - load (spare CPU is no use without spare memory to go with it);
- soft ``ban`` / ``fence`` / ``features``: weight per guest placed against it;
- soft ``anti_affinity``: weight per guest sharing a host (or label value) with another of its group;
- soft ``affinity``: weight per host beyond the first that the group spans;
- moves: a guest's ``move_cost``, the source host's ``move_cost_to`` the destination, and
  ``options.service_move_cost`` per guest of the service with the most migrated guests.

``CostModel`` keeps the counts the terms need and prices a move or a swap of two guests without making it
(``shift_delta``, ``swap_delta``), so the local search (costsearch.py) tries many moves and makes few.
It prices items that are one guest; bundles (hard affinity) only count in ``total``.
"""

from __future__ import annotations


class CostModel:
    """Cost terms compiled for one Packing; call ``moved`` after every ``pk.move`` the search makes."""

    # pylint: disable=too-many-instance-attributes

    def __init__(self, pk, service_move_cost=0):
        st, cons = pk.state, pk.cons
        nh, nr = pk.nh, pk.nr
        self.pk = pk
        self.cap = st.cap
        self.ceil = [[None] * nh for _unused in range(nr)]
        for e, r, hosts, pct in cons.soft_ceil:
            if not e.weight:
                continue
            row = self.ceil[r]
            for h in range(nh) if hosts is None else hosts:
                entry = (st.cap[r][h] * pct / 100.0, e.weight)
                row[h] = [entry] if row[h] is None else row[h] + [entry]
        # The first ceiling of each (resource, host) apart, as two flat rows: most hosts have exactly one and the
        # pricing loop is the search's hot path; further ones (rare) stay in ``ceil``. Infinity (weight 0) where there
        # is none: no load is ever above it, so the prices need no test for it.
        self.lim1 = [[float("inf")] * nh for _unused in range(nr)]
        self.w1 = [[0] * nh for _unused in range(nr)]
        for r, row in enumerate(self.ceil):
            for h, entries in enumerate(row):
                if entries:
                    self.lim1[r][h], self.w1[r][h] = entries[0]
                    row[h] = entries[1:] or None
        # Resources with a second ceiling on some host: the pricing loop skips the others' extra check.
        self.extra = [any(row) for row in self.ceil]
        self.ratio_at = [[] for _unused in range(nh)]
        for e, rf, rp, ratio, hosts in cons.free_ratio:
            if e.weight:
                for h in range(nh) if hosts is None else hosts:
                    self.ratio_at[h].append((rf, rp, ratio, e.weight))
        nv = st.n_vms
        self.home = list(st.host_of)
        self.move_cost = st.move_cost
        self.host_move_cost = st.host_move_cost
        self.service = st.service
        self.w_service = service_move_cost
        # Soft placement per guest: (weight, allowed hosts, True when the guest must be on them).
        self.place = [None] * nv
        for e, is_fence, allowed in cons.soft_place:
            for v in e.vms:
                self.place[v] = (self.place[v] or []) + [(e.weight, allowed, is_fence)]
        # Soft groups per guest: ("aa", index) / ("aff", index); counts per key.
        self.groups = [None] * nv
        self.aa = [(e.weight, cons.label_key[lab] if lab is not None else None) for e, _vms, lab in cons.soft_aa]
        self.aff = [e.weight for e, _vms in cons.soft_aff]
        for kind, table in (("aa", [vms for _e, vms, _l in cons.soft_aa]), ("aff", [vms for _e, vms in cons.soft_aff])):
            for g, vms in enumerate(table):
                for v in vms:
                    self.groups[v] = (self.groups[v] or []) + [(kind, g)]
        self.aa_cnt = [{} for _unused in self.aa]
        self.aff_cnt = [{} for _unused in self.aff]
        self.smoved = {}
        self.shist = {}
        self.smax = 0
        self.col = [tuple(pk.dem[r][i] for r in range(nr)) for i in range(len(pk.asg))]
        self.nz = [tuple(r for r in range(nr) if c[r]) for c in self.col]
        # The true weights of each resource's ceilings, while ``emphasise`` prices one of them otherwise.
        self._true = None
        self.recount()

    # --- weights --------------------------------------------------------------------------------
    def emphasise(self, r, factor):
        """Price resource ``r``'s ceilings at ``factor`` times their true weights from now on (1: true again).
        ``total`` and every price follow; nothing is cached on the weights."""
        if self._true is None:
            self._true = [(list(w), list(row)) for w, row in zip(self.w1, self.ceil)]
        w1, row = self._true[r]
        self.w1[r] = [w * factor for w in w1]
        self.ceil[r] = [None if entries is None else [(lim, w * factor) for lim, w in entries] for entries in row]

    def load_above_bound(self):
        """(weighted load above the first ceilings minus the least any placement leaves there, resource) per
        resource with a ceiling, largest first. The least: the smallest weight times what the demand exceeds the
        ceilings by, summed over hosts (0 when some host has no ceiling on it: it can take any excess)."""
        pk = self.pk
        out = []
        for r in range(pk.nr):
            lim, w = self.lim1[r], self.w1[r]
            weights = [w[h] for h in range(pk.nh) if w[h]]
            if not weights:
                continue
            used = pk.used[r]
            load = sum(w[h] * (used[h] - lim[h]) for h in range(pk.nh) if w[h] and used[h] > lim[h])
            bound = 0.0
            if len(weights) == pk.nh:
                bound = min(weights) * max(0.0, sum(used) - sum(lim))
            out.append((load - bound, r))
        out.sort(reverse=True)
        return out

    # --- counts ---------------------------------------------------------------------------------
    def _guest_hosts(self):
        pk = self.pk
        out = [-1] * len(self.home)
        for i, h in enumerate(pk.asg):
            for v in pk.members[i]:
                out[v] = h
        return out

    def recount(self):
        """Rebuild the group and service counts from the placement (O(guests))."""
        where = self._guest_hosts()
        for cnt in self.aa_cnt + self.aff_cnt:
            cnt.clear()
        self.smoved, self.shist, self.smax = {}, {}, 0
        for v, h in enumerate(where):
            if h >= 0:
                self._group_count(v, h, 1)
            s = self.service[v]
            if s >= 0 and self.home[v] >= 0 and h != self.home[v]:
                self._service_step(s, 1)

    def _key(self, kind, g, h):
        if kind == "aff":
            return h
        kf = self.aa[g][1]
        return h if kf is None else kf[h]

    def _group_count(self, v, h, sign):
        for kind, g in self.groups[v] or ():
            cnt = (self.aa_cnt if kind == "aa" else self.aff_cnt)[g]
            k = self._key(kind, g, h)
            cnt[k] = cnt.get(k, 0) + sign

    def _service_step(self, s, ds):
        n = self.smoved.get(s, 0)
        hist = self.shist
        if n:
            hist[n] -= 1
        self.smoved[s] = n + ds
        if n + ds:
            hist[n + ds] = hist.get(n + ds, 0) + 1
        if n + ds > self.smax:
            self.smax = n + ds
        elif n == self.smax and not hist.get(n):
            self.smax = n - 1

    # --- whole placement ----------------------------------------------------------------------
    def total(self):
        """Cost of the current placement by term (floats) and their sum under ``total``."""
        pk = self.pk
        used, cap = pk.used, self.cap
        load = 0.0
        for r, row in enumerate(self.ceil):
            for h, entries in enumerate(row):
                for lim, w in ((self.lim1[r][h], self.w1[r][h]),) + tuple(entries or ()):
                    if used[r][h] > lim:
                        load += w * (used[r][h] - lim)
        ratio = 0.0
        for h, terms in enumerate(self.ratio_at):
            for rf, rp, k, w in terms:
                x = k * (cap[rp][h] - used[rp][h]) - (cap[rf][h] - used[rf][h])
                if x > 0:
                    ratio += w * x
        where = self._guest_hosts()
        place = 0.0
        for v, entries in enumerate(self.place):
            h = where[v]
            for w, allowed, is_fence in (entries or ()) if h >= 0 else ():
                if (h in allowed) != is_fence:
                    place += w
        groups = sum(w * sum(n - 1 for n in cnt.values() if n > 1) for (w, _k), cnt in zip(self.aa, self.aa_cnt))
        groups += sum(w * max(0, sum(1 for n in cnt.values() if n > 0) - 1) for w, cnt in zip(self.aff, self.aff_cnt))
        moves = sum(self.guest_move_cost(v, h) for v, h in enumerate(where))
        service = self.w_service * self.smax
        out = {"load": load, "free_ratio": ratio, "placement": place, "groups": groups, "moves": moves,
               "service_moves": service}
        out["total"] = sum(out.values())
        return out

    def guest_move_cost(self, v, h):
        home = self.home[v]
        if home < 0 or h == home or h < 0:
            return 0
        return self.move_cost[v] + self.host_move_cost[home].get(h, 0)

    # --- prices of changes ----------------------------------------------------------------------
    def hosts_delta(self, a, b, vec, nz):
        """Cost change when host ``a`` loses ``vec`` (per resource) and ``b`` gains it."""
        used, lim1, w1, extra = self.pk.used, self.lim1, self.w1, self.extra
        d = 0.0
        for r in nz:
            x = vec[r]
            ur, lr = used[r], lim1[r]
            before = ur[a] - lr[a]
            after = before - x
            if before > 0 or after > 0:
                d += w1[r][a] * ((after if after > 0 else 0) - (before if before > 0 else 0))
            before = ur[b] - lr[b]
            after = before + x
            if before > 0 or after > 0:
                d += w1[r][b] * ((after if after > 0 else 0) - (before if before > 0 else 0))
            if extra[r]:
                d += self._extra_delta(r, a, b, x)
        if self.ratio_at[a] or self.ratio_at[b]:
            d += self._ratio_delta(a, b, vec)
        return d

    def _extra_delta(self, r, a, b, x):
        """Change of the ceilings of resource ``r`` beyond the first when ``a`` loses ``x`` and ``b`` gains it."""
        ur, row = self.pk.used[r], self.ceil[r]
        d = 0.0
        for h, sign in ((a, -1), (b, 1)):
            for lim, w in row[h] or ():
                before = ur[h] - lim
                after = before + sign * x
                d += w * ((after if after > 0 else 0) - (before if before > 0 else 0))
        return d

    def _ratio_delta(self, a, b, vec):
        """Change of the free-ratio terms when ``a`` loses ``vec`` and ``b`` gains it."""
        used, cap = self.pk.used, self.cap
        d = 0.0
        for h, sign in ((a, 1), (b, -1)):
            for rf, rp, k, w in self.ratio_at[h]:
                before = k * (cap[rp][h] - used[rp][h]) - (cap[rf][h] - used[rf][h])
                after = before + sign * (k * vec[rp] - vec[rf])
                d += w * ((after if after > 0 else 0) - (before if before > 0 else 0))
        return d

    def shift_hosts_delta(self, a, b, vec, nz):
        """``hosts_delta`` for a vector with no negative entry (one guest's demand: every move the search prices).
        Then ``a`` can only shed load above its ceiling, min(x, excess), and ``b`` only add it, min(x, excess after):
        half the arithmetic of the general case."""
        used, lim1, w1, extra = self.pk.used, self.lim1, self.w1, self.extra
        d = 0.0
        for r in nz:
            x = vec[r]
            ur, lr = used[r], lim1[r]
            over = ur[a] - lr[a]
            if over > 0:
                d -= w1[r][a] * (x if x < over else over)
            over = ur[b] - lr[b] + x
            if over > 0:
                d += w1[r][b] * (x if x < over else over)
            if extra[r]:
                d += self._extra_delta(r, a, b, x)
        if self.ratio_at[a] or self.ratio_at[b]:
            d += self._ratio_delta(a, b, vec)
        return d

    def _guest_delta(self, v, a, b):
        """Placement, group and own move-cost change of guest ``v`` going from ``a`` to ``b``."""
        d = self.guest_move_cost(v, b) - self.guest_move_cost(v, a)
        entries = self.place[v]
        if entries is not None:
            for w, allowed, is_fence in entries:
                d += w * (((b in allowed) != is_fence) - ((a in allowed) != is_fence))
        for kind, g in self.groups[v] or ():
            ka, kb = self._key(kind, g, a), self._key(kind, g, b)
            if ka == kb:
                continue
            if kind == "aa":
                cnt = self.aa_cnt[g]
                d += self.aa[g][0] * ((cnt.get(kb, 0) >= 1) - (cnt[ka] >= 2))
            else:
                cnt = self.aff_cnt[g]
                d += self.aff[g] * ((cnt.get(kb, 0) == 0) - (cnt[ka] == 1))
        return d

    def _service_delta(self, changes):
        """Cost change of the most-moved service for ``changes`` [(service, +1/-1)]."""
        if not self.w_service:
            return 0.0
        merged = {}
        for s, ds in changes:
            if s >= 0 and ds:
                merged[s] = merged.get(s, 0) + ds
        top = self.smax
        new_top = max([self.smoved.get(s, 0) + ds for s, ds in merged.items()] + [0])
        # The highest count among the services not changed: the histogram less the changed ones, level by level.
        at = {}
        for s in merged:
            n = self.smoved.get(s, 0)
            at[n] = at.get(n, 0) + 1
        level = top
        while level > new_top and self.shist.get(level, 0) - at.get(level, 0) <= 0:
            level -= 1
        new_top = max(new_top, level)
        return self.w_service * (new_top - top)

    def _service_delta_one(self, s, ds):
        """``_service_delta([(s, ds)])`` for one guest's move (``ds`` is -1, 0 or 1), without its bookkeeping:
        the search prices a move this way on every candidate."""
        if s < 0 or not ds:
            return 0.0
        n, top = self.smoved.get(s, 0), self.smax
        if ds > 0:
            return self.w_service * (n + 1 - top) if n + 1 > top else 0.0
        # The top drops (by one) only when this service alone holds it.
        return -self.w_service if n == top and self.shist.get(n, 0) == 1 else 0.0

    def _service_change(self, v, a, b):
        home = self.home[v]
        return (self.service[v], (b != home) - (a != home)) if home >= 0 else (-1, 0)

    def shift_delta(self, i, b):
        """Cost change of moving one-guest item ``i`` to host ``b``."""
        a = self.pk.asg[i]
        v = self.pk.members[i][0]
        d = self.shift_hosts_delta(a, b, self.col[i], self.nz[i]) + self._guest_delta(v, a, b)
        if self.w_service:
            d += self._service_delta_one(*self._service_change(v, a, b))
        return d

    def swap_delta(self, i, j):
        """Cost change of exchanging the hosts of one-guest items ``i`` and ``j`` (None: not priced here,
        as when both belong to one soft group)."""
        pk = self.pk
        a, b = pk.asg[i], pk.asg[j]
        v, u = pk.members[i][0], pk.members[j][0]
        if self.groups[v] and self.groups[u] and set(self.groups[v]) & set(self.groups[u]):
            return None
        ci, cj = self.col[i], self.col[j]
        vec = [x - y for x, y in zip(ci, cj)]
        nz = [r for r, x in enumerate(vec) if x]
        d = self.hosts_delta(a, b, vec, nz) + self._guest_delta(v, a, b) + self._guest_delta(u, b, a)
        if self.w_service:
            d += self._service_delta([self._service_change(v, a, b), self._service_change(u, b, a)])
        return d

    def moved(self, i, a, b):
        """Record that one-guest item ``i`` went from ``a`` to ``b`` (after ``pk.move``)."""
        v = self.pk.members[i][0]
        if self.groups[v]:
            self._group_count(v, a, -1)
            self._group_count(v, b, 1)
        if self.w_service:
            s, ds = self._service_change(v, a, b)
            if s >= 0 and ds:
                self._service_step(s, ds)
