# -*- coding: utf-8 -*-
# Copyright: autopilot.kvm contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""Unit tests of the KSM estimate: a fake /proc in tmp_path with known pages, and a real child process."""

from __future__ import annotations

import ctypes
import errno
import mmap
import os
import struct
import subprocess
import sys

import pytest

from ansible_collections.autopilot.kvm.plugins.module_utils import _ksm_estimate as ke

PS = 4096
ZERO_PFN = 0x1234          # the fake kernel's zero page
X, Y, Z = b"X" * PS, b"Y" * PS, b"Z" * PS
ZERO = b"\0" * PS


class FakeProc:
    """A /proc directory with processes whose smaps, pagemap, mem and cmdline are built from page lists.

    A page is None (not present), ``("swap",)``, ``("file", content)`` (present, not anonymous),
    ``("zeromap",)`` (maps the kernel's zero page), ``("shared", content)`` (present, mapped more than
    once, as a KSM page is) or a content (present, the process's own page).
    """

    def __init__(self, root):
        self.root = str(root)
        self.next_pfn = 0x10000
        os.makedirs(self.root, exist_ok=True)
        with open(os.path.join(self.root, "kpageflags"), "wb") as handle:
            handle.seek(ZERO_PFN * 8)
            handle.write(struct.pack("=Q", ke.KPF_ZERO_PAGE))

    def process(self, pid, name, areas, mem=True):
        """``areas``: (start address, pages, mergeable) tuples."""
        base = os.path.join(self.root, str(pid))
        os.makedirs(base)
        with open(os.path.join(base, "cmdline"), "wb") as handle:
            handle.write(b"\0".join([b"/usr/bin/qemu-system-x86_64", b"-name",
                                     ("guest=%s,debug-threads=on" % name.replace(",", ",,")).encode(), b""]))
        smaps = []
        with open(os.path.join(base, "pagemap"), "wb") as pagemap, open(os.path.join(base, "mem"), "wb") as memory:
            for start, pages, mergeable in areas:
                end = start + len(pages) * PS
                smaps.append("%012x-%012x rw-p 00000000 00:00 0 " % (start, end))
                smaps.append("Size:             %8d kB" % (len(pages) * PS // 1024))
                smaps.append("Rss:                     0 kB")
                smaps.append("VmFlags: rd wr mr mw me ac sd%s" % (" mg" if mergeable else ""))
                for index, page in enumerate(pages):
                    entry, content = self.entry(page)
                    pagemap.seek((start // PS + index) * 8)
                    pagemap.write(struct.pack("=Q", entry))
                    if content is not None:
                        memory.seek(start + index * PS)
                        memory.write(content)
        with open(os.path.join(base, "smaps"), "w", encoding="ascii") as handle:
            handle.write("\n".join(smaps) + "\n")
        if not mem:
            os.remove(os.path.join(base, "mem"))
        return pid

    def entry(self, page):
        self.next_pfn += 1
        if page is None:
            return 0, None
        if isinstance(page, bytes):
            return ke.PM_PRESENT | ke.PM_EXCLUSIVE | self.next_pfn, page
        kind = page[0]
        if kind == "swap":
            return ke.PM_SWAPPED | 0x4200, None
        if kind == "file":
            return ke.PM_PRESENT | ke.PM_FILE | ke.PM_EXCLUSIVE | self.next_pfn, page[1]
        if kind == "zeromap":
            return ke.PM_PRESENT | ZERO_PFN, ZERO
        if kind == "shared":
            return ke.PM_PRESENT | self.next_pfn, page[1]
        raise ValueError(page)


def two_guests(root):
    """Guest a: X x4, Y, own zero x2, a KSM-shared zero page, and what KSM does not scan; guest b: X, Y, Z, zero."""
    proc = FakeProc(root)
    proc.process(101, "a", [
        (0x100000, [X, X, X, X, Y, ZERO, ZERO, None, ("swap",), ("file", X), ("zeromap",), ("shared", ZERO),
                    None, None, None, None], True),
        (0x200000, [X, X, X, X], False),                   # not mergeable: never read
    ])
    proc.process(202, "b", [(0x300000, [X, Y, Z, ZERO], True)])
    return proc


def estimate(root, **kwargs):
    kwargs.setdefault("page_size", PS)
    return ke.estimate_pages([("a", 101), ("b", 202)], proc_dir=str(root), **kwargs)


# ------------------------------------------------------------------ parsing

def test_smaps_mergeable_areas():
    text = (
        "55d0c0000000-55d0c0001000 r--p 00000000 fd:01 1234   /usr/bin/qemu-system-x86_64\n"
        "Size:                  4 kB\n"
        "VmFlags: rd mr mw me dw sd\n"
        "7f0000000000-7f0040000000 rw-p 00000000 00:00 0 \n"
        "Size:            1048576 kB\n"
        "THPeligible:    1\n"
        "VmFlags: rd wr mr mw me ac sd hg mg\n"
        "7f0040000000-7f0040001000 ---p 00000000 00:00 0 \n"
        "VmFlags: mr mw me sd mg\n"
        "7ffd00000000-7ffd00021000 rw-p 00000000 00:00 0                          [stack]\n"
        "VmFlags: rd wr mr mw me gd ac\n"
    )
    assert ke.parse_smaps_mergeable(text) == [(0x7f0000000000, 0x7f0040000000), (0x7f0040000000, 0x7f0040001000)]
    assert ke.parse_smaps_mergeable("") == []


@pytest.mark.parametrize("cmdline, name", [
    (b"qemu-system-x86_64\0-name\0guest=web1,debug-threads=on\0-S\0", "web1"),
    (b"qemu\0-name\0guest=a,,b,debug-threads=on\0", "a,b"),
    (b"qemu\0-name\0guest=a,,\0", "a,"),
    (b"qemu\0-name\0old-style\0", "old-style"),
    (b"qemu\0-machine\0pc\0", None),
    (b"", None),
])
def test_qemu_name_of(cmdline, name):
    assert ke.qemu_name_of(cmdline) == name


def test_guest_pid_from_the_pid_file(tmp_path):
    proc = FakeProc(tmp_path / "proc")
    proc.process(4242, "web,1", [])
    (tmp_path / "run").mkdir()
    (tmp_path / "run" / "web,1.pid").write_text("4242")
    assert ke.guest_pid("web,1", str(tmp_path / "run"), proc.root) == 4242


def test_guest_pid_refuses_a_stale_pid_file(tmp_path):
    proc = FakeProc(tmp_path / "proc")
    proc.process(4242, "other", [])
    (tmp_path / "run").mkdir()
    (tmp_path / "run" / "web1.pid").write_text("4242\n")
    with pytest.raises(ke.EstimateError, match="process 4242 of pid file .*web1.pid is not its QEMU"):
        ke.guest_pid("web1", str(tmp_path / "run"), proc.root)
    (tmp_path / "run" / "web1.pid").write_text("4243\n")
    with pytest.raises(ke.EstimateError, match="guest web1: its QEMU process 4243 is gone"):
        ke.guest_pid("web1", str(tmp_path / "run"), proc.root)
    with pytest.raises(ke.EstimateError, match="guest db1: cannot read its pid file .*db1.pid: No such file.*qemu_pid_dir"):
        ke.guest_pid("db1", str(tmp_path / "run"), proc.root)


# ------------------------------------------------------------------ counts

def test_exact_counts(tmp_path):
    two_guests(tmp_path)
    result = estimate(tmp_path)
    # read: a's X x4, Y, zero x2, shared zero; b's X, Y, Z, zero = 12 pages; contents X:5 Y:2 Z:1 zero:4
    assert result == {
        "pages_sharing": 12 - 4, "pages_shared": 3, "saving_mib": 0,
        "present_pages": 12, "distinct_pages": 4, "zero_pages": 4,
        "zero_page_mappings": 1, "swapped_pages": 1, "file_pages": 1,
        "use_zero_pages": False, "max_page_sharing": None,
        "guests": ["a", "b"], "read_mib": 0.05, "budget_mib": 4096,   # 13 pages: the zero page mapping too
        "elapsed_s": result["elapsed_s"], "method": ke.METHOD, "reason": None,
    }


def test_zero_pages_apart_with_use_zero_pages(tmp_path):
    two_guests(tmp_path)
    result = estimate(tmp_path, use_zero_pages=True)
    assert result["use_zero_pages"] is True
    assert result["zero_pages"] == 4
    assert result["pages_sharing"] == 4 + 1          # X: 5 copies, Y: 2; the zero pages are not in it
    assert result["pages_shared"] == 2
    assert result["present_pages"] == 12 and result["distinct_pages"] == 4


def test_max_page_sharing_splits_ksm_pages(tmp_path):
    two_guests(tmp_path)
    result = estimate(tmp_path, max_page_sharing=2)
    # X: 5 copies -> 3 KSM pages, 2 sharing; Y: 2 -> 1, 1; zero: 4 -> 2, 2
    assert (result["pages_shared"], result["pages_sharing"]) == (6, 5)
    assert result["max_page_sharing"] == 2


def test_without_kpageflags_a_zero_page_mapping_counts_as_a_zero_page(tmp_path):
    two_guests(tmp_path)
    os.remove(str(tmp_path / "kpageflags"))
    result = estimate(tmp_path)
    assert result["zero_page_mappings"] == 0
    assert result["zero_pages"] == 5 and result["present_pages"] == 13


def test_saving_mib(tmp_path):
    proc = FakeProc(tmp_path)
    proc.process(101, "a", [(0x100000, [X] * 300 + [ZERO] * 100, True)])
    proc.process(202, "b", [(0x400000, [X] * 300 + [Y], True)])
    result = estimate(tmp_path, use_zero_pages=True)
    assert result["pages_sharing"] == 599 and result["zero_pages"] == 100
    assert result["saving_mib"] == (599 + 100) * PS // 1048576 == 2
    assert result["read_mib"] == 2.74                # 701 pages
    assert estimate(tmp_path)["saving_mib"] == (599 + 99) * PS // 1048576


def test_no_mergeable_memory_is_a_zero_estimate(tmp_path):
    proc = FakeProc(tmp_path)
    proc.process(101, "a", [(0x100000, [X, X], False)])
    proc.process(202, "b", [])
    result = estimate(tmp_path)
    assert (result["pages_sharing"], result["present_pages"], result["saving_mib"], result["reason"]) == (0, 0, 0, None)
    assert ke.estimate_pages([], proc_dir=str(tmp_path), page_size=PS)["pages_sharing"] == 0


# ------------------------------------------------------------------ budget and failures

def test_over_the_budget_nothing_is_read(tmp_path):
    proc = FakeProc(tmp_path)
    # 300 + 301 present pages = 2.3 MiB; no mem file: reading it would give another reason
    proc.process(101, "a", [(0x100000, [X] * 300, True)], mem=False)
    proc.process(202, "b", [(0x400000, [X] * 301, True)], mem=False)
    result = estimate(tmp_path, max_mib=2)
    assert result["reason"] == "3 MiB of mergeable guest memory is over the budget of 2 MiB (ksm_estimate_max_mib)"
    assert result["pages_sharing"] is None and result["saving_mib"] is None and result["present_pages"] is None
    assert result["read_mib"] == 0.0 and result["budget_mib"] == 2
    assert result["guests"] == ["a", "b"]


def test_memory_growing_over_the_budget_while_read_stops_the_estimate(tmp_path, monkeypatch):
    proc = FakeProc(tmp_path)
    proc.process(101, "a", [(0x100000, [X] * 200 + [None] * 200, True)])
    proc.process(202, "b", [(0x400000, [Y] * 50 + [None] * 100, True)])
    chunks = ke._Process.pagemap_chunks

    def growing(self):
        for address, data in chunks(self):
            if self.mem_fd is not None:   # the second pass: every page is present now
                data = struct.pack("=Q", ke.PM_PRESENT | ke.PM_EXCLUSIVE | 1) * (len(data) // 8)
            yield address, data

    monkeypatch.setattr(ke._Process, "pagemap_chunks", growing)
    result = estimate(tmp_path, max_mib=1)
    assert result["reason"] == "the mergeable guest memory grew over the budget of 1 MiB while it was read"
    assert result["pages_sharing"] is None
    assert result["read_mib"] <= 1.0


def test_permission_denied_on_mem(tmp_path, monkeypatch):
    two_guests(tmp_path)
    real_open = os.open

    def deny(path, flags, *args):
        if path.endswith("/mem"):
            raise OSError(errno.EACCES, os.strerror(errno.EACCES), path)
        return real_open(path, flags, *args)

    monkeypatch.setattr(os, "open", deny)
    result = estimate(tmp_path)
    assert result["reason"] == "guest a: cannot open %s/101/mem: Permission denied (reading guest memory needs root)" % tmp_path
    assert result["pages_sharing"] is None and result["read_mib"] == 0.0


def test_guest_exiting_mid_read(tmp_path):
    two_guests(tmp_path)
    # b's memory ends before its pages: the process went away while it was read
    with open(str(tmp_path / "202" / "mem"), "r+b") as handle:
        handle.truncate(0x300000 + PS)
    result = estimate(tmp_path)
    assert result["reason"] == ("guest b: %s/202/mem gave 4096 of 16384 bytes at 0x300000 (its QEMU process 202 exited?)"
                                % tmp_path)
    assert result["pages_sharing"] is None and result["present_pages"] is None
    assert result["read_mib"] == 0.04                # a's 9 pages were read before


def test_unreadable_pagemap_and_vanished_process(tmp_path):
    two_guests(tmp_path)
    os.remove(str(tmp_path / "202" / "pagemap"))
    result = estimate(tmp_path)
    assert result["reason"].startswith("guest b: cannot open %s/202/pagemap: No such file" % tmp_path)
    result = ke.estimate_pages([("gone", 999)], proc_dir=str(tmp_path), page_size=PS)
    assert result["reason"].startswith("guest gone: cannot read %s/999/smaps: No such file" % tmp_path)


def test_short_pagemap(tmp_path):
    two_guests(tmp_path)
    with open(str(tmp_path / "202" / "pagemap"), "r+b") as handle:
        handle.truncate(0x300000 // PS * 8 + 8)
    result = estimate(tmp_path)
    assert result["reason"] == "guest b: %s/202/pagemap ended early at 0x300000 (its QEMU process 202 exited?)" % tmp_path


# ------------------------------------------------------------------ host_estimate (libvirt side faked)

class FakeConn:
    def __init__(self, hv_type="QEMU", names=("b", "a")):
        self.hv_type = hv_type
        self.names = names

    def getType(self):
        return self.hv_type

    def listAllDomains(self, flags):
        assert flags == ke.VIR_CONNECT_LIST_DOMAINS_ACTIVE
        return [FakeDomain(name) for name in self.names]


class FakeDomain:
    def __init__(self, name):
        self._name = name

    def name(self):
        return self._name


class FakeClient:
    def __init__(self, conn):
        self.conn = conn

    @staticmethod
    def try_call(func, *args):
        return func(*args), None


KSM_FACTS = {"available": True, "path": "/sys/kernel/mm/ksm",
             "settings": {"run": 0, "use_zero_pages": 1, "max_page_sharing": 256}}


def pid_files(tmp_path):
    run = tmp_path / "run"
    run.mkdir()
    (run / "a.pid").write_text("101")
    (run / "b.pid").write_text("202")
    return str(run)


def test_host_estimate_reads_every_running_guest(tmp_path):
    two_guests(tmp_path / "proc")
    result = ke.host_estimate(FakeClient(FakeConn()), KSM_FACTS, pid_dir=pid_files(tmp_path),
                              proc_dir=str(tmp_path / "proc"), max_mib=64, page_size=PS)
    assert result["reason"] is None
    assert result["guests"] == ["a", "b"]
    assert result["use_zero_pages"] is True and result["max_page_sharing"] == 256
    assert (result["pages_sharing"], result["zero_pages"], result["budget_mib"]) == (5, 4, 64)


def test_host_estimate_reasons(tmp_path):
    two_guests(tmp_path / "proc")
    pid_dir = pid_files(tmp_path)
    proc_dir = str(tmp_path / "proc")
    result = ke.host_estimate(FakeClient(FakeConn(hv_type="TEST")), KSM_FACTS, pid_dir, proc_dir, page_size=PS)
    assert result["reason"] == "the estimate reads QEMU processes; this hypervisor is TEST"
    assert result["pages_sharing"] is None
    result = ke.host_estimate(FakeClient(FakeConn(names=("a", "c"))), KSM_FACTS, pid_dir, proc_dir, page_size=PS)
    assert result["reason"].startswith("guest c: cannot read its pid file %s/c.pid" % pid_dir)
    assert result["guests"] == ["a", "c"]
    result = ke.host_estimate(FakeClient(FakeConn()), {"available": False, "path": "/sys/kernel/mm/ksm"}, pid_dir,
                              proc_dir, page_size=PS)
    assert result["reason"] == "KSM is not available on this host (no /sys/kernel/mm/ksm)"


# ------------------------------------------------------------------ a real process

CHILD = r"""
import mmap, sys
ps = mmap.PAGESIZE
area = mmap.mmap(-1, 64 * ps, flags=mmap.MAP_PRIVATE | mmap.MAP_ANONYMOUS)
if hasattr(mmap, "MADV_NOHUGEPAGE"):
    area.madvise(mmap.MADV_NOHUGEPAGE)      # 4 KiB pages only: a huge page would make all 512 present
area.madvise(mmap.MADV_MERGEABLE)
for i in range(0, 10):
    area[i * ps:(i + 1) * ps] = b"A" * ps     # 10 identical pages
for i in range(10, 15):
    area[i * ps:(i + 1) * ps] = bytes([i]) * ps   # 5 unique pages
for i in range(15, 20):
    area[i * ps:(i + 1) * ps] = b"\0" * ps    # 5 zero pages of its own (written)
for i in range(20, 24):
    area[i * ps]                              # 4 pages only read: the kernel's zero page
sys.stdout.write("ready\n")
sys.stdout.flush()
sys.stdin.read()
"""


def _pfns_visible():
    """Whether this process sees PFNs in pagemap and can read /proc/kpageflags (CAP_SYS_ADMIN)."""
    if not os.access("/proc/kpageflags", os.R_OK):
        return False
    buffer = bytearray(b"\1" * mmap.PAGESIZE)       # written: present, with a page of its own
    address = ctypes.addressof((ctypes.c_char * len(buffer)).from_buffer(buffer))
    with open("/proc/self/pagemap", "rb") as handle:
        handle.seek(address // mmap.PAGESIZE * 8)
        entry = struct.unpack("=Q", handle.read(8))[0]
    return bool(entry & ke.PM_PFN_MASK)


def _ksm_setting(name):
    try:
        with open("/sys/kernel/mm/ksm/" + name, encoding="ascii") as handle:
            return int(handle.read())
    except (OSError, ValueError):
        return None


@pytest.mark.skipif(not sys.platform.startswith("linux") or not hasattr(mmap, "MADV_MERGEABLE"),
                    reason="needs Linux and mmap.madvise(MADV_MERGEABLE)")
def test_a_real_process(tmp_path):
    child = subprocess.Popen([sys.executable, "-c", CHILD, "-name", "guest=real-guest,debug-threads=on"],
                             stdin=subprocess.PIPE, stdout=subprocess.PIPE)
    try:
        if child.stdout.readline() != b"ready\n":
            pytest.skip("the child could not make a mergeable area (no KSM in this kernel?)")
        (tmp_path / "real-guest.pid").write_text("%d\n" % child.pid)
        pid = ke.guest_pid("real-guest", str(tmp_path))
        assert pid == child.pid
        result = ke.estimate_pages([("real-guest", pid)], use_zero_pages=False, max_page_sharing=256)
    finally:
        child.stdin.close()
        child.wait()
    assert result["reason"] is None, result["reason"]
    assert result["guests"] == ["real-guest"]
    assert result["swapped_pages"] == 0 and result["file_pages"] == 0
    # 10 A + 5 unique + 5 zeros, and the 4 read-only pages either as zero page mappings or as zero pages
    assert result["zero_pages"] + result["zero_page_mappings"] == 9
    assert result["present_pages"] + result["zero_page_mappings"] == 24
    if _ksm_setting("run") != 1 and _pfns_visible():   # KSM running could merge the pages while they are read
        assert result["zero_page_mappings"] == 4
        assert result["present_pages"] == 20
        assert result["distinct_pages"] == 1 + 5 + 1
        assert result["pages_sharing"] == 9 + 4      # A: 10 copies -> 9; zero: 5 copies -> 4
        assert result["pages_shared"] == 2
