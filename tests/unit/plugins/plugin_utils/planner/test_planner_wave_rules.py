"""Spread and depends rules hold between and during migration waves (schedule.py, wave_rules.py, validate.py)."""

from __future__ import annotations

from ansible_collections.autopilot.kvm.plugins.plugin_utils.planner.api import plan_document
from ansible_collections.autopilot.kvm.plugins.plugin_utils.planner.parse import parse_document
from ansible_collections.autopilot.kvm.plugins.plugin_utils.planner.validate import check_plan
from ansible_collections.autopilot.kvm.plugins.plugin_utils.planner.wave_rules import LabelRules

from .planner_helpers import doc, host, vm


def zones(n):
    return [host("h%d" % k, labels={"zone": "z%d" % k}) for k in range(1, n + 1)]


def chain_doc():
    # a (zone 1) is wanted on h3 (zone 2), b (zone 2) on h4 (zone 3); the two must stay in two zones. The moves
    # touch four different hosts, so nothing but the spread rule keeps them out of one wave, and if they ran
    # together a could arrive in zone 2 before b has left it.
    hosts = [host("h1", labels={"zone": "z1"}), host("h2", labels={"zone": "z2"}),
             host("h3", labels={"zone": "z2"}), host("h4", labels={"zone": "z3"})]
    exps = [{"id": "ab", "type": "spread", "vms": ["a", "b"], "label": "zone", "min": 2},
            {"id": "a-h3", "type": "fence", "vms": ["a"], "hosts": ["h3"], "hard": False, "weight": 10},
            {"id": "b-h4", "type": "fence", "vms": ["b"], "hosts": ["h4"], "hard": False, "weight": 10}]
    return doc(hosts, [vm("a", "h1", move_cost=1), vm("b", "h2", move_cost=1)], exps, objective="cost",
               budget_s=0.5)


def test_the_checker_sees_a_spread_broken_between_waves():
    d = chain_doc()
    b_first = {"feasible": True, "steps": [], "assignment": {"a": "h3", "b": "h4"},
               "waves": [[{"vm": "b", "from": "h2", "to": "h4"}], [{"vm": "a", "from": "h1", "to": "h3"}]]}
    assert check_plan(d, b_first) == []
    a_first = dict(b_first, waves=b_first["waves"][::-1])
    errs = check_plan(d, a_first)
    assert errs and "ab broken between waves" in errs[0]


def test_moves_of_a_spread_group_run_one_wave_after_the_other():
    d = chain_doc()
    res = plan_document(d)
    assert res["feasible"] and check_plan(d, res) == []
    assert res["assignment"] == {"a": "h3", "b": "h4"}
    # b leaves zone 2 in one wave, a arrives there in the next: never both in zone 2, even mid-wave.
    assert [[m["vm"] for m in w] for w in res["waves"]] == [["b"], ["a"]]


def _rules(vms_on, exps, hosts):
    d = doc(hosts, [vm(v, h) for v, h in vms_on], exps)
    prob = parse_document(d)
    st = prob.state
    return st, LabelRules(prob.cons, list(st.host_of))


def test_depends_allows_many_moves_in_a_wave_only_with_providers_that_stay():
    hosts = [host("h%d" % k, labels={"rack": "r%d" % (k // 2)}) for k in range(4)]      # r0: h0 h1, r1: h2 h3
    exps = [{"id": "app-db", "type": "depends", "vms": ["app1", "app2"], "on": ["db1", "db2"], "label": "rack"}]
    st, rules = _rules([("app1", "h0"), ("app2", "h2"), ("db1", "h1"), ("db2", "h3")], exps, hosts)
    v = st.vm_ids.index
    # db2 leaving rack r1 alone would strand app2 there.
    assert not rules.allows([v("db2")], list(st.host_of), 0)
    # app2 may join app1 in r0 (db1 stays there) ...
    vcur = list(st.host_of)
    assert rules.allows([v("app2")], vcur, 0)
    rules.add([v("app2")], vcur, 0)
    # ... but not with db2 leaving r1 in the same wave: app2 may still be in r1 when db2 has gone.
    assert not rules.allows([v("db2")], vcur, 0)
    # Once that wave is done, db2 may go.
    rules.commit([(0, [(v("app2"), 2, 0)])])
    rules.start_wave()
    vcur[v("app2")] = 0
    assert rules.allows([v("db2")], vcur, 0)


def test_spread_allows_many_moves_in_a_wave_when_the_guests_that_stay_are_spread():
    exps = [{"id": "s", "type": "spread", "vms": ["a", "b", "c", "d"], "label": "zone", "min": 2}]
    st, rules = _rules([("a", "h1"), ("b", "h2"), ("c", "h3"), ("d", "h3")], exps, zones(3))
    vcur = list(st.host_of)
    v = st.vm_ids.index
    rules.start_wave()
    assert rules.allows([v("a")], vcur, 2)       # a to zone 3: b and c/d still in zones 2, 3
    rules.add([v("a")], vcur, 2)
    # b to zone 3 as well, in the same wave: the guests that stay (c, d) are all in zone 3 -> refused.
    assert not rules.allows([v("b")], vcur, 2)
    # A rule broken where the schedule starts is not enforced (the moves are what mend it).
    # (three guests on one host, three zones needed, two to be had: a's move leaves it broken, and is allowed)
    st2, broken = _rules([("a", "h1"), ("b", "h1"), ("c", "h1")], [dict(exps[0], vms=["a", "b", "c"], min=3)],
                         zones(2))
    assert broken.allows([st2.vm_ids.index("a")], list(st2.host_of), 1)
