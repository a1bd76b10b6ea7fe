#!/usr/bin/python
# -*- coding: utf-8 -*-
# Copyright: autopilot.kvm contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)

from __future__ import annotations

DOCUMENTATION = r"""
module: ksm
short_description: Set a KVM host's Kernel Samepage Merging (KSM) settings
version_added: 0.1.0
author:
  - autopilot.kvm developers (@autopilot-kvm)
description:
  - Sets KSM's C(run), C(pages_to_scan), C(sleep_millisecs) and C(merge_across_nodes) through sysfs. Options left
    unset are not touched.
  - Idempotent. Settings that already have the requested value are not written, and a second run reports no change.
  - The kernel refuses to change C(merge_across_nodes) while pages are shared. When it must change and KSM runs or
    pages are shared, the module first writes C(run=2) (unmerge every page), waits until C(pages_shared) is 0, writes
    C(merge_across_nodes), then writes the requested O(run), or puts back the one it found.
  - Returns KSM's counters before and after the change.
  - A failed write fails the module with the kernel's error text and the file written. If it fails after KSM was
    stopped to unmerge, C(run) is put back to the value found first.
  - Does not use libvirt. KSM is global to the kernel, so it is shared by everything on the host.
options:
  run:
    description:
      - What ksmd does. V(stop) (C(run=0)) stops it and keeps the pages already merged. V(merge) (C(run=1)) runs it.
        V(unmerge) (C(run=2)) stops it and unmerges every merged page.
      - Unset leaves C(run) as it is, except during a O(merge_across_nodes) change, after which it is restored.
    type: str
    choices: [stop, merge, unmerge]
  pages_to_scan:
    description: How many pages ksmd scans before it sleeps.
    type: int
  sleep_millisecs:
    description: How many milliseconds ksmd sleeps between scans.
    type: int
  merge_across_nodes:
    description:
      - Whether pages from different NUMA nodes may be merged. Changing it unmerges every shared page first.
      - Only kernels built with NUMA support have this setting. Elsewhere, setting it fails.
    type: bool
  timeout:
    description: Seconds to wait for C(pages_shared) to reach 0 after C(run=2), before O(merge_across_nodes) is written.
    type: int
    default: 60
  sysfs_path:
    description: The KSM sysfs directory. Change it only for tests.
    type: path
    default: /sys/kernel/mm/ksm
extends_documentation_fragment:
  - autopilot.kvm._attributes
  - autopilot.kvm._attributes.idempotent
attributes:
  check_mode:
    support: full
    details:
      - Reports the writes it would make (RV(ksm.actions)) without writing anything.
  diff_mode:
    support: full
    details:
      - Shows the requested settings before and after.
notes:
  - Needs root on the managed host to write the sysfs files.
  - On kernels with the KSM advisor (C(advisor_mode=scan-time)), the kernel refuses a C(pages_to_scan) write. The
    module then fails with the kernel's error text.
seealso:
  - module: autopilot.kvm.host_info
  - name: Kernel Samepage Merging (admin guide)
    description: The kernel's documentation of the KSM sysfs files.
    link: https://docs.kernel.org/admin-guide/mm/ksm.html
"""

EXAMPLES = r"""
- name: Run KSM with a faster scan
  autopilot.kvm.ksm:
    run: merge
    pages_to_scan: 1000
    sleep_millisecs: 20

- name: Keep merges within each NUMA node (unmerges first, then restores run)
  autopilot.kvm.ksm:
    merge_across_nodes: false

- name: Stop KSM and give every merged page back
  autopilot.kvm.ksm:
    run: unmerge
"""

RETURN = r"""
ksm:
  description: KSM before and after the change. Settings are spelled like the options.
  returned: success
  type: dict
  contains:
    path:
      description: The KSM sysfs directory.
      type: str
      sample: /sys/kernel/mm/ksm
    settings_before:
      description: C(run), C(pages_to_scan), C(sleep_millisecs) and C(merge_across_nodes) as found. A setting this
        kernel lacks is null.
      type: dict
      sample: {"run": "stop", "pages_to_scan": 100, "sleep_millisecs": 20, "merge_across_nodes": true}
    settings_after:
      description: The same settings when the module finished. In check mode they are the settings it would set.
      type: dict
      sample: {"run": "merge", "pages_to_scan": 1000, "sleep_millisecs": 20, "merge_across_nodes": true}
    counters_before:
      description:
        - KSM's counters as found. These are C(pages_shared), C(pages_sharing), C(pages_unshared), C(pages_volatile)
          and C(full_scans), plus C(general_profit) on kernels that have it.
      type: dict
      sample: {"pages_shared": 0, "pages_sharing": 0, "pages_unshared": 0, "pages_volatile": 0, "full_scans": 0}
    counters_after:
      description:
        - The same counters when the module finished. They change with time while ksmd runs.
        - In check mode they are read again, but nothing was written.
      type: dict
      sample: {"pages_shared": 0, "pages_sharing": 0, "pages_unshared": 0, "pages_volatile": 0, "full_scans": 0}
    actions:
      description: The writes made (or, in check mode, to be made), in order.
      type: list
      elements: str
      sample: ["pages_to_scan=1000", "run=2", "wait until pages_shared=0", "merge_across_nodes=0", "run=1"]
    unmerged:
      description: Whether KSM had to unmerge every page (C(run=2)) before C(merge_across_nodes) could change.
      type: bool
      sample: false
    unmerge_wait_s:
      description: Seconds spent waiting for C(pages_shared) to reach 0.
      type: float
      returned: when the module unmerged
      sample: 0.0
"""

from ansible.module_utils.basic import AnsibleModule

from ansible_collections.autopilot.kvm.plugins.module_utils._ksm import (
    DEFAULT_TIMEOUT,
    KSM_DIR,
    RUN_MODES,
    KsmError,
    KsmSysfs,
    apply,
    counters,
    describe,
    desired_values,
    plan,
    user_settings,
)


def main():
    module = AnsibleModule(
        argument_spec=dict(
            run=dict(type="str", choices=sorted(RUN_MODES)),
            pages_to_scan=dict(type="int"),
            sleep_millisecs=dict(type="int"),
            merge_across_nodes=dict(type="bool"),
            timeout=dict(type="int", default=DEFAULT_TIMEOUT),
            sysfs_path=dict(type="path", default=KSM_DIR),
        ),
        supports_check_mode=True,
    )
    params = module.params
    if params["timeout"] <= 0:
        module.fail_json(msg="timeout must be a positive number of seconds, got %s" % params["timeout"])
    sysfs = KsmSysfs(params["sysfs_path"])
    if not sysfs.available():
        module.fail_json(msg="KSM is not available: %s does not exist (is the kernel built with CONFIG_KSM?)"
                         % params["sysfs_path"])

    try:
        wanted = desired_values(params["run"], params["pages_to_scan"], params["sleep_millisecs"],
                                params["merge_across_nodes"])
        before = sysfs.facts()
        settings = before["settings"]
        tracker, steps = plan(settings, before["counters"].get("pages_shared"), wanted)
    except KsmError as error:
        module.fail_json(msg=str(error))

    result = dict(changed=tracker.changed, ksm=dict(
        path=params["sysfs_path"],
        settings_before=user_settings(settings),
        settings_after=user_settings(dict(settings, **wanted)),
        counters_before=counters(before),
        counters_after=counters(before),
        actions=[],
        unmerged=any(step[0] == "wait_unmerged" for step in steps),
    ))
    if module._diff:
        result["diff"] = tracker.diff()

    if not module.check_mode and steps:
        try:
            done, waited = apply(sysfs, steps, settings["run"], timeout=params["timeout"])
        except KsmError as error:
            module.fail_json(msg=str(error), **result)
        result["ksm"]["actions"] = done
        if waited is not None:
            result["ksm"]["unmerge_wait_s"] = waited
        after = sysfs.facts()
        result["ksm"]["settings_after"] = user_settings(after["settings"])
        result["ksm"]["counters_after"] = counters(after)
    else:
        result["ksm"]["actions"] = [describe(step) for step in steps]
        result["ksm"]["counters_after"] = counters(sysfs.facts())
    module.exit_json(**result)


if __name__ == "__main__":
    main()
