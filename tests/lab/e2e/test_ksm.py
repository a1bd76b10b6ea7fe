"""autopilot.kvm.ksm on the lab: two identical guests share pages once the module turns KSM on.

The playbook (playbooks/ksm.yml) does the Ansible side: check mode, real run, repeat, host_info,
diff, merge_across_nodes changed while pages are shared (the module unmerges first), and the
restore of what it found (in an always: block). This file watches /sys/kernel/mm/ksm and the
guests' /proc/PID/ksm_merging_pages while the playbook runs, and checks every setting is back.
KSM is machine-wide: the playbook restores even when an assertion fails, and a direct sysfs
restore in the fixture is the last safety net. Only guests ksm1 and ksm2 on h3 are used, and removed.
"""

from __future__ import annotations

import os
import re
import threading
import time

import pytest

from conftest import ksm_read, ksm_restore as restore_sysfs, ksm_settings as settings, run_playbook

HOST = "h3"
GUESTS = ["ksm1", "ksm2"]
PLAYBOOK = "tests/lab/e2e/playbooks/ksm.yml"
# Each guest fills FILL_MIB of tmpfs with one repeated pattern. 16 MiB (4096 pages) rather than 96:
# TCG guests fill at about 1 MiB/s when the machine is busy, and the file must stay under ~90 s.
FILL_MIB = 16
FILL_PAGES = FILL_MIB * 256
MIN_SHARING = 10000  # machine-wide pages_sharing the playbook waits for (other guests merge too)


def qemu_pid(lab, guest):
    with open(os.path.join(lab.LAB_DIR, "hosts", HOST, "run", "libvirt", "qemu", guest + ".pid"), encoding="ascii") as handle:
        return int(handle.read().strip())


def merging_pages(pid):
    """How many of this process's pages KSM has merged (/proc/PID/ksm_merging_pages, Linux >= 6.1)."""
    with open("/proc/%d/ksm_merging_pages" % pid, encoding="ascii") as handle:
        return int(handle.read().strip())


class Sampler(threading.Thread):
    """Every 0.1 s while a playbook runs: run, pages_sharing, merge_across_nodes, and each guest's merged pages."""

    def __init__(self, pids):
        super().__init__(daemon=True)
        self.pids = pids
        self.samples = []
        self.done = threading.Event()

    def run(self):
        while not self.done.is_set():
            guests = dict((guest, merging_pages(pid)) for guest, pid in self.pids.items())
            self.samples.append((time.monotonic(), ksm_read("run"), ksm_read("pages_sharing"), ksm_read("merge_across_nodes"),
                                 guests))
            time.sleep(0.1)

    def stop(self):
        self.done.set()
        self.join(5)


@pytest.fixture(scope="module")
def ksm_lab(lab):
    original = settings()
    if original["run"] == 1 or ksm_read("pages_sharing"):
        pytest.fail("KSM is already in use on this machine (%s): another test must be running" % original)
    lab.cleanup("ksm")
    boot_at = dict((guest, lab.serial_size(HOST, guest)) for guest in GUESTS)
    started = time.monotonic()
    try:
        lab.start(HOST, len(GUESTS), prefix="ksm", cmdline="lab_fill=%d" % FILL_MIB)
        for guest in GUESTS:
            lab.wait_serial(HOST, guest, r"GUEST-FILLED", timeout=75, start_at=boot_at[guest])
        print("ksm guests booted and filled in %.1f s" % (time.monotonic() - started))
    except Exception:
        lab.cleanup("ksm")
        raise
    state = {"original": original, "restored": False,
             "pids": dict((guest, qemu_pid(lab, guest)) for guest in GUESTS)}
    yield state
    lab.cleanup("ksm")
    forced = restore_sysfs(original)
    assert settings() == original
    assert not forced or not state["restored"], "the module's restore left KSM changed: %s" % forced


def test_ksm_on_shares_the_identical_guests_pages_and_is_restored(ksm_lab):
    sampler = Sampler(ksm_lab["pids"])
    sampler.start()
    try:
        run = run_playbook(PLAYBOOK, log="ksm")
    finally:
        sampler.stop()
    assert run.returncode == 0, run.output[-4000:]
    recap = run.recap()
    assert list(recap) == [HOST], recap
    # changed: check mode and real run of "on", of merge_across_nodes off, merge_across_nodes back on,
    # then the restore's unmerge and settings; the repeats are unchanged
    assert recap[HOST]["changed"] == 7 and recap[HOST]["failed"] == 0, recap
    # the playbook put back what it found, and nothing stays merged
    assert settings() == ksm_lab["original"]
    assert ksm_read("pages_sharing") == 0 and ksm_read("pages_shared") == 0
    ksm_lab["restored"] = True

    samples = sampler.samples
    turned_on = next(t for t, run_, _sharing, _nodes, _guests in samples if run_ == 1)
    before = [sample for sample in samples if sample[0] < turned_on]
    after = [sample for sample in samples if sample[0] > turned_on]
    assert before, "KSM was on before the playbook turned it on"
    assert all(sharing == 0 for _t, _run, sharing, _nodes, _guests in before)
    first_shared = next(t for t, _run, sharing, _nodes, _guests in after if sharing >= MIN_SHARING)
    peak = max(sharing for _t, _run, sharing, _nodes, _guests in samples)
    # each identical guest: nothing merged before, most of its filled pages merged after
    guest_peaks = {}
    for guest in GUESTS:
        assert all(guests[guest] == 0 for _t, _run, _sharing, _nodes, guests in before)
        guest_peaks[guest] = max(guests[guest] for _t, _run, _sharing, _nodes, guests in after)
        assert guest_peaks[guest] >= FILL_PAGES, guest_peaks
    # merge_across_nodes really was 0 for a while, and came back with KSM running
    assert any(nodes == 0 for _t, _run, _sharing, nodes, _guests in samples)
    shown = re.search(r"ksm_pages_sharing=(\d+)", run.output)
    assert shown and int(shown.group(1)) >= MIN_SHARING
    print("pages_sharing 0 -> %d within %.1f s of run=1 (peak %d); guests' merged pages %s of %d filled; play %s s"
          % (MIN_SHARING, first_shared - turned_on, peak, guest_peaks, FILL_PAGES, run.wall_s))
