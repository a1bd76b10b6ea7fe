#!/usr/bin/python
# -*- coding: utf-8 -*-
# Copyright: autopilot.kvm contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)

from __future__ import annotations

DOCUMENTATION = r"""
module: migrate
short_description: Live-migrate a guest to another KVM host
version_added: 0.1.0
author:
  - autopilot.kvm developers (@autopilot-kvm)
description:
  - Moves a running guest from the managed host (the source) to another host, peer-to-peer and live by default.
  - The guest is defined persistently on the destination and its definition is removed from the source once the
    migration has completed, so it exists exactly once in the cluster.
  - Idempotent. A guest that already runs on the destination is left alone and reported unchanged.
  - On failure or timeout the migration job is aborted and the guest keeps running on the source.
    The failure message carries libvirt's own text.
options:
  name:
    description: Name of the guest (libvirt domain) to move.
    type: str
    required: true
  dest_uri:
    description:
      - libvirt URI of the destination hypervisor, as the source host reaches it (peer-to-peer migration).
      - An authenticated transport such as C(qemu+ssh://root@host/system) or C(qemu+tls://host/system) is recommended.
    type: str
    required: true
  migrate_uri:
    description:
      - Optional URI for the migration data stream, for example C(tcp://10.0.0.12), when it must use another network
        than the destination's default migration address.
    type: str
  live:
    description: Keep the guest running while its memory is copied. When false the guest is paused during the copy.
    type: bool
    default: true
  bandwidth:
    description: Bandwidth cap for the migration data stream in MiB/s. Unset means libvirt's default (unlimited).
    type: int
  timeout:
    description:
      - Seconds to wait for the migration to complete. After that the job is aborted and the module fails, with the
        guest still running on the source.
    type: int
    default: 600
  undefine_source:
    description: Remove the guest's definition from the source after a successful migration.
    type: bool
    default: true
extends_documentation_fragment:
  - autopilot.kvm._libvirt
  - autopilot.kvm._libvirt.actiongroup
  - autopilot.kvm._attributes
  - autopilot.kvm._attributes.idempotent
attributes:
  check_mode:
    support: full
    details:
      - Reports the move it would make (RV(migration.source) and RV(migration.destination)) without moving anything.
  diff_mode:
    support: full
    details:
      - Shows the guest's host before and after.
notes:
  - The module runs on the source host. When the guest is not running there it looks for it on the destination, so
    re-running a completed migration reports no change.
seealso:
  - module: autopilot.kvm.guest_info
  - module: autopilot.kvm.host_info
"""

EXAMPLES = r"""
- name: Move vm1 from this host to h2 over SSH
  autopilot.kvm.migrate:
    name: vm1
    dest_uri: qemu+ssh://root@h2.example.com/system

- name: Move a guest with a bandwidth cap and a short timeout
  autopilot.kvm.migrate:
    name: db01
    dest_uri: qemu+tls://h3.example.com/system
    bandwidth: 200
    timeout: 120
"""

RETURN = r"""
migration:
  description: What was (or, in check mode, would be) done.
  returned: always
  type: dict
  contains:
    guest:
      description: The guest's name.
      type: str
      sample: vm1
    source:
      description: Hostname of the source hypervisor.
      type: str
      sample: h1
    destination:
      description: Hostname of the destination hypervisor.
      type: str
      sample: h2
    performed:
      description: Whether a migration ran in this task.
      type: bool
      sample: true
    wall_s:
      description: Wall time of the migration as seen by the module, in seconds.
      type: float
      returned: when a migration ran
      sample: 1.24
    duration_s:
      description: Duration of the migration job from libvirt's job statistics, in seconds.
      type: float
      returned: when a migration ran and libvirt reported it
      sample: 0.98
    downtime_ms:
      description: Time the guest was paused at the switch-over, in milliseconds, from libvirt's job statistics.
      type: int
      returned: when a migration ran and libvirt reported it
      sample: 45
    bytes_transferred:
      description: Bytes sent over the migration stream.
      type: int
      returned: when a migration ran and libvirt reported it
      sample: 93061234
    iterations:
      description: Number of pre-copy passes over the guest's memory.
      type: int
      returned: when a migration ran and libvirt reported it
      sample: 3
state:
  description: State of the guest on the host where it now runs.
  returned: success
  type: str
  sample: running
"""

from ansible_collections.autopilot.kvm.plugins.module_utils._difference import DifferenceTracker
from ansible_collections.autopilot.kvm.plugins.module_utils._libvirt_client import LibvirtClient, create_module
from ansible_collections.autopilot.kvm.plugins.module_utils._migration import (
    MigrationError,
    completed_job_stats,
    domain_state,
    host_uuid,
    is_active,
    migration_flags,
    migration_params,
    run_migration,
)


def main():
    module, source = create_module(
        argument_spec=dict(
            name=dict(type="str", required=True),
            dest_uri=dict(type="str", required=True),
            migrate_uri=dict(type="str"),
            live=dict(type="bool", default=True),
            bandwidth=dict(type="int"),
            timeout=dict(type="int", default=600),
            undefine_source=dict(type="bool", default=True),
        ),
        supports_check_mode=True,
    )
    params = module.params
    name = params["name"]
    if params["timeout"] <= 0:
        module.fail_json(msg="timeout must be a positive number of seconds, got %s" % params["timeout"])
    if params["bandwidth"] is not None and params["bandwidth"] <= 0:
        module.fail_json(msg="bandwidth must be a positive number of MiB/s, got %s" % params["bandwidth"])

    dest = LibvirtClient(module, uri=params["dest_uri"])
    source_host = source.call("read the source's hostname", source.conn.getHostname)
    dest_host = dest.call("read the destination's hostname", dest.conn.getHostname)
    source_uuid = host_uuid(source.call("read the source's capabilities", source.conn.getCapabilities))
    if source_uuid and source_uuid == host_uuid(dest.call("read the destination's capabilities", dest.conn.getCapabilities)):
        source.fail("Source and destination are the same hypervisor (%s); nothing to migrate to" % source_host)

    src_dom = source.find_domain(name)
    dest_dom = dest.find_domain(name)
    result = dict(changed=False, migration=dict(guest=name, source=source_host, destination=dest_host, performed=False))
    diff = DifferenceTracker()

    if not is_active(src_dom):
        if is_active(dest_dom):
            # Already where it should be: the idempotent outcome.
            result["state"] = domain_state(dest_dom)
            diff.add("host", dest_host, dest_host)
            if module._diff:
                result["diff"] = diff.diff()
            module.exit_json(**result)
        if src_dom is not None:
            source.fail("Guest %r is %s on %s, not running; only running guests are migrated live"
                        % (name, domain_state(src_dom), source_host))
        source.fail("Guest %r is neither on the source %s nor on the destination %s" % (name, source_host, dest_host))

    if is_active(dest_dom):
        source.fail("Guest %r is running on both %s and %s; refusing to touch it" % (name, source_host, dest_host))

    result["changed"] = True
    diff.add("host", source_host, dest_host)
    if module._diff:
        result["diff"] = diff.diff()
    if module.check_mode:
        result["state"] = domain_state(src_dom)
        module.exit_json(**result)

    try:
        wall_s = run_migration(
            src_dom, params["dest_uri"], migration_flags(live=params["live"]),
            migration_params(params["bandwidth"], params["migrate_uri"]), params["timeout"],
        )
    except MigrationError as error:
        still = "running" if is_active(source.find_domain(name)) else "not running"
        source.fail("%s (guest %r is %s on %s)" % (error, name, still, source_host), **error.details)

    result["migration"].update(completed_job_stats(src_dom), performed=True, wall_s=wall_s)
    landed = dest.find_domain(name)
    if not is_active(landed):
        source.fail("libvirt reported success but guest %r is not running on %s" % (name, dest_host))
    result["state"] = domain_state(landed)
    if params["undefine_source"]:
        leftover = source.find_domain(name)
        if leftover is not None and not is_active(leftover) and leftover.isPersistent():
            _value, error = source.try_call(leftover.undefine)
            if error:
                module.warn("Guest %r runs on %s but its old definition could not be removed from %s: %s"
                            % (name, dest_host, source_host, error))
    source.close()
    dest.close()
    module.exit_json(**result)


if __name__ == "__main__":
    main()
