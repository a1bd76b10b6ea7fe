"""Property-based: any plan returned passes the validity rules; infeasible answers carry no plan."""

from __future__ import annotations

from hypothesis import HealthCheck, given, settings, strategies as st

from ansible_collections.autopilot.kvm.plugins.plugin_utils.planner.api import plan_document
from ansible_collections.autopilot.kvm.plugins.plugin_utils.planner.packing import Packing
from ansible_collections.autopilot.kvm.plugins.plugin_utils.planner.parse import parse_document
from ansible_collections.autopilot.kvm.plugins.plugin_utils.planner.schedule import ScheduleError, schedule
from ansible_collections.autopilot.kvm.plugins.plugin_utils.planner.validate import check_plan


@st.composite
def documents(draw):
    nh = draw(st.integers(2, 6))
    nv = draw(st.integers(1, 14))
    hosts = []
    for h in range(nh):
        hosts.append({"id": "h%d" % h,
                      "cap": {"cpu": draw(st.integers(2000, 16000)), "mem": draw(st.integers(2000, 16000))},
                      "features": ["avx512"] if draw(st.booleans()) else [],
                      "labels": {"rack": "r%d" % draw(st.integers(0, 2))},
                      "power": "off" if draw(st.integers(0, 9)) == 0 else "on"})
    on = [h["id"] for h in hosts if h["power"] == "on"] or [hosts[0]["id"]]
    if hosts[0]["id"] in on:
        hosts[0]["power"] = "on"
    for h in hosts:
        if h["id"] in on:
            h["power"] = "on"
    vms = []
    for v in range(nv):
        mem = draw(st.integers(100, 6000))
        vms.append({"id": "v%d" % v, "dem": {"cpu": draw(st.integers(50, 5000)), "mem": mem}, "vcpu": draw(st.integers(1, 8)),
                    "mem_alloc_mib": mem, "dirty_mbps": draw(st.floats(0, 900)), "host": draw(st.sampled_from(on)),
                    "last_migrated_s_ago": draw(st.none() | st.floats(0, 3000))})
    names = [v["id"] for v in vms]
    hnames = [h["id"] for h in hosts]
    exps = []
    for k in range(draw(st.integers(0, 5))):
        kind = draw(st.sampled_from(["ceiling", "anti_affinity", "ban", "fence", "maintenance", "features", "power_saving",
                                     "affinity", "cpu_cap", "memory_guarantee"]))
        hard = draw(st.booleans()) if kind in ("anti_affinity", "affinity", "ban", "ceiling") else True
        e = {"id": "e%d" % k, "type": kind, "hard": hard}
        if kind == "ceiling":
            e.update(hosts="*", resource=draw(st.sampled_from(["cpu", "mem"])), max_pct=draw(st.integers(40, 100)))
        elif kind in ("anti_affinity", "affinity"):
            if nv < 2:
                continue
            e["vms"] = draw(st.lists(st.sampled_from(names), min_size=2, max_size=min(4, nv), unique=True))
            if kind == "anti_affinity" and draw(st.booleans()):
                e["spread_label"] = "rack"
        elif kind in ("ban", "fence"):
            e["vms"] = draw(st.lists(st.sampled_from(names), min_size=1, max_size=2, unique=True))
            e["hosts"] = draw(st.lists(st.sampled_from(hnames), min_size=1, max_size=2, unique=True))
        elif kind == "maintenance":
            e["host"] = draw(st.sampled_from(hnames))
        elif kind == "features":
            e.update(vms=[draw(st.sampled_from(names))], features=["avx512"])
        elif kind == "power_saving":
            e.update(hosts_may_power_off="*", hard=False)
        elif kind == "cpu_cap":
            e.update(vm=draw(st.sampled_from(names)), max_pct=draw(st.integers(10, 100)))
        elif kind == "memory_guarantee":
            e.update(vm=draw(st.sampled_from(names)), min_mib=draw(st.integers(0, 3000)))
        exps.append(e)
    opts = {"seed": draw(st.integers(0, 3)), "budget_s": 0.1, "objective": draw(st.sampled_from(["balance", "consolidate"])),
            "max_migrations_per_host": draw(st.integers(1, 3)), "migration_budget": draw(st.none() | st.integers(0, 4))}
    return {"resources": ["cpu", "mem"], "hosts": hosts, "vms": vms, "expectations": exps, "options": opts}


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(documents())
def test_any_returned_plan_is_valid(d):
    res = plan_document(d)
    errs = check_plan(d, res)
    assert errs == [], (errs, res["explain"])
    if res["feasible"]:
        assert res["metrics"]["hard_violations"] == 0
        budget = d["options"]["migration_budget"]
        if budget is not None:
            # Required moves (hard expectations) always happen; optional ones stay within the budget.
            assert res["metrics"]["migrations"] <= res["metrics"]["search"]["required_migrations"] + budget
        for s in res["steps"]:
            assert s["reason"]["expectation"]
            assert s["loads_after"]
    else:
        assert res["steps"] == [] and res["waves"] == [] and res["conflicts"]
        assert all(c["expectations"] for c in res["conflicts"])


@st.composite
def format_md_instances(draw):
    d = draw(documents())
    ban = [[v["id"], draw(st.sampled_from([h["id"] for h in d["hosts"]]))] for v in d["vms"] if draw(st.booleans())]
    names = [v["id"] for v in d["vms"]]
    aa = [draw(st.lists(st.sampled_from(names), min_size=2, max_size=3, unique=True))] if len(names) >= 2 else []
    for h in d["hosts"]:
        h["power"] = "on"
    return {"name": "p", "resources": ["cpu", "mem"], "hosts": d["hosts"], "vms": d["vms"], "bans": ban,
            "anti_affinity": aa, "limits": {"max_migrations_per_host": 2}, "options": {"budget_s": 0.1}}


@settings(max_examples=100, deadline=None)
@given(format_md_instances())
def test_format_md_plans_pass_format_rules(inst):
    res = plan_document(inst)
    assert check_plan(inst, res, check_expectations=False) == []
    if res["feasible"]:
        assert res["metrics"]["hosts_used"] <= len({v["host"] for v in inst["vms"]}) + len(inst["hosts"])


@st.composite
def transitions(draw):
    """Random start and random target placement (target within capacity), anti-affinity included."""
    nh = draw(st.integers(2, 5))
    nv = draw(st.integers(1, 10))
    hosts = [{"id": "h%d" % h, "cap": {"cpu": 10000, "mem": 1000}} for h in range(nh)]
    mems = [draw(st.integers(50, 600)) for _unused in range(nv)]
    target, used = [], [0] * nh
    for m in mems:
        free = [h for h in range(nh) if used[h] + m <= 1000]
        if not free:
            free = [min(range(nh), key=lambda h: used[h])]
        h = draw(st.sampled_from(free))
        used[h] += m
        target.append(h)
    vms = [{"id": "v%d" % v, "dem": {"cpu": 10, "mem": mems[v]}, "host": "h%d" % draw(st.integers(0, nh - 1))}
           for v in range(nv)]
    groups = []
    if nv >= 2 and draw(st.booleans()):
        groups = [draw(st.lists(st.sampled_from([v["id"] for v in vms]), min_size=2, max_size=3, unique=True))]
    return {"name": "t", "resources": ["cpu", "mem"], "hosts": hosts, "vms": vms, "anti_affinity": groups,
            "limits": {"max_migrations_per_host": draw(st.integers(1, 3))}}, target


@settings(max_examples=150, deadline=None)
@given(transitions())
def test_scheduler_orders_any_target_safely_or_refuses(case):
    d, target = case
    prob = parse_document(d)
    pk = Packing(prob.state, prob.cons, [True] * prob.state.n_hosts)
    keys = [[target[v] for v in vms] for _e, vms, _l in prob.cons.aa]
    if any(len(set(k)) < len(k) for k in keys):
        return   # the target itself breaks anti-affinity: not a scheduling question
    loads = {}
    for v, h in enumerate(target):
        loads[h] = loads.get(h, 0) + prob.state.dem[prob.state.res.index("mem")][v]
    if any(x > 1000 for x in loads.values()):
        return   # target over capacity: not a scheduling question
    try:
        sch = schedule(pk, list(target), prob.options)
    except ScheduleError:
        return
    ids = prob.state.host_ids
    waves = [[{"vm": prob.state.vm_ids[v], "from": ids[s], "to": ids[t]} for _i, moves in w for v, s, t in moves]
             for w in sch.waves]
    result = {"assignment": {prob.state.vm_ids[v]: ids[h] for v, h in enumerate(target)}, "waves": waves}
    assert check_plan(d, result) == []


def test_nested_affinity_with_a_limit_of_one_is_never_split():
    # v0+v1 (held together by e0) wait on h3, v2 on h4; all three must gather on h0. The pair used to be
    # gathered one guest at a time, which split e0 for a wave.
    host = dict(features=[], labels={"rack": "r0"})
    hosts = [dict(host, id="h0", cap={"cpu": 2001, "mem": 2000}, power="off")]
    hosts += [dict(host, id="h%d" % i, cap={"cpu": 2000, "mem": 2000}, power="off" if i < 3 else "on") for i in (1, 2, 3, 4)]
    vm = dict(vcpu=1, mem_alloc_mib=100, dirty_mbps=0.0, last_migrated_s_ago=None)
    d = {"resources": ["cpu", "mem"], "hosts": hosts,
         "vms": [dict(vm, id="v0", dem={"cpu": 1901, "mem": 100}, host="h3"),
                 dict(vm, id="v1", dem={"cpu": 50, "mem": 100}, host="h3"),
                 dict(vm, id="v2", dem={"cpu": 50, "mem": 100}, host="h4")],
         "expectations": [{"id": "e0", "type": "affinity", "hard": True, "vms": ["v0", "v1"]},
                          {"id": "e1", "type": "affinity", "hard": True, "vms": ["v0", "v1", "v2"]}],
         "options": {"seed": 0, "budget_s": 0.1, "objective": "balance", "max_migrations_per_host": 1}}
    res = plan_document(d)
    assert check_plan(d, res) == []
    assert res["feasible"] and {res["assignment"][vm] for vm in ("v0", "v1", "v2")} == {"h0"}
