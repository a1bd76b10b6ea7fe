"""Input document parsing: validation, FORMAT.md translation, options with documented defaults."""

from __future__ import annotations

import re

from .errors import PlanInputError
from .expectations import Constraints, parse_expectations, _fail, _number, _bool
from .memory import MemoryFacts
from .state import KNOWN_RESOURCES, State

RESOURCE_NAME = re.compile(r"[a-z][a-z0-9_]{0,31}\Z")
# Most searches side by side: each is a forked copy of the planner's memory (about 0.5 GiB at 55,000 guests).
MAX_SEARCH_WORKERS = 64

# Options and their defaults (the contract documented for callers).
DEFAULT_OPTIONS = {
    "budget_s": 1.0,                 # search wall-clock budget, seconds
    "seed": 0,                       # random seed; same seed + same input = same plan
    "max_migrations_per_host": 2,    # migrations touching a host (in + out) per wave
    "min_gain_per_gib": 20.0,        # balance: a move must cut sum(host util %)^2 (over hosts and resources) by this
                                     # much per GiB moved; 20 lets 8 GiB go from 90 % to 30 % on 512 GiB hosts
                                     # (22.8/GiB), not from 80 % to 40 % (15/GiB)
    "balance_threshold_pct": 10.0,   # balance: only hosts more than this many points above the mean load give guests
    "cooldown_s": 600.0,             # a guest migrated less than this ago only moves when a hard expectation needs it
    "migration_budget": None,        # max optional migrations per run (None = unlimited; required moves always count)
    "objective": None,               # "consolidate" | "balance" | "cost"; None = consolidate for FORMAT.md instances
                                     # or when a power_saving expectation exists, else balance; "cost" minimises
                                     # the weighted cost (objective.py): soft expectations by weight plus move costs
    "service_move_cost": 0,          # cost: added per guest of the service with the most migrated guests
    "search_workers": 1,             # cost: searches run side by side in forked processes, each with its own
                                     # seed, and the cheapest answer is kept (give it the cores the controller
                                     # can spare: more workers than cores slow each other down)
    "joint_swaps": False,            # cost: also swap two guests that fit only once both have moved (only the end
                                     # placement must fit, as in ROADEF 2012); no one-at-a-time order reaches it
    "allow_power_on": True,          # powered-off hosts may be switched on when capacity is short
    "temp_hosts": True,              # the scheduler may route a guest via a temporary host to break cycles
    "max_waves": None,               # refuse plans needing more waves (None: no limit; the scheduler still stops
                                     # at 3 waves per move, which only a bug could reach)
    "memory_overcommit": None,       # weigh balloon shrinks/grows and KSM against migrations (memory.py);
                                     # None = true when any guest carries mem_used_mib (balloon statistics)
}

# Keys of a host's optional ``ksm`` mapping (host_info's KSM counters, see memory.py). ``estimate_basis`` says how
# ``estimated_saving_mib`` was made (text for the plan's reasons; absent = measured pages_sharing). ``managed``
# false: the plan never switches this host's KSM (the lookup's ksm_hosts), though what it shares counts.
# ``pages_to_scan`` / ``sleep_millisecs`` (and ``scan_reason``, why): the scan rate a KSM-on step sets.
KSM_KEYS = ("available", "run", "pages_sharing", "pages_shared", "page_size", "estimated_saving_mib",
            "estimate_basis", "managed", "pages_to_scan", "sleep_millisecs", "scan_reason")


class Problem:
    """A parsed planning request."""

    def __init__(self, state, cons, options, name, format_md):
        self.state = state
        self.cons = cons
        self.options = options
        self.name = name
        self.format_md = format_md
        self.memory = None      # memory.MemoryFacts when options.memory_overcommit holds


def _known(res):
    """Resource names a document may use: the four the facts fill in and any it declares."""
    return tuple(KNOWN_RESOURCES) + tuple(r for r in res if r not in KNOWN_RESOURCES)


def _check_amounts(amounts, res, path, what):
    if not isinstance(amounts, dict):
        _fail(path, "expected a mapping of resource: amount, got %r" % (amounts,))
    known = _known(res)
    for k, val in amounts.items():
        if k not in known:
            _fail("%s.%s" % (path, k), "unknown resource %r (known: %s)" % (k, ", ".join(known)))
        if type(val) not in (int, float) or val < 0:   # fast path; _number words the error
            _number(val, "%s.%s" % (path, k), lo=0)
    for r in res:
        if r not in amounts:
            _fail(path, "missing %s for packing resource %r" % (what, r))


def _parse_options(doc):
    raw = doc.get("options") or {}
    if not isinstance(raw, dict):
        _fail("options", "expected a mapping, got %r" % (raw,))
    for k in raw:
        if k not in DEFAULT_OPTIONS:
            _fail("options." + k, "unknown option (known: %s)" % ", ".join(sorted(DEFAULT_OPTIONS)))
    opt = dict(DEFAULT_OPTIONS)
    limits = doc.get("limits") or {}
    if isinstance(limits, dict) and "max_migrations_per_host" in limits:
        opt["max_migrations_per_host"] = limits["max_migrations_per_host"]
    opt.update(raw)
    _number(opt["budget_s"], "options.budget_s", lo=0, lo_open=True)
    if isinstance(opt["seed"], bool) or not isinstance(opt["seed"], int):
        _fail("options.seed", "expected an integer, got %r" % (opt["seed"],))
    m = opt["max_migrations_per_host"]
    if isinstance(m, bool) or not isinstance(m, int) or m < 1:
        _fail("options.max_migrations_per_host", "expected an integer >= 1, got %r" % (m,))
    _number(opt["min_gain_per_gib"], "options.min_gain_per_gib", lo=0)
    _number(opt["balance_threshold_pct"], "options.balance_threshold_pct", lo=0)
    _number(opt["cooldown_s"], "options.cooldown_s", lo=0)
    mb = opt["migration_budget"]
    if mb is not None and (isinstance(mb, bool) or not isinstance(mb, int) or mb < 0):
        _fail("options.migration_budget", "expected null or an integer >= 0, got %r" % (mb,))
    if opt["objective"] not in (None, "consolidate", "balance", "cost"):
        _fail("options.objective", "expected 'consolidate', 'balance' or 'cost', got %r" % (opt["objective"],))
    _number(opt["service_move_cost"], "options.service_move_cost", lo=0)
    sw = opt["search_workers"]
    if isinstance(sw, bool) or not isinstance(sw, int) or not 1 <= sw <= MAX_SEARCH_WORKERS:
        _fail("options.search_workers", "expected an integer from 1 to %d, got %r" % (MAX_SEARCH_WORKERS, sw))
    for k in ("allow_power_on", "temp_hosts", "joint_swaps"):
        opt[k] = _bool(opt[k], "options." + k, DEFAULT_OPTIONS[k])
    mw = opt["max_waves"]
    if mw is not None and (isinstance(mw, bool) or not isinstance(mw, int) or mw < 1):
        _fail("options.max_waves", "expected null or an integer >= 1, got %r" % (mw,))
    if opt["memory_overcommit"] is not None:
        _bool(opt["memory_overcommit"], "options.memory_overcommit", False)
    return opt


def _check_ksm(ksm, path):
    if not isinstance(ksm, dict):
        _fail(path, "expected a mapping (%s), got %r" % (", ".join(KSM_KEYS), ksm))
    for k in ksm:
        if k not in KSM_KEYS:
            _fail("%s.%s" % (path, k), "unknown key (known: %s)" % ", ".join(KSM_KEYS))
    _bool(ksm.get("available"), path + ".available", False)
    _bool(ksm.get("managed"), path + ".managed", True)
    run = ksm.get("run")
    if run is not None and (isinstance(run, bool) or run not in (0, 1, 2)):
        _fail(path + ".run", "expected 0 (stopped), 1 (merging) or 2 (unmerging), got %r" % (run,))
    for k in ("pages_sharing", "pages_shared", "page_size"):
        x = ksm.get(k)
        if x is not None and (isinstance(x, bool) or not isinstance(x, int) or x < 0):
            _fail("%s.%s" % (path, k), "expected an integer >= 0, got %r" % (x,))
    for k in ("pages_to_scan", "sleep_millisecs"):
        x = ksm.get(k)
        if x is not None and (isinstance(x, bool) or not isinstance(x, int) or x < 1):
            _fail("%s.%s" % (path, k), "expected an integer >= 1, got %r" % (x,))
    if ksm.get("scan_reason") is not None and not isinstance(ksm["scan_reason"], str):
        _fail(path + ".scan_reason", "expected a string, got %r" % (ksm["scan_reason"],))
    if ksm.get("estimated_saving_mib") is not None:
        _number(ksm["estimated_saving_mib"], path + ".estimated_saving_mib", lo=0)
    basis = ksm.get("estimate_basis")
    if basis is not None and not isinstance(basis, str):
        _fail(path + ".estimate_basis", "expected a string, got %r" % (basis,))


def _format_md_expectations(doc):
    """Translate FORMAT.md's top-level anti_affinity / bans into expectation dicts."""
    out = []
    aa = doc.get("anti_affinity") or []
    if not isinstance(aa, list):
        _fail("anti_affinity", "expected a list of guest lists")
    for i, g in enumerate(aa):
        out.append({"id": "aa-%d" % i, "type": "anti_affinity", "vms": g, "hard": True})
    bans = doc.get("bans") or []
    if not isinstance(bans, list):
        _fail("bans", "expected a list of [guest, host] pairs")
    per_vm = {}
    for i, pair in enumerate(bans):
        try:
            vm, host = pair
            lst = per_vm.get(vm)
        except (TypeError, ValueError):
            lst = vm = host = None
            _fail("bans[%d]" % i, "expected a [guest, host] pair, got %r" % (pair,))
        if lst is None:
            lst = per_vm[vm] = []
        lst.append(host)
    for vm, hosts in per_vm.items():
        out.append({"id": "ban-%s" % vm, "type": "ban", "vms": [vm], "hosts": hosts, "hard": True})
    return out


def parse_document(doc):
    """Validate ``doc`` and build a Problem; raises PlanInputError naming the bad path."""
    if not isinstance(doc, dict):
        raise PlanInputError("document: expected a mapping, got %r" % (type(doc).__name__,))
    res = doc.get("resources", ["cpu", "mem"])
    if not isinstance(res, list) or not res:
        _fail("resources", "expected a non-empty list, got %r" % (res,))
    for i, r in enumerate(res):
        # Beyond cpu, mem, disk and net a document may declare its own packing resources (hugepages,
        # GPUs, ...): every host then states its capacity and every guest its demand.
        if not isinstance(r, str) or not RESOURCE_NAME.match(r):
            _fail("resources[%d]" % i, "expected a resource name (%s, or lower-case letters, digits and _), got %r"
                  % (", ".join(KNOWN_RESOURCES), r))
    if len(set(res)) != len(res):
        _fail("resources", "duplicate resource in %r" % (res,))
    hosts, vms = doc.get("hosts"), doc.get("vms")
    if not isinstance(hosts, list) or not hosts:
        _fail("hosts", "expected a non-empty list")
    if not isinstance(vms, list):
        _fail("vms", "expected a list")
    seen = set()
    for i, h in enumerate(hosts):
        p = "hosts[%d]" % i
        if not isinstance(h, dict):
            _fail(p, "expected a mapping")
        hid = h.get("id")
        if not isinstance(hid, str) or not hid:
            _fail(p + ".id", "expected a non-empty string, got %r" % (hid,))
        if hid in seen:
            _fail(p + ".id", "duplicate host id %r" % hid)
        seen.add(hid)
        p = "hosts[%d](%s)" % (i, hid)
        _check_amounts(h.get("cap"), res, p + ".cap", "capacity")
        if h.get("power", "on") not in ("on", "off"):
            _fail(p + ".power", "expected 'on' or 'off', got %r" % (h.get("power"),))
        _bool(h.get("maintenance"), p + ".maintenance", False)
        if h.get("migration_bandwidth_mbps") is not None:
            _number(h["migration_bandwidth_mbps"], p + ".migration_bandwidth_mbps", lo=0, lo_open=True)
        feats = h.get("features") or []
        if not isinstance(feats, list) or not all(isinstance(f, str) for f in feats):
            _fail(p + ".features", "expected a list of strings, got %r" % (feats,))
        labels = h.get("labels") or {}
        if not isinstance(labels, dict):
            _fail(p + ".labels", "expected a mapping, got %r" % (labels,))
        if h.get("ksm") is not None:
            _check_ksm(h["ksm"], p + ".ksm")
    for i, h in enumerate(hosts):
        mc = h.get("move_cost_to")
        if mc is None:
            continue
        p = "hosts[%d](%s).move_cost_to" % (i, h["id"])
        if not isinstance(mc, dict):
            _fail(p, "expected a mapping of host id: cost, got %r" % (mc,))
        for k, c in mc.items():
            if k not in seen:
                _fail(p, "unknown host %r" % (k,))
            _number(c, "%s.%s" % (p, k), lo=0)
    vseen = set()
    for i, v in enumerate(vms):
        p = "vms[%d]" % i
        if not isinstance(v, dict):
            _fail(p, "expected a mapping")
        vid = v.get("id")
        if not isinstance(vid, str) or not vid:
            _fail(p + ".id", "expected a non-empty string, got %r" % (vid,))
        if vid in vseen:
            _fail(p + ".id", "duplicate guest id %r" % vid)
        vseen.add(vid)
        p = "vms[%d](%s)" % (i, vid)
        _check_amounts(v.get("dem"), res, p + ".dem", "demand")
        if v.get("host") is not None and v["host"] not in seen:
            _fail(p + ".host", "unknown host %r" % (v["host"],))
        if v.get("vcpu") is not None and (isinstance(v["vcpu"], bool) or not isinstance(v["vcpu"], int) or v["vcpu"] < 1):
            _fail(p + ".vcpu", "expected an integer >= 1, got %r" % (v["vcpu"],))
        for k in ("mem_alloc_mib", "dirty_mbps", "last_migrated_s_ago", "mem_used_mib", "mem_max_mib", "move_cost"):
            x = v.get(k)
            if x is not None and (type(x) not in (int, float) or x < 0):
                _number(x, "%s.%s" % (p, k), lo=0)
        if v.get("service") is not None and not isinstance(v["service"], str):
            _fail(p + ".service", "expected a string, got %r" % (v["service"],))
        req = v.get("requires") or []
        if not isinstance(req, list) or not all(isinstance(f, str) for f in req):
            _fail(p + ".requires", "expected a list of strings, got %r" % (req,))
    format_md = "expectations" not in doc and any(k in doc for k in ("anti_affinity", "bans", "limits", "name"))
    raw_exps = doc.get("expectations")
    if raw_exps is not None and not isinstance(raw_exps, list):
        _fail("expectations", "expected a list")
    raw_exps = list(raw_exps or []) + _format_md_expectations(doc)
    # Ceilings on a non-packing resource make it tracked (loads, limits) without making it a packing resource.
    tracked = list(res)
    for e in raw_exps:
        if isinstance(e, dict) and e.get("type") == "ceiling" and e.get("resource") in _known(res) \
                and e["resource"] not in tracked and all(e["resource"] in (h.get("cap") or {}) for h in hosts):
            tracked.append(e["resource"])
    transient = doc.get("transient_resources") or []
    if not isinstance(transient, list):
        _fail("transient_resources", "expected a list of resource names, got %r" % (transient,))
    for i, r in enumerate(transient):
        # A transient resource stays in use on the host a guest left (e.g. a local disk image kept until the
        # migration is confirmed), so that host keeps room for it.
        if r not in res:
            _fail("transient_resources[%d]" % i, "%r is not a packing resource (resources: %s)" % (r, ", ".join(res)))
    state = State(tracked, res, hosts, vms, transient)
    exps = parse_expectations(state, raw_exps)
    opt = _parse_options(doc)
    cons = Constraints(state, exps)
    if opt["objective"] is None:
        opt["objective"] = "consolidate" if (format_md or cons.power_saving is not None) else "balance"
    if opt["memory_overcommit"] is None:
        opt["memory_overcommit"] = any(v.get("mem_used_mib") is not None for v in vms)
    name = doc.get("name", "")
    prob = Problem(state, cons, opt, name if isinstance(name, str) else str(name), format_md)
    prob.memory = MemoryFacts(state, hosts, vms) if opt["memory_overcommit"] else None
    if prob.memory is not None:
        prob.memory.credit_running_ksm(state, cons)
    return prob
