"""Build a planning instance (FORMAT.md) from a PlanetLab/CoMon trace snapshot.

Usage: python bench/planetlab_instance.py --day 20110303 --step 144 -o pl.json [--shared ../shared]

Setup of the CloudSim "power" example (Beloglazov & Buyya 2012), as in ../shared/bench/gen.py
--family planetlab, whose generator this script calls so that the instances match the baselines
measured in ../shared/refs/BENCHMARKS.md section 3:
  * 800 hosts, alternately HP ProLiant ML110 G4 (2 x 1860 MIPS) and G5 (2 x 2660 MIPS), 4096 MB;
  * one VM per trace file of the day, VM type i % 4 of (2500, 2000, 1000, 500) MIPS with
    (870, 1740, 1740, 613) MB; CPU demand = trace sample `step` (5-minute index, 0..287) x the
    type's MIPS, memory demand = the type's memory;
  * initial placement: random feasible spread on the types' peak MIPS (reservation-based).
Added here: vcpu = 1 (CloudSim VMs have one PE), and "day"/"step" for the record.
"""
from __future__ import annotations

import argparse
import importlib.util
import json
import os
import sys

from benchlib import write_output

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
DEFAULT_SHARED = os.path.join(os.path.dirname(REPO), "shared")


def import_shared(shared, name):
    """Import ../shared/bench/<name>.py as a module (not copied into the repo)."""
    path = os.path.join(shared, "bench", name + ".py")
    spec = importlib.util.spec_from_file_location("shared_" + name, path)
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


def days(shared):
    """Trace days available under shared/data/planetlab."""
    root = os.path.join(shared, "data", "planetlab")
    return sorted(d for d in os.listdir(root) if os.path.isdir(os.path.join(root, d)))


def build(shared, day, step, hosts=800, seed=1, fill=1.0):
    """Return the instance dict for one trace day and 5-minute step."""
    gen = import_shared(shared, "gen")
    a = argparse.Namespace(trace_dir=os.path.join(shared, "data", "planetlab", day), hosts=hosts, step=step,
                           fill=fill, seed=seed, name=f"planetlab_{day}_t{step}")
    rng = gen.np.random.default_rng(seed)
    inst = gen.gen_planetlab(a, rng)
    inst["day"] = day
    inst["step"] = step
    for v in inst["vms"]:
        v.setdefault("vcpu", 1)
    return inst


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--shared", default=DEFAULT_SHARED, help="shared directory (default: %(default)s)")
    p.add_argument("--day", help="trace day folder, e.g. 20110303 (default: first available)")
    p.add_argument("--step", type=int, default=144, help="5-minute sample index 0..287 (default: 144 = 12:00)")
    p.add_argument("--hosts", type=int, default=800)
    p.add_argument("--seed", type=int, default=1)
    p.add_argument("--fill", type=float, default=1.0)
    p.add_argument("-o", "--out", default="-")
    a = p.parse_args(argv)
    day = a.day or days(a.shared)[0]
    inst = build(a.shared, day, a.step, a.hosts, a.seed, a.fill)
    text = json.dumps(inst, separators=(",", ":"))
    write_output(text, a.out)
    return 0


if __name__ == "__main__":
    sys.exit(main())
