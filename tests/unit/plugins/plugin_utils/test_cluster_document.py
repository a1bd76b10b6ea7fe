"""Facts + ceilings -> planner document, and its validation of bad input."""

from __future__ import annotations

import pytest

from ansible_collections.autopilot.kvm.plugins.plugin_utils.cluster_document import (
    ClusterDocumentError,
    UNMEASURED_CPU_MILLICORES_PER_VCPU,
    build_document,
    placement,
)
from ansible_collections.autopilot.kvm.plugins.plugin_utils.planner.api import plan_document
from ansible_collections.autopilot.kvm.plugins.plugin_utils.planner.validate import check_plan


def guest(name, mib=256, cpu=3.0, state="running", balloon_mib=None):
    facts = {"name": name, "state": state, "active": state == "running", "vcpus": 1,
             "memory": {"max_mib": mib, "current_mib": mib}, "rates": {"cpu_percent": cpu}}
    if balloon_mib is not None:
        facts["balloon"] = {"actual": balloon_mib * 1024}
    return facts


def cluster(**hosts):
    return dict((name, {"host": {}, "capacity": {"cpus": 2, "memory_mib": 1024},
                        "guests": dict((g["name"], g) for g in guests)})
                for name, guests in hosts.items())


def test_guests_become_vms_with_demand_in_planner_units():
    doc = build_document(cluster(h1=[guest("a", cpu=12.5, balloon_mib=200)], h2=[]))
    assert doc["resources"] == ["cpu", "mem"]
    (vm,) = doc["vms"]
    assert vm == {"id": "a", "dem": {"cpu": 125, "mem": 200}, "vcpu": 1, "mem_alloc_mib": 256,
                  "dirty_mbps": vm["dirty_mbps"], "host": "h1", "requires": []}
    assert [h["cap"] for h in doc["hosts"]] == [{"cpu": 2000, "mem": 1024}] * 2


def test_guest_without_a_cpu_rate_counts_as_a_pessimistic_idle_figure():
    g = guest("a")
    g["rates"] = None
    doc = build_document(cluster(h1=[g]))
    assert doc["vms"][0]["dem"]["cpu"] == UNMEASURED_CPU_MILLICORES_PER_VCPU


def test_stopped_guests_take_no_room():
    doc = build_document(cluster(h1=[guest("a"), guest("b", state="shutoff")]))
    assert [vm["id"] for vm in doc["vms"]] == ["a"]


def test_declared_capacity_wins_over_facts_and_facts_fill_in():
    c = cluster(h1=[], h2=[])
    c["h2"]["capacity"] = {}
    c["h2"]["host"] = {"node": {"cpus": 8}, "memory": {"total_mib": 16000}}
    doc = build_document(c)
    assert doc["hosts"][0]["cap"] == {"cpu": 2000, "mem": 1024}
    assert doc["hosts"][1]["cap"] == {"cpu": 8000, "mem": 16000}


def test_ceilings_become_hard_expectations_grouped_by_value():
    doc = build_document(cluster(h1=[], h2=[], h3=[]), default_ceiling={"memory_pct": 80, "cpu_pct": 90},
                         ceilings={"h3": {"memory_pct": 50}})
    mem = sorted((e["max_pct"], e["hosts"]) for e in doc["expectations"] if e["resource"] == "mem")
    cpu = [(e["max_pct"], e["hosts"]) for e in doc["expectations"] if e["resource"] == "cpu"]
    assert mem == [(50, ["h3"]), (80, ["h1", "h2"])]
    assert cpu == [(90, ["h1", "h2", "h3"])]
    assert all(e["hard"] and e["type"] == "ceiling" for e in doc["expectations"])


@pytest.mark.parametrize("kwargs, message", [
    (dict(ceilings={"h9": {"memory_pct": 50}}), "unknown host(s) 'h9'; the hosts are: h1, h2"),
    (dict(ceilings={"h1": {"memory_pct": -5}}), "ceilings.h1.memory_pct must be a percentage above 0 and at most 100, got -5"),
    (dict(default_ceiling={"cpu_pct": 150}), "default_ceiling.cpu_pct must be a percentage above 0 and at most 100, got 150"),
    (dict(ceilings={"h1": {"memory": 50}}), "ceilings.h1 has unknown key(s) memory"),
    (dict(ceilings={"h1": {"memory_pct": "lots"}}), "ceilings.h1.memory_pct must be a number"),
    (dict(ceilings=["h1"]), "ceilings must be a mapping"),
])
def test_bad_ceilings_are_named_in_the_error(kwargs, message):
    with pytest.raises(ClusterDocumentError) as error:
        build_document(cluster(h1=[], h2=[]), **kwargs)
    assert message in str(error.value)


def test_a_guest_running_twice_is_an_error_not_a_plan():
    with pytest.raises(ClusterDocumentError, match="guest 'a' runs on h1 and h2; resolve that before planning"):
        build_document(cluster(h1=[guest("a")], h2=[guest("a")]))


def test_a_guest_in_migration_counts_on_both_hosts_and_stays_put():
    incoming = guest("a", state="paused")
    doc = build_document(cluster(h1=[guest("a"), guest("b")], h2=[incoming], h3=[]))
    by_id = dict((vm["id"], vm) for vm in doc["vms"])
    assert by_id["a"]["host"] == "h1" and by_id["a@h2"]["host"] == "h2"
    assert by_id["a@h2"]["dem"]["mem"] == 256
    fences = dict((e["id"], e["hosts"]) for e in doc["expectations"] if e["type"] == "fence")
    assert fences == {"migrating-a": ["h1"], "migrating-a@h2": ["h2"]}


def test_no_hosts_is_an_error():
    with pytest.raises(ClusterDocumentError, match="no hosts"):
        build_document({})


def test_missing_capacity_is_an_error_naming_the_host():
    c = cluster(h1=[])
    c["h1"]["capacity"] = {}
    with pytest.raises(ClusterDocumentError, match="host 'h1': no CPU or memory capacity"):
        build_document(c)


def test_placement_reports_guests_and_load_for_an_assignment():
    doc = build_document(cluster(h1=[guest("a"), guest("b", mib=512)], h2=[]))
    before = placement(doc)
    after = placement(doc, {"b": "h2"})
    assert before["h1"]["guests"] == ["a", "b"] and before["h1"]["load_pct"]["mem"] == 75.0
    assert after["h1"]["guests"] == ["a"] and after["h2"]["guests"] == ["b"]
    assert after["h2"]["load_pct"]["mem"] == 50.0


def test_unmanaged_guests_are_pinned_where_they_run():
    doc = build_document(cluster(h1=[guest("vm1"), guest("db1")], h2=[]), managed_guests="vm.*")
    fences = [e for e in doc["expectations"] if e["type"] == "fence"]
    assert fences == [{"id": "unmanaged-db1", "type": "fence", "vms": ["db1"], "hosts": ["h1"], "hard": True}]
    assert [vm["id"] for vm in doc["vms"]] == ["db1", "vm1"]


def test_a_bad_managed_guests_pattern_is_named():
    with pytest.raises(ClusterDocumentError, match="managed_guests is not a valid regular expression"):
        build_document(cluster(h1=[]), managed_guests="vm[")


def test_metadata_declarations_become_expectations():
    a, b, c = guest("a"), guest("b"), guest("c")
    a["expectations"] = [{"type": "anti_affinity", "group": "web", "hard": True}, {"type": "memory_guarantee", "min_mib": 128}]
    b["expectations"] = [{"type": "anti_affinity", "group": "web", "hard": True}, {"type": "ban", "hosts": ["h2"]}]
    c["expectations"] = [{"type": "anti_affinity", "group": "lonely"}]
    doc = build_document(cluster(h1=[a, b], h2=[c]))
    meta = [e for e in doc["expectations"] if e["id"].startswith("meta-")]
    assert {"id": "meta-anti_affinity-web", "type": "anti_affinity", "hard": True, "vms": ["a", "b"]} in meta
    assert {"id": "meta-a-memory_guarantee-1", "type": "memory_guarantee", "min_mib": 128, "vm": "a"} in meta
    assert {"id": "meta-b-ban-1", "type": "ban", "hosts": ["h2"], "vms": ["b"]} in meta
    assert not any("lonely" in e["id"] for e in meta)


def test_inconsistent_or_unreadable_declarations_are_named():
    a, b = guest("a"), guest("b")
    a["expectations"] = [{"type": "affinity", "group": "db", "hard": True}]
    b["expectations"] = [{"type": "affinity", "group": "db", "hard": False}]
    with pytest.raises(ClusterDocumentError, match="'a' and 'b' declare affinity group 'db' differently"):
        build_document(cluster(h1=[a, b]))
    b["expectations"] = [{"type": "affinity"}]
    with pytest.raises(ClusterDocumentError, match="guest 'b': metadata affinity expectation needs a 'group'"):
        build_document(cluster(h1=[b]))
    b["expectations"], b["expectations_error"] = [], "metadata expectations are not valid JSON: boom"
    with pytest.raises(ClusterDocumentError, match="guest 'b' on h1: metadata expectations are not valid JSON"):
        build_document(cluster(h1=[b]))


def test_balloon_statistics_give_used_memory_to_the_planner():
    idle = guest("idle", mib=256, balloon_mib=256)
    idle["balloon"].update(usable=196 * 1024, unused=150 * 1024)
    nostats = guest("nostats", mib=256, balloon_mib=256)
    paused = guest("paused", mib=256, state="paused", balloon_mib=256)
    paused["balloon"]["usable"] = 100 * 1024
    other = guest("other", mib=256, balloon_mib=256)
    other["balloon"]["unused"] = 100 * 1024
    doc = build_document(cluster(h1=[idle, nostats, paused, other]), managed_guests="idle|nostats|paused")
    by_id = dict((vm["id"], vm) for vm in doc["vms"])
    assert by_id["idle"]["mem_used_mib"] == 60 and by_id["idle"]["mem_max_mib"] == 256
    assert "mem_used_mib" not in by_id["nostats"]          # unknown: never ballooned
    assert "mem_used_mib" not in by_id["paused"]           # its balloon driver does not run
    assert "mem_used_mib" not in by_id["other"]            # not managed: load only


def test_ksm_facts_become_the_hosts_ksm_mapping():
    facts = cluster(h1=[guest("a", balloon_mib=256)], h2=[], h3=[])
    facts["h1"]["host"]["ksm"] = {"available": True, "run": 1, "settings": {"run": 1},
                                  "counters": {"pages_sharing": 25600, "pages_shared": 100, "full_scans": 3},
                                  "sharing_bytes": 25600 * 4096}
    facts["h2"]["host"]["ksm"] = {"available": True, "run": 0, "settings": {"run": 0}, "counters": {}}
    facts["h3"]["host"]["ksm"] = {"available": False}
    doc = build_document(facts)
    h1, h2, h3 = doc["hosts"]
    assert without_scan(h1["ksm"]) == {"available": True, "run": 1, "pages_sharing": 25600, "pages_shared": 100,
                                       "page_size": 4096, "estimated_saving_mib": 100}
    assert without_scan(h2["ksm"]) == {"available": True, "run": 0}
    assert "ksm" not in h3


SCAN_KEYS = ("pages_to_scan", "sleep_millisecs", "scan_reason")


def without_scan(ksm):
    return dict((k, v) for k, v in ksm.items() if k not in SCAN_KEYS)


def ksm_estimate(saving_mib, guests=("a", "b"), read_mib=1536.0, reason=None):
    """host.ksm.estimate as host_info returns it (only the keys the document reads matter)."""
    return {"pages_sharing": None if saving_mib is None else saving_mib * 256, "saving_mib": saving_mib,
            "guests": list(guests), "read_mib": read_mib, "budget_mib": 4096, "reason": reason,
            "method": "page hashes of mergeable guest memory (smaps mg + pagemap present)"}


def test_page_hash_estimate_becomes_the_hosts_ksm_saving():
    facts = cluster(h1=[guest("a")], h2=[], h3=[], h4=[], h5=[])
    facts["h1"]["host"]["ksm"] = {"available": True, "run": 0, "settings": {"run": 0}, "counters": {},
                                  "estimate": ksm_estimate(300)}
    # KSM runs: the measure (100 MiB) and the estimate (300 MiB) both go to the planner, which credits the larger
    facts["h2"]["host"]["ksm"] = {"available": True, "run": 1, "settings": {"run": 1},
                                  "counters": {"pages_sharing": 25600, "pages_shared": 100, "full_scans": 3},
                                  "sharing_bytes": 25600 * 4096, "estimate": ksm_estimate(300)}
    # no estimate (over the budget): nothing measured either, the planner assumes its share
    facts["h3"]["host"]["ksm"] = {"available": True, "run": 0, "settings": {"run": 0}, "counters": {},
                                  "estimate": ksm_estimate(None, reason="6144 MiB ... over the budget of 4096 MiB")}
    # stopped with pages still merged: the page hashes count them too, and win over the partial measure
    facts["h4"]["host"]["ksm"] = {"available": True, "run": 0, "settings": {"run": 0},
                                  "counters": {"pages_sharing": 2560, "full_scans": 0}, "sharing_bytes": 2560 * 4096,
                                  "estimate": ksm_estimate(40, guests=["a"], read_mib=0.05)}
    facts["h5"]["host"]["ksm"] = {"available": True, "run": 2, "settings": {"run": 2}, "counters": {},
                                  "estimate": ksm_estimate(0, guests=[], read_mib=0.0)}
    h1, h2, h3, h4, h5 = build_document(facts)["hosts"]
    assert without_scan(h1["ksm"]) == {"available": True, "run": 0, "estimated_saving_mib": 300,
                                       "estimate_basis": "estimated from page hashes (2 guests, 1536 MiB read)"}
    assert without_scan(h2["ksm"]) == {"available": True, "run": 1, "pages_sharing": 25600, "pages_shared": 100,
                                       "page_size": 4096, "estimated_saving_mib": 300,
                                       "estimate_basis": "estimated from page hashes (2 guests, 1536 MiB read)"}
    assert without_scan(h3["ksm"]) == {"available": True, "run": 0}
    assert h4["ksm"]["estimated_saving_mib"] == 40
    assert h4["ksm"]["estimate_basis"] == "estimated from page hashes (1 guest, 0.05 MiB read)"
    assert h5["ksm"]["estimate_basis"] == "estimated from page hashes (0 guests, 0 MiB read)"


def test_the_ksm_step_says_its_saving_was_estimated_from_page_hashes():
    # h1: 3 busy guests of 256 MiB = 75 % of 1024 MiB, over its 60 % ceiling by 154 MiB; no balloon statistics.
    facts = cluster(h1=[guest("g1"), guest("g2"), guest("g3")], h2=[])
    facts["h1"]["host"]["ksm"] = {"available": True, "run": 0, "settings": {"run": 0}, "counters": {},
                                  "estimate": ksm_estimate(200, guests=["g1", "g2", "g3"], read_mib=700.0)}
    doc = build_document(facts, ceilings={"h1": {"memory_pct": 60}},
                         options={"balance_threshold_pct": 100.0, "memory_overcommit": True})
    res = plan_document(doc)
    assert check_plan(doc, res) == []
    ksm = [s for s in res["steps"] if s["kind"] == "ksm"]
    assert [(s["host"], s["enable"]) for s in ksm] == [("h1", True)], res["explain"]
    assert ksm[0]["predicted"] == {"memory_saved_mib": 200,
                                   "basis": "estimated from page hashes (3 guests, 700 MiB read)"}
    # the step sets the scan rate the memory policy derives, and says why
    assert ksm[0]["pages_to_scan"] == doc["hosts"][0]["ksm"]["pages_to_scan"]
    assert ksm[0]["sleep_millisecs"] == doc["hosts"][0]["ksm"]["sleep_millisecs"]
    assert "pages/s scans 768 MiB in 600 s" in ksm[0]["reason"]["text"]
    assert [s for s in res["steps"] if s["kind"] == "migrate"] == []

    # measured sharing (KSM stopped after merging) keeps its own basis
    facts["h1"]["host"]["ksm"] = {"available": True, "run": 0, "settings": {"run": 0},
                                  "counters": {"pages_sharing": 51200, "full_scans": 2}, "sharing_bytes": 51200 * 4096}
    doc = build_document(facts, ceilings={"h1": {"memory_pct": 60}},
                         options={"balance_threshold_pct": 100.0, "memory_overcommit": True})
    ksm = [s for s in plan_document(doc)["steps"] if s["kind"] == "ksm"]
    assert ksm[0]["predicted"] == {"memory_saved_mib": 200, "basis": "measured pages_sharing"}


def test_estimate_basis_must_be_text():
    facts = cluster(h1=[guest("a")])
    facts["h1"]["host"]["ksm"] = {"available": True, "run": 0, "settings": {"run": 0}, "counters": {},
                                  "estimate": ksm_estimate(10)}
    doc = build_document(facts)
    doc["hosts"][0]["ksm"]["estimate_basis"] = 12
    with pytest.raises(ValueError, match=r"^hosts\[0\]\(h1\)\.ksm\.estimate_basis: expected a string, got 12"):
        plan_document(doc)


def test_idle_guests_from_facts_are_ballooned_by_the_planner():
    guests = []
    for name in ("m1", "m2", "m3"):
        g = guest(name, mib=256, balloon_mib=256)
        g["balloon"]["usable"] = 190 * 1024
        guests.append(g)
    doc = build_document(cluster(h1=guests, h2=[]), ceilings={"h1": {"memory_pct": 60}},
                         options={"balance_threshold_pct": 100.0})
    res = plan_document(doc)
    assert check_plan(doc, res) == []
    assert [s["kind"] for s in res["steps"]] == ["balloon"] * 3
    assert sum(256 - s["target_mib"] for s in res["steps"]) >= 768 - 614


def test_ksm_hosts_marks_the_other_hosts_ksm_as_not_managed():
    facts = cluster(h1=[], h2=[])
    for name in ("h1", "h2"):
        facts[name]["host"]["ksm"] = {"available": True, "run": 1, "settings": {"run": 1}, "counters": {}}
    h1, h2 = build_document(facts, ksm_hosts="h2")["hosts"]
    assert h1["ksm"]["managed"] is False and "managed" not in h2["ksm"]
    with pytest.raises(ClusterDocumentError, match="ksm_hosts is not a valid regular expression"):
        build_document(facts, ksm_hosts="h[")


def test_the_ksm_scan_rate_follows_the_memory_policy_and_its_options():
    facts = cluster(h1=[guest("a"), guest("b")])
    facts["h1"]["host"]["ksm"] = {"available": True, "run": 0, "settings": {"run": 0}, "counters": {}}
    slow = build_document(facts)["hosts"][0]["ksm"]
    # 512 MiB of guests in 600 s = 219 pages/s: below 64 pages per 20 ms, so 64 pages and a longer sleep
    assert slow["pages_to_scan"] * 1000.0 / slow["sleep_millisecs"] <= 219
    assert "scans 512 MiB in 600 s" in slow["scan_reason"]
    fast = build_document(facts, ksm_policy={"ksm_full_scan_s": 10})["hosts"][0]["ksm"]
    assert fast["pages_to_scan"] * 1000.0 / fast["sleep_millisecs"] > 10 * slow["pages_to_scan"] * 1000.0 / slow["sleep_millisecs"]
    with pytest.raises(ClusterDocumentError, match="KSM scan rate for h1: option ksm_full_scan_s"):
        build_document(facts, ksm_policy={"ksm_full_scan_s": 0})
