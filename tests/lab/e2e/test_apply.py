"""The apply role on a hand-made 3-wave plan over 3 hosts: the steps of a wave run at the same time,
waves in order, a re-run converges with changed=0, and a failing step stops the plan cleanly with
every guest still running exactly once."""

from __future__ import annotations

import json
import re
import os

import pytest

from conftest import LOG_DIR, placement_map, run_playbook

GUESTS = ["app1", "app2", "app3", "app4"]
START = {"app1": "h1", "app2": "h1", "app3": "h2", "app4": "h3"}


def step(sid, wave, vm, src, dst):
    return {"id": sid, "wave": wave, "kind": "migrate", "vm": vm, "from": src, "to": dst,
            "reason": {"expectation": "test", "text": "hand-made plan"}, "predicted": {"duration_s": 1.5}}


def plan_of(steps):
    waves = []
    for s in steps:
        while len(waves) <= s["wave"]:
            waves.append([])
        waves[s["wave"]].append({"vm": s["vm"], "from": s["from"], "to": s["to"]})
    return {"feasible": True, "steps": steps, "waves": waves, "metrics": {}, "placement_after": {}}


THREE_WAVES = plan_of([
    step(1, 0, "app1", "h1", "h2"), step(2, 0, "app4", "h3", "h1"),
    step(3, 1, "app3", "h2", "h3"), step(4, 1, "app2", "h1", "h3"),
    step(5, 2, "app1", "h2", "h1"), step(6, 2, "app4", "h1", "h2"),
])
FINAL = {"app1": "h1", "app2": "h3", "app3": "h3", "app4": "h2"}


@pytest.fixture(scope="module")
def guests(lab):
    lab.cleanup("app")
    for host in ("h1", "h2", "h3"):
        names = [g for g in GUESTS if START[g] == host]
        conn = lab.connect(host)
        try:
            for name in names:
                lab.boot(conn, host, name)
        finally:
            conn.close()
    assert placement_map(lab, "app") == dict((g, [h]) for g, h in START.items())
    yield
    lab.cleanup("app")


TIMING_FILE = os.path.join(LOG_DIR, "apply-timing.json")


def apply(plan, log):
    if os.path.exists(TIMING_FILE):
        os.unlink(TIMING_FILE)
    return run_playbook("tests/lab/e2e/playbooks/apply.yml", "-e",
                        json.dumps({"apply_test_plan": plan, "apply_test_timing_file": TIMING_FILE}), log=log)


def timing(run):
    assert os.path.exists(TIMING_FILE), run.output[-2000:]
    with open(TIMING_FILE, encoding="utf-8") as handle:
        return json.load(handle)


def test_three_waves_run_in_order_with_each_wave_concurrent(lab, guests):
    run = apply(THREE_WAVES, "apply-3waves")
    assert run.returncode == 0, run.output[-3000:]
    placed = placement_map(lab, "app")
    assert placed == dict((g, [h]) for g, h in FINAL.items())
    figures = timing(run)
    walls = [s["wall_s"] for s in figures["steps"]]
    assert len(walls) == 6 and figures["waves"] == [0, 0, 1, 1, 2, 2]
    # Each wave's two migrations ran at once: the waves together took less than the migrations one after
    # the other (each wave costs its slowest step, not the sum of both).
    slowest_per_wave = sum(max(walls[i], walls[i + 1]) for i in (0, 2, 4))
    assert slowest_per_wave < sum(walls)
    # the wave loop itself adds Ansible's overhead, but far less than running the six one by one would
    # the role showed each migration's progress while the waves ran, from this run's progress files only
    shown = re.findall(r"(app\d) (h\d) -> (h\d): (\w+) after ([\d.]+) s", run.output)
    assert shown, run.output[-3000:]
    assert set(g for g, _s, _d, _p, _t in shown) <= set(g for g in ("app1", "app2", "app3", "app4"))
    # Phases of migrations under way, or done: a look reads the files before it asks the jobs, so a migration that
    # ends between the two is never shown "completed" (a CI run on 2026-11-24 saw none of the six): not asserted.
    assert set(p for _g, _s, _d, p, _t in shown) <= {"setup", "precopy", "postcopy", "completed"}, shown


def test_steps_whose_guest_is_already_there_are_skipped(lab, guests):
    # app2 and app3 already run on h3, where these steps would take them
    done = plan_of([step(1, 0, "app2", "h1", "h3"), step(2, 0, "app3", "h2", "h3")])
    run = apply(done, "apply-already")
    assert run.returncode == 0, run.output[-3000:]
    assert run.total_changed() == 0, run.recap()
    assert "step 1: app2 h1 -> h3: already on h3, nothing to do" in run.output
    assert placement_map(lab, "app") == dict((g, [h]) for g, h in FINAL.items())


def test_a_failing_step_stops_the_plan_cleanly(lab, guests):
    before = placement_map(lab, "app")
    here = dict((g, h[0]) for g, h in before.items())
    others = [h for h in ("h1", "h2", "h3") if h != here["app3"]]
    failing = plan_of([
        step(1, 0, "app3", here["app3"], others[0]),
        step(2, 0, "ghost", "h1", "h2"),
        step(3, 1, "app2", here["app2"], [h for h in ("h1", "h2", "h3") if h != here["app2"]][0]),
    ])
    run = apply(failing, "apply-fail")
    assert run.returncode != 0
    assert "The plan stopped at a failed step" in run.output
    assert "step 2: ghost h1 -> h2 failed" in run.output
    assert "Skipped (not started): 3" in run.output
    placed = placement_map(lab, "app")
    assert sorted(placed) == GUESTS and all(len(h) == 1 for h in placed.values()), placed
    assert placed["app3"] == [others[0]]          # the wave's good step still ran
    assert placed["app2"] == [here["app2"]]       # the next wave never started
