"""Planning benchmark suite: instances, baselines, planner runs, checks, report.

Usage: .venv/bin/python bench/suite.py [--families homog,mixed,constrained,planetlab]
                                       [--sizes 50,200,1000,5000] [--budgets 1,10,60]
                                       [--big-budgets 1,10] [--quick] [--out bench/out]

For every instance (generated with ../shared/bench/gen.py from fixed seeds, or built from the
PlanetLab traces by planetlab_instance.py) it computes, in this run, the lower bounds and the
baselines of ../shared/bench/baselines.py (host LB, migration LB, FFD, migration-aware FFD
"ffd_sticky"), then runs bench/plan.py once per budget in a subprocess (wall time, peak RSS as
VmHWM); on the mixed and constrained families also once more with ffd_sticky's migrations as the
planner's migration budget ("equal budget": the optional budget is ffd_sticky's count less the
moves the planner's first run reported as required, so both plans may move as many guests). It
checks every result with bench/check.py, and writes bench/out/suite.json and
bench/out/suite.md (rows are saved after every run; --resume reuses them).
"""
from __future__ import annotations

import argparse
import hashlib
import json
import os
import platform
import signal
import subprocess
import sys
import time

import check
import planetlab_instance
from benchlib import planner_digest

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
DEFAULT_SHARED = os.path.join(os.path.dirname(REPO), "shared")

CONSTRAINED = ["--aa-frac", "0.2", "--ban-frac", "0.05", "--feature-frac", "0.1"]
SIZES = {50: 500, 200: 2000, 1000: 10000, 5000: 30000}
# family -> list of (hosts, seeds, extra gen.py arguments)
FAMILIES = {
    "homog": [(50, [1, 2, 3], []), (200, [1, 2, 3], []), (1000, [1, 2, 3], []), (5000, [1], [])],
    "mixed": [(50, [1], ["--mixed-hosts"]), (200, [1], ["--mixed-hosts"]), (1000, [1], ["--mixed-hosts"]),
              (5000, [1], ["--mixed-hosts"])],
    "constrained": [(50, [1], CONSTRAINED), (200, [1], CONSTRAINED), (1000, [1], CONSTRAINED),
                    (5000, [1], CONSTRAINED)],
}
PLANETLAB_STEPS = [144]
QUICK = {"homog": [(50, [1], []), (200, [1], [])], "mixed": [(50, [1], ["--mixed-hosts"])],
         "constrained": [(50, [1], CONSTRAINED)]}


def instance_specs(families, sizes, quick, shared):
    """List of dicts: name, family, H, V, builder args."""
    specs = []
    table = QUICK if quick else FAMILIES
    for fam in families:
        if fam == "planetlab":
            ds = planetlab_instance.days(shared)
            for day in ds[:1] if quick else ds:
                for step in PLANETLAB_STEPS:
                    specs.append({"name": f"planetlab_{day}_t{step}", "family": fam, "H": 800, "V": None,
                                  "day": day, "step": step})
            continue
        for h, seeds, extra in table.get(fam, []):
            if sizes and h not in sizes:
                continue
            v = SIZES[h]
            for seed in seeds:
                tag = {"homog": "", "mixed": "_mixed", "constrained": "_con"}[fam]
                specs.append({"name": f"synth{tag}_h{h}_v{v}_s{seed}", "family": fam, "H": h, "V": v,
                              "gen_args": ["--hosts", str(h), "--vms", str(v), "--seed", str(seed)] + extra})
    return specs


def build_instance(spec, shared, inst_dir, gen, regen=False):
    path = os.path.join(inst_dir, spec["name"] + ".json")
    if os.path.exists(path) and not regen:
        return path
    if spec["family"] == "planetlab":
        inst = planetlab_instance.build(shared, spec["day"], spec["step"])
        with open(path, "w", encoding="utf-8") as f:
            json.dump(inst, f, separators=(",", ":"))
    else:
        gen.main(spec["gen_args"] + ["--name", spec["name"], "-o", path])
    return path


def _sha1(path):
    h = hashlib.sha1()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def run_baselines(bl, path):
    """Bounds and baselines from ../shared/bench/baselines.py, measured in this run."""
    import numpy as np  # pylint: disable=import-outside-toplevel
    P = bl.load(path)
    with open(path, encoding="utf-8") as f:
        mem = np.array([v.get("mem_alloc_mib", 0) for v in json.load(f)["vms"]], dtype=float)
    t = time.perf_counter()
    lb = bl.host_lb(P)
    out = {"H": P["H"], "V": P["V"], "host_lb": lb, "ceil_lb": bl.ceil_lb(P), "mig_lb_at_lb": bl.mig_lb(P, lb)}
    out["lb_wall_s"] = round(time.perf_counter() - t, 3)
    init = bl.evaluate(P, P["cur"])
    out["initial_hosts"] = init["hosts"]
    out["initial_overloaded"] = int((bl.overload_min_moves(P) > 0).sum())
    for meth in ("ffd", "ffd_sticky"):
        t = time.perf_counter()
        a = bl.ffd(P) if meth == "ffd" else bl.ffd_sticky(P)
        w = time.perf_counter() - t
        if a is None:
            out[meth] = {"status": "no solution", "wall_s": round(w, 3)}
            continue
        ev = bl.evaluate(P, a)
        moved = a != P["cur"]
        out[meth] = {"status": "ok", "hosts": ev["hosts"], "migrations": ev["migrations"],
                     "feasible": ev["feasible"], "mig_lb": bl.mig_lb(P, ev["hosts"]),
                     "gib_moved": round(float(mem[moved].sum()) / 1024.0, 3), "wall_s": round(w, 3)}
    return out, P


def _vm_hwm_mib(pid):
    """VmHWM (peak RSS) of a running process in MiB, or 0 if unreadable."""
    try:
        with open(f"/proc/{pid}/status", encoding="ascii") as f:
            for line in f:
                if line.startswith("VmHWM:"):
                    return int(line.split()[1]) / 1024.0
    except (OSError, ValueError):
        pass
    return 0.0


def run_planner(python, path, budget, res_path, log_path, planner_path, timeout, extra=()):
    """Run bench/plan.py in a subprocess; returns (status, process wall s, peak RSS MiB).

    Peak RSS = VmHWM of the child polled every 20 ms (ru_maxrss from wait4 is unusable here: with
    vfork+exec the child inherits this process's high-water mark); plan.py also reports its own
    VmHWM at the very end, and the larger of the two is kept by evaluate_row()."""
    cmd = [python, os.path.join(REPO, "bench", "plan.py"), path, "--budget", str(budget), "--out", res_path]
    if planner_path:
        cmd += ["--planner-path", planner_path]
    cmd += list(extra)
    if os.path.exists(res_path):
        os.remove(res_path)
    t0 = time.perf_counter()
    peak = 0.0
    with open(log_path, "w", encoding="utf-8") as log:
        proc = subprocess.Popen(cmd, stdout=log, stderr=subprocess.STDOUT,  # pylint: disable=consider-using-with
                                start_new_session=True)
        while True:
            peak = max(peak, _vm_hwm_mib(proc.pid))
            try:
                proc.wait(0.02)
            except subprocess.TimeoutExpired:
                if time.perf_counter() - t0 > timeout:
                    os.killpg(proc.pid, signal.SIGKILL)
                    proc.wait()
                    status = "timeout"
                    break
                continue
            status = "ok" if proc.returncode == 0 else f"exit {proc.returncode}"
            break
    wall = time.perf_counter() - t0
    return status, round(wall, 2), round(peak, 1)


def evaluate_row(spec, budget, status, proc_wall, peak, res_path, inst_doc, P, bl, base):
    row = {"instance": spec["name"], "family": spec["family"], "H": base["H"], "V": base["V"], "budget_s": budget,
           "status": status, "proc_wall_s": proc_wall, "peak_rss_mib": peak}
    if status != "ok" or not os.path.exists(res_path):
        row["valid"] = False
        log_path = res_path[:-len(".json")] + ".log"
        if os.path.exists(log_path):
            with open(log_path, encoding="utf-8", errors="replace") as f:
                tail = [line.strip() for line in f.read().splitlines() if line.strip()]
            row["error"] = tail[-1][:300] if tail else ""
        return row
    with open(res_path, encoding="utf-8") as f:
        res = json.load(f)
    rep = check.check(inst_doc, res, max_list=20)
    fig = rep["figures"]
    metrics = res.get("metrics") or {}
    hosts = fig["hosts_used"]
    mlb = bl.mig_lb(P, hosts) if hosts else None
    row.update({
        "valid": rep["valid"], "n_violations": rep["n_violations"], "violations_by_rule": rep["violations_by_rule"],
        "first_violations": rep["violations"][:5],
        "hosts": hosts, "host_lb": base["host_lb"], "hosts_ratio": round(hosts / base["host_lb"], 4),
        "migrations": fig["migrations"], "mig_lb": mlb,
        "mig_ratio": round(fig["migrations"] / mlb, 4) if mlb else (1.0 if fig["migrations"] == 0 else None),
        "moves": fig["moves"], "gib_moved": fig["gib_moved"], "waves": fig["waves"],
        "makespan_s": metrics.get("makespan_s"), "wall_s": res.get("wall_s"),
        "polled_peak_rss_mib": peak, "peak_rss_mib": max(peak, res.get("peak_rss_mib") or 0.0),
        "planner_feasible": metrics.get("feasible"),
        "planner_conflicts": metrics.get("conflicts"), "planner_metrics": metrics,
    })
    if metrics.get("feasible") is False:
        row["status"] = "infeasible"
    return row


# ---------------------------------------------------------------------------- report
def machine_info(python):
    info = {"nproc": os.cpu_count(), "cpu": "", "mem_gib": None, "python": "", "platform": platform.platform()}
    try:
        with open("/proc/cpuinfo", encoding="utf-8") as f:
            for line in f:
                if line.startswith("model name"):
                    info["cpu"] = line.split(":", 1)[1].strip()
                    break
        with open("/proc/meminfo", encoding="utf-8") as f:
            for line in f:
                if line.startswith("MemTotal:"):
                    info["mem_gib"] = round(int(line.split()[1]) / 1024.0 / 1024.0, 1)
                    break
    except OSError:
        pass
    info["python"] = subprocess.run([python, "-c", "import sys; print(sys.version.split()[0])"], check=False,
                                    capture_output=True, text=True).stdout.strip()
    return info


def planner_fingerprint(planner_path):
    """The planner version measured (benchlib.planner_digest, as plan/roadef/replay results cite it)."""
    if not os.path.isdir(os.path.join(planner_path, "planner")):
        return "missing"
    return planner_digest(planner_path)


def _f(x, nd=1):
    if x is None:
        return "-"
    if isinstance(x, float):
        return f"{x:.{nd}f}"
    return str(x)


def _ratio(a, b, nd=3):
    if a is None or not b:
        return "-"
    return f"{a / b:.{nd}f}"


def targets(rows, baselines):
    """Evaluate the issue's targets; returns a list of (target, verdict, detail)."""
    out = []
    by, eq = {}, {}
    for r in rows:
        (eq if r.get("variant") == "equal_budget" else by).setdefault(r["instance"], {})[r["budget_s"]] = r

    def verdict(items):
        if not items:
            return "not measured"
        return "met" if all(ok for ok, _detail in items) else "NOT met"

    t1 = []
    for name, rb in by.items():
        r = rb.get(1.0)
        if r and r["family"] == "homog" and r["H"] == 1000:
            ok = (r.get("valid") and r.get("wall_s") is not None and r["wall_s"] <= 1.0
                  and r["hosts"] <= 1.003 * r["host_lb"] and r["mig_lb"] is not None
                  and r["migrations"] <= 1.03 * r["mig_lb"])
            t1.append((ok, f"{'ok' if ok else 'FAIL'} {name}: valid={r.get('valid')} hosts/LB={r.get('hosts_ratio')} "
                           f"migr/LB={r.get('mig_ratio')} wall={r.get('wall_s')} s"))
    out.append(("1,000/10,000 at 1 s: hosts <= 1.003 LB, migrations <= 1.03 LB", verdict(t1), [d for _ok, d in t1]))
    t2 = []
    for name, rb in by.items():
        r = rb.get(10.0)
        if r and r["H"] == 5000:
            ok = bool(r.get("valid") and r.get("wall_s") is not None and r["wall_s"] <= 10.0
                      and r["peak_rss_mib"] < 2048)
            t2.append((ok, f"{'ok' if ok else 'FAIL'} {name}: valid={r.get('valid')} wall={r.get('wall_s')} s peak={r['peak_rss_mib']} MiB"))
    out.append(("5,000/30,000: valid plan within 10 s and < 2 GB peak memory", verdict(t2), [d for _ok, d in t2]))
    t3 = []
    for name, rb in by.items():
        r = rb.get(1.0)
        if r and r["family"] == "homog" and r["H"] == 50:
            b = baselines[name]
            ok = bool(r.get("valid") and r.get("wall_s") is not None and r["wall_s"] <= 1.0
                      and r["hosts"] == b["host_lb"] and r["migrations"] == b["mig_lb_at_lb"])
            t3.append((ok, f"{'ok' if ok else 'FAIL'} {name}: hosts {r.get('hosts')} (LB {b['host_lb']}), migrations {r.get('migrations')} "
                           f"(LB {b['mig_lb_at_lb']}), wall {r.get('wall_s')} s"))
    out.append(("50/500 at 1 s: proven optimum (hosts = LB, migrations = LB)", verdict(t3), [d for _ok, d in t3]))

    def dominance(rows_of):
        items = []
        for name, rb in rows_of.items():
            for budget, r in sorted(rb.items()):
                if r["family"] in ("mixed", "constrained"):
                    s = baselines[name].get("ffd_sticky", {})
                    ok = bool(r.get("valid") and s.get("hosts") is not None and r["hosts"] <= s["hosts"]
                              and r["migrations"] <= s["migrations"])
                    items.append((ok, f"{'ok' if ok else 'FAIL'} {name} @{budget:g} s: hosts {r.get('hosts')} vs "
                                      f"{s.get('hosts')}, migrations {r.get('migrations')} vs {s.get('migrations')}"))
        return items
    t4 = dominance(eq)
    out.append(("mixed and constrained: no worse than ffd_sticky on hosts and migrations (planner given ffd_sticky's "
                "migrations as its migration budget)", verdict(t4), [d for _ok, d in t4]))
    t4b = dominance(by)
    out.append(("(reading) the same with the default objective (fewest hosts first, no migration budget)",
                verdict(t4b), [d for _ok, d in t4b]))
    t5 = []
    for name, rb in by.items():
        for budget, r in sorted(rb.items()):
            if r["family"] in ("mixed", "constrained"):
                s = baselines[name].get("ffd_sticky", {})
                ok = bool(r.get("valid") and s.get("hosts") is not None
                          and (r["hosts"], r["migrations"]) <= (s["hosts"], s["migrations"]))
                t5.append((ok, f"{'ok' if ok else 'FAIL'} {name} @{budget:g} s"))
    out.append(("(reading, not a target) mixed and constrained, lexicographic (hosts, then migrations): no worse "
                "than ffd_sticky", verdict(t5), [d for ok, d in t5 if not ok]))
    allv = [(bool(r.get("valid")), f"{r['instance']} @{r['budget_s']:g} s ({r['status']})") for r in rows]
    out.append(("every plan valid (0 violations at the end and in every wave)", verdict(allv),
                [d for ok, d in allv if not ok]))
    return out


def markdown(data):
    rows, bls, meta = data["rows"], data["baselines"], data["meta"]
    m = meta["machine"]
    lines = [
        "# Planning benchmark results", "",
        f"Command: `{meta['command']}`  ",
        f"Started {meta['started']} UTC, finished {meta.get('finished', '(running)')} UTC; "
        f"planner fingerprint {meta['planner']} (sha256 of planner/*.py).  ",
        f"Planner versions measured: {', '.join(sorted({r.get('planner', '?') for r in rows}))}"
        f"{' (the planner changed during the run)' if len({r.get('planner') for r in rows}) > 1 else ''}.  ",
        f"Machine: {m['nproc']} CPUs ({m['cpu']}), {m['mem_gib']} GiB RAM, Python {m['python']}, {m['platform']}.",
        "",
        "## Bounds and baselines (same run)", "",
        "Host LB = fewest largest hosts covering the demand, per resource (= max_r ceil(sum d / C) on homogeneous "
        "fleets); mig LB = migration bound of baselines.py at the given host count. FFD = first-fit decreasing, "
        "sticky = migration-aware FFD. s = baseline wall time.", "",
        "| instance | H/V | init hosts (overl.) | host LB | mig LB @LB | FFD hosts / migr / GiB / s "
        "| sticky hosts / migr (mig LB) / GiB / s |",
        "|---|---|---|---|---|---|---|",
    ]
    reused = [f"{n} ({b['measured']})" for n, b in bls.items() if b.get("measured", "") < meta["started"]]
    if reused:
        lines[-2:-2] = ["Reused from an earlier run on this machine (--baseline-cache; deterministic results): "
                        + ", ".join(reused) + ".", ""]
    for name, b in bls.items():
        f, s = b.get("ffd", {}), b.get("ffd_sticky", {})
        lines.append(
            f"| {name} | {b['H']}/{b['V']} | {b['initial_hosts']} ({b['initial_overloaded']}) | {b['host_lb']} "
            f"| {b['mig_lb_at_lb']} | {_f(f.get('hosts'))} / {_f(f.get('migrations'))} / {_f(f.get('gib_moved'))}"
            f" / {_f(f.get('wall_s'), 2)} | {_f(s.get('hosts'))} / {_f(s.get('migrations'))} ({_f(s.get('mig_lb'))})"
            f" / {_f(s.get('gib_moved'))} / {_f(s.get('wall_s'), 2)} |")
    lines += [
        "", "## Planner (bench/plan.py), checked by bench/check.py", "",
        "valid = 0 violations of FORMAT.md rules 1-5 at the end and in every wave. hosts/LB and migr/LB are ratios "
        "to the host LB and to the migration LB at the planner's host count; vs sticky = planner / ffd_sticky "
        "(hosts, migrations; below 1 is better). wall = planner time (excl. reading the file); peak = peak RSS "
        "of the planner process.", "",
        "| instance | budget s | valid (viol.) | hosts (LB) | hosts/LB | migr (mig LB) | migr/LB | GiB moved "
        "| waves | makespan s | wall s | peak MiB | vs sticky |",
        "|---|---|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    for r in rows:
        if r["status"] != "ok":
            what = r["status"]
            if r.get("error"):
                what += ": " + r["error"].replace("|", "/")[:120]
            if what == "infeasible":
                what = f"planner: no plan ({r.get('planner_conflicts')} conflicts)"
            lines.append(f"| {_label(r)} | {r['budget_s']:g} | **{what}** | - | - | - | - | - | - | - "
                         f"| {_f(r.get('wall_s') or r['proc_wall_s'], 2)} | {_f(r['peak_rss_mib'], 0)} | - |")
            continue
        s = bls[r["instance"]].get("ffd_sticky", {})
        vs = "-"
        if s.get("hosts") is not None:
            vs = f"{_ratio(r['hosts'], s['hosts'])} / {_ratio(r['migrations'], s['migrations'])}"
        ok = "yes" if r["valid"] else f"**NO ({r['n_violations']})**"
        lines.append(
            f"| {_label(r)} | {r['budget_s']:g} | {ok} | {r['hosts']} ({r['host_lb']}) "
            f"| {r['hosts_ratio']:.3f} | {r['migrations']} ({_f(r['mig_lb'])}) | {_f(r['mig_ratio'], 3)} "
            f"| {r['gib_moved']:.1f} | {r['waves']} | {_f(r['makespan_s'], 0)} | {_f(r['wall_s'], 2)} "
            f"| {_f(r['peak_rss_mib'], 0)} | {vs} |")
    lines += ["", "## Summary (means over the instances of a family and size)", "",
              "| family | H/V | n | budget s | valid | hosts/LB | migr/LB | hosts/sticky | migr/sticky | wall s (max) "
              "| peak MiB (max) |", "|---|---|---|---|---|---|---|---|---|---|---|"]
    groups = {}
    for r in rows:
        fam = r["family"] + (" (equal budget)" if r.get("variant") == "equal_budget" else "")
        groups.setdefault((fam, r["H"], r["V"], r["budget_s"]), []).append(r)
    for (fam, h, v, b), rs in groups.items():
        ok = [r for r in rs if r["status"] == "ok"]

        def mean(vals):
            vals = [x for x in vals if x is not None]
            return f"{sum(vals) / len(vals):.3f}" if vals else "-"
        st = [bls[r["instance"]].get("ffd_sticky", {}) for r in ok]
        lines.append(
            f"| {fam} | {h}/{v} | {len(rs)} | {b:g} | {sum(1 for r in rs if r.get('valid'))}/{len(rs)} "
            f"| {mean([r['hosts_ratio'] for r in ok])} | {mean([r['mig_ratio'] for r in ok])} "
            f"| {mean([r['hosts'] / x['hosts'] for r, x in zip(ok, st) if x.get('hosts')])} "
            f"| {mean([r['migrations'] / x['migrations'] for r, x in zip(ok, st) if x.get('migrations')])} "
            f"| {_f(max((r.get('wall_s') or r['proc_wall_s'] for r in rs), default=None), 2)} "
            f"| {_f(max((r['peak_rss_mib'] for r in rs), default=None), 0)} |")
    lines += ["", "## Targets", ""]
    for t, v, details in targets(rows, bls):
        lines.append(f"- **{v}**: {t}")
        for d in details:
            lines.append(f"  - {d}")
    return "\n".join(lines) + "\n"


def _label(row):
    if row.get("variant") == "equal_budget":
        return f"{row['instance']} (migration budget {row.get('migration_budget')})"
    return row["instance"]


def save(data, out_dir):
    with open(os.path.join(out_dir, "suite.json"), "w", encoding="utf-8") as f:
        json.dump(data, f, indent=1)
    with open(os.path.join(out_dir, "suite.md"), "w", encoding="utf-8") as f:
        f.write(markdown(data))


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--shared", default=DEFAULT_SHARED, help="shared directory (default: %(default)s)")
    p.add_argument("--out", default=os.path.join(REPO, "bench", "out"), help="scratch directory")
    p.add_argument("--families", default="homog,mixed,constrained,planetlab")
    p.add_argument("--sizes", default="", help="host counts to keep, e.g. 50,200 (default: all)")
    p.add_argument("--budgets", default="1,10,60")
    p.add_argument("--big-budgets", default="", help="budgets for instances with >= --big-vms VMs (default: --budgets)")
    p.add_argument("--big-vms", type=int, default=10000)
    p.add_argument("--quick", action="store_true", help="small smoke set")
    p.add_argument("--resume", action="store_true", help="reuse rows of an earlier suite.json")
    p.add_argument("--regen", action="store_true", help="regenerate instance files")
    p.add_argument("--baseline-cache", action="store_true",
                   help="reuse FFD / ffd_sticky / bounds computed by an earlier run for the same instance file and "
                        "baselines.py (they are deterministic; ffd_sticky takes minutes on mixed 5000/30000)")
    p.add_argument("--python", default=sys.executable, help="interpreter for bench/plan.py")
    p.add_argument("--planner-path", default="", help="passed to plan.py (default: plugins/plugin_utils)")
    a = p.parse_args(argv)
    shared = os.path.abspath(a.shared)
    out_dir = os.path.abspath(a.out)
    inst_dir, res_dir = os.path.join(out_dir, "instances"), os.path.join(out_dir, "results")
    for d in (inst_dir, res_dir):
        os.makedirs(d, exist_ok=True)
    budgets = [float(x) for x in a.budgets.split(",") if x]
    big_budgets = [float(x) for x in a.big_budgets.split(",") if x] or budgets
    sizes = {int(x) for x in a.sizes.split(",") if x}
    gen = planetlab_instance.import_shared(shared, "gen")
    bl = planetlab_instance.import_shared(shared, "baselines")
    old = {}
    if a.resume and os.path.exists(os.path.join(out_dir, "suite.json")):
        with open(os.path.join(out_dir, "suite.json"), encoding="utf-8") as f:
            prev = json.load(f)
        old = {(r["instance"], r["budget_s"], r.get("variant", "default")): r for r in prev["rows"]
               if r["status"] == "ok"}
    planner_path = a.planner_path or os.path.join(REPO, "plugins", "plugin_utils")
    data = {"meta": {"command": " ".join(["bench/suite.py"] + (argv if argv is not None else sys.argv[1:])),
                     "started": time.strftime("%Y-%m-%d %H:%M", time.gmtime()),
                     "planner": planner_fingerprint(planner_path), "machine": machine_info(a.python)},
            "baselines": {}, "rows": []}
    specs = instance_specs(a.families.split(","), sizes, a.quick, shared)
    cache_path = os.path.join(out_dir, "baselines_cache.json")
    cache = {}
    if os.path.exists(cache_path):
        with open(cache_path, encoding="utf-8") as f:
            cache = json.load(f)
    bl_sha = _sha1(os.path.join(shared, "bench", "baselines.py"))
    for spec in specs:
        path = build_instance(spec, shared, inst_dir, gen, a.regen)
        key = f"{spec['name']}:{_sha1(path)}:{bl_sha}"
        if a.baseline_cache and key in cache:
            base, P = cache[key], bl.load(path)
        else:
            base, P = run_baselines(bl, path)
            base["measured"] = time.strftime("%Y-%m-%d %H:%M", time.gmtime())
            cache[key] = base
            with open(cache_path, "w", encoding="utf-8") as f:
                json.dump(cache, f, indent=1)
        data["baselines"][spec["name"]] = base
        s = base.get("ffd_sticky", {})
        print(f"[{spec['name']}] LB {base['host_lb']} migLB {base['mig_lb_at_lb']} sticky {s.get('hosts')}/"
              f"{s.get('migrations')} ({s.get('wall_s')} s)", flush=True)
        with open(path, encoding="utf-8") as f:
            inst_doc = json.load(f)
        for budget in (big_budgets if base["V"] >= a.big_vms else budgets):
            row = None
            for variant in ("default", "equal_budget"):
                extra = []
                if variant == "equal_budget":
                    required = ((row or {}).get("planner_metrics") or {}).get("search", {}).get("required_migrations")
                    if spec["family"] not in ("mixed", "constrained") or s.get("migrations") is None \
                            or required is None:
                        continue
                    extra = ["--migration-budget", str(max(0, s["migrations"] - required))]
                key = (spec["name"], budget, variant)
                if key in old and old[key].get("planner") == planner_fingerprint(planner_path):
                    row = old[key]
                    data["rows"].append(row)
                    continue
                fp = planner_fingerprint(planner_path)
                tag = f"{spec['name']}_b{budget:g}" + ("_eq" if extra else "")
                res_path = os.path.join(res_dir, tag + ".json")
                status, proc_wall, peak = run_planner(a.python, path, budget, res_path,
                                                      os.path.join(res_dir, tag + ".log"), a.planner_path,
                                                      timeout=3 * budget + 120, extra=extra)
                row = evaluate_row(spec, budget, status, proc_wall, peak, res_path, inst_doc, P, bl, base)
                row["planner"], row["variant"] = fp, variant
                if extra:
                    row["migration_budget"] = int(extra[1])
                data["rows"].append(row)
                print(f"  budget {budget:g}{' ' + ' '.join(extra) if extra else ''}: {status} "
                      f"valid={row.get('valid')} hosts={row.get('hosts')} "
                      f"migr={row.get('migrations')} (LB {row.get('mig_lb')}) waves={row.get('waves')} "
                      f"wall={row.get('wall_s')} peak={peak} MiB", flush=True)
                save(data, out_dir)
    data["meta"]["finished"] = time.strftime("%Y-%m-%d %H:%M", time.gmtime())
    save(data, out_dir)
    print(f"wrote {os.path.join(out_dir, 'suite.md')} and suite.json")
    return 0


if __name__ == "__main__":
    sys.exit(main())
