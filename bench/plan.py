"""Run the planner on one instance and write a result (../shared/bench/FORMAT.md).

Usage: .venv/bin/python bench/plan.py INSTANCE.json --budget SECONDS --out RESULT.json
                                      [--migration-budget N]

The planner is plugins/plugin_utils/planner (pure Python, stdlib only); it is imported from
--planner-path (default: <repo>/plugins/plugin_utils). wall_s is the time spent in
plan_document(), excluding reading and writing files. Extra result keys: "metrics" (the
planner's own figures, plus its "feasible" flag and number of "conflicts") and "peak_rss_mib"
(peak resident memory of this process, VmHWM, including reading the instance).
"""
from __future__ import annotations

import argparse
import json
import os
import sys
import time

HERE = os.path.dirname(os.path.abspath(__file__))
REPO = os.path.dirname(HERE)
if HERE not in sys.path:
    sys.path.insert(0, HERE)

from benchlib import load_planner, peak_rss_mib, write_output  # noqa: E402  pylint: disable=wrong-import-position


def run(doc, budget, seed=0, objective="consolidate", planner_path=None, migration_budget=None):
    """Plan one instance document; returns the FORMAT.md result dict."""
    plan_document = load_planner(planner_path or os.path.join(REPO, "plugins", "plugin_utils"))
    name = doc.get("name")
    doc["options"] = {"budget_s": float(budget), "seed": int(seed), "objective": objective,
                      "migration_budget": migration_budget}
    t0 = time.perf_counter()
    out = plan_document(doc)
    wall = time.perf_counter() - t0
    metrics = dict(out.get("metrics") or {})
    metrics["feasible"] = out.get("feasible")
    conflicts = out.get("conflicts") or []
    metrics["conflicts"] = len(conflicts) if isinstance(conflicts, (list, tuple, dict)) else conflicts
    return {
        "instance": name,
        "budget_s": float(budget),
        "wall_s": round(wall, 4),
        "assignment": out.get("assignment") or {},
        "waves": [[{"vm": m["vm"], "from": m["from"], "to": m["to"]} for m in wave]
                  for wave in (out.get("waves") or [])],
        "metrics": metrics,
    }


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("instance", help="instance JSON (FORMAT.md)")
    p.add_argument("--budget", type=float, required=True, help="planner time budget in seconds")
    p.add_argument("--out", required=True, help="result JSON to write ('-' for stdout)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--objective", default="consolidate")
    p.add_argument("--migration-budget", type=int, default=None,
                   help="the planner's migration_budget option: optional migrations allowed (default: unlimited)")
    p.add_argument("--planner-path", default=os.path.join(REPO, "plugins", "plugin_utils"),
                   help="directory holding the planner package (default: %(default)s)")
    a = p.parse_args(argv)
    with open(a.instance, encoding="utf-8") as f:
        doc = json.load(f)
    result = run(doc, a.budget, a.seed, a.objective, a.planner_path, a.migration_budget)
    text = json.dumps(result, separators=(",", ":"))
    # measured once the output text exists, so that serialising counts too
    text = text[:-1] + f',"peak_rss_mib":{peak_rss_mib()}}}'
    write_output(text, a.out)
    return 0


if __name__ == "__main__":
    sys.exit(main())
