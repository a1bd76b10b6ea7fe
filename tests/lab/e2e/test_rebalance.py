"""The main job end to end: four guests on h1, h1 over its ceiling, `autopilot.kvm.rebalance`.

The tests run in file order and share the lab: check mode first (nothing moves), then the real
run (guests spread live, none lost or duplicated), then a second run (changed=0), then bad input
(clear failure, nothing changes).
"""

from __future__ import annotations

import json

import pytest

from conftest import placement_map, run_playbook

GUESTS = ["vm1", "vm2", "vm3", "vm4"]
GUEST_MIB = 256
# inventories/lab/group_vars: capacity 1024 MiB per host, memory ceiling 60 %
CAPACITY_MIB = 1024
CEILING_PCT = 60
# other tests run guests of their own on the lab at the same time: leave those where they are
MANAGED = json.dumps({"plan_managed_guests": "vm[0-9]+"})


@pytest.fixture(scope="module")
def four_on_h1(lab):
    lab.cleanup("vm")
    lab.start("h1", len(GUESTS), prefix="vm")
    placed = placement_map(lab, "vm")
    assert placed == dict((g, ["h1"]) for g in GUESTS)
    ticks = dict((g, lab.wait_tick("h1", g)) for g in GUESTS)
    return ticks


def test_check_mode_shows_the_plan_and_moves_nothing(lab, four_on_h1):
    run = run_playbook("autopilot.kvm.rebalance", "-e", MANAGED, "--check", "--diff", log="rebalance-check")
    assert run.returncode == 0, run.output[-3000:]
    assert "because h1 mem" in run.output  # each step is shown with its reason
    assert placement_map(lab, "vm") == dict((g, ["h1"]) for g in GUESTS)


def test_rebalance_spreads_guests_live_and_loses_none(lab, four_on_h1):
    run = run_playbook("autopilot.kvm.rebalance", "-e", MANAGED, log="rebalance-1")
    assert run.returncode == 0, run.output[-3000:]
    placed = placement_map(lab, "vm")
    # every guest runs exactly once across the cluster
    assert sorted(placed) == GUESTS
    assert all(len(hosts) == 1 for hosts in placed.values()), placed
    hosts_used = set(hosts[0] for hosts in placed.values())
    assert len(hosts_used) > 1
    # no host above its ceiling
    for host in hosts_used:
        load = 100.0 * GUEST_MIB * sum(1 for hosts in placed.values() if hosts == [host]) / CAPACITY_MIB
        assert load <= CEILING_PCT, (host, load)
    # moved guests kept running: same boot, uptime still increasing on their new host
    moved = [g for g in GUESTS if placed[g] != ["h1"]]
    assert moved
    for guest in moved:
        uptime_before, boot_before = four_on_h1[guest]
        uptime_after, boot_after = lab.wait_tick(placed[guest][0], guest)
        assert boot_after == boot_before, "%s restarted" % guest
        assert uptime_after > uptime_before


def test_second_run_changes_nothing(lab, four_on_h1):
    before = placement_map(lab, "vm")
    run = run_playbook("autopilot.kvm.rebalance", "-e", MANAGED, log="rebalance-2")
    assert run.returncode == 0, run.output[-3000:]
    assert run.recap() and run.total_changed() == 0, run.recap()
    assert placement_map(lab, "vm") == before


@pytest.mark.parametrize("extra, message", [
    ({"plan_ceilings": {"h9": {"memory_pct": 50}}}, "unknown host(s) 'h9'"),
    ({"plan_default_ceiling": {"memory_pct": -10, "cpu_pct": 90}}, "memory_pct must be a percentage above 0"),
    ({"facts_libvirt_uri": "qemu:///system?socket=/nonexistent/libvirt-sock"}, "Cannot connect to libvirt at qemu:///system?socket=/nonexistent"),
])
def test_bad_input_fails_clearly_and_changes_nothing(lab, four_on_h1, extra, message):
    before = placement_map(lab, "vm")
    run = run_playbook("autopilot.kvm.rebalance", "-e", MANAGED, "-e", json.dumps(extra), log="rebalance-bad")
    assert run.returncode != 0
    assert message in run.output, run.output[-3000:]
    assert "Traceback" not in run.output
    assert placement_map(lab, "vm") == before
