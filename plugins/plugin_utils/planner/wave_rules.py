"""Spread and depends rules kept at every instant of a migration wave (schedule.py).

The guests of one wave finish in any order, and each runs on its source until it switches over to its
destination, so a rule must hold whichever of them has moved. A wave may hold several moves of one rule's
guests only when the guests that stay put already satisfy it (spread: enough label values among them;
depends: providers that stay put in every label value that may hold a dependant); otherwise one move per rule
per wave, the rule holding after it. A rule already broken where the schedule starts is not enforced (the
search's final placement meets it; the moves are what repairs it).
"""

from __future__ import annotations


class LabelRules:
    """Counts per label value of every spread and depends rule, as the waves go."""

    # pylint: disable=too-many-instance-attributes

    def __init__(self, cons, vcur):
        self.rules = []         # (kind, label key per host, min) ; kind "spread" / "depends"
        self.of_guest = {}      # guest -> [(rule, role)] ; role "m" (spread member), "d" dependant, "p" provider
        self.cnt = []           # per rule: {role: {value: guests there}}
        for _e, vms, lab, n in cons.spread:
            self._add_rule("spread", cons.label_key[lab], n, (("m", vms),))
        for _e, dep, on, lab in cons.depends:
            self._add_rule("depends", cons.label_key[lab], 0, (("d", dep), ("p", on)))
        for v, roles in self.of_guest.items():
            h = vcur[v]
            if h >= 0:
                for r, role in roles:
                    self._count(r, role, self.rules[r][1][h], 1)
        self.holds = [self._holds(r) for r in range(len(self.rules))]
        self.wave = {}          # rule -> [(guest, role, source value, destination value)] in the wave being built

    def _add_rule(self, kind, key, n, members):
        r = len(self.rules)
        self.rules.append((kind, key, n))
        self.cnt.append({role: {} for role, _vms in members})
        for role, vms in members:
            for v in vms:
                self.of_guest.setdefault(v, []).append((r, role))

    def _count(self, r, role, k, sign):
        c = self.cnt[r][role]
        c[k] = c.get(k, 0) + sign

    def _holds(self, r, gone=None, extra=None):
        """Rule ``r`` on the counts less ``gone`` and plus ``extra`` ({role: {value: guests}})."""
        kind, _key, n = self.rules[r]

        def present(role):
            c = dict(self.cnt[r][role])
            for k, x in ((gone or {}).get(role) or {}).items():
                c[k] = c.get(k, 0) - x
            for k, x in ((extra or {}).get(role) or {}).items():
                c[k] = c.get(k, 0) + x
            return {k for k, x in c.items() if x > 0}
        if kind == "spread":
            return len(present("m")) >= n
        return present("d") <= present("p")

    def start_wave(self):
        self.wave = {}

    def _moves(self, movers, vcur, d):
        out = {}
        for v in movers:
            for r, role in self.of_guest.get(v, ()):
                key = self.rules[r][1]
                out.setdefault(r, []).append((v, role, key[vcur[v]] if vcur[v] >= 0 else None, key[d]))
        return out

    def allows(self, movers, vcur, d):
        """True when ``movers`` (guests) may go to host ``d`` in the wave being built."""
        for r, new in self._moves(movers, vcur, d).items():
            if not self.holds[r]:
                continue
            moves = self.wave.get(r, []) + new
            gone, arrive = {}, {}
            for _v, role, src, dst in moves:
                g = gone.setdefault(role, {})
                g[src] = g.get(src, 0) + 1
                a = arrive.setdefault(role, {})
                a[dst] = a.get(dst, 0) + 1
            if len(moves) == 1:
                if not self._holds(r, gone, arrive):
                    return False
            elif not self._stays_safe(r, moves, gone):
                return False
        return True

    def _stays_safe(self, r, moves, gone):
        """Rule ``r`` holds with only the guests that stay put (spread), or their providers cover every value a
        dependant may be on meanwhile (depends)."""
        kind = self.rules[r][0]
        if kind == "spread":
            return self._holds(r, gone)
        staying = {k for k, x in self.cnt[r]["p"].items() if x - gone.get("p", {}).get(k, 0) > 0}
        maybe = {k for k, x in self.cnt[r]["d"].items() if x > 0}
        maybe.update(dst for _v, role, _src, dst in moves if role == "d")
        return maybe <= staying

    def add(self, movers, vcur, d):
        for r, new in self._moves(movers, vcur, d).items():
            self.wave.setdefault(r, []).extend(new)

    def commit(self, done):
        """Count the moves of an applied wave: ``done`` as schedule's waves, [(item, [(vm, src, dst)])]."""
        touched = set()
        for _i, vm_moves in done:
            for v, s, d in vm_moves:
                for r, role in self.of_guest.get(v, ()):
                    key = self.rules[r][1]
                    if s >= 0:
                        self._count(r, role, key[s], -1)
                    self._count(r, role, key[d], 1)
                    touched.add(r)
        for r in touched:
            self.holds[r] = self._holds(r)
        self.wave = {}
