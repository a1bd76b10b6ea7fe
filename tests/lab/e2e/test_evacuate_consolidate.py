"""evacuate empties a host live; consolidate frees a host; both converge (second run changed=0);
an impossible request (anti-affinity of 4 guests over 3 hosts) fails naming the expectation and
changes nothing."""

from __future__ import annotations

import json

import pytest

from conftest import placement_map, run_playbook

GUESTS = ["vm1", "vm2", "vm3"]
# Guests of other tests may share the lab: leave them where they are. An 80 % memory ceiling
# (819 of 1024 MiB) lets one host take three 256 MiB guests.
MANAGED = json.dumps({"plan_managed_guests": "vm[0-9]+", "plan_default_ceiling": {"memory_pct": 80, "cpu_pct": 90}})


@pytest.fixture(scope="module")
def spread(lab):
    """vm1 on h1, vm2 and vm3 on h2: three guests, two hosts used."""
    lab.cleanup("vm")
    lab.start("h1", 1, prefix="vm")
    conn = lab.connect("h2")
    try:
        for name in ("vm2", "vm3"):
            lab.boot(conn, "h2", name)
    finally:
        conn.close()
    assert placement_map(lab, "vm") == {"vm1": ["h1"], "vm2": ["h2"], "vm3": ["h2"]}
    yield
    lab.cleanup("vm")


def assert_each_runs_once(placed):
    assert sorted(placed) == GUESTS
    assert all(len(hosts) == 1 for hosts in placed.values()), placed


def test_evacuate_empties_the_host_live(lab, spread):
    ticks = dict((g, lab.wait_tick("h2", g)) for g in ("vm2", "vm3"))
    run = run_playbook("autopilot.kvm.evacuate", "-e", MANAGED, "-e", "evacuate_host=h2", log="evacuate-1")
    assert run.returncode == 0, run.output[-3000:]
    assert "h2 runs no guest" in run.output
    placed = placement_map(lab, "vm")
    assert_each_runs_once(placed)
    assert all(hosts != ["h2"] for hosts in placed.values()), placed
    for guest in ("vm2", "vm3"):
        uptime, boot = lab.wait_tick(placed[guest][0], guest)
        assert boot == ticks[guest][1] and uptime > ticks[guest][0], "%s restarted" % guest


def test_evacuate_again_changes_nothing(lab, spread):
    before = placement_map(lab, "vm")
    run = run_playbook("autopilot.kvm.evacuate", "-e", MANAGED, "-e", "evacuate_host=h2", log="evacuate-2")
    assert run.returncode == 0, run.output[-3000:]
    assert run.total_changed() == 0, run.recap()
    assert placement_map(lab, "vm") == before


def test_evacuate_needs_a_known_host(lab, spread):
    before = placement_map(lab, "vm")
    run = run_playbook("autopilot.kvm.evacuate", "-e", MANAGED, "-e", "evacuate_host=h9", log="evacuate-bad")
    assert run.returncode != 0
    assert "Set evacuate_host to the inventory name of the host to empty" in run.output
    assert placement_map(lab, "vm") == before


def test_consolidate_frees_a_host(lab, spread):
    before = placement_map(lab, "vm")
    used_before = set(h[0] for h in before.values())
    run = run_playbook("autopilot.kvm.consolidate", "-e", MANAGED, log="consolidate-1")
    assert run.returncode == 0, run.output[-3000:]
    placed = placement_map(lab, "vm")
    assert_each_runs_once(placed)
    used_after = set(h[0] for h in placed.values())
    assert len(used_after) < len(used_before), (before, placed)
    assert "Empty now (may be switched off): none" not in run.output
    assert "Empty now (may be switched off): h" in run.output


def test_consolidate_again_changes_nothing(lab, spread):
    before = placement_map(lab, "vm")
    run = run_playbook("autopilot.kvm.consolidate", "-e", MANAGED, log="consolidate-2")
    assert run.returncode == 0, run.output[-3000:]
    assert run.total_changed() == 0, run.recap()
    assert placement_map(lab, "vm") == before


def test_impossible_anti_affinity_fails_naming_it_and_changes_nothing(lab, spread):
    lab.start("h1", 4, prefix="vm")  # vm4 joins
    before = placement_map(lab, "vm")
    extra = {"plan_expectations": [{"id": "web-apart", "type": "anti_affinity",
                                    "vms": ["vm1", "vm2", "vm3", "vm4"], "hard": True}]}
    run = run_playbook("autopilot.kvm.rebalance", "-e", MANAGED, "-e", json.dumps(extra), log="infeasible")
    assert run.returncode != 0
    assert "No plan can meet every hard expectation; nothing was changed" in run.output
    assert "web-apart" in run.output
    assert placement_map(lab, "vm") == before
    lab.cleanup("vm4")
