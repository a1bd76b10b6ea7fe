"""Emphasis phases of the cost search (planner/emphasis.py) and the weights they change (CostModel.emphasise)."""

from __future__ import annotations

import random
import time

import pytest

from ansible_collections.autopilot.kvm.plugins.plugin_utils.planner import costsearch, emphasis
from ansible_collections.autopilot.kvm.plugins.plugin_utils.planner.objective import CostModel
from ansible_collections.autopilot.kvm.plugins.plugin_utils.planner.packing import Packing
from ansible_collections.autopilot.kvm.plugins.plugin_utils.planner.parse import parse_document

from .planner_helpers import doc, host, vm
from .test_planner_cost import _random_case, _workers_doc, plan, soft_ceiling


def _emphasised(pk, r, factor):
    model = CostModel(pk, 3)
    model.emphasise(r, factor)
    return model


@pytest.mark.parametrize("seed,second_ceiling", [(s, False) for s in range(12)] + [(s, True) for s in range(6)])
def test_emphasised_prices_match_the_cost_recomputed_under_the_same_weights(seed, second_ceiling):
    rng, pk, model = _random_case(seed, second_ceiling)
    cpu = pk.state.res.index("cpu")
    model.emphasise(cpu, 10)
    # CPU overload (every ceiling on it) now weighs ten times more, and only it.
    assert model.total()["load"] == pytest.approx(CostModel(pk, 3).total()["load"] + 9 * _load_of(pk, cpu))
    for _step in range(40):
        i = rng.randrange(len(pk.asg))
        a, b = pk.asg[i], rng.randrange(pk.nh)
        if b == a:
            continue
        d = model.shift_delta(i, b)
        before = model.total()["total"]
        pk.move(i, b)
        model.moved(i, a, b)
        assert before + d == pytest.approx(_emphasised(pk, cpu, 10).total()["total"])
    model.emphasise(cpu, 1)
    assert model.total() == CostModel(pk, 3).total()


def _load_of(pk, r):
    """Resource ``r``'s part of the load term: the cost recomputed with every other resource weighted 0."""
    model = CostModel(pk, 3)
    for other in range(pk.nr):
        if other != r:
            model.emphasise(other, 0)
    return model.total()["load"]


def test_load_above_bound_ranks_resources_by_what_no_placement_could_remove():
    # Two hosts of 100 CPU and 100 MiB under ceilings of 30 (weight 2) and 50 (weight 1); all 80 CPU and 40 MiB on h1.
    # CPU: load 2 x 50 = 100, and no placement leaves less than 2 x (80 - 60) = 40 over: 60 above the bound.
    # Memory: load 0 (40 under 50). Disk has no ceiling and is not listed.
    hosts = [host("h1", cpu=100, mem=100), host("h2", cpu=100, mem=100)]
    vms = [vm("a", "h1", cpu=40, mem=20), vm("b", "h1", cpu=40, mem=20)]
    d = doc(hosts, vms, [soft_ceiling("*", 30, 2), soft_ceiling("*", 50, 1, "mem")], objective="cost")
    prob = parse_document(d)
    pk = Packing(prob.state, prob.cons, [True, True])
    model = CostModel(pk, 0)
    cpu, mem = prob.state.res.index("cpu"), prob.state.res.index("mem")
    assert model.load_above_bound() == [(pytest.approx(60), cpu), (0, mem)]
    # A ceiling on one host only: the other host can take any excess, so the bound is 0.
    d["expectations"][0]["hosts"] = ["h1"]
    pk = Packing(parse_document(d).state, parse_document(d).cons, [True, True])
    assert CostModel(pk, 0).load_above_bound()[0] == (pytest.approx(100), cpu)


def _two_host_case(vms=None):
    """Two hosts of 100 CPU under a 50 % soft ceiling, ``vms`` (by default two guests of 40 CPU) on h1."""
    hosts = [host("h1", cpu=100, mem=100), host("h2", cpu=100, mem=100)]
    vms = vms or [vm("a", "h1", cpu=40, mem=10, move_cost=0), vm("b", "h1", cpu=40, mem=10, move_cost=0)]
    d = doc(hosts, vms, [soft_ceiling("*", 50, 1)], objective="cost")
    prob = parse_document(d)
    pk = Packing(prob.state, prob.cons, [True, True])
    return pk, CostModel(pk, 0)


def test_each_round_starts_from_the_true_best_and_the_search_ends_on_it():
    pk, model = _two_host_case()
    emph = emphasis.Emphasis(100.0)
    assert emph.enabled and emph.round_s == pytest.approx(8.0)
    start, cost = list(pk.asg), model.total()["total"]      # both on h1: 30 over
    assert emph.keep_or_restore(pk, model) is False and emph.best == pytest.approx(cost)
    assert emph.next_resource(model) == pk.state.res.index("cpu")
    # The round ends on a placement no better under the true weights (both guests on h2, 30 over there instead):
    # equal is not better, so the search goes back to the placement kept aside.
    for i in (0, 1):
        pk.move(i, 1)
        model.moved(i, 0, 1)
    assert model.total()["total"] == pytest.approx(cost)
    assert emph.keep_or_restore(pk, model) is True
    assert pk.asg == start and model.total() == CostModel(pk, 0).total()
    assert emph.stats() == {"rounds": 1, "resources": [0], "improved": 0, "gain": 0}


def test_a_better_placement_found_in_a_round_is_kept():
    pk, model = _two_host_case()
    emph = emphasis.Emphasis(100.0)
    emph.keep_or_restore(pk, model)
    pk.move(0, 1)
    model.moved(0, 0, 1)
    moved = list(pk.asg)
    assert emph.keep_or_restore(pk, model) is False
    assert pk.asg == moved and emph.best == pytest.approx(0)
    assert emph.stats()["improved"] == 1 and emph.stats()["gain"] == pytest.approx(30)
    # Nothing above its bound any more: no resource to emphasise.
    assert emph.next_resource(model) is None


def test_no_rounds_without_time_or_without_soft_ceilings():
    assert not emphasis.Emphasis(emphasis.EMPHASIS_MIN_S - 1).enabled
    hosts = [host("h1", cpu=100, mem=100), host("h2", cpu=100, mem=100)]
    d = doc(hosts, [vm("a", "h1", cpu=40, mem=10)], [], objective="cost")
    prob = parse_document(d)
    pk = Packing(prob.state, prob.cons, [True, True])
    assert emphasis.Emphasis(100.0).next_resource(CostModel(pk, 0)) is None


def _emphasise_cpu_and_mem_in_turn(monkeypatch):
    # The small case's first walk may already reach the bound; the rounds are what these tests are about.
    monkeypatch.setattr(emphasis, "EMPHASIS_MIN_GAP", 0.0)

    def next_resource(self, model):
        r = self.turn % 2
        self.turn += 1
        self.resources.append(r)
        return r

    monkeypatch.setattr(emphasis.Emphasis, "next_resource", next_resource)


def _record_walks(monkeypatch):
    """(resource emphasised or None, true cost after) of every walk the search makes, in order."""
    walks, walk = [], costsearch._walk

    def recording(pk, deadline, opts, rng, stats, post_per_move, emphasised=None, cap=None, handover=None):
        out = walk(pk, deadline, opts, rng, stats, post_per_move, emphasised, cap, handover)
        walks.append((emphasised, CostModel(pk, opts["service_move_cost"]).total()["total"]))
        return out

    monkeypatch.setattr(costsearch, "_walk", recording)
    return walks


def _short_search(monkeypatch, **options):
    """(Packing, options) of ``_workers_doc`` for a search of a second whose rounds start at a tenth of it and
    last a twentieth each."""
    monkeypatch.setattr(emphasis, "EMPHASIS_MIN_S", 0.0)
    monkeypatch.setattr(emphasis, "EMPHASIS_ROUND", 0.05)
    monkeypatch.setattr(costsearch, "EMPHASIS_START", 0.1)
    prob = parse_document(_workers_doc(1))
    pk = Packing(prob.state, prob.cons, [True] * prob.state.n_hosts)
    return pk, dict(prob.options, budget_s=1.0, **options)


def test_the_search_reports_and_keeps_only_true_costs(monkeypatch):
    # Whatever the emphasised walks did, the search returns a placement priced under the true weights, no worse than
    # where its first walk ended, and every placement kept for the scheduler carries its true cost.
    pk, opts = _short_search(monkeypatch)
    walks = _record_walks(monkeypatch)
    _emphasise_cpu_and_mem_in_turn(monkeypatch)
    stats = {}
    _made, total = costsearch._search(pk, time.monotonic() + 1.0, opts, random.Random(0), stats, 0.0)
    rounds = stats["cost"]["emphasis"]["rounds"]
    assert rounds >= 5 and len(walks) == 1 + 2 * rounds
    assert [e is None for e, _c in walks] == [True] + [False, True] * rounds
    assert total == pytest.approx(CostModel(pk, opts["service_move_cost"]).total()["total"])
    assert total == pytest.approx(min(c for e, c in walks if e is None))
    assert stats["cost"]["after"]["total"] == pytest.approx(total)
    # Stages of the plan go from better to better: none from a round that did not beat the best so far.
    costs = [cost for cost, _asg in pk.checkpoints]
    assert costs == sorted(costs, reverse=True)
    for cost, asg in pk.checkpoints:
        pk.reset(asg)
        assert cost == pytest.approx(CostModel(pk, opts["service_move_cost"]).total()["total"])
    assert not pk.hard_violations()


def test_an_emphasised_walk_prices_under_the_emphasised_weights():
    prob = parse_document(_workers_doc(1))
    pk = Packing(prob.state, prob.cons, [True] * prob.state.n_hosts)
    cpu = pk.state.res.index("cpu")
    expected = _emphasised(pk, cpu, 10).total()["total"]
    assert expected > CostModel(pk, 3).total()["total"]
    stats = {}
    costsearch._walk(pk, time.monotonic() + 0.05, dict(prob.options, budget_s=1.0), random.Random(0), stats, 0.0,
                     emphasised=cpu)
    assert stats["cost"]["before"]["total"] == pytest.approx(expected)


def test_a_round_adds_only_the_stages_below_the_best_before_it():
    kept = [(50.0, [0]), (40.0, [1])]
    costsearch._keep_below(kept, [(60.0, [2]), (40.0, [3]), (35.0, [4]), (30.0, [5])], 40.0)
    assert kept == [(50.0, [0]), (40.0, [1]), (35.0, [4]), (30.0, [5])]


def test_a_plan_of_a_second_has_no_rounds():
    res = plan(_workers_doc(1))
    assert res["metrics"]["search"]["cost"]["emphasis"] == {"rounds": 0}


def test_rounds_keep_the_migration_budget(monkeypatch):
    # Every walk of the search shares one budget, counted from where the first starts: a walk that counted from
    # where it starts would let each round spend the budget again.
    pk, opts = _short_search(monkeypatch, migration_budget=2)
    _emphasise_cpu_and_mem_in_turn(monkeypatch)
    stats = {}
    costsearch._search(pk, time.monotonic() + 1.0, opts, random.Random(0), stats, 0.0)
    assert stats["cost"]["emphasis"]["rounds"] >= 5
    assert 0 < pk.migrations() <= 2


def test_rounds_only_when_enough_of_the_cost_is_load_above_its_bounds(monkeypatch):
    pk, model = _two_host_case()
    emph = emphasis.Emphasis(100.0)
    # Both guests on h1: 30 over, all of it above the bound (0: the 80 CPU fit under the two ceilings of 50).
    assert emph.wanted(model)
    pk.move(0, 1)
    model.moved(0, 0, 1)
    assert model.total()["total"] == 0 and not emph.wanted(model)
    # 10 over on h1 (a bound of 0) after a move that cost 70: 10 of 80 is above the bounds, 0.125. Near its bounds,
    # yet a resource may still be left unused on one host while over on another: rounds run.
    assert emph.wanted(_moved_with_cost(70))
    # ... and after a move that cost 99,990: 10 of 100,000, 0.0001, is at the bounds: no rounds.
    model = _moved_with_cost(99990)
    assert model.total()["total"] == pytest.approx(100000)
    assert not emph.wanted(model)
    monkeypatch.setattr(emphasis, "EMPHASIS_MIN_GAP", 0.00005)
    assert emph.wanted(model)


def _moved_with_cost(move_cost):
    """Guest a (60 CPU) on h1 under a 50 % ceiling, guest c moved to h2 at ``move_cost``: the model after the move."""
    pk, model = _two_host_case([vm("a", "h1", cpu=60, mem=10, move_cost=0),
                                vm("c", "h1", cpu=1, mem=1, move_cost=move_cost)])
    pk.move(1, 1)
    model.moved(1, 0, 1)
    return model


def test_a_first_walk_with_little_above_the_bounds_runs_to_the_deadline(monkeypatch):
    pk, opts = _short_search(monkeypatch)
    monkeypatch.setattr(emphasis, "EMPHASIS_MIN_GAP", 2.0)
    walks = _record_walks(monkeypatch)
    stats, t0 = {}, time.monotonic()
    costsearch._search(pk, t0 + 0.6, opts, random.Random(0), stats, 0.0)
    assert [e for e, _c in walks] == [None] and stats["cost"]["emphasis"] == {"rounds": 0}
    # It ran past the point where it would have handed over (a tenth of the time) to its own end.
    assert time.monotonic() - t0 > 0.3


def test_the_first_walk_descends_until_the_handover_whatever_the_scheduler_keeps_back(monkeypatch):
    # The time kept back for scheduling the migrations (here 100 ms each) is kept by the rounds, which end the search;
    # the first walk's closing descent runs to the handover (its share is half the 100 ms before it). Kept back there
    # too, it would have no time and make no sweep. (How long it runs is not asserted: it stops early at a local
    # optimum.)
    monkeypatch.setattr(costsearch, "POLISH_SHARE", 0.5)
    pk, opts = _short_search(monkeypatch)
    _emphasise_cpu_and_mem_in_turn(monkeypatch)
    stats = {}
    costsearch._search(pk, time.monotonic() + 1.0, opts, random.Random(0), stats, 0.1)
    assert "emphasis" in stats["cost"]      # the handover was taken
    assert pk.migrations() >= 2
    assert stats["cost"]["polish"]["sweeps"] >= 1
