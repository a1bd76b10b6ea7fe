"""autopilot.kvm.migrate against libvirt's test:/// driver.

The test driver cannot migrate, so these tests cover everything around the move:
idempotency, check mode, diff, input errors, and a failed migration that must leave
the guest running on its source with libvirt's message in the failure.
"""

from __future__ import annotations

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


def test_guest_that_is_not_running_is_refused(monkeypatch):
    result = run_module(monkeypatch, migrate.main, dict(uri=DEST, name="off1", dest_uri=SOURCE))
    assert result["failed"]
    assert "'off1' is shutoff" in result["msg"]
    assert "only running guests" in result["msg"]


@pytest.mark.parametrize("args, message", [
    (dict(timeout=0), "timeout must be a positive number"),
    (dict(timeout=-5), "timeout must be a positive number"),
    (dict(bandwidth=-1), "bandwidth must be a positive number"),
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
    result = run_module(monkeypatch, migrate.main, dict(uri=SOURCE, name="test", dest_uri=bad))
    assert result["failed"]
    assert result["msg"].startswith("Cannot connect to libvirt at %s:" % bad)
    assert result["libvirt_error"]


def test_missing_libvirt_binding_gives_the_requirement(monkeypatch):
    monkeypatch.setattr(_libvirt_client, "libvirt", None)
    result = run_module(monkeypatch, migrate.main, dict(uri=SOURCE, name="test", dest_uri=DEST))
    assert result["failed"]
    assert "libvirt-python" in result["msg"]
    assert "python3-libvirt" in result["msg"]
