#!/usr/bin/python
# -*- coding: utf-8 -*-
# Copyright: autopilot.kvm contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)

from __future__ import annotations

DOCUMENTATION = r"""
module: migrate
short_description: Migrate a guest to another KVM host, live or offline
version_added: 0.1.0
author:
  - autopilot.kvm developers (@autopilot-kvm)
description:
  - Moves a guest from the managed host (the source) to another host, peer-to-peer. A running guest moves live
    with pre-copy by default, optionally switching to post-copy; a shut-off guest moves only with O(mode=offline).
  - The guest is defined persistently on the destination and its definition is removed from the source once the
    migration has completed, so it exists exactly once in the cluster.
  - Idempotent. A guest that already runs on the destination (with O(mode=offline), that is defined there and not
    on the source) is left alone and reported unchanged.
  - On failure or timeout the migration job is aborted and the guest keeps running on the source; the module checks
    this and says so. The failure message carries libvirt's own text.
  - The result carries libvirt's job statistics of the completed migration (duration, downtime, bytes, passes) and
    a few progress samples. While the migration runs the module can keep a small JSON progress file up to date, for
    a play that starts it with C(async) and C(poll=0) and reads the file while polling C(async_status).
options:
  name:
    description: Name of the guest (libvirt domain) to move.
    type: str
    required: true
  dest_uri:
    description:
      - libvirt URI of the destination hypervisor, as the source's libvirtd reaches it (peer-to-peer migration).
      - Must use an authenticated, encrypted transport, C(qemu+ssh://root@host/system) or
        C(qemu+tls://host/system) (a URI naming a host without C(+transport) is TLS too). A plain
        C(qemu+tcp://) URI is refused unless O(allow_unencrypted=true).
      - This protects libvirt's control connection. The guest's memory travels directly between the two QEMU
        processes unless O(tunnelled) or O(tls) is set.
    type: str
    required: true
  migrate_uri:
    description:
      - URI of the migration data stream, for example C(tcp://10.0.0.12), when it must use another network than the
        destination's default migration address.
      - A C(tcp://) or C(rdma://) stream carries memory in clear, so it needs O(tls=true) or O(allow_unencrypted=true).
    type: str
  mode:
    description:
      - V(live) moves a running guest while it keeps running (pre-copy, and post-copy with O(postcopy)).
      - V(offline) moves the definition of a shut-off guest (C(VIR_MIGRATE_OFFLINE)); it must be chosen explicitly and
        never stops a running guest.
    type: str
    choices: [live, offline]
    default: live
  postcopy:
    description:
      - V(false) keeps to pre-copy.
      - V(true) enables post-copy and switches to it (C(migrateStartPostCopy)) after O(postcopy_after_passes) complete
        pre-copy passes, counted from the job's C(memory_iteration). A guest that converges earlier finishes in
        pre-copy (RV(migration.mode_used)).
      - V(auto) enables post-copy and switches only when pre-copy is predicted not to converge, from the job's
        measured dirty rate and transfer rate (dirty rate at least 80 % of the transfer rate after the first pass,
        more than 10 passes, or more data left than can be sent before O(timeout)); the reason is returned in
        RV(migration.postcopy_reason).
      - Post-copy needs userfaultfd for QEMU on the destination (for example C(vm.unprivileged_userfaultfd=1) when
        QEMU runs unprivileged). Once post-copy has started the guest runs on the destination and the job can no
        longer be aborted; a network failure then leaves it paused until the migration is recovered.
    type: raw
    default: false
  postcopy_after_passes:
    description:
      - With O(postcopy=true), the number of complete pre-copy passes before the switch. V(0) switches as soon as
        memory is being copied.
    type: int
    default: 1
  auto_converge:
    description: Throttle the guest's vCPUs when pre-copy does not converge (C(VIR_MIGRATE_AUTO_CONVERGE)).
    type: bool
    default: false
  compression:
    description:
      - Compress the migration stream with these methods (C(VIR_MIGRATE_COMPRESSED)). Unset means no compression.
    type: list
    elements: str
    choices: [xbzrle, mt]
  bandwidth:
    description:
      - Bandwidth cap for the migration data stream in MiB/s, in the pre-copy and the post-copy phase. Unset means
        libvirt's default (unlimited).
    type: int
  timeout:
    description:
      - Seconds the migration may take, counted from its start (connection set-up included). After that the job is
        aborted and the module fails, with the guest still running on the source.
      - Does not apply once post-copy has started (aborting then would lose the guest); the module waits for the
        migration to finish, and RV(migration.timeout_in_postcopy) says whether the timeout passed meanwhile.
    type: int
    default: 600
  tunnelled:
    description:
      - Send the memory through libvirt's own connection (C(VIR_MIGRATE_TUNNELLED)), so the O(dest_uri) transport
        (SSH or TLS) encrypts it too. Slower; not combinable with O(postcopy), O(migrate_uri) or O(tls).
    type: bool
    default: false
  tls:
    description:
      - Encrypt the memory stream with QEMU's native TLS (C(VIR_MIGRATE_TLS)). Needs the C(migrate_tls_x509)
        certificates configured for QEMU on both hosts.
    type: bool
    default: false
  allow_unencrypted:
    description:
      - Accept a plain C(qemu+tcp://) O(dest_uri) and a plain C(tcp://) O(migrate_uri), for trusted, isolated networks.
    type: bool
    default: false
  undefine_source:
    description: Remove the guest's definition from the source after a successful migration.
    type: bool
    default: true
  progress_file:
    description:
      - Path on the source host of a JSON file rewritten about every second while the migration runs, and once at
        the end, with C(phase) (V(setup), V(precopy), V(postcopy), V(aborting), then V(completed), V(unchanged),
        V(failed) or V(aborted)), C(finished), C(percent), C(elapsed_s), C(iteration), C(data_total),
        C(data_processed), C(data_remaining) and C(transfer_bps).
      - Writes are atomic. The file is left in place with its final phase; nothing is written in check mode.
        A file that cannot be written gives a warning, never a failure.
    type: path
extends_documentation_fragment:
  - autopilot.kvm._libvirt
  - autopilot.kvm._libvirt.actiongroup
  - autopilot.kvm._attributes
  - autopilot.kvm._attributes.idempotent
attributes:
  check_mode:
    support: full
    details:
      - Reports the move it would make (RV(migration.source), RV(migration.destination), RV(migration.flags) and
        RV(migration.params)) without moving anything.
  diff_mode:
    support: full
    details:
      - Shows the guest's host before and after.
notes:
  - The module runs on the source host. When the guest is not running there it looks for it on the destination, so
    re-running a completed migration reports no change.
  - Percent done is the share of the job's C(data_total) that is no longer remaining; it can fall back when later
    pre-copy passes find newly dirtied memory.
  - Completed-job statistics exist only while the source still knows the guest, so the module reads them before it
    removes the source definition.
seealso:
  - module: autopilot.kvm.guest_info
  - module: autopilot.kvm.host_info
"""

EXAMPLES = r"""
- name: Move vm1 from this host to h2 over SSH (live, pre-copy)
  autopilot.kvm.migrate:
    name: vm1
    dest_uri: qemu+ssh://root@h2.example.com/system

- name: Move a busy database, switching to post-copy after two passes, capped at 200 MiB/s
  autopilot.kvm.migrate:
    name: db01
    dest_uri: qemu+tls://h3.example.com/system
    postcopy: true
    postcopy_after_passes: 2
    bandwidth: 200
    timeout: 300

- name: Let the module decide whether post-copy is needed
  autopilot.kvm.migrate:
    name: cache01
    dest_uri: qemu+ssh://root@h3.example.com/system
    postcopy: auto
    auto_converge: true

- name: Move a shut-off guest's definition
  autopilot.kvm.migrate:
    name: template01
    dest_uri: qemu+ssh://root@h2.example.com/system
    mode: offline

- name: Start a long move in the background, with a progress file
  autopilot.kvm.migrate:
    name: big01
    dest_uri: qemu+ssh://root@h2.example.com/system
    bandwidth: 100
    timeout: 1800
    progress_file: /run/autopilot-migrate-big01.json
  async: 2000
  poll: 0
  register: move_job

- name: Show how far it got (repeat while the job runs)
  ansible.builtin.slurp:
    src: /run/autopilot-migrate-big01.json
  register: move_progress

- name: Report the percentage
  ansible.builtin.debug:
    msg: "{{ (move_progress.content | b64decode | from_json).percent }} % done"

- name: Wait for the move to finish
  ansible.builtin.async_status:
    jid: "{{ move_job.ansible_job_id }}"
  register: move_result
  until: move_result.finished
  retries: 600
  delay: 3
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
    mode:
      description: The requested O(mode).
      type: str
      sample: live
    performed:
      description: Whether a migration ran in this task.
      type: bool
      sample: true
    reason:
      description: Why the module migrated or left the guest alone, from where it found the guest.
      type: str
      sample: is running on the source
    flags:
      description: Names of the C(VIR_MIGRATE_*) flags used (or that would be used).
      type: list
      elements: str
      returned: when a migration ran or would run
      sample: [LIVE, PEER2PEER, PERSIST_DEST, POSTCOPY]
    params:
      description: The migration parameters passed to libvirt (bandwidth in MiB/s).
      type: dict
      returned: when a migration ran or would run
      sample: {bandwidth: 8}
    transport:
      description:
        - C(control) is the O(dest_uri) transport (V(ssh), V(tls), V(tcp) or V(local)); C(data) how the memory moves
          (V(direct) between the QEMU processes, V(tunnelled) or V(tls)).
      type: dict
      sample: {control: ssh, data: direct}
    mode_used:
      description: How the guest moved, V(precopy), V(postcopy) or V(offline).
      type: str
      returned: when a migration ran
      sample: postcopy
    postcopy_reason:
      description: Why the module switched to post-copy.
      type: str
      returned: when a migration switched to post-copy
      sample: requested after 1 pre-copy pass(es)
    postcopy_requests:
      description: Pages the destination requested from the source during post-copy (libvirt's job statistics).
      type: int
      returned: when a migration ran in post-copy and libvirt reported it
      sample: 5
    job_stats_errors:
      description: libvirt's messages when the running job's statistics could not be read (progress has gaps then).
      type: list
      elements: str
      returned: when a migration ran and libvirt refused some statistics
      sample: ["Timed out during operation: cannot acquire state change lock"]
    timeout_in_postcopy:
      description: Whether O(timeout) passed while post-copy was running (the job cannot be aborted then).
      type: bool
      returned: when a migration ran
      sample: false
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
      description: Number of pre-copy passes over the guest's memory (libvirt's C(memory_iteration)).
      type: int
      returned: when a migration ran and libvirt reported it
      sample: 3
    transfer_bps:
      description: The transfer rate at the end of the job in bytes per second, from libvirt's job statistics.
      type: int
      returned: when a migration ran and libvirt reported it
      sample: 8413380
    memory_total_bytes:
      description: The guest memory the job had to cover, in bytes.
      type: int
      returned: when a migration ran and libvirt reported it
      sample: 268967936
    memory_processed_bytes:
      description: Guest memory bytes sent.
      type: int
      returned: when a migration ran and libvirt reported it
      sample: 125595115
    progress:
      description:
        - Samples taken while the migration ran, about one a second and at most 30 (thinned evenly for long runs).
        - Each has C(t) (seconds since the start), C(phase), C(percent), C(remaining_bytes), C(processed_bytes) and
          C(iteration).
      type: list
      elements: dict
      returned: when a migration ran
      sample: [{t: 1.0, phase: precopy, percent: 12.5, remaining_bytes: 235405312, processed_bytes: 33650364, iteration: 1}]
state:
  description: State of the guest on the host where it now is.
  returned: success
  type: str
  sample: running
"""

from ansible_collections.autopilot.kvm.plugins.module_utils._difference import DifferenceTracker
from ansible_collections.autopilot.kvm.plugins.module_utils._libvirt_client import LibvirtClient, create_module
from ansible_collections.autopilot.kvm.plugins.module_utils._migration import (
    COMPRESSION_METHODS,
    MODES,
    MigrationError,
    ProgressFile,
    completed_job_stats,
    decide,
    domain_state,
    flag_names,
    host_uuid,
    migration_flags,
    migration_params,
    mode_used,
    option_errors,
    parse_postcopy,
    presence,
    run_migration,
    settled_state,
    transport_check,
)


def main():
    module, source = create_module(
        argument_spec=dict(
            name=dict(type="str", required=True),
            dest_uri=dict(type="str", required=True),
            migrate_uri=dict(type="str"),
            mode=dict(type="str", choices=list(MODES), default="live"),
            postcopy=dict(type="raw", default=False),
            postcopy_after_passes=dict(type="int", default=1, no_log=False),
            auto_converge=dict(type="bool", default=False),
            compression=dict(type="list", elements="str", choices=list(COMPRESSION_METHODS)),
            bandwidth=dict(type="int"),
            timeout=dict(type="int", default=600),
            tunnelled=dict(type="bool", default=False),
            tls=dict(type="bool", default=False),
            allow_unencrypted=dict(type="bool", default=False),
            undefine_source=dict(type="bool", default=True),
            progress_file=dict(type="path"),
        ),
        supports_check_mode=True,
    )
    opts = dict(module.params)
    name = opts["name"]
    try:
        opts["postcopy"] = parse_postcopy(opts["postcopy"])
    except ValueError as error:
        module.fail_json(msg=str(error))
    errors = option_errors(opts)
    if errors:
        module.fail_json(msg="; ".join(errors))
    transport, refusal = transport_check(opts["dest_uri"], opts["migrate_uri"], tls=opts["tls"],
                                         tunnelled=opts["tunnelled"], allow_unencrypted=opts["allow_unencrypted"])
    if refusal:
        module.fail_json(msg=refusal, transport=transport)

    dest = LibvirtClient(module, uri=opts["dest_uri"])
    source_host = source.call("read the source's hostname", source.conn.getHostname)
    dest_host = dest.call("read the destination's hostname", dest.conn.getHostname)
    source_uuid = host_uuid(source.call("read the source's capabilities", source.conn.getCapabilities))
    if source_uuid and source_uuid == host_uuid(dest.call("read the destination's capabilities", dest.conn.getCapabilities)):
        source.fail("Source and destination are the same hypervisor (%s); nothing to migrate to" % source_host)

    src_dom = source.find_domain(name)
    dest_dom = dest.find_domain(name)
    action, reason = decide(opts["mode"], presence(src_dom), presence(dest_dom), opts["undefine_source"])
    migration = dict(guest=name, source=source_host, destination=dest_host, mode=opts["mode"], performed=False,
                     reason=reason, transport=transport)
    result = dict(changed=False, migration=migration)
    progress = None
    if opts["progress_file"] and not module.check_mode:
        progress = ProgressFile(opts["progress_file"], name, source_host, dest_host)
    diff = DifferenceTracker()

    if action == "fail":
        source.fail("Guest %r %s (source %s, destination %s)" % (name, reason, source_host, dest_host),
                    migration=migration)
    if action == "ok":
        result["state"] = domain_state(dest_dom if dest_dom is not None else src_dom)
        diff.add("host", dest_host, dest_host)
        if module._diff:
            result["diff"] = diff.diff()
        if progress is not None:
            progress.write("unchanged", finished=True)
        module.exit_json(**result)

    flags = migration_flags(opts["mode"], opts["postcopy"], opts["auto_converge"], opts["compression"],
                            opts["tunnelled"], opts["tls"])
    params = migration_params(opts["bandwidth"], opts["migrate_uri"], opts["compression"], opts["postcopy"])
    migration.update(flags=flag_names(flags), params=params)
    result["changed"] = True
    diff.add("host", source_host, dest_host)
    if module._diff:
        result["diff"] = diff.diff()
    if module.check_mode:
        result["state"] = domain_state(src_dom)
        module.exit_json(**result)

    try:
        run = run_migration(src_dom, opts["dest_uri"], flags, params, opts["timeout"], postcopy=opts["postcopy"],
                            postcopy_after_passes=opts["postcopy_after_passes"], progress_file=progress)
    except MigrationError as error:
        where, state = settled_state(lambda: source.find_domain(name))
        if where == "active":
            location = "guest %r is %s on the source %s" % (name, state, source_host)
        else:
            landed = dest.find_domain(name)
            location = "guest %r is %s on the source %s and %s on the destination %s" % (
                name, where, source_host, presence(landed), dest_host)
        libvirt_text = error.details.get("libvirt_error")
        message = "%s; %s" % (error, location)
        if libvirt_text and libvirt_text not in message:
            message += " (libvirt: %s)" % libvirt_text
        if progress is not None and progress.error:
            module.warn("Could not write the progress file %s" % progress.error)
        details = dict(error.details)
        details.update(source_state=state, source_presence=where)
        source.fail(message, migration=migration, **details)

    migration.update(completed_job_stats(src_dom), performed=True, wall_s=run["wall_s"], progress=run["progress"],
                     mode_used=mode_used(opts["mode"], run["postcopy_started"]),
                     timeout_in_postcopy=run["timeout_in_postcopy"])
    if run["job_stats_errors"]:
        migration["job_stats_errors"] = run["job_stats_errors"]
    if run["abort_errors"]:
        module.warn("The migration ran past its %ss timeout because libvirt refused to abort it (%s); it completed"
                    % (opts["timeout"], "; ".join(run["abort_errors"])))
    if run["postcopy_started"]:
        migration["postcopy_reason"] = run["postcopy_reason"]
    else:
        migration.pop("postcopy_requests", None)
        if opts["postcopy"] == "true":
            module.warn("Post-copy was requested but the migration completed in pre-copy before the switch%s"
                        % (" (libvirt: %s)" % "; ".join(run["postcopy_errors"]) if run["postcopy_errors"] else ""))
    if progress is not None:
        progress.write("completed", run["wall_s"], finished=True, mode_used=migration["mode_used"])
        if progress.error:
            module.warn("Could not write the progress file %s" % progress.error)

    landed = dest.find_domain(name)
    wanted = "inactive" if opts["mode"] == "offline" else "active"
    if presence(landed) != wanted:
        source.fail("libvirt reported success but guest %r is %s on %s" % (name, presence(landed), dest_host),
                    migration=migration)
    result["state"] = domain_state(landed)
    if opts["undefine_source"]:
        leftover = source.find_domain(name)
        if leftover is not None and not leftover.isActive() and leftover.isPersistent():
            _value, error = source.try_call(leftover.undefine)
            if error:
                module.warn("Guest %r is on %s but its old definition could not be removed from %s: %s"
                            % (name, dest_host, source_host, error))
    source.close()
    dest.close()
    module.exit_json(**result)


if __name__ == "__main__":
    main()
