"""Objective "cost": weighted soft expectations, move costs, transient resources, spread and depends rules."""

from __future__ import annotations

import copy
import os
import random
import time

import pytest

from ansible_collections.autopilot.kvm.plugins.plugin_utils.planner import costsearch, ordering
from ansible_collections.autopilot.kvm.plugins.plugin_utils.planner.api import plan_document
from ansible_collections.autopilot.kvm.plugins.plugin_utils.planner.errors import PlanInputError
from ansible_collections.autopilot.kvm.plugins.plugin_utils.planner.objective import CostModel
from ansible_collections.autopilot.kvm.plugins.plugin_utils.planner.packing import Packing
from ansible_collections.autopilot.kvm.plugins.plugin_utils.planner.parse import parse_document
from ansible_collections.autopilot.kvm.plugins.plugin_utils.planner.schedule import ScheduleError, concatenate, schedule
from ansible_collections.autopilot.kvm.plugins.plugin_utils.planner.search import Reasons
from ansible_collections.autopilot.kvm.plugins.plugin_utils.planner.validate import check_plan

from .planner_helpers import doc, host, vm


def plan(d):
    res = plan_document(d)
    assert check_plan(d, res) == []
    return res


def soft_ceiling(hosts, pct=50, weight=1, resource="cpu", eid=None):
    return {"id": eid or "ceil-%s-%s" % (resource, pct), "type": "ceiling", "resource": resource, "max_pct": pct,
            "hard": False, "weight": weight, "hosts": hosts}


def test_cost_moves_a_guest_when_the_overload_costs_more_than_the_move():
    # h1 holds 6000 of 10000 cpu under a 50 % soft ceiling: 1000 units over, weight 1 -> cost 1000.
    vms = [vm("a", "h1", cpu=3000, move_cost=200), vm("b", "h1", cpu=3000, move_cost=200)]
    d = doc([host("h1"), host("h2")], vms, [soft_ceiling(["h1", "h2"])], objective="cost", budget_s=0.5)
    res = plan(d)
    assert res["metrics"]["migrations"] == 1
    cost = res["metrics"]["search"]["cost"]
    assert cost["before"]["load"] == 1000 and cost["after"]["load"] == 0
    assert cost["after"]["moves"] == 200 and cost["after"]["total"] == 200
    step = [s for s in res["steps"] if s["kind"] == "migrate"][0]
    assert step["reason"]["expectation"] == "objective:cost"


def test_cost_keeps_a_guest_when_the_move_costs_more():
    vms = [vm("a", "h1", cpu=3000, move_cost=5000), vm("b", "h1", cpu=3000, move_cost=5000)]
    d = doc([host("h1"), host("h2")], vms, [soft_ceiling(["h1", "h2"])], objective="cost", budget_s=0.5)
    res = plan(d)
    assert res["metrics"]["migrations"] == 0
    assert res["metrics"]["search"]["cost"]["after"]["total"] == 1000


def test_host_move_cost_steers_the_destination():
    hosts = [host("h1", move_cost_to={"h2": 900, "h3": 10}), host("h2"), host("h3")]
    vms = [vm("a", "h1", cpu=3000), vm("b", "h1", cpu=3000)]
    d = doc(hosts, vms, [soft_ceiling(["h1", "h2", "h3"])], objective="cost", budget_s=0.5)
    res = plan(d)
    assert {s["to"] for s in res["steps"] if s["kind"] == "migrate"} == {"h3"}
    assert res["metrics"]["search"]["cost"]["after"]["total"] == 10


def test_free_ratio_is_a_weighted_cost():
    # Keep at least as much free memory as free cpu: h1 has free cpu 9000 and free memory 1000 -> 8000.
    hosts = [host("h1"), host("h2")]
    vms = [vm("a", "h1", cpu=1000, mem=9000), vm("b", "h2", cpu=9000, mem=1000)]
    ratio = {"id": "spare", "type": "free_ratio", "resource": "mem", "per": "cpu", "ratio": 1, "weight": 2}
    d = doc(hosts, vms, [ratio], objective="cost", budget_s=0.5)
    prob = parse_document(d)
    pk = Packing(prob.state, prob.cons, [True, True])
    assert CostModel(pk).total()["free_ratio"] == 2 * 8000
    # Both guests on one host leave nothing free there and all of the other host free: no cost.
    res = plan(d)
    assert res["metrics"]["search"]["cost"]["after"]["free_ratio"] == 0
    assert res["metrics"]["migrations"] == 1


def test_transient_usage_stays_on_the_host_left():
    # disk is transient: a guest that leaves h1 still holds its 6 there, so nothing new fits on h1.
    hosts = [{"id": h, "cap": {"cpu": 10000, "disk": 10}} for h in ("h1", "h2", "h3")]
    vms = [{"id": "a", "dem": {"cpu": 6000, "disk": 6}, "host": "h1"},
           {"id": "b", "dem": {"cpu": 1000, "disk": 6}, "host": "h2"}]
    # b would rather be on h1 (soft fence), a off it (soft ban): a swap, which the transient disk forbids.
    exps = [{"id": "b-on-h1", "type": "fence", "vms": ["b"], "hosts": ["h1"], "hard": False, "weight": 100},
            {"id": "a-off-h1", "type": "ban", "vms": ["a"], "hosts": ["h1"], "hard": False, "weight": 100}]
    d = {"resources": ["cpu", "disk"], "transient_resources": ["disk"], "hosts": hosts, "vms": vms,
         "expectations": exps, "options": {"objective": "cost", "budget_s": 0.5}}
    res = plan(d)
    assert res["assignment"]["b"] != "h1"
    assert res["assignment"]["a"] in ("h2", "h3")      # a may still leave: h2/h3 have room
    prob = parse_document(d)
    pk = Packing(prob.state, prob.cons, [True] * 3)
    pk.move(0, 2)
    assert not pk.fits(1, 0)        # 6 left behind by a + 6 of b > 10
    assert pk.fits(0, 0)            # a itself may come back: its usage is there already
    pk.move(0, 0)
    assert pk.resid[prob.state.res.index("disk")] == [0, 0, 0]
    # Without the transient declaration the swap is made.
    d2 = copy.deepcopy(d)
    del d2["transient_resources"]
    assert plan(d2)["assignment"]["b"] == "h1"


def test_spread_keeps_the_guests_over_enough_zones():
    hosts = [host("h%d" % i, labels={"zone": "z%d" % (i % 3)}) for i in range(3)]
    vms = [vm("w%d" % i, "h%d" % i) for i in range(3)]
    exps = [{"id": "together", "type": "fence", "vms": ["w0", "w1", "w2"], "hosts": ["h0"], "hard": False},
            {"id": "zones", "type": "spread", "vms": ["w0", "w1", "w2"], "label": "zone", "min": 2}]
    res = plan(doc(hosts, vms, exps, objective="cost", budget_s=0.5))
    zones = {res["assignment"][v] for v in ("w0", "w1", "w2")}
    assert len(zones) == 2 and "h0" in zones          # as close to the soft fence as the spread allows


def test_depends_keeps_dependants_next_to_what_they_depend_on():
    hosts = [host("h%d" % i, labels={"rack": "r%d" % (i // 2)}) for i in range(4)]
    # app wants to be on h3 (rack r1) but needs a db in its rack; the dbs are held to rack r0.
    vms = [vm("db1", "h0"), vm("db2", "h0"), vm("app", "h1")]
    exps = [{"id": "db-r0", "type": "fence", "vms": ["db1", "db2"], "hosts": ["h0", "h1"]},
            {"id": "app-h3", "type": "fence", "vms": ["app"], "hosts": ["h3"], "hard": False, "weight": 10},
            {"id": "app-db", "type": "depends", "vms": ["app"], "on": ["db1", "db2"], "label": "rack"}]
    res = plan(doc(hosts, vms, exps, objective="cost", budget_s=0.5))
    assert res["assignment"]["app"] in ("h0", "h1")
    # Once db2 may go to rack r1, it goes first (db1 still serves app in r0), then app follows it.
    exps[0]["vms"] = ["db1"]
    res = plan(doc(hosts, vms, exps, objective="cost", budget_s=0.5))
    assert res["assignment"]["app"] == "h3" and res["assignment"]["db2"] in ("h2", "h3")
    assert res["assignment"]["db1"] == "h0"        # moving it gains nothing: it stays


def test_unorderable_swap_is_not_made_and_would_be_redirected():
    # Two full hosts whose guests want to swap: no order is safe (each host holds both while one moves) and
    # no third host can take either. The search only swaps guests one of which fits before the other leaves,
    # so it keeps them; a target holding such a swap would have its blocked guests sent home.
    hosts = [host("h1", cpu=1000, mem=1000), host("h2", cpu=1000, mem=1000)]
    vms = [vm("a", "h1", cpu=1000, mem=1000), vm("b", "h2", cpu=1000, mem=1000)]
    exps = [{"id": "a-h2", "type": "fence", "vms": ["a"], "hosts": ["h2"], "hard": False, "weight": 5},
            {"id": "b-h1", "type": "fence", "vms": ["b"], "hosts": ["h1"], "hard": False, "weight": 5}]
    d = doc(hosts, vms, exps, objective="cost", budget_s=0.5)
    res = plan(d)
    assert res["feasible"] and res["metrics"]["migrations"] == 0
    assert res["metrics"]["search"]["cost"]["after"]["total"] == 10
    prob = parse_document(d)
    pk = Packing(prob.state, prob.cons, [True, True])
    pk.move(0, -1)
    pk.move(1, 0)
    pk.move(0, 1)
    with pytest.raises(ScheduleError) as err:
        schedule(pk, list(pk.asg), prob.options)
    sched = ordering._schedule_redirected(pk, Reasons(), prob.options, err.value.items, float("inf"))
    assert sched is not None and sched.waves == [] and pk.asg == [0, 1]
    # The same through the whole fallback, with no cost search run before it (no stats yet).
    pk.move(0, -1)
    pk.move(1, 0)
    pk.move(0, 1)
    stats = {}
    _pk, _reasons, sched, unreached = ordering.schedule_target(prob, pk, Reasons(), float("inf"), stats)
    assert sched.waves == [] and pk.asg == [0, 1] and stats["cost"]["redirected"] == 2
    # The swapped placement it could not reach is reported, not lost.
    assert unreached is not None and unreached[0] == [1, 0]


def test_joint_swaps_reach_a_swap_no_order_makes_and_the_plan_reports_it():
    # The same two full hosts. With options.joint_swaps only the end placement must fit, so the search swaps the
    # guests; no one-at-a-time order reaches that placement, so the plan keeps both where they are and reports the
    # target it could not reach.
    hosts = [host("h1", cpu=1000, mem=1000), host("h2", cpu=1000, mem=1000)]
    vms = [vm("a", "h1", cpu=1000, mem=1000), vm("b", "h2", cpu=1000, mem=1000)]
    exps = [{"id": "a-h2", "type": "fence", "vms": ["a"], "hosts": ["h2"], "hard": False, "weight": 5},
            {"id": "b-h1", "type": "fence", "vms": ["b"], "hosts": ["h1"], "hard": False, "weight": 5}]
    d = doc(hosts, vms, exps, objective="cost", budget_s=0.5, joint_swaps=True)
    res = plan(d)
    assert res["feasible"] and res["metrics"]["migrations"] == 0
    assert res["metrics"]["search"]["cost"]["after"]["total"] == 0
    assert res["unreached_target"]["assignment"] == {"a": "h2", "b": "h1"}
    # Not when one of them breaks a hard rule at the end: b may not leave h2.
    exps.append({"id": "b-stays", "type": "fence", "vms": ["b"], "hosts": ["h2"]})
    res = plan(doc(hosts, vms, exps, objective="cost", budget_s=0.5, joint_swaps=True))
    assert res["metrics"]["search"]["cost"]["after"]["total"] == 10 and "unreached_target" not in res


def test_a_joint_swap_is_made_only_when_the_end_placement_fits():
    # Three guests on two hosts of 1000: a (600) and b (500) on h1 would be 1100 after the swap with c (400) on h2.
    d = doc([host("h1", cpu=1000, mem=1000), host("h2", cpu=1000, mem=1000)],
            [vm("a", "h1", cpu=600, mem=1), vm("b", "h1", cpu=300, mem=1), vm("c", "h2", cpu=700, mem=1)])
    prob = parse_document(d)
    pk = Packing(prob.state, prob.cons, [True, True])
    assert not costsearch._swap(pk, 0, 2, 0, 1, joint=False)       # neither fits beside the other
    assert costsearch._swap(pk, 0, 2, 0, 1, joint=True) and pk.asg == [1, 0, 0]
    assert not pk.over(0) and not pk.over(1)
    pk.reset([0, 0, 1])
    # b (300) for c (700): h1 would hold 1300.
    assert not costsearch._swap(pk, 1, 2, 0, 1, joint=True) and pk.asg == [0, 0, 1]
    assert pk.used[0] == [900, 700]


@pytest.mark.parametrize("bad, path", [
    ({"type": "free_ratio", "resource": "mem", "per": "cpu", "ratio": 1, "hard": True}, "hard"),
    ({"type": "free_ratio", "resource": "gpu", "per": "cpu", "ratio": 1}, "resource"),
    ({"type": "free_ratio", "resource": "mem", "per": "cpu", "ratio": 0}, "ratio"),
    ({"type": "spread", "vms": ["a", "b"], "label": "zone", "min": 3}, "min"),
    ({"type": "spread", "vms": ["a", "b"], "label": "zone", "min": 2, "hard": False}, "hard"),
    ({"type": "spread", "vms": ["a", "b"], "label": "nolabel", "min": 2}, "label"),
    ({"type": "depends", "vms": ["a"], "on": ["zz"], "label": "zone"}, "on"),
])
def test_bad_new_expectations_get_clear_errors(bad, path):
    hosts = [host("h1", labels={"zone": "z1"}), host("h2", labels={"zone": "z2"})]
    d = doc(hosts, [vm("a", "h1"), vm("b", "h2")], [bad], objective="cost")
    with pytest.raises(PlanInputError, match=r"\." + path):
        plan_document(d)


@pytest.mark.parametrize("change, match", [
    (lambda d: d.update(transient_resources=["disk"]), "transient_resources"),
    (lambda d: d["hosts"][0].update(move_cost_to={"nope": 1}), "move_cost_to"),
    (lambda d: d["hosts"][0].update(move_cost_to={"h2": -1}), "move_cost_to"),
    (lambda d: d["vms"][0].update(move_cost=-3), "move_cost"),
    (lambda d: d["vms"][0].update(service=7), "service"),
    (lambda d: d["options"].update(objective="cheapest"), "objective"),
    (lambda d: d["options"].update(service_move_cost=-1), "service_move_cost"),
    (lambda d: d["options"].update(search_workers=0), "search_workers"),
    (lambda d: d["options"].update(search_workers="2"), "search_workers"),
    (lambda d: d["options"].update(search_workers=True), "search_workers"),
    (lambda d: d["options"].update(joint_swaps="yes"), "joint_swaps"),
    (lambda d: d["options"].update(joint_swaps=1), "joint_swaps"),
])
def test_bad_cost_inputs_get_clear_errors(change, match):
    d = doc([host("h1"), host("h2")], [vm("a", "h1")], objective="cost")
    change(d)
    with pytest.raises(PlanInputError, match=match):
        plan_document(d)


def _random_doc(rng):
    nh = rng.randint(2, 5)
    hosts = [{"id": "h%d" % h, "cap": {"cpu": 100, "mem": 100, "disk": 100}, "labels": {"zone": "z%d" % (h % 2)},
              "move_cost_to": {"h%d" % g: rng.randint(0, 5) for g in range(nh) if g != h}} for h in range(nh)]
    vms = [{"id": "v%d" % v, "dem": {"cpu": rng.randint(1, 30), "mem": rng.randint(1, 30), "disk": rng.randint(0, 20)},
            "host": "h%d" % rng.randrange(nh), "move_cost": rng.randint(0, 9), "service": "s%d" % rng.randint(0, 2)}
           for v in range(rng.randint(3, 12))]
    ids = [v["id"] for v in vms]
    exps = [soft_ceiling("*", rng.choice([30, 50, 70]), rng.randint(1, 5), "cpu"),
            soft_ceiling("*", 0, 1, "disk", eid="disk-all"),
            {"id": "ratio", "type": "free_ratio", "resource": "mem", "per": "cpu", "ratio": 1.5, "weight": 2},
            {"id": "sp", "type": "fence", "vms": ids[:2], "hosts": ["h0"], "hard": False, "weight": 7},
            {"id": "saa", "type": "anti_affinity", "vms": ids[:3], "hard": False, "weight": 11,
             "spread_label": "zone"},
            {"id": "saff", "type": "affinity", "vms": ids[-2:], "hard": False, "weight": 13}]
    return {"resources": ["cpu", "mem", "disk"], "hosts": hosts, "vms": vms, "expectations": exps,
            "options": {"objective": "cost", "service_move_cost": 3}}


def _random_case(seed, second_ceiling=False, ratio_subset=False):
    """(rng, Packing, CostModel) of a random document (``_random_doc``) drawn with ``seed``; with
    ``second_ceiling``, half the hosts get a second, higher CPU ceiling; with ``ratio_subset``, the free ratio
    holds on every other host only (a move between a host with it and one without)."""
    rng = random.Random(seed)
    d = _random_doc(rng)
    if second_ceiling:
        d["expectations"].append(soft_ceiling([h["id"] for h in d["hosts"][::2]], 80, 4, "cpu", eid="cpu-high"))
    if ratio_subset:
        ratio = [e for e in d["expectations"] if e["id"] == "ratio"][0]
        ratio["hosts"] = [h["id"] for h in d["hosts"][1::2]]
    prob = parse_document(d)
    pk = Packing(prob.state, prob.cons, [True] * prob.state.n_hosts)
    return rng, pk, CostModel(pk, 3)


@pytest.mark.parametrize("seed,second_ceiling,ratio_subset", [(s, False, False) for s in range(40)] +
                         [(s, True, False) for s in range(10)] + [(s, False, True) for s in range(10)])
def test_prices_of_moves_and_swaps_match_the_recomputed_cost(seed, second_ceiling, ratio_subset):
    """Every delta the search relies on equals the change of the cost recomputed from scratch."""
    rng, pk, model = _random_case(seed, second_ceiling, ratio_subset)
    assert any(model.extra) == second_ceiling
    assert all(model.ratio_at) != ratio_subset
    for _step in range(60):
        before = model.total()["total"]
        i = rng.randrange(len(pk.asg))
        a = pk.asg[i]
        if rng.random() < 0.5:
            b = rng.randrange(pk.nh)
            if b == a:
                continue
            d = model.shift_delta(i, b)
            pk.move(i, b)
            model.moved(i, a, b)
        else:
            j = rng.randrange(len(pk.asg))
            b = pk.asg[j]
            if b == a:
                continue
            d = model.swap_delta(i, j)
            if d is None:
                continue
            pk.move(i, b)
            pk.move(j, a)
            model.moved(i, a, b)
            model.moved(j, b, a)
        fresh = CostModel(pk, 3).total()["total"]
        assert model.total()["total"] == pytest.approx(fresh)
        assert before + d == pytest.approx(fresh)


def test_one_guest_service_price_agrees_with_the_general_one():
    """The fast price of one guest's move (``_service_delta_one``) equals the general one, whichever service
    holds the most migrated guests and however many share that count."""
    seen = set()
    for seed in range(20):
        rng, pk, model = _random_case(seed)
        for _step in range(80):
            i = rng.randrange(len(pk.asg))
            a, b = pk.asg[i], rng.randrange(pk.nh)
            if b == a:
                continue
            change = model._service_change(pk.members[i][0], a, b)
            fast, general = model._service_delta_one(*change), model._service_delta([change])
            assert fast == pytest.approx(general)
            seen.add(round(fast / model.w_service))
            pk.move(i, b)
            model.moved(i, a, b)
    assert seen == {-1, 0, 1}     # the walks raised the top, lowered it and left it


def test_the_search_prices_no_single_move_that_does_not_fit(monkeypatch):
    """A move that breaks a hard capacity can never be taken, so the search spends no price on it: every single
    move it prices (late acceptance and the closing descent) fits where it goes."""
    priced = []

    class Recording(CostModel):
        def shift_delta(self, i, b):
            priced.append(self.pk.fits(i, b))
            return CostModel.shift_delta(self, i, b)

    monkeypatch.setattr(costsearch, "CostModel", Recording)
    # Left out of the count, as they price moves that may not fit on purpose: a chain prices the onward move of the
    # destination's guest before checking it, sending home prices before checking, making room and homecoming move a
    # guest where it fits only once others have left.
    monkeypatch.setattr(costsearch, "_chain", lambda *args: None)
    monkeypatch.setattr(costsearch, "_home_if_free", lambda pk, model: 0)
    monkeypatch.setattr(costsearch, "_homecoming", lambda *args: (0, 0, 0))
    monkeypatch.setattr(costsearch, "ROOM_SHARE", 0.0)
    # Every host is over a 50 % soft ceiling; any guest but a 20 fits on h2 only, a 20 on h2 and h0.
    sizes = {"h0": [30, 30, 20], "h1": [45, 45], "h2": [20], "h3": [50, 40]}
    vms = [vm("%s-%d" % (h, k), h, cpu=c, mem=1, move_cost=0) for h, cs in sizes.items() for k, c in enumerate(cs)]
    d = doc([host(h, cpu=100, mem=100) for h in sizes], vms, [soft_ceiling(list(sizes))], objective="cost",
            budget_s=0.2, seed=5)
    res = plan(d)
    assert res["metrics"]["search"]["cost"]["after"]["total"] < res["metrics"]["search"]["cost"]["before"]["total"]
    assert len(priced) > 100 and all(priced)


def _priced_guests(monkeypatch, grow_start, grow_until):
    """Names of the guests whose moves and swaps late acceptance priced, on 20 guests of cpu 1-20 on four hosts
    over a soft ceiling, with no candidate from costly hosts, no chain, no room made, no home move, no descent, no
    kick."""
    priced = set()

    class Recording(CostModel):
        def shift_delta(self, i, b):
            priced.add(i)
            return CostModel.shift_delta(self, i, b)

        def swap_delta(self, i, j):
            priced.update((i, j))
            return CostModel.swap_delta(self, i, j)

    monkeypatch.setattr(costsearch, "CostModel", Recording)
    for name, value in (("FOCUS_SHARE", 0.0), ("ROOM_SHARE", 0.0), ("CHAIN_SHARE", 0.0), ("HOME_SHARE", 0.0),
                        ("GROW_START", grow_start), ("GROW_UNTIL", grow_until)):
        monkeypatch.setattr(costsearch, name, value)
    monkeypatch.setattr(costsearch, "_descend", lambda *args: (0, 0, 0, 0))
    monkeypatch.setattr(costsearch, "_kick_and_descend", lambda *args: (0, 0, 0, 0))
    monkeypatch.setattr(costsearch, "_home_if_free", lambda pk, model: 0)
    names = ["h%d" % h for h in range(4)]
    vms = [vm("g%02d" % c, names[c % 4], cpu=100 * c, mem=1, move_cost=0) for c in range(1, 21)]
    d = doc([host(h, cpu=10000, mem=100) for h in names], vms, [soft_ceiling(names, pct=5)], objective="cost",
            budget_s=0.2, seed=3)
    res = plan(d)
    vm_ids = parse_document(d).state.vm_ids
    assert res["metrics"]["search"]["cost"]["candidates"] > 1000
    return {vm_ids[i] for i in priced}


def test_candidates_start_from_the_biggest_guests_then_from_all(monkeypatch):
    # Growing range: 10 % of 20 guests at the start, grown to all only far beyond the search's end: every move
    # and swap priced is one of the two biggest guests'.
    assert _priced_guests(monkeypatch, 0.1, 1e9) == {"g20", "g19"}
    # Grown to all by half the time: the small guests are priced too.
    assert len(_priced_guests(monkeypatch, 0.1, 0.5)) == 20


def test_stages_schedule_from_where_the_previous_stage_ends():
    # Stage 1 moves a from h1 to h2; stage 2 starts there and moves it on to h3: two migrations of one guest,
    # each from where it then is, run one after the other.
    d = doc([host("h1"), host("h2"), host("h3")], [vm("a", "h1"), vm("b", "h1")])
    prob = parse_document(d)
    pk = Packing(prob.state, prob.cons, [True] * 3)
    opts = dict(prob.options)
    pk.move(0, 1)
    first = schedule(pk, list(pk.asg), opts)
    pk.move(0, 2)
    second = schedule(pk, list(pk.asg), opts, start=[1, 0])
    both = concatenate([first, second])
    moves = [m for wave in both.waves for _i, ms in wave for m in ms]
    assert moves == [(0, 0, 1), (0, 1, 2)]
    assert both.makespan_s == pytest.approx(first.makespan_s + second.makespan_s)


def test_a_target_the_plan_cannot_reach_is_reported(monkeypatch):
    # The search's target (a to h2) is made unreachable by a scheduler that refuses its first order: the plan
    # falls back (here to the repair: nothing to move) and says which better placement it could not reach.
    vms = [vm("a", "h1", cpu=3000, move_cost=200), vm("b", "h1", cpu=3000, move_cost=200)]
    d = doc([host("h1"), host("h2")], vms, [soft_ceiling(["h1", "h2"])], objective="cost", budget_s=0.5)
    real = ordering.schedule
    calls = []

    def refuse_first(*args, **kwargs):
        calls.append(1)
        if len(calls) == 1:
            raise ScheduleError("refused for the test", items=[0, 1])
        return real(*args, **kwargs)
    monkeypatch.setattr(ordering, "schedule", refuse_first)
    res = plan(d)
    target = res["unreached_target"]
    assert sorted(target["assignment"].values()) == ["h1", "h2"]
    assert target["weighted_cost"] == pytest.approx(200)          # the move's cost, no overload left
    assert res["assignment"] != target["assignment"]
    # Without the fault the plan reaches it and reports nothing unreached.
    monkeypatch.setattr(ordering, "schedule", real)
    res = plan(d)
    assert "unreached_target" not in res and res["metrics"]["migrations"] == 1


def test_the_first_order_of_a_cost_target_gets_part_of_the_time_left(monkeypatch):
    """The first attempt to order the search's target is cut at FIRST_TRY_SHARE of the time left (at least
    MIN_TRY_S), so a target that cannot be ordered leaves the fallbacks their time."""
    vms = [vm("a", "h1", cpu=3000, move_cost=200), vm("b", "h1", cpu=3000, move_cost=200)]
    d = doc([host("h1"), host("h2")], vms, [soft_ceiling(["h1", "h2"])], objective="cost", budget_s=2.0)
    real = ordering.schedule
    calls = []
    monkeypatch.setattr(ordering, "MIN_TRY_S", 0.0)

    def record(*args, **kwargs):
        calls.append((time.monotonic(), kwargs.get("deadline")))
        return real(*args, **kwargs)
    monkeypatch.setattr(ordering, "schedule", record)
    t0 = time.monotonic()
    res = plan(d)
    assert res["metrics"]["migrations"] == 1 and len(calls) == 1
    called, cut = calls[0]
    left = t0 + 2.0 - called
    assert cut is not None and left > 0
    assert cut - called == pytest.approx(ordering.FIRST_TRY_SHARE * left, abs=0.01)


def _room_case(big_move_cost=0):
    # h1 (soft ceiling 50 of 100 cpu) holds one big guest of 60: 10 over, and no host can take it as things are.
    # h2 (100 of 200) is full of five guests of 20; h3 (50 of 100) is empty. Making room: big to h2, then h2's
    # guests, biggest first, to the host it left and to h3, until nothing is over: cost 10 -> 0.
    hosts = [host("h1", cpu=100), host("h2", cpu=200), host("h3", cpu=100)]
    smalls = [vm("s%d" % k, "h2", cpu=20, mem=1, move_cost=0) for k in range(5)]
    vms = [vm("big", "h1", cpu=60, mem=1, move_cost=big_move_cost)] + smalls
    d = doc(hosts, vms, [soft_ceiling(["h1", "h2", "h3"])], objective="cost")
    prob = parse_document(d)
    pk = Packing(prob.state, prob.cons, [True] * 3)
    return d, pk, CostModel(pk, 0)


def test_making_room_moves_a_big_guest_where_only_room_made_for_it_lets_it_go():
    _d, pk, model = _room_case()
    assert model.total()["total"] == pytest.approx(10)
    big = pk.state.vm_ids.index("big")
    # No single move lowers the cost: the big guest is over everywhere, a small one adds load where it lands.
    assert all(model.shift_delta(big, h) >= 0 for h in (1, 2))
    before = list(pk.asg)
    done = costsearch._make_room(pk, model, big, 1, pk.items_by_host(), [0, 1, 2], random.Random(3).random, None, 0)
    assert done is not None
    journal, d, dm = done
    assert pk.asg[big] == 1 and not any(pk.over(h) for h in range(3))
    assert d == pytest.approx(-10) and model.total()["total"] == pytest.approx(0)
    assert dm == len(journal) == 4 == sum(1 for i, h in enumerate(pk.asg) if h != before[i])
    assert not pk.hard_violations()


def test_making_room_changes_nothing_when_it_does_not_pay():
    # The big guest's move costs 10, what it gains: no gain, undone, placement and counts as they were.
    _d, pk, model = _room_case(big_move_cost=10)
    big = pk.state.vm_ids.index("big")
    before, cost = list(pk.asg), model.total()
    assert costsearch._make_room(pk, model, big, 1, pk.items_by_host(), [0, 1, 2], random.Random(3).random,
                                 None, 0) is None
    assert pk.asg == before and model.total() == cost
    # Nor past a migration budget: four moves needed, three allowed.
    _d, pk, model = _room_case()
    before = list(pk.asg)
    assert costsearch._make_room(pk, model, big, 1, pk.items_by_host(), [0, 1, 2], random.Random(3).random,
                                 3, 0) is None
    assert pk.asg == before


def _improving_moves_left(pk, model, hosts):
    """Every single move and swap that lowers the cost and keeps the hard rules, found by brute force."""
    left = []
    for i, a in enumerate(pk.asg):
        left += [(i, b) for b in hosts if b != a and pk.can_place(i, b) and model.shift_delta(i, b) < -1e-6]
        for j, b in enumerate(pk.asg):
            if b == a or not pk.swap_fits(i, j):
                continue
            d = model.swap_delta(i, j)
            if d is not None and d < -1e-6 and costsearch._swap(pk, i, j, a, b):
                left.append((i, j))
                pk.move(i, a)
                pk.move(j, b)
    return left


# Random documents (of _random_doc) whose start is already a local optimum.
NO_GAIN_SEEDS = (6, 7, 8)


@pytest.mark.parametrize("seed", range(12))
def test_descent_ends_where_no_move_or_swap_lowers_the_cost(seed):
    rng, pk, model = _random_case(seed)
    hosts = list(range(pk.nh))
    before, moved = model.total()["total"], pk.migrations()
    assert _improving_moves_left(pk, model, hosts) or seed in NO_GAIN_SEEDS
    gain, dm, made, _sweeps = costsearch._descend(pk, model, list(range(len(pk.asg))), hosts, float("inf"),
                                                  rng.random, None, moved)
    after = CostModel(pk, 3).total()["total"]
    assert after == pytest.approx(before + gain) and gain <= 0
    assert (made == 0) == (seed in NO_GAIN_SEEDS)
    assert dm == pk.migrations() - moved
    assert not pk.hard_violations()
    assert _improving_moves_left(pk, model, hosts) == []


def _two_guests_on_h1(cpu_a, cpu_b):
    """(Packing, CostModel): guests a and b (cpu ``cpu_a``, ``cpu_b``) on h1, h2 empty, both hosts of cpu 100
    under a soft ceiling at 30 %."""
    hosts = [host("h1", cpu=100), host("h2", cpu=100)]
    vms = [vm("a", "h1", cpu=cpu_a, mem=1, move_cost=0), vm("b", "h1", cpu=cpu_b, mem=1, move_cost=0)]
    prob = parse_document(doc(hosts, vms, [soft_ceiling(["h1", "h2"], pct=30)], objective="cost"))
    pk = Packing(prob.state, prob.cons, [True] * 2)
    return pk, CostModel(pk, 0)


def test_descent_keeps_the_migration_budget():
    # Two guests over a soft ceiling on h1, room for both on h2; a budget of one migration moves one only.
    pk, model = _two_guests_on_h1(40, 40)
    gain, dm, made, _sweeps = costsearch._descend(pk, model, [0, 1], [0, 1], float("inf"), random.Random(0).random,
                                                  1, 0)
    assert (dm, made, pk.migrations()) == (1, 1, 1) and gain == pytest.approx(-30)


def test_the_newest_kept_placement_is_tried_in_one_go_before_stages(monkeypatch):
    # Kept on the way: P0 (a to h2), P1 (a and b to h2); the final target P2 (a, b and c to h2). A scheduler that
    # refuses P0 and P2 leaves stages from the oldest kept placement nothing; the newest one, in one go, is reached.
    d = doc([host("h1"), host("h2")], [vm("a", "h1"), vm("b", "h1"), vm("c", "h1")])
    prob = parse_document(d)
    pk = Packing(prob.state, prob.cons, [True] * 2)
    p0, p1, p2 = [1, 0, 0], [1, 1, 0], [1, 1, 1]
    pk.checkpoints = [(2.0, p0), (1.0, p1)]
    pk.reset(p2)
    real = ordering.schedule
    tried = []

    def refuse(pk_, target, *args, **kwargs):
        tried.append(list(target))
        if list(target) in (p0, p2):
            raise ScheduleError("refused for the test", items=[0])
        return real(pk_, target, *args, **kwargs)
    monkeypatch.setattr(ordering, "schedule", refuse)
    stats = {"cost": {}}
    opts = dict(prob.options, objective="cost", service_move_cost=0)
    sched = ordering._schedule_checkpoint(pk, Reasons(), opts, float("inf"), stats)
    assert sched is not None and list(pk.asg) == p1
    assert stats["cost"]["checkpoint"] == "2 of 3" and stats["cost"]["stages"] == 1
    assert tried[0] == p1 and p2 in tried      # the newest kept first, then on from it to the final one
    moves = sorted(m for wave in sched.waves for _i, ms in wave for m in ms)
    assert moves == [(0, 0, 1), (1, 0, 1)]


def _workers_doc(workers, seed=0):
    """Twenty guests of random sizes on six hosts under a soft ceiling: enough for searches to end apart."""
    rng = random.Random(11)
    hosts = [host("h%d" % h, cpu=1000, mem=1000) for h in range(6)]
    vms = [vm("v%d" % v, "h%d" % (v % 3), cpu=rng.randint(50, 250), mem=rng.randint(50, 250), move_cost=rng.randint(0, 9))
           for v in range(20)]
    return doc(hosts, vms, [soft_ceiling("*", 40, 3), soft_ceiling("*", 40, 2, "mem")], objective="cost",
               budget_s=0.4, seed=seed, search_workers=workers)


@pytest.mark.skipif(not costsearch.forks.can_fork(), reason="no os.fork on this platform")
def test_searches_side_by_side_keep_the_cheapest_answer_and_plan_to_it(monkeypatch):
    """With search_workers, the plan goes where the cheapest search ended, forked ones included: here the parent's
    own search is stopped at once, so a forked one must win, and the plan must reach its placement."""
    real = costsearch._search
    planner_pid = os.getpid()

    def search(pk, deadline, opts, rng, stats, post_per_move):
        if os.getpid() == planner_pid:
            # Worker 0, in the planner's own process: let it do nothing.
            deadline = time.monotonic()
        return real(pk, deadline, opts, rng, stats, post_per_move)

    monkeypatch.setattr(costsearch, "_search", search)
    d = _workers_doc(3)
    res = plan(d)
    cost = res["metrics"]["search"]["cost"]
    after = cost["workers"]["after"]
    assert len(after) == 3 and all(isinstance(x, float) for x in after)
    assert cost["workers"]["chosen"] in (1, 2) and after[cost["workers"]["chosen"]] == min(after) < after[0]
    assert cost["after"]["total"] == min(after)
    assert "unreached_target" not in res
    # The plan ends on the chosen worker's placement: its cost, recomputed from scratch, is the one reported.
    prob = parse_document(d)
    pk = Packing(prob.state, prob.cons, [True] * prob.state.n_hosts)
    index = {h: k for k, h in enumerate(prob.state.host_ids)}
    pk.reset([index[res["assignment"][v]] for v in prob.state.vm_ids])
    assert CostModel(pk, 0).total()["total"] == pytest.approx(min(after), abs=1e-3)


def test_one_worker_runs_no_side_search():
    res = plan(_workers_doc(1))
    assert "workers" not in res["metrics"]["search"]["cost"]


@pytest.mark.parametrize("seed", range(12))
def test_descent_around_hosts_leaves_no_move_touching_them_that_lowers_the_cost(seed):
    # Every host dirty at the start: the descent around hosts ends at a local optimum of moves and swaps, its
    # journal undoes it, and on_host follows the moves.
    rng, pk, model = _random_case(seed)
    hosts, movable = list(range(pk.nh)), list(range(len(pk.asg)))
    start, before, moved = list(pk.asg), model.total()["total"], pk.migrations()
    on_host = pk.items_by_host()
    journal = []
    gain, dm = costsearch._descend_around(pk, model, set(hosts), movable, hosts, on_host, float("inf"), None, moved,
                                          False, journal)
    assert CostModel(pk, 3).total()["total"] == pytest.approx(before + gain) and gain <= 0
    assert (gain < 0) == bool(journal) == (seed not in NO_GAIN_SEEDS)
    assert dm == pk.migrations() - moved
    assert not pk.hard_violations()
    assert [sorted(items) for items in on_host] == pk.items_by_host()
    assert _improving_moves_left(pk, model, hosts) == []
    costsearch._undo(pk, model, journal)
    assert pk.asg == start


def test_kicks_keep_only_what_lowers_the_cost():
    # From local optima, kicks (random moves, then a descent around the hosts they touched) are kept only when the
    # whole costs less: the cost never rises, the accounting matches a fresh model, and a kick kept somewhere.
    kept_somewhere = False
    for seed in range(12):
        rng, pk, model = _random_case(seed)
        hosts, movable = list(range(pk.nh)), list(range(len(pk.asg)))
        costsearch._descend(pk, model, movable, hosts, float("inf"), rng.random, None, pk.migrations())
        start, before = list(pk.asg), model.total()["total"]
        gain, dm, kicks, kept = costsearch._kick_and_descend(pk, model, movable, hosts, time.monotonic() + 0.1,
                                                             rng.random, None, pk.migrations(), False)
        assert kicks > 0 and gain <= 0
        assert CostModel(pk, 3).total()["total"] == pytest.approx(before + gain)
        assert not pk.hard_violations()
        assert (kept > 0 and gain < 0) or (kept == 0 and pk.asg == start)
        kept_somewhere = kept_somewhere or kept > 0
    assert kept_somewhere


def test_descent_around_a_host_moves_guests_onto_it():
    # Only h2 is dirty (say a kick just emptied it): a guest over the soft ceiling of clean h1 moves onto it.
    pk, model = _two_guests_on_h1(40, 10)
    journal = []
    gain, dm = costsearch._descend_around(pk, model, {1}, [0, 1], [0, 1], pk.items_by_host(), float("inf"), None, 0,
                                          False, journal)
    assert pk.asg == [1, 0] and (gain, dm) == (pytest.approx(-10), 1) and journal == [(0, 0)]


def test_kicks_stop_when_a_run_of_them_keeps_nothing(monkeypatch):
    # A deadline far away: kicks end long before it, once KICK_PATIENCE in a row kept nothing.
    monkeypatch.setattr(costsearch, "KICK_PATIENCE", 5)
    rng, pk, model = _random_case(NO_GAIN_SEEDS[0])
    hosts, movable = list(range(pk.nh)), list(range(len(pk.asg)))
    costsearch._descend(pk, model, movable, hosts, float("inf"), rng.random, None, pk.migrations())
    t0 = time.monotonic()
    _gain, _dm, kicks, kept = costsearch._kick_and_descend(pk, model, movable, hosts, t0 + 30, rng.random, None,
                                                           pk.migrations(), False)
    assert time.monotonic() - t0 < 5 and kicks >= kept + 5


def test_no_kicks_once_the_cost_is_zero():
    # Moving one guest off h1 costs nothing and ends the overload: nothing is left for kicks to gain.
    vms = [vm("a", "h1", cpu=3000, move_cost=0), vm("b", "h1", cpu=3000, move_cost=0)]
    d = doc([host("h1"), host("h2")], vms, [soft_ceiling(["h1", "h2"])], objective="cost", budget_s=0.5)
    cost = plan(d)["metrics"]["search"]["cost"]
    assert cost["after"]["total"] == 0 and cost["polish"]["kicks"] == 0


def test_evacuation_makes_room_for_the_guest_whose_host_sheds_most(monkeypatch):
    # Only the big guest's leaving lowers an overload (h1 is 10 over, h2 sits at its ceiling), so it is the one
    # tried, on the cheapest host first: h3 could take it as it is, for nothing gained (10 over there instead, price
    # 0); then room made on h2 (price 50 before room is made) gains the 10.
    _d, pk, model = _room_case()
    big = pk.state.vm_ids.index("big")
    tried, make_room = [], costsearch._make_room

    def recording(pk_, model_, i, b, *args):
        tried.append((i, b))
        return make_room(pk_, model_, i, b, *args)

    monkeypatch.setattr(costsearch, "_make_room", recording)
    start, on_host, journal = list(pk.asg), pk.items_by_host(), []
    gain, dm, kept = costsearch._evacuate(pk, model, list(range(len(pk.asg))), [0, 1, 2], float("inf"),
                                          random.Random(3).random, None, 0, on_host, journal)
    assert tried == [(big, 2), (big, 1)]
    assert pk.asg[big] == 1 and (gain, dm, kept) == (pytest.approx(-10), 4, 1)
    assert model.total()["total"] == pytest.approx(0) and not pk.hard_violations()
    assert all(i in on_host[h] for i, h in enumerate(pk.asg))
    costsearch._undo(pk, model, journal)
    assert pk.asg == start


def test_evacuation_keeps_nothing_that_does_not_pay():
    # The big guest's move costs the 10 it would gain: nothing kept, nothing changed.
    _d, pk, model = _room_case(big_move_cost=10)
    start, cost, journal = list(pk.asg), model.total(), []
    assert costsearch._evacuate(pk, model, list(range(len(pk.asg))), [0, 1, 2], float("inf"),
                                random.Random(3).random, None, 0, pk.items_by_host(), journal) == (0, 0, 0)
    assert pk.asg == start and model.total() == cost and journal == []


def _bounded_search(pk, candidates=10):
    """One search of ``pk`` whose work bound is ``candidates``, with 0.3 s for what comes around them (evacuation,
    homecoming, the closing descent, kicks): (stats, cost after)."""
    opts = {"budget_s": candidates / costsearch.ITERATIONS_PER_S, "migration_budget": None, "joint_swaps": False,
            "service_move_cost": 0, "seed": 0, "search_workers": 1}
    stats = {}
    _made, total = costsearch._search(pk, time.monotonic() + 0.3, opts, random.Random(0), stats, 0.0)
    return stats, total


def test_the_walk_counts_what_evacuation_gains(monkeypatch):
    # With no probe time the first evacuation comes before any candidate: it takes the room case to cost 0, and the
    # walk's own account agrees. A walk that missed the gain would go back, at its end, to the placement it thought
    # best; ten candidates, no descent move and no kick (none of them finds this rearrangement) do not hide it.
    monkeypatch.setattr(costsearch, "HISTORY_PROBE_S", 0.0)
    monkeypatch.setattr(costsearch, "_kick_and_descend", lambda *args: (0, 0, 0, 0))
    _d, pk, _model = _room_case()
    stats, total = _bounded_search(pk)
    assert stats["cost"]["evacuations"] == {"runs": 1, "kept": 1, "gain": pytest.approx(10)}
    assert total == pytest.approx(0) and pk.checkpoints[-1][0] == pytest.approx(0)
    assert not pk.hard_violations()


def test_a_plan_of_a_second_runs_no_evacuation():
    # The first evacuation waits for the history's probe: short plans (the replay's) search as before.
    res = plan(_workers_doc(1))
    assert res["metrics"]["search"]["cost"]["evacuations"]["runs"] == 0


def _homecoming_case(x_home="h3", x_move_cost=0, extra=()):
    # Three hosts of 100 cpu. g (60, move cost 10, home h1) is on h2; x (60, home ``x_home``) is on h1, where g no
    # longer fits, and may not go to h2 (hard ban). No single move lowers the cost (g cannot go home; x leaving h1
    # gains nothing by itself) and no swap is allowed: x must move on to h3 first, then g can go home.
    hosts = [host("h1", cpu=100), host("h2", cpu=100), host("h3", cpu=100)]
    vms = [vm("g", "h1", cpu=60, mem=1, move_cost=10), vm("x", x_home, cpu=60, mem=1, move_cost=x_move_cost)]
    ban = {"id": "x-not-h2", "type": "ban", "vms": ["x"], "hosts": ["h2"]}
    prob = parse_document(doc(hosts, vms, [ban] + list(extra), objective="cost"))
    pk = Packing(prob.state, prob.cons, [True] * 3)
    g, x = prob.state.vm_ids.index("g"), prob.state.vm_ids.index("x")
    pk.move(g, 1)
    pk.move(x, 0)
    return pk, CostModel(pk, 0), g, x


def test_homecoming_moves_a_guest_of_its_home_on_to_send_it_back():
    pk, model, g, x = _homecoming_case()
    hosts = [0, 1, 2]
    assert model.total()["total"] == pytest.approx(10) and not pk.fits(g, 0)
    assert _improving_moves_left(pk, model, hosts) == []
    start, on_host, journal = list(pk.asg), pk.items_by_host(), []
    gain, dm, sent = costsearch._homecoming(pk, model, [g, x], hosts, float("inf"), random.Random(0).random, None,
                                            pk.migrations(), on_host, journal)
    assert (pk.asg[g], pk.asg[x]) == (0, 2)
    assert (gain, dm, sent) == (pytest.approx(-10), -2, 1) and pk.migrations() == 0
    assert CostModel(pk, 0).total()["total"] == pytest.approx(0) and not pk.hard_violations()
    assert all(i in on_host[h] for i, h in enumerate(pk.asg))
    costsearch._undo(pk, model, journal)
    assert pk.asg == start


def test_homecoming_changes_nothing_when_it_does_not_pay():
    # x is at home on h1 and costs 10 to move: moving it on costs what sending g home gains.
    pk, model, g, x = _homecoming_case(x_home="h1", x_move_cost=10)
    start, cost, journal = list(pk.asg), model.total(), []
    assert costsearch._homecoming(pk, model, [g, x], [0, 1, 2], float("inf"), random.Random(0).random, None,
                                  pk.migrations(), pk.items_by_host(), journal) == (0, 0, 0)
    assert pk.asg == start and model.total() == cost and journal == []
    # Nor past a migration budget: x free to move from its home, but that is one migration more than allowed.
    pk, model, g, x = _homecoming_case(x_home="h1")
    start = list(pk.asg)
    assert costsearch._homecoming(pk, model, [g, x], [0, 1, 2], float("inf"), random.Random(0).random,
                                  pk.migrations() - 1, pk.migrations(), pk.items_by_host(), []) == (0, 0, 0)
    assert pk.asg == start


def test_homecoming_moves_on_the_guest_that_costs_least():
    # g's return puts h1 10 over a soft ceiling of 50; of h1's two guests of 10, y is at home (moving it costs 5)
    # and z is not (moving it costs nothing): z moves on.
    hosts = [host("h1", cpu=100), host("h2", cpu=100), host("h3", cpu=100)]
    vms = [vm("g", "h1", cpu=40, mem=1, move_cost=10), vm("y", "h1", cpu=10, mem=1, move_cost=5),
           vm("z", "h3", cpu=10, mem=1, move_cost=1)]
    prob = parse_document(doc(hosts, vms, [soft_ceiling(["h1", "h2", "h3"], weight=3)], objective="cost"))
    pk = Packing(prob.state, prob.cons, [True] * 3)
    g, y, z = (prob.state.vm_ids.index(v) for v in ("g", "y", "z"))
    pk.move(g, 1)
    pk.move(z, 0)
    model = CostModel(pk, 0)
    assert model.total()["total"] == pytest.approx(11)
    gain, _dm, sent = costsearch._homecoming(pk, model, [g], [0, 1, 2], float("inf"), random.Random(0).random, None,
                                             pk.migrations(), pk.items_by_host(), [])
    assert pk.asg[g] == 0 and pk.asg[y] == 0 and pk.asg[z] == 2
    assert (gain, sent) == (pytest.approx(-11), 1) and CostModel(pk, 0).total()["total"] == pytest.approx(0)


def _scattered_case(seed):
    """A random document (``_random_case``) whose guests random moves have scattered away from home: (rng, Packing,
    CostModel, hosts, movable)."""
    rng, pk, model = _random_case(seed)
    hosts, movable = list(range(pk.nh)), list(range(len(pk.asg)))
    for _move in range(2 * len(movable)):
        i, b = rng.choice(movable), rng.choice(hosts)
        a = pk.asg[i]
        if a != b and pk.can_place(i, b):
            pk.move(i, b)
            model.moved(i, a, b)
    return rng, pk, model, hosts, movable


@pytest.mark.parametrize("seed", range(12))
def test_homecoming_never_raises_the_cost_and_its_journal_undoes_it(seed):
    # Random documents, guests scattered by random moves first: whatever homecoming keeps lowers the cost, keeps
    # every hard rule and the migration count it reports, and its journal takes the placement back.
    rng, pk, model, hosts, movable = _scattered_case(seed)
    start, before, moved = list(pk.asg), model.total()["total"], pk.migrations()
    on_host, journal = pk.items_by_host(), []
    gain, dm, sent = costsearch._homecoming(pk, model, movable, hosts, float("inf"), rng.random, None, moved, on_host,
                                            journal)
    assert gain <= 0 and (gain < 0) == (sent > 0) == bool(journal)
    assert CostModel(pk, 3).total()["total"] == pytest.approx(before + gain)
    assert dm == pk.migrations() - moved and not pk.hard_violations()
    assert all(i in on_host[h] for i, h in enumerate(pk.asg))
    costsearch._undo(pk, model, journal)
    assert pk.asg == start


def test_homecoming_sends_someone_home_in_random_documents():
    sent_somewhere = 0
    for seed in range(12):
        rng, pk, model, hosts, movable = _scattered_case(seed)
        sent_somewhere += costsearch._homecoming(pk, model, movable, hosts, float("inf"), rng.random, None,
                                                 pk.migrations(), pk.items_by_host(), [])[2] > 0
    assert sent_somewhere >= 3


def test_the_walk_counts_what_homecoming_gains(monkeypatch):
    # With no probe time the first homecoming comes before any candidate and sends g home (cost 10 -> 0); the walk's
    # own account agrees, and no descent or kick could have found it (no single move or swap gains).
    monkeypatch.setattr(costsearch, "HISTORY_PROBE_S", 0.0)
    pk, _model, _g, _x = _homecoming_case()
    stats, total = _bounded_search(pk)
    assert stats["cost"]["homecoming"]["kept"] >= 1 and stats["cost"]["homecoming"]["gain"] == pytest.approx(10)
    assert total == pytest.approx(0) and pk.checkpoints[-1][0] == pytest.approx(0)
    assert not pk.hard_violations()


@pytest.mark.parametrize("weight,dominate", [(None, True), (1, True), (2, False)])
def test_homecoming_waits_in_the_walk_while_migrations_are_under_half_the_cost(weight, dominate):
    # g's migration costs 10; a soft ceiling at half of h2 puts g (60) 10 over it there, at ``weight`` a unit.
    extra = [] if weight is None else [soft_ceiling(["h2"], weight=weight)]
    pk, model, _g, _x = _homecoming_case(extra=extra)
    assert model.total()["total"] == pytest.approx(10 + 10 * (weight or 0))
    assert costsearch._migrations_dominate(model) is dominate


@pytest.mark.parametrize("case,in_walk", [("room", False), ("homecoming", True)])
def test_the_walk_runs_homecoming_only_while_migrations_dominate(monkeypatch, case, in_walk):
    # The room case's cost is all load, the homecoming case's all migrations: homecoming runs in the walk (with the
    # first evacuation, before any candidate) only in the second; after the closing descent in both.
    monkeypatch.setattr(costsearch, "HISTORY_PROBE_S", 0.0)
    calls, descent_started = [], []
    homecoming, descend = costsearch._homecoming, costsearch._descend

    def recording_homecoming(*args):
        calls.append(bool(descent_started))
        return homecoming(*args)

    def recording_descend(*args):
        descent_started.append(True)
        return descend(*args)

    monkeypatch.setattr(costsearch, "_homecoming", recording_homecoming)
    monkeypatch.setattr(costsearch, "_descend", recording_descend)
    pk = _room_case()[1] if case == "room" else _homecoming_case()[0]
    _bounded_search(pk)
    assert (False in calls) is in_walk


def test_no_kicks_once_the_closing_homecoming_took_the_cost_to_zero():
    # One candidate (late acceptance needs two moves) and no evacuation (the first waits for the probe) leave g away
    # from home; the descent finds no move that gains, homecoming after it sends g home (cost 10 -> 0), and with
    # nothing left to take off no kick is tried.
    pk, _model, _g, _x = _homecoming_case()
    stats, total = _bounded_search(pk, candidates=1)
    assert stats["cost"]["candidates"] == 1 and stats["cost"]["before"]["total"] == pytest.approx(10)
    assert stats["cost"]["homecoming"]["kept"] == 1 and stats["cost"]["homecoming"]["gain"] == pytest.approx(10)
    assert total == pytest.approx(0) and stats["cost"]["polish"]["kicks"] == 0


@pytest.mark.parametrize("nhosts,scan_every", [(100, 1024), (128, 1024), (129, 2048), (300, 3072)])
def test_the_walk_scans_for_costly_hosts_less_often_on_many_hosts(monkeypatch, nhosts, scan_every):
    # One guest of 80 on each host of 100 with a soft ceiling at 50: every host costs 30 wherever the guests go, so
    # the walk runs its 10,240 candidates. It lists the costly hosts once per CHECK_EVERY candidates up to
    # HOT_SCAN_HOSTS hosts, and proportionally less often beyond.
    scans = []
    costly_hosts = costsearch._costly_hosts
    monkeypatch.setattr(costsearch, "_costly_hosts", lambda *args: scans.append(1) or costly_hosts(*args))
    names = ["h%d" % n for n in range(nhosts)]
    prob = parse_document(doc([host(h, cpu=100) for h in names], [vm("g" + h, h, cpu=80, mem=1) for h in names],
                              [soft_ceiling(names)], objective="cost"))
    pk = Packing(prob.state, prob.cons, [True] * nhosts)
    stats, total = _bounded_search(pk, candidates=10 * costsearch.CHECK_EVERY)
    assert total == pytest.approx(30 * nhosts)
    candidates = stats["cost"]["candidates"]
    assert candidates > 2 * scan_every
    assert len(range(0, candidates, scan_every)) <= len(scans) <= len(range(0, candidates + 1, scan_every))


def _swap_partners_drawn(monkeypatch, transient):
    """Share of the swaps the walk prices whose partner's home is the first guest's host: 60 guests scattered away
    from home over 10 hosts with a soft ceiling every host is above (the walk runs its 20,480 candidates), disk
    transient or not. Swaps are recorded and refused, so the placement stays as it is."""
    names = ["h%d" % n for n in range(10)]
    hosts = [{"id": h, "cap": {"cpu": 1000, "disk": 1000}} for h in names]
    vms = [{"id": "g%d" % n, "dem": {"cpu": 100, "disk": 10}, "host": names[n % 10]} for n in range(60)]
    d = {"resources": ["cpu", "disk"], "hosts": hosts, "vms": vms,
         "expectations": [soft_ceiling(names, pct=10)], "options": {"objective": "cost"}}
    if transient:
        d["transient_resources"] = ["disk"]
    prob = parse_document(d)
    pk = Packing(prob.state, prob.cons, [True] * 10)
    for i in range(60):
        pk.move(i, (i * 7 + 3) % 10)
    drawn = []

    def swap_fits(i, j):
        drawn.append(pk.home[j] == pk.asg[i])
        return False

    monkeypatch.setattr(pk, "swap_fits", swap_fits)
    # Only the walk's draws: the closing descent tries every pair.
    monkeypatch.setattr(costsearch, "_descend", lambda *args: (0, 0, 0, 0))
    monkeypatch.setattr(costsearch, "_kick_and_descend", lambda *args: (0, 0, 0, 0))
    stats, _total = _bounded_search(pk, candidates=20 * costsearch.CHECK_EVERY)
    assert stats["cost"]["candidates"] == 20 * costsearch.CHECK_EVERY and len(drawn) > 1000
    return sum(drawn) / len(drawn)


def test_under_transient_resources_half_the_swaps_send_the_partner_home(monkeypatch):
    # By size alone a partner's home is the first guest's host about one time in ten (10 hosts); with transient
    # resources HOME_SWAP_SHARE of the partners are drawn that way on top.
    assert _swap_partners_drawn(monkeypatch, transient=False) < 0.2
    assert _swap_partners_drawn(monkeypatch, transient=True) > 0.45


def test_guests_by_home():
    pk, _model, g, x = _homecoming_case()
    assert costsearch._by_home(pk, [g, x]) == [[g], [], [x]]
    assert costsearch._by_home(pk, [x]) == [[], [], [x]]
