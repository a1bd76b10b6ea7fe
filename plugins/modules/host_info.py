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
options: {}
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
    module, client = create_module(argument_spec={}, supports_check_mode=True)
    try:
        host = collect_host_facts(client)
    except HostFactsError as error:
        client.fail(str(error))
        return
    client.close()
    module.exit_json(changed=False, host=host)


if __name__ == "__main__":
    main()
