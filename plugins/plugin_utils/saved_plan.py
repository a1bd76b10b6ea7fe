# -*- coding: utf-8 -*-
# Copyright: autopilot.kvm contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""Plans written for review and applied later: what is saved, and the check before applying.

A saved plan carries the planner's request (hosts, guests, expectations, options) next to the
plan. Before it is applied, the remaining steps are replayed on the cluster as it is now, under
the saved expectations, with the planner's own validity rules: a plan whose guests have moved,
whose hosts are gone, or whose steps would now break a ceiling is refused.

Controller side, no Ansible imports.
"""

from __future__ import annotations

import time

from .planner.validate import check_plan

SAVED_PLAN_FORMAT = "autopilot.kvm/plan/1"


class SavedPlanError(ValueError):
    """The saved plan cannot be applied to the cluster as it is now; the message says why."""


def save(plan):
    """The document the plan playbook writes: the plan, and the request it answers beside it."""
    plan = dict(plan)
    request = plan.pop("request", None)
    if not request:
        raise SavedPlanError("the plan carries no request; it must come from the autopilot.kvm.plan lookup")
    return {
        "format": SAVED_PLAN_FORMAT,
        "created": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        "request": request,
        "plan": plan,
    }


def _remaining(plan, where_now):
    """The plan without the migrations already done (guest already on its destination)."""
    done = set(step["vm"] for step in plan.get("steps", [])
               if step.get("kind") == "migrate" and where_now.get(step["vm"]) == step["to"]
               and where_now.get(step["vm"]) != step["from"])
    steps = [step for step in plan.get("steps", []) if not (step.get("kind") == "migrate" and step["vm"] in done)]
    waves = [[move for move in wave if move["vm"] not in done] for wave in plan.get("waves", [])]
    return dict(plan, steps=steps, waves=waves), sorted(done)


def revalidate(saved, current_request):
    """The part of ``saved`` still to apply, checked against ``current_request`` (built from facts now).

    Raises SavedPlanError listing every reason the plan no longer holds.
    """
    if not isinstance(saved, dict) or saved.get("format") != SAVED_PLAN_FORMAT:
        raise SavedPlanError("not a saved autopilot.kvm plan (expected format %r, got %r)"
                             % (SAVED_PLAN_FORMAT, saved.get("format") if isinstance(saved, dict) else type(saved).__name__))
    plan, old = saved["plan"], saved["request"]
    if not plan.get("feasible"):
        raise SavedPlanError("the saved plan is not feasible; there is nothing to apply")
    reasons = []
    old_hosts = set(h["id"] for h in old["hosts"])
    new_hosts = set(h["id"] for h in current_request["hosts"])
    if old_hosts - new_hosts:
        reasons.append("host(s) gone since the plan was made: %s" % ", ".join(sorted(old_hosts - new_hosts)))
    where_now = dict((vm["id"], vm["host"]) for vm in current_request["vms"])
    for step in plan.get("steps", []):
        if step.get("kind") != "migrate":
            continue
        now = where_now.get(step["vm"])
        if now is None:
            reasons.append("guest %s no longer runs anywhere" % step["vm"])
        elif now not in (step["from"], step["to"]):
            reasons.append("guest %s runs on %s, the plan moves it from %s" % (step["vm"], now, step["from"]))
    if reasons:
        raise SavedPlanError("; ".join(reasons))

    remaining, done = _remaining(plan, where_now)
    # The saved expectations and options, over the hosts and guests as they are now.
    request = dict(current_request, expectations=old.get("expectations", []), options=old.get("options", {}))
    assignment = dict(where_now)
    assignment.update(dict((vm, host) for vm, host in plan.get("assignment", {}).items() if vm in where_now))
    errors = check_plan(request, {"feasible": True, "waves": remaining["waves"], "assignment": assignment,
                                  "steps": remaining["steps"]})
    if errors:
        raise SavedPlanError("the cluster changed and the saved plan would now break: %s" % "; ".join(errors[:10]))
    remaining["already_done"] = done
    return remaining
