#!/usr/bin/python
# -*- coding: utf-8 -*-
# Copyright: autopilot.kvm contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)

from __future__ import annotations

DOCUMENTATION = r"""
module: balloon
short_description: Resize a guest's memory live with its virtio balloon
version_added: 0.1.0
author:
  - autopilot.kvm developers (@autopilot-kvm)
description:
  - Sets the current memory of a running guest (the balloon target) and, optionally, the current memory of its
    persistent definition (C(<currentMemory>)).
  - The live value counts as reached when the balloon is within O(tolerance_mib) of the target, so a second run
    reports no change.
  - Refuses, with the numbers in the message, a target below O(guaranteed_mib) or, when shrinking, below what the
    guest uses plus O(used_margin_mib). What the guest uses is read from the balloon statistics as
    C(actual - usable) (C(usable) is the guest's MemAvailable) or, when the guest does not report C(usable),
    C(actual - unused) (C(unused) is its MemFree, which counts the page cache as used).
  - When the guest reports no such statistics a shrink is refused unless O(force=true).
  - Growing above the guest's maximum memory fails with libvirt's text (C(cannot set memory higher than max memory)).
  - With O(wait=true) it waits until the balloon reaches the target, and fails after O(timeout) seconds otherwise.
options:
  name:
    description: Name of the guest (libvirt domain).
    type: str
    required: true
  memory_mib:
    description:
      - The target memory in MiB.
      - Exactly one of O(memory_mib) and O(memory_kib) is required.
    type: int
  memory_kib:
    description: The target memory in KiB, for sizes that are not whole MiB.
    type: int
  tolerance_mib:
    description:
      - How far, in MiB, the live balloon may be from the target and still count as reached, both for the
        idempotency check and for O(wait).
      - The default of 8 MiB absorbs what a guest cannot hand over exactly (a balloon driver under memory pressure
        stops a few MiB short, some drivers work in 1 or 2 MiB chunks) while staying under 1 % of a 1 GiB guest, so a
        real change is never mistaken for noise.
    type: int
    default: 8
  guaranteed_mib:
    description:
      - The guest's guaranteed memory in MiB (for example a C(memory_guarantee) expectation's C(min_mib)).
      - A target below it is refused, live or persistent, whatever the guest uses.
    type: int
  used_margin_mib:
    description:
      - Headroom in MiB that must stay free above what the guest uses when it is shrunk (room for the page cache,
        slab and allocations while the balloon inflates). A target below used + margin is refused.
    type: int
    default: 32
  force:
    description:
      - Shrink even when the guest reports no memory statistics, so what it uses cannot be checked (a warning is
        returned).
      - It does not override O(guaranteed_mib) nor a refusal based on statistics the guest did report.
    type: bool
    default: false
  config:
    description:
      - Also set the current memory of the guest's persistent definition (C(<currentMemory>)) to exactly the target,
        so it survives a restart.
      - Required to change a guest that is not running, whose persistent definition is then the only thing changed.
    type: bool
    default: false
  wait:
    description:
      - Wait until the live balloon is within O(tolerance_mib) of the target, and the current memory libvirt reports
        for the guest too (libvirt follows the balloon from QEMU's events, which come at most once a second).
    type: bool
    default: true
  timeout:
    description:
      - Seconds to wait for the balloon when O(wait=true). After that the module fails; the new target stays set and
        the guest may still reach it later.
    type: int
    default: 60
extends_documentation_fragment:
  - autopilot.kvm._libvirt
  - autopilot.kvm._libvirt.actiongroup
  - autopilot.kvm._attributes
  - autopilot.kvm._attributes.idempotent
attributes:
  check_mode:
    support: full
    details:
      - Applies every refusal rule and reports the change it would make without changing anything.
      - A target above the maximum memory fails with the module's own message, as libvirt is not asked.
  diff_mode:
    support: full
    details:
      - Shows the live memory (C(memory_kib)) and, with O(config=true), the persistent current memory
        (C(config_memory_kib)) before and after, in KiB.
notes:
  - The guest needs a balloon device (C(<memballoon model='virtio'>)) and a driver for it; for the safety check and
    O(wait) it should report statistics (C(<memballoon><stats period='2'/></memballoon>)).
seealso:
  - module: autopilot.kvm.guest_info
"""

EXAMPLES = r"""
- name: Shrink web01 to 1536 MiB, never below its guaranteed 1 GiB
  autopilot.kvm.balloon:
    name: web01
    memory_mib: 1536
    guaranteed_mib: 1024

- name: Give db01 back its 4 GiB, now and after a restart
  autopilot.kvm.balloon:
    name: db01
    memory_mib: 4096
    config: true
    timeout: 120
"""

RETURN = r"""
balloon:
  description: What the module found and did (or, in check mode, would do). Sizes are in KiB.
  returned: success
  type: dict
  contains:
    guest:
      description: The guest's name.
      type: str
      sample: web01
    active:
      description: Whether the guest is running (only a running guest has a live balloon).
      type: bool
      sample: true
    target_kib:
      description: The requested memory.
      type: int
      sample: 163840
    max_kib:
      description: The guest's maximum memory.
      type: int
      sample: 262144
    before_kib:
      description: The live balloon size before the change (C(actual)); null for a guest that is not running.
      type: int
      sample: 262144
    after_kib:
      description: The live balloon size when the module finished; in check mode the same as RV(balloon.before_kib).
      type: int
      sample: 163840
    config_before_kib:
      description: The persistent current memory before the change; null for a transient guest.
      type: int
      sample: 262144
    config_after_kib:
      description: The persistent current memory when the module finished.
      type: int
      sample: 262144
    used_kib:
      description: What the guest uses, on the C(actual) scale; null unless a live shrink was checked.
      type: int
      sample: 61440
    used_rule:
      description: How RV(balloon.used_kib) was computed.
      type: str
      sample: actual - usable (guest MemAvailable)
    floor_kib:
      description: The lowest target the module would have accepted (guarantee, or used + margin for a live shrink).
      type: int
      sample: 94208
    live_changed:
      description: Whether the live balloon target was (or would be) set.
      type: bool
      sample: true
    config_changed:
      description: Whether the persistent current memory was (or would be) set.
      type: bool
      sample: false
    reached:
      description: Whether the balloon reached the target within the tolerance; null when the module did not wait.
      type: bool
      sample: true
    wait_s:
      description: Seconds spent waiting for the balloon.
      type: float
      sample: 0.75
"""

from ansible_collections.autopilot.kvm.plugins.module_utils._balloon import (
    MIB,
    BalloonError,
    check_request,
    parse_config_memory,
    plan,
    target_kib,
    wait_for_target,
)
from ansible_collections.autopilot.kvm.plugins.module_utils._libvirt_client import create_module, libvirt


def live_actual(client, dom):
    """The live balloon size: memoryStats()['actual'], else the current memory of dom.info()."""
    stats, _error = client.try_call(dom.memoryStats)
    if stats and stats.get("actual") is not None:
        return stats["actual"], stats
    info = client.call("read the guest's information", dom.info)
    return info[2], stats or {}


def settled_kib(client, dom, target):
    """The live size furthest from ``target``: the balloon's ``actual`` or the current memory of dom.info().
    libvirt updates the latter from QEMU's BALLOON_CHANGE events, which QEMU sends at most once a second, so it
    can lag ``actual`` by that long; waiting for both means whatever reads the guest next (guest_info, virsh
    dominfo, the planner's facts) sees the new size."""
    actual, _stats = live_actual(client, dom)
    current = client.call("read the guest's information", dom.info)[2]
    return actual if abs(actual - target) >= abs(current - target) else current


def main():
    module, client = create_module(
        argument_spec=dict(
            name=dict(type="str", required=True),
            memory_mib=dict(type="int"),
            memory_kib=dict(type="int"),
            tolerance_mib=dict(type="int", default=8),
            guaranteed_mib=dict(type="int"),
            used_margin_mib=dict(type="int", default=32),
            force=dict(type="bool", default=False),
            config=dict(type="bool", default=False),
            wait=dict(type="bool", default=True),
            timeout=dict(type="int", default=60),
        ),
        mutually_exclusive=[("memory_mib", "memory_kib")],
        required_one_of=[("memory_mib", "memory_kib")],
        supports_check_mode=True,
    )
    params = module.params
    name = params["name"]
    for option in ("tolerance_mib", "used_margin_mib", "guaranteed_mib"):
        if params[option] is not None and params[option] < 0:
            module.fail_json(msg="%s must not be negative, got %s" % (option, params[option]))
    if params["timeout"] <= 0:
        module.fail_json(msg="timeout must be a positive number of seconds, got %s" % params["timeout"])
    try:
        target = target_kib(params["memory_mib"], params["memory_kib"])
    except BalloonError as error:
        module.fail_json(msg=str(error))
    tolerance = params["tolerance_mib"] * MIB
    guaranteed = None if params["guaranteed_mib"] is None else params["guaranteed_mib"] * MIB

    dom = client.domain(name)
    active = bool(client.call("read the state of guest %r" % name, dom.isActive))
    persistent = bool(client.call("read whether guest %r is persistent" % name, dom.isPersistent))
    if not active and not params["config"]:
        client.fail("Guest %r is not running, so it has no live balloon; set config: true to change its "
                    "persistent definition" % name)
    if params["config"] and not persistent:
        client.fail("Guest %r is transient: it has no persistent definition for config: true" % name)

    max_kib = client.call("read the maximum memory of guest %r" % name, dom.maxMemory)
    live_kib, stats = live_actual(client, dom) if active else (None, {})
    config_kib = None
    if persistent:
        inactive_xml = client.call("read the persistent definition of guest %r" % name,
                                   dom.XMLDesc, libvirt.VIR_DOMAIN_XML_INACTIVE)
        try:
            config_kib, config_max = parse_config_memory(inactive_xml)
        except BalloonError as error:
            client.fail(str(error))
        if not active:
            max_kib = config_max or max_kib

    tracker, set_live, set_config = plan(target, tolerance, live_kib, config_kib, params["config"])
    try:
        # Above max: check mode says so itself when it would call libvirt; a real run lets libvirt
        # say it, in its own words.
        predict_max = module.check_mode and (set_live or set_config)
        checked = check_request(
            target, max_kib if predict_max else None, guaranteed, live_kib, stats,
            params["used_margin_mib"] * MIB, params["force"], shrink_live=set_live and target < live_kib)
    except BalloonError as error:
        client.fail("Guest %r: %s" % (name, error), balloon_stats=stats)
    for warning in checked["warnings"]:
        module.warn(warning)

    result = dict(changed=tracker.changed, balloon=dict(
        guest=name, active=active, target_kib=target, max_kib=max_kib,
        before_kib=live_kib, after_kib=live_kib, config_before_kib=config_kib, config_after_kib=config_kib,
        used_kib=checked["used_kib"], used_rule=checked["used_rule"], floor_kib=checked["floor_kib"],
        live_changed=set_live, config_changed=set_config, reached=True if active and not set_live else None,
        wait_s=0.0,
    ))
    if module._diff:
        result["diff"] = tracker.diff()
    if module.check_mode or not tracker.changed:
        client.close()
        module.exit_json(**result)

    if set_live:
        client.call("set the live memory of guest %r to %d KiB" % (name, target),
                    dom.setMemoryFlags, target, libvirt.VIR_DOMAIN_AFFECT_LIVE)
    if set_config:
        _unused, error = client.try_call(dom.setMemoryFlags, target, libvirt.VIR_DOMAIN_AFFECT_CONFIG)
        if error:
            client.fail("Cannot set the persistent memory of guest %r to %d KiB: %s%s"
                        % (name, target, error, " (its live memory was set)" if set_live else ""),
                        libvirt_error=error, **result)
        xml_text, error = client.try_call(dom.XMLDesc, libvirt.VIR_DOMAIN_XML_INACTIVE)
        try:
            result["balloon"]["config_after_kib"] = target if error else parse_config_memory(xml_text)[0]
        except BalloonError:
            result["balloon"]["config_after_kib"] = target
    if active:
        if params["wait"] and set_live:
            reached, after, waited = wait_for_target(
                lambda: settled_kib(client, dom, target), target, tolerance, params["timeout"])
            result["balloon"].update(after_kib=after, reached=reached, wait_s=waited)
            if not reached:
                client.fail("The balloon of guest %r is at %d KiB, not within %d KiB of the target %d KiB after "
                            "%s s; the target stays set" % (name, after, tolerance, target, waited), **result)
        else:
            result["balloon"]["after_kib"] = live_actual(client, dom)[0]
    client.close()
    module.exit_json(**result)


if __name__ == "__main__":
    main()
