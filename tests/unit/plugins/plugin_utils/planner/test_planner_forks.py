"""Searches side by side in forked processes (planner/forks.py): answers come back in order, failures are
reported, a search past its deadline is stopped, and no process is left behind."""

from __future__ import annotations

import os
import time

import pytest

from ansible_collections.autopilot.kvm.plugins.plugin_utils.planner import forks

pytestmark = pytest.mark.skipif(not forks.can_fork(), reason="no os.fork on this platform")


def _reaped(pid):
    """True when ``pid`` is no child of ours any more (waited for, so no zombie is left)."""
    try:
        os.waitpid(pid, os.WNOHANG)
    except ChildProcessError:
        return True
    return False


def test_forked_searches_answer_in_order_each_with_its_own_seed():
    handles = forks.start(["a", "b", "c"], lambda seed: (seed * 2, os.getpid()))
    answers = forks.collect(handles, time.monotonic() + 30)
    assert [a[0] for a in answers] == ["ok"] * 3
    assert [a[1][0] for a in answers] == ["aa", "bb", "cc"]
    pids = {a[1][1] for a in answers}
    assert len(pids) == 3 and os.getpid() not in pids
    assert all(_reaped(pid) for pid, _r in handles)


def test_a_large_answer_comes_back_whole():
    # Bigger than a pipe's buffer, so the parent must read while the child writes.
    answers = forks.collect(forks.start([7], lambda seed: list(range(seed * 100000))), time.monotonic() + 30)
    assert answers == [("ok", list(range(700000)))]


def test_a_forked_search_that_raises_is_reported_with_its_error():
    def search(seed):
        if seed == 2:
            raise ValueError("no room for guest %d" % seed)
        return seed

    answers = forks.collect(forks.start([1, 2, 3], search), time.monotonic() + 30)
    assert answers == [("ok", 1), ("error", "ValueError: no room for guest 2"), ("ok", 3)]


def test_a_forked_search_still_running_at_the_deadline_is_stopped_and_reaped():
    handles = forks.start([0], lambda seed: time.sleep(60))
    t0 = time.monotonic()
    answers = forks.collect(handles, t0 + 0.3)
    assert time.monotonic() - t0 < 10
    assert answers[0][0] == "lost" and "deadline" in answers[0][1]
    assert _reaped(handles[0][0])


def test_stop_kills_and_reaps_searches_no_longer_wanted():
    handles = forks.start([0, 1], lambda seed: time.sleep(60))
    t0 = time.monotonic()
    forks.stop(handles)
    assert time.monotonic() - t0 < 10
    assert all(_reaped(pid) for pid, _r in handles)
