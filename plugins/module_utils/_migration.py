# -*- coding: utf-8 -*-
# Copyright: autopilot.kvm contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""Migration of one guest, run on its source host.

This module util is PRIVATE to the collection: its API may change at any time.

The migration is peer-to-peer: the source libvirtd connects to the destination
itself, so the controller never needs a route to the hypervisors' data network.
The guest is made persistent on the destination; the source definition is removed
only after the migration completed and its statistics were read (libvirt drops
them with the definition).

Everything the module decides is a plain function here (option checks, transport
policy, what to do given where the guest is, flags and parameters, the post-copy
switch, progress arithmetic), so it can be unit-tested without a hypervisor.
``run_migration`` is the only part that drives libvirt while the job runs.
"""

from __future__ import annotations

import json
import os
import tempfile
import threading
import time
import xml.etree.ElementTree as ET

from urllib.parse import urlsplit

from ansible_collections.autopilot.kvm.plugins.module_utils._libvirt_client import libvirt, libvirt_error_text

# --- polling ----------------------------------------------------------------------------------
# How often the job is polled while the migration runs (s): frequent enough to abort within a
# second of the timeout and to switch to post-copy promptly, rare enough to cost nothing.
POLL_INTERVAL_S = 0.25
# Spacing of the progress samples returned in the result (s); when more than
# MAX_PROGRESS_SAMPLES accumulate every other one is dropped and the spacing doubles, so the list
# stays short whatever the duration.
PROGRESS_SAMPLE_INTERVAL_S = 1.0
MAX_PROGRESS_SAMPLES = 30
# How often the progress file is rewritten (s); phase changes and the end are written at once.
PROGRESS_WRITE_INTERVAL_S = 1.0
# After an abort libvirt resumes the guest on the source before migrateToURI3 returns; the module
# still waits up to this long (s) for the source to report it running before it says where it is.
ABORT_SETTLE_S = 5.0
# Once the job has ended, a control call libvirt held back (see _ControlCall) returns at once; the
# module waits up to this long (s) for its answer before reporting.
CONTROL_SETTLE_S = 1.0

# --- post-copy: auto ----------------------------------------------------------------------------
# QEMU measures the dirty rate at the end of each pass over memory, so no rate exists before the
# first pass has completed, i.e. before memory_iteration reaches 2.
AUTO_MIN_ITERATION = 2
# rho = dirty rate / transfer rate (dimensionless). Pre-copy shrinks the dirty set by rho per pass:
# at rho >= 0.8 more than 10 passes are needed to shrink it 10x (0.8^10 = 0.107) and any bandwidth
# dip stalls it; at rho >= 1 it never converges. Same threshold as the planner's RISK_HIGH_RHO
# (plugins/plugin_utils/planner/costs.py), which predicts the risk this switch answers.
AUTO_SWITCH_RHO = 0.8
# Passes (memory_iteration) after which pre-copy is judged not to converge whatever rho says: a
# guest at rho = 0.5 shrinks its dirty set 1000x in 10 passes, which is more than any switch-over
# needs.
AUTO_MAX_PASSES = 10
# A decision must hold for this many consecutive polls (x POLL_INTERVAL_S = 1 s) before the switch:
# QEMU's memory_bps is an instantaneous rate and dips for a poll or two (measured in the lab: an
# 8 MiB/s stream briefly read 2.2 MB/s).
AUTO_CONFIRM_POLLS = 4
# Page size assumed when libvirt does not report memory_page_size (bytes): x86's base page.
DEFAULT_PAGE_SIZE_BYTES = 4096

MB = 1000000.0  # bytes per MB, for rates in messages (decimal, like link speeds)

# --- vocabulary ----------------------------------------------------------------------------------
MODES = ("live", "offline")
POSTCOPY_POLICIES = ("false", "true", "auto")
COMPRESSION_METHODS = ("xbzrle", "mt")

# libvirt URI transports (the part after '+' in driver+transport://) by what they protect.
SECURE_TRANSPORTS = {
    "ssh": "ssh", "libssh": "ssh", "libssh2": "ssh",
    "tls": "tls",
    "unix": "local", "local": "local",
}
PLAIN_TRANSPORTS = ("tcp",)
# migrate_uri schemes that carry guest memory in clear unless QEMU's own TLS is on.
PLAIN_DATA_SCHEMES = ("tcp", "rdma")

# libvirt domain states, by name, for messages and return values.
STATE_NAMES = {
    0: "nostate", 1: "running", 2: "blocked", 3: "paused",
    4: "shutdown", 5: "shutoff", 6: "crashed", 7: "pmsuspended",
}

# Names of the flags the module may set, for check mode and the result.
FLAG_NAMES = (
    "LIVE", "PEER2PEER", "TUNNELLED", "PERSIST_DEST", "PAUSED", "COMPRESSED",
    "OFFLINE", "AUTO_CONVERGE", "POSTCOPY", "TLS",
)


class MigrationError(Exception):
    """A migration that did not happen; ``details`` go into the module's failure."""

    def __init__(self, message, **details):
        super().__init__(message)
        self.details = details


# ------------------------------------------------------------------------------- options

def parse_postcopy(value):
    """Normalise the ``postcopy`` option (bool or 'true'/'false'/'auto'...) to 'false', 'true' or 'auto'.

    Raises ValueError for anything else.
    """
    if value is None:
        return "false"
    if isinstance(value, bool):
        return "true" if value else "false"
    text = str(value).strip().lower()
    if text == "auto":
        return "auto"
    if text in ("true", "yes", "on", "1"):
        return "true"
    if text in ("false", "no", "off", "0"):
        return "false"
    raise ValueError("postcopy must be true, false or auto, got %r" % (value,))


def uri_transport(uri):
    """The transport of a libvirt URI: 'ssh', 'tls', 'tcp', 'local', or another word (e.g. 'ext').

    Without an explicit ``+transport`` a URI naming a host uses TLS (libvirt's default for remote
    connections) and one without a host is local (UNIX socket or an in-process driver).
    """
    parsed = urlsplit(uri)
    _driver, _sep, transport = parsed.scheme.lower().partition("+")
    if transport:
        return transport
    return "tls" if parsed.netloc else "local"


def transport_check(dest_uri, migrate_uri=None, tls=False, tunnelled=False, allow_unencrypted=False):
    """Check the transports against the policy; returns (description, error message or None).

    The libvirt connection to the destination must be authenticated and encrypted (ssh, tls) or
    local; a custom data stream must not be plain TCP/RDMA unless QEMU's TLS protects it. Plain
    transports pass only with ``allow_unencrypted``.
    """
    control = uri_transport(dest_uri)
    if tunnelled:
        data = "tunnelled"
    elif tls:
        data = "tls"
    else:
        data = "direct"
    description = dict(control=SECURE_TRANSPORTS.get(control, control), data=data)
    if allow_unencrypted:
        return description, None
    if control in PLAIN_TRANSPORTS:
        return description, (
            "Refusing the unencrypted, unauthenticated destination %s: qemu+tcp sends libvirt's control "
            "traffic in clear. Use qemu+ssh://root@HOST/system or qemu+tls://HOST/system, or set "
            "allow_unencrypted=true to accept plain TCP on a trusted network." % dest_uri)
    if control not in SECURE_TRANSPORTS:
        return description, (
            "Refusing the destination %s: its transport %r cannot be checked for authentication and "
            "encryption. Use qemu+ssh or qemu+tls, or set allow_unencrypted=true." % (dest_uri, control))
    if migrate_uri and not tls:
        scheme = urlsplit(migrate_uri).scheme.lower()
        if scheme in PLAIN_DATA_SCHEMES:
            return description, (
                "Refusing the unencrypted migration stream %s: guest memory would cross the network in "
                "clear. Set tls=true (QEMU's TLS), drop migrate_uri and use tunnelled=true, or set "
                "allow_unencrypted=true." % migrate_uri)
    return description, None


def option_errors(opts):
    """Problems with the module's options (a list of messages; empty when they are usable).

    ``opts`` holds the module's parameters with ``postcopy`` already normalised.
    """
    errors = []
    if opts.get("timeout") is not None and opts["timeout"] <= 0:
        errors.append("timeout must be a positive number of seconds, got %s" % opts["timeout"])
    if opts.get("bandwidth") is not None and opts["bandwidth"] <= 0:
        errors.append("bandwidth must be a positive number of MiB/s, got %s" % opts["bandwidth"])
    if opts.get("postcopy_after_passes") is not None and opts["postcopy_after_passes"] < 0:
        errors.append("postcopy_after_passes must be 0 or more, got %s" % opts["postcopy_after_passes"])
    postcopy = opts.get("postcopy", "false")
    if opts.get("mode") == "offline":
        live_only = [name for name, used in (
            ("postcopy", postcopy != "false"),
            ("auto_converge", opts.get("auto_converge")),
            ("compression", opts.get("compression")),
            ("bandwidth", opts.get("bandwidth") is not None),
            ("tunnelled", opts.get("tunnelled")),
            ("tls", opts.get("tls")),
            ("migrate_uri", opts.get("migrate_uri")),
        ) if used]
        if live_only:
            errors.append("%s only apply to mode=live: an offline migration copies the guest's definition, "
                          "not its memory" % ", ".join(live_only))
    if opts.get("tunnelled"):
        if postcopy != "false":
            errors.append("postcopy cannot be combined with tunnelled: libvirt does not support post-copy "
                          "through a tunnel")
        if opts.get("migrate_uri"):
            errors.append("migrate_uri cannot be combined with tunnelled: the tunnel is the libvirt connection")
        if opts.get("tls"):
            errors.append("tls and tunnelled are alternatives: choose one way to protect the memory stream")
    unknown = [m for m in (opts.get("compression") or []) if m not in COMPRESSION_METHODS]
    if unknown:
        errors.append("unknown compression method(s) %s; libvirt supports %s"
                      % (", ".join(unknown), ", ".join(COMPRESSION_METHODS)))
    return errors


# ------------------------------------------------------------------------------- where the guest is

def host_uuid(capabilities_xml):
    """The hypervisor's host UUID from its capabilities XML (None when absent)."""
    node = ET.fromstring(capabilities_xml).find("./host/uuid")
    return node.text.strip() if node is not None and node.text else None


def domain_state(dom):
    state, _reason = dom.state()
    return STATE_NAMES.get(state, str(state))


def presence(dom):
    """'absent', 'inactive' (defined, not running) or 'active' for a domain found (or not) on a host."""
    if dom is None:
        return "absent"
    return "active" if dom.isActive() else "inactive"


def decide(mode, source, dest, undefine_source=True):
    """What to do given where the guest is: returns (action, reason).

    ``source``/``dest`` are ``presence()`` words. ``action`` is 'migrate', 'ok' (already done, the
    idempotent outcome) or 'fail'; ``reason`` explains it (and is the failure's message body).
    """
    if mode == "offline":
        if source == "active":
            return "fail", "is running on the source; mode=offline moves only shut-off guests (use mode=live)"
        if source == "absent":
            if dest != "absent":
                return "ok", "is already defined on the destination"
            return "fail", "is neither on the source nor on the destination"
        # defined, shut off on the source
        if dest == "absent":
            return "migrate", "is shut off on the source"
        if not undefine_source:
            return "ok", "is defined on both hosts, as undefine_source=false leaves it"
        return "fail", ("is defined on both the source and the destination; refusing to overwrite the "
                        "destination's definition (remove one of them)")
    if source == "active":
        if dest == "active":
            return "fail", "is running on both hosts; refusing to touch it"
        return "migrate", "is running on the source"
    if dest == "active":
        return "ok", "is already running on the destination"
    if source == "inactive":
        return "fail", "is shut off on the source; only running guests are migrated live (use mode=offline)"
    return "fail", "is neither on the source nor on the destination"


# ------------------------------------------------------------------------------- flags and parameters

def migration_flags(mode="live", postcopy="false", auto_converge=False, compression=None,
                    tunnelled=False, tls=False):
    """The virDomainMigrate flags for the options (peer-to-peer, persistent on the destination)."""
    flags = libvirt.VIR_MIGRATE_PEER2PEER | libvirt.VIR_MIGRATE_PERSIST_DEST
    if mode == "offline":
        return flags | libvirt.VIR_MIGRATE_OFFLINE
    flags |= libvirt.VIR_MIGRATE_LIVE
    if postcopy != "false":
        # The capability must be on from the start; the switch itself is migrateStartPostCopy().
        flags |= libvirt.VIR_MIGRATE_POSTCOPY
    if auto_converge:
        flags |= libvirt.VIR_MIGRATE_AUTO_CONVERGE
    if compression:
        flags |= libvirt.VIR_MIGRATE_COMPRESSED
    if tunnelled:
        flags |= libvirt.VIR_MIGRATE_TUNNELLED
    if tls:
        flags |= libvirt.VIR_MIGRATE_TLS
    return flags


def flag_names(flags):
    """['LIVE', 'PEER2PEER', ...] for a flags value (only the flags this module uses)."""
    return [name for name in FLAG_NAMES if flags & getattr(libvirt, "VIR_MIGRATE_" + name)]


def migration_params(bandwidth_mibps=None, migrate_uri=None, compression=None, postcopy="false"):
    """The virDomainMigrate typed parameters: bandwidth (MiB/s, also for post-copy), URI, compression."""
    params = {}
    if bandwidth_mibps:
        params[libvirt.VIR_MIGRATE_PARAM_BANDWIDTH] = int(bandwidth_mibps)
        if postcopy != "false":
            # Without it QEMU lifts the cap once post-copy starts (0 = unlimited there).
            params[libvirt.VIR_MIGRATE_PARAM_BANDWIDTH_POSTCOPY] = int(bandwidth_mibps)
    if migrate_uri:
        params[libvirt.VIR_MIGRATE_PARAM_URI] = migrate_uri
    if compression:
        methods = list(compression)
        params[libvirt.VIR_MIGRATE_PARAM_COMPRESSION] = methods[0] if len(methods) == 1 else methods
    return params


# ------------------------------------------------------------------------------- progress and post-copy

def progress_percent(stats):
    """Percent done of a running job: the share of data_total no longer remaining (0-100)."""
    total = stats.get("data_total") or 0
    if total <= 0:
        return 0.0
    remaining = stats.get("data_remaining")
    if remaining is None:
        remaining = total
    return round(max(0.0, min(100.0, 100.0 * (total - remaining) / total)), 1)


def dirty_bytes_per_s(stats):
    """The guest's dirty rate in bytes/s (libvirt reports pages/s)."""
    return (stats.get("memory_dirty_rate") or 0) * (stats.get("memory_page_size") or DEFAULT_PAGE_SIZE_BYTES)


def data_remaining_bytes(stats):
    """Bytes pre-copy still has to send: memory_remaining scaled by the share of non-zero pages so far.

    QEMU sends a zero page as a few bytes of header, so the remaining memory costs only its
    non-zero share; the pages processed so far (memory_normal vs memory_constant) estimate that
    share. Without those counters the whole remainder counts.
    """
    remaining = stats.get("memory_remaining")
    if remaining is None:
        remaining = stats.get("data_remaining") or 0
    normal = stats.get("memory_normal") or 0
    constant = stats.get("memory_constant") or 0
    if normal + constant > 0:
        return remaining * normal / float(normal + constant)
    return float(remaining)


def predict_precopy_s(remaining_bytes, transfer_bps, dirty_bps):
    """Seconds pre-copy still needs: the remaining set plus what gets dirtied meanwhile.

    The passes form a geometric series of ratio rho = dirty/transfer, whose sum is
    remaining / (transfer - dirty); None (never) when the guest dirties as fast as it is sent.
    """
    if transfer_bps <= 0 or dirty_bps >= transfer_bps:
        return None
    return remaining_bytes / float(transfer_bps - dirty_bps)


def postcopy_decision(policy, after_passes, stats, elapsed_s, timeout_s):
    """Whether to switch to post-copy now: returns (switch, reason).

    ``policy`` 'true' switches once ``after_passes`` complete pre-copy passes are done
    (memory_iteration counts the pass in progress, starting at 1), 0 meaning as soon as memory is
    being copied. 'auto' switches when pre-copy is predicted not to converge: the dirty rate is at
    least AUTO_SWITCH_RHO of the transfer rate, or more than AUTO_MAX_PASSES passes ran, or the
    remaining data cannot be sent before the timeout.
    """
    if policy == "false":
        return False, None
    iteration = stats.get("memory_iteration") or 0
    if not stats.get("data_total") or iteration < 1:
        # libvirt is still setting the job up: a switch request now is queued behind the whole job
        return False, None
    if policy == "true":
        if iteration >= after_passes + 1:
            return True, "requested after %d pre-copy pass(es)" % after_passes
        return False, None
    transfer = stats.get("memory_bps") or 0
    if transfer <= 0:
        return False, None
    dirty = dirty_bytes_per_s(stats)
    rho = dirty / float(transfer)
    if iteration >= AUTO_MIN_ITERATION and rho >= AUTO_SWITCH_RHO:
        return True, ("dirty rate %.1f MB/s is %.0f %% of the transfer rate %.1f MB/s: pre-copy would not converge"
                      % (dirty / MB, 100.0 * rho, transfer / MB))
    if iteration > AUTO_MAX_PASSES:
        return True, "%d pre-copy passes without converging" % (iteration - 1)
    needed = predict_precopy_s(data_remaining_bytes(stats), transfer, dirty if iteration >= AUTO_MIN_ITERATION else 0)
    left = timeout_s - elapsed_s
    if needed is not None and needed > left:
        return True, ("pre-copy needs about %.0f s more at %.1f MB/s but %.0f s are left before the timeout"
                      % (needed, transfer / MB, max(left, 0)))
    return False, None


class ProgressLog:
    """Progress samples for the result, thinned to at most MAX_PROGRESS_SAMPLES."""

    def __init__(self, interval_s=PROGRESS_SAMPLE_INTERVAL_S, limit=MAX_PROGRESS_SAMPLES):
        self.interval_s = interval_s
        self.limit = limit
        self.samples = []
        self._last_t = None

    def add(self, elapsed_s, stats, phase, force=False):
        if not force and self._last_t is not None and elapsed_s - self._last_t < self.interval_s:
            return False
        self._last_t = elapsed_s
        self.samples.append(dict(
            t=round(elapsed_s, 2), phase=phase, percent=progress_percent(stats),
            remaining_bytes=stats.get("data_remaining"), processed_bytes=stats.get("data_processed"),
            iteration=stats.get("memory_iteration"),
        ))
        self._thin()
        return True

    def add_final(self, elapsed_s, phase, percent=None):
        """The closing sample: how the job ended (percent 100 when it completed)."""
        previous = self.samples[-1] if self.samples else {}
        self.samples.append(dict(
            t=round(elapsed_s, 2), phase=phase,
            percent=previous.get("percent", 0.0) if percent is None else percent,
            remaining_bytes=0 if percent == 100.0 else previous.get("remaining_bytes"),
            processed_bytes=previous.get("processed_bytes"), iteration=previous.get("iteration"),
        ))
        self._thin()

    def _thin(self):
        if len(self.samples) > self.limit:
            last = self.samples[-1]
            self.samples = self.samples[:-1:2] + [last]
            self.interval_s *= 2


class ProgressFile:
    """A small JSON file rewritten while the migration runs, for a role or an operator to read.

    Writes are atomic (temporary file + rename), so a reader never sees half a file. A file that
    cannot be written never fails the migration: the error is kept in ``error``.
    """

    def __init__(self, path, guest, source, destination, interval_s=PROGRESS_WRITE_INTERVAL_S):
        self.path = path
        self.base = dict(guest=guest, source=source, destination=destination, pid=os.getpid())
        self.interval_s = interval_s
        self.error = None
        self._last = None
        self._phase = None

    def write(self, phase, elapsed_s=0.0, stats=None, finished=False, force=False, **extra):
        now = time.monotonic()
        if not (force or finished or phase != self._phase or self._last is None
                or now - self._last >= self.interval_s):
            return
        self._last = now
        self._phase = phase
        stats = stats or {}
        record = dict(self.base)
        record.update(
            phase=phase, finished=finished, updated=round(time.time(), 3), elapsed_s=round(elapsed_s, 2),
            percent=100.0 if finished and phase in ("completed", "unchanged") else progress_percent(stats),
            iteration=stats.get("memory_iteration"), data_total=stats.get("data_total"),
            data_processed=stats.get("data_processed"), data_remaining=stats.get("data_remaining"),
            transfer_bps=stats.get("memory_bps"),
        )
        record.update(extra)
        try:
            directory = os.path.dirname(os.path.abspath(self.path))
            if not os.path.isdir(directory):
                os.makedirs(directory, 0o755)
            handle, temporary = tempfile.mkstemp(prefix=".migrate-progress-", dir=directory)
            try:
                with os.fdopen(handle, "w") as stream:
                    json.dump(record, stream, sort_keys=True)
                os.chmod(temporary, 0o644)
                os.replace(temporary, self.path)
            except Exception:
                os.unlink(temporary)
                raise
        except (OSError, ValueError) as error:
            self.error = "%s: %s" % (self.path, error)


def _job_stats(dom, errors):
    """The running job's statistics ({} when libvirt cannot give them; its distinct messages go to ``errors``)."""
    try:
        return dom.jobStats() or {}
    except libvirt.libvirtError as error:
        if error.get_error_code() == libvirt.VIR_ERR_OPERATION_INVALID:
            return {}   # "domain is not running": the job has just ended on the source
        text = libvirt_error_text(error)
        if text not in errors and len(errors) < 5:
            errors.append(text)
        return {}


def _remember(errors, text, limit=5):
    if text not in errors and len(errors) < limit:
        errors.append(text)


class _ControlCall:
    """One libvirt control call (abortJob, migrateStartPostCopy) made from its own thread.

    libvirt 9 can hold such a call back until the migration job ends (seen in the lab for calls made
    while the job is being set up); the watching loop must keep polling meanwhile, so it never waits
    for the call. ``ok`` tells whether libvirt took it, ``error`` its message otherwise.
    """

    def __init__(self, func):
        self.ok = False
        self.error = None
        self.done = threading.Event()
        self._func = func
        threading.Thread(target=self._run, name="autopilot-migrate-control", daemon=True).start()

    def _run(self):
        try:
            self._func()
            self.ok = True
        except libvirt.libvirtError as error:
            self.error = libvirt_error_text(error)
        finally:
            self.done.set()

    @property
    def pending(self):
        return not self.done.is_set()


def run_migration(dom, dest_uri, flags, params, timeout_s, postcopy="false", postcopy_after_passes=1,
                  progress_file=None, poll_interval_s=POLL_INTERVAL_S, sample_interval_s=PROGRESS_SAMPLE_INTERVAL_S):
    """Migrate ``dom`` to ``dest_uri`` and watch the job until it ends.

    migrateToURI3 blocks until the job ends, so it runs in a worker thread while this thread polls
    the job's statistics: it records progress (result samples and ``progress_file``), switches to
    post-copy when ``postcopy_decision`` says so, and aborts the job after ``timeout_s``, which leaves
    the guest running on the source (libvirt resumes it there). Once post-copy has started the job
    can no longer be aborted without losing the guest, so the timeout stops applying.

    Returns dict(wall_s, postcopy_started, postcopy_reason, postcopy_errors (failed switch attempts
    when it never switched), job_stats_errors, progress, timeout_in_postcopy, abort_errors (libvirt
    refused to abort a job that then completed)); raises MigrationError on failure or timeout.
    """
    outcome = {}

    def worker():
        try:
            dom.migrateToURI3(dest_uri, params, flags)
            outcome["ok"] = True
        except libvirt.libvirtError as error:
            outcome["error"] = libvirt_error_text(error)

    samples = ProgressLog(sample_interval_s)
    started = time.monotonic()
    thread = threading.Thread(target=worker, name="autopilot-migrate", daemon=True)
    thread.start()
    abort = switch = None            # the current _ControlCall of each kind
    switched = past_timeout = timeout_in_postcopy = False
    switch_reason = None
    switch_errors, stats_errors, abort_errors = [], [], []
    confirmations = 0
    phase = "setup"
    while thread.is_alive():
        thread.join(poll_interval_s)
        if not thread.is_alive():
            break
        elapsed = time.monotonic() - started
        stats = _job_stats(dom, stats_errors)
        if stats.get("data_total") and phase == "setup":
            phase = "precopy"
        if switch is not None and not switch.pending and not switched:
            if switch.ok:
                switched, phase = True, "postcopy"
            else:
                # e.g. asked before QEMU has started the migration: asked again on a later poll
                _remember(switch_errors, switch.error)
                switch = None
        if elapsed > timeout_s:
            if switched:
                timeout_in_postcopy = True
            elif abort is None or not (abort.pending or abort.ok):
                # asked again on every poll until libvirt takes it
                if abort is not None:
                    _remember(abort_errors, abort.error)
                past_timeout, phase = True, "aborting"
                abort = _ControlCall(dom.abortJob)
        if switch is None and not switched and not past_timeout and postcopy != "false":
            wanted, reason = postcopy_decision(postcopy, postcopy_after_passes, stats, elapsed, timeout_s)
            confirmations = confirmations + 1 if wanted else 0
            needed = AUTO_CONFIRM_POLLS if postcopy == "auto" else 1
            if wanted and confirmations >= needed:
                switch_reason = reason
                switch = _ControlCall(dom.migrateStartPostCopy)
        samples.add(elapsed, stats, phase)
        if progress_file is not None:
            progress_file.write(phase, elapsed, stats)
    for call in (abort, switch):
        if call is not None:
            call.done.wait(CONTROL_SETTLE_S)
    if abort is not None and not abort.pending and not abort.ok:
        _remember(abort_errors, abort.error)
    if switch is not None and not switch.pending and switch.ok:
        switched = True   # taken by libvirt right before the end
    wall_s = round(time.monotonic() - started, 3)
    samples.add_final(wall_s, "completed" if outcome.get("ok") else ("aborted" if past_timeout else "failed"),
                      100.0 if outcome.get("ok") else None)
    result = dict(wall_s=wall_s, postcopy_started=switched, postcopy_reason=switch_reason if switched else None,
                  postcopy_errors=[] if switched else switch_errors, job_stats_errors=stats_errors,
                  progress=samples.samples, timeout_in_postcopy=timeout_in_postcopy,
                  abort_errors=abort_errors)
    if past_timeout and not outcome.get("ok"):
        if progress_file is not None:
            progress_file.write("aborted", wall_s, finished=True)
        raise MigrationError(
            "Migration did not finish within %ss and was aborted" % timeout_s, timed_out=True, wall_s=wall_s,
            libvirt_error=outcome.get("error"), abort_errors=abort_errors, progress=samples.samples,
            job_stats_errors=stats_errors,
        )
    if "error" in outcome:
        if progress_file is not None:
            progress_file.write("failed", wall_s, finished=True, error=outcome["error"])
        raise MigrationError("Migration failed: %s" % outcome["error"], libvirt_error=outcome["error"],
                             wall_s=wall_s, postcopy_started=switched, progress=samples.samples)
    return result


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
    if "memory_bps" in stats:
        result["transfer_bps"] = stats["memory_bps"]
    if "memory_postcopy_requests" in stats:
        result["postcopy_requests"] = stats["memory_postcopy_requests"]
    return result


def mode_used(mode, postcopy_started):
    """'offline', 'postcopy' or 'precopy': how the guest actually moved."""
    if mode == "offline":
        return "offline"
    return "postcopy" if postcopy_started else "precopy"


def settled_state(find_domain, timeout_s=ABORT_SETTLE_S, interval_s=0.2):
    """(presence, state word) of the guest on the source after a failed job, waiting for 'running'.

    ``find_domain`` returns the source's domain (or None); libvirt resumes an aborted pre-copy guest
    on the source, which may take a moment to show.
    """
    deadline = time.monotonic() + timeout_s
    while True:
        dom = find_domain()
        where = presence(dom)
        state = domain_state(dom) if dom is not None else None
        if state == "running" or where != "active" or time.monotonic() >= deadline:
            return where, state
        time.sleep(interval_s)
