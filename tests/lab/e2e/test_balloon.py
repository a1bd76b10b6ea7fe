"""autopilot.kvm.balloon on a real QEMU guest: 256 MiB -> 160 MiB -> 256 MiB, seen inside the guest.

The playbook (playbooks/balloon.yml) does the Ansible side of each phase: check mode, real run,
repeat, guest_info, diff, and a refused request. This file checks what the guest itself saw: its
MemTotal (GUEST-MEM lines on the serial console) drops by the 96 MiB taken and comes back.
Only guest bal1 on h3 is used, and it is removed at the end.
"""

from __future__ import annotations

import re

import pytest

from conftest import MEM_TOTAL_RE, run_playbook, wait_mem_total_kib

HOST = "h3"
GUEST = "bal1"
PLAYBOOK = "tests/lab/e2e/playbooks/balloon.yml"
TOLERANCE_KIB = 8 * 1024
WAIT_RE = re.compile(r"balloon_wait_s=([0-9.]+) used_kib=(\S*)")


@pytest.fixture(scope="module")
def bal_guest(lab):
    lab.cleanup("bal")
    boot_at = lab.serial_size(HOST, GUEST)  # the serial log is appended to across boots
    lab.start(HOST, 1, prefix="bal", mem_mib=256)
    yield boot_at
    lab.cleanup("bal")


def wait_mem_total(lab, start_at, expected_kb, timeout=20):
    """The guest's MemTotal once where it settles (a balloon moving in steps can show an intermediate value)."""
    return wait_mem_total_kib(HOST, GUEST, start_at, expected_kb, TOLERANCE_KIB, timeout)


def live_kib(lab):
    conn = lab.connect(HOST)
    try:
        return conn.lookupByName(GUEST).info()[2]
    finally:
        conn.close()


def run_phase(lab, phase):
    start_at = lab.serial_size(HOST, GUEST)
    run = run_playbook(PLAYBOOK, "-e", "bal_phase=%s" % phase, log="balloon-%s" % phase)
    assert run.returncode == 0, run.output[-4000:]
    recap = run.recap()
    assert list(recap) == [HOST], recap
    # check mode and the real run report a change; the repeat and the refused request do not
    assert recap[HOST]["changed"] == 2 and recap[HOST]["failed"] == 0, recap
    wait = WAIT_RE.search(run.output)
    assert wait, run.output[-2000:]
    print("%s: balloon reached the target after %s s (wall of the play %s s)" % (phase, wait.group(1), run.wall_s))
    return start_at


def test_shrink_to_160_then_grow_back_seen_inside_the_guest(lab, bal_guest):
    initial = int(lab.wait_serial(HOST, GUEST, MEM_TOTAL_RE, timeout=30, start_at=bal_guest).group(1))
    assert live_kib(lab) == 256 * 1024

    # the guest loses the 96 MiB the balloon took ...
    start_at = run_phase(lab, "shrink")
    shrunk = wait_mem_total(lab, start_at, initial - 96 * 1024)
    assert all(value < initial for value in shrunk), shrunk
    assert abs(live_kib(lab) - 160 * 1024) <= TOLERANCE_KIB

    # ... and gets it back
    start_at = run_phase(lab, "grow")
    grown = wait_mem_total(lab, start_at, initial)
    assert all(value > shrunk[-1] for value in grown), grown
    assert live_kib(lab) == 256 * 1024
    print("guest MemTotal kB: %d -> %s -> %s" % (initial, shrunk, grown))
    # the guest lived through both: same boot, ticking on
    assert lab.wait_tick(HOST, GUEST)[0] > 0
