"""bench/roadef_model.py, roadef_cost.py and roadef.py: importer, exact cost, checker, solution I/O."""
from __future__ import annotations

import importlib.util
import itertools
import json
import os
import sys

import pytest

np = pytest.importorskip("numpy")

_BENCH = os.path.abspath(os.path.join(os.path.dirname(__file__), "..", "..", "..", "bench"))
_DATA = os.path.abspath(os.path.join(_BENCH, "..", "..", "shared", "data", "roadef2012", "A"))
A_INSTANCES = ("a1_1", "a1_2", "a1_3", "a1_4", "a1_5", "a2_1", "a2_2", "a2_3", "a2_4", "a2_5")


def _load(name):
    if _BENCH not in sys.path:
        sys.path.insert(0, _BENCH)
    spec = importlib.util.spec_from_file_location(name, os.path.join(_BENCH, name + ".py"))
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


rm = _load("roadef_model")
rc = _load("roadef_cost")
roadef_cli = _load("roadef")

# pylint: disable=wrong-import-position
from ansible_collections.autopilot.kvm.plugins.plugin_utils.planner.objective import CostModel  # noqa: E402
from ansible_collections.autopilot.kvm.plugins.plugin_utils.planner.packing import Packing  # noqa: E402
from ansible_collections.autopilot.kvm.plugins.plugin_utils.planner.parse import parse_document  # noqa: E402

# Tiny instance, by hand (challenge format):
#   r0 transient, load weight 10; r1 not transient, load weight 1
#   m0: neigh 0, loc 0, cap (10, 10), safety (8, 5), move costs to m0..m2 = 0 1 2
#   m1: neigh 0, loc 1, cap (10, 10), safety (8, 5), 1 0 3
#   m2: neigh 1, loc 1, cap (10, 10), safety (4, 5), 2 3 0
#   s0: spread 2, no deps; s1: spread 1, depends on s0; s2: spread 0
#   p0: s0 (5, 4) pmc 1; p1: s0 (3, 3) pmc 2; p2: s1 (2, 6) pmc 3; p3: s2 (4, 2) pmc 4
#   balance: r0 vs r1, target 1, weight 2; move weights: process 1, service 10, machine 100
TINY_MODEL = """2
1 10
0 1
3
0 0 10 10 8 5 0 1 2
0 1 10 10 8 5 1 0 3
1 1 10 10 4 5 2 3 0
3
2 0
1 1 0
0 0
4
0 5 4 1
0 3 3 2
1 2 6 3
2 4 2 4
1
0 1 1
2
1 10 100
"""
TINY_ASSIGNMENT = "0 1 0 2\n"


@pytest.fixture(name="tiny")
def tiny_fixture(tmp_path):
    model = tmp_path / "model_tiny.txt"
    model.write_text(TINY_MODEL)
    asg = tmp_path / "assignment_tiny.txt"
    asg.write_text(TINY_ASSIGNMENT)
    return rm.parse_model(str(model), str(asg)), tmp_path


def test_importer_reads_every_field(tiny):
    inst, _unused = tiny
    assert (inst.R, inst.M, inst.S, inst.P) == (2, 3, 3, 4)
    assert inst.transient.tolist() == [True, False]
    assert inst.wload.tolist() == [10, 1]
    assert inst.neigh.tolist() == [0, 0, 1] and inst.loc.tolist() == [0, 1, 1]
    assert inst.cap.tolist() == [[10, 10]] * 3
    assert inst.scap.tolist() == [[8, 5], [8, 5], [4, 5]]
    assert inst.mmc.tolist() == [[0, 1, 2], [1, 0, 3], [2, 3, 0]]
    assert inst.spread.tolist() == [2, 1, 0]
    assert [inst.deps(s).tolist() for s in range(3)] == [[], [0], []]
    assert inst.serv.tolist() == [0, 0, 1, 2]
    assert inst.req.tolist() == [[5, 4], [3, 3], [2, 6], [4, 2]]
    assert inst.pmc.tolist() == [1, 2, 3, 4]
    assert inst.bal.tolist() == [[0, 1, 1, 2]]
    assert (inst.w_pmc, inst.w_smc, inst.w_mmc) == (1, 10, 100)
    assert inst.a0.tolist() == [0, 1, 0, 2]


def test_importer_rejects_truncated_and_trailing(tmp_path):
    bad = tmp_path / "model_bad.txt"
    bad.write_text(TINY_MODEL.rsplit("\n", 2)[0])        # weights line cut off
    with pytest.raises(rm.RoadefError):
        rm.parse_model(str(bad))
    bad.write_text(TINY_MODEL + "7\n")
    with pytest.raises(rm.RoadefError):
        rm.parse_model(str(bad))
    bad.write_text(TINY_MODEL.replace("1 10 100", "1 10 x"))
    with pytest.raises(rm.RoadefError):
        rm.parse_model(str(bad))


def test_cost_by_hand(tiny):
    inst, _unused = tiny
    # Initial: usage m0 (7, 10), m1 (3, 3), m2 (4, 2).
    # load: r1 on m0 is 10 - 5 = 5 over safety, weight 1 -> 5; r0 never above safety (7<=8, 3<=8, 4<=4).
    # balance: A = cap - U: m0 (3, 0) -> max(0, 1*3 - 0) = 3; m1 (7, 7) -> 0; m2 (6, 8) -> 0; x weight 2 = 6.
    c = rc.cost(inst, inst.a0)
    assert c == {"total": 11, "load": 5, "balance": 6, "process_move": 0, "service_move": 0,
                 "machine_move": 0, "moved": 0}
    # Move p2 m0 -> m1: usage m0 (5, 4), m1 (5, 9), m2 (4, 2).
    # load: r1 on m1 9 - 5 = 4 -> 4; balance: m0 (5, 6) -> 0, m1 (5, 1) -> 4, m2 (6, 8) -> 0; x 2 = 8.
    # process move: pmc(p2) 3 x 1 = 3; service move: max moved per service 1 x 10 = 10;
    # machine move: mmc[m0][m1] = 1 x 100 = 100. Total 4 + 8 + 3 + 10 + 100 = 125.
    c = rc.cost(inst, np.array([0, 1, 1, 2]))
    assert c == {"total": 125, "load": 4, "balance": 8, "process_move": 3, "service_move": 10,
                 "machine_move": 100, "moved": 1}


@pytest.mark.parametrize("a, kinds", [
    ([0, 1, 1, 2], set()),                                   # valid move (cost test above)
    ([0, 1, 0, 0], {"capacity"}),                            # m0 gets (11, 12) > (10, 10)
    ([0, 1, 1, 0], {"transient_capacity"}),                  # m0 r0: 9 final + 2 of p2 that left = 11 > 10
    ([0, 0, 1, 2], {"conflict", "spread"}),                  # p0, p1 (s0) both on m0, so one location
    ([2, 1, 0, 2], {"spread"}),                              # s0 on m2 and m1: both location 1
    ([0, 1, 2, 2], {"dependency"}),                          # s1 in neighbourhood 1, s0 only in 0
    ([0, 1, 0, 3], {"range"}),
])
def test_checker_catches_each_class(tiny, a, kinds):
    inst, _unused = tiny
    got = {v["kind"] for v in rc.violations(inst, np.array(a))}
    assert got == kinds
    assert rc.is_valid(inst, np.array(a)) == (not kinds)


def test_initial_assignments_valid_and_costs_reproduced():
    """Every shipped A instance: initial assignment valid, cost == original_cost_*.txt exactly."""
    if not os.path.isdir(_DATA):
        pytest.skip("shared ROADEF data not present")
    for name in A_INSTANCES:
        inst = rm.parse_model(os.path.join(_DATA, "model_%s.txt" % name), os.path.join(_DATA, "assignment_%s.txt" % name))
        with open(os.path.join(_DATA, "original_cost_%s.txt" % name), encoding="ascii") as f:
            expected = int(f.read().split()[0])
        assert rc.cost(inst, inst.a0)["total"] == expected, name
        assert rc.violations(inst, inst.a0) == [], name


def test_solution_round_trip(tiny):
    inst, tmp = tiny
    sol = tmp / "solution_tiny.txt"
    a = np.array([2, 1, 0, 2])
    rm.write_solution(str(sol), a)
    assert sol.read_text().split() == ["2", "1", "0", "2"]
    assert rm.read_solution(str(sol), inst).tolist() == a.tolist()
    sol.write_text("0 1 2\n")
    with pytest.raises(rm.RoadefError):
        rm.read_solution(str(sol), inst)
    sol.write_text("0 1 2 3\n")
    with pytest.raises(rm.RoadefError):
        rm.read_solution(str(sol), inst)


def test_solution_round_trip_a_instance(tmp_path):
    if not os.path.isdir(_DATA):
        pytest.skip("shared ROADEF data not present")
    inst = rm.parse_model(os.path.join(_DATA, "model_a1_2.txt"), os.path.join(_DATA, "assignment_a1_2.txt"))
    out = tmp_path / "sol.txt"
    rm.write_solution(str(out), inst.a0)
    assert np.array_equal(rm.read_solution(str(out), inst), inst.a0)


def test_mapping_onto_planner_document(tiny):
    inst, _unused = tiny
    doc, notes = rm.to_document(inst, budget_s=1.0)
    assert doc["resources"] == ["cpu", "mem"]
    assert [h["id"] for h in doc["hosts"]] == ["m0", "m1", "m2"]
    assert doc["hosts"][2]["labels"] == {"location": "l1", "neighborhood": "n1"}
    assert doc["hosts"][0]["cap"] == {"cpu": 10, "mem": 10}
    assert [v["host"] for v in doc["vms"]] == ["m0", "m1", "m0", "m2"]
    assert doc["vms"][3]["dem"] == {"cpu": 4, "mem": 2}
    assert doc["vms"][3]["mem_alloc_mib"] == 1 + 4 * 1          # 1 + pmc x weight
    by_id = {e["id"]: e for e in doc["expectations"]}
    # soft ceilings at the safety capacity, weight = load weight, grouped by percentage
    ceil = sorted((e["resource"], e["max_pct"], e["weight"], tuple(e["hosts"])) for e in by_id.values()
                  if e["type"] == "ceiling")
    assert ceil == [("cpu", 40.0, 10, ("m2",)), ("cpu", 80.0, 10, ("m0", "m1")), ("mem", 50.0, 1, ("m0", "m1", "m2"))]
    assert all(not e["hard"] for e in by_id.values() if e["type"] == "ceiling")
    assert by_id["service-0"]["vms"] == ["p0", "p1"] and by_id["service-0"]["hard"]
    assert by_id["spread-0"] == {"id": "spread-0", "type": "spread", "vms": ["p0", "p1"], "label": "location",
                                 "min": 2, "hard": True}
    # s1 depends on s0: every neighbourhood holding p2 must hold a process of s0 (exact rule, no fence).
    assert by_id["dependency-1-0"] == {"id": "dependency-1-0", "type": "depends", "vms": ["p2"], "on": ["p0", "p1"],
                                       "label": "neighborhood", "hard": True}
    assert not [e for e in by_id.values() if e["type"] == "fence"]
    assert by_id["balance-0"] == {"id": "balance-0", "type": "free_ratio", "resource": "mem", "per": "cpu",
                                  "ratio": 1, "weight": 2, "hard": False}
    assert doc["transient_resources"] == ["cpu"] and notes["transient_resources"] == [0]
    assert doc["vms"][3]["move_cost"] == 4 and doc["vms"][3]["service"] == "s2"
    assert doc["hosts"][0]["move_cost_to"] == {"m1": 100, "m2": 200}
    assert doc["options"]["objective"] == "cost" and doc["options"]["service_move_cost"] == 10
    assert "x_roadef" in doc


def test_pick_resources_limits_to_four():
    inst = rm.Instance()
    inst.R, inst.M = 6, 2
    inst.transient = np.array([False, False, False, False, True, False])
    inst.cap = np.array([[10] * 6, [10] * 6])
    inst.req = np.array([[1, 9, 2, 8, 1, 5]])
    inst.a0 = np.array([0])
    # transient r4 first, then by peak utilisation: r1 (0.9), r3 (0.8), r5 (0.5)
    assert rm.pick_resources(inst) == [1, 3, 4, 5]


def test_cli_end_to_end_never_invalid(tiny, capsys):
    _inst, tmp = tiny
    roadef = _load("roadef")
    out = tmp / "sol.txt"
    rc_code = roadef.main([str(tmp / "model_tiny.txt"), str(tmp / "assignment_tiny.txt"), "--budget", "0.5",
                           "--out", str(out)])
    res = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert rc_code == 0 and res["valid"] is True
    inst2 = rm.parse_model(str(tmp / "model_tiny.txt"), str(tmp / "assignment_tiny.txt"))
    sol = rm.read_solution(str(out), inst2)
    assert rc.is_valid(inst2, sol)
    assert res["cost"] == rc.cost(inst2, sol)["total"]
    assert res["initial_cost"] == 11


def test_read_ints_across_block_boundaries(tmp_path):
    path = tmp_path / "ints.txt"
    path.write_text(" 12  345\n\n6789\t0 -5\r\n77 ")
    for chunk in (1, 2, 3, 5, 7, 1 << 20):
        assert rm.read_ints(str(path), chunk=chunk).tolist() == [12, 345, 6789, 0, -5, 77]
    path.write_text("  \n ")
    assert rm.read_ints(str(path)).tolist() == []
    path.write_text("1 2 3x 4")
    with pytest.raises(rm.RoadefError):
        rm.read_ints(str(path), chunk=4)


def test_synthetic_instance_is_valid(tmp_path):
    model, asg = rm.write_synthetic(str(tmp_path), processes=600, machines=60, resources=6, services=59)
    inst = rm.parse_model(model, asg)
    assert (inst.P, inst.M, inst.R, inst.S) == (600, 60, 6, 59)
    assert rc.violations(inst, inst.a0) == []
    assert rc.cost(inst, inst.a0)["total"] > 0
    assert rc.cost(inst, inst.a0)["machine_move"] == 0    # nothing moved yet


def test_synthetic_hot_machines_start_above_their_safety_capacities(tmp_path):
    """hot_share: that share of the machines starts about HOT_FILL full (above safety, 3/4), the rest COLD_FILL;
    still valid, and with a load cost to take off (none without it)."""
    model, asg = rm.write_synthetic(str(tmp_path), processes=600, machines=60, resources=6, services=59,
                                    hot_share=0.3)
    inst = rm.parse_model(model, asg)
    assert rc.violations(inst, inst.a0) == []
    fill = rc.usage(inst, inst.a0) / inst.cap
    hot = (fill > 0.75).all(axis=1)
    assert 5 <= hot.sum() <= 35
    assert np.allclose(fill[hot], rm.HOT_FILL, atol=0.01)
    assert np.allclose(fill[~hot], rm.COLD_FILL, atol=0.01)
    assert rc.cost(inst, inst.a0)["load"] > 0
    plain = rm.parse_model(*rm.write_synthetic(str(tmp_path), processes=600, machines=60, resources=6, services=59))
    assert rc.cost(plain, plain.a0)["load"] == 0


def test_more_than_four_resources_are_all_mapped():
    """R > 4: every resource becomes a declared planner resource r<index> (none left unmapped)."""
    inst = rm.Instance()
    inst.R, inst.M, inst.P = 6, 2, 1
    inst.transient = np.array([False] * 6)
    inst.cap = np.array([[10] * 6, [10] * 6])
    inst.scap = np.array([[10] * 6, [10] * 6])
    inst.req = np.array([[1, 9, 2, 8, 1, 5]])
    inst.a0 = np.array([0])
    inst.loc = np.array([0, 0])
    inst.neigh = np.array([0, 0])
    inst.serv = np.array([0])
    inst.S = 1
    inst.pmc = np.array([0])
    inst.w_pmc = 1
    inst.wload = np.array([1] * 6)
    inst.spread = np.array([0])
    inst.dep_ptr = np.array([0, 0])
    inst.dep_idx = np.zeros(0, dtype=np.int64)
    inst.bal = np.zeros((0, 4), dtype=np.int64)
    doc, notes = rm.to_document(inst, budget_s=1.0)
    assert doc["resources"] == ["r0", "r1", "r2", "r3", "r4", "r5"]
    assert doc["vms"][0]["dem"] == {"r0": 1, "r1": 9, "r2": 2, "r3": 8, "r4": 1, "r5": 5}
    assert notes["resources_unmapped"] == []


def test_planner_cost_model_is_the_challenge_objective(tiny):
    """The planner's own weighted cost of the mapped document equals the challenge's exact cost, for the
    initial assignment and for every other assignment of the tiny instance."""
    inst, _unused = tiny
    doc, _notes = rm.to_document(inst, budget_s=1.0)
    doc.pop("x_roadef")
    prob = parse_document(doc)
    for a in itertools.product(range(inst.M), repeat=inst.P):
        pk = Packing(prob.state, prob.cons, [True] * inst.M)
        for p, m in enumerate(a):
            pk.move(p, m)
        assert CostModel(pk, doc["options"]["service_move_cost"]).total()["total"] == pytest.approx(
            rc.cost(inst, np.array(a))["total"]), a
        # and the planner's hard rules are the challenge's hard constraints
        assert (not pk.hard_violations()) == (not rc.violations(inst, np.array(a))), a


@pytest.mark.parametrize("name", ["a1_1", "a1_2", "a2_1", "a2_4"])
def test_planner_cost_model_reproduces_initial_costs(name):
    if not os.path.isdir(_DATA):
        pytest.skip("shared ROADEF data not present")
    inst = rm.parse_model(os.path.join(_DATA, "model_%s.txt" % name), os.path.join(_DATA, "assignment_%s.txt" % name))
    doc, _notes = rm.to_document(inst, budget_s=1.0)
    doc.pop("x_roadef")
    prob = parse_document(doc)
    pk = Packing(prob.state, prob.cons, [True] * inst.M)
    assert CostModel(pk, inst.w_smc).total()["total"] == pytest.approx(rc.cost(inst, inst.a0)["total"], rel=1e-12)
    assert not pk.hard_violations()


def test_planner_answer_is_scored_as_predicted(tiny, tmp_path):
    """bench/roadef.py end to end on the tiny instance: the written solution is valid and its exact cost is the
    cost the planner predicted."""
    inst, path = tiny
    res, sol = roadef_cli.solve(str(path / "model_tiny.txt"), str(path / "assignment_tiny.txt"), 1.0)
    assert res["valid"] and res["fallback"] is None
    assert res["cost"] <= res["initial_cost"]
    assert res["cost"] == pytest.approx(res["planner"]["search"]["cost"]["after"]["total"])
    assert not rc.violations(inst, sol)
