# -*- coding: utf-8 -*-
# Copyright: autopilot.kvm contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""Live migration of one guest, run on its source host.

This module util is PRIVATE to the collection: its API may change at any time.

The migration is peer-to-peer: the source libvirtd connects to the destination
itself, so the controller never needs a route to the hypervisors' data network.
The guest is made persistent on the destination; the source definition is removed
only after the migration completed and its statistics were read (libvirt drops
them with the definition).
"""

from __future__ import annotations

import threading
import time
import xml.etree.ElementTree as ET

from ansible_collections.autopilot.kvm.plugins.module_utils._libvirt_client import libvirt, libvirt_error_text

# How often the job is polled while the migration runs: frequent enough to abort
# within a second of the timeout, rare enough to cost nothing.
POLL_INTERVAL_S = 0.25

# libvirt domain states, by name, for messages and return values.
STATE_NAMES = {
    0: "nostate", 1: "running", 2: "blocked", 3: "paused",
    4: "shutdown", 5: "shutoff", 6: "crashed", 7: "pmsuspended",
}


class MigrationError(Exception):
    """A migration that did not happen; ``details`` go into the module's failure."""

    def __init__(self, message, **details):
        super().__init__(message)
        self.details = details


def host_uuid(capabilities_xml):
    """The hypervisor's host UUID from its capabilities XML (None when absent)."""
    node = ET.fromstring(capabilities_xml).find("./host/uuid")
    return node.text.strip() if node is not None and node.text else None


def domain_state(dom):
    state, _reason = dom.state()
    return STATE_NAMES.get(state, str(state))


def is_active(dom):
    return dom is not None and bool(dom.isActive())


def migration_flags(live=True):
    flags = libvirt.VIR_MIGRATE_PEER2PEER | libvirt.VIR_MIGRATE_PERSIST_DEST
    if live:
        flags |= libvirt.VIR_MIGRATE_LIVE
    return flags


def migration_params(bandwidth_mibps=None, migrate_uri=None):
    params = {}
    if bandwidth_mibps:
        params[libvirt.VIR_MIGRATE_PARAM_BANDWIDTH] = int(bandwidth_mibps)
    if migrate_uri:
        params[libvirt.VIR_MIGRATE_PARAM_URI] = migrate_uri
    return params


def completed_job_stats(dom):
    """Figures of the migration that just completed, from libvirt's job statistics."""
    try:
        stats = dom.jobStats(libvirt.VIR_DOMAIN_JOB_STATS_COMPLETED)
    except libvirt.libvirtError:
        return {}
    result = {}
    if "time_elapsed" in stats:
        result["duration_s"] = round(stats["time_elapsed"] / 1000.0, 3)
    if "downtime" in stats:
        result["downtime_ms"] = stats["downtime"]
    if "memory_total" in stats:
        result["memory_total_bytes"] = stats["memory_total"]
    if "memory_processed" in stats:
        result["memory_processed_bytes"] = stats["memory_processed"]
    if "data_total" in stats:
        result["bytes_transferred"] = stats.get("data_processed", stats["data_total"])
    if "memory_iteration" in stats:
        result["iterations"] = stats["memory_iteration"]
    return result


def run_migration(dom, dest_uri, flags, params, timeout_s):
    """Migrate ``dom`` to ``dest_uri`` and wait, aborting the job after ``timeout_s``.

    migrateToURI3 blocks until the job ends, so it runs in a worker thread while this
    thread watches the clock; on timeout it aborts the job, which leaves the guest
    running on the source (libvirt resumes it there).
    Returns the wall time in seconds; raises MigrationError on failure or timeout.
    """
    outcome = {}

    def worker():
        try:
            dom.migrateToURI3(dest_uri, params, flags)
            outcome["ok"] = True
        except libvirt.libvirtError as error:
            outcome["error"] = libvirt_error_text(error)

    started = time.monotonic()
    thread = threading.Thread(target=worker, name="autopilot-migrate", daemon=True)
    thread.start()
    aborted = False
    while thread.is_alive():
        thread.join(POLL_INTERVAL_S)
        if thread.is_alive() and not aborted and time.monotonic() - started > timeout_s:
            aborted = True
            try:
                dom.abortJob()
            except libvirt.libvirtError as error:
                outcome["abort_error"] = libvirt_error_text(error)
    wall_s = round(time.monotonic() - started, 3)
    if aborted and not outcome.get("ok"):
        raise MigrationError(
            "Migration did not finish within %ss and was aborted; the guest stays on the source" % timeout_s,
            timed_out=True, wall_s=wall_s, libvirt_error=outcome.get("error") or outcome.get("abort_error"),
        )
    if "error" in outcome:
        raise MigrationError("Migration failed: %s" % outcome["error"], libvirt_error=outcome["error"], wall_s=wall_s)
    return wall_s
