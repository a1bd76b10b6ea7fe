"""autopilot.kvm.tune and the tune role on a real lab host (h2), checked in the host's cgroup files.

The guest tune1 gets a small raw disk (vdb, a file under LAB_DIR) for disk I/O limits and an
ethernet interface (tunetap1). This lab's kernel has neither the sfq qdisc nor the police action
libvirt's bandwidth shaping needs, so interface bandwidth is checked here only as a failure that
carries libvirt's text; its success path is covered by the unit tests (test driver).
"""

from __future__ import annotations

import os
import subprocess

import pytest

from conftest import ROOT, run_playbook

PLAYBOOK = "tests/lab/e2e/playbooks/tune.yml"
HOST = "h2"
GUEST = "tune1"
LAB_HOST = os.path.join(ROOT, "tests", "lab", "bin", "lab-host")
AFFECT_CONFIG = 2


def guest_xml(lab, disk):
    xml = lab.domain_xml(GUEST)
    devices = (
        "<disk type='file' device='disk'><driver name='qemu' type='raw'/>"
        "<source file='%s'/><target dev='vdb' bus='virtio'/></disk>"
        "<interface type='ethernet'><mac address='52:54:00:7e:00:01'/><target dev='tunetap1'/>"
        "<model type='virtio'/></interface>" % disk
    )
    assert "<memballoon" in xml
    return xml.replace("<memballoon", devices + "<memballoon", 1)


@pytest.fixture(scope="module")
def tuned_guest(lab):
    lab.cleanup("tune")
    disk_dir = os.path.join(lab.LAB_DIR, "tune")
    os.makedirs(disk_dir, exist_ok=True)
    disk = os.path.join(disk_dir, GUEST + ".raw")
    with open(disk, "wb") as handle:
        handle.truncate(1024 * 1024)
    conn = lab.connect(HOST)
    try:
        start_at = lab.serial_size(HOST, GUEST)
        dom = conn.defineXML(guest_xml(lab, disk))
        dom.create()
        lab.wait_serial(HOST, GUEST, r"GUEST-UP ", 90, start_at)
        yield dom
    finally:
        conn.close()
        lab.cleanup("tune")
        for path in (disk,):
            if os.path.exists(path):
                os.unlink(path)
        if os.path.isdir(disk_dir) and not os.listdir(disk_dir):
            os.rmdir(disk_dir)


def cgroup(dom, controller, relative):
    path = "/sys/fs/cgroup/%s/machine/qemu-%d-%s.libvirt-qemu/%s" % (controller, dom.ID(), GUEST, relative)
    return subprocess.run([LAB_HOST, HOST, "cat", path], stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                          universal_newlines=True, check=True, timeout=30).stdout.strip()


def test_tune_module_and_role(tuned_guest):
    run = run_playbook(PLAYBOOK, log="tune")
    assert run.returncode == 0, run.output[-6000:]
    recap = run.recap()
    assert sorted(recap) == ["h1", "h2", "h3"], recap
    assert all(row["failed"] == 0 and row["unreachable"] == 0 for row in recap.values()), recap
    # the role applied on h2 only; h1 and h3 only looked
    assert recap["h1"]["changed"] == 0 and recap["h3"]["changed"] == 0, recap
    assert recap["h2"]["changed"] >= 4, recap

    # what the last play left, read independently of Ansible: the role's values in the cgroups...
    assert cgroup(tuned_guest, "cpu", "cpu.shares") == "256"
    assert cgroup(tuned_guest, "blkio", "blkio.bfq.weight") == "400"
    # ...the module's reset: no quota, no memory limit, no throttle
    assert cgroup(tuned_guest, "cpu", "vcpu0/cpu.cfs_quota_us") == "-1"
    assert cgroup(tuned_guest, "cpu", "cpu.cfs_quota_us") == "-1"
    assert int(cgroup(tuned_guest, "memory", "memory.limit_in_bytes")) > 2 ** 62
    assert cgroup(tuned_guest, "blkio", "blkio.throttle.read_bps_device") == ""
    # ...and the persistent definition: shares from the module, the vCPU period from the role
    config = tuned_guest.schedulerParametersFlags(AFFECT_CONFIG)
    assert config["cpu_shares"] == 512
    assert config["vcpu_period"] == 200000
    assert tuned_guest.memoryParameters(AFFECT_CONFIG)["hard_limit"] == 9007199254740991  # never persisted

    # the role again, by its tag only, with --diff: nothing changes anywhere
    again = run_playbook(PLAYBOOK, "--tags", "tune", "--diff", log="tune-again")
    assert again.returncode == 0, again.output[-4000:]
    recap = again.recap()
    assert sorted(recap) == ["h1", "h2", "h3"], recap
    assert again.total_changed() == 0, recap
    assert all(row["failed"] == 0 for row in recap.values()), recap
    assert "ok: [h2] => (item=tune1)" in again.output
    assert "Tune in check mode" not in again.output
    assert "--- before" not in again.output
