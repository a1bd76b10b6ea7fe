"""End-to-end tests against the lab (tests/lab): real libvirtd, QEMU guests, SSH, Ansible.

Run by `make lab-test` (which brings the lab up first). Guests are started by the tests.
"""

from __future__ import annotations

import os
import re
import subprocess
import sys

import pytest

ROOT = os.path.abspath(os.path.join(os.path.dirname(__file__), "..", "..", ".."))
sys.path.insert(0, os.path.join(ROOT, "tests", "lab", "lib"))

import labguests  # noqa: E402  pylint: disable=wrong-import-position

LAB_CTL = os.path.join(ROOT, "tests", "lab", "bin", "lab-ctl")
VENV_BIN = os.path.join(ROOT, ".venv", "bin")
LOG_DIR = os.path.join(ROOT, "tests", "output", "lab")
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
