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
        self._build_groups(state, cons)
        self.reset(self.home)

    def _build_groups(self, state, cons):
        """Spread and depends rules per item, and the transient resources (kept on the host left)."""
        ni = len(self.members)
        self.trans = list(state.transient)
        self.sp_key = [cons.label_key[lab] for (_e, _vms, lab, _n) in cons.spread]
        self.sp_min = [n for (_e, _vms, _lab, n) in cons.spread]
        self.dp_key = [cons.label_key[lab] for (_e, _d, _p, lab) in cons.depends]
        sp_of, dp_of = [None] * ni, [None] * ni
        for g, (_e, vms, _lab, _n) in enumerate(cons.spread):
            for v in vms:
                i = self.item_of[v]
                sp_of[i] = (sp_of[i] or []) + [g]
        for c, (_e, dep, on, _lab) in enumerate(cons.depends):
            roles = {}
            for v in dep:
                roles[self.item_of[v]] = [1, 0]
            for v in on:
                roles.setdefault(self.item_of[v], [0, 0])[1] = 1
            for i, (isd, isp) in roles.items():
                dp_of[i] = (dp_of[i] or []) + [(c, isd, isp)]
        self.sp_of, self.dp_of = sp_of, dp_of
        self.grouped = [i for i in range(ni) if sp_of[i] or dp_of[i]]

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
        if self.sp_of[i] or self.dp_of[i]:
            self._count(i, h, 1)

    def _count(self, i, h, sign):
        """Label-value counts of the spread and depends rules item ``i`` belongs to."""
        for g in self.sp_of[i] or ():
            k = self.sp_key[g][h]
            o = self.sp_occ[g]
            n = o.get(k, 0)
            if sign > 0 and n == 0:
                self.sp_n[g] += 1
            elif sign < 0 and n == 1:
                self.sp_n[g] -= 1
            o[k] = n + sign
        for c, isd, isp in self.dp_of[i] or ():
            k = self.dp_key[c][h]
            if isd:
                o = self.dp_d[c]
                o[k] = o.get(k, 0) + sign
            if isp:
                o = self.dp_p[c]
                o[k] = o.get(k, 0) + sign

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
        if self.sp_of[i] or self.dp_of[i]:
            self._count(i, h, -1)

    def move(self, i, h):
        """Put item ``i`` on host ``h`` (-1: take it out)."""
        old = self.asg[i]
        if old == h:
            return
        home = self.home[i]
        if self.trans and home >= 0 and (old == home or h == home):
            # Leaving home leaves the transient usage behind; coming back takes it up again.
            sign = 1 if old == home else -1
            for r in self.trans:
                self.resid[r][home] += sign * self.dem[r][i]
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
        self.resid = {r: [0] * nh for r in self.trans}
        for i, h in enumerate(asg):
            home = self.home[i]
            if self.trans and home >= 0 and h != home:
                for r in self.trans:
                    self.resid[r][home] += self.dem[r][i]
        self.sp_occ = [{} for _unused in self.sp_key]
        self.sp_n = [0] * len(self.sp_key)
        self.dp_d = [{} for _unused in self.dp_key]
        self.dp_p = [{} for _unused in self.dp_key]
        for i in self.grouped:
            if asg[i] >= 0:
                self._count(i, asg[i], 1)
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
        if self.trans:
            # Transient usage: what guests that left ``h`` still hold there, plus ``i`` unless it returns home.
            # Checked first: where guests have moved, transient resources are the tight ones (on ROADEF a2_2 99 %
            # of the candidate swaps that do not fit fail on one), so most refusals end here.
            away = h != self.home[i]
            for r in self.trans:
                if used[r][h] + self.resid[r][h] + (dem[r][i] if away else 0) > lim[r][h] + EPS:
                    return False
        for r in range(self.nr):
            if used[r][h] + dem[r][i] > lim[r][h] + EPS:
                return False
        return True

    def swap_fits(self, i, j):
        """Capacity (transient usage included) once items ``i`` and ``j`` exchange hosts."""
        a, b = self.asg[i], self.asg[j]
        used, dem, lim = self.used, self.dem, self.lim
        if self.trans:
            # A guest leaving its home leaves its transient usage there; one arriving home takes it up again.
            # Checked first, as in ``fits``.
            hi, hj = self.home[i], self.home[j]
            for r in self.trans:
                di, dj = dem[r][i], dem[r][j]
                at_b = (di if b != hi else 0) - (dj if b != hj else 0)
                at_a = (dj if a != hj else 0) - (di if a != hi else 0)
                if used[r][b] + self.resid[r][b] + at_b > lim[r][b] + EPS or \
                        used[r][a] + self.resid[r][a] + at_a > lim[r][a] + EPS:
                    return False
        for r in range(self.nr):
            x = dem[r][i] - dem[r][j]
            if used[r][b] + x > lim[r][b] + EPS or used[r][a] - x > lim[r][a] + EPS:
                return False
        return True

    def rules_ok(self, i, h):
        """Spread and depends rules still hold once item ``i`` is on ``h`` (a rule already broken at the
        start, e.g. while guests are unplaced, is not made worse)."""
        cur = self.asg[i]
        for g in self.sp_of[i] or ():
            kf = self.sp_key[g]
            kh = kf[h]
            o = self.sp_occ[g]
            n = self.sp_n[g] + (o.get(kh, 0) == 0)
            if cur >= 0:
                kc = kf[cur]
                if kc == kh:
                    continue
                n -= o[kc] == 1
            if n < self.sp_min[g] and n < self.sp_n[g]:
                return False
        for c, isd, isp in self.dp_of[i] or ():
            kf = self.dp_key[c]
            kh = kf[h]
            kc = kf[cur] if cur >= 0 else None
            if kc == kh:
                continue
            d, p = self.dp_d[c], self.dp_p[c]
            if d.get(kh, 0) + isd > 0 and p.get(kh, 0) + isp == 0:
                return False
            if kc is not None and d.get(kc, 0) - isd > 0 and p.get(kc, 0) - isp == 0:
                return False
        return True

    def rules_hold(self, i, a, b):
        """Item ``i``'s spread and depends rules hold now, looking at the label values of hosts ``a`` and
        ``b`` (the only ones a move or swap between them changes)."""
        for g in self.sp_of[i] or ():
            if self.sp_n[g] < self.sp_min[g]:
                return False
        for c, _isd, _isp in self.dp_of[i] or ():
            kf = self.dp_key[c]
            d, p = self.dp_d[c], self.dp_p[c]
            for k in (kf[a], kf[b]):
                if d.get(k, 0) > 0 and p.get(k, 0) == 0:
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
        return self.fits(i, h) and self.allowed(i, h) and self.aa_ok(i, h) and \
            (not (self.sp_of[i] or self.dp_of[i]) or self.rules_ok(i, h))

    def over(self, h):
        """True when host ``h`` exceeds a hard limit."""
        used, lim = self.used, self.lim
        for r in range(self.nr):
            if used[r][h] > lim[r][h] + EPS:
                return True
        for r in self.trans:
            if used[r][h] + self.resid[r][h] > lim[r][h] + EPS:
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
            for r in self.trans:
                if self.used[r][h] + self.resid[r][h] > self.lim[r][h] + EPS:
                    out.append((self.cons.limit_exp[r][h] or "capacity", "host %s %s %.0f with guests that left > limit %.0f"
                                % (st.host_ids[h], st.res[r], self.used[r][h] + self.resid[r][h], self.lim[r][h])))
        for gi, o in enumerate(self.occ):
            for k, n in o.items():
                if n > 1:
                    out.append((cons.aa[gi][0].id, "%d guests of %s share %s" % (n, cons.aa[gi][0].id, k)))
        for g, (e, _vms, lab, n) in enumerate(cons.spread):
            if self.sp_n[g] < n:
                out.append((e.id, "%s covers %d %s value(s) < %d" % (e.id, self.sp_n[g], lab, n)))
        for c, (e, _d, _p, lab) in enumerate(cons.depends):
            for k, n in self.dp_d[c].items():
                if n > 0 and self.dp_p[c].get(k, 0) == 0:
                    out.append((e.id, "%s: %s %s holds %d dependant guest(s) and none they depend on" % (e.id, lab, k, n)))
        return out
