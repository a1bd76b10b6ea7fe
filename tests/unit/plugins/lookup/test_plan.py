"""The autopilot.kvm.plan lookup: a thin adapter from facts to the planner and back."""

from __future__ import annotations

import pytest

from ansible.errors import AnsibleLookupError
from ansible.plugins.loader import lookup_loader


def guest(name, mib=256):
    return {"name": name, "state": "running", "active": True, "vcpus": 1,
            "memory": {"max_mib": mib, "current_mib": mib}, "rates": {"cpu_percent": 2.0}}


def four_on_h1():
    empty = {"host": {}, "capacity": {"cpus": 2, "memory_mib": 1024}, "guests": {}}
    full = dict(empty, guests=dict(("vm%d" % i, guest("vm%d" % i)) for i in range(1, 5)))
    return {"h1": full, "h2": dict(empty), "h3": dict(empty)}


@pytest.fixture
def plan_lookup():
    return lookup_loader.get("autopilot.kvm.plan")


def test_relieves_the_overloaded_host_and_explains_each_step(plan_lookup):
    (plan,) = plan_lookup.run([four_on_h1()], {}, default_ceiling={"memory_pct": 60, "cpu_pct": 90})
    assert plan["feasible"]
    assert plan["steps"], "h1 at 100 % memory over a 60 % ceiling must be relieved"
    assert all(step["from"] == "h1" and step["to"] in ("h2", "h3") for step in plan["steps"])
    assert all(step["reason"]["expectation"] and step["reason"]["text"] for step in plan["steps"])
    after = plan["placement_after"]
    assert all(row["load_pct"]["mem"] <= 60 for row in after.values())
    assert sorted(g for row in after.values() for g in row["guests"]) == ["vm1", "vm2", "vm3", "vm4"]
    assert plan["placement_before"]["h1"]["load_pct"]["mem"] == 100.0


def test_a_balanced_cluster_needs_no_step(plan_lookup):
    cluster = four_on_h1()
    guests = cluster["h1"]["guests"]
    cluster["h2"] = dict(cluster["h2"], guests={"vm3": guests.pop("vm3")})
    cluster["h3"] = dict(cluster["h3"], guests={"vm4": guests.pop("vm4")})
    (plan,) = plan_lookup.run([cluster], {}, default_ceiling={"memory_pct": 60, "cpu_pct": 90})
    assert plan["feasible"] and plan["steps"] == [] and plan["waves"] == []


def test_same_input_and_seed_give_the_same_plan(plan_lookup):
    first = plan_lookup.run([four_on_h1()], {}, default_ceiling={"memory_pct": 60}, seed=3)
    second = plan_lookup.run([four_on_h1()], {}, default_ceiling={"memory_pct": 60}, seed=3)
    for plan in first + second:
        plan["metrics"].pop("search", None)
    assert first == second


@pytest.mark.parametrize("kwargs, message", [
    (dict(ceilings={"h9": {"memory_pct": 50}}), "unknown host(s) 'h9'"),
    (dict(ceilings={"h1": {"memory_pct": -1}}), "ceilings.h1.memory_pct must be a percentage"),
    (dict(budget=0), "budget must be a positive number"),
])
def test_bad_input_is_a_lookup_error_naming_it(plan_lookup, kwargs, message):
    with pytest.raises(AnsibleLookupError) as error:
        plan_lookup.run([four_on_h1()], {}, **kwargs)
    assert message in str(error.value)


def test_an_impossible_ceiling_returns_no_partial_plan(plan_lookup):
    # 4 x 256 MiB cannot fit under 20 % of 3 x 1024 MiB
    (plan,) = plan_lookup.run([four_on_h1()], {}, default_ceiling={"memory_pct": 20})
    assert plan["feasible"] is False
    assert plan["steps"] == [] and plan["waves"] == []
    assert plan["conflicts"]
    assert plan["placement_after"] == plan["placement_before"]


def test_joint_swaps_reaches_the_planner_and_is_off_by_default(plan_lookup):
    (plan,) = plan_lookup.run([four_on_h1()], {}, default_ceiling={"memory_pct": 60}, objective="cost",
                              joint_swaps=True)
    assert plan["request"]["options"]["joint_swaps"] is True and plan["feasible"]
    (plan,) = plan_lookup.run([four_on_h1()], {}, default_ceiling={"memory_pct": 60}, objective="cost")
    assert plan["request"]["options"]["joint_swaps"] is False
