# -*- coding: utf-8 -*-
# Copyright: autopilot.kvm contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""Host facts for autopilot.kvm.host_info (PRIVATE to the collection: the API may change).

The readers and parsers here are pure: every one takes the file's text (or its path) as an
argument so unit tests can feed fixture text. Files under /proc and /sys are read exactly once;
a required file that is missing or malformed raises HostFactsError with a clear message, it is
never retried. libvirt-derived facts take a LibvirtClient (see _libvirt_client.py).
"""

from __future__ import annotations

import os
import re
import socket
import struct
import xml.etree.ElementTree as ET

from ansible_collections.autopilot.kvm.plugins.module_utils._ksm_estimate import (
    DEFAULT_MAX_MIB as DEFAULT_ESTIMATE_MAX_MIB,
    QEMU_PID_DIR,
    host_estimate,
)

try:
    import fcntl
except ImportError:  # not on Linux: the interface address fallback is skipped
    fcntl = None

MEMINFO_PATH = "/proc/meminfo"
KSM_DIR = "/sys/kernel/mm/ksm"
LOADAVG_PATH = "/proc/loadavg"
MOUNTINFO_PATH = "/proc/self/mountinfo"
MOUNTS_PATH = "/proc/mounts"
PROC_DIR = "/proc"
NET_ROUTE_PATH = "/proc/net/route"
QEMU_CONF_PATH = "/etc/libvirt/qemu.conf"

DEFAULT_PATHS = dict(
    meminfo=MEMINFO_PATH,
    ksm_dir=KSM_DIR,
    loadavg=LOADAVG_PATH,
    mountinfo=MOUNTINFO_PATH,
    mounts=MOUNTS_PATH,
    proc_dir=PROC_DIR,
    net_route=NET_ROUTE_PATH,
    qemu_conf=QEMU_CONF_PATH,
)

KIB = 1024
MIB_IN_KIB = 1024

# /proc/meminfo fields every supported kernel (>= 3.14) has; without them there is no fact.
MEMINFO_REQUIRED = ("MemTotal", "MemFree", "MemAvailable")
# host.memory.<name>_{kib,mib,bytes} and the /proc/meminfo field each one comes from
MEMINFO_NAMED = (
    ("total", "MemTotal"),
    ("free", "MemFree"),
    ("available", "MemAvailable"),
    ("buffers", "Buffers"),
    ("cached", "Cached"),
    ("shmem", "Shmem"),
    ("swap_total", "SwapTotal"),
    ("swap_free", "SwapFree"),
    ("committed_as", "Committed_AS"),
)

KSM_COUNTERS = frozenset((
    "full_scans", "general_profit", "ksm_zero_pages", "pages_scanned", "pages_shared",
    "pages_sharing", "pages_skipped", "pages_unshared", "pages_volatile",
    "stable_node_chains", "stable_node_dups",
))
KSM_RUN_STATES = {0: "stopped", 1: "running", 2: "unmerging"}

PF_KTHREAD = 0x00200000

CGROUP_V1_CONTROLLERS = frozenset((
    "blkio", "cpu", "cpuacct", "cpuset", "devices", "freezer", "hugetlb", "memory", "misc",
    "net_cls", "net_prio", "perf_event", "pids", "rdma",
))

SIOCGIFADDR = 0x8915

_UNITS = {
    "b": 1, "bytes": 1,
    "kb": 1000, "k": 1024, "kib": 1024,
    "mb": 1000 ** 2, "m": 1024 ** 2, "mib": 1024 ** 2,
    "gb": 1000 ** 3, "g": 1024 ** 3, "gib": 1024 ** 3,
    "tb": 1000 ** 4, "t": 1024 ** 4, "tib": 1024 ** 4,
}


class HostFactsError(Exception):
    """A host fact could not be read or parsed; the message says which file and why."""


def read_text(path, what):
    """The whole text of ``path``; a missing or unreadable file raises HostFactsError."""
    try:
        with open(path, "r", encoding="utf-8", errors="replace") as handle:
            return handle.read()
    except OSError as error:
        raise HostFactsError("Cannot read %s from %s: %s" % (what, path, error.strerror or error))


def kib_triple(prefix, kib):
    """``{prefix_kib, prefix_mib, prefix_bytes}`` for a KiB value (MiB rounded down); None stays None."""
    if kib is None:
        return {prefix + "_kib": None, prefix + "_mib": None, prefix + "_bytes": None}
    return {prefix + "_kib": kib, prefix + "_mib": kib // MIB_IN_KIB, prefix + "_bytes": kib * KIB}


def to_kib(value, unit):
    """A libvirt XML scaled integer (``<memory unit='MiB'>``) in KiB, rounded down."""
    factor = _UNITS.get((unit or "KiB").lower())
    if factor is None:
        raise HostFactsError("Unknown memory unit %r" % unit)
    return int(value) * factor // KIB


# ---------------------------------------------------------------- /proc/meminfo

def parse_meminfo(text, source=MEMINFO_PATH):
    """Parse /proc/meminfo text.

    Returns ``(kib, counts)``: fields with a ``kB`` unit (KiB, as the kernel means it) and
    unitless fields (``HugePages_Total`` ...). Every line must be ``Name: <integer> [kB]``;
    anything else, a duplicate name or a missing required field raises HostFactsError.
    """
    kib = {}
    counts = {}
    if not text or not text.strip():
        raise HostFactsError("%s is empty" % source)
    for number, line in enumerate(text.splitlines(), 1):
        if not line.strip():
            continue
        name, sep, rest = line.partition(":")
        name = name.strip()
        parts = rest.split()
        if not sep or not name or len(parts) not in (1, 2) or (len(parts) == 2 and parts[1] != "kB"):
            raise HostFactsError("%s line %d is malformed: %r" % (source, number, line))
        try:
            value = int(parts[0])
        except ValueError:
            raise HostFactsError("%s line %d has a non-integer value: %r" % (source, number, line))
        if name in kib or name in counts:
            raise HostFactsError("%s line %d repeats the field %s" % (source, number, name))
        if len(parts) == 2:
            kib[name] = value
        else:
            counts[name] = value
    missing = [name for name in MEMINFO_REQUIRED if name not in kib]
    if missing:
        raise HostFactsError("%s lacks the required field(s) %s" % (source, ", ".join(missing)))
    return kib, counts


def memory_facts(kib, counts, source=MEMINFO_PATH):
    """host.memory from parsed meminfo: named values in KiB, MiB (rounded down) and bytes."""
    facts = {"source": source}
    for prefix, field in MEMINFO_NAMED:
        facts.update(kib_triple(prefix, kib.get(field)))
    facts.update(kib_triple("used", kib["MemTotal"] - kib["MemAvailable"]))
    facts["hugepages"] = {
        "total": counts.get("HugePages_Total"),
        "free": counts.get("HugePages_Free"),
        "reserved": counts.get("HugePages_Rsvd"),
        "surplus": counts.get("HugePages_Surp"),
        "size_kib": kib.get("Hugepagesize"),
    }
    facts["meminfo_kib"] = dict(kib)
    facts["meminfo_counts"] = dict(counts)
    return facts


def read_memory(path=MEMINFO_PATH):
    """host.memory from the meminfo file at ``path`` (read once)."""
    kib, counts = parse_meminfo(read_text(path, "memory information"), source=path)
    return memory_facts(kib, counts, source=path)


# ---------------------------------------------------------------- KSM

def parse_ksm_value(text):
    """A KSM sysfs value: an integer, the selected choice of ``[none] scan-time``, or the text."""
    text = text.strip()
    try:
        return int(text)
    except ValueError:
        pass
    match = re.search(r"\[([^\]]*)\]", text)
    if match:
        return match.group(1)
    return text


def find_ksmd(proc_dir=PROC_DIR, clk_tck=None):
    """The ksmd kernel thread's CPU time, or None when it is not visible (PID namespace, no KSM).

    Looks for a process whose comm is ``ksmd`` and whose flags mark a kernel thread, then turns
    utime + stime (clock ticks) into seconds with ``SC_CLK_TCK``.
    """
    if clk_tck is None:
        clk_tck = os.sysconf("SC_CLK_TCK")
    try:
        entries = os.listdir(proc_dir)
    except OSError:
        return None
    for entry in sorted(entries, key=lambda e: (len(e), e)):
        if not entry.isdigit():
            continue
        try:
            with open(os.path.join(proc_dir, entry, "stat"), "r", encoding="utf-8", errors="replace") as handle:
                text = handle.read()
        except OSError:
            continue  # the process ended after listdir(): it is not ksmd's business
        stat = parse_proc_stat(text)
        if stat is None or stat["comm"] != "ksmd" or not stat["flags"] & PF_KTHREAD:
            continue
        ticks = stat["utime"] + stat["stime"]
        return {
            "pid": stat["pid"],
            "utime_ticks": stat["utime"],
            "stime_ticks": stat["stime"],
            "clock_ticks_per_second": clk_tck,
            "cpu_seconds": round(float(ticks) / clk_tck, 2),
        }
    return None


def parse_proc_stat(text):
    """pid, comm, flags, utime and stime from a /proc/<pid>/stat line; None if it is malformed."""
    start = text.find("(")
    end = text.rfind(")")
    if start < 0 or end < start:
        return None
    rest = text[end + 1:].split()
    # rest[0] is field 3 (state): flags is field 9, utime 14, stime 15 (proc(5))
    if len(rest) < 13:
        return None
    try:
        return {
            "pid": int(text[:start].strip()),
            "comm": text[start + 1:end],
            "flags": int(rest[6]),
            "utime": int(rest[11]),
            "stime": int(rest[12]),
        }
    except ValueError:
        return None


def read_ksm(ksm_dir=KSM_DIR, proc_dir=PROC_DIR, clk_tck=None, page_size=None):
    """host.ksm: every file of the KSM sysfs directory, split into settings and counters."""
    if page_size is None:
        page_size = os.sysconf("SC_PAGE_SIZE")
    facts = {"available": False, "path": ksm_dir, "run": None, "run_state": None,
             "settings": {}, "counters": {}, "sharing_bytes": None, "ksmd": None}
    if not os.path.isdir(ksm_dir):
        return facts
    facts["available"] = True
    for name in sorted(os.listdir(ksm_dir)):
        path = os.path.join(ksm_dir, name)
        if not os.path.isfile(path):
            continue
        try:
            with open(path, "r", encoding="utf-8", errors="replace") as handle:
                value = parse_ksm_value(handle.read())
        except OSError:
            continue  # a write-only or vanished knob is not a fact
        if name in KSM_COUNTERS:
            facts["counters"][name] = value
        else:
            facts["settings"][name] = value
    run = facts["settings"].get("run")
    if isinstance(run, int):
        facts["run"] = run
        facts["run_state"] = KSM_RUN_STATES.get(run, "unknown")
    sharing = facts["counters"].get("pages_sharing")
    if isinstance(sharing, int):
        facts["sharing_bytes"] = sharing * page_size
    facts["ksmd"] = find_ksmd(proc_dir, clk_tck)
    return facts


# ---------------------------------------------------------------- load

def parse_loadavg(text, source=LOADAVG_PATH):
    """host.load from /proc/loadavg text (``0.16 0.20 0.09 1/85 5889``)."""
    parts = (text or "").split()
    try:
        if len(parts) != 5:
            raise ValueError
        runnable, tasks = parts[3].split("/")
        return {
            "load1": float(parts[0]),
            "load5": float(parts[1]),
            "load15": float(parts[2]),
            "runnable": int(runnable),
            "tasks": int(tasks),
            "last_pid": int(parts[4]),
        }
    except ValueError:
        raise HostFactsError("%s is malformed: %r" % (source, text))


def read_load(path=LOADAVG_PATH):
    return parse_loadavg(read_text(path, "load averages"), source=path)


# ---------------------------------------------------------------- cgroup

def _unescape_mount(field):
    """Mount fields escape space, tab, newline and backslash as octal (``\\040``)."""
    return re.sub(r"\\([0-7]{3})", lambda m: chr(int(m.group(1), 8)), field)


def parse_mountinfo(text):
    """(mount point, fstype, super options) for each line of /proc/<pid>/mountinfo."""
    mounts = []
    for line in text.splitlines():
        left, sep, right = line.partition(" - ")
        fields = left.split()
        tail = right.split()
        if not sep or len(fields) < 5 or len(tail) < 2:
            continue
        options = tail[2] if len(tail) > 2 else ""
        mounts.append((_unescape_mount(fields[4]), tail[0], options))
    return mounts


def parse_mounts(text):
    """(mount point, fstype, options) for each line of /proc/mounts."""
    mounts = []
    for line in text.splitlines():
        fields = line.split()
        if len(fields) >= 4:
            mounts.append((_unescape_mount(fields[1]), fields[2], fields[3]))
    return mounts


def cgroup_facts(mounts, read_file=None):
    """host.cgroup from a mount list.

    ``v2`` means only the unified hierarchy is mounted, ``hybrid`` both cgroup2 and v1
    controller hierarchies, ``v1`` only v1 hierarchies and ``none`` no cgroup at all.
    """
    v2_mounts = [point for point, fstype, _options in mounts if fstype == "cgroup2"]
    v1 = set()
    v1_mounts = []
    for point, fstype, options in mounts:
        if fstype != "cgroup":
            continue
        v1_mounts.append(point)
        for option in options.split(","):
            if option in CGROUP_V1_CONTROLLERS or option.startswith("name="):
                v1.add(option)
    if v2_mounts and v1_mounts:
        version = "hybrid"
    elif v2_mounts:
        version = "v2"
    elif v1_mounts:
        version = "v1"
    else:
        version = "none"
    v2_controllers = None
    if v2_mounts and read_file is not None:
        text = read_file(os.path.join(v2_mounts[0], "cgroup.controllers"))
        if text is not None:
            v2_controllers = sorted(text.split())
    return {
        "version": version,
        "v2_mountpoint": v2_mounts[0] if v2_mounts else None,
        "v2_controllers": v2_controllers,
        "v1_controllers": sorted(v1),
    }


def _read_optional(path):
    try:
        with open(path, "r", encoding="utf-8", errors="replace") as handle:
            return handle.read()
    except OSError:
        return None


def read_cgroup(mountinfo_path=MOUNTINFO_PATH, mounts_path=MOUNTS_PATH):
    """host.cgroup from /proc/self/mountinfo, or /proc/mounts when mountinfo is unreadable."""
    text = _read_optional(mountinfo_path)
    if text is not None:
        mounts = parse_mountinfo(text)
        source = mountinfo_path
    else:
        mounts = parse_mounts(read_text(mounts_path, "the mount table"))
        source = mounts_path
    facts = cgroup_facts(mounts, read_file=_read_optional)
    facts["source"] = source
    return facts


# ---------------------------------------------------------------- migration address

def parse_qemu_conf_migration_host(text):
    """The value of an uncommented ``migration_host = "..."`` in qemu.conf, or None."""
    value = None
    for line in (text or "").splitlines():
        match = re.match(r'^\s*migration_host\s*=\s*"([^"]*)"\s*(#.*)?$', line)
        if match:
            value = match.group(1).strip() or None  # the last assignment wins, as in libvirt
    return value


def parse_default_route(text):
    """(interface, gateway) of the IPv4 default route with the lowest metric, or None."""
    best = None
    for line in (text or "").splitlines()[1:]:
        fields = line.split()
        if len(fields) < 8:
            continue
        try:
            destination = int(fields[1], 16)
            gateway = int(fields[2], 16)
            flags = int(fields[3], 16)
            metric = int(fields[6])
            mask = int(fields[7], 16)
        except ValueError:
            continue
        if destination != 0 or mask != 0 or not flags & 0x1:  # RTF_UP
            continue
        if best is None or metric < best[0]:
            best = (metric, fields[0], socket.inet_ntoa(struct.pack("<I", gateway)))
    if best is None:
        return None
    return best[1], best[2]


def interface_ipv4(interface):
    """The IPv4 address of ``interface`` (SIOCGIFADDR), or None."""
    if fcntl is None:
        return None
    sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    try:
        packed = struct.pack("256s", interface.encode()[:15])
        result = fcntl.ioctl(sock.fileno(), SIOCGIFADDR, packed)
        return socket.inet_ntoa(result[20:24])
    except OSError:
        return None
    finally:
        sock.close()


def migration_address(hostname, qemu_conf=QEMU_CONF_PATH, net_route=NET_ROUTE_PATH,
                      address_of=interface_ipv4):
    """host.migration: the address other hosts should use to migrate guests to this one.

    1. ``migration_host`` from qemu.conf, if the file is readable and sets it;
    2. else the IPv4 address of the interface that carries the default route;
    3. else the host name.
    """
    configured = parse_qemu_conf_migration_host(_read_optional(qemu_conf))
    if configured:
        return {"address": configured, "source": "qemu.conf", "interface": None}
    route = parse_default_route(_read_optional(net_route))
    if route is not None:
        address = address_of(route[0])
        if address:
            return {"address": address, "source": "default_route", "interface": route[0]}
    return {"address": hostname, "source": "hostname", "interface": None}


# ---------------------------------------------------------------- libvirt

def decode_version(number):
    """libvirt's encoded version (major * 1000000 + minor * 1000 + release) as ``"9.0.0"``."""
    if number is None:
        return None
    number = int(number)
    return "%d.%d.%d" % (number // 1000000, (number // 1000) % 1000, number % 1000)


def _int_attr(element, name):
    if element is None:
        return None
    value = element.get(name)
    try:
        return int(value) if value is not None else None
    except ValueError:
        return None


def parse_capabilities(xml_text):
    """UUID, CPU and NUMA cells of ``<capabilities><host>``."""
    try:
        root = ET.fromstring(xml_text)
    except ET.ParseError as error:
        raise HostFactsError("Cannot parse libvirt capabilities XML: %s" % error)
    host = root.find("host")
    if host is None:
        raise HostFactsError("libvirt capabilities XML has no <host> element")
    uuid = host.findtext("uuid")
    cpu = host.find("cpu")
    features = []
    if cpu is not None:
        for feature in cpu.findall("feature"):  # QEMU: <feature name='vmx'/>
            if feature.get("name"):
                features.append(feature.get("name"))
        for group in cpu.findall("features"):  # legacy and test driver: <features><pae/></features>
            features.extend(child.tag for child in group)
    topology = cpu.find("topology") if cpu is not None else None
    cells = []
    for cell in host.findall("topology/cells/cell"):
        memory = cell.find("memory")
        memory_kib = None
        if memory is not None and memory.text:
            memory_kib = to_kib(memory.text.strip(), memory.get("unit"))
        cpus = sorted(int(c.get("id")) for c in cell.findall("cpus/cpu") if c.get("id") is not None)
        cells.append({"id": _int_attr(cell, "id"), "memory_kib": memory_kib, "cpus": cpus})
    return {
        "uuid": uuid.strip() if uuid else None,
        "cpu": {
            "arch": cpu.findtext("arch") if cpu is not None else None,
            "model": cpu.findtext("model") if cpu is not None else None,
            "vendor": cpu.findtext("vendor") if cpu is not None else None,
            "features": sorted(set(features)),
            "topology": None if topology is None else {
                "sockets": _int_attr(topology, "sockets"),
                "dies": _int_attr(topology, "dies"),
                "cores": _int_attr(topology, "cores"),
                "threads": _int_attr(topology, "threads"),
            },
        },
        "cells": cells,
    }


def node_facts(info):
    """host.node from virNodeGetInfo's list."""
    return {
        "arch": info[0],
        "memory_mib": info[1],
        "cpus": info[2],
        "mhz": info[3],
        "numa_nodes": info[4],
        "sockets_per_node": info[5],
        "cores_per_socket": info[6],
        "threads_per_core": info[7],
    }


def numa_facts(cells, free_bytes, error=None):
    """host.numa: each cell's memory (capabilities) and free memory (virNodeGetCellsFreeMemory, bytes)."""
    result = []
    for index, cell in enumerate(cells):
        free = None
        if free_bytes is not None and index < len(free_bytes):
            free = int(free_bytes[index])
        entry = {"id": cell["id"], "cpus": cell["cpus"], "cpu_count": len(cell["cpus"])}
        entry.update(kib_triple("memory", cell["memory_kib"]))
        entry.update(kib_triple("free", None if free is None else free // KIB))
        entry["free_bytes"] = free
        result.append(entry)
    return {"cell_count": len(result), "cells": result, "error": error}


def libvirt_facts(client):
    """host.libvirt: connection URI, libvirt and hypervisor versions."""
    conn = client.conn
    lib_version = client.call("get the libvirt version", conn.getLibVersion)
    hv_type = client.call("get the hypervisor type", conn.getType)
    hv_version, _error = client.try_call(conn.getVersion)
    return {
        "uri": client.call("get the connection URI", conn.getURI),
        "version": decode_version(lib_version),
        "version_int": lib_version,
        "hypervisor_type": hv_type,
        "hypervisor_version": decode_version(hv_version),
        "hypervisor_version_int": hv_version,
        "qemu_version": decode_version(hv_version) if hv_type == "QEMU" else None,
    }


def collect_host_facts(client, paths=None, ksm_estimate=None):
    """Everything host_info returns under ``host``. Raises HostFactsError for bad host files.

    ``ksm_estimate``: None (no ``host.ksm.estimate``), or ``{max_mib, pid_dir}`` to estimate what KSM
    would save from the running guests' page contents (_ksm_estimate.py; it never raises).
    """
    paths = dict(DEFAULT_PATHS, **(paths or {}))
    conn = client.conn
    info = client.call("get the node information", conn.getInfo)
    hostname = client.call("get the host name", conn.getHostname)
    capabilities = parse_capabilities(client.call("get the host capabilities", conn.getCapabilities))
    node = node_facts(info)

    cpu = dict(capabilities["cpu"])
    if cpu["topology"] is None:
        cpu["topology"] = {
            "sockets": info[5] * info[4], "dies": None, "cores": info[6], "threads": info[7],
        }
    cpu["count"] = info[2]
    cpu["mhz"] = info[3]
    cpu["arch"] = cpu["arch"] or info[0]

    cells = capabilities["cells"]
    free, error = None, None
    if cells:
        free, error = client.try_call(conn.getCellsFreeMemory, 0, len(cells))

    facts = {
        "hostname": hostname,
        "uuid": capabilities["uuid"],
        "node": node,
        "cpu": cpu,
        "numa": numa_facts(cells, free, error),
        "memory": read_memory(paths["meminfo"]),
        "ksm": read_ksm(paths["ksm_dir"], paths["proc_dir"]),
        "load": read_load(paths["loadavg"]),
        "cgroup": read_cgroup(paths["mountinfo"], paths["mounts"]),
        "libvirt": libvirt_facts(client),
        "migration": migration_address(hostname, paths["qemu_conf"], paths["net_route"]),
    }
    if ksm_estimate is not None:
        # last: it may read guest memory for seconds, the other facts are taken together before it
        facts["ksm"]["estimate"] = host_estimate(
            client, facts["ksm"], pid_dir=ksm_estimate.get("pid_dir") or QEMU_PID_DIR, proc_dir=paths["proc_dir"],
            max_mib=ksm_estimate.get("max_mib", DEFAULT_ESTIMATE_MAX_MIB))
    return facts
