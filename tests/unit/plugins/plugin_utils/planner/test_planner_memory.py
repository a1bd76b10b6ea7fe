"""Memory overcommit in the plan: balloon and KSM steps weighed against migrations (issue #5)."""

from __future__ import annotations

import copy

import pytest

from ansible_collections.autopilot.kvm.plugins.plugin_utils import memory_policy
from ansible_collections.autopilot.kvm.plugins.plugin_utils.planner import costs
from ansible_collections.autopilot.kvm.plugins.plugin_utils.planner.api import plan_document
from ansible_collections.autopilot.kvm.plugins.plugin_utils.planner.errors import PlanInputError
from ansible_collections.autopilot.kvm.plugins.plugin_utils.planner.memory import KSM_SHARE_FRACTION
from ansible_collections.autopilot.kvm.plugins.plugin_utils.planner.factories import KSM_SHARE_FRACTION as FACTORY_SHARE
from ansible_collections.autopilot.kvm.plugins.plugin_utils.planner.validate import check_plan

from .planner_helpers import doc, host, vm

# h1's memory limit: 60 % of 1000 MiB.
CEILING = [{"id": "ceil-h1", "type": "ceiling", "hosts": ["h1"], "resource": "mem", "max_pct": 60, "hard": True}]
# Balancing is not what these tests look at: keep it from moving guests for load alone.
NO_BALANCE = {"balance_threshold_pct": 100.0}


def plan(d):
    res = plan_document(d)
    assert res["feasible"] is True
    assert check_plan(d, res) == []
    return res


def kinds(res, kind):
    return [s for s in res["steps"] if s["kind"] == kind]


def guests(used, n=3, mem=256, **kw):
    return [vm("g%d" % i, "h1", mem=mem, mem_used_mib=used, mem_max_mib=mem, **kw) for i in range(1, n + 1)]


def pressed(used, n=3, exps=None, h1=None, **options):
    """h1 (1000 MiB, limit 600) holds n guests of 256 MiB; h2 (1000 MiB) is empty."""
    return doc([host("h1", mem=1000, **(h1 or {})), host("h2", mem=1000)], guests(used, n),
               CEILING + (exps or []), **dict(NO_BALANCE, **options))


def converge(d, res):
    """The document after ``res`` ran as planned: balloons at their targets, guests where assigned."""
    d2 = copy.deepcopy(d)
    by_id = {v["id"]: v for v in d2["vms"]}
    for s in res["steps"]:
        if s["kind"] == "balloon":
            by_id[s["vm"]]["dem"]["mem"] = s["target_mib"]
    for vid, h in res["assignment"].items():
        by_id[vid]["host"] = h
    return d2


def test_floor_rule_constants_agree_with_the_memory_policy():
    for name in ("GUEST_FREE_FRACTION", "USED_MARGIN_MIB", "PRESSURE_FREE_FRACTION", "CRITICAL_FREE_FRACTION",
                 "CRITICAL_RATE_FACTOR", "SHRINK_FRACTION_PER_RUN", "GROW_FRACTION_PER_RUN", "MIN_CHANGE_MIB",
                 "MIN_CHANGE_FRACTION", "BALLOON_TOLERANCE_MIB"):
        assert getattr(costs, name) == getattr(memory_policy, name), name
    assert costs.GROW_HYSTERESIS_FRACTION == pytest.approx(memory_policy.RELIEF_FREE_FRACTION
                                                           - memory_policy.PRESSURE_FREE_FRACTION)
    assert KSM_SHARE_FRACTION == FACTORY_SHARE == memory_policy.KSM_ASSUMED_SHARE_FRACTION


def test_idle_guests_are_ballooned_not_migrated():
    d = pressed(used=60)
    res = plan(d)
    balloons = kinds(res, "balloon")
    assert kinds(res, "migrate") == [] and res["waves"] == [[]]
    assert len(balloons) == 3
    total = sum(256 - s["target_mib"] for s in balloons)
    assert total >= 768 - 600
    for s in balloons:
        assert s["wave"] == 0 and s["host"] == "h1"
        # Floor: used 60 + margin max(32, 20 % of 256) = 112; at most a quarter of 256 per run.
        assert 112 <= s["target_mib"] <= 256 - 16 and 256 - s["target_mib"] <= 64
        assert s["predicted"]["memory_returned_mib"] == 256 - s["target_mib"]
        assert s["reason"]["expectation"] == "ceil-h1"
        assert "instead of migrating" in s["reason"]["text"] and "used 60 MiB" in s["reason"]["text"]
        assert 0 < s["cost"]["points"] < costs.MIGRATION_FIXED_POINTS
    note = res["metrics"]["memory"][0]
    assert note["chosen"] == "balloon" and note["host"] == "h1"
    assert any(line.startswith("memory on h1: balloon") for line in res["explain"])


def test_ballooned_guests_are_not_moved_for_balance_in_the_same_plan():
    d = doc([host("h1", mem=1000), host("h2", mem=1000)], guests(60), CEILING)
    res = plan(d)
    assert len(kinds(res, "balloon")) == 3 and kinds(res, "migrate") == []
    # A later run may still even the loads out: balance sees h1 at 96 % of its limit and h2 empty.
    assert kinds(plan(converge(d, res)), "migrate")


def test_consolidate_keeps_ballooned_guests_and_converges():
    d = doc([host("h1", mem=1000), host("h2", mem=1000)], guests(60), CEILING, objective="consolidate")
    res = plan(d)
    assert len(kinds(res, "balloon")) == 3 and kinds(res, "migrate") == []
    assert plan(converge(d, res))["steps"] == []


def test_busy_guests_are_migrated_not_ballooned():
    d = pressed(used=240)
    res = plan(d)
    assert kinds(res, "balloon") == []
    assert len(kinds(res, "migrate")) == 1
    note = res["metrics"]["memory"][0]
    assert note["chosen"] == "migrate" and note["balloon_mib_available"] == 0
    assert "guests use their memory" in note["text"]


def test_missing_statistics_mean_no_balloon():
    d = pressed(used=60)
    del d["vms"][0]["mem_used_mib"]
    d["vms"][1]["mem_used_mib"] = 250
    d["vms"][2]["mem_used_mib"] = 250
    res = plan(d)
    assert kinds(res, "balloon") == []
    assert len(kinds(res, "migrate")) == 1


def test_unknown_stats_everywhere_turn_overcommit_off():
    d = pressed(used=60)
    for v in d["vms"]:
        del v["mem_used_mib"]
    res = plan(d)
    assert "memory" not in res["metrics"]
    assert kinds(res, "balloon") == [] and len(kinds(res, "migrate")) == 1


def test_option_memory_overcommit_false_migrates():
    res = plan(pressed(used=60, memory_overcommit=False))
    assert kinds(res, "balloon") == [] and len(kinds(res, "migrate")) == 1


def test_guarantee_is_never_crossed():
    exps = [{"id": "keep-g%d" % i, "type": "memory_guarantee", "vm": "g%d" % i, "min_mib": 230} for i in (1, 2, 3)]
    res = plan(pressed(used=60, exps=exps))
    for s in kinds(res, "balloon"):
        assert s["target_mib"] >= 230 and s["guaranteed_mib"] == 230
    # 3 x 26 MiB cannot cover 168 MiB: a migration instead.
    assert len(kinds(res, "migrate")) == 1


def test_guarantee_between_floor_and_size_limits_the_shrink():
    exps = [{"id": "keep-g1", "type": "memory_guarantee", "vm": "g1", "min_mib": 220}]
    ceiling = [{"id": "ceil-h1", "type": "ceiling", "hosts": ["h1"], "resource": "mem", "max_pct": 66, "hard": True}]
    res = plan(doc([host("h1", mem=1000), host("h2", mem=1000)], guests(60), ceiling + exps, **NO_BALANCE))
    balloons = {s["vm"]: s for s in kinds(res, "balloon")}
    assert balloons["g1"]["target_mib"] >= 220 and "guarantee 220 MiB" in balloons["g1"]["reason"]["text"]
    assert sum(256 - s["target_mib"] for s in balloons.values()) >= 768 - 660
    assert kinds(res, "migrate") == []


def test_validator_refuses_a_balloon_below_its_guarantee():
    exps = [{"id": "keep-g1", "type": "memory_guarantee", "vm": "g1", "min_mib": 200}]
    d = pressed(used=60, exps=exps)
    res = plan_document(d)
    bad = copy.deepcopy(res)
    for s in bad["steps"]:
        if s["kind"] == "balloon" and s["vm"] == "g1":
            s["target_mib"] = 150
    assert any("crosses its guarantee" in e for e in check_plan(d, bad))


def test_validator_counts_balloon_targets():
    d = pressed(used=60)
    res = plan(d)
    bad = copy.deepcopy(res)
    bad["steps"] = [s for s in bad["steps"] if s["kind"] != "balloon"]
    assert any("at the end" in e for e in check_plan(d, bad))


def test_ksm_chosen_when_its_measured_saving_suffices():
    ksm = {"available": True, "run": 0, "estimated_saving_mib": 200}
    res = plan(pressed(used=60, h1={"ksm": ksm}))
    steps = kinds(res, "ksm")
    assert len(steps) == 1 and steps[0]["enable"] is True and steps[0]["host"] == "h1"
    assert steps[0]["predicted"]["memory_saved_mib"] == 200
    assert kinds(res, "balloon") == [] and kinds(res, "migrate") == []
    assert "instead of migrating" in steps[0]["reason"]["text"]
    assert res["metrics"]["memory"][0]["chosen"] == "ksm"


def test_ksm_too_small_is_combined_with_balloons():
    ksm = {"available": True, "run": 0, "estimated_saving_mib": 100}
    res = plan(pressed(used=60, h1={"ksm": ksm}))
    assert res["metrics"]["memory"][0]["chosen"] in ("ksm+balloon", "balloon")
    assert kinds(res, "migrate") == []


@pytest.mark.parametrize("used", [240, 60])
def test_an_assumed_ksm_saving_is_never_relied_on(used):
    # Nothing measured: the assumed 10 % of 768 MiB (76 MiB) is reported but not counted. With busy guests
    # (used 240) only a migration is left; with idle ones (used 60) balloons, not KSM, relieve the host.
    d = pressed(used=used, exps=[{"id": "need-60", "type": "ceiling", "hosts": ["h1"], "resource": "mem",
                                  "max_pct": 70.8, "hard": True}], h1={"ksm": {"available": True, "run": 0}})
    res = plan(d)
    note = res["metrics"]["memory"][0]
    assert note["ksm_saving_mib"] == 0 and "76 MiB, is not relied on" in note["ksm_basis"], note
    assert kinds(res, "ksm") == []
    if used == 240:
        assert len(kinds(res, "migrate")) == 1
    else:
        assert note["chosen"] == "balloon" and kinds(res, "balloon") and not kinds(res, "migrate")


def test_running_ksm_measured_sharing_counts_for_the_host():
    # 50000 pages of 4 KiB shared = 195 MiB saved: h1 is under its limit, nothing to do.
    ksm = {"available": True, "run": 1, "pages_sharing": 50000, "pages_shared": 1000, "page_size": 4096}
    d = pressed(used=240, h1={"ksm": ksm})
    res = plan(d)
    assert res["steps"] == []


@pytest.mark.parametrize("estimate, steps", [(None, 1), (200, 0)])
def test_running_ksm_is_credited_its_page_hash_estimate_while_ksmd_catches_up(estimate, steps):
    # KSM was just switched on: 20 MiB shared so far. Without an estimate h1 (768 > 600 + 20) still needs a
    # migration; with a page-hash estimate of 200 MiB it is credited that much and nothing moves.
    ksm = {"available": True, "run": 1, "pages_sharing": 5120, "page_size": 4096}
    if estimate is not None:
        ksm.update(estimated_saving_mib=estimate, estimate_basis="estimated from page hashes (3 guests, 700 MiB read)")
    res = plan(pressed(used=240, h1={"ksm": ksm}))
    assert len(kinds(res, "migrate")) == steps


def test_ksm_the_plan_does_not_manage_is_never_switched_but_still_counts():
    running = {"available": True, "run": 1, "pages_sharing": 25600, "page_size": 4096, "managed": False}
    d = doc([host("h1", mem=1000, ksm=running), host("h2", mem=1000)], guests(used=240, n=2), CEILING, **NO_BALANCE)
    assert plan(d)["steps"] == []          # well under its limit, but not switched off
    stopped = {"available": True, "run": 0, "estimated_saving_mib": 300, "estimate_basis": "page hashes",
               "managed": False}
    res = plan(pressed(used=240, h1={"ksm": stopped}))
    assert kinds(res, "ksm") == [] and len(kinds(res, "migrate")) == 1
    assert "not the plan's to switch" in res["metrics"]["memory"][0]["ksm_basis"]
    credited = dict(running, pages_sharing=51200)   # 200 MiB shared: 768 MiB fits under 600 + 200
    assert plan(pressed(used=240, h1={"ksm": credited}))["steps"] == []


def test_running_ksm_is_switched_off_when_the_host_is_well_under_its_limit_without_it():
    # 2 guests of 256 MiB = 512 MiB; the limit without KSM is 600, 90 % of it is 540: KSM is not needed.
    ksm = {"available": True, "run": 1, "pages_sharing": 25600, "page_size": 4096}   # 100 MiB shared
    d = doc([host("h1", mem=1000, ksm=ksm), host("h2", mem=1000)], guests(used=240, n=2), CEILING, **NO_BALANCE)
    res = plan(d)
    off = kinds(res, "ksm")
    assert [(s["host"], s["enable"]) for s in off] == [("h1", False)]
    assert off[0]["predicted"]["memory_saved_mib"] == -100 and off[0]["reason"]["expectation"] == "memory:ksm-off"
    assert kinds(res, "migrate") == [] and kinds(res, "balloon") == []


@pytest.mark.parametrize("n_guests, run", [(3, 1), (2, 0)])
def test_ksm_left_alone_when_it_is_needed_or_already_off(n_guests, run):
    # 3 guests: 768 MiB is over the 600 limit without the 200 MiB KSM shares: KSM must stay on.
    ksm = {"available": True, "run": run, "pages_sharing": 51200, "page_size": 4096}
    d = doc([host("h1", mem=1000, ksm=ksm), host("h2", mem=1000)], guests(used=240, n=n_guests), CEILING,
            **NO_BALANCE)
    assert plan(d)["steps"] == []


def test_ksm_is_not_switched_off_inside_the_hysteresis_band():
    # 560 MiB of guests: under the 600 limit without KSM, but above 90 % of it (540): KSM stays on.
    ksm = {"available": True, "run": 1, "pages_sharing": 25600, "page_size": 4096}
    vms = guests(used=240, n=2) + [vm("big", "h1", mem=48)]
    assert kinds(plan(doc([host("h1", mem=1000, ksm=ksm), host("h2", mem=1000)], vms, CEILING, **NO_BALANCE)),
                 "ksm") == []


def test_grow_back_when_pressure_is_gone():
    d = doc([host("h1", mem=1000), host("h2", mem=1000)],
            [vm("g1", "h1", mem=128, mem_alloc_mib=256, mem_used_mib=60, mem_max_mib=256)], CEILING, **NO_BALANCE)
    res = plan(d)
    grow = kinds(res, "balloon")
    assert len(grow) == 1 and grow[0]["target_mib"] == 128 + 64 and grow[0]["reason"]["expectation"] == "memory:grow"
    assert grow[0]["predicted"]["memory_returned_mib"] == -64
    d2 = converge(d, res)
    res2 = plan(d2)
    assert kinds(res2, "balloon")[0]["target_mib"] == 256
    assert plan(converge(d2, res2))["steps"] == []


def test_no_grow_inside_the_hysteresis_band():
    # 580 MiB used of a 600 MiB limit: growing would leave less than 10 % of the limit free.
    vms = [vm("g1", "h1", mem=200, mem_alloc_mib=256, mem_used_mib=60, mem_max_mib=256),
           vm("big", "h1", mem=380)]
    res = plan(doc([host("h1", mem=1000), host("h2", mem=1000)], vms, CEILING, **NO_BALANCE))
    assert res["steps"] == []


def test_converged_after_shrinking_gives_no_step():
    d = pressed(used=60)
    res = plan(d)
    assert kinds(res, "balloon")
    assert plan(converge(d, res))["steps"] == []


def test_converged_after_migrating_gives_no_step():
    d = pressed(used=240)
    res = plan(d)
    assert plan(converge(d, res))["steps"] == []


def test_cheaper_migration_wins_over_a_costly_shrink():
    # Six small guests would each lose a third of their margin (6 x 0.21 points); moving the tiny idle
    # guest costs one migration (1.04 points).
    vms = [vm("s%d" % i, "h1", mem=100, mem_used_mib=50, mem_max_mib=100) for i in range(6)]
    vms.append(vm("tiny", "h1", mem=40, mem_used_mib=30, mem_max_mib=40))
    res = plan(doc([host("h1", mem=1000), host("h2", mem=1000)], vms, CEILING, **NO_BALANCE))
    assert [s["vm"] for s in kinds(res, "migrate")] == ["tiny"]
    assert kinds(res, "balloon") == []
    note = res["metrics"]["memory"][0]
    assert note["chosen"] == "migrate" and note["options"]["balloon"] > note["migrate_points"]
    assert "is cheaper than balloon" in note["text"]


@pytest.mark.parametrize("bad, path", [
    ({"vms": {0: {"mem_used_mib": -1}}}, "vms[0](g1).mem_used_mib"),
    ({"vms": {0: {"mem_max_mib": "x"}}}, "vms[0](g1).mem_max_mib"),
    ({"hosts": {0: {"ksm": {"run": 3}}}}, "hosts[0](h1).ksm.run"),
    ({"hosts": {0: {"ksm": {"pages": 3}}}}, "hosts[0](h1).ksm.pages"),
    ({"hosts": {0: {"ksm": []}}}, "hosts[0](h1).ksm"),
    ({"hosts": {0: {"ksm": {"available": "yes"}}}}, "hosts[0](h1).ksm.available"),
    ({"hosts": {0: {"ksm": {"available": True, "managed": "no"}}}}, "hosts[0](h1).ksm.managed"),
    ({"options": {"memory_overcommit": "yes"}}, "options.memory_overcommit"),
])
def test_input_errors_name_the_path(bad, path):
    d = pressed(used=60)
    for key, patch in bad.items():
        if key == "options":
            d["options"].update(patch)
            continue
        for index, fields in patch.items():
            d[key][index].update(fields)
    with pytest.raises(PlanInputError) as err:
        plan_document(d)
    assert str(err.value).startswith(path)
