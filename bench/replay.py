"""24-hour dynamic replay of PlanetLab CPU traces on the CloudSim fleet, planned by the planner.

Usage:
  .venv/bin/python bench/replay.py --trace-dir ../shared/data/planetlab/20110303 --out RESULT.json
      [--budget 0.2] [--ceiling 90] [--demand current|peak3|forecast|tangent] [--window 48] [--beta 0.25]
      [--migration-budget N] [--fleet all|g5] [--steps 288] [--memory cloudsim|enforce]
  The configuration of docs/benchmarks-field.md section 2 (all days): --ceiling 100 --migration-budget 20
  --fleet g5 --demand forecast --window 48 --beta 0.25

Model (Beloglazov & Buyya, CCPE 2012; CloudSim 3.0.3 power example), metrics in bench/replay_model.py:
* 800 hosts, even index HP ML110 G4 (2 x 1860 MIPS), odd index G5 (2 x 2660 MIPS), 4096 MB, 1 Gbit/s;
* one VM per trace file (sorted names), type = index % 4: 2500/2000/1000/500 MIPS, 870/1740/1740/613 MB;
* every 300 s (288 samples) the planner gets the current placement and CPU demand and returns a
  target assignment; every VM whose host changes migrates at once, for RAM / (bandwidth / 2)
  seconds, with CloudSim's 10 % degradation on the source and 10 % reservation on the destination;
* initial placement: the planner's consolidation of a round-robin start (not counted as migrations).

The planner document per step: resources ["cpu"] (MIPS); host cap = 2 x PE MIPS; VM demand =
current request (``--demand current``), the max of the last 3 samples (``peak3``), or a forecast from
the trace so far (``forecast``: mean + beta x standard deviation of the VM's last ``--window`` samples,
sample k included, never a later one; ``tangent``: a per-host chance constraint made linear, see
``Replay.demand``); a hard CPU
ceiling at ``--ceiling`` % on every host; VMs whose demand exceeds a G4 PE (1860 MIPS) require
the G5 feature (CloudSim's PE-capacity check); last_migrated_s_ago from the replay; objective
consolidate; empty hosts are "off". Memory: CloudSim's PlanetLab example gives cloudlets a null
RAM utilisation model, so a running VM requests 0 MB and RAM never constrains its migrations;
``--memory cloudsim`` (default) does the same (RAM is not a planner resource), ``--memory enforce``
makes RAM a hard planner resource (4096 MB per host), which is physically right but not CloudSim.
"""
from __future__ import annotations

import argparse
import json
import os
import sys
import time

import numpy as np

HERE = os.path.dirname(os.path.abspath(__file__))
if HERE not in sys.path:
    sys.path.insert(0, HERE)

from benchlib import load_planner, planner_digest  # noqa: E402  pylint: disable=wrong-import-position
import replay_model as rmod  # noqa: E402  pylint: disable=wrong-import-position


def load_traces(trace_dir, samples=288):
    """(names, util[V, samples + 1] in 0..1): sorted file names; the extra column repeats the last
    sample (CloudSim's UtilizationModelPlanetLabInMemory does the same for the 24 h end point)."""
    names = sorted(n for n in os.listdir(trace_dir) if os.path.isfile(os.path.join(trace_dir, n)))
    util = np.zeros((len(names), samples + 1))
    for i, n in enumerate(names):
        vals = np.fromfile(os.path.join(trace_dir, n), dtype=np.int64, sep=" ")[:samples]
        util[i, :vals.size] = vals / 100.0
        util[i, vals.size:] = vals[-1] / 100.0 if vals.size else 0.0
    return names, util


class Replay:
    """State of one replayed day."""

    # pylint: disable=too-many-instance-attributes

    def __init__(self, util, args, plan_document):
        self.util = util
        self.args = args
        self.plan_document = plan_document
        self.nv = util.shape[0]
        f = rmod.fleet(args.hosts)
        self.nh = args.hosts
        self.host_mips, self.pe_mips, self.tables, self.kind = f["mips"], f["pe_mips"], f["tables"], f["kind"]
        vtype = np.arange(self.nv) % 4
        self.vm_mips = np.asarray(rmod.VM_MIPS)[vtype]
        self.vm_ram = np.asarray(rmod.VM_RAM_MB)[vtype]
        self.mig_s = rmod.migration_seconds(self.vm_ram)
        self.host = np.arange(self.nv) % self.nh
        self.last_mig = np.full(self.nv, -1e9)
        self.reserve = 0.0          # MIPS kept free on every host (--demand tangent)
        self.metrics = rmod.Metrics()
        self.stats = {"plan_calls": 0, "infeasible_steps": 0, "plan_s": 0.0, "max_plan_s": 0.0,
                      "hosts_active": [], "conflicts": [], "slow_steps": []}

    def requested(self, t):
        """Requested MIPS per VM at time t (linear interpolation between samples, as CloudSim)."""
        k = int(t // rmod.INTERVAL_S)
        k = min(k, self.util.shape[1] - 2)
        x = (t - k * rmod.INTERVAL_S) / rmod.INTERVAL_S
        u = self.util[:, k] + (self.util[:, k + 1] - self.util[:, k]) * x
        return u * self.vm_mips

    def demand(self, k):
        """Planning demand per VM (MIPS) from samples 0..k only (sample k is the one just measured)."""
        cur = self.util[:, k]
        if self.args.demand == "peak3":
            cur = self.util[:, max(0, k - 2):k + 1].max(axis=1)
        elif self.args.demand in ("forecast", "tangent"):
            win = self.util[:, max(0, k - self.args.window + 1):k + 1] * self.vm_mips[:, None]
            mu, sd = win.mean(axis=1), win.std(axis=1)
            if self.args.demand == "forecast":
                dem = mu + self.args.beta * sd
            else:
                # Chance constraint per host, sum(mu) + z sqrt(sum(sd^2)) <= cap, made linear by the tangent
                # of sqrt at a typical host's variance S0 (an upper bound for any S):
                # sqrt(S) <= (S + S0) / (2 sqrt(S0)), so each VM counts mu + z sd^2 / (2 sqrt(S0)) and
                # every host keeps z sqrt(S0) / 2 free (self.reserve, used by document()).
                hosts_est = max(1.0, float(mu.sum()) / float(self.host_mips.max()))
                s0 = max(1.0, float(np.sqrt((sd ** 2).sum() / hosts_est)))
                dem = mu + self.args.beta * sd ** 2 / (2.0 * s0)
                self.reserve = self.args.beta * s0 / 2.0
            if self.args.current_weight > 0:
                dem = np.maximum(dem, self.args.current_weight * self.util[:, k] * self.vm_mips)
            return np.minimum(dem, self.vm_mips)
        return cur * self.vm_mips

    def document(self, k, t, budget, initial=False):
        dem = self.demand(k)
        room = self.args.ceiling / 100.0 * float(self.host_mips.max()) - self.reserve
        self.stats.setdefault("hosts_lb", []).append(float(np.ceil(dem.sum() / max(room, 1.0))))
        busy = np.zeros(self.nh, dtype=bool)
        busy[self.host] = True
        res = ["cpu", "mem"] if self.args.memory == "enforce" else ["cpu"]
        hosts = []
        for h in range(self.nh):
            cap = {"cpu": float(self.host_mips[h])}
            if self.args.memory == "enforce":
                cap["mem"] = rmod.HOST_RAM_MB
            hosts.append({"id": "h%d" % h, "cap": cap, "features": ["g5"] if self.kind[h] == 1 else [],
                          "labels": {"model": "G5" if self.kind[h] == 1 else "G4"},
                          "power": "on" if busy[h] else "off", "migration_bandwidth_mbps": rmod.HOST_BW_MBPS})
        vms = []
        for v in range(self.nv):
            d = {"cpu": round(float(dem[v]), 3)}
            if self.args.memory == "enforce":
                d["mem"] = int(self.vm_ram[v])
            vm = {"id": "v%d" % v, "dem": d, "mem_alloc_mib": int(self.vm_ram[v]), "vcpu": 1,
                  "host": "h%d" % self.host[v]}
            if dem[v] > rmod.HOST_PE_MIPS[0]:
                vm["requires"] = ["g5"]
            ago = t - self.last_mig[v]
            if ago < 1e8:
                vm["last_migrated_s_ago"] = round(float(ago), 1)
            vms.append(vm)
        if self.reserve > 0:
            # Headroom kept free on every host (tangent chance constraint): one ceiling per host model.
            exps = []
            for kind, label in ((0, "G4"), (1, "G5")):
                cap = float(rmod.HOST_PE_MIPS[kind] * rmod.HOST_PES)
                pct = max(1.0, round(self.args.ceiling - 100.0 * self.reserve / cap, 2))
                exps.append({"id": "cpu-ceiling-" + label, "type": "ceiling", "resource": "cpu", "max_pct": pct,
                             "labels": {"model": label}, "hard": True})
        else:
            exps = [{"id": "cpu-ceiling", "type": "ceiling", "resource": "cpu", "max_pct": self.args.ceiling,
                     "hard": True}]
        if self.args.fleet == "g5":
            exps.append({"id": "efficient-hosts", "type": "fence", "vms": ["v%d" % v for v in range(self.nv)],
                         "labels": {"model": "G5"}, "hard": True})
        opts = {"budget_s": budget, "seed": self.args.seed, "objective": "consolidate"}
        if not initial:
            every = self.args.consolidate_every
            if every > 1 and k % every:
                opts["migration_budget"] = 0          # repair-only step: required moves only
            elif self.args.migration_budget is not None:
                opts["migration_budget"] = self.args.migration_budget
        return {"resources": res, "hosts": hosts, "vms": vms, "expectations": exps, "options": opts}

    def plan(self, k, t, budget, initial=False):
        """Target host per VM from the planner (None when it finds no feasible plan)."""
        doc = self.document(k, t, budget, initial)
        t0 = time.perf_counter()
        try:
            out = self.plan_document(doc)
        except Exception as exc:  # pylint: disable=broad-exception-caught
            out = {"feasible": False, "conflicts": [{"text": "planner raised %s: %s" % (type(exc).__name__, exc)}]}
        dt = time.perf_counter() - t0
        self.stats["plan_calls"] += 1
        self.stats["plan_s"] += dt
        self.stats["max_plan_s"] = max(self.stats["max_plan_s"], dt)
        if dt > max(1.0, 5.0 * budget) and len(self.stats["slow_steps"]) < 10:
            search = (out.get("metrics") or {}).get("search") or {}
            self.stats["slow_steps"].append({"step": k, "plan_s": round(dt, 2), "feasible": bool(out.get("feasible")),
                                             "phases": search.get("phases"), "phase": search.get("phase"),
                                             "consolidated": search.get("consolidated")})
        if not out.get("feasible"):
            self.stats["infeasible_steps"] += 1
            if len(self.stats["conflicts"]) < 5:
                self.stats["conflicts"].append([k, [c.get("text") for c in out.get("conflicts") or []][:2]])
            return None
        target = self.host.copy()
        for vid, hid in (out.get("assignment") or {}).items():
            target[int(vid[1:])] = int(hid[1:])
        return target

    def initial_placement(self):
        target = self.plan(0, 0.0, self.args.initial_budget, initial=True)
        if target is not None:
            self.host = target

    def run(self, steps):
        self.initial_placement()
        horizon = steps * rmod.INTERVAL_S
        for k in range(steps):
            t = k * rmod.INTERVAL_S
            target = self.plan(k, t, self.args.budget) if k > 0 else None
            moving = np.zeros(0, dtype=np.int64) if target is None else np.flatnonzero(target != self.host)
            self.metrics.migrations += int(moving.size)
            if moving.size:
                self._count_moves(k, moving, target)
            self.last_mig[moving] = t
            self.stats["hosts_active"].append(int(np.unique(self.host).size))
            self.interval(t, min(t + rmod.INTERVAL_S, horizon), moving, target)
        return self.metrics.result()

    def _count_moves(self, k, moving, target):
        """Diagnostics: moves by VM type, moves off hosts whose *current* sample is over the ceiling,
        distinct source / destination hosts summed over steps."""
        st = self.stats.setdefault("moves", {"by_type": [0, 0, 0, 0], "from_over_ceiling_now": 0, "dest_host_steps": 0,
                                             "src_host_steps": 0})
        load = np.bincount(self.host, weights=np.minimum(self.util[:, k] * self.vm_mips, self.pe_mips[self.host]),
                           minlength=self.nh)
        over = load > self.host_mips * self.args.ceiling / 100.0 + 1e-6
        for t in range(4):
            st["by_type"][t] += int((moving % 4 == t).sum())
        st["from_over_ceiling_now"] += int(over[self.host[moving]].sum())
        st["dest_host_steps"] += int(np.unique(target[moving]).size)
        st["src_host_steps"] += int(np.unique(self.host[moving]).size)

    def interval(self, t0, t1, moving, target):
        """Simulate [t0, t1): migrations of ``moving`` VMs start at t0 and end after their duration."""
        ends = sorted({min(t1, t0 + float(self.mig_s[v])) for v in moving.tolist()} | {t1})
        t = t0
        still = moving
        for te in ends:
            rows = self.rows(still, target)
            self.metrics.span(rows, self.requested(t), self.requested(te), te - t, self.host_mips,
                              self.pe_mips, self.tables)
            done = still[t0 + self.mig_s[still] <= te + 1e-9]
            if done.size:
                self.host[done] = target[done]
                still = still[t0 + self.mig_s[still] > te + 1e-9]
            t = te

    def rows(self, moving, target):
        base_vm = np.arange(self.nv)
        kind = np.zeros(self.nv, dtype=np.int64)
        kind[moving] = rmod.OUT
        if moving.size == 0:
            return base_vm, self.host.copy(), kind
        row_vm = np.concatenate([base_vm, moving])
        row_host = np.concatenate([self.host, target[moving]])
        row_kind = np.concatenate([kind, np.full(moving.size, rmod.IN)])
        return row_vm, row_host, row_kind


# LR-MMT-1.2 reference runs (CloudSim 3.0.3, ../shared/refs/BENCHMARKS.md section 3b).
CLOUDSIM_LR_MMT = {
    "20110303": {"energy_kwh": 167.83, "migrations": 27649, "slatah_pct": 5.72, "pdm_pct": 0.075, "slav_pct": 0.00432},
    "20110306": {"energy_kwh": 127.98, "migrations": 21661, "slatah_pct": 5.99, "pdm_pct": 0.083, "slav_pct": 0.00497},
    "20110309": {"energy_kwh": 139.40, "migrations": 24239, "slatah_pct": 6.31, "pdm_pct": 0.083, "slav_pct": 0.00527},
    "20110322": {"energy_kwh": 172.88, "migrations": 31376, "slatah_pct": 6.34, "pdm_pct": 0.075, "slav_pct": 0.00473},
    "20110325": {"energy_kwh": 149.83, "migrations": 26320, "slatah_pct": 5.76, "pdm_pct": 0.077, "slav_pct": 0.00442},
}


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--trace-dir", required=True)
    p.add_argument("--out", required=True)
    p.add_argument("--budget", type=float, default=0.2, help="planner budget_s per step")
    p.add_argument("--initial-budget", type=float, default=5.0, help="planner budget_s for the initial placement")
    p.add_argument("--ceiling", type=float, default=90.0, help="hard CPU ceiling, %% of host MIPS")
    p.add_argument("--demand", choices=("current", "peak3", "forecast", "tangent"), default="current",
                   help="forecast: mean + beta x std of the last --window samples (the trace so far only)")
    p.add_argument("--window", type=int, default=12,
                   help="forecast: samples of history (12 = 1 hour)")
    p.add_argument("--beta", type=float, default=0.5, help="forecast: standard deviations of headroom per VM")
    p.add_argument("--current-weight", type=float, default=0.0,
                   help="forecast: demand is at least this times the current sample (0: off)")
    p.add_argument("--memory", choices=("cloudsim", "enforce"), default="cloudsim")
    p.add_argument("--migration-budget", type=int, default=None, help="planner option migration_budget per step")
    p.add_argument("--consolidate-every", type=int, default=1,
                   help="optional (consolidating) moves only every N steps; other steps repair only (migration_budget 0)")
    p.add_argument("--fleet", choices=("all", "g5"), default="all",
                   help="g5: a hard fence keeps every VM on the G5 hosts (more MIPS per watt); all: any host")
    p.add_argument("--steps", type=int, default=288)
    p.add_argument("--hosts", type=int, default=800)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--planner-path", default=None)
    a = p.parse_args(argv)
    t0 = time.perf_counter()
    names, util = load_traces(a.trace_dir)
    rp = Replay(util, a, load_planner(a.planner_path))
    res = rp.run(a.steps)
    day = os.path.basename(os.path.normpath(a.trace_dir))
    ref = CLOUDSIM_LR_MMT.get(day)
    out = dict(res)
    out.update({"day": day, "vms": len(names), "hosts": a.hosts, "steps": a.steps, "budget_s": a.budget,
                "ceiling_pct": a.ceiling, "demand": a.demand,
                "window": a.window, "beta": a.beta, "current_weight": a.current_weight, "memory": a.memory,
                "migration_budget": a.migration_budget, "consolidate_every": a.consolidate_every, "fleet": a.fleet,
                "wall_s": round(time.perf_counter() - t0, 1),
                "plan_calls": rp.stats["plan_calls"], "plan_s_total": round(rp.stats["plan_s"], 1),
                "plan_s_max": round(rp.stats["max_plan_s"], 3), "infeasible_steps": rp.stats["infeasible_steps"],
                "conflict_examples": rp.stats["conflicts"], "slow_steps": rp.stats["slow_steps"],
                "hosts_active_mean": round(float(np.mean(rp.stats["hosts_active"])), 1),
                "hosts_lb_mean": round(float(np.mean(rp.stats.get("hosts_lb") or [0])), 1),
                "diagnostics": dict({k: round(v, 5) for k, v in rp.metrics.diagnostics().items()},
                                    moves=rp.stats.get("moves")),
                "cloudsim_lr_mmt_1_2": ref, "planner_sha": planner_digest(a.planner_path)})
    if ref and a.steps == 288:
        out["vs_lr_mmt"] = {"energy": round(res["energy_kwh"] / ref["energy_kwh"], 3),
                            "migrations": round(res["migrations"] / ref["migrations"], 3),
                            "slav": round(res["slav_pct"] / ref["slav_pct"], 3)}
        out["targets_met"] = {"energy<=0.9": out["vs_lr_mmt"]["energy"] <= 0.9,
                              "migrations<=0.2": out["vs_lr_mmt"]["migrations"] <= 0.2,
                              "slav<=0.5": out["vs_lr_mmt"]["slav"] <= 0.5}
    with open(a.out, "w", encoding="utf-8") as f:
        json.dump(out, f, indent=1, sort_keys=True)
    sys.stdout.write(json.dumps(out, sort_keys=True) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
