# -*- coding: utf-8 -*-
# Copyright: autopilot.kvm contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""What applying a plan did, against what the plan predicted.

Controller side, no Ansible imports; the filters in plugins/filter/apply_report.py are thin.
"""

from __future__ import annotations

import time

from .cluster_document import ClusterDocumentError, build_document, placement


def _step_of(result):
    """The plan step an apply-role loop result belongs to (async start, async wait, or plain run)."""
    job = result.get("apply_job")
    if isinstance(job, dict) and isinstance(job.get("apply_step"), dict):
        return job["apply_step"]
    return result.get("apply_step") or {}


def _fmt_bytes(count):
    if count is None:
        return "?"
    return "%.0f MiB" % (count / 1048576.0)


def step_outcome(result):
    """One migration's outcome from its task result: what happened, measured against predicted."""
    step = _step_of(result)
    if step.get("kind", "migrate") != "migrate":
        return _host_step_outcome(step, result)
    migration = result.get("migration") or {}
    predicted = step.get("predicted") or {}
    label = "step %s: %s %s -> %s" % (step.get("id"), step.get("vm"), step.get("from"), step.get("to"))
    still_running = result.get("finished") == 0 and not result.get("failed")
    failed = bool(result.get("failed")) or still_running
    measured = dict((key, migration[key]) for key in
                    ("wall_s", "duration_s", "downtime_ms", "bytes_transferred", "iterations") if key in migration)
    if failed:
        reason = result.get("msg") or ("did not finish in time" if still_running else "failed")
        text = "%s failed: %s" % (label, reason)
    elif not migration.get("performed"):
        if result.get("changed"):
            text = "%s would be migrated (check mode)" % label
        else:
            text = "%s: already on %s, nothing to do" % (label, step.get("to"))
    else:
        text = "%s done in %.2f s wall (libvirt %s s, downtime %s ms, %s sent, %s passes); predicted %s s" % (
            label, migration.get("wall_s", 0.0), migration.get("duration_s", "?"), migration.get("downtime_ms", "?"),
            _fmt_bytes(migration.get("bytes_transferred")), migration.get("iterations", "?"),
            predicted.get("duration_s", "?"))
    return {
        "id": step.get("id"), "wave": step.get("wave"), "vm": step.get("vm"),
        "from": step.get("from"), "to": step.get("to"),
        "step": label, "failed": failed, "changed": bool(result.get("changed")),
        "performed": bool(migration.get("performed")),
        "predicted": predicted, "measured": measured, "text": text,
    }


def _host_step_outcome(step, result):
    """A tune, balloon or KSM step's outcome (these run synchronously on one host)."""
    target = step.get("vm") or step.get("host")
    label = "step %s: %s %s" % (step.get("id"), step.get("kind"), target)
    failed = bool(result.get("failed"))
    if failed:
        text = "%s failed: %s" % (label, result.get("msg") or "failed")
    elif result.get("changed"):
        text = "%s done" % label
    else:
        text = "%s: already as planned, nothing to do" % label
    return {
        "id": step.get("id"), "wave": step.get("wave"), "vm": step.get("vm"), "host": step.get("host"),
        "kind": step.get("kind"), "step": label, "failed": failed, "changed": bool(result.get("changed")),
        "performed": bool(result.get("changed")) and not failed,
        "predicted": step.get("cost") or {}, "measured": {}, "text": text,
    }


def _error_pct(measured, predicted):
    if measured is None or not predicted:
        return None
    return round(100.0 * (measured - predicted) / predicted, 1)


def prediction_report(plan, outcomes, cluster_after):
    """Predicted vs measured: each migration's duration and each host's load once the plan ran."""
    steps = []
    for outcome in outcomes or []:
        if not outcome.get("performed") or outcome.get("kind", "migrate") != "migrate":
            continue
        predicted_s = (outcome.get("predicted") or {}).get("duration_s")
        measured = outcome.get("measured") or {}
        measured_s = measured.get("duration_s", measured.get("wall_s"))
        steps.append({
            "id": outcome.get("id"), "vm": outcome.get("vm"), "from": outcome.get("from"), "to": outcome.get("to"),
            "predicted_duration_s": predicted_s, "measured_duration_s": measured_s,
            "measured_wall_s": measured.get("wall_s"), "downtime_ms": measured.get("downtime_ms"),
            "bytes_transferred": measured.get("bytes_transferred"),
            "predicted_bytes": (outcome.get("predicted") or {}).get("bytes"),
            "duration_error_pct": _error_pct(measured_s, predicted_s),
        })
    hosts = {}
    predicted_after = plan.get("placement_after") or {}
    actual_after, facts_error = {}, None
    if cluster_after:
        try:
            actual_after = placement(build_document(cluster_after))
        except ClusterDocumentError as error:
            facts_error = str(error)  # reported, not raised: the plan has run, the report must not fail it
    for host in sorted(set(predicted_after) | set(actual_after)):
        want = (predicted_after.get(host) or {}).get("load_pct") or {}
        got = (actual_after.get(host) or {}).get("load_pct") or {}
        hosts[host] = {
            "predicted_load_pct": want, "measured_load_pct": got,
            "error_points": dict((r, round(got[r] - want[r], 1)) for r in want if r in got and None not in (got[r], want[r])),
            "predicted_guests": (predicted_after.get(host) or {}).get("guests"),
            "measured_guests": (actual_after.get(host) or {}).get("guests"),
        }
    return {
        "recorded_at": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        "plan_metrics": plan.get("metrics") or {},
        "steps": steps,
        "hosts": hosts,
        "predicted_makespan_s": (plan.get("metrics") or {}).get("makespan_s"),
        "facts_error": facts_error,
    }
