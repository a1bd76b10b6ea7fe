"""Step types (apply/undo, cost, reservations), the migration cost model and the factories."""

from __future__ import annotations

import pytest

from ansible_collections.autopilot.kvm.plugins.plugin_utils.planner import costs, factories
from ansible_collections.autopilot.kvm.plugins.plugin_utils.planner.parse import parse_document
from ansible_collections.autopilot.kvm.plugins.plugin_utils.planner.steps import (
    Balloon, Ksm, Migrate, PowerOff, PowerOn, StepError, Tune)

from .planner_helpers import doc, host, vm


def problem(exps=None, hosts=None, vms=None):
    hosts = hosts or [host("h1"), host("h2"), host("h3", power="off")]
    vms = vms or [vm("a", "h1", cpu=1500, mem=2000, vcpu=2), vm("b", "h1", mem=3000), vm("c", "h2")]
    return parse_document(doc(hosts, vms, exps))


def snapshot(st):
    return ([list(u) for u in st.used], list(st.host_of), [list(d) for d in st.dem], list(st.power_on))


@pytest.mark.parametrize("make", [
    lambda st: Migrate(0, 0, 1),
    lambda st: Balloon(0, 1200),
    lambda st: Ksm(0, True, 500),
    lambda st: Tune(0, 1000),
    lambda st: PowerOn(2),
])
def test_apply_then_undo_restores_state(make):
    st = problem().state
    before = snapshot(st)
    step = make(st)
    token = step.apply(st)
    assert snapshot(st) != before
    step.undo(st, token)
    assert snapshot(st) == before


def test_migrate_transforms_loads_and_reserves_destination():
    st = problem().state
    step = Migrate(0, 0, 1)
    res = step.reservations(st)
    assert ("host_resource", 1, "mem", 2000) in res and ("migration_slot", 0, None, 1) in res
    step.apply(st)
    assert st.host_of[0] == 1
    assert st.used[st.res.index("mem")][0] == 3000 and st.used[st.res.index("mem")][1] == 3000
    c = step.cost(st)
    assert c["duration_s"] > 0 and c["network_bytes"] >= 2000 * costs.MIB


def test_migrate_from_wrong_host_refused():
    st = problem().state
    with pytest.raises(StepError):
        Migrate(0, 1, 2).apply(st)


def test_power_off_requires_empty_host():
    st = problem().state
    with pytest.raises(StepError):
        PowerOff(0).apply(st)
    tok = PowerOff(2).apply(st)
    assert st.power_on[2] is False and tok is False


def test_tune_balloon_ksm_effects():
    st = problem().state
    cpu, mem = st.res.index("cpu"), st.res.index("mem")
    Tune(0, 1000).apply(st)
    assert st.dem[cpu][0] == 1000 and st.used[cpu][0] == 2000
    Balloon(1, 1000).apply(st)
    assert st.used[mem][0] == 3000
    Ksm(0, True, 300).apply(st)
    assert st.used[mem][0] == 2700
    assert Balloon(1, 500).cost(st)["risk"] == "medium"
    assert Ksm(0, True, 1).cost(st)["cpu_fraction"] > 0


def test_migration_model_monotone_and_risk():
    bw = costs.effective_bandwidth_mbs(10000)
    assert bw == pytest.approx(10000 * 8 / 9 / 8)
    small = costs.migration_prediction(1024, 10, bw)
    big = costs.migration_prediction(8192, 10, bw)
    dirty = costs.migration_prediction(8192, 600, bw)
    assert big["duration_s"] > small["duration_s"]
    assert dirty["duration_s"] > big["duration_s"] and dirty["bytes"] > big["bytes"]
    assert big["bytes"] >= 8192 * costs.MIB
    assert small["risk"] == "low" and dirty["risk"] == "medium"
    stuck = costs.migration_prediction(8192, 2 * bw, bw)
    assert stuck["risk"] == "high" and stuck["rounds"] == costs.MAX_ROUNDS
    idle = costs.migration_prediction(1024, 0, bw)
    assert idle["bytes"] == pytest.approx(1024 * costs.MIB, rel=1e-6)
    assert idle["duration_s"] == pytest.approx(1024 * costs.MIB / costs.MB / bw + costs.SETUP_S, rel=1e-3)


def test_shared_link_slows_migration():
    one = costs.effective_bandwidth_mbs(10000, 1)
    two = costs.effective_bandwidth_mbs(10000, 2)
    assert two == pytest.approx(one / 2)


def test_migrate_factory_respects_rules_and_capacity():
    p = problem([{"id": "ban", "type": "ban", "vms": ["a"], "hosts": ["h2"]}])
    assert factories.migrate_candidates(p.state, p.cons, 0) == []   # h2 banned, h3 off
    p = problem()
    cands = factories.migrate_candidates(p.state, p.cons, 0)
    assert [(s.src, s.dst) for s in cands] == [(0, 1)]
    big = problem(vms=[vm("a", "h1", mem=9500), vm("c", "h2", mem=1000)])
    assert factories.migrate_candidates(big.state, big.cons, 0) == []


def test_tune_factory_only_when_over_cap():
    p = problem([{"id": "cap", "type": "cpu_cap", "vm": "a", "max_pct": 50},
                 {"id": "cap2", "type": "cpu_cap", "vm": "b", "max_pct": 90}])
    steps = factories.tune_steps(p.state, p.cons)
    assert [(s.vm, eid) for s, eid in steps] == [(0, "cap")]


def test_power_factories():
    p = problem([{"id": "ps", "type": "power_saving", "hosts_may_power_off": ["h2", "h3"]}])
    final = [0, 0, 0]
    offs = factories.power_off_steps(p.state, p.cons, final)
    assert [(s.host, eid) for s, eid in offs] == [(1, "ps")]   # h3 already off, h1 busy
    ons = factories.power_on_steps(p.state, [2, 0, 1])
    assert [s.host for s in ons] == [2]


def test_balloon_and_ksm_factories():
    p = problem([{"id": "g", "type": "memory_guarantee", "vm": "b", "min_mib": 1000},
                 {"id": "c", "type": "ceiling", "hosts": ["h1"], "resource": "mem", "max_pct": 40}])
    bl = factories.balloon_steps(p.state, p.cons, 0)
    assert [(s.vm, s.target_mib, eid) for s, eid in bl] == [(1, 1000, "g")]
    ks = factories.ksm_steps(p.state, p.cons)
    assert [(s.host, eid) for s, eid in ks] == [(0, "c")] and ks[0][0].saving_mib > 0
