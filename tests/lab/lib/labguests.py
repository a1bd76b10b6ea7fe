"""Guests on the autopilot.kvm test lab (tests/lab): helpers for the integration tests and a CLI.

Run with the distribution's Python (Debian's python3-libvirt), as root, from the root namespace:

    /usr/bin/python3 tests/lab/lib/labguests.py start --host h1 --count 4 --prefix vm
    /usr/bin/python3 tests/lab/lib/labguests.py placement
    /usr/bin/python3 tests/lab/lib/labguests.py cleanup

Guests are TCG, 1 vCPU, 256 MiB, Debian kernel + busybox initramfs (lib/guest-init.sh), no disks,
no NIC. The serial console is logged per host (under LAB_DIR/hosts/hN); the guest prints
GUEST-UP, GUEST-MEM (MemTotal on change) and every 2 s "GUEST-TICK uptime=<s> boot=<id>".
Kernel command-line knobs: lab_fill=MB (identical pages, KSM bait), lab_tick=S.
"""

import argparse
import glob
import os
import re
import sys
import time

LAB_DIR = os.environ.get("LAB_DIR", "/var/tmp/autopilot-lab")
LAB_NET = os.environ.get("LAB_NET", "10.77.0")
HERE = os.path.dirname(os.path.abspath(__file__))
# Whole lines only: the log is read while the guest writes it, and a line caught half-written once gave a boot id
# cut short ("03be87" for "03be8759"), which read as a restart.
TICK_RE = re.compile(r"GUEST-TICK uptime=([0-9.]+) boot=(\w+)\r?\n")


def hosts():
    """names of the lab hosts that have state, in order: ['h1', 'h2', ...]"""
    found = [os.path.basename(p) for p in glob.glob(os.path.join(LAB_DIR, "hosts", "h*"))]
    return sorted((h for h in found if h[1:].isdigit()), key=lambda h: int(h[1:]))


def host_ip(host):
    """'h2' -> '10.77.0.12'"""
    return f"{LAB_NET}.{10 + int(host[1:])}"


def uri(host):
    """unix-socket URI of host's libvirtd: usable from the root namespace (and any other)"""
    return f"qemu:///system?socket={LAB_DIR}/hosts/{host}/run/libvirt/libvirt-sock"


def ssh_uri(host):
    """qemu+ssh URI (reachable inside the lab: lab-ctl, or another host's libvirtd for p2p)"""
    return f"qemu+ssh://root@{host_ip(host)}/system"


def tcp_uri(host):
    """qemu+tcp URI (no auth; reachable only inside the lab)"""
    return f"qemu+tcp://{host_ip(host)}/system"


def connect(host):
    """open a read-write libvirt connection to host's libvirtd"""
    import libvirt  # pylint: disable=import-outside-toplevel
    return libvirt.open(uri(host))


def domain_xml(name, mem_mib=256, cmdline=""):
    """domain XML of a lab guest (lib/domain.xml.in)"""
    with open(os.path.join(HERE, "domain.xml.in"), encoding="utf-8") as f:
        xml = f.read()
    for key, value in (("@NAME@", name), ("@MEM@", str(mem_mib)), ("@CMDLINE@", cmdline),
                       ("@GUEST_DIR@", os.path.join(LAB_DIR, "guest"))):
        xml = xml.replace(key, value)
    return xml


def serial_log(host, name):
    """path of guest name's serial console log as written by host's virtlogd"""
    return os.path.join(LAB_DIR, "hosts", host, "var/log/libvirt/qemu", f"{name}-serial.log")


def serial_size(host, name):
    """current size of the serial log (use it as start_at for wait_serial)"""
    try:
        return os.path.getsize(serial_log(host, name))
    except FileNotFoundError:
        return 0


def _read(path, start_at=0):
    try:
        with open(path, "rb") as f:
            f.seek(start_at)
            return f.read().decode(errors="replace")
    except FileNotFoundError:
        return ""


def wait_serial(host, name, pattern, timeout=60, start_at=0):
    """wait until regex pattern shows up in the serial log after byte start_at; returns the match"""
    rx = re.compile(pattern)
    deadline = time.monotonic() + timeout
    while True:
        m = rx.search(_read(serial_log(host, name), start_at))
        if m:
            return m
        if time.monotonic() > deadline:
            raise TimeoutError(f"{pattern!r} not in {serial_log(host, name)} within {timeout}s")
        time.sleep(0.2)


def last_tick(host, name):
    """(uptime_seconds, boot_id) of the last GUEST-TICK in the serial log, or None.

    host=None follows the guest across hosts: the log written most recently wins."""
    if host is None:
        logs = [serial_log(h, name) for h in hosts()]
        logs = [p for p in logs if os.path.exists(p)]
        if not logs:
            return None
        path = max(logs, key=os.path.getmtime)
    else:
        path = serial_log(host, name)
    ticks = TICK_RE.findall(_read(path))
    return (float(ticks[-1][0]), ticks[-1][1]) if ticks else None


def guest_uptime(host, name):
    """guest's uptime in seconds from its last GUEST-TICK on host (None: where it ran last)"""
    tick = last_tick(host, name)
    return tick[0] if tick else None


def wait_tick(host, name, timeout=30):
    """wait for a new GUEST-TICK on host; returns (uptime_seconds, boot_id)"""
    m = wait_serial(host, name, TICK_RE.pattern, timeout, start_at=serial_size(host, name))
    return float(m.group(1)), m.group(2)


def boot(conn, host, name, mem_mib=256, cmdline="", timeout=90):
    """define (persistent) + start guest name on conn (= host's libvirtd), wait for its userspace"""
    start_at = serial_size(host, name)
    dom = conn.defineXML(domain_xml(name, mem_mib, cmdline))
    dom.create()
    wait_serial(host, name, r"GUEST-UP ", timeout, start_at)
    return dom


def _domains(conn):
    import libvirt  # pylint: disable=import-outside-toplevel
    try:
        return conn.listAllDomains()
    except libvirt.libvirtError:
        return []


def where_is(name):
    """hosts on which guest name is running (normally one; two while a migration runs)"""
    found = []
    for h in hosts():
        try:
            conn = connect(h)
        except Exception:  # pylint: disable=broad-except  # host down
            continue
        try:
            if any(d.name() == name and d.isActive() for d in _domains(conn)):
                found.append(h)
        finally:
            conn.close()
    return found


def placement():
    """[(guest, host, state)] for every domain defined or running on every lab host"""
    states = {1: "running", 2: "blocked", 3: "paused", 4: "shutdown", 5: "shut off",
              6: "crashed", 7: "suspended"}
    rows = []
    for h in hosts():
        try:
            conn = connect(h)
        except Exception:  # pylint: disable=broad-except
            rows.append(("-", h, "HOST DOWN"))
            continue
        for d in _domains(conn):
            rows.append((d.name(), h, states.get(d.state()[0], "?")))
        conn.close()
    return sorted(rows)


def start(host, count, prefix="vm", mem_mib=256, cmdline="", timeout=120):
    """ensure guests prefix1..prefixN run: running anywhere -> left alone, defined but stopped
    somewhere -> started there, else defined + started on host. Boots in parallel."""
    conns = {h: connect(h) for h in hosts()}
    if host not in conns:
        raise SystemExit(f"host {host} is not a lab host (is the lab up?)")
    waiting = []
    for i in range(1, count + 1):
        name = f"{prefix}{i}"
        doms = [(h, d) for h, c in conns.items() for d in _domains(c) if d.name() == name]
        running = [h for h, d in doms if d.isActive()]
        if running:
            print(f"{name}: running on {','.join(running)}")
            continue
        h, dom = doms[0] if doms else (host, None)
        start_at = serial_size(h, name)
        if dom is None:
            dom = conns[h].defineXML(domain_xml(name, mem_mib, cmdline))
        dom.create()
        print(f"{name}: starting on {h}")
        waiting.append((h, name, start_at))
    for h, name, start_at in waiting:
        wait_serial(h, name, r"GUEST-UP ", timeout, start_at)
        print(f"{name}: up on {h}")
    for c in conns.values():
        c.close()


def cleanup(prefix=""):
    """destroy + undefine every lab guest (whose name starts with prefix) on every host"""
    import libvirt  # pylint: disable=import-outside-toplevel
    for h in hosts():
        try:
            conn = connect(h)
        except libvirt.libvirtError:
            continue
        for d in _domains(conn):
            if not d.name().startswith(prefix):
                continue
            name = d.name()
            persistent = d.isPersistent()  # a transient domain is gone once destroyed: ask first
            if d.isActive():
                d.destroy()
            if persistent:
                d.undefineFlags(libvirt.VIR_DOMAIN_UNDEFINE_MANAGED_SAVE
                                | libvirt.VIR_DOMAIN_UNDEFINE_SNAPSHOTS_METADATA)
            print(f"{name}: removed from {h}")
        conn.close()


def main(argv=None):
    """CLI: start | placement | cleanup (see the module docstring)"""
    ap = argparse.ArgumentParser(prog="labguests.py", description=__doc__.split("\n", 1)[0])
    sub = ap.add_subparsers(dest="cmd", required=True)
    p = sub.add_parser("start", help="start guests PREFIX1..PREFIXn (idempotent)")
    p.add_argument("--host", default="h1")
    p.add_argument("--count", type=int, default=1)
    p.add_argument("--prefix", default="vm")
    p.add_argument("--mem", type=int, default=256, help="MiB (default 256)")
    p.add_argument("--cmdline", default="", help="extra kernel args, e.g. lab_fill=64")
    sub.add_parser("placement", help="table guest -> host, state, uptime")
    p = sub.add_parser("cleanup", help="destroy + undefine lab guests on all hosts")
    p.add_argument("--prefix", default="", help="only guests whose name starts with this")
    args = ap.parse_args(argv)
    if args.cmd == "start":
        start(args.host, args.count, args.prefix, args.mem, args.cmdline)
    elif args.cmd == "placement":
        print(f"{'GUEST':<16} {'HOST':<5} {'STATE':<9} UPTIME")
        for name, h, state in placement():
            up = guest_uptime(h, name) if state == "running" else None
            print(f"{name:<16} {h:<5} {state:<9} {'' if up is None else f'{up:.0f}s'}")
    else:
        cleanup(args.prefix)


if __name__ == "__main__":
    try:
        sys.exit(main())
    except BrokenPipeError:  # e.g. `placement | head`
        sys.exit(0)
