"""Reporting applied steps and comparing predictions with measurements."""

from __future__ import annotations

from ansible_collections.autopilot.kvm.plugins.plugin_utils.apply_report import prediction_report, step_outcome

STEP = {"id": 1, "wave": 0, "kind": "migrate", "vm": "vm1", "from": "h1", "to": "h2",
        "predicted": {"duration_s": 2.0, "bytes": 268435456}}


def test_a_performed_migration_reports_measured_beside_predicted():
    result = {"changed": True, "apply_job": {"apply_step": STEP},
              "migration": {"performed": True, "wall_s": 2.6, "duration_s": 2.5, "downtime_ms": 40,
                            "bytes_transferred": 100 * 1048576, "iterations": 3}}
    outcome = step_outcome(result)
    assert outcome["performed"] and not outcome["failed"]
    assert outcome["measured"]["duration_s"] == 2.5
    assert "step 1: vm1 h1 -> h2 done in 2.60 s wall" in outcome["text"]
    assert "100 MiB sent" in outcome["text"] and "predicted 2.0 s" in outcome["text"]


def test_unchanged_check_mode_failed_and_unfinished_steps():
    assert "already on h2" in step_outcome({"changed": False, "apply_step": STEP, "migration": {"performed": False}})["text"]
    assert "would be migrated" in step_outcome({"changed": True, "apply_step": STEP, "migration": {"performed": False}})["text"]
    failed = step_outcome({"failed": True, "msg": "Migration failed: boom", "apply_job": {"apply_step": STEP}})
    assert failed["failed"] and failed["text"].endswith("failed: Migration failed: boom")
    unfinished = step_outcome({"finished": 0, "apply_job": {"apply_step": STEP}})
    assert unfinished["failed"] and "did not finish in time" in unfinished["text"]


def test_prediction_report_gives_duration_error_and_host_load_error():
    outcome = step_outcome({"changed": True, "apply_job": {"apply_step": STEP},
                            "migration": {"performed": True, "wall_s": 3.2, "duration_s": 3.0}})
    plan = {"metrics": {"makespan_s": 2.0},
            "placement_after": {"h1": {"guests": [], "load_pct": {"mem": 0.0, "cpu": 0.0}},
                                "h2": {"guests": ["vm1"], "load_pct": {"mem": 25.0, "cpu": 1.0}}}}
    after = {"h1": {"capacity": {"cpus": 2, "memory_mib": 1024}, "guests": {}},
             "h2": {"capacity": {"cpus": 2, "memory_mib": 1024},
                    "guests": {"vm1": {"name": "vm1", "state": "running", "vcpus": 1,
                                       "memory": {"max_mib": 256, "current_mib": 256}, "rates": {"cpu_percent": 4.0}}}}}
    report = prediction_report(plan, [outcome], after)
    (step,) = report["steps"]
    assert step["predicted_duration_s"] == 2.0 and step["measured_duration_s"] == 3.0
    assert step["duration_error_pct"] == 50.0
    assert report["hosts"]["h2"]["measured_load_pct"] == {"cpu": 2.0, "mem": 25.0}
    assert report["hosts"]["h2"]["error_points"] == {"mem": 0.0, "cpu": 1.0}
    assert report["hosts"]["h2"]["measured_guests"] == ["vm1"]


def test_host_steps_are_reported_but_not_counted_as_migrations():
    step = {"id": 2, "wave": 0, "kind": "tune", "vm": "vm1", "cpu_limit": 500, "cost": {"duration_s": 0.5}}
    done = step_outcome({"changed": True, "apply_step": step})
    assert done["performed"] and done["text"] == "step 2: tune vm1 done"
    same = step_outcome({"changed": False, "apply_step": step})
    assert not same["performed"] and "already as planned" in same["text"]
    bad = step_outcome({"failed": True, "msg": "nope", "apply_step": step})
    assert bad["failed"] and bad["text"].endswith("failed: nope")
    assert prediction_report({}, [done], None)["steps"] == []
