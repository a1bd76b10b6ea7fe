"""Table-driven memory policy tests (as vdsm's mompolicy_test): JSON host and guest statistics in, expected controls out.

Each file in memory_policy_cases/ is a list of cases ``{id, about?, host, guarantees?, options?, expect}``:
``host`` is one facts_cluster entry (host_info's ``host``, guest_info's ``guests``, the declared
``capacity``), ``expect`` is matched against :func:`memory_policy.host_controls`'s result:

- a dict matches when every expected key matches (other keys are free);
- a list matches when it has the same length and each element matches in order;
- ``{"$contains": "text"}`` matches a string containing the text;
- ``"$absent": [keys]`` inside a dict asserts the keys are not there.

Every case is also checked against the invariants the policy promises (never below a guarantee, never below
used + margin, at most one run's step, shrinking only under pressure).
"""

from __future__ import annotations

import glob
import json
import os
import re

import pytest

from ansible_collections.autopilot.kvm.plugins.plugin_utils import memory_policy as mp

HERE = os.path.dirname(os.path.abspath(__file__))
CASES_DIR = os.path.join(HERE, "memory_policy_cases")
DOC = os.path.join(HERE, "..", "..", "..", "..", "docs", "memory-policy.md")


def load_cases():
    out = []
    for path in sorted(glob.glob(os.path.join(CASES_DIR, "*.json"))):
        with open(path) as handle:
            for case in json.load(handle):
                out.append(pytest.param(case, id="%s:%s" % (os.path.basename(path)[:-5], case["id"])))
    return out


CASES = load_cases()


def match(expected, actual, where="result"):
    if isinstance(expected, dict) and "$contains" in expected:
        assert isinstance(actual, str) and expected["$contains"] in actual, "%s: %r does not contain %r" % (
            where, actual, expected["$contains"])
    elif isinstance(expected, dict):
        assert isinstance(actual, dict), "%s: expected a mapping, got %r" % (where, actual)
        for key, value in expected.items():
            if key == "$absent":
                for absent in value:
                    assert absent not in actual, "%s: %r should be absent, got %r" % (where, absent, actual[absent])
                continue
            assert key in actual, "%s: no key %r in %r" % (where, key, sorted(actual))
            match(value, actual[key], "%s.%s" % (where, key))
    elif isinstance(expected, list):
        assert isinstance(actual, list) and len(actual) == len(expected), "%s: expected %d items, got %r" % (
            where, len(expected), actual)
        for index, (exp, act) in enumerate(zip(expected, actual)):
            match(exp, act, "%s[%d]" % (where, index))
    elif isinstance(expected, float):
        assert isinstance(actual, (int, float)) and abs(actual - expected) < 1e-9, "%s: %r != %r" % (where, actual, expected)
    else:
        assert actual == expected and type(actual) is type(expected), "%s: %r != %r" % (where, actual, expected)


def check_invariants(case, result):
    opts = mp.options_with_defaults(case.get("options"))
    guests = case["host"].get("guests") or {}
    owed = mp.guest_guarantees(guests, case.get("guarantees"))
    state = result["pressure"]["state"]
    for control in result["controls"]:
        if control["kind"] != "balloon":
            continue
        vm, target, current = control["vm"], control["target_mib"], control["current_mib"]
        assert target <= control["max_mib"]
        if vm in owed:
            assert target >= min(owed[vm], control["max_mib"]), "%s: below its guarantee" % vm
            assert control["guaranteed_mib"] == owed[vm]
        if target < current:
            assert state in ("pressure", "critical") or opts["mode"] == "candidates", "shrink without pressure"
            assert target >= control["used_mib"] + opts["used_margin_mib"], "%s: below used + margin" % vm
            assert target >= control["floor_mib"]
            factor = opts["critical_rate_factor"] if state == "critical" else 1
            assert current - target <= -(-opts["shrink_fraction_per_run"] * factor * control["max_mib"] // 1)
            assert 0 <= control["cost"]["risk"] <= 1
        elif target > current and not (vm in owed and target == min(owed[vm], control["max_mib"])):
            assert state == "relief", "growth outside relief"
            assert target - current <= -(-opts["grow_fraction_per_run"] * control["max_mib"] // 1)
        assert control["effect"]["memory_returned_mib"] == current - target
        assert control["reason"]
    grown = sum(c["target_mib"] - c["current_mib"] for c in result["controls"]
                if c["kind"] == "balloon" and c["target_mib"] > c["current_mib"] and c["vm"] not in owed)
    assert grown <= result["pressure"]["grow_budget_mib"] or state != "relief"
    touched = [c["vm"] for c in result["controls"] if c["kind"] == "balloon"]
    skipped = [s["vm"] for s in result["skipped"]]
    assert not set(touched) & set(skipped), "a skipped guest got a control"
    for item in result["skipped"] + result["unchanged"]:
        assert item["reason"]


@pytest.mark.parametrize("case", CASES)
def test_policy_table(case):
    result = mp.host_controls(case["host"], case.get("guarantees"), case.get("options"))
    match(case["expect"], result)
    check_invariants(case, result)
    # deterministic: the same input gives the same output
    assert mp.host_controls(case["host"], case.get("guarantees"), case.get("options")) == result


def test_cases_cover_every_theme():
    names = sorted(os.path.basename(p)[:-5] for p in glob.glob(os.path.join(CASES_DIR, "*.json")))
    assert names == ["guarantees", "ksm", "min_change", "missing_statistics", "numa", "pressure_thresholds", "rate_bounds"]
    assert len(CASES) >= 50


@pytest.mark.parametrize("stats, expected", [
    ({"actual": 1048576, "usable": 524288, "unused": 1000}, (512, "actual - usable")),
    ({"actual": 1048576, "unused": 262144}, (768, "actual - unused")),
    ({"actual": 1048576, "usable": 1048576}, (0, "actual - usable")),
    ({"actual": 1048576, "usable": 2097152}, None),     # stale: reported before the balloon shrank
    ({"actual": 1048576}, None),
    ({}, None),
    (None, None),
])
def test_guest_used_follows_the_balloon_module(stats, expected):
    used, rule = mp.guest_used_mib(stats)
    if expected is None:
        assert used is None and rule
    else:
        assert (used, rule) == expected
    # the balloon module refuses targets below its own estimate + margin: both must agree
    from ansible_collections.autopilot.kvm.plugins.module_utils._balloon import used_memory
    module_used, module_rule = used_memory(stats)
    assert (module_used is None) == (used is None)
    if used is not None:
        assert module_used // 1024 == used and module_rule.startswith(rule)


def test_policy_margin_is_never_below_the_balloon_module_margin():
    from ansible_collections.autopilot.kvm.plugins.module_utils import _balloon
    assert mp.USED_MARGIN_MIB >= _balloon.DEFAULT_USED_MARGIN_MIB
    assert mp.BALLOON_TOLERANCE_MIB == _balloon.DEFAULT_TOLERANCE_MIB
    assert mp.MIN_CHANGE_MIB > _balloon.DEFAULT_TOLERANCE_MIB


def test_scan_settings_never_exceed_the_asked_rate_above_the_floor():
    for rate in (65, 100, 726, 3200, 3455, 12500, 24320, 62500, 100000, 125000):
        pages, sleep = mp.scan_settings(rate)
        assert mp.KSM_PAGES_MIN <= pages <= mp.KSM_PAGES_MAX
        assert mp.KSM_SLEEP_MIN_MS <= sleep <= mp.KSM_SLEEP_MAX_MS
        assert pages * 1000.0 / sleep <= rate + 1e-9
        assert pages * 1000.0 / sleep >= 0.9 * rate


@pytest.mark.parametrize("options, message", [
    ({"bogus": 1}, "unknown memory policy option"),
    ({"mode": "yolo"}, "option mode must be one of"),
    ({"pressure_free_fraction": 1.5}, "within [0, 1]"),
    ({"pressure_free_fraction": 0.4}, "critical_free_fraction <= pressure_free_fraction <= relief_free_fraction"),
    ({"ksm_on_free_fraction": 0.5}, "ksm_on_free_fraction <= ksm_off_free_fraction"),
    ({"ksm_enabled": "yes"}, "true or false"),
    ({"used_margin_mib": "32"}, "must be a number"),
    ({"managed_guests": "mem("}, "not a valid regular expression"),
])
def test_bad_options_are_refused_with_the_name(options, message):
    with pytest.raises(mp.MemoryPolicyError, match=re.escape(message)):
        mp.options_with_defaults(options)


def test_bad_guarantee_names_the_guest():
    guests = {"g1": {"expectations": [{"type": "memory_guarantee", "min_mib": "lots"}]}}
    with pytest.raises(mp.MemoryPolicyError, match=r"guest g1 expectations\[0\].min_mib"):
        mp.guest_guarantees(guests)


def test_cluster_controls_keys_hosts_and_passes_uptime():
    with open(os.path.join(CASES_DIR, "ksm.json")) as handle:
        cases = dict((c["id"], c) for c in json.load(handle))
    entry = dict(cases["measured-cpu-since-boot-above-the-assumption"]["host"])
    entry.pop("uptime_s")
    cluster = {"h2": entry, "h1": cases["off-at-25pct-stays-off"]["host"]}
    options = {"ksmd_cpu_budget": 0.2}
    result = mp.cluster_controls(cluster, options=options, uptimes={"h2": 1000})
    assert sorted(result) == ["h1", "h2"]
    assert result["h2"]["host"] == "h2"
    (control,) = result["h2"]["controls"]
    assert control["host"] == "h2" and control["pages_to_scan"] == 200
    # without the uptime the since-boot measure is not possible: the assumed cost gives 25000 pages/s -> 500
    (control,) = mp.cluster_controls(cluster, options=options)["h2"]["controls"]
    assert control["pages_to_scan"] == 500 and "assumed" in control["cost"]["cost_basis"]


def test_cluster_without_host_facts_is_an_error():
    with pytest.raises(mp.MemoryPolicyError, match=r"facts_cluster\[h1\] has no host facts"):
        mp.cluster_controls({"h1": {"guests": {}}})


def test_bare_host_info_facts_are_accepted():
    with open(os.path.join(CASES_DIR, "pressure_thresholds.json")) as handle:
        case = json.load(handle)[0]
    bare = dict(case["host"]["host"], hostname="kvm1")
    result = mp.balloon_controls(bare, case["host"]["guests"])
    # no declared capacity in a bare host_info dict: only the meminfo view (75 % free)
    assert result["pressure"]["binding"] == "meminfo" and result["pressure"]["state"] == "relief"
    assert result["host"] == "kvm1"


# ---------------------------------------------------------------- docs

def documented_constants():
    """``{NAME: value text}`` from the constants tables of docs/memory-policy.md (first two columns)."""
    rows = {}
    with open(DOC) as handle:
        for line in handle:
            found = re.match(r"^\|\s*`([A-Z][A-Z0-9_]+)`\s*\|\s*([^|]*)\|", line)
            if found:
                rows[found.group(1)] = found.group(2).strip()
    return rows


def module_constants():
    return dict((name, value) for name, value in vars(mp).items()
                if re.match(r"^[A-Z][A-Z0-9_]+$", name) and isinstance(value, (int, float, str, tuple, dict)))


def test_every_constant_is_documented_with_its_value():
    documented = documented_constants()
    constants = module_constants()
    assert len(constants) >= 30
    missing = sorted(set(constants) - set(documented))
    assert not missing, "not in docs/memory-policy.md: %s" % ", ".join(missing)
    for name, value in constants.items():
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            continue
        text = documented[name].replace("`", "").replace(",", "").replace("\u202f", "").strip()
        number = re.match(r"^-?[0-9.eE+-]+", text)
        assert number, "%s: no value in the docs row (%r)" % (name, documented[name])
        assert float(number.group(0)) == float(value), "%s: docs say %s, code has %r" % (name, number.group(0), value)


def test_docs_do_not_document_constants_that_do_not_exist():
    stale = sorted(set(documented_constants()) - set(module_constants()))
    assert not stale, "docs/memory-policy.md documents unknown constants: %s" % ", ".join(stale)


def test_every_option_is_documented():
    with open(DOC) as handle:
        text = handle.read()
    for option in mp.DEFAULT_OPTIONS:
        assert "`%s`" % option in text, option


# ---------------------------------------------------------------- the filter

def test_filter_takes_the_cluster_or_one_entry_and_reports_bad_options():
    from ansible.errors import AnsibleFilterError
    from ansible_collections.autopilot.kvm.plugins.filter.memory_controls import FilterModule
    memory_controls = FilterModule().filters()["memory_controls"]
    with open(os.path.join(CASES_DIR, "guarantees.json")) as handle:
        case = json.load(handle)[0]
    cluster = {"kvm7": case["host"]}
    per_host = memory_controls(cluster, guarantees=case["guarantees"])
    assert sorted(per_host) == ["kvm7"]
    (control,) = per_host["kvm7"]["controls"]
    assert (control["host"], control["vm"], control["target_mib"]) == ("kvm7", "g1", 3500)
    single = memory_controls(case["host"], guarantees=case["guarantees"])
    assert single["controls"][0]["target_mib"] == 3500 and single["host"] == "kvm1"
    with pytest.raises(AnsibleFilterError, match="memory_controls: unknown memory policy option"):
        memory_controls(cluster, options={"nope": 1})
    with pytest.raises(AnsibleFilterError, match="must be facts_cluster"):
        memory_controls(["kvm7"])
