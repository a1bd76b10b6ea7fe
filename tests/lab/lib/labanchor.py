"""The process that *is* one lab host (run with /usr/bin/python3; no third-party imports).

``labanchor.py run hN``
    Started by lab-up.sh inside fresh mount + UTS namespaces and the host's network namespace.
    Moves itself into ``<its cgroup>/lab-hN`` in every cgroup hierarchy, unshares a cgroup
    namespace rooted there (libvirt without systemd uses an absolute ``/machine`` partition, so
    every host needs its own cgroup root), runs ``host-init.sh`` (mounts, daemons) and then stays
    as the child subreaper of the host's daemons and QEMU processes. SIGHUP restarts whichever
    of the daemons died.

``labanchor.py join ANCHOR_PID PID``
    Moves PID into the cgroups of ANCHOR_PID (used by bin/lab-host before nsenter).
"""

import ctypes
import os
import signal
import subprocess
import sys
import time

PR_SET_CHILD_SUBREAPER = 36
CLONE_NEWCGROUP = 0x02000000
HERE = os.path.dirname(os.path.abspath(__file__))


def cgroup_mounts():
    """{controller-set or 'cgroup2': mountpoint} from /proc/self/mountinfo"""
    mounts = {}
    with open("/proc/self/mountinfo", encoding="utf-8") as f:
        for line in f:
            pre, post = line.rstrip("\n").split(" - ", 1)
            fstype, _src, opts = post.split(" ", 2)
            target = pre.split(" ")[4]
            if fstype == "cgroup2":
                mounts.setdefault("cgroup2", target)
            elif fstype == "cgroup":
                key = frozenset(o for o in opts.split(",") if o not in ("rw", "ro"))
                mounts.setdefault(key, target)
    return mounts


def cgroup_dirs(pid, suffix=""):
    """absolute cgroupfs directories of pid (plus suffix) in every hierarchy"""
    mounts = cgroup_mounts()
    dirs = []
    with open(f"/proc/{pid}/cgroup", encoding="utf-8") as f:
        for line in f:
            _hid, ctrls, path = line.rstrip("\n").split(":", 2)
            if not ctrls:
                mp = mounts.get("cgroup2")
            else:
                want = set(ctrls.split(","))
                mp = next((m for k, m in mounts.items() if k != "cgroup2" and want <= k), None)
            if mp:
                dirs.append(os.path.join(mp, path.lstrip("/"), suffix).rstrip("/"))
    return dirs


def move(pid, directory):
    """put pid into cgroup directory (cpuset needs cpus/mems before it accepts tasks)"""
    os.makedirs(directory, exist_ok=True)
    for knob in ("cpuset.cpus", "cpuset.mems"):
        path = os.path.join(directory, knob)
        if os.path.exists(path):
            with open(path, encoding="utf-8") as f:
                if f.read().strip():
                    continue
            with open(os.path.join(os.path.dirname(directory), knob), encoding="utf-8") as f:
                parent = f.read()
            with open(path, "w", encoding="utf-8") as f:
                f.write(parent)
    try:
        with open(os.path.join(directory, "cgroup.procs"), "w", encoding="utf-8") as f:
            f.write(str(pid))
    except OSError as e:
        print(f"warning: cannot move {pid} into {directory}: {e}", file=sys.stderr)


def run(host):
    """become host `host`; never returns while the host is up"""
    lab_dir = os.environ.get("LAB_DIR", "/var/tmp/autopilot-lab")
    hd = os.path.join(lab_dir, "hosts", host)
    libc = ctypes.CDLL(None, use_errno=True)
    libc.prctl(PR_SET_CHILD_SUBREAPER, 1, 0, 0, 0)
    os.chdir("/")
    with open(os.path.join(hd, "anchor.pid"), "w", encoding="utf-8") as f:
        f.write(str(os.getpid()))
    me = os.getpid()
    for d in cgroup_dirs(me):
        move(me, d if d.endswith("/lab-" + host) else d + "/lab-" + host)
    if libc.unshare(CLONE_NEWCGROUP) != 0:
        raise OSError(ctypes.get_errno(), "unshare(CLONE_NEWCGROUP)")
    rc = subprocess.call(["bash", os.path.join(HERE, "host-init.sh"), host])
    with open(os.path.join(hd, "init.rc"), "w", encoding="utf-8") as f:
        f.write(str(rc))
    if rc != 0:
        sys.exit(rc)
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(0))
    # SIGHUP: (re)start whichever of the host's daemons is not running, as a child of this
    # process so that it stays in the host's cgroups and gets reaped here
    signal.signal(signal.SIGHUP, lambda *_: subprocess.call(
        ["bash", os.path.join(HERE, "host-init.sh"), host, "daemons"]))
    while True:  # reap the double-forked daemons and QEMU processes of this host
        try:
            os.wait()
        except ChildProcessError:
            time.sleep(1)


def main(argv):
    """labanchor.py run hN | join ANCHOR_PID PID"""
    if len(argv) == 2 and argv[0] == "run":
        run(argv[1])
    elif len(argv) == 3 and argv[0] == "join":
        for d in cgroup_dirs(argv[1]):
            move(int(argv[2]), d)
    else:
        sys.exit("usage: labanchor.py run hN | join ANCHOR_PID PID")


if __name__ == "__main__":
    main(sys.argv[1:])
