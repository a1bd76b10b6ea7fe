"""A plan saved for review is applied later only if the cluster still allows it."""

from __future__ import annotations

import copy

import pytest

from ansible_collections.autopilot.kvm.plugins.plugin_utils.cluster_document import build_document
from ansible_collections.autopilot.kvm.plugins.plugin_utils.planner.api import plan_document
from ansible_collections.autopilot.kvm.plugins.plugin_utils.saved_plan import SavedPlanError, revalidate, save


def guest(name, mib=256):
    return {"name": name, "state": "running", "vcpus": 1, "memory": {"max_mib": mib, "current_mib": mib},
            "rates": {"cpu_percent": 2.0}}


def cluster(**hosts):
    return dict((name, {"host": {}, "capacity": {"cpus": 2, "memory_mib": 1024},
                        "guests": dict((g["name"], g) for g in guests)}) for name, guests in hosts.items())


CEILING = {"memory_pct": 60, "cpu_pct": 90}


@pytest.fixture
def saved():
    request = build_document(cluster(h1=[guest("vm%d" % i) for i in range(1, 5)], h2=[], h3=[]), default_ceiling=CEILING)
    plan = plan_document(request)
    assert plan["feasible"] and plan["steps"]
    plan["request"] = request
    return save(plan)


def now(**hosts):
    return build_document(cluster(**hosts), default_ceiling=CEILING)


def test_saved_plan_carries_its_request(saved):
    assert saved["format"] == "autopilot.kvm/plan/1"
    assert "request" not in saved["plan"]
    assert saved["request"]["expectations"]


def test_unchanged_cluster_gets_the_whole_plan(saved):
    remaining = revalidate(saved, now(h1=[guest("vm%d" % i) for i in range(1, 5)], h2=[], h3=[]))
    assert remaining["steps"] == saved["plan"]["steps"]
    assert remaining["already_done"] == []


def test_steps_already_done_are_left_out(saved):
    first = saved["plan"]["steps"][0]
    hosts = {"h1": [], "h2": [], "h3": []}
    for i in range(1, 5):
        name = "vm%d" % i
        hosts[first["to"] if name == first["vm"] else "h1"].append(guest(name))
    remaining = revalidate(saved, now(**hosts))
    assert remaining["already_done"] == [first["vm"]]
    assert all(step["vm"] != first["vm"] for step in remaining["steps"])


def test_a_guest_moved_elsewhere_invalidates_the_plan(saved):
    step = saved["plan"]["steps"][0]
    elsewhere = ({"h2", "h3"} - {step["to"]}).pop()
    hosts = {"h1": [], "h2": [], "h3": []}
    for i in range(1, 5):
        name = "vm%d" % i
        hosts[elsewhere if name == step["vm"] else "h1"].append(guest(name))
    with pytest.raises(SavedPlanError, match="guest %s runs on %s, the plan moves it from h1" % (step["vm"], elsewhere)):
        revalidate(saved, now(**hosts))


def test_a_vanished_guest_or_host_invalidates_the_plan(saved):
    with pytest.raises(SavedPlanError) as error:
        revalidate(saved, now(h1=[guest("vm%d" % i) for i in range(2, 5)], h2=[]))
    assert "host(s) gone since the plan was made: h3" in str(error.value)
    assert "no longer runs anywhere" in str(error.value)


def test_a_step_that_would_now_break_a_ceiling_is_refused(saved):
    target = saved["plan"]["steps"][0]["to"]
    # a new 512 MiB guest now sits on the first step's destination: adding 256 MiB there exceeds 60 %
    hosts = {"h1": [guest("vm%d" % i) for i in range(1, 5)], "h2": [], "h3": []}
    hosts[target] = [guest("big", mib=512)]
    with pytest.raises(SavedPlanError, match="would now break"):
        revalidate(saved, now(**hosts))


def test_not_a_saved_plan_is_refused(saved):
    broken = copy.deepcopy(saved)
    broken["format"] = "something/else"
    with pytest.raises(SavedPlanError, match="not a saved autopilot.kvm plan"):
        revalidate(broken, now(h1=[], h2=[], h3=[]))
    with pytest.raises(SavedPlanError, match="carries no request"):
        save({"feasible": True})
