#!/usr/bin/python
# -*- coding: utf-8 -*-
# Copyright: autopilot.kvm contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)

from __future__ import annotations

DOCUMENTATION = r"""
module: tune
short_description: Tune a guest's CPU, memory, block I/O and network limits through libvirt
version_added: 0.1.0
author:
  - autopilot.kvm developers (@autopilot-kvm)
description:
  - Sets a guest's resource controls through libvirt, on the running guest (O(live)), in its persistent
    definition (O(config)), or both. CPU shares and CFS quotas and periods, memory soft, hard and swap limits,
    block I/O weight and per-device throttles, disk I/O limits and interface bandwidth.
  - Only the parameters given are read, compared and changed. Each is compared with the value libvirt reports,
    converted to the option's unit, so a second run with the same options reports no change.
  - All values are checked before anything is read or changed; a bad value fails the task with every problem
    named and nothing touched. A value libvirt refuses fails the task with libvirt's own message and the names
    of the parameters it was setting. The failure lists in C(applied) the parameters that were set before it.
  - Parameters are set in one libvirt call per parameter group (CPU, memory, block I/O, one device, one disk,
    one interface) and scope, the live scope first.
options:
  name:
    description: Name of the guest (libvirt domain) on the managed host.
    type: str
    required: true
  live:
    description:
      - Change the running guest. The guest must be running (or paused).
      - Changes made only live last until the guest stops.
    type: bool
    default: true
  config:
    description:
      - Change the guest's persistent definition, which applies from its next start. The guest must be persistent.
      - A parameter that is not set in the definition is reported as V(null) for this scope.
    type: bool
    default: false
  cpu:
    description:
      - CPU scheduler parameters (C(virsh schedinfo)). Periods and quotas are in microseconds.
      - A quota of V(-1) removes the limit.
    type: dict
    suboptions:
      shares:
        description: Relative CPU weight of the guest against the host's other guests (cgroup C(cpu.shares)).
        type: int
      vcpu_period:
        description: CFS period of each vCPU, 1000 to 1000000.
        type: int
      vcpu_quota:
        description: CFS quota of each vCPU per period, at least 1000, or V(-1).
        type: int
      emulator_period:
        description: CFS period of the emulator threads (everything that is not a vCPU), 1000 to 1000000.
        type: int
      emulator_quota:
        description: CFS quota of the emulator threads per period, at least 1000, or V(-1).
        type: int
      global_period:
        description: CFS period of the whole guest, 1000 to 1000000.
        type: int
      global_quota:
        description: CFS quota of the whole guest per period, at least 1000, or V(-1).
        type: int
      iothread_period:
        description: CFS period of each I/O thread, 1000 to 1000000.
        type: int
      iothread_quota:
        description: CFS quota of each I/O thread per period, at least 1000, or V(-1).
        type: int
  memory:
    description:
      - Memory limits of the guest's QEMU process (C(virsh memtune)), in MiB, or V(unlimited) to remove a limit.
      - The swap hard limit counts memory plus swap, so it cannot be lower than the hard limit.
      - A hard limit also caps the memory QEMU may lock. Set too low it can kill the guest.
    type: dict
    suboptions:
      soft_limit_mib:
        description: Memory the guest is pushed back to when the host is short of memory.
        type: raw
      hard_limit_mib:
        description: Most memory the guest's process may use.
        type: raw
      swap_hard_limit_mib:
        description: Most memory plus swap the guest's process may use.
        type: raw
  blkio:
    description:
      - Block I/O controls of the guest's cgroup (C(virsh blkiotune)). They apply to the host's block devices,
        whatever the guest's disks are.
      - For limits on one of the guest's disks inside QEMU, use O(disks) instead.
    type: dict
    suboptions:
      weight:
        description: Relative block I/O weight, 100 to 1000. It only has an effect with a proportional I/O scheduler.
        type: int
      devices:
        description:
          - Per host block device weight and throttles, in the cgroup's C(blkio.throttle.*) and C(weight_device)
            files. Only the devices listed are changed; V(0) removes a throttle or a device weight.
        type: list
        elements: dict
        suboptions:
          path:
            description: Host block device, for example C(/dev/sda).
            type: str
            required: true
          weight:
            description: Weight for this device, 100 to 1000, or V(0) to remove it.
            type: int
          read_bytes_sec:
            description: Read throughput limit in bytes per second.
            type: int
          write_bytes_sec:
            description: Write throughput limit in bytes per second.
            type: int
          read_iops_sec:
            description: Read operations per second.
            type: int
          write_iops_sec:
            description: Write operations per second.
            type: int
  disks:
    description:
      - I/O limits of the guest's disks enforced by QEMU (C(virsh blkdeviotune)). V(0) removes a limit.
      - A total limit and a read or write limit of the same kind cannot both be set; libvirt refuses it.
    type: list
    elements: dict
    suboptions:
      target:
        description: The disk's target device in the guest definition, for example C(vda).
        type: str
        required: true
      total_bytes_sec:
        description: Total throughput limit in bytes per second.
        type: int
      read_bytes_sec:
        description: Read throughput limit in bytes per second.
        type: int
      write_bytes_sec:
        description: Write throughput limit in bytes per second.
        type: int
      total_iops_sec:
        description: Total operations per second.
        type: int
      read_iops_sec:
        description: Read operations per second.
        type: int
      write_iops_sec:
        description: Write operations per second.
        type: int
  interfaces:
    description:
      - Bandwidth limits of the guest's network interfaces (C(virsh domiftune)). Average and peak rates are in
        KiB/s, bursts in KiB. V(0) removes a limit; libvirt needs an average before a peak or a burst.
      - Inbound is traffic to the guest, outbound traffic from it.
    type: list
    elements: dict
    suboptions:
      dev:
        description:
          - The interface's host-side device name, for example C(vnet0). Mutually exclusive with O(interfaces[].mac).
          - A persistent definition usually has no device name (libvirt picks one at start), so use O(interfaces[].mac)
            with O(config).
        type: str
      mac:
        description: The interface's MAC address. Mutually exclusive with O(interfaces[].dev).
        type: str
      inbound:
        description: Limits on traffic to the guest.
        type: dict
        suboptions:
          average:
            description: Average rate in KiB/s.
            type: int
          peak:
            description: Peak rate in KiB/s.
            type: int
          burst:
            description: Burst size in KiB.
            type: int
          floor:
            description: Guaranteed rate in KiB/s (only on interfaces of a libvirt network with QoS).
            type: int
      outbound:
        description: Limits on traffic from the guest.
        type: dict
        suboptions:
          average:
            description: Average rate in KiB/s.
            type: int
          peak:
            description: Peak rate in KiB/s.
            type: int
          burst:
            description: Burst size in KiB.
            type: int
extends_documentation_fragment:
  - autopilot.kvm._libvirt
  - autopilot.kvm._libvirt.actiongroup
  - autopilot.kvm._attributes
  - autopilot.kvm._attributes.idempotent
attributes:
  check_mode:
    support: full
    details:
      - Reads the current values and reports what would change (RV(changes), RV(tuning) as it would be) without
        changing anything.
  diff_mode:
    support: full
    details:
      - Shows the value before and after of each parameter that changes, named as in RV(changes).
notes:
  - Memory values are converted from MiB to libvirt's KiB and back; CPU and I/O values are passed unchanged.
  - On cgroup v2 hosts libvirt maps CPU shares to C(cpu.weight), which accepts 1 to 10000.
  - A persistent memory hard limit makes libvirt lower the process's locked-memory limit when the guest starts,
    which needs CAP_SYS_RESOURCE.
seealso:
  - module: autopilot.kvm.guest_info
  - name: libvirt domain XML, resource tuning
    description: The C(cputune), C(memtune), C(blkiotune), C(iotune) and C(bandwidth) elements these options set.
    link: https://libvirt.org/formatdomain.html#cpu-tuning
"""

EXAMPLES = r"""
- name: Halve a guest's CPU weight and cap each vCPU at half a CPU, now and from its next start
  autopilot.kvm.tune:
    name: vm1
    live: true
    config: true
    cpu:
      shares: 512
      vcpu_period: 100000
      vcpu_quota: 50000

- name: Memory limits on the running guest only
  autopilot.kvm.tune:
    name: db01
    memory:
      soft_limit_mib: 3072
      hard_limit_mib: 4096
      swap_hard_limit_mib: unlimited

- name: Block I/O weight, a throttle on a host device, and a limit on a guest disk
  autopilot.kvm.tune:
    name: db01
    blkio:
      weight: 300
      devices:
        - path: /dev/sda
          read_bytes_sec: 104857600
    disks:
      - target: vda
        write_iops_sec: 500

- name: Limit a guest's network bandwidth
  autopilot.kvm.tune:
    name: web1
    interfaces:
      - mac: "52:54:00:12:34:56"
        inbound:
          average: 10240
          burst: 2048
        outbound:
          average: 5120
"""

RETURN = r"""
changes:
  description:
    - Names of the parameters that changed (in check mode, that would change), as C(scope.group.option).
  returned: always
  type: list
  elements: str
  sample: [live.cpu.shares, live.memory.soft_limit_mib, "live.blkio.devices[/dev/sda].read_bytes_sec"]
tuning:
  description:
    - Per scope (V(live), V(config)), the values of each parameter group the task looked at, after the task
      (in check mode, as they would be), in the options' units. A memory limit that is not set is V(unlimited).
    - In the V(config) scope a parameter that the persistent definition does not set is V(null).
  returned: success
  type: dict
  contains:
    live:
      description: Values on the running guest.
      type: dict
      returned: when O(live) is true
      sample:
        cpu: {shares: 512, vcpu_period: 100000, vcpu_quota: 50000, emulator_period: 100000, emulator_quota: -1}
        memory: {soft_limit_mib: 3072, hard_limit_mib: 4096, swap_hard_limit_mib: unlimited}
        blkio:
          weight: 300
          devices:
            - {path: /dev/sda, weight: 0, read_bytes_sec: 104857600, write_bytes_sec: 0, read_iops_sec: 0,
               write_iops_sec: 0}
        disks:
          - {target: vda, total_bytes_sec: 0, read_bytes_sec: 0, write_bytes_sec: 0, total_iops_sec: 0,
             read_iops_sec: 0, write_iops_sec: 500}
        interfaces:
          - device: "52:54:00:12:34:56"
            inbound: {average: 10240, peak: 0, burst: 2048, floor: 0}
            outbound: {average: 5120, peak: 0, burst: 0}
    config:
      description: Values in the persistent definition, same layout as RV(tuning.live).
      type: dict
      returned: when O(config) is true
      sample:
        cpu: {shares: 512, vcpu_period: null, vcpu_quota: null}
"""

from ansible_collections.autopilot.kvm.plugins.module_utils._difference import DifferenceTracker
from ansible_collections.autopilot.kvm.plugins.module_utils._libvirt_client import create_module
from ansible_collections.autopilot.kvm.plugins.module_utils._tuning import (
    SCOPES,
    TuningError,
    apply_to_reading,
    argument_spec,
    build_targets,
    compare,
    differs,
    getter,
    parameter_name,
    payload,
    setter,
    source_what,
    to_user,
    view,
)


def read_sources(client, dom, name, targets, scope, flags):
    """{source: libvirt reading} of every source the targets need, in one scope."""
    readings = {}
    for target in targets:
        if target.source not in readings:
            func, args = getter(dom, target, flags)
            readings[target.source] = client.call(
                "read the %s of guest %r (%s)" % (source_what(target.source), name, scope), func, *args)
    return readings


def plan(readings, targets, scopes, tracker):
    """[(scope, flags, target, changes)] in the order they are applied; every compared parameter goes to the tracker."""
    plans = []
    for scope, flags in scopes:
        for target in targets:
            changes = []
            for option, lv_name, kind, before, wanted in compare(target, readings[scope][target.source]):
                tracker.add(parameter_name(scope, target, option), to_user(kind, before), to_user(kind, wanted))
                if differs(kind, before, wanted):
                    changes.append((option, lv_name, kind, before, wanted))
            if changes:
                plans.append((scope, flags, target, changes))
    return plans


def predict(readings, plans):
    """The readings as they will be once the plans are carried out (check mode)."""
    after = dict((scope, dict(by_source)) for scope, by_source in readings.items())
    for scope, _flags, target, changes in plans:
        after[scope][target.source] = apply_to_reading(target, after[scope][target.source], changes)
    return after


def carry_out(client, dom, name, readings, plans):
    """Set each plan's changes; a refusal fails with libvirt's text, the parameters and what was already set."""
    applied = []
    for scope, flags, target, changes in plans:
        names = [parameter_name(scope, target, option) for option, _name, _kind, _before, _wanted in changes]
        func, args = setter(dom, target, payload(target, changes, readings[scope][target.source]), flags)
        _result, error = client.try_call(func, *args)
        if error is not None:
            settings = ", ".join("%s=%s" % (parameter_name(scope, target, option), to_user(kind, wanted))
                                 for option, _name, kind, _before, wanted in changes)
            client.fail("Cannot set %s on guest %r: %s" % (settings, name, error.strip()),
                        libvirt_error=error, parameters=names, applied=applied)
        applied.extend(names)


def warn_unkept(module, name, after, plans):
    """Warn about a value libvirt accepted but does not report back (a driver or kernel that adjusts it)."""
    for scope, _flags, target, _changes in plans:
        for option, _name, kind, now, wanted in compare(target, after[scope][target.source]):
            if differs(kind, now, wanted):
                module.warn("libvirt accepted %s=%s for guest %r but now reports %s"
                            % (parameter_name(scope, target, option), to_user(kind, wanted), name, to_user(kind, now)))


def main():
    module, client = create_module(argument_spec=argument_spec(), supports_check_mode=True)
    params = module.params
    name = params["name"]
    try:
        targets = build_targets(params)
    except TuningError as error:
        module.fail_json(msg="Invalid tuning for guest %r: %s" % (name, error), errors=error.errors)

    dom = client.domain(name)
    if params["live"] and not client.call("read the state of guest %r" % name, dom.isActive):
        client.fail("Guest %r is not running, so it cannot be tuned live; set live: false and config: true "
                    "to change only its persistent definition" % name)
    if params["config"] and not client.call("read the persistence of guest %r" % name, dom.isPersistent):
        client.fail("Guest %r is transient: it has no persistent definition to change (config: true)" % name)

    scopes = [(scope, flags) for scope, flags in SCOPES if params[scope]]
    # everything is read before anything is set, so a read failure changes nothing
    readings = dict((scope, read_sources(client, dom, name, targets, scope, flags)) for scope, flags in scopes)
    tracker = DifferenceTracker()
    plans = plan(readings, targets, scopes, tracker)

    if module.check_mode:
        after = predict(readings, plans)
    elif plans:
        carry_out(client, dom, name, readings, plans)
        after = dict((scope, read_sources(client, dom, name, targets, scope, flags)) for scope, flags in scopes)
        warn_unkept(module, name, after, plans)
    else:
        after = readings

    changed_names = tracker.changes()
    result = dict(
        changed=tracker.changed,
        changes=changed_names,
        tuning=dict((scope, view(after[scope])) for scope, _flags in scopes),
    )
    if module._diff:
        before, wanted = tracker.before(), tracker.after()
        result["diff"] = dict(before=dict((key, before[key]) for key in changed_names),
                              after=dict((key, wanted[key]) for key in changed_names))
    client.close()
    module.exit_json(**result)


if __name__ == "__main__":
    main()
