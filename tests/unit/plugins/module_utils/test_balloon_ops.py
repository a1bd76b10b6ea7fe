# -*- coding: utf-8 -*-
# Copyright: autopilot.kvm contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""Unit tests of the balloon arithmetic and refusal rules (pure, no libvirt)."""

from __future__ import annotations

import pytest

from ansible_collections.autopilot.kvm.plugins.module_utils import _balloon as b

MIB = 1024
# A 256 MiB guest as the lab's reports it: MemTotal 205.8 MiB, MemAvailable 190 MiB, MemFree 180 MiB.
STATS = {"actual": 256 * MIB, "available": 210756, "usable": 190 * MIB, "unused": 180 * MIB, "rss": 90000}


def test_target_from_mib_or_kib():
    assert b.target_kib(memory_mib=160) == 163840
    assert b.target_kib(memory_kib=163841) == 163841
    with pytest.raises(b.BalloonError, match="exactly one"):
        b.target_kib(memory_mib=1, memory_kib=1024)
    with pytest.raises(b.BalloonError, match="exactly one"):
        b.target_kib()
    with pytest.raises(b.BalloonError, match="must be positive"):
        b.target_kib(memory_mib=0)


def test_within_tolerance_is_inclusive():
    assert b.within(163840 + 8 * MIB, 163840, 8 * MIB)
    assert not b.within(163840 + 8 * MIB + 1, 163840, 8 * MIB)
    assert b.within(163840 - 8 * MIB, 163840, 8 * MIB)
    assert not b.within(None, 163840, 8 * MIB)


def test_used_is_actual_minus_usable():
    used, rule = b.used_memory(STATS)
    assert used == 66 * MIB
    assert rule.startswith("actual - usable")


def test_used_falls_back_to_memfree():
    stats = dict(STATS)
    del stats["usable"]
    used, rule = b.used_memory(stats)
    assert used == 76 * MIB
    assert rule.startswith("actual - unused")


@pytest.mark.parametrize("stats, why", [
    ({}, "no balloon statistics"),
    (None, "no balloon statistics"),
    ({"actual": 262144, "rss": 1}, "neither 'usable' nor 'unused'"),
])
def test_used_unknown(stats, why):
    used, rule = b.used_memory(stats)
    assert used is None
    assert why in rule


def test_statistics_from_before_the_last_balloon_change_are_not_trusted():
    # The balloon went from 256 to 160 MiB; the guest's last report (MemAvailable 190 MiB) is from before it.
    stale = dict(STATS, actual=160 * MIB)
    used, rule = b.used_memory(stale)
    assert used is None and "predate its last balloon change" in rule
    with pytest.raises(b.BalloonError, match="from 160 MiB to 64 MiB: the guest's statistics predate .* so what it "
                                             "uses cannot be checked"):
        b.check_request(64 * MIB, 256 * MIB, live_kib=160 * MIB, stats=stale, shrink_live=True)
    info = b.check_request(64 * MIB, 256 * MIB, live_kib=160 * MIB, stats=stale, shrink_live=True, force=True)
    assert info["used_kib"] is None and "predate" in info["warnings"][0]


def test_config_memory_units():
    xml = ("<domain><memory unit='MiB'>256</memory><currentMemory unit='KiB'>163840</currentMemory>"
           "</domain>")
    assert b.parse_config_memory(xml) == (163840, 262144)
    assert b.parse_config_memory("<domain><memory unit='GiB'>1</memory></domain>") == (1048576, 1048576)
    with pytest.raises(b.BalloonError, match="Cannot parse"):
        b.parse_config_memory("<domain>")
    with pytest.raises(b.BalloonError, match="Unknown memory unit"):
        b.parse_config_memory("<domain><memory unit='parsec'>1</memory></domain>")


def test_shrink_above_used_plus_margin_is_accepted():
    info = b.check_request(160 * MIB, 256 * MIB, live_kib=256 * MIB, stats=STATS, shrink_live=True)
    assert info["used_kib"] == 66 * MIB
    assert info["floor_kib"] == 98 * MIB  # 66 used + 32 margin
    assert info["warnings"] == []


def test_shrink_below_used_plus_margin_is_refused_with_the_numbers():
    with pytest.raises(b.BalloonError) as caught:
        b.check_request(90 * MIB, 256 * MIB, live_kib=256 * MIB, stats=STATS, shrink_live=True)
    message = str(caught.value)
    assert "from 256 MiB to 90 MiB" in message
    assert "uses 66 MiB" in message
    assert "needs 98 MiB" in message
    assert "32 MiB margin" in message


def test_margin_is_configurable():
    info = b.check_request(90 * MIB, 256 * MIB, live_kib=256 * MIB, stats=STATS,
                           used_margin_kib=16 * MIB, shrink_live=True)
    assert info["floor_kib"] == 82 * MIB


def test_guarantee_is_a_hard_floor_even_when_growing():
    with pytest.raises(b.BalloonError, match=r"below the guest's guaranteed 200 MiB \(204800 KiB\)"):
        b.check_request(160 * MIB, 256 * MIB, guaranteed_kib=200 * MIB, live_kib=128 * MIB)
    with pytest.raises(b.BalloonError, match="guaranteed"):
        b.check_request(160 * MIB, 256 * MIB, guaranteed_kib=200 * MIB, live_kib=256 * MIB, stats=STATS,
                        force=True, shrink_live=True)
    info = b.check_request(200 * MIB, 256 * MIB, guaranteed_kib=200 * MIB, live_kib=256 * MIB, stats=STATS,
                           shrink_live=True)
    assert info["floor_kib"] == 200 * MIB


def test_above_max_is_refused_when_max_is_given():
    with pytest.raises(b.BalloonError, match="higher than the guest's max memory 256 MiB"):
        b.check_request(300 * MIB, 256 * MIB)
    assert b.check_request(300 * MIB, None)["used_kib"] is None


def test_missing_stats_refuse_a_shrink_unless_forced():
    with pytest.raises(b.BalloonError, match="no balloon statistics.*force: true"):
        b.check_request(160 * MIB, 256 * MIB, live_kib=256 * MIB, stats={}, shrink_live=True)
    info = b.check_request(160 * MIB, 256 * MIB, live_kib=256 * MIB, stats={}, force=True, shrink_live=True)
    assert info["used_kib"] is None
    assert "force: true" in info["warnings"][0]


def test_force_does_not_override_reported_stats():
    with pytest.raises(b.BalloonError, match="uses 66 MiB"):
        b.check_request(64 * MIB, 256 * MIB, live_kib=256 * MIB, stats=STATS, force=True, shrink_live=True)


def test_growing_needs_no_stats():
    info = b.check_request(256 * MIB, 256 * MIB, live_kib=160 * MIB, stats={}, shrink_live=False)
    assert info["warnings"] == [] and info["used_kib"] is None


def test_plan_live_within_tolerance_is_unchanged():
    tracker, set_live, set_config = b.plan(160 * MIB, 8 * MIB, live_kib=160 * MIB + 4096)
    assert not tracker.changed and not set_live and not set_config
    assert tracker.diff() == {"before": {"memory_kib": 167936}, "after": {"memory_kib": 167936}}


def test_plan_live_change():
    tracker, set_live, set_config = b.plan(160 * MIB, 8 * MIB, live_kib=256 * MIB)
    assert tracker.changed and set_live and not set_config
    assert tracker.diff() == {"before": {"memory_kib": 262144}, "after": {"memory_kib": 163840}}


def test_plan_config_is_exact():
    tracker, set_live, set_config = b.plan(160 * MIB, 8 * MIB, live_kib=160 * MIB + 4096,
                                           config_kib=160 * MIB + 4096, want_config=True)
    assert tracker.changed and not set_live and set_config
    assert tracker.changes() == ["config_memory_kib"]


def test_plan_for_a_stopped_guest_only_touches_config():
    tracker, set_live, set_config = b.plan(160 * MIB, 8 * MIB, live_kib=None, config_kib=256 * MIB,
                                           want_config=True)
    assert set_config and not set_live
    assert tracker.diff() == {"before": {"config_memory_kib": 262144}, "after": {"config_memory_kib": 163840}}


class FakeClock:
    def __init__(self):
        self.now = 100.0

    def __call__(self):
        return self.now

    def sleep(self, seconds):
        self.now += seconds


def test_wait_until_reached():
    clock = FakeClock()
    values = iter([262144, 230000, 200000, 165000, 163840])
    reached, value, waited = b.wait_for_target(lambda: next(values), 163840, 8 * MIB, 30,
                                               sleep=clock.sleep, clock=clock)
    assert reached and value == 165000  # within 8 MiB counts
    assert waited == pytest.approx(0.75)


def test_wait_times_out():
    clock = FakeClock()
    reached, value, waited = b.wait_for_target(lambda: 262144, 163840, 8 * MIB, 2,
                                               sleep=clock.sleep, clock=clock)
    assert not reached and value == 262144
    assert waited == pytest.approx(2.0)
