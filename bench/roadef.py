"""Run the planner on a ROADEF/EURO 2012 machine-reassignment instance and score it exactly.

Usage:
  .venv/bin/python bench/roadef.py MODEL ASSIGNMENT --budget SECONDS --out SOLUTION [--seed N]

Steps: read the instance (bench/roadef_model.py), map it onto the planner document with the same
objective (processes -> guests with their process move cost and service; machines -> hosts with their
machine move costs, location and neighbourhood labels; safety capacities -> soft weighted ceilings;
balance costs -> free_ratio; services -> anti-affinity; spread -> spread; dependencies -> depends;
transient resources -> transient_resources), run planner.api.plan_document with objective "cost" and
budget_s = SECONDS, take its target assignment (``--answer target``, the default: the lowest-cost placement it
found that meets every hard rule, transient usage included; when no safe order of migrations to it was found the
plan ends elsewhere and reports it as ``unreached_target``; ``--answer plan`` takes where the safe plan ends; both
costs are in the output as planner.target_cost / planner.plan_cost), check it with the challenge's hard constraints
(bench/roadef_cost.py) and score it with the exact objective. An invalid or infeasible planner answer is
never written: the initial assignment (always valid) is written instead and "fallback" says why. The last
line of stdout is one JSON object: cost, initial_cost, lower_bound, best_known, ratios, valid, wall_s,
peak_rss_mib, ...

Lower bound and initial cost are read from lb_<inst>.txt / original_cost_<inst>.txt next to
the model when present; best known from the table in BEST_KNOWN (BENCHMARKS.md section 2:
min of the S41 final and the Gualandi best-known column).
"""
from __future__ import annotations

import argparse
import json
import os
import re
import sys
import time

HERE = os.path.dirname(os.path.abspath(__file__))
if HERE not in sys.path:
    sys.path.insert(0, HERE)

from benchlib import load_planner, peak_rss_children_mib, peak_rss_mib, planner_digest  # noqa: E402  pylint: disable=wrong-import-position
import roadef_cost  # noqa: E402  pylint: disable=wrong-import-position
import roadef_model  # noqa: E402  pylint: disable=wrong-import-position

# Best known objective per instance: min(S41 final 300 s, Gualandi 2012 "best known UB") from
# ../shared/refs/BENCHMARKS.md section 2.
BEST_KNOWN = {
    "a1_1": 44306501, "a1_2": 777532896, "a1_3": 583005717, "a1_4": 252728589, "a1_5": 727578309,
    "a2_1": 198, "a2_2": 746097632, "a2_3": 1210644572, "a2_4": 1680615349, "a2_5": 318358949,
    "b_01": 3353533859, "b_02": 1015569276, "b_03": 157091678, "b_04": 4677962661, "b_05": 924769283,
    "b_06": 9525888445, "b_07": 14835258465, "b_08": 1214470739, "b_09": 15885647774, "b_10": 18048493393,
}


def instance_name(model_path):
    m = re.search(r"model_(.+)\.txt$", os.path.basename(model_path))
    return m.group(1) if m else os.path.basename(model_path)


def _side_number(model_path, prefix, name):
    path = os.path.join(os.path.dirname(model_path), "%s_%s.txt" % (prefix, name))
    if not os.path.exists(path):
        return None
    with open(path, encoding="ascii") as f:
        toks = f.read().split()
    return int(toks[0]) if toks else None


def _rounded(x, digits=6):
    return None if x is None else round(x, digits)


def solve(model, assignment, budget, seed=0, objective="cost", planner_path=None, fold=False, answer="target",
          workers=1, joint_swaps=False):
    """Import, plan, check, score. Returns (result dict, solution array)."""
    # pylint: disable=too-many-locals
    t0 = time.perf_counter()
    inst = roadef_model.parse_model(model, assignment)
    t_read = time.perf_counter() - t0
    name = instance_name(model)
    initial = roadef_cost.cost(inst, inst.a0)
    doc, notes = roadef_model.to_document(inst, budget_s=budget, seed=seed, objective=objective, fold=fold)
    doc.pop("x_roadef", None)
    doc["options"]["search_workers"] = workers
    doc["options"]["joint_swaps"] = joint_swaps
    t_map = time.perf_counter() - t0 - t_read
    plan_document = load_planner(planner_path)
    t1 = time.perf_counter()
    try:
        plan = plan_document(doc)
    except Exception as exc:  # pylint: disable=broad-exception-caught
        # Whatever the planner does, the harness still writes a valid solution.
        plan = {"feasible": False, "conflicts": [{"text": "planner raised %s: %s" % (type(exc).__name__, exc)}]}
    t_plan = time.perf_counter() - t1
    del doc
    planner = {"feasible": bool(plan.get("feasible")), "plan_s": round(t_plan, 3),
               "migrations": (plan.get("metrics") or {}).get("migrations"),
               "search": (plan.get("metrics") or {}).get("search"),
               "conflicts": [c.get("text") for c in (plan.get("conflicts") or [])][:5]}
    fallback = None
    raw = None
    if plan.get("feasible"):
        a = roadef_model.assignment_from_plan(inst, plan)
        planner["plan_cost"] = roadef_cost.cost(inst, a)["total"]
        planner["target_cost"] = planner["plan_cost"]
        unreached = plan.get("unreached_target")
        if unreached:
            target = roadef_model.assignment_from_plan(inst, unreached)
            planner["target_cost"] = roadef_cost.cost(inst, target)["total"]
            if answer == "target":
                # The challenge scores a final assignment under its own rules (transient usage on both machines, no
                # order of moves): the planner's target meets them though its plan could not reach it safely.
                a = target
        viol = roadef_cost.violations(inst, a)
        raw = roadef_cost.cost(inst, a)
        planner["raw_cost"] = raw["total"]
        planner["raw_violations"] = [{"kind": v["kind"], "count": v["count"], "example": v["examples"][0]} for v in viol]
        if viol:
            fallback = "planner assignment breaks %s; initial assignment written instead" % ", ".join(
                "%s (%d)" % (v["kind"], v["count"]) for v in viol)
    else:
        fallback = "planner returned no feasible plan; initial assignment written instead"
    if fallback:
        a = inst.a0.copy()
    final = roadef_cost.cost(inst, a)
    valid = not roadef_cost.violations(inst, a)
    lb = _side_number(model, "lb", name)
    init_file = _side_number(model, "original_cost", name)
    best = BEST_KNOWN.get(name)
    res = {
        "instance": name, "budget_s": budget, "seed": seed, "workers": workers, "joint_swaps": joint_swaps,
        "objective": objective, "answer": answer,
        "valid": valid, "fallback": fallback,
        "cost": final["total"], "components": final,
        "initial_cost": initial["total"], "initial_cost_file": init_file,
        "initial_cost_matches_file": None if init_file is None else init_file == initial["total"],
        "lower_bound": lb, "best_known": best,
        "ratio_best_known": None if not best else round(final["total"] / float(best), 6),
        "gap_normalised": _rounded(None if lb is None else roadef_cost.lower_bound_gap(final["total"], initial["total"], lb)),
        "worse_than_initial": final["total"] > initial["total"],
        "planner": planner, "mapping": notes, "stats": inst.stats(),
        "read_s": round(t_read, 3), "map_s": round(t_map, 3),
    }
    return res, a


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("model")
    p.add_argument("assignment")
    p.add_argument("--budget", type=float, default=10.0, help="planner budget_s (default: %(default)s)")
    p.add_argument("--out", required=True, help="solution file to write (challenge format)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--workers", type=int, default=1,
                   help="planner search_workers: searches side by side, one per core to spare (default: %(default)s)")
    p.add_argument("--joint-swaps", action="store_true",
                   help="planner joint_swaps: the search may also swap two processes that fit only once both have "
                        "moved, as the challenge allows (it scores the final assignment, with no order of moves)")
    p.add_argument("--objective", default="cost", choices=("cost", "balance", "consolidate"))
    p.add_argument("--planner-path", default=None, help="directory holding planner/ (default: plugins/plugin_utils)")
    p.add_argument("--answer", default="target", choices=("target", "plan"),
                   help="assignment to write: the planner's target (its lowest-cost placement meeting every challenge "
                        "rule, even when its plan cannot order all migrations safely) or where its safe plan ends "
                        "(default: %(default)s)")
    p.add_argument("--fold", action="store_true",
                   help="R > 4: map 3 resources and fold the rest conservatively into the 4th planner resource")
    a = p.parse_args(argv)
    t0 = time.perf_counter()
    res, sol = solve(a.model, a.assignment, a.budget, a.seed, a.objective, a.planner_path, a.fold, a.answer,
                     a.workers, a.joint_swaps)
    roadef_model.write_solution(a.out, sol)
    res["out"] = a.out
    res["wall_s"] = round(time.perf_counter() - t0, 3)
    res["peak_rss_mib"] = peak_rss_mib()
    res["peak_rss_children_mib"] = peak_rss_children_mib()
    res["planner_sha"] = planner_digest(a.planner_path)
    sys.stdout.write(json.dumps(res, sort_keys=True) + "\n")
    return 0 if res["valid"] else 1


if __name__ == "__main__":
    sys.exit(main())
