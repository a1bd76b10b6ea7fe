#!/usr/bin/python
# -*- coding: utf-8 -*-
# Copyright: autopilot.kvm contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)

from __future__ import annotations

DOCUMENTATION = r"""
module: host_info
short_description: Gather facts about a KVM host
version_added: 0.1.0
author:
  - autopilot.kvm developers (@autopilot)
description:
  - Gathers the facts about a KVM host that the pool's planner needs. Node and CPU (model,
    vendor, features, topology), NUMA cells and their free memory, the libvirt and QEMU versions,
    the host UUID and the address other hosts should use to migrate guests here all come from libvirt.
  - Memory (from C(/proc/meminfo)), KSM settings and counters (from C(/sys/kernel/mm/ksm)), the
    CPU time of the C(ksmd) kernel thread, load averages and the cgroup version are read from the
    files of the managed host that runs the module. Connect to the local hypervisor (a local O(uri))
    so that both halves describe the same machine.
  - Each file is read once. A missing or malformed C(/proc/meminfo) or C(/proc/loadavg) fails
    the module with a message naming the file; it is never retried.
  - The module only reads; it never changes the host.
  - With O(ksm_estimate=true) it also estimates how much memory KSM would save if it ran, from the
    running guests' page contents (see RV(host.ksm.estimate)).
options:
  ksm_estimate:
    description:
      - Estimate what KSM would save on this host from the running guests' actual page contents,
        returned in RV(host.ksm.estimate).
      - For each running guest (the active domains of O(uri), whose QEMU process is found from
        libvirt's pid file in O(qemu_pid_dir)), the mergeable memory areas (C(/proc/PID/smaps) entries whose
        C(VmFlags) include C(mg)) are looked up in C(/proc/PID/pagemap), their present anonymous pages
        are read from C(/proc/PID/mem) and hashed, and the contents are counted over all guests together.
      - This reads guest memory. It is read-only and needs root (C(/proc/PID/mem) needs ptrace access,
        telling the kernel's zero page apart needs C(CAP_SYS_ADMIN)). Page contents never leave the host and
        are not kept (only their hashes, while it runs); only counts are returned.
      - It reads at most O(ksm_estimate_max_mib) MiB, at a few seconds per GiB (hashing each 4 KiB page in Python).
      - Every failure (no KSM, a hypervisor other than QEMU, no pid file, permission denied, a guest
        exiting while it is read, the budget) gives V(null) numbers and the reason in
        RV(host.ksm.estimate.reason); it never fails the module.
    type: bool
    default: false
  ksm_estimate_max_mib:
    description:
      - The budget of O(ksm_estimate), in MiB of guest memory. When the guests' present mergeable memory is
        larger, nothing of it is read and the estimate is V(null) with the reason (never a partial number).
      - Memory that grows over the budget while it is read stops the estimate the same way.
      - Counting the pages costs memory in the module too, about 100 bytes per distinct page (about
        100 MiB for 4 GiB of distinct contents).
    type: int
    default: 4096
  qemu_pid_dir:
    description:
      - The directory where libvirt's QEMU driver writes C(<guest>.pid) for each running guest, used by
        O(ksm_estimate). It is C(<libvirt run directory>/qemu), that is C(/run/libvirt/qemu) for C(qemu:///system)
        and C($XDG_RUNTIME_DIR/libvirt/qemu/run) for C(qemu:///session).
    type: path
    default: /run/libvirt/qemu
extends_documentation_fragment:
  - autopilot.kvm._libvirt
  - autopilot.kvm._libvirt.actiongroup
  - autopilot.kvm._attributes
  - autopilot.kvm._attributes.info_module
notes:
  - The migration address is, in this order, the C(migration_host) set in
    C(/etc/libvirt/qemu.conf) (when the file is readable, which usually needs root), else the
    IPv4 address of the interface carrying the default route (from C(/proc/net/route)), else
    the host name libvirt reports. RV(host.migration.source) says which one was used.
  - C(ksmd) is found by scanning C(/proc/*/stat) for the kernel thread called C(ksmd); inside a
    PID namespace that hides kernel threads RV(host.ksm.ksmd) is V(null).
  - The KSM estimate is a snapshot. KSM merges only pages that stay the same between two of its scans,
    so guests that rewrite much of their memory share less than predicted. It counts contents across
    NUMA nodes, as KSM does with C(merge_across_nodes=1); with C(merge_across_nodes=0) it is an upper bound.
seealso:
  - module: autopilot.kvm.guest_info
"""

EXAMPLES = r"""
- name: Gather the facts of a KVM host
  autopilot.kvm.host_info:
  register: kvm_host

- name: Show the memory a new guest could get
  ansible.builtin.debug:
    msg: "{{ kvm_host.host.memory.available_mib }} MiB available, KSM {{ kvm_host.host.ksm.run_state }}"

- name: Estimate what KSM would save, reading at most 2 GiB of guest memory
  autopilot.kvm.host_info:
    ksm_estimate: true
    ksm_estimate_max_mib: 2048
  register: kvm_host

- name: Show the estimate, or why there is none
  ansible.builtin.debug:
    msg: >-
      {{ kvm_host.host.ksm.estimate.reason
         or ('KSM would save %d MiB' % kvm_host.host.ksm.estimate.saving_mib) }}

- name: Gather the facts through a non-default URI
  autopilot.kvm.host_info:
    uri: qemu:///system
  register: kvm_host

- name: Set the URI once for every libvirt module of a play
  module_defaults:
    group/autopilot.kvm.libvirt:
      uri: qemu:///system
  block:
    - name: Gather the host facts with the group default
      autopilot.kvm.host_info:
      register: kvm_host
"""

RETURN = r"""
host:
  description: The host's facts.
  returned: success
  type: dict
  contains:
    hostname:
      description: The host name libvirt reports.
      type: str
      returned: success
      sample: kvm1.example.com
    uuid:
      description: The host UUID from the capabilities XML; V(null) when the driver reports none.
      type: str
      returned: success
      sample: 4c4c4544-0033-4610-8048-b4c04f4e4a32
    node:
      description: virNodeGetInfo, as libvirt reports it.
      type: dict
      returned: success
      contains:
        arch:
          description: The CPU architecture (or the model string some drivers put there).
          type: str
          returned: success
          sample: x86_64
        memory_mib:
          description: The memory size in MiB.
          type: int
          returned: success
          sample: 64208
        cpus:
          description: The number of active CPUs.
          type: int
          returned: success
          sample: 16
        mhz:
          description: The expected CPU frequency in MHz.
          type: int
          returned: success
          sample: 2400
        numa_nodes:
          description: The number of NUMA nodes (1 for a uniform memory access).
          type: int
          returned: success
          sample: 1
        sockets_per_node:
          description: CPU sockets per NUMA node.
          type: int
          returned: success
          sample: 1
        cores_per_socket:
          description: Cores per socket.
          type: int
          returned: success
          sample: 8
        threads_per_core:
          description: Threads per core.
          type: int
          returned: success
          sample: 2
    cpu:
      description: The host CPU from the capabilities XML.
      type: dict
      returned: success
      contains:
        arch:
          description: The CPU architecture.
          type: str
          returned: success
          sample: x86_64
        model:
          description: The CPU model name libvirt uses; V(null) when the driver reports none.
          type: str
          returned: success
          sample: EPYC-Rome
        vendor:
          description: The CPU vendor; V(null) when the driver reports none.
          type: str
          returned: success
          sample: AMD
        features:
          description: The CPU feature names, sorted.
          type: list
          elements: str
          returned: success
          sample: [svm, x2apic]
        topology:
          description:
            - The CPU topology. Taken from the capabilities XML; when it has none, derived from
              virNodeGetInfo (sockets = NUMA nodes x sockets per node) and RV(host.cpu.topology.dies) is V(null).
          type: dict
          returned: success
          contains:
            sockets:
              description: CPU sockets.
              type: int
              returned: success
              sample: 1
            dies:
              description: Dies per socket, V(null) when unknown.
              type: int
              returned: success
              sample: 1
            cores:
              description: Cores per die (or per socket).
              type: int
              returned: success
              sample: 8
            threads:
              description: Threads per core.
              type: int
              returned: success
              sample: 2
        count:
          description: The number of active CPUs.
          type: int
          returned: success
          sample: 16
        mhz:
          description: The expected CPU frequency in MHz.
          type: int
          returned: success
          sample: 2400
    numa:
      description: NUMA cells with their memory and free memory.
      type: dict
      returned: success
      contains:
        cell_count:
          description: The number of cells in the capabilities XML (0 when the driver lists none).
          type: int
          returned: success
          sample: 1
        cells:
          description:
            - One entry per cell. Keys are C(id), C(cpus) (CPU ids), C(cpu_count), C(memory_kib),
              C(memory_mib), C(memory_bytes) (the cell's memory, from the capabilities XML) and
              C(free_kib), C(free_mib), C(free_bytes) (virNodeGetCellsFreeMemory, whose result is bytes).
            - Free memory values are V(null) when the driver cannot report them (see RV(host.numa.error)).
          type: list
          elements: dict
          returned: success
          sample:
            - id: 0
              cpus: [0, 1, 2, 3]
              cpu_count: 4
              memory_kib: 16337916
              memory_mib: 15955
              memory_bytes: 16730025984
              free_kib: 8104132
              free_mib: 7914
              free_bytes: 8298631168
        error:
          description: libvirt's error text when free memory per cell is unavailable, else V(null).
          type: str
          returned: success
          sample: null
    memory:
      description:
        - Memory from C(/proc/meminfo) of the host running the module, parsed exactly.
        - Every named value comes in KiB (C(_kib), as the file's C(kB) means), MiB (C(_mib), KiB / 1024
          rounded down) and bytes (C(_bytes), KiB x 1024). A field the kernel does not have is V(null).
        - The names are C(total) (MemTotal), C(free) (MemFree), C(available) (MemAvailable),
          C(used) (MemTotal - MemAvailable), C(buffers), C(cached), C(shmem), C(swap_total),
          C(swap_free) and C(committed_as) (Committed_AS).
      type: dict
      returned: success
      contains:
        source:
          description: The file that was read.
          type: str
          returned: success
          sample: /proc/meminfo
        total_kib:
          description: MemTotal in KiB (the other C(total_*), C(free_*), C(available_*) ... keys follow the same pattern).
          type: int
          returned: success
          sample: 65749200
        total_mib:
          description: MemTotal in MiB, rounded down.
          type: int
          returned: success
          sample: 64208
        total_bytes:
          description: MemTotal in bytes.
          type: int
          returned: success
          sample: 67327180800
        available_kib:
          description: MemAvailable in KiB.
          type: int
          returned: success
          sample: 40120432
        available_mib:
          description: MemAvailable in MiB, rounded down.
          type: int
          returned: success
          sample: 39180
        available_bytes:
          description: MemAvailable in bytes.
          type: int
          returned: success
          sample: 41083322368
        free_kib:
          description: MemFree in KiB.
          type: int
          returned: success
          sample: 30211200
        used_kib:
          description: MemTotal - MemAvailable in KiB.
          type: int
          returned: success
          sample: 25628768
        swap_total_kib:
          description: SwapTotal in KiB.
          type: int
          returned: success
          sample: 0
        hugepages:
          description: Huge page counts (C(total), C(free), C(reserved), C(surplus)) and C(size_kib).
          type: dict
          returned: success
          sample: {total: 0, free: 0, reserved: 0, surplus: 0, size_kib: 2048}
        meminfo_kib:
          description: Every C(kB) field of the file, by its name in the file, in KiB.
          type: dict
          returned: success
          sample: {MemTotal: 65749200, MemFree: 30211200, MemAvailable: 40120432}
        meminfo_counts:
          description: Every unitless field of the file (huge page counts), by its name in the file.
          type: dict
          returned: success
          sample: {HugePages_Total: 0, HugePages_Free: 0}
    ksm:
      description: Kernel samepage merging, from C(/sys/kernel/mm/ksm) of the host running the module.
      type: dict
      returned: success
      contains:
        available:
          description: Whether the KSM sysfs directory exists. When V(false) the other values are empty or V(null).
          type: bool
          returned: success
          sample: true
        path:
          description: The sysfs directory read.
          type: str
          returned: success
          sample: /sys/kernel/mm/ksm
        run:
          description: The C(run) setting (0 stopped, 1 running, 2 unmerging).
          type: int
          returned: success
          sample: 1
        run_state:
          description: C(run) as a word.
          type: str
          returned: success
          choices: [stopped, running, unmerging, unknown]
          sample: running
        settings:
          description:
            - Every readable KSM file that is not a counter (C(run), C(pages_to_scan), C(sleep_millisecs),
              C(merge_across_nodes), C(max_page_sharing), C(use_zero_pages), C(advisor_mode) ...).
            - Integers are integers; a choice like C([none] scan-time) is the selected word.
          type: dict
          returned: success
          sample: {run: 1, pages_to_scan: 100, sleep_millisecs: 20, merge_across_nodes: 1, advisor_mode: none}
        counters:
          description:
            - The KSM counters the kernel has (C(pages_shared), C(pages_sharing), C(pages_unshared),
              C(pages_volatile), C(full_scans), C(general_profit), C(ksm_zero_pages) ...).
          type: dict
          returned: success
          sample: {pages_shared: 8016, pages_sharing: 69962, full_scans: 12}
        sharing_bytes:
          description: C(pages_sharing) times the page size, about the memory KSM saves.
          type: int
          returned: success
          sample: 286564352
        ksmd:
          description:
            - The C(ksmd) kernel thread's CPU time, or V(null) when it is not visible.
            - C(pid), C(utime_ticks), C(stime_ticks), C(clock_ticks_per_second) and C(cpu_seconds)
              ((utime + stime) / SC_CLK_TCK, rounded to 0.01 s).
          type: dict
          returned: success
          sample: {pid: 36, utime_ticks: 0, stime_ticks: 120, clock_ticks_per_second: 100, cpu_seconds: 1.2}
        estimate:
          description:
            - What KSM would save if it ran, estimated from the running guests' page contents (O(ksm_estimate)).
            - Absent when O(ksm_estimate=false) (the default).
            - A content found m times in the guests' present anonymous mergeable pages becomes
              ceil(m / C(max_page_sharing)) KSM pages (RV(host.ksm.estimate.pages_shared)) shared by m mappings,
              m - ceil(m / C(max_page_sharing)) of them counted in C(pages_sharing). Without a C(max_page_sharing)
              limit, RV(host.ksm.estimate.pages_sharing) is present pages - distinct contents.
            - When the estimate cannot be made, the counts are V(null) and RV(host.ksm.estimate.reason) says why.
          type: dict
          returned: when O(ksm_estimate=true)
          contains:
            pages_sharing:
              description:
                - The predicted C(pages_sharing) counter once KSM has merged everything it can. With
                  RV(host.ksm.estimate.use_zero_pages=true) all-zero pages are not in it (see RV(host.ksm.estimate.zero_pages)).
                - V(null) when the estimate could not be made.
              type: int
              returned: when O(ksm_estimate=true)
              sample: 69962
            pages_shared:
              description: The predicted C(pages_shared) counter (KSM pages), V(null) when the estimate could not be made.
              type: int
              returned: when O(ksm_estimate=true)
              sample: 8016
            saving_mib:
              description:
                - The memory KSM would save, in MiB rounded down, (RV(host.ksm.estimate.pages_sharing) +
                  RV(host.ksm.estimate.zero_pages) when RV(host.ksm.estimate.use_zero_pages=true)) x page size.
                - V(null) when the estimate could not be made.
              type: int
              returned: when O(ksm_estimate=true)
              sample: 273
            present_pages:
              description:
                - The present anonymous pages of the guests' mergeable areas that were read (mappings of the
                  kernel's zero page excepted), V(null) when the estimate could not be made.
              type: int
              returned: when O(ksm_estimate=true)
              sample: 262144
            distinct_pages:
              description: The number of distinct contents among them (the all-zero content included), V(null) when not made.
              type: int
              returned: when O(ksm_estimate=true)
              sample: 192182
            zero_pages:
              description:
                - Present pages whose content is all zero. With RV(host.ksm.estimate.use_zero_pages=true) KSM maps
                  them to the kernel's zero page and counts them in C(ksm_zero_pages), not C(pages_sharing); otherwise
                  they are merged like any other content and counted in RV(host.ksm.estimate.pages_sharing).
                - V(null) when the estimate could not be made.
              type: int
              returned: when O(ksm_estimate=true)
              sample: 20480
            zero_page_mappings:
              description:
                - Present pages that map the kernel's zero page (memory a guest only read, or pages KSM already
                  replaced). They take no memory and are not counted elsewhere. Telling them apart needs
                  C(CAP_SYS_ADMIN); without it they count as RV(host.ksm.estimate.zero_pages).
                - V(null) when the estimate could not be made.
              type: int
              returned: when O(ksm_estimate=true)
              sample: 0
            swapped_pages:
              description: Pages of the mergeable areas that are swapped out, not read; V(null) when not made.
              type: int
              returned: when O(ksm_estimate=true)
              sample: 0
            file_pages:
              description:
                - Present pages of the mergeable areas that are not private anonymous memory (file pages, shared
                  memory, the huge zero page), which KSM does not merge; not read. V(null) when not made.
              type: int
              returned: when O(ksm_estimate=true)
              sample: 0
            use_zero_pages:
              description: The KSM setting C(use_zero_pages) the estimate assumed (V(false) when the kernel has none).
              type: bool
              returned: when O(ksm_estimate=true)
              sample: false
            max_page_sharing:
              description: The KSM setting C(max_page_sharing) the estimate assumed, V(null) for no limit.
              type: int
              returned: when O(ksm_estimate=true)
              sample: 256
            guests:
              description: The running guests whose memory was read (or was to be read), sorted.
              type: list
              elements: str
              returned: when O(ksm_estimate=true)
              sample: [db1, web1]
            read_mib:
              description: MiB of guest memory read, to 0.01 MiB (0 when nothing was read).
              type: float
              returned: when O(ksm_estimate=true)
              sample: 1024.0
            budget_mib:
              description: O(ksm_estimate_max_mib).
              type: int
              returned: when O(ksm_estimate=true)
              sample: 4096
            elapsed_s:
              description: Seconds the estimate took, to 0.01 s.
              type: float
              returned: when O(ksm_estimate=true)
              sample: 1.37
            method:
              description: How the estimate is made.
              type: str
              returned: when O(ksm_estimate=true)
              sample: page hashes of mergeable guest memory (smaps mg + pagemap present)
            reason:
              description: V(null) when the estimate was made, else why it was not (the counts are then V(null)).
              type: str
              returned: when O(ksm_estimate=true)
              sample: 6144 MiB of mergeable guest memory is over the budget of 4096 MiB (ksm_estimate_max_mib)
    load:
      description: Load averages from C(/proc/loadavg).
      type: dict
      returned: success
      sample: {load1: 0.16, load5: 0.2, load15: 0.09, runnable: 1, tasks: 85, last_pid: 5889}
    cgroup:
      description: The cgroup layout, from C(/proc/self/mountinfo) (or C(/proc/mounts)).
      type: dict
      returned: success
      contains:
        version:
          description: V(v2) (unified only), V(hybrid) (cgroup2 and v1 hierarchies), V(v1) or V(none).
          type: str
          returned: success
          choices: [v2, hybrid, v1, none]
          sample: v2
        v2_mountpoint:
          description: Where cgroup2 is mounted, or V(null).
          type: str
          returned: success
          sample: /sys/fs/cgroup
        v2_controllers:
          description: The controllers in the cgroup2 root's C(cgroup.controllers), or V(null) when unreadable.
          type: list
          elements: str
          returned: success
          sample: [cpu, io, memory, pids]
        v1_controllers:
          description: The controllers (and C(name=) hierarchies) mounted as cgroup v1.
          type: list
          elements: str
          returned: success
          sample: []
        source:
          description: The file that was read.
          type: str
          returned: success
          sample: /proc/self/mountinfo
    libvirt:
      description: The connection and its versions.
      type: dict
      returned: success
      contains:
        uri:
          description: The canonical URI of the connection.
          type: str
          returned: success
          sample: qemu:///system
        version:
          description: The libvirt version (of the daemon for remote connections).
          type: str
          returned: success
          sample: 9.0.0
        version_int:
          description: The libvirt version as libvirt encodes it.
          type: int
          returned: success
          sample: 9000000
        hypervisor_type:
          description: The driver name.
          type: str
          returned: success
          sample: QEMU
        hypervisor_version:
          description: The hypervisor version, or V(null) when the driver cannot tell.
          type: str
          returned: success
          sample: 7.2.0
        hypervisor_version_int:
          description: The hypervisor version as libvirt encodes it.
          type: int
          returned: success
          sample: 7002000
        qemu_version:
          description: The QEMU version when the driver is QEMU, else V(null).
          type: str
          returned: success
          sample: 7.2.0
    migration:
      description: The address other hosts should use to migrate guests to this host.
      type: dict
      returned: success
      contains:
        address:
          description: The address or host name.
          type: str
          returned: success
          sample: 192.0.2.11
        source:
          description: Where it came from.
          type: str
          returned: success
          choices: [qemu.conf, default_route, hostname]
          sample: default_route
        interface:
          description: The default route's interface when RV(host.migration.source=default_route), else V(null).
          type: str
          returned: success
          sample: eth0
"""

from ansible_collections.autopilot.kvm.plugins.module_utils._libvirt_client import create_module
from ansible_collections.autopilot.kvm.plugins.module_utils._host_facts import (
    HostFactsError,
    collect_host_facts,
)


def main():
    module, client = create_module(
        argument_spec=dict(
            ksm_estimate=dict(type="bool", default=False),
            ksm_estimate_max_mib=dict(type="int", default=4096),
            qemu_pid_dir=dict(type="path", default="/run/libvirt/qemu"),
        ),
        supports_check_mode=True,
    )
    estimate = None
    if module.params["ksm_estimate"]:
        if module.params["ksm_estimate_max_mib"] < 1:
            module.fail_json(msg="ksm_estimate_max_mib must be at least 1, got %d" % module.params["ksm_estimate_max_mib"])
        estimate = dict(max_mib=module.params["ksm_estimate_max_mib"], pid_dir=module.params["qemu_pid_dir"])
    try:
        host = collect_host_facts(client, ksm_estimate=estimate)
    except HostFactsError as error:
        client.fail(str(error))
        return
    client.close()
    module.exit_json(changed=False, host=host)


if __name__ == "__main__":
    main()
