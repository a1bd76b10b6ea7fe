#!/usr/bin/python
# -*- coding: utf-8 -*-
# Copyright: autopilot.kvm contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)

from __future__ import annotations

DOCUMENTATION = r"""
module: guest_info
short_description: Gather facts about the guests of a KVM host
version_added: 0.1.0
author:
  - autopilot.kvm developers (@autopilot)
description:
  - Gathers, for every libvirt domain of the host (or those named in O(name)), its state, vCPUs,
    CPU time, memory, balloon statistics, block and interface counters and tuning (CPU shares and
    quotas, memtune, blkiotune).
  - With O(interval) above 0, running guests are sampled twice, O(interval) seconds apart, and
    the module returns rates (CPU percentage, disk and network bytes per second).
  - Values a driver cannot report, or that need a running guest, are V(null) and the reason is
    given next to them (C(error) keys) instead of failing the module.
  - The module only reads; it never changes a guest.
options:
  name:
    description:
      - Only gather the guests with these names.
      - Names that are not defined on the host are listed in RV(not_found); they are not an error.
      - When omitted, every guest of the host is gathered.
    type: list
    elements: str
    aliases: [names]
  interval:
    description:
      - Seconds between the two samples that rates are computed from.
      - V(0) disables rates (RV(guests.rates) is V(null)) and returns at once.
    type: float
    default: 1.0
extends_documentation_fragment:
  - autopilot.kvm._libvirt
  - autopilot.kvm._libvirt.actiongroup
  - autopilot.kvm._attributes
  - autopilot.kvm._attributes.info_module
notes:
  - Block counters come from C(virDomainBlockStats) for each C(<disk>) target of the domain XML,
    interface counters from C(virDomainInterfaceStats) by target device, or by MAC address when the
    driver does not know the target device.
  - The module sleeps O(interval) seconds once, whatever the number of guests; the samples of each
    guest are timed individually.
seealso:
  - module: autopilot.kvm.host_info
"""

EXAMPLES = r"""
- name: Gather the facts of every guest
  autopilot.kvm.guest_info:
  register: kvm_guests

- name: Show each running guest's CPU use
  ansible.builtin.debug:
    msg: "{{ item.key }}: {{ item.value.rates.cpu_percent }} % of one core"
  loop: "{{ kvm_guests.guests | dict2items | selectattr('value.rates') | list }}"
  loop_control:
    label: "{{ item.key }}"

- name: Gather two guests without rates
  autopilot.kvm.guest_info:
    name:
      - web1
      - db1
    interval: 0
  register: kvm_guests

- name: Sample rates over five seconds through an explicit URI
  autopilot.kvm.guest_info:
    uri: qemu:///system
    interval: 5
  register: kvm_guests
"""

RETURN = r"""
guests:
  description: The guests' facts, keyed by guest name.
  returned: success
  type: dict
  contains:
    name:
      description: The guest's name (the same as its key).
      type: str
      returned: success
      sample: web1
    uuid:
      description: The guest's UUID.
      type: str
      returned: success
      sample: 11111111-1111-4111-8111-111111111111
    id:
      description: The domain ID while it runs, else V(null).
      type: int
      returned: success
      sample: 3
    active:
      description: Whether the guest has a running process (running, blocked, paused, shutting down or PM-suspended).
      type: bool
      returned: success
      sample: true
    persistent:
      description: Whether the guest has a persistent definition; V(null) when the driver cannot tell.
      type: bool
      returned: success
      sample: true
    autostart:
      description: Whether the guest starts with the host; V(null) when the driver cannot tell.
      type: bool
      returned: success
      sample: false
    state:
      description: The state as a word.
      type: str
      returned: success
      choices: [nostate, running, blocked, paused, shutdown, shutoff, crashed, pmsuspended, unknown]
      sample: running
    state_code:
      description: The state as libvirt's number (virDomainState).
      type: int
      returned: success
      sample: 1
    state_reason:
      description: Why the guest is in its state (for example V(booted), V(migrated), V(user), V(migration), V(destroyed)).
      type: str
      returned: success
      sample: booted
    vcpus:
      description: The number of vCPUs the guest has now.
      type: int
      returned: success
      sample: 2
    vcpus_max:
      description: The maximum number of vCPUs (C(<vcpu>) of the XML).
      type: int
      returned: success
      sample: 2
    cpu_time_ns:
      description: The CPU time the guest used so far, in nanoseconds.
      type: int
      returned: success
      sample: 48772617035
    memory:
      description: The maximum (C(max_kib), C(max_mib)) and current (C(current_kib), C(current_mib)) memory; MiB are rounded down.
      type: dict
      returned: success
      sample: {max_kib: 1048576, max_mib: 1024, current_kib: 786432, current_mib: 768}
    balloon:
      description:
        - Balloon statistics from virDomainMemoryStats, in KiB.
        - A value the driver or guest did not report is V(null) and named in C(missing); it is never 0 by default.
      type: dict
      returned: success
      contains:
        device:
          description: The C(<memballoon>) model of the XML (V(virtio), V(none) ...), V(null) without one.
          type: str
          returned: success
          sample: virtio
        actual:
          description: The balloon's current size, in KiB.
          type: int
          returned: success
          sample: 786432
        unused:
          description: Memory the guest leaves unused, in KiB.
          type: int
          returned: success
          sample: 393216
        usable:
          description: Memory the guest could use without swapping, in KiB.
          type: int
          returned: success
          sample: 393216
        available:
          description: Memory the guest sees, in KiB.
          type: int
          returned: success
          sample: 786432
        rss:
          description: The guest process's resident set size on the host, in KiB.
          type: int
          returned: success
          sample: 393216
        last_update:
          description: When the guest last updated the statistics (seconds since the epoch).
          type: int
          returned: success
          sample: 1795421974
        missing:
          description: The names among C(actual), C(unused), C(usable), C(available), C(rss) and C(last_update) the driver did not report.
          type: list
          elements: str
          returned: success
          sample: [unused, usable, available, last_update]
        stats:
          description: Everything virDomainMemoryStats returned (swap_in, major_fault, disk_caches ... as well).
          type: dict
          returned: success
          sample: {actual: 786432, rss: 393216}
        error:
          description: Why there are no statistics (libvirt's text, or that the guest is not running), else V(null).
          type: str
          returned: success
          sample: null
    block:
      description:
        - One entry per C(<disk>) of the XML with C(dev) (target), C(bus), C(device) (disk, cdrom ...),
          C(type), C(path) (source), C(readonly), the counters C(rd_req), C(rd_bytes), C(wr_req),
          C(wr_bytes), C(errs) and C(error).
        - Counters are V(null) while the guest is not running, when the driver does not support one
          (libvirt reports -1), or when the call failed (then C(error) holds libvirt's text).
      type: list
      elements: dict
      returned: success
      sample:
        - dev: vda
          bus: virtio
          device: disk
          type: file
          path: /var/lib/libvirt/images/web1.qcow2
          readonly: false
          rd_req: 1200
          rd_bytes: 49152000
          wr_req: 300
          wr_bytes: 1228800
          errs: null
          error: null
    interfaces:
      description:
        - One entry per C(<interface>) of the XML with C(dev) (target), C(mac), C(type), C(source)
          (network, bridge or device), C(model), the counters C(rx_bytes), C(rx_packets), C(rx_errs),
          C(rx_drop), C(tx_bytes), C(tx_packets), C(tx_errs), C(tx_drop) and C(error), as for RV(guests.block).
      type: list
      elements: dict
      returned: success
      sample:
        - dev: vnet0
          mac: "52:54:00:00:00:01"
          type: network
          source: default
          model: virtio
          rx_bytes: 1024
          rx_packets: 10
          rx_errs: 0
          rx_drop: 0
          tx_bytes: 2048
          tx_packets: 12
          tx_errs: 0
          tx_drop: 0
          error: null
    tuning:
      description: Tuning parameters as the driver reports them.
      type: dict
      returned: success
      contains:
        scheduler:
          description:
            - virDomainGetSchedulerParameters (QEMU - C(cpu_shares), C(vcpu_period), C(vcpu_quota),
              C(emulator_period), C(emulator_quota), C(global_period), C(global_quota) ...); V(null) when unsupported.
          type: dict
          returned: success
          sample: {cpu_shares: 1024, vcpu_period: 100000, vcpu_quota: -1}
        memory:
          description:
            - memtune (C(hard_limit), C(soft_limit), C(swap_hard_limit), C(min_guarantee)) in KiB;
              V(null) for a value means unlimited. The whole value is V(null) when unsupported.
          type: dict
          returned: success
          sample: {hard_limit: 3072000, soft_limit: null, swap_hard_limit: null}
        blkio:
          description: blkiotune (C(weight), C(device_weight), C(device_read_bytes_sec) ...); V(null) when unsupported.
          type: dict
          returned: success
          sample: {weight: 500, device_weight: ""}
        errors:
          description: libvirt's text for each of C(scheduler), C(memory), C(blkio) that could not be read.
          type: dict
          returned: success
          sample: {}
    expectations:
      description:
        - What the guest declares it is owed, from the JSON list in its libvirt metadata element C(expectations) of
          namespace C(http://autopilot.kvm/xmlns/expectations/1) (see docs/planner.md). Empty when it declares none.
      type: list
      elements: dict
      returned: success
      sample: [{"type": "anti_affinity", "group": "web"}]
    expectations_error:
      description: Why the metadata expectations could not be read (invalid JSON, not a list); V(null) when fine.
      type: str
      returned: success
      sample: null
    rates:
      description:
        - Rates between two samples O(interval) seconds apart.
        - V(null) when O(interval=0) or when the guest was not running at both samples.
          A rate whose counter went backwards (guest restarted) or is not supported is V(null).
      type: dict
      returned: success
      contains:
        interval:
          description: The measured seconds between the two samples of this guest.
          type: float
          returned: success
          sample: 1.001
        cpu_percent:
          description: CPU use in percent of one host core (a guest using two full cores gives 200).
          type: float
          returned: success
          sample: 37.5
        cpu_percent_of_vcpus:
          description: RV(guests.rates.cpu_percent) divided by the guest's vCPU count (100 means every vCPU busy).
          type: float
          returned: success
          sample: 18.75
        disk_read_bytes_per_sec:
          description: Bytes read per second, summed over the guest's disks.
          type: float
          returned: success
          sample: 40960.0
        disk_write_bytes_per_sec:
          description: Bytes written per second, summed over the guest's disks.
          type: float
          returned: success
          sample: 8192.0
        disk_read_requests_per_sec:
          description: Read requests per second, summed over the guest's disks.
          type: float
          returned: success
          sample: 10.0
        disk_write_requests_per_sec:
          description: Write requests per second, summed over the guest's disks.
          type: float
          returned: success
          sample: 2.0
        net_rx_bytes_per_sec:
          description: Bytes received per second, summed over the guest's interfaces.
          type: float
          returned: success
          sample: 1500.0
        net_tx_bytes_per_sec:
          description: Bytes sent per second, summed over the guest's interfaces.
          type: float
          returned: success
          sample: 3000.0
not_found:
  description: The names in O(name) that are not guests of the host.
  returned: success
  type: list
  elements: str
  sample: [old-guest]
"""

from ansible_collections.autopilot.kvm.plugins.module_utils._libvirt_client import create_module
from ansible_collections.autopilot.kvm.plugins.module_utils._guest_facts import (
    GuestFactsError,
    collect_guests,
)


def main():
    argument_spec = dict(
        name=dict(type="list", elements="str", aliases=["names"]),
        interval=dict(type="float", default=1.0),
    )
    module, client = create_module(argument_spec=argument_spec, supports_check_mode=True)
    interval = module.params["interval"]
    if interval < 0:
        client.fail("interval must be 0 or more seconds, not %s" % interval)
        return
    try:
        guests, not_found = collect_guests(client, names=module.params["name"], interval=interval)
    except GuestFactsError as error:
        client.fail(str(error))
        return
    client.close()
    module.exit_json(changed=False, guests=guests, not_found=not_found)


if __name__ == "__main__":
    main()
