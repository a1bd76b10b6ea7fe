"""End-to-end tests against the lab (tests/lab): real libvirtd, QEMU guests, SSH, Ansible.

Run by `make lab-test` (which brings the lab up first). Guests are started by the tests.
"""

from __future__ import annotations

import os
import re
import subprocess
import sys
import time

import pytest

ROOT = os.path.abspath(os.path.join(os.path.dirname(__file__), "..", "..", ".."))
sys.path.insert(0, os.path.join(ROOT, "tests", "lab", "lib"))

import labguests  # noqa: E402  pylint: disable=wrong-import-position

LAB_CTL = os.path.join(ROOT, "tests", "lab", "bin", "lab-ctl")
VENV_BIN = os.path.join(ROOT, ".venv", "bin")
LOG_DIR = os.path.join(ROOT, "tests", "output", "lab")
KSM_DIR = "/sys/kernel/mm/ksm"      # machine-wide in the lab: the hosts share one kernel
# Whole lines only (a line read half-written would give a number cut short); see labguests.TICK_RE.
MEM_TOTAL_RE = r"GUEST-MEM MemTotal_kB=(\d+) uptime=[0-9.]+\r?\n"
RECAP_RE = re.compile(r"^(\S+)\s+:\s+ok=(\d+)\s+changed=(\d+)\s+unreachable=(\d+)\s+failed=(\d+)", re.M)


class PlaybookRun:
    def __init__(self, argv, returncode, output, wall_s):
        self.argv = argv
        self.returncode = returncode
        self.output = output
        self.wall_s = wall_s

    def recap(self):
        """{host: {'ok': n, 'changed': n, 'unreachable': n, 'failed': n}} from PLAY RECAP."""
        return dict((m.group(1), {"ok": int(m.group(2)), "changed": int(m.group(3)),
                                  "unreachable": int(m.group(4)), "failed": int(m.group(5))})
                    for m in RECAP_RE.finditer(self.output))

    def total_changed(self):
        return sum(row["changed"] for row in self.recap().values())


def run_playbook(name, *args, log=None):
    """ansible-playbook NAME -i inventories/lab ARGS..., from the lab's controller namespace."""
    import time
    argv = [LAB_CTL, os.path.join(VENV_BIN, "ansible-playbook"), name, "-i", "inventories/lab"] + list(args)
    env = dict(os.environ, ANSIBLE_CONFIG=os.path.join(ROOT, "ansible.cfg"), ANSIBLE_NOCOLOR="1",
               ANSIBLE_FORCE_COLOR="0", PATH=VENV_BIN + os.pathsep + os.environ.get("PATH", ""))
    os.makedirs(LOG_DIR, exist_ok=True)  # playbooks may write their own results there
    started = time.monotonic()
    proc = subprocess.run(argv, cwd=ROOT, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                          universal_newlines=True, timeout=900, check=False)
    run = PlaybookRun(argv, proc.returncode, proc.stdout, round(time.monotonic() - started, 1))
    with open(os.path.join(LOG_DIR, (log or name.replace("/", "_")) + ".log"), "w", encoding="utf-8") as handle:
        handle.write("$ %s\n(rc=%s, %ss)\n%s" % (" ".join(argv), run.returncode, run.wall_s, run.output))
    return run


@pytest.fixture(scope="session")
def lab():
    if not os.path.exists("/run/netns/labctl") or not labguests.hosts():
        pytest.fail("the lab is not up: run `make lab-up` (make lab-test does)")
    return labguests


def placement_map(lab_module, prefix):
    """{guest: [hosts where it runs]} for guests whose name starts with prefix."""
    result = {}
    for guest, host, state in lab_module.placement():
        if guest.startswith(prefix) and state == "running":
            result.setdefault(guest, []).append(host)
    return result


def ksm_read(name):
    """An integer of /sys/kernel/mm/ksm (the lab's hosts share it)."""
    with open(os.path.join(KSM_DIR, name), encoding="ascii") as handle:
        return int(handle.read().strip())


def ksm_write(name, value):
    with open(os.path.join(KSM_DIR, name), "w", encoding="ascii") as handle:
        handle.write("%d\n" % value)


KSM_SETTINGS = ("run", "pages_to_scan", "sleep_millisecs", "merge_across_nodes")


def ksm_settings():
    return dict((name, ksm_read(name)) for name in KSM_SETTINGS)


def ksm_restore(original):
    """Put KSM back as ``original`` (ksm_settings()) without the module, unmerging first when KSM is to stay
    off or merge_across_nodes changes; returns what had to be written (empty: nothing was needed)."""
    written = []
    if ksm_settings() == original and (original["run"] == 1 or ksm_read("pages_sharing") == 0):
        return written
    if ksm_read("merge_across_nodes") != original["merge_across_nodes"] or original["run"] != 1:
        ksm_write("run", 2)
        written.append("run=2")
        deadline = time.monotonic() + 60
        while ksm_read("pages_shared") and time.monotonic() < deadline:
            time.sleep(0.2)
    for name in ("pages_to_scan", "sleep_millisecs", "merge_across_nodes", "run"):
        if ksm_read(name) != original[name]:
            ksm_write(name, original[name])
            written.append("%s=%d" % (name, original[name]))
    return written


def wait_mem_total_kib(host, name, start_at, expected_kib, tolerance_kib, timeout=30):
    """The MemTotal values the guest printed (GUEST-MEM serial lines) after ``start_at``, once the last is within
    ``tolerance_kib`` of ``expected_kib``: what the guest itself sees of a balloon change."""
    deadline = time.monotonic() + timeout
    while True:
        with open(labguests.serial_log(host, name), "rb") as handle:
            handle.seek(start_at)
            seen = [int(v) for v in re.findall(MEM_TOTAL_RE, handle.read().decode(errors="replace"))]
        if seen and abs(seen[-1] - expected_kib) <= tolerance_kib:
            return seen
        if time.monotonic() > deadline:
            raise AssertionError("%s MemTotal after the change: %s, expected about %d kB" % (name, seen, expected_kib))
        time.sleep(0.2)
