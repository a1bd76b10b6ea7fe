"""Wave scheduling (limits, both-host reservations, cycles) and the plan checker itself."""

from __future__ import annotations

import time

import pytest

from ansible_collections.autopilot.kvm.plugins.plugin_utils.planner.api import plan_document
from ansible_collections.autopilot.kvm.plugins.plugin_utils.planner.packing import Packing
from ansible_collections.autopilot.kvm.plugins.plugin_utils.planner.parse import parse_document
from ansible_collections.autopilot.kvm.plugins.plugin_utils.planner.schedule import ScheduleError, schedule
from ansible_collections.autopilot.kvm.plugins.plugin_utils.planner.validate import check_plan

from .planner_helpers import doc, host, vm


def test_per_host_limit_spreads_evacuation_over_waves():
    hosts = [host("h1")] + [host("h%d" % i) for i in range(2, 7)]
    vms = [vm("v%d" % i, "h1", mem=500) for i in range(5)]
    d = doc(hosts, vms, [{"id": "m", "type": "maintenance", "host": "h1"}])
    res = plan_document(d)
    assert check_plan(d, res) == []
    assert len(res["waves"]) == 3
    for wave in res["waves"]:
        assert sum(1 for m in wave if m["from"] == "h1") <= 2
    d["options"] = {"max_migrations_per_host": 5}
    assert len(plan_document(d)["waves"]) == 1


def test_arrival_waits_for_departure_memory_on_both_hosts():
    # b must go to h2 (fence) but h2 holds a until a has left for h3 (maintenance of h2 is not the
    # trigger: a is banned from h2). Both would fit only if a's memory were not counted on h2.
    hosts = [host("h1", mem=10000), host("h2", mem=10000), host("h3", mem=10000)]
    vms = [vm("a", "h2", mem=7000), vm("b", "h1", mem=7000)]
    exps = [{"id": "fb", "type": "fence", "vms": ["b"], "hosts": ["h2"]},
            {"id": "ba", "type": "ban", "vms": ["a"], "hosts": ["h2", "h1"]}]
    d = doc(hosts, vms, exps)
    res = plan_document(d)
    assert check_plan(d, res) == []
    wave_of = {s["vm"]: s["wave"] for s in res["steps"]}
    assert wave_of["a"] < wave_of["b"]


def test_swap_cycle_broken_by_temporary_host():
    hosts = [host("h1", mem=10000), host("h2", mem=10000), host("h3", mem=10000)]
    vms = [vm("a", "h1", mem=8000), vm("b", "h2", mem=8000), vm("c", "h3", mem=1000)]
    exps = [{"id": "fa", "type": "fence", "vms": ["a"], "hosts": ["h2", "h3"]},
            {"id": "fb", "type": "fence", "vms": ["b"], "hosts": ["h1"]},
            {"id": "ca", "type": "ban", "vms": ["a"], "hosts": ["h3"], "hard": False}]
    d = doc(hosts, vms, exps, max_migrations_per_host=2)
    res = plan_document(d)
    assert res["feasible"] and check_plan(d, res) == []
    assert res["assignment"]["b"] == "h1"


def test_true_cycle_uses_temp_host_and_stays_valid():
    # a and b must swap hosts; nothing else can take them for good (fences), h3 is a temporary stop.
    hosts = [host("h1", mem=10000), host("h2", mem=10000), host("h3", mem=10000)]
    vms = [vm("a", "h1", mem=8000), vm("b", "h2", mem=8000)]
    exps = [{"id": "fa", "type": "fence", "vms": ["a"], "hosts": ["h2", "h3"]},
            {"id": "fb", "type": "fence", "vms": ["b"], "hosts": ["h1"]},
            {"id": "aa", "type": "anti_affinity", "vms": ["a", "b"]}]
    d = doc(hosts, vms, exps)
    res = plan_document(d)
    assert res["feasible"] and check_plan(d, res) == []
    assert res["assignment"] == {"a": "h2", "b": "h1"} or res["assignment"]["a"] == "h3"


def _packing(d):
    prob = parse_document(d)
    return Packing(prob.state, prob.cons, [True] * prob.state.n_hosts), prob.options


def test_swap_needs_temporary_host():
    # a and b swap hosts; neither host can hold both: the scheduler parks one on h3 first.
    hosts = [host("h1", mem=10000), host("h2", mem=10000), host("h3", mem=10000)]
    vms = [vm("a", "h1", mem=8000), vm("b", "h2", mem=8000)]
    pk, opts = _packing(doc(hosts, vms))
    sch = schedule(pk, [1, 0], opts)
    assert len(sch.temp) == 1
    assert sum(len(w) for w in sch.waves) == 3
    # replay: at no wave does a receiving host exceed its capacity with both copies counted
    cur = [0, 1]
    for wave in sch.waves:
        for _i, moves in wave:
            for v, s, d in moves:
                assert cur[v] == s
                load = sum(8000 for j in range(2) if cur[j] == d) + 8000
                assert load <= 10000
        for _i, moves in wave:
            for v, s, d in moves:
                cur[v] = d
    assert cur == [1, 0]
    opts = dict(opts, temp_hosts=False)
    with pytest.raises(ScheduleError):
        schedule(pk, [1, 0], opts)


def test_ordering_stops_at_its_deadline_naming_the_guests_left():
    # Four guests leave h1, one per wave (limit 1): in time, four waves; past the deadline, none, and the error
    # names every guest still to move.
    hosts = [host("h1"), host("h2")]
    vms = [vm("v%d" % k, "h1") for k in range(4)]
    pk, opts = _packing(doc(hosts, vms))
    opts = dict(opts, max_migrations_per_host=1)
    assert len(schedule(pk, [1] * 4, opts, deadline=time.monotonic() + 60).waves) == 4
    with pytest.raises(ScheduleError, match="out of time after 0 waves, 4 guests") as err:
        schedule(pk, [1] * 4, opts, deadline=time.monotonic() - 1)
    assert sorted(err.value.items) == [0, 1, 2, 3]


def test_swap_blocked_by_fences_is_infeasible_not_partial():
    hosts = [host("h1", mem=10000), host("h2", mem=10000), host("h3", mem=10000)]
    vms = [vm("a", "h1", mem=8000), vm("b", "h2", mem=8000)]
    exps = [{"id": "fa", "type": "fence", "vms": ["a"], "hosts": ["h2"]},
            {"id": "fb", "type": "fence", "vms": ["b"], "hosts": ["h1"]}]
    res = plan_document(doc(hosts, vms, exps))
    assert res["feasible"] is False and res["steps"] == [] and res["waves"] == []
    assert "order" in res["conflicts"][0]["text"]


def test_anti_affinity_holds_during_transit():
    # a must leave h1 (maintenance); b (same group) leaves h2 in the same plan: never share a host.
    hosts = [host("h1"), host("h2"), host("h3"), host("h4")]
    vms = [vm("a", "h1"), vm("b", "h2")]
    pk, opts = _packing(doc(hosts, vms, [{"id": "aa", "type": "anti_affinity", "vms": ["a", "b"]}]))
    sch = schedule(pk, [1, 0], opts)   # swap inside the group
    cur = [0, 1]
    for wave in sch.waves:
        flat = [m for _i, moves in wave for m in moves]
        for v, _s, d in flat:
            other = 1 - v
            assert cur[other] != d and all(d2 != d for v2, _s2, d2 in flat if v2 == other)
        for v, _s, d in flat:
            cur[v] = d
    assert cur == [1, 0]


def _valid_case():
    hosts = [host("h1"), host("h2"), host("h3")]
    vms = [vm("a", "h1", mem=4000), vm("b", "h1", mem=4000), vm("c", "h2", mem=4000)]
    inst = {"name": "x", "resources": ["cpu", "mem"], "hosts": hosts, "vms": vms, "anti_affinity": [["a", "c"]],
            "bans": [["b", "h3"]]}
    res = {"assignment": {"a": "h3", "b": "h1", "c": "h2"}, "waves": [[{"vm": "a", "from": "h1", "to": "h3"}]]}
    return inst, res


def test_checker_accepts_valid_format_md_result():
    inst, res = _valid_case()
    assert check_plan(inst, res) == []


def test_checker_rejects_each_rule():
    inst, res = _valid_case()
    bad = dict(res, waves=[[{"vm": "a", "from": "h2", "to": "h3"}]])
    assert any("moves from" in e for e in check_plan(inst, bad))
    bad = dict(res, assignment={"a": "h2", "b": "h1", "c": "h2"})
    assert any("rule 2" in e for e in check_plan(inst, bad))
    bad = {"assignment": {"a": "h1", "b": "h3", "c": "h2"}, "waves": [[{"vm": "b", "from": "h1", "to": "h3"}]]}
    errs = check_plan(inst, bad)
    assert any("forbidden" in e for e in errs)
    bad = {"assignment": {"a": "h2", "b": "h1", "c": "h2"}, "waves": [[{"vm": "a", "from": "h1", "to": "h2"}]]}
    assert any("anti-affinity" in e for e in check_plan(inst, bad))
    inst2 = dict(inst, limits={"max_migrations_per_host": 1})
    bad = {"assignment": {"a": "h3", "b": "h2", "c": "h2"},
           "waves": [[{"vm": "a", "from": "h1", "to": "h3"}, {"vm": "b", "from": "h1", "to": "h2"}]]}
    assert any("rule 5" in e for e in check_plan(inst2, bad))
    # rule 3: h2 receives b while still... h2 holds c (4000) + b (4000) + a (4000) > 10000
    bad = {"assignment": {"a": "h2", "b": "h2", "c": "h3"},
           "waves": [[{"vm": "a", "from": "h1", "to": "h2"}, {"vm": "b", "from": "h1", "to": "h2"},
                      {"vm": "c", "from": "h2", "to": "h3"}]]}
    assert any("rule 3" in e for e in check_plan(dict(inst, anti_affinity=[]), bad))


def test_checker_flags_infeasible_result_with_steps():
    inst, _res = _valid_case()
    errs = check_plan(inst, {"feasible": False, "steps": [{"kind": "migrate"}], "waves": [], "conflicts": []})
    assert len(errs) == 2


def test_fast_dirtying_guest_migrates_alone():
    # 500 MB/s dirty rate on 10 GbE (1111 MB/s usable): rho 0.45 alone, 0.9 when two streams share the link.
    hosts = [host("h%d" % i) for i in range(4)]
    vms = [vm("hot", "h0", mem=500, dirty_mbps=500.0)] + [vm("c%d" % i, "h0", mem=500) for i in range(3)]
    d = doc(hosts, vms, [{"id": "m", "type": "maintenance", "host": "h0"}], max_migrations_per_host=4)
    res = plan_document(d)
    assert check_plan(d, res) == []
    hot_wave = next(s["wave"] for s in res["steps"] if s["vm"] == "hot")
    same = [s for s in res["steps"] if s["wave"] == hot_wave and s["kind"] == "migrate"]
    assert len(same) == 1
    assert len(res["waves"]) == 2    # the other three share one wave (limit 4)


def _replay(d, sch):
    """The schedule as a FORMAT.md result (waves of moves, final assignment) for check_plan."""
    prob = parse_document(d)
    ids, names = prob.state.host_ids, prob.state.vm_ids
    cur = {names[v]: ids[h] for v, h in enumerate(prob.state.host_of)}
    waves = []
    for wave in sch.waves:
        waves.append([{"vm": names[v], "from": ids[s], "to": ids[t]} for _i, moves in wave for v, s, t in moves])
        for m in waves[-1]:
            cur[m["vm"]] = m["to"]
    return {"assignment": cur, "waves": waves}


def test_split_bundle_gathers_without_splitting_a_nested_group():
    # g = a+b+c+e gathers on h2, where e already runs and z (leaving for h3) still counts during the first
    # wave: a+b fit beside them, a+b+c do not. The nested pair a+b holds from the start: it moves as one.
    hosts = [host("h%d" % i) for i in range(4)]
    vms = [vm("a", "h0", mem=2000), vm("b", "h0", mem=2000), vm("c", "h0", mem=2000), vm("e", "h2", mem=1000),
           vm("z", "h2", mem=5000)]
    exps = [{"id": "g", "type": "affinity", "vms": ["a", "b", "c", "e"]},
            {"id": "pair", "type": "affinity", "vms": ["a", "b"]}]
    d = doc(hosts, vms, exps, max_migrations_per_host=2)
    pk, opts = _packing(d)
    final = [-1] * len(pk.members)
    final[pk.item_of[0]] = 2     # the bundle (a, b, c, e)
    final[pk.item_of[4]] = 3     # z
    sch = schedule(pk, final, opts)
    assert check_plan(d, _replay(d, sch)) == []
    first = {v for _i, moves in sch.waves[0] for v, _s, _t in moves}
    assert first == {0, 1, 4}    # a and b together, c waits for z to leave
    assert len(sch.waves) == 2


def test_checker_counts_nested_affinity_groups_as_one_bundle():
    # g and its nested pair are one bundle: moving it whole is one migration per host (limit 1).
    hosts = [host("h0"), host("h1"), host("h2")]
    vms = [vm("a", "h0"), vm("b", "h0"), vm("c", "h0"), vm("x", "h0")]
    exps = [{"id": "g", "type": "affinity", "vms": ["a", "b", "c"]},
            {"id": "pair", "type": "affinity", "vms": ["a", "b"]}]
    d = doc(hosts, vms, exps, max_migrations_per_host=1)
    whole = [{"vm": n, "from": "h0", "to": "h1"} for n in ("a", "b", "c")]
    res = {"assignment": {"a": "h1", "b": "h1", "c": "h1", "x": "h0"}, "waves": [whole]}
    assert check_plan(d, res) == []
    # another guest leaving h0 in the same wave is a second migration there
    res = {"assignment": {"a": "h1", "b": "h1", "c": "h1", "x": "h2"},
           "waves": [whole + [{"vm": "x", "from": "h0", "to": "h2"}]]}
    assert any("2 migrations touch h0 > 1 (rule 5)" in e for e in check_plan(d, res))


def test_nested_affinity_bundle_moves_whole_under_a_limit_of_one():
    # Found by the property test with random examples: h0 is over its memory; the bundle leaves whole.
    hosts = [host("h0", cpu=2000, mem=2000), host("h1", cpu=2000, mem=2000, power="off")]
    vms = [vm("v0", "h0", cpu=50, mem=484), vm("v1", "h0", cpu=50, mem=517), vm("v2", "h0", cpu=50, mem=100)]
    vms += [vm("v%d" % i, "h0", cpu=50, mem=100) for i in range(3, 13)]
    exps = [{"id": "g", "type": "affinity", "vms": ["v0", "v1", "v2"]},
            {"id": "pair", "type": "affinity", "vms": ["v0", "v1"]}]
    d = doc(hosts, vms, exps, seed=0, budget_s=0.1, objective="balance", max_migrations_per_host=1)
    res = plan_document(d)
    assert res["feasible"] and check_plan(d, res) == []
