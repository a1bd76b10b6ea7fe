# -*- coding: utf-8 -*-
# Copyright: autopilot.kvm contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""What KSM would save on this host, from the guests' page contents (PRIVATE: the API may change).

For each running QEMU guest, the memory KSM scans is its mergeable areas (``/proc/PID/smaps``
entries whose ``VmFlags`` include ``mg``). Of those, the anonymous pages that are present
(``/proc/PID/pagemap``) are read from ``/proc/PID/mem`` and hashed; the contents are counted over
all guests together. A content found m times becomes ceil(m / max_page_sharing) KSM pages
shared by m mappings, so KSM's ``pages_sharing`` would be m - ceil(m / max_page_sharing).
With ``use_zero_pages`` = 1, KSM maps all-zero pages to the kernel's zero page instead (they
are counted in ``ksm_zero_pages``, not ``pages_sharing``): they are reported apart.

Only read: guest memory is opened read-only, only counts leave this module, and nothing is
kept but the hashes while it runs. Every failure (permission, a guest exiting, a pagemap that
cannot be read, the budget) gives an estimate of V(null) with the reason, never a partial number.
"""

from __future__ import annotations

import hashlib
import os
import re
import struct
import sys
import time

PROC_DIR = "/proc"
# libvirt's QEMU driver writes <run dir>/qemu/<guest>.pid for every running guest; the run dir
# of qemu:///system is <localstatedir>/run/libvirt, /run/libvirt on every current distribution.
QEMU_PID_DIR = "/run/libvirt/qemu"
DEFAULT_MAX_MIB = 4096
METHOD = "page hashes of mergeable guest memory (smaps mg + pagemap present)"
MIB = 1048576
VIR_CONNECT_LIST_DOMAINS_ACTIVE = 1

# /proc/PID/pagemap (Documentation/admin-guide/mm/pagemap.rst): one native u64 per page
PM_PRESENT = 1 << 63
PM_SWAPPED = 1 << 62
PM_FILE = 1 << 61          # file page or shared anonymous: KSM merges only private anonymous pages
PM_EXCLUSIVE = 1 << 56     # mapped exactly once (Linux 4.2+): never the shared zero page
PM_PFN_MASK = (1 << 55) - 1
KPF_ZERO_PAGE = 1 << 24    # /proc/kpageflags: the kernel's zero page

PAGEMAP_CHUNK_PAGES = 16384     # 128 KiB of pagemap per read
READ_RUN_PAGES = 256            # guest memory is read 1 MiB at a time at most

# The top byte of each pagemap entry carries bits 56-63. The byte order is the host's.
_TOP_BYTE = 7 if sys.byteorder == "little" else 0
_TOP_PRESENT, _TOP_SWAPPED, _TOP_FILE = PM_PRESENT >> 56, PM_SWAPPED >> 56, PM_FILE >> 56
# top byte -> 1 for a present private anonymous page (what KSM scans), else 0
_ANON_PRESENT = bytes(1 if b & (_TOP_PRESENT | _TOP_FILE) == _TOP_PRESENT else 0 for b in range(256))
_FILE_PRESENT = bytes(1 if b & (_TOP_PRESENT | _TOP_FILE) == _TOP_PRESENT | _TOP_FILE else 0 for b in range(256))
_SWAPPED = bytes(1 if b & (_TOP_PRESENT | _TOP_SWAPPED) == _TOP_SWAPPED else 0 for b in range(256))
_RUNS = re.compile(b"\x01+")
_SMAPS_HEADER = re.compile(r"^([0-9a-fA-F]+)-([0-9a-fA-F]+)\s")


class EstimateError(Exception):
    """The estimate cannot be made; the message is the reason returned to the user."""


def _digest(page):
    """The key of a page's content (the loop of estimate_pages inlines it)."""
    return hashlib.sha1(page).digest()


# ---------------------------------------------------------------- guests

def qemu_name_of(cmdline):
    """The guest name in a QEMU command line (``-name guest=NAME,debug-threads=on`` or ``-name NAME``), or None.

    libvirt doubles the commas of a name (``a,,b`` is ``a,b``) since QEMU splits options on single commas.
    """
    args = cmdline.split(b"\0")
    for index, arg in enumerate(args[:-1]):
        if arg in (b"-name", b"--name"):
            value = args[index + 1].decode("utf-8", "replace")
            if value.startswith("guest="):
                value = value[len("guest="):]
            parts = []
            while value:
                head, sep, value = value.partition(",")
                if sep and value.startswith(","):
                    parts.append(head + ",")
                    value = value[1:]
                    continue
                parts.append(head)
                break
            return "".join(parts)
    return None


def guest_pid(name, pid_dir=QEMU_PID_DIR, proc_dir=PROC_DIR):
    """The PID of the QEMU process of running guest ``name``, from libvirt's pid file.

    The pid file, rather than a scan of /proc/*/cmdline for ``-name guest=NAME``: it is written by
    the libvirtd that owns the guest, so it names exactly that guest's process even when several
    libvirtd share one PID namespace (containers, the lab's hosts) or when an incoming migration
    runs a second QEMU with the same name. The process's command line is still checked, so a
    stale pid file whose PID was reused is refused.
    """
    path = os.path.join(pid_dir, name + ".pid")
    try:
        with open(path, "r", encoding="utf-8", errors="replace") as handle:
            text = handle.read().strip()
    except OSError as error:
        raise EstimateError("guest %s: cannot read its pid file %s: %s (set qemu_pid_dir to libvirt's QEMU run directory)"
                            % (name, path, error.strerror or error))
    if not text.isdigit():
        raise EstimateError("guest %s: its pid file %s does not hold a PID: %r" % (name, path, text[:40]))
    pid = int(text)
    cmdline_path = os.path.join(proc_dir, str(pid), "cmdline")
    try:
        with open(cmdline_path, "rb") as handle:
            cmdline = handle.read()
    except OSError as error:
        raise EstimateError("guest %s: its QEMU process %d is gone (%s)" % (name, pid, error.strerror or error))
    if qemu_name_of(cmdline) != name:
        raise EstimateError("guest %s: process %d of pid file %s is not its QEMU (stale pid file?)" % (name, pid, path))
    return pid


def running_guests(client):
    """(hypervisor type, sorted names of the active domains); raises EstimateError on a libvirt error."""
    conn = client.conn
    hv_type, error = client.try_call(conn.getType)
    if error is not None:
        raise EstimateError("cannot get the hypervisor type: %s" % error)
    domains, error = client.try_call(conn.listAllDomains, VIR_CONNECT_LIST_DOMAINS_ACTIVE)
    if error is not None:
        raise EstimateError("cannot list the running guests: %s" % error)
    names = []
    for dom in domains:
        name, error = client.try_call(dom.name)
        if error is None:
            names.append(name)
    return hv_type, sorted(names)


# ---------------------------------------------------------------- one process

def parse_smaps_mergeable(text):
    """(start, end) of every VMA of a smaps text whose ``VmFlags`` include ``mg`` (MADV_MERGEABLE)."""
    areas = []
    current = None
    for line in text.splitlines():
        match = _SMAPS_HEADER.match(line)
        if match:
            current = (int(match.group(1), 16), int(match.group(2), 16))
            continue
        if current is not None and line.startswith("VmFlags:"):
            if "mg" in line.split()[1:]:
                areas.append(current)
            current = None
    return areas


class _Process:
    """One guest's QEMU process: its mergeable areas, pagemap and memory (opened read-only)."""

    def __init__(self, name, pid, proc_dir, page_size):
        self.name = name
        self.pid = pid
        self.page_size = page_size
        self.base = os.path.join(proc_dir, str(pid))
        self.pagemap_fd = None
        self.mem_fd = None
        smaps = os.path.join(self.base, "smaps")
        try:
            with open(smaps, "r", encoding="utf-8", errors="replace") as handle:
                text = handle.read()
        except OSError as error:
            raise EstimateError("guest %s: cannot read %s: %s" % (name, smaps, error.strerror or error))
        if not text:
            raise EstimateError("guest %s: %s is empty (its QEMU process %d exited?)" % (name, smaps, pid))
        self.areas = parse_smaps_mergeable(text)

    def _open(self, leaf):
        path = os.path.join(self.base, leaf)
        try:
            return os.open(path, os.O_RDONLY)
        except OSError as error:
            raise EstimateError("guest %s: cannot open %s: %s%s" % (
                self.name, path, error.strerror or error,
                " (reading guest memory needs root)" if error.errno in (1, 13) else ""))

    def open_pagemap(self):
        if self.pagemap_fd is None:
            self.pagemap_fd = self._open("pagemap")

    def open_mem(self):
        if self.mem_fd is None:
            self.mem_fd = self._open("mem")

    def close(self):
        for fd in (self.pagemap_fd, self.mem_fd):
            if fd is not None:
                os.close(fd)
        self.pagemap_fd = self.mem_fd = None

    def pagemap_chunks(self):
        """(address, pagemap bytes) of the mergeable areas, PAGEMAP_CHUNK_PAGES pages at a time."""
        ps = self.page_size
        for start, end in self.areas:
            page = start // ps
            last = end // ps
            while page < last:
                count = min(PAGEMAP_CHUNK_PAGES, last - page)
                try:
                    data = os.pread(self.pagemap_fd, count * 8, page * 8)
                except OSError as error:
                    raise EstimateError("guest %s: cannot read %s/pagemap at 0x%x: %s" % (
                        self.name, self.base, page * ps, error.strerror or error))
                if len(data) != count * 8:
                    raise EstimateError("guest %s: %s/pagemap ended early at 0x%x (its QEMU process %d exited?)"
                                        % (self.name, self.base, page * ps, self.pid))
                yield page * ps, data
                page += count

    def read(self, address, count):
        """``count`` pages of guest memory from ``address``; a short read is an error, never a partial page set."""
        size = count * self.page_size
        try:
            data = os.pread(self.mem_fd, size, address)
        except OSError as error:
            raise EstimateError("guest %s: cannot read %s/mem at 0x%x: %s (its memory changed or it exited while read)"
                                % (self.name, self.base, address, error.strerror or error))
        if len(data) != size:
            raise EstimateError("guest %s: %s/mem gave %d of %d bytes at 0x%x (its QEMU process %d exited?)"
                                % (self.name, self.base, len(data), size, address, self.pid))
        return data


def _top_bytes(data):
    return data[_TOP_BYTE::8]


# ---------------------------------------------------------------- the estimate

class _ZeroPageProbe:
    """Tells a mapping of the kernel's zero page (untouched memory that was only read, no memory of its
    own, never merged by KSM) from an all-zero page of the guest's own, with /proc/kpageflags."""

    def __init__(self, proc_dir):
        self.fd = None
        self.cache = {}
        try:
            self.fd = os.open(os.path.join(proc_dir, "kpageflags"), os.O_RDONLY)
        except OSError:
            self.fd = None  # not root, or no such file: every all-zero page counts as the guest's own

    def is_zero_page(self, entry):
        if entry & PM_EXCLUSIVE:
            return False
        pfn = entry & PM_PFN_MASK
        if not pfn or self.fd is None:
            return False  # PFNs hidden (no CAP_SYS_ADMIN): cannot tell, counted as the guest's own
        if pfn not in self.cache:
            try:
                flags = os.pread(self.fd, 8, pfn * 8)
            except OSError:
                flags = b""
            self.cache[pfn] = len(flags) == 8 and bool(struct.unpack("=Q", flags)[0] & KPF_ZERO_PAGE)
        return self.cache[pfn]

    def close(self):
        if self.fd is not None:
            os.close(self.fd)
            self.fd = None


def _ceil_div(a, b):
    return -(-a // b)


def _null_result(guests, max_mib, use_zero_pages, max_page_sharing, reason, read_bytes=0, elapsed=0.0):
    return {
        "pages_sharing": None, "pages_shared": None, "saving_mib": None,
        "present_pages": None, "distinct_pages": None, "zero_pages": None,
        "zero_page_mappings": None, "swapped_pages": None, "file_pages": None,
        "use_zero_pages": use_zero_pages, "max_page_sharing": max_page_sharing,
        "guests": list(guests), "read_mib": round(float(read_bytes) / MIB, 2), "budget_mib": max_mib,
        "elapsed_s": round(elapsed, 2), "method": METHOD, "reason": reason,
    }


def estimate_pages(guests, proc_dir=PROC_DIR, max_mib=DEFAULT_MAX_MIB, use_zero_pages=False,
                   max_page_sharing=None, page_size=None, clock=time.monotonic):
    """The KSM estimate for ``guests``, a list of (name, PID) of QEMU processes.

    Two passes. The first reads smaps and pagemap only, and counts the present anonymous pages of
    the mergeable areas: over ``max_mib`` MiB, nothing is read and the estimate is V(null). The
    second reads those pages and hashes them; memory that grew over the budget since the first
    pass stops it (V(null) again), so no more than ``max_mib`` MiB is ever read.
    """
    page_size = page_size or os.sysconf("SC_PAGE_SIZE")
    started = clock()
    names = [name for name, _pid in guests]
    budget_pages = max_mib * MIB // page_size
    use_zero_pages = bool(use_zero_pages)
    sharing_cap = max_page_sharing if isinstance(max_page_sharing, int) and max_page_sharing >= 2 else None
    processes = []
    probe = None
    read_bytes = 0
    try:
        # pass 1: what there is to read
        total = swapped = file_pages = 0
        for name, pid in guests:
            process = _Process(name, pid, proc_dir, page_size)
            processes.append(process)
            process.open_pagemap()
            for _address, data in process.pagemap_chunks():
                top = _top_bytes(data)
                total += top.translate(_ANON_PRESENT).count(1)
                swapped += top.translate(_SWAPPED).count(1)
                file_pages += top.translate(_FILE_PRESENT).count(1)
        if total > budget_pages:
            raise EstimateError("%d MiB of mergeable guest memory is over the budget of %d MiB (ksm_estimate_max_mib)"
                                % (_ceil_div(total * page_size, MIB), max_mib))

        # pass 2: read and hash
        # SHA-1 only tells contents apart (no adversary to resist): with the CPU's SHA instructions OpenSSL
        # hashes it twice as fast as BLAKE2b.
        sha1 = hashlib.sha1
        zero_digest = _digest(b"\0" * page_size)
        counts = {}
        read_pages = zero_mappings = 0
        probe = _ZeroPageProbe(proc_dir)
        for process in processes:
            process.open_mem()
            for address, data in process.pagemap_chunks():
                mask = _top_bytes(data).translate(_ANON_PRESENT)
                for run in _RUNS.finditer(mask):
                    first, end = run.start(), run.end()
                    if read_pages + (end - first) > budget_pages:
                        raise EstimateError("the mergeable guest memory grew over the budget of %d MiB while it was read"
                                            % max_mib)
                    read_pages += end - first
                    while first < end:
                        count = min(READ_RUN_PAGES, end - first)
                        pages = memoryview(process.read(address + first * page_size, count))
                        read_bytes += count * page_size
                        for index in range(count):
                            digest = sha1(pages[index * page_size:(index + 1) * page_size]).digest()
                            if digest == zero_digest:
                                entry = struct.unpack_from("=Q", data, (first + index) * 8)[0]
                                if probe.is_zero_page(entry):
                                    zero_mappings += 1
                                    continue
                            counts[digest] = counts.get(digest, 0) + 1
                        first += count
    except EstimateError as error:
        return _null_result(names, max_mib, use_zero_pages, max_page_sharing, str(error), read_bytes, clock() - started)
    finally:
        for process in processes:
            process.close()
        if probe is not None:
            probe.close()

    present = sum(counts.values())
    distinct = len(counts)
    zero = counts.get(zero_digest, 0)
    sharing = shared = 0
    for digest, copies in counts.items():
        if copies < 2 or (use_zero_pages and digest == zero_digest):
            continue
        pages = _ceil_div(copies, sharing_cap) if sharing_cap else 1
        shared += pages
        sharing += copies - pages
    saved = sharing + (zero if use_zero_pages else 0)
    result = _null_result(names, max_mib, use_zero_pages, max_page_sharing, None, read_bytes, clock() - started)
    result.update({
        "pages_sharing": sharing, "pages_shared": shared, "saving_mib": saved * page_size // MIB,
        "present_pages": present, "distinct_pages": distinct, "zero_pages": zero,
        "zero_page_mappings": zero_mappings, "swapped_pages": swapped, "file_pages": file_pages,
    })
    return result


def host_estimate(client, ksm_facts, pid_dir=QEMU_PID_DIR, proc_dir=PROC_DIR, max_mib=DEFAULT_MAX_MIB,
                  page_size=None, clock=time.monotonic):
    """host.ksm.estimate: the estimate over every running guest of the libvirt connection ``client``."""
    settings = ksm_facts.get("settings") or {}
    use_zero_pages = settings.get("use_zero_pages") == 1
    max_page_sharing = settings.get("max_page_sharing")
    if not isinstance(max_page_sharing, int) or isinstance(max_page_sharing, bool):
        max_page_sharing = None
    if not ksm_facts.get("available"):
        return _null_result([], max_mib, use_zero_pages, max_page_sharing,
                            "KSM is not available on this host (no %s)" % ksm_facts.get("path"))
    names = []
    try:
        hv_type, names = running_guests(client)
        if hv_type != "QEMU":
            raise EstimateError("the estimate reads QEMU processes; this hypervisor is %s" % hv_type)
        guests = [(name, guest_pid(name, pid_dir, proc_dir)) for name in names]
    except EstimateError as error:
        return _null_result(names, max_mib, use_zero_pages, max_page_sharing, str(error))
    return estimate_pages(guests, proc_dir, max_mib, use_zero_pages, max_page_sharing, page_size, clock)
