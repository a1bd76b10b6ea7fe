"""Expectations: parsing with validation, compilation into per-guest/per-host tables, violation checks."""

from __future__ import annotations

from .errors import PlanInputError
from .state import KNOWN_RESOURCES

TYPES = ("must_run", "features", "ban", "fence", "anti_affinity", "affinity", "memory_guarantee",
         "cpu_cap", "ceiling", "power_saving", "maintenance", "spread", "depends", "free_ratio")

# Expectations that are only ever soft (a weighted cost) or only ever hard (a rule the placement keeps).
SOFT_ONLY = ("free_ratio",)
HARD_ONLY = ("spread", "depends")

# Expectation types that are soft unless told otherwise (the rest default to hard).
SOFT_BY_DEFAULT = ("power_saving", "free_ratio")


class Expectation:
    """One declared expectation; ``vms``/``hosts`` hold resolved int ids."""

    __slots__ = ("id", "type", "hard", "weight", "vms", "hosts", "features", "resource", "pct",
                 "label", "min_mib", "raw", "per", "ratio", "min_count", "on")

    def __init__(self, eid, etype, hard, weight, raw):
        self.id = eid
        self.type = etype
        self.hard = hard
        self.weight = weight
        self.raw = raw
        self.vms = ()
        self.hosts = None      # None = every host
        self.features = ()
        self.resource = None
        self.pct = None
        self.label = None
        self.min_mib = None
        self.per = None         # free_ratio: the resource whose free amount sets the target
        self.ratio = None
        self.min_count = None   # spread: distinct label values the guests must cover
        self.on = ()            # depends: the guests depended on

    def __repr__(self):
        return "Expectation(%s, %s)" % (self.id, self.type)


class Constraints:
    """Compiled expectations: what the search and the scheduler test in O(1) per (guest, host)."""

    def __init__(self, state, exps):
        nh, nv = state.n_hosts, state.n_vms
        self.exps = exps
        self.by_id = {e.id: e for e in exps}
        self.ban = [None] * nv          # hard: set of forbidden hosts
        self.fence = [None] * nv        # hard: set of allowed hosts (intersection of fences)
        self.req = list(state.requires)  # hard: feature bit mask
        self.place_exps = [None] * nv   # ids of hard expectations restricting a guest's hosts
        self.blocked = [None] * nh      # hard: id of the maintenance expectation emptying the host
        self.limit = [list(c) for c in state.cap]   # hard capacity (ceilings applied) per resource
        self.limit_exp = [[None] * nh for _unused in state.res]
        self.soft_ceil = []             # (expectation, r, host set or None, pct)
        self.soft_place = []            # (expectation, is_fence, host set)
        self.aa = []                    # (expectation, vms, label) for hard anti-affinity
        self.vm_aa = [None] * nv        # hard anti-affinity group indexes per guest
        self.soft_aa = []
        self.aff = []                   # hard affinity groups (expectation, vms)
        self.soft_aff = []
        self.must_run = set()
        self.power_saving = None        # the first power_saving expectation
        self.may_power_off = set()
        self.tune = {}                  # guest -> (expectation, capped cpu demand)
        self.guarantee = {}             # guest -> (expectation, min MiB)
        self.label_key = {}             # label -> per-host key (value or unique marker)
        self.spread = []                # (expectation, vms, label, minimum distinct values)
        self.depends = []               # (expectation, dependants, depended-on, label)
        self.free_ratio = []            # (expectation, r free, r per, ratio, host set or None)
        self._compile(state)

    def _key(self, state, label):
        if label not in self.label_key:
            self.label_key[label] = [state.labels[h].get(label, ("host", h)) for h in range(state.n_hosts)]
        return self.label_key[label]

    def _restrict(self, v, eid):
        if self.place_exps[v] is None:
            self.place_exps[v] = []
        self.place_exps[v].append(eid)

    def _compile(self, state):
        nh = state.n_hosts
        for h in range(nh):
            if state.maintenance[h]:
                self.blocked[h] = "maintenance-flag-" + state.host_ids[h]
        for e in self.exps:
            t = e.type
            if t == "maintenance":
                for h in e.hosts:
                    self.blocked[h] = e.id
            elif t in ("ban", "fence"):
                if not e.hard:
                    self.soft_place.append((e, t == "fence", frozenset(e.hosts)))
                    continue
                hs = frozenset(e.hosts)
                for v in e.vms:
                    if t == "ban":
                        self.ban[v] = hs if self.ban[v] is None else self.ban[v] | hs
                    else:
                        self.fence[v] = hs if self.fence[v] is None else self.fence[v] & hs
                    self._restrict(v, e.id)
            elif t == "features":
                m = state.mask_of(e.features)
                if e.hard:
                    for v in e.vms:
                        self.req[v] |= m
                        self._restrict(v, e.id)
                else:
                    allowed = frozenset(h for h in range(nh) if state.fmask[h] & m == m)
                    self.soft_place.append((e, True, allowed))
            elif t == "ceiling":
                r = state.res.index(e.resource)
                hosts = range(nh) if e.hosts is None else e.hosts
                if e.hard:
                    lim, lexp = self.limit[r], self.limit_exp[r]
                    for h in hosts:
                        val = state.cap[r][h] * e.pct / 100.0
                        if val < lim[h]:
                            lim[h] = val
                            lexp[h] = e.id
                else:
                    self.soft_ceil.append((e, r, None if e.hosts is None else frozenset(e.hosts), e.pct))
            elif t == "anti_affinity":
                if e.label is not None and e.label not in self.label_key:
                    self.label_key[e.label] = [state.labels[h].get(e.label, ("host", h)) for h in range(nh)]
                if e.hard:
                    gi = len(self.aa)
                    self.aa.append((e, list(e.vms), e.label))
                    for v in e.vms:
                        if self.vm_aa[v] is None:
                            self.vm_aa[v] = []
                        self.vm_aa[v].append(gi)
                else:
                    self.soft_aa.append((e, list(e.vms), e.label))
            elif t == "affinity":
                (self.aff if e.hard else self.soft_aff).append((e, list(e.vms)))
            elif t == "must_run":
                self.must_run.update(e.vms)
            elif t == "memory_guarantee":
                self.guarantee[e.vms[0]] = (e, e.min_mib)
            elif t == "cpu_cap":
                v = e.vms[0]
                if "cpu" in state.res:
                    capped = state.vcpu[v] * 1000.0 * e.pct / 100.0
                    self.tune[v] = (e, capped)
            elif t == "power_saving":
                if self.power_saving is None:
                    self.power_saving = e
                self.may_power_off.update(range(nh) if e.hosts is None else e.hosts)
            elif t == "spread":
                self._key(state, e.label)
                self.spread.append((e, list(e.vms), e.label, e.min_count))
            elif t == "depends":
                self._key(state, e.label)
                self.depends.append((e, list(e.vms), list(e.on), e.label))
            elif t == "free_ratio":
                self.free_ratio.append((e, state.res.index(e.resource), state.res.index(e.per), e.ratio,
                                        None if e.hosts is None else frozenset(e.hosts)))

    def has_soft(self):
        """True when any soft placement expectation needs the soft pass."""
        return bool(self.soft_place or self.soft_aa or self.soft_aff or self.soft_ceil)

    def allowed(self, state, v, h):
        """Hard placement rules for guest ``v`` on host ``h`` (capacity excluded)."""
        if self.blocked[h] is not None:
            return False
        rq = self.req[v]
        if rq and state.fmask[h] & rq != rq:
            return False
        b = self.ban[v]
        if b is not None and h in b:
            return False
        f = self.fence[v]
        return f is None or h in f

    def why_not_allowed(self, state, v, h):
        """Id of a hard expectation that forbids ``v`` on ``h`` (None when allowed)."""
        if self.blocked[h] is not None:
            return self.blocked[h]
        rq = self.req[v]
        if rq and state.fmask[h] & rq != rq:
            for e in self.exps:
                if e.type == "features" and e.hard and v in e.vms:
                    m = state.mask_of(e.features)
                    if state.fmask[h] & m != m:
                        return e.id
            return "requires-" + state.vm_ids[v]
        for e in self.exps:
            if not e.hard or e.type not in ("ban", "fence") or v not in e.vms:
                continue
            if (h in e.hosts) == (e.type == "ban"):
                return e.id
        return None


def _fail(path, msg):
    raise PlanInputError("%s: %s" % (path, msg))


def _bool(x, path, default):
    if x is None:
        return default
    if not isinstance(x, bool):
        _fail(path, "expected true/false, got %r" % (x,))
    return x


def _number(x, path, lo=None, hi=None, lo_open=False):
    if isinstance(x, bool) or not isinstance(x, (int, float)):
        _fail(path, "expected a number, got %r" % (x,))
    if lo is not None and (x < lo or (lo_open and x == lo)):
        _fail(path, "%r is out of range (must be %s %s)" % (x, ">" if lo_open else ">=", lo))
    if hi is not None and x > hi:
        _fail(path, "%r is out of range (must be <= %s)" % (x, hi))
    return x


def _vm_list(state, raw, path, minimum=1):
    if isinstance(raw, str):
        raw = [raw]
    if not isinstance(raw, (list, tuple)) or len(raw) < minimum:
        _fail(path, "expected a list of at least %d guest id(s), got %r" % (minimum, raw))
    out = []
    for i, name in enumerate(raw):
        v = state.vm_index.get(name) if isinstance(name, str) else None
        if v is None:
            _fail("%s[%d]" % (path, i), "unknown guest %r" % (name,))
        if v in out:
            _fail("%s[%d]" % (path, i), "guest %r listed twice" % (name,))
        out.append(v)
    return out


def _host_list(state, raw, path):
    """``"*"`` -> None (every host), else a list of host indexes."""
    if raw == "*":
        return None
    if isinstance(raw, str):
        raw = [raw]
    if not isinstance(raw, (list, tuple)):
        _fail(path, "expected a list of host ids or '*', got %r" % (raw,))
    index = state.host_index
    try:
        out = [index[name] for name in raw]
    except (KeyError, TypeError):
        for i, name in enumerate(raw):
            if not isinstance(name, str) or name not in index:
                _fail("%s[%d]" % (path, i), "unknown host %r" % (name,))
        raise
    return out


def _label(state, lab, path):
    if not isinstance(lab, str) or not any(lab in lb for lb in state.labels):
        _fail(path, "no host has label %r" % (lab,))
    return lab


def _hosts_by_labels(state, raw, path):
    if not isinstance(raw, dict) or not raw:
        _fail(path, "expected a non-empty mapping of label: value, got %r" % (raw,))
    out = [h for h in range(state.n_hosts) if all(state.labels[h].get(k) == val for k, val in raw.items())]
    if not out:
        _fail(path, "no host has labels %r" % (raw,))
    return out


def _selector(state, raw, path, key_hosts="hosts", required=True):
    if key_hosts in raw and "labels" in raw:
        _fail(path, "give either '%s' or 'labels', not both" % key_hosts)
    if key_hosts in raw:
        hs = _host_list(state, raw[key_hosts], path + "." + key_hosts)
        return list(range(state.n_hosts)) if hs is None else hs
    if "labels" in raw:
        return _hosts_by_labels(state, raw["labels"], path + ".labels")
    if required:
        _fail(path, "missing '%s' or 'labels'" % key_hosts)
    return None


def parse_expectations(state, raw_list, path="expectations"):
    """Validate raw expectation dicts; returns Expectation objects with resolved ids."""
    if raw_list is None:
        return []
    if not isinstance(raw_list, list):
        _fail(path, "expected a list, got %r" % (type(raw_list).__name__,))
    out, seen = [], set()
    for i, raw in enumerate(raw_list):
        p = "%s[%d]" % (path, i)
        if not isinstance(raw, dict):
            _fail(p, "expected a mapping, got %r" % (raw,))
        t = raw.get("type")
        if t not in TYPES:
            _fail(p + ".type", "unknown expectation type %r (known: %s)" % (t, ", ".join(TYPES)))
        eid = raw.get("id")
        if eid is None:
            eid = "%s-%d" % (t, i)
        if not isinstance(eid, str) or not eid:
            _fail(p + ".id", "expected a non-empty string, got %r" % (eid,))
        if eid in seen:
            _fail(p + ".id", "duplicate expectation id %r" % eid)
        seen.add(eid)
        p = "%s(%s)" % (p, eid)
        hard = _bool(raw.get("hard"), p + ".hard", t not in SOFT_BY_DEFAULT)
        if t == "maintenance":
            hard = True  # an emptied host is never optional
        if hard and t in SOFT_ONLY:
            _fail(p + ".hard", "%s is a weighted cost: it can only be soft (hard: false)" % t)
        if not hard and t in HARD_ONLY:
            _fail(p + ".hard", "%s can only be hard" % t)
        weight = _number(raw.get("weight", 1), p + ".weight", lo=0)
        e = Expectation(eid, t, hard, weight, raw)
        _parse_one(state, e, raw, p)
        out.append(e)
    return out


def _parse_one(state, e, raw, p):
    t = e.type
    if t in ("must_run", "features", "ban", "fence"):
        e.vms = _vm_list(state, raw.get("vms"), p + ".vms")
    if t in ("ban", "fence"):
        e.hosts = _selector(state, raw, p)
    elif t == "features":
        feats = raw.get("features")
        if not isinstance(feats, list) or not feats or not all(isinstance(f, str) for f in feats):
            _fail(p + ".features", "expected a non-empty list of feature names, got %r" % (feats,))
        e.features = tuple(feats)
    elif t in ("anti_affinity", "affinity"):
        e.vms = _vm_list(state, raw.get("vms"), p + ".vms", minimum=2)
        if t == "anti_affinity" and raw.get("spread_label") is not None:
            lab = raw["spread_label"]
            if not isinstance(lab, str) or not any(lab in lb for lb in state.labels):
                _fail(p + ".spread_label", "no host has label %r" % (lab,))
            e.label = lab
    elif t == "memory_guarantee":
        e.vms = _vm_list(state, [raw.get("vm")], p + ".vm")
        e.min_mib = _number(raw.get("min_mib"), p + ".min_mib", lo=0)
    elif t == "cpu_cap":
        e.vms = _vm_list(state, [raw.get("vm")], p + ".vm")
        e.pct = _number(raw.get("max_pct"), p + ".max_pct", lo=0, hi=100, lo_open=True)
    elif t == "ceiling":
        res = raw.get("resource")
        if res not in KNOWN_RESOURCES and res not in state.res:
            _fail(p + ".resource", "unknown resource %r (known: %s)" % (
                res, ", ".join(list(KNOWN_RESOURCES) + [r for r in state.res if r not in KNOWN_RESOURCES])))
        if res not in state.res:
            _fail(p + ".resource", "resource %r has no capacity on the hosts" % (res,))
        e.resource = res
        # A soft ceiling may sit at 0 %: every unit of load on its hosts then costs its weight.
        e.pct = _number(raw.get("max_pct"), p + ".max_pct", lo=0, hi=1000, lo_open=e.hard)
        if "hosts" in raw or "labels" in raw:
            sel = _selector(state, raw, p)
            e.hosts = None if raw.get("hosts") == "*" else sel
    elif t == "power_saving":
        sel = raw.get("hosts_may_power_off", "*")
        e.hosts = _host_list(state, sel, p + ".hosts_may_power_off")
    elif t == "spread":
        e.vms = _vm_list(state, raw.get("vms"), p + ".vms", minimum=2)
        e.label = _label(state, raw.get("label"), p + ".label")
        n = raw.get("min")
        if isinstance(n, bool) or not isinstance(n, int) or not 1 <= n <= len(e.vms):
            _fail(p + ".min", "expected an integer from 1 to the number of guests (%d), got %r" % (len(e.vms), n))
        e.min_count = n
    elif t == "depends":
        e.vms = _vm_list(state, raw.get("vms"), p + ".vms")
        e.on = _vm_list(state, raw.get("on"), p + ".on")
        e.label = _label(state, raw.get("label"), p + ".label")
    elif t == "free_ratio":
        for key in ("resource", "per"):
            res = raw.get(key)
            if res not in state.res:
                _fail("%s.%s" % (p, key), "unknown resource %r (known: %s)" % (res, ", ".join(state.res)))
        e.resource, e.per = raw["resource"], raw["per"]
        e.ratio = _number(raw.get("ratio"), p + ".ratio", lo=0, lo_open=True)
        if "hosts" in raw or "labels" in raw:
            sel = _selector(state, raw, p)
            e.hosts = None if raw.get("hosts") == "*" else sel
    elif t == "maintenance":
        hs = raw.get("host", raw.get("hosts"))
        e.hosts = _host_list(state, hs, p + ".host")
        if e.hosts is None:
            _fail(p + ".host", "maintenance of every host ('*') leaves nowhere to run")
