"""Fast placement bookkeeping for the search: items (guests, or hard-affinity bundles) on hosts.

Everything is a flat list indexed by int; a move updates O(resources + groups) numbers.
"""

from __future__ import annotations

EPS = 1e-9


class Packing:
    """Target placement under construction. ``asg[i]`` is the host of item ``i`` (-1: unplaced)."""

    def __init__(self, state, cons, usable):
        self.state = state
        self.cons = cons
        self.nr = len(state.res)
        self.nh = state.n_hosts
        self.usable = [bool(u) and cons.blocked[h] is None for h, u in enumerate(usable)]
        self.fmask = state.fmask
        self.lim = cons.limit
        self._build_items(state, cons)
        self.keyf = [cons.label_key[lab] if lab is not None else None for (_e, _vms, lab) in cons.aa]
        self.aa_items = [i for i, g in enumerate(self.aa) if g]
        self.reset(self.home)

    def _build_items(self, state, cons):
        nv = state.n_vms
        item_of = list(range(nv))
        members = [(v,) for v in range(nv)]
        # Hard affinity groups become one item (union-find over overlapping groups).
        if cons.aff:
            parent = list(range(nv))

            def find(x):
                while parent[x] != x:
                    parent[x] = parent[parent[x]]
                    x = parent[x]
                return x
            for _e, vms in cons.aff:
                a = find(vms[0])
                for v in vms[1:]:
                    b = find(v)
                    if a != b:
                        parent[b] = a
            groups = {}
            for v in range(nv):
                groups.setdefault(find(v), []).append(v)
            members = [tuple(g) for g in groups.values()]
            for i, g in enumerate(members):
                for v in g:
                    item_of[v] = i
        self.item_of = item_of
        self.members = members
        ni = len(members)
        self.single = all(len(m) == 1 for m in members)
        dem = state.dem
        if cons.aff:
            self.dem = [[sum(dem[r][v] for v in m) for m in members] for r in range(self.nr)]
        else:
            self.dem = [list(d) for d in dem]
        host_of = state.host_of
        home = []
        for m in members:
            if len(m) == 1:
                home.append(host_of[m[0]])
                continue
            hs = [host_of[v] for v in m]
            home.append(max(set(hs), key=lambda x, hs=hs: (hs.count(x), -x)))
        self.home = home            # where the item (most of it) runs at the start
        self.nmem = [len(m) for m in members]
        # Guests of a split affinity bundle away from its home: they move even when the bundle stays.
        self.stray = sum(sum(1 for v in m if host_of[v] != home[i]) for i, m in enumerate(members) if len(m) > 1)
        aa = [None] * ni
        for v in range(nv):
            g = cons.vm_aa[v]
            if g:
                i = item_of[v]
                aa[i] = sorted(set(aa[i] or []) | set(g))
        self.aa = aa
        self.pinned = [False] * ni
        self.gib = [sum(state.mem_alloc[v] for v in m) / 1024.0 for m in members] if cons.aff else \
            [x / 1024.0 for x in state.mem_alloc]

    # --- primitive updates ------------------------------------------------------------------
    def _add(self, i, h):
        for r in range(self.nr):
            self.used[r][h] += self.dem[r][i]
        self.cnt[h] += 1
        g = self.aa[i]
        if g:
            for gi in g:
                kf = self.keyf[gi]
                k = h if kf is None else kf[h]
                o = self.occ[gi]
                o[k] = o.get(k, 0) + 1

    def _sub(self, i, h):
        for r in range(self.nr):
            self.used[r][h] -= self.dem[r][i]
        self.cnt[h] -= 1
        g = self.aa[i]
        if g:
            for gi in g:
                kf = self.keyf[gi]
                k = h if kf is None else kf[h]
                self.occ[gi][k] -= 1

    def move(self, i, h):
        """Put item ``i`` on host ``h`` (-1: take it out)."""
        old = self.asg[i]
        if old == h:
            return
        if old >= 0:
            self._sub(i, old)
        if h >= 0:
            self._add(i, h)
        self.asg[i] = h

    def reset(self, asg):
        """Replace the whole placement (O(items), loops inlined: this runs once per construction)."""
        self.asg = asg = list(asg)
        nh = self.nh
        used = []
        for r in range(self.nr):
            u = [0] * nh
            d = self.dem[r]
            for i, h in enumerate(asg):
                if h >= 0:
                    u[h] += d[i]
            used.append(u)
        self.used = used
        cnt = [0] * nh
        for h in asg:
            if h >= 0:
                cnt[h] += 1
        self.cnt = cnt
        self.occ = [{} for _unused in self.cons.aa]
        for i in self.aa_items:
            h = asg[i]
            if h >= 0:
                for gi in self.aa[i]:
                    kf = self.keyf[gi]
                    k = h if kf is None else kf[h]
                    o = self.occ[gi]
                    o[k] = o.get(k, 0) + 1

    def sizes(self, ref):
        """``size(i, ref)`` for every item."""
        out = [0.0] * len(self.asg)
        for r in range(self.nr):
            inv = 1.0 / ref[r] if ref[r] > 0 else 0.0
            d = self.dem[r]
            for i, cur in enumerate(out):
                x = d[i] * inv
                if x > cur:
                    out[i] = x
        return out

    # --- tests ------------------------------------------------------------------------------
    def allowed(self, i, h):
        """Hard placement rules for item ``i`` on ``h`` (usable hosts exclude maintenance)."""
        if not self.usable[h]:
            return False
        if self.single:
            # Inlined Constraints.allowed for the common one-guest item (hot path).
            cons = self.cons
            rq = cons.req[i]
            if rq and self.fmask[h] & rq != rq:
                return False
            b = cons.ban[i]
            if b is not None and h in b:
                return False
            f = cons.fence[i]
            return f is None or h in f
        cons, st = self.cons, self.state
        for v in self.members[i]:
            if not cons.allowed(st, v, h):
                return False
        return True

    def fits(self, i, h):
        used, dem, lim = self.used, self.dem, self.lim
        for r in range(self.nr):
            if used[r][h] + dem[r][i] > lim[r][h] + EPS:
                return False
        return True

    def aa_ok(self, i, h):
        """No other member of ``i``'s hard anti-affinity groups on ``h`` (or its label value)."""
        g = self.aa[i]
        if not g:
            return True
        cur = self.asg[i]
        for gi in g:
            kf = self.keyf[gi]
            k = h if kf is None else kf[h]
            n = self.occ[gi].get(k, 0)
            if cur >= 0 and (cur == h if kf is None else kf[cur] == k):
                n -= 1
            if n > 0:
                return False
        return True

    def can_place(self, i, h):
        """Capacity first: it is the cheapest test and the one that fails most."""
        return self.fits(i, h) and self.allowed(i, h) and self.aa_ok(i, h)

    def over(self, h):
        """True when host ``h`` exceeds a hard limit."""
        used, lim = self.used, self.lim
        for r in range(self.nr):
            if used[r][h] > lim[r][h] + EPS:
                return True
        return False

    def load(self, h):
        """Max utilisation of the hard limit over resources (inf on a zero limit with load)."""
        best = 0.0
        for r in range(self.nr):
            lim = self.lim[r][h]
            u = self.used[r][h]
            best = max(best, u / lim if lim > 0 else (0.0 if u <= 0 else float("inf")))
        return best

    def size(self, i, ref):
        """Item size relative to per-resource reference capacities."""
        best = 0.0
        for r in range(self.nr):
            if ref[r] > 0:
                best = max(best, self.dem[r][i] / ref[r])
        return best

    def migrations(self):
        n = 0
        home, asg, nmem = self.home, self.asg, self.nmem
        for i, h in enumerate(asg):
            if h != home[i]:
                n += nmem[i]
        return n

    def hosts_used(self):
        return sum(1 for c in self.cnt if c > 0)

    def items_by_host(self):
        out = [[] for _unused in range(self.nh)]
        for i, h in enumerate(self.asg):
            if h >= 0:
                out[h].append(i)
        return out

    def hard_violations(self):
        """List of (expectation id or rule, text) for the current placement."""
        st, cons = self.state, self.cons
        out = []
        for i, h in enumerate(self.asg):
            if h < 0:
                if any(v in cons.must_run or st.host_of[v] >= 0 for v in self.members[i]):
                    out.append(("must_run", "guest %s is not placed" % st.vm_ids[self.members[i][0]]))
                continue
            if not self.usable[h]:
                out.append(("power", "guest %s on unusable host %s" % (st.vm_ids[self.members[i][0]], st.host_ids[h])))
            for v in self.members[i]:
                if not cons.allowed(st, v, h):
                    why = cons.why_not_allowed(st, v, h) or "rules"
                    out.append((why, "guest %s on %s" % (st.vm_ids[v], st.host_ids[h])))
        for h in range(self.nh):
            for r in range(self.nr):
                if self.used[r][h] > self.lim[r][h] + EPS:
                    out.append((self.cons.limit_exp[r][h] or "capacity",
                                "host %s %s %.0f > limit %.0f" % (st.host_ids[h], st.res[r], self.used[r][h], self.lim[r][h])))
        for gi, o in enumerate(self.occ):
            for k, n in o.items():
                if n > 1:
                    out.append((cons.aa[gi][0].id, "%d guests of %s share %s" % (n, cons.aa[gi][0].id, k)))
        return out
