# -*- coding: utf-8 -*-
# Copyright: autopilot.kvm contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""Unit tests of the migration decisions (pure functions) and of the job watcher with a fake domain."""

from __future__ import annotations

import json
import os
import threading
import time

import pytest

from ansible_collections.autopilot.kvm.plugins.module_utils import _migration as mig

libvirt = pytest.importorskip("libvirt")

MIB = 1048576


# ------------------------------------------------------------------ options and transport

@pytest.mark.parametrize("value, expected", [
    (None, "false"), (False, "false"), (True, "true"), ("auto", "auto"), ("AUTO", "auto"),
    ("yes", "true"), ("true", "true"), ("no", "false"), ("False", "false"), ("0", "false"),
])
def test_postcopy_values_are_normalised(value, expected):
    assert mig.parse_postcopy(value) == expected


@pytest.mark.parametrize("value", ["sometimes", "2", ""])
def test_postcopy_rejects_other_values(value):
    with pytest.raises(ValueError, match="postcopy must be true, false or auto"):
        mig.parse_postcopy(value)


@pytest.mark.parametrize("uri, transport", [
    ("qemu+ssh://root@h2/system", "ssh"),
    ("qemu+libssh2://h2/system", "libssh2"),
    ("qemu+tls://h2.example.com/system", "tls"),
    ("qemu://h2.example.com/system", "tls"),      # a host without +transport: libvirt uses TLS
    ("qemu+tcp://10.0.0.2/system", "tcp"),
    ("QEMU+TCP://10.0.0.2/system", "tcp"),
    ("qemu:///system", "local"),
    ("qemu+unix:///system", "unix"),
    ("test:///default", "local"),
    ("qemu+ext:///system?command=/bin/x", "ext"),
])
def test_uri_transport(uri, transport):
    assert mig.uri_transport(uri) == transport


@pytest.mark.parametrize("dest_uri", ["qemu+ssh://root@h2/system", "qemu+tls://h2/system", "qemu://h2/system",
                                      "qemu:///system", "test:///default"])
def test_authenticated_or_local_destinations_pass(dest_uri):
    description, error = mig.transport_check(dest_uri)
    assert error is None
    assert description["data"] == "direct"


def test_plain_tcp_destination_is_refused_with_the_way_out():
    description, error = mig.transport_check("qemu+tcp://10.0.0.2/system")
    assert description == {"control": "tcp", "data": "direct"}
    assert error.startswith("Refusing the unencrypted, unauthenticated destination qemu+tcp://10.0.0.2/system")
    assert "qemu+ssh://" in error and "qemu+tls://" in error and "allow_unencrypted=true" in error


def test_plain_tcp_destination_passes_when_allowed():
    assert mig.transport_check("qemu+tcp://10.0.0.2/system", allow_unencrypted=True)[1] is None


def test_a_transport_that_cannot_be_judged_is_refused():
    error = mig.transport_check("qemu+ext:///system?command=/bin/x")[1]
    assert "cannot be checked" in error


@pytest.mark.parametrize("migrate_uri", ["tcp://10.1.0.2", "tcp:10.1.0.2:49152", "rdma://10.1.0.2"])
def test_plain_migration_stream_is_refused_unless_qemu_tls_or_allowed(migrate_uri):
    dest = "qemu+ssh://root@h2/system"
    error = mig.transport_check(dest, migrate_uri)[1]
    assert error.startswith("Refusing the unencrypted migration stream %s" % migrate_uri)
    assert mig.transport_check(dest, migrate_uri, tls=True) == ({"control": "ssh", "data": "tls"}, None)
    assert mig.transport_check(dest, migrate_uri, allow_unencrypted=True)[1] is None


def test_tunnelled_data_is_described():
    assert mig.transport_check("qemu+ssh://root@h2/system", tunnelled=True)[0] == {"control": "ssh", "data": "tunnelled"}


def base_opts(**changes):
    opts = dict(mode="live", postcopy="false", postcopy_after_passes=1, auto_converge=False, compression=None,
                bandwidth=None, timeout=600, tunnelled=False, tls=False, migrate_uri=None)
    opts.update(changes)
    return opts


def test_default_options_are_fine():
    assert mig.option_errors(base_opts()) == []


@pytest.mark.parametrize("changes, message", [
    (dict(timeout=0), "timeout must be a positive number of seconds, got 0"),
    (dict(bandwidth=0), "bandwidth must be a positive number of MiB/s, got 0"),
    (dict(postcopy_after_passes=-1), "postcopy_after_passes must be 0 or more"),
    (dict(mode="offline", postcopy="auto", bandwidth=5), "postcopy, bandwidth only apply to mode=live"),
    (dict(mode="offline", compression=["xbzrle"], auto_converge=True), "auto_converge, compression only apply"),
    (dict(tunnelled=True, postcopy="true"), "postcopy cannot be combined with tunnelled"),
    (dict(tunnelled=True, migrate_uri="tcp://x"), "migrate_uri cannot be combined with tunnelled"),
    (dict(tunnelled=True, tls=True), "tls and tunnelled are alternatives"),
    (dict(compression=["zstd"]), "unknown compression method(s) zstd"),
])
def test_bad_option_combinations_are_explained(changes, message):
    errors = mig.option_errors(base_opts(**changes))
    assert any(message in error for error in errors), errors


# ------------------------------------------------------------------ what to do, given where the guest is

@pytest.mark.parametrize("source, dest, action, words", [
    ("active", "absent", "migrate", "running on the source"),
    ("active", "inactive", "migrate", "running on the source"),   # a stale definition is replaced
    ("active", "active", "fail", "running on both hosts"),
    ("absent", "active", "ok", "already running on the destination"),
    ("inactive", "active", "ok", "already running on the destination"),  # undefine_source=false leftover
    ("inactive", "absent", "fail", "use mode=offline"),
    ("inactive", "inactive", "fail", "use mode=offline"),
    ("absent", "absent", "fail", "neither on the source nor on the destination"),
    ("absent", "inactive", "fail", "neither on the source nor on the destination"),
])
def test_live_decisions(source, dest, action, words):
    got, reason = mig.decide("live", source, dest)
    assert got == action
    assert words in reason


@pytest.mark.parametrize("source, dest, undefine, action, words", [
    ("inactive", "absent", True, "migrate", "shut off on the source"),
    ("absent", "inactive", True, "ok", "already defined on the destination"),
    ("absent", "active", True, "ok", "already defined on the destination"),
    ("inactive", "inactive", False, "ok", "undefine_source=false"),
    ("inactive", "inactive", True, "fail", "refusing to overwrite"),
    ("active", "absent", True, "fail", "use mode=live"),
    ("absent", "absent", True, "fail", "neither on the source nor on the destination"),
])
def test_offline_decisions(source, dest, undefine, action, words):
    got, reason = mig.decide("offline", source, dest, undefine_source=undefine)
    assert got == action
    assert words in reason


# ------------------------------------------------------------------ flags and parameters

def test_default_flags_are_live_peer_to_peer_persistent():
    flags = mig.migration_flags()
    assert flags == libvirt.VIR_MIGRATE_LIVE | libvirt.VIR_MIGRATE_PEER2PEER | libvirt.VIR_MIGRATE_PERSIST_DEST
    assert mig.flag_names(flags) == ["LIVE", "PEER2PEER", "PERSIST_DEST"]


def test_every_option_maps_to_its_flag():
    flags = mig.migration_flags("live", "auto", auto_converge=True, compression=["xbzrle"], tls=True)
    assert mig.flag_names(flags) == ["LIVE", "PEER2PEER", "PERSIST_DEST", "COMPRESSED", "AUTO_CONVERGE",
                                     "POSTCOPY", "TLS"]
    assert mig.flag_names(mig.migration_flags("live", "true", tunnelled=True)) == [
        "LIVE", "PEER2PEER", "TUNNELLED", "PERSIST_DEST", "POSTCOPY"]


def test_offline_flags_carry_nothing_live():
    flags = mig.migration_flags("offline", "true", auto_converge=True, compression=["mt"], tunnelled=True)
    assert mig.flag_names(flags) == ["PEER2PEER", "PERSIST_DEST", "OFFLINE"]


def test_params_only_hold_what_was_asked():
    assert mig.migration_params() == {}
    assert mig.migration_params(8) == {"bandwidth": 8}
    assert mig.migration_params(8, postcopy="true") == {"bandwidth": 8, "bandwidth.postcopy": 8}
    expected = {"migrate_uri": "tcp://10.1.0.2", "compression": "xbzrle"}
    assert mig.migration_params(None, "tcp://10.1.0.2", ["xbzrle"]) == expected
    assert mig.migration_params(compression=["xbzrle", "mt"]) == {"compression": ["xbzrle", "mt"]}


# ------------------------------------------------------------------ progress and the post-copy decision

@pytest.mark.parametrize("stats, percent", [
    ({}, 0.0),
    ({"data_total": 0, "data_remaining": 0}, 0.0),
    ({"data_total": 1000, "data_remaining": 1000}, 0.0),
    ({"data_total": 1000, "data_remaining": 250}, 75.0),
    ({"data_total": 1000, "data_remaining": 0}, 100.0),
    ({"data_total": 1000}, 0.0),
    ({"data_total": 1000, "data_remaining": 2000}, 0.0),
    ({"data_total": 3, "data_remaining": 1}, 66.7),
])
def test_progress_percent(stats, percent):
    assert mig.progress_percent(stats) == percent


def test_dirty_rate_is_pages_times_page_size():
    assert mig.dirty_bytes_per_s({"memory_dirty_rate": 100, "memory_page_size": 4096}) == 409600
    assert mig.dirty_bytes_per_s({"memory_dirty_rate": 10}) == 10 * mig.DEFAULT_PAGE_SIZE_BYTES
    assert mig.dirty_bytes_per_s({}) == 0


def test_precopy_prediction_is_the_geometric_sum():
    assert mig.predict_precopy_s(100 * MIB, 10 * MIB, 0) == 10.0
    assert mig.predict_precopy_s(100 * MIB, 10 * MIB, 5 * MIB) == 20.0   # rho 0.5 doubles it
    assert mig.predict_precopy_s(100 * MIB, 10 * MIB, 10 * MIB) is None  # never converges
    assert mig.predict_precopy_s(100 * MIB, 0, 0) is None


def test_remaining_data_counts_only_the_non_zero_share():
    assert mig.data_remaining_bytes({"memory_remaining": 100 * MIB}) == 100 * MIB
    assert mig.data_remaining_bytes({"data_remaining": 10}) == 10
    assert mig.data_remaining_bytes({}) == 0
    # 1 normal page in 4 so far: a quarter of the remainder is real data
    assert mig.data_remaining_bytes({"memory_remaining": 100 * MIB, "memory_normal": 10,
                                     "memory_constant": 30}) == 25 * MIB


def test_auto_counts_zero_pages_as_nearly_free():
    # 200 MiB left at 10 MiB/s with 15 s left: too slow if all data, fine when half of it is zero pages
    stats = job(1, remaining=200 * MIB)
    stats.update(memory_normal=50, memory_constant=50)
    assert mig.postcopy_decision("auto", 1, stats, 45, 60) == (False, None)


def job(iteration, remaining=50 * MIB, transfer=10 * MIB, dirty_pages=0, total=256 * MIB):
    return {"data_total": total, "data_remaining": remaining, "memory_remaining": remaining,
            "memory_iteration": iteration, "memory_bps": transfer, "memory_dirty_rate": dirty_pages,
            "memory_page_size": 4096}


def test_no_switch_without_postcopy_or_before_memory_moves():
    assert mig.postcopy_decision("false", 0, job(5), 1, 600) == (False, None)
    assert mig.postcopy_decision("true", 0, {"data_total": 0, "memory_iteration": 0}, 1, 600) == (False, None)
    assert mig.postcopy_decision("true", 0, job(0), 1, 600) == (False, None)
    assert mig.postcopy_decision("auto", 0, {}, 1, 600) == (False, None)


@pytest.mark.parametrize("after, iteration, switch", [
    (0, 1, True), (1, 1, False), (1, 2, True), (2, 2, False), (2, 3, True), (2, 7, True),
])
def test_switch_after_n_complete_passes(after, iteration, switch):
    wanted, reason = mig.postcopy_decision("true", after, job(iteration), 1, 600)
    assert wanted is switch
    if switch:
        assert reason == "requested after %d pre-copy pass(es)" % after


def test_auto_keeps_precopy_while_it_converges_in_time():
    # 50 MiB left at 10 MiB/s with a dirty rate of 20 % : ~6 s needed, 590 s left
    assert mig.postcopy_decision("auto", 1, job(3, dirty_pages=512), 10, 600) == (False, None)


def test_auto_switches_when_the_dirty_rate_nears_the_transfer_rate():
    dirty_pages = int(0.85 * 10 * MIB / 4096)
    wanted, reason = mig.postcopy_decision("auto", 1, job(2, dirty_pages=dirty_pages), 10, 600)
    assert wanted
    assert "pre-copy would not converge" in reason and "85 %" in reason


def test_auto_does_not_trust_a_dirty_rate_before_the_first_pass_ends():
    dirty_pages = int(2 * 10 * MIB / 4096)
    assert mig.postcopy_decision("auto", 1, job(1, dirty_pages=dirty_pages), 10, 600) == (False, None)


def test_auto_switches_after_too_many_passes():
    wanted, reason = mig.postcopy_decision("auto", 1, job(mig.AUTO_MAX_PASSES + 1), 10, 600)
    assert wanted and reason == "%d pre-copy passes without converging" % mig.AUTO_MAX_PASSES


def test_auto_switches_when_the_rest_cannot_be_sent_before_the_timeout():
    # 200 MiB at 10 MiB/s need 20 s; 15 s are left
    wanted, reason = mig.postcopy_decision("auto", 1, job(1, remaining=200 * MIB), 45, 60)
    assert wanted and "15 s are left before the timeout" in reason
    assert mig.postcopy_decision("auto", 1, job(1, remaining=200 * MIB), 30, 60) == (False, None)


def test_auto_needs_a_transfer_rate():
    assert mig.postcopy_decision("auto", 1, job(4, transfer=0), 10, 20) == (False, None)


def test_progress_log_spaces_and_thins_samples():
    log = mig.ProgressLog(interval_s=1.0, limit=10)
    assert log.add(0.0, {"data_total": 100, "data_remaining": 100, "memory_iteration": 1}, "precopy")
    assert not log.add(0.5, {}, "precopy")         # too soon
    for second in range(1, 40):
        log.add(float(second), {"data_total": 100, "data_remaining": max(0, 100 - second), "memory_iteration": 1},
                "precopy")
    assert len(log.samples) <= 10
    assert log.samples[0]["t"] == 0.0
    times = [sample["t"] for sample in log.samples]
    assert times == sorted(times)
    log.add_final(40.2, "completed", 100.0)
    assert log.samples[-1] == dict(t=40.2, phase="completed", percent=100.0, remaining_bytes=0,
                                   processed_bytes=None, iteration=1)
    assert len(log.samples) <= 10


def test_progress_file_is_written_whole_and_throttled(tmp_path):
    path = str(tmp_path / "progress.json")
    writer = mig.ProgressFile(path, "vm1", "h1", "h3", interval_s=60)
    writer.write("precopy", 1.5, {"data_total": 200, "data_remaining": 50, "memory_iteration": 1})
    with open(path, encoding="utf-8") as handle:
        first = json.load(handle)
    assert first["percent"] == 75.0 and first["phase"] == "precopy" and not first["finished"]
    assert first["guest"] == "vm1" and first["source"] == "h1" and first["destination"] == "h3"
    writer.write("precopy", 1.7, {"data_total": 200, "data_remaining": 10})   # within the interval: skipped
    with open(path, encoding="utf-8") as handle:
        assert json.load(handle)["percent"] == 75.0
    writer.write("completed", 3.0, finished=True, mode_used="precopy")
    with open(path, encoding="utf-8") as handle:
        last = json.load(handle)
    assert last["finished"] and last["percent"] == 100.0 and last["mode_used"] == "precopy"
    assert os.listdir(str(tmp_path)) == ["progress.json"]   # no temporary file left behind
    assert writer.error is None


def test_an_unwritable_progress_file_is_reported_not_raised(tmp_path):
    (tmp_path / "plainfile").write_text("not a directory")
    writer = mig.ProgressFile(str(tmp_path / "plainfile" / "progress.json"), "vm1", "h1", "h3")
    writer.write("precopy", 1.0, {})
    assert "plainfile" in writer.error


def test_the_progress_directory_is_created(tmp_path):
    path = tmp_path / "run" / "autopilot-kvm" / "vm1.json"
    writer = mig.ProgressFile(str(path), "vm1", "h1", "h3")
    writer.write("precopy", 1.0, {})
    assert writer.error is None and path.exists()


# ------------------------------------------------------------------ the job watcher, with a fake domain

class FakeDomain:
    """Just enough of virDomain for run_migration: a migration that takes ``duration_s`` unless aborted."""

    def __init__(self, duration_s=0.3, stats=None, fail=None, abort_refusals=0, switch_refusals=0,
                 block_abort=False):
        self.duration_s = duration_s
        self.stats = stats or (lambda elapsed: {"data_total": 100, "data_remaining": 50, "memory_iteration": 1})
        self.fail = fail
        self.abort_refusals = abort_refusals
        self.switch_refusals = switch_refusals
        self.block_abort = block_abort
        self.ended = threading.Event()
        self.aborted = threading.Event()
        self.calls = []
        self.started = None

    def migrateToURI3(self, uri, params, flags):
        self.started = time.monotonic()
        self.calls.append(("migrate", uri, params, flags))
        try:
            if self.aborted.wait(self.duration_s):
                raise libvirt.libvirtError("operation aborted: job 'migration out' canceled by client")
            if self.fail:
                raise libvirt.libvirtError(self.fail)
        finally:
            self.ended.set()

    def jobStats(self, flags=0):
        if self.started is None:
            return {}
        return self.stats(time.monotonic() - self.started)

    def abortJob(self):
        self.calls.append(("abort",))
        if self.block_abort:
            self.ended.wait()
            raise libvirt.libvirtError("Requested operation is not valid: domain is not running")
        if self.abort_refusals:
            self.abort_refusals -= 1
            raise libvirt.libvirtError("cannot abort migration in this phase")
        self.aborted.set()

    def migrateStartPostCopy(self, flags=0):
        self.calls.append(("postcopy",))
        if self.switch_refusals:
            self.switch_refusals -= 1
            raise libvirt.libvirtError("Enable postcopy with migrate_set_capability before the start of migration")


def run(dom, timeout_s=5, **kwargs):
    kwargs.setdefault("poll_interval_s", 0.02)
    kwargs.setdefault("sample_interval_s", 0.05)
    return mig.run_migration(dom, "qemu+ssh://h3/system", 11, {"bandwidth": 8}, timeout_s, **kwargs)


def test_a_completed_migration_reports_wall_time_and_progress():
    dom = FakeDomain(duration_s=0.3)
    result = run(dom)
    assert dom.calls[0] == ("migrate", "qemu+ssh://h3/system", {"bandwidth": 8}, 11)
    assert 0.25 <= result["wall_s"] < 2
    assert not result["postcopy_started"] and result["postcopy_errors"] == []
    assert result["progress"][-1]["phase"] == "completed" and result["progress"][-1]["percent"] == 100.0
    assert any(sample["phase"] == "precopy" and sample["percent"] == 50.0 for sample in result["progress"])


def test_timeout_aborts_the_job():
    dom = FakeDomain(duration_s=10)
    with pytest.raises(mig.MigrationError) as caught:
        run(dom, timeout_s=0.2)
    assert str(caught.value) == "Migration did not finish within 0.2s and was aborted"
    assert caught.value.details["timed_out"] is True
    assert "canceled by client" in caught.value.details["libvirt_error"]
    assert caught.value.details["wall_s"] < 2
    assert caught.value.details["progress"][-1]["phase"] == "aborted"


def test_a_refused_abort_is_asked_again():
    dom = FakeDomain(duration_s=10, abort_refusals=2)
    with pytest.raises(mig.MigrationError) as caught:
        run(dom, timeout_s=0.1)
    assert [call for call in dom.calls if call == ("abort",)] == [("abort",)] * 3
    assert caught.value.details["abort_errors"] == ["cannot abort migration in this phase"]


def test_a_held_back_abort_does_not_stop_the_watch():
    """libvirt may hold an abort until the job ends: polling (and progress) continue meanwhile."""
    dom = FakeDomain(duration_s=0.6, block_abort=True)
    result = run(dom, timeout_s=0.1)
    assert result["abort_errors"] == ["Requested operation is not valid: domain is not running"]
    assert any(sample["t"] > 0.3 for sample in result["progress"][:-1])
    assert [call for call in dom.calls if call == ("abort",)] == [("abort",)]


def test_a_failed_migration_carries_libvirts_text():
    dom = FakeDomain(duration_s=0.05, fail="unable to connect to server: Connection refused")
    with pytest.raises(mig.MigrationError) as caught:
        run(dom)
    assert str(caught.value) == "Migration failed: unable to connect to server: Connection refused"
    assert caught.value.details["libvirt_error"] == "unable to connect to server: Connection refused"


def test_postcopy_switch_after_the_requested_passes():
    def stats(elapsed):
        return {"data_total": 100, "data_remaining": 40, "memory_iteration": 1 if elapsed < 0.2 else 2}

    dom = FakeDomain(duration_s=0.5, stats=stats, switch_refusals=1)
    result = run(dom, postcopy="true", postcopy_after_passes=1)
    assert result["postcopy_started"]
    assert result["postcopy_reason"] == "requested after 1 pre-copy pass(es)"
    assert dom.calls.count(("postcopy",)) == 2          # refused once, then taken
    assert "postcopy" in [sample["phase"] for sample in result["progress"]]
    assert mig.mode_used("live", result["postcopy_started"]) == "postcopy"


def test_postcopy_never_accepted_is_reported():
    dom = FakeDomain(duration_s=0.3, switch_refusals=1000)
    result = run(dom, postcopy="true", postcopy_after_passes=0)
    assert not result["postcopy_started"]
    assert result["postcopy_errors"] == ["Enable postcopy with migrate_set_capability before the start of migration"]
    assert mig.mode_used("live", False) == "precopy"


def test_timeout_does_not_abort_once_in_postcopy():
    dom = FakeDomain(duration_s=0.5)
    result = run(dom, timeout_s=0.2, postcopy="true", postcopy_after_passes=0)
    assert result["postcopy_started"] and result["timeout_in_postcopy"]
    assert ("abort",) not in dom.calls


# ------------------------------------------------------------------ after the job

class StatsDomain:
    def __init__(self, stats=None, error=None):
        self.stats, self.error = stats, error

    def jobStats(self, flags=0):
        assert flags == libvirt.VIR_DOMAIN_JOB_STATS_COMPLETED
        if self.error:
            raise libvirt.libvirtError(self.error)
        return self.stats


def test_completed_job_stats_are_translated():
    dom = StatsDomain({"time_elapsed": 3750, "downtime": 152, "data_total": 268967936, "data_processed": 125298620,
                       "memory_total": 268967936, "memory_processed": 125298620, "memory_iteration": 3,
                       "memory_bps": 97376370, "memory_postcopy_requests": 0})
    assert mig.completed_job_stats(dom) == dict(
        duration_s=3.75, downtime_ms=152, bytes_transferred=125298620, memory_total_bytes=268967936,
        memory_processed_bytes=125298620, iterations=3, transfer_bps=97376370, postcopy_requests=0)


def test_completed_job_stats_may_be_missing():
    assert mig.completed_job_stats(StatsDomain(error="Domain not found")) == {}
    assert mig.completed_job_stats(StatsDomain({})) == {}


def test_mode_used():
    assert mig.mode_used("offline", False) == "offline"
    assert mig.mode_used("live", False) == "precopy"
    assert mig.mode_used("live", True) == "postcopy"


class StateDomain:
    def __init__(self, states):
        self.states = list(states)

    def isActive(self):
        return True

    def state(self):
        return (self.states.pop(0) if len(self.states) > 1 else self.states[0]), 0


def test_settled_state_waits_for_the_guest_to_resume():
    dom = StateDomain([3, 3, 1])     # paused, paused, running
    assert mig.settled_state(lambda: dom, timeout_s=2, interval_s=0.01) == ("active", "running")


def test_settled_state_gives_up_and_says_what_it_saw():
    dom = StateDomain([3])
    assert mig.settled_state(lambda: dom, timeout_s=0.05, interval_s=0.01) == ("active", "paused")
    assert mig.settled_state(lambda: None, timeout_s=0.05) == ("absent", None)
