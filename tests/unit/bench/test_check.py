"""bench/check.py catches each FORMAT.md rule's violation and accepts a valid plan."""
from __future__ import annotations

import copy
import importlib.util
import json
import os

import pytest

_PATH = os.path.join(os.path.dirname(__file__), "..", "..", "..", "bench", "check.py")
_SPEC = importlib.util.spec_from_file_location("bench_check", _PATH)
bench_check = importlib.util.module_from_spec(_SPEC)
_SPEC.loader.exec_module(bench_check)


def _instance():
    """3 hosts of 10 cpu / 10 mem; h2 alone has avx; v2 needs avx; v1 banned from h1; v0, v3 apart."""
    cap = {"cpu": 10, "mem": 10}
    return {
        "name": "tiny",
        "resources": ["cpu", "mem"],
        "hosts": [{"id": "h0", "cap": dict(cap), "features": []},
                  {"id": "h1", "cap": dict(cap), "features": []},
                  {"id": "h2", "cap": dict(cap), "features": ["avx"]}],
        "vms": [{"id": "v0", "dem": {"cpu": 6, "mem": 2}, "mem_alloc_mib": 2048, "requires": [], "host": "h0"},
                {"id": "v1", "dem": {"cpu": 6, "mem": 2}, "mem_alloc_mib": 1024, "requires": [], "host": "h0"},
                {"id": "v2", "dem": {"cpu": 3, "mem": 3}, "mem_alloc_mib": 1024, "requires": ["avx"], "host": "h2"},
                {"id": "v3", "dem": {"cpu": 2, "mem": 2}, "mem_alloc_mib": 1024, "requires": [], "host": "h1"}],
        "anti_affinity": [["v0", "v3"]],
        "bans": [["v1", "h1"]],
    }


def _result(assignment, waves):
    return {"instance": "tiny", "budget_s": 1.0, "wall_s": 0.1, "assignment": assignment, "waves": waves}


def _mv(vm, src, dst):
    return {"vm": vm, "from": src, "to": dst}


# h0 starts overloaded (cpu 12 > 10): moving v1 to h2 repairs it.
VALID = _result({"v0": "h0", "v1": "h2", "v2": "h2", "v3": "h1"}, [[_mv("v1", "h0", "h2")]])


def _kinds(rep):
    return {(v["rule"], v["kind"]) for v in rep["violations"]}


def test_valid_plan_is_accepted():
    rep = bench_check.check(_instance(), VALID)
    assert rep["valid"], rep["violations"]
    assert rep["figures"] == {"hosts_used": 3, "host_lb": 2, "migrations": 1, "moves": 1, "gib_moved": 1.0,
                              "waves": 1}


def test_empty_plan_leaves_the_overload():
    rep = bench_check.check(_instance(), _result({"v0": "h0", "v1": "h0", "v2": "h2", "v3": "h1"}, []))
    assert (1, "capacity") in _kinds(rep)
    assert not rep["valid"]


def test_rule0_wrong_instance_name():
    res = copy.deepcopy(VALID)
    res["instance"] = "other"
    assert (0, "instance_name") in _kinds(bench_check.check(_instance(), res))


def test_rule1_unplaced_vm():
    res = copy.deepcopy(VALID)
    del res["assignment"]["v3"]
    assert (1, "unplaced") in _kinds(bench_check.check(_instance(), res))


def test_rule1_missing_feature_at_the_end():
    res = _result({"v0": "h0", "v1": "h2", "v2": "h1", "v3": "h1"},
                  [[_mv("v1", "h0", "h2"), _mv("v2", "h2", "h1")]])
    kinds = _kinds(bench_check.check(_instance(), res))
    assert (1, "features") in kinds
    assert (4, "features") in kinds


def test_rule1_ban_at_the_end():
    res = _result({"v0": "h0", "v1": "h1", "v2": "h2", "v3": "h1"}, [[_mv("v1", "h0", "h1")]])
    kinds = _kinds(bench_check.check(_instance(), res))
    assert (1, "ban") in kinds
    assert (4, "ban") in kinds


def test_rule1_anti_affinity_at_the_end():
    res = _result({"v0": "h0", "v1": "h2", "v2": "h2", "v3": "h0"},
                  [[_mv("v1", "h0", "h2")], [_mv("v3", "h1", "h0")]])
    kinds = _kinds(bench_check.check(_instance(), res))
    assert (1, "anti_affinity") in kinds
    assert (4, "anti_affinity") in kinds


def test_rule2_replay_must_give_the_assignment():
    res = copy.deepcopy(VALID)
    res["waves"] = []
    assert (2, "replay_mismatch") in _kinds(bench_check.check(_instance(), res))


def test_rule2_move_from_where_the_vm_is():
    res = copy.deepcopy(VALID)
    res["waves"] = [[_mv("v1", "h1", "h2")]]
    assert (2, "wrong_source") in _kinds(bench_check.check(_instance(), res))


def test_rule2_at_most_one_move_per_wave():
    res = _result({"v0": "h0", "v1": "h2", "v2": "h2", "v3": "h1"},
                  [[_mv("v3", "h1", "h2"), _mv("v3", "h2", "h1"), _mv("v1", "h0", "h2")]])
    inst = _instance()
    inst["limits"] = {"max_migrations_per_host": 5}
    assert (2, "twice_in_wave") in _kinds(bench_check.check(inst, res))


def test_rule3_in_wave_reservation():
    # v3 (5 cpu) leaves h1 while v0 (6 cpu) arrives: in one wave h1 holds 5 + 6 = 11 > 10.
    inst = _instance()
    inst["vms"][3]["dem"]["cpu"] = 5
    inst["anti_affinity"] = []
    ok = _result({"v0": "h1", "v1": "h0", "v2": "h2", "v3": "h2"},
                 [[_mv("v3", "h1", "h2")], [_mv("v0", "h0", "h1")]])
    assert bench_check.check(inst, ok)["valid"]
    bad = _result(ok["assignment"], [[_mv("v3", "h1", "h2"), _mv("v0", "h0", "h1")]])
    rep = bench_check.check(inst, bad)
    assert (3, "in_wave_capacity") in _kinds(rep)
    assert not any(v["rule"] == 1 for v in rep["violations"])


def test_rule4_banned_destination_during_the_plan():
    res = _result({"v0": "h0", "v1": "h2", "v2": "h2", "v3": "h1"},
                  [[_mv("v1", "h0", "h1")], [_mv("v1", "h1", "h2")]])
    rep = bench_check.check(_instance(), res)
    assert (4, "ban") in _kinds(rep)
    assert not any(v["rule"] == 1 for v in rep["violations"])


def test_rule4_featureless_destination_during_the_plan():
    res = _result({"v0": "h0", "v1": "h2", "v2": "h2", "v3": "h1"},
                  [[_mv("v1", "h0", "h2"), _mv("v2", "h2", "h1")], [_mv("v2", "h1", "h2")]])
    rep = bench_check.check(_instance(), res)
    assert (4, "features") in _kinds(rep)
    assert not any(v["rule"] == 1 for v in rep["violations"])


def test_rule4_anti_affinity_after_each_wave():
    res = _result({"v0": "h0", "v1": "h2", "v2": "h2", "v3": "h1"},
                  [[_mv("v1", "h0", "h2"), _mv("v3", "h1", "h0")], [_mv("v3", "h0", "h1")]])
    rep = bench_check.check(_instance(), res)
    assert (4, "anti_affinity") in _kinds(rep)
    assert not any(v["rule"] == 1 for v in rep["violations"])


def test_rule4_group_broken_at_the_start_of_a_wave_is_not_blamed_on_it():
    inst = _instance()
    inst["vms"][3]["host"] = "h0"       # v0 and v3 start together (h0: cpu 14 > 10)
    res = _result({"v0": "h0", "v1": "h2", "v2": "h2", "v3": "h1"},
                  [[_mv("v1", "h0", "h2")], [_mv("v3", "h0", "h1")]])
    assert bench_check.check(inst, res)["valid"]


def test_rule5_migrations_per_host_and_wave():
    res = _result({"v0": "h1", "v1": "h2", "v2": "h2", "v3": "h0"},
                  [[_mv("v1", "h0", "h2"), _mv("v0", "h0", "h1"), _mv("v3", "h1", "h0")]])
    inst = _instance()
    inst["anti_affinity"] = []
    inst["hosts"][0]["cap"]["cpu"] = 20  # so that only the limit is broken
    rep = bench_check.check(inst, res)
    assert _kinds(rep) == {(5, "host_limit")}
    inst["limits"] = {"max_migrations_per_host": 3}
    assert bench_check.check(inst, res)["valid"]


@pytest.mark.parametrize("result, code", [(VALID, 0), (_result({}, []), 1)])
def test_cli_exit_code(tmp_path, capsys, result, code):
    ip, rp = tmp_path / "i.json", tmp_path / "r.json"
    ip.write_text(json.dumps(_instance()))
    rp.write_text(json.dumps(result))
    assert bench_check.main([str(ip), str(rp)]) == code
    assert json.loads(capsys.readouterr().out)["valid"] == (code == 0)
