"""autopilot.kvm.migrate against libvirt's test:/// driver.

The test driver cannot migrate, so these tests cover everything around the move:
idempotency, check mode, diff, input errors, and a failed migration that must leave
the guest running on its source with libvirt's message in the failure.
"""

from __future__ import annotations

import json
import os

import pytest

from ansible_collections.autopilot.kvm.plugins.module_utils import _libvirt_client
from ansible_collections.autopilot.kvm.plugins.modules import migrate

from .module_runner import run_module

libvirt = pytest.importorskip("libvirt")

NODE_XML = os.path.join(os.path.dirname(__file__), "fixtures", "node.xml")
# test:///default is one shared in-process state (domain "test", running);
# test:///<file> is a fresh copy of the file on every open (web1 running, off1 shut off).
SOURCE = "test:///default"
DEST = "test://" + NODE_XML


def is_running(uri, name):
    conn = libvirt.open(uri)
    try:
        return bool(conn.lookupByName(name).isActive())
    finally:
        conn.close()


def test_guest_already_on_destination_is_unchanged(monkeypatch):
    result = run_module(monkeypatch, migrate.main, dict(uri=SOURCE, name="web1", dest_uri=DEST), diff=True)
    assert not result.get("failed"), result
    assert result["changed"] is False
    assert result["migration"]["performed"] is False
    assert result["state"] == "running"
    assert result["diff"]["before"] == result["diff"]["after"]


def test_check_mode_reports_the_move_and_moves_nothing(monkeypatch):
    result = run_module(monkeypatch, migrate.main, dict(uri=SOURCE, name="test", dest_uri=DEST), check_mode=True, diff=True)
    assert not result.get("failed"), result
    assert result["changed"] is True
    assert result["migration"]["performed"] is False
    assert result["migration"]["guest"] == "test"
    assert set(result["diff"]) == {"before", "after"}
    assert "host" in result["diff"]["before"]
    assert is_running(SOURCE, "test")


def test_failed_migration_keeps_the_guest_on_its_source(monkeypatch):
    result = run_module(monkeypatch, migrate.main, dict(uri=SOURCE, name="test", dest_uri=DEST, timeout=30))
    assert result["failed"]
    # libvirt's own words are in the message, and the module says where the guest is
    assert "Migration failed" in result["msg"]
    assert "not supported" in result["libvirt_error"] or "unsupported" in result["libvirt_error"]
    assert "is running on" in result["msg"]
    assert "Traceback" not in result["msg"]
    assert is_running(SOURCE, "test")


def test_unknown_guest_is_a_clear_failure(monkeypatch):
    result = run_module(monkeypatch, migrate.main, dict(uri=SOURCE, name="ghost", dest_uri=DEST))
    assert result["failed"]
    assert "'ghost' is neither on the source" in result["msg"]


def test_guest_that_is_not_running_is_refused_live(monkeypatch):
    result = run_module(monkeypatch, migrate.main, dict(uri=DEST, name="off1", dest_uri=SOURCE))
    assert result["failed"]
    assert "'off1' is shut off on the source" in result["msg"]
    assert "only running guests are migrated live (use mode=offline)" in result["msg"]


@pytest.mark.parametrize("args, message", [
    (dict(timeout=0), "timeout must be a positive number"),
    (dict(timeout=-5), "timeout must be a positive number"),
    (dict(bandwidth=-1), "bandwidth must be a positive number"),
    (dict(postcopy="sometimes"), "postcopy must be true, false or auto, got 'sometimes'"),
    (dict(postcopy_after_passes=-1), "postcopy_after_passes must be 0 or more"),
    (dict(mode="offline", postcopy=True), "postcopy only apply to mode=live"),
    (dict(tunnelled=True, postcopy="auto"), "postcopy cannot be combined with tunnelled"),
    (dict(dest_uri="qemu+tcp://10.0.0.2/system"), "Refusing the unencrypted, unauthenticated destination"),
    (dict(migrate_uri="tcp://10.0.0.2"), "Refusing the unencrypted migration stream tcp://10.0.0.2"),
])
def test_bad_numbers_are_refused_before_anything_happens(monkeypatch, args, message):
    full = dict(uri=SOURCE, name="test", dest_uri=DEST)
    full.update(args)
    result = run_module(monkeypatch, migrate.main, full)
    assert result["failed"]
    assert message in result["msg"]
    assert is_running(SOURCE, "test")


def test_unreachable_uri_names_the_uri_and_libvirts_reason(monkeypatch):
    bad = "qemu+tcp://127.0.0.1:1/system"
    result = run_module(monkeypatch, migrate.main, dict(uri=SOURCE, name="test", dest_uri=bad,
                                                        allow_unencrypted=True))
    assert result["failed"]
    assert result["msg"].startswith("Cannot connect to libvirt at %s:" % bad)
    assert result["libvirt_error"]


def test_missing_libvirt_binding_gives_the_requirement(monkeypatch):
    monkeypatch.setattr(_libvirt_client, "libvirt", None)
    result = run_module(monkeypatch, migrate.main, dict(uri=SOURCE, name="test", dest_uri=DEST))
    assert result["failed"]
    assert "libvirt-python" in result["msg"]
    assert "python3-libvirt" in result["msg"]


def test_plain_tcp_is_refused_before_any_connection(monkeypatch):
    opened = []
    monkeypatch.setattr(libvirt, "open", lambda uri=None: opened.append(uri))
    result = run_module(monkeypatch, migrate.main, dict(uri=SOURCE, name="test", dest_uri="qemu+tcp://h3/system"))
    assert result["failed"]
    assert "allow_unencrypted=true" in result["msg"]
    assert result["transport"] == {"control": "tcp", "data": "direct"}
    assert opened == []


def test_check_mode_shows_flags_params_and_transport(monkeypatch):
    args = dict(uri=SOURCE, name="test", dest_uri=DEST, postcopy="auto", bandwidth=8, auto_converge=True,
                compression=["xbzrle"])
    result = run_module(monkeypatch, migrate.main, args, check_mode=True)
    assert not result.get("failed"), result
    migration = result["migration"]
    assert result["changed"] and not migration["performed"]
    assert migration["flags"] == ["LIVE", "PEER2PEER", "PERSIST_DEST", "COMPRESSED", "AUTO_CONVERGE", "POSTCOPY"]
    assert migration["params"] == {"bandwidth": 8, "bandwidth.postcopy": 8, "compression": "xbzrle"}
    assert migration["transport"] == {"control": "local", "data": "direct"}
    assert migration["reason"] == "is running on the source"
    assert is_running(SOURCE, "test")


def test_check_mode_writes_no_progress_file(monkeypatch, tmp_path):
    path = tmp_path / "progress.json"
    result = run_module(monkeypatch, migrate.main, dict(uri=SOURCE, name="test", dest_uri=DEST,
                                                        progress_file=str(path)), check_mode=True)
    assert result["changed"]
    assert not path.exists()


def test_unchanged_run_leaves_a_finished_progress_file(monkeypatch, tmp_path):
    path = tmp_path / "progress.json"
    result = run_module(monkeypatch, migrate.main, dict(uri=SOURCE, name="web1", dest_uri=DEST,
                                                        progress_file=str(path)))
    assert result["changed"] is False
    record = json.loads(path.read_text())
    assert record["phase"] == "unchanged" and record["finished"] and record["percent"] == 100.0
    assert record["guest"] == "web1"


def test_failed_migration_writes_failed_progress(monkeypatch, tmp_path):
    path = tmp_path / "progress.json"
    result = run_module(monkeypatch, migrate.main, dict(uri=SOURCE, name="test", dest_uri=DEST,
                                                        progress_file=str(path)))
    assert result["failed"]
    record = json.loads(path.read_text())
    assert record["phase"] == "failed" and record["finished"]
    assert record["error"] == result["libvirt_error"]


# ---------------------------------------------------------------- offline

def test_offline_check_mode_moves_a_shut_off_guest(monkeypatch):
    result = run_module(monkeypatch, migrate.main, dict(uri=DEST, name="off1", dest_uri=SOURCE, mode="offline"),
                        check_mode=True, diff=True)
    assert not result.get("failed"), result
    assert result["changed"] and not result["migration"]["performed"]
    assert result["migration"]["flags"] == ["PEER2PEER", "PERSIST_DEST", "OFFLINE"]
    assert result["migration"]["params"] == {}
    assert result["state"] == "shutoff"
    # (the test driver calls every host "vm", so compare with what the module reports)
    assert result["diff"] == {"before": {"host": result["migration"]["source"]},
                              "after": {"host": result["migration"]["destination"]}}


def test_offline_guest_already_on_the_destination_is_unchanged(monkeypatch):
    # off1 is defined (shut off) on DEST and not on SOURCE
    result = run_module(monkeypatch, migrate.main, dict(uri=SOURCE, name="off1", dest_uri=DEST, mode="offline"),
                        diff=True)
    assert not result.get("failed"), result
    assert result["changed"] is False
    assert result["migration"]["reason"] == "is already defined on the destination"
    assert result["state"] == "shutoff"
    assert result["diff"]["before"] == result["diff"]["after"]


def test_offline_refuses_a_running_guest(monkeypatch):
    result = run_module(monkeypatch, migrate.main, dict(uri=SOURCE, name="test", dest_uri=DEST, mode="offline"))
    assert result["failed"]
    assert "'test' is running on the source; mode=offline moves only shut-off guests (use mode=live)" in result["msg"]
    assert is_running(SOURCE, "test")


def test_offline_failure_carries_libvirts_text(monkeypatch):
    result = run_module(monkeypatch, migrate.main, dict(uri=DEST, name="off1", dest_uri=SOURCE, mode="offline"))
    assert result["failed"]
    assert result["msg"].startswith("Migration failed: ")
    assert result["libvirt_error"] in result["msg"]
    assert "'off1' is inactive on the source" in result["msg"]
