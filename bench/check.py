"""Independent validity checker for plan results (../shared/bench/FORMAT.md).

Usage: python bench/check.py INSTANCE.json RESULT.json [--max-list N]

Prints a JSON report (violations and figures) and exits 1 when the plan breaks any rule:
  rule 0  result format (instance name, assignment / waves shape, unknown VMs or hosts)
  rule 1  final placement: every VM on one host, packing resources fit, required features,
          bans, anti-affinity groups on pairwise distinct hosts
  rule 2  replaying the waves on the initial placement gives the assignment; a VM moves at
          most once per wave, from where it is
  rule 3  in-wave reservation: a destination holds (VMs at wave start) + (arrivals) within
          capacity for every packing resource
  rule 4  no banned or featureless destination; anti-affinity after each wave for every group
          that held at the start of the wave
  rule 5  at most limits.max_migrations_per_host migrations touch a host in one wave

Written from FORMAT.md only: it imports nothing from the planner, and only the standard library.
"""
from __future__ import annotations

import argparse
import json
import sys

DEFAULT_MAX_MIGRATIONS_PER_HOST = 2


class Instance:
    """Indexed view of a FORMAT.md instance (pure Python, integer arithmetic)."""

    def __init__(self, doc):
        self.name = doc.get("name")
        self.res = list(doc["resources"])
        self.host_ids = [h["id"] for h in doc["hosts"]]
        self.cap = {h["id"]: tuple(int(h["cap"].get(r, 0)) for r in self.res) for h in doc["hosts"]}
        self.feat = {h["id"]: set(h.get("features") or []) for h in doc["hosts"]}
        self.vm_ids = [v["id"] for v in doc["vms"]]
        self.dem = {v["id"]: tuple(int(v["dem"].get(r, 0)) for r in self.res) for v in doc["vms"]}
        self.req = {v["id"]: set(v.get("requires") or []) for v in doc["vms"]}
        self.mem = {v["id"]: float(v.get("mem_alloc_mib", v["dem"].get("mem", 0))) for v in doc["vms"]}
        self.init = {v["id"]: v["host"] for v in doc["vms"]}
        self.bans = set((v, h) for v, h in doc.get("bans") or [])
        self.groups = [list(g) for g in doc.get("anti_affinity") or []]
        self.groups_of = {}
        for gi, g in enumerate(self.groups):
            for v in g:
                self.groups_of.setdefault(v, []).append(gi)
        limits = doc.get("limits") or {}
        self.limit = int(limits.get("max_migrations_per_host", DEFAULT_MAX_MIGRATIONS_PER_HOST))
        problems = []
        if len(self.cap) != len(self.host_ids):
            problems.append("duplicate host ids")
        if len(self.dem) != len(self.vm_ids):
            problems.append("duplicate VM ids")
        for v, h in self.init.items():
            if h not in self.cap:
                problems.append(f"VM {v} starts on unknown host {h}")
        if problems:
            raise ValueError("bad instance: " + "; ".join(problems[:5]))

    def allowed(self, v, h):
        """Why VM v may not run on host h ('' if it may)."""
        if (v, h) in self.bans:
            return "banned"
        missing = self.req[v] - self.feat[h]
        if missing:
            return "missing features " + ",".join(sorted(missing))
        return ""

    def host_lb(self):
        """max over resources of the fewest hosts (largest first) whose capacity covers the
        total demand; equals max_r ceil(sum demand / capacity) on a homogeneous fleet."""
        best = 1 if self.vm_ids else 0
        for i in range(len(self.res)):
            need = sum(d[i] for d in self.dem.values())
            caps = sorted((c[i] for c in self.cap.values()), reverse=True)
            acc, k = 0, 0
            while acc < need and k < len(caps):
                acc += caps[k]
                k += 1
            if acc < need:
                k = len(caps) + 1  # cannot be covered at all
            best = max(best, k)
        return best


class Report:
    """Collects violations (counts all, lists the first max_list)."""

    def __init__(self, max_list=200):
        self.max_list = max_list
        self.items = []
        self.count = 0
        self.by_rule = {}

    def add(self, rule, kind, msg, **where):
        self.count += 1
        key = f"{rule}:{kind}"
        self.by_rule[key] = self.by_rule.get(key, 0) + 1
        if len(self.items) < self.max_list:
            item = {"rule": rule, "kind": kind, "msg": msg}
            item.update(where)
            self.items.append(item)


def _loads(inst, place):
    """Per-host load vectors of a placement {vm: host}."""
    n = len(inst.res)
    load = {h: [0] * n for h in inst.host_ids}
    for v, h in place.items():
        d = inst.dem[v]
        row = load[h]
        for i in range(n):
            row[i] += d[i]
    return load


def _over(inst, row, h):
    """Names of the packing resources on which load row exceeds host h's capacity."""
    cap = inst.cap[h]
    return [inst.res[i] for i in range(len(cap)) if row[i] > cap[i]]


def _check_format(inst, result, rep):
    """Rule 0. Returns (assignment restricted to known VMs/hosts, waves as a list of lists)."""
    if inst.name is not None and result.get("instance") != inst.name:
        rep.add(0, "instance_name", f"result is for {result.get('instance')!r}, instance is {inst.name!r}")
    for key in ("budget_s", "wall_s"):
        if not isinstance(result.get(key), (int, float)):
            rep.add(0, "missing_field", f"{key} missing or not a number")
    asg = result.get("assignment")
    if not isinstance(asg, dict):
        rep.add(0, "assignment", "assignment missing or not an object")
        asg = {}
    clean = {}
    for v, h in asg.items():
        if v not in inst.dem:
            rep.add(0, "unknown_vm", f"assignment names unknown VM {v}", vm=v)
        elif h not in inst.cap:
            rep.add(1, "unknown_host", f"VM {v} assigned to unknown host {h}", vm=v, host=h)
        else:
            clean[v] = h
    waves = result.get("waves")
    if waves is None:
        waves = []
    if not isinstance(waves, list) or not all(isinstance(w, list) for w in waves):
        rep.add(0, "waves", "waves is not a list of lists")
        waves = []
    return clean, waves


def _check_final(inst, asg, rep):
    """Rule 1 on the final assignment."""
    for v in inst.vm_ids:
        if v not in asg:
            rep.add(1, "unplaced", f"VM {v} has no final host", vm=v)
    load = _loads(inst, asg)
    for h in inst.host_ids:
        over = _over(inst, load[h], h)
        if over:
            rep.add(1, "capacity", f"host {h} over capacity on {','.join(over)} at the end", host=h,
                    load=load[h], cap=list(inst.cap[h]))
    for v, h in asg.items():
        why = inst.allowed(v, h)
        if why:
            rep.add(1, "ban" if why == "banned" else "features", f"VM {v} ends on {h}: {why}", vm=v, host=h)
    for gi, g in enumerate(inst.groups):
        hs = [asg[v] for v in g if v in asg]
        if len(set(hs)) != len(hs):
            rep.add(1, "anti_affinity", f"anti-affinity group {gi} shares a host at the end", group=gi)


def _check_waves(inst, asg, waves, rep):
    """Rules 2-5: replay the waves. Returns (moves, MiB moved)."""
    where = dict(inst.init)
    load = _loads(inst, where)
    n = len(inst.res)
    moves, mib = 0, 0.0
    for wi, wave in enumerate(waves):
        seen = set()
        arrivals = {}
        touches = {}
        valid_moves = []
        for mi, mv in enumerate(wave):
            if not isinstance(mv, dict) or not all(k in mv for k in ("vm", "from", "to")):
                rep.add(0, "move_format", f"wave {wi} move {mi} lacks vm/from/to", wave=wi)
                continue
            v, src, dst = mv["vm"], mv["from"], mv["to"]
            if v not in inst.dem:
                rep.add(0, "unknown_vm", f"wave {wi} moves unknown VM {v}", wave=wi, vm=v)
                continue
            if dst not in inst.cap:
                rep.add(2, "unknown_host", f"wave {wi} moves {v} to unknown host {dst}", wave=wi, vm=v, host=dst)
                continue
            if v in seen:
                rep.add(2, "twice_in_wave", f"VM {v} moves more than once in wave {wi}", wave=wi, vm=v)
                continue
            seen.add(v)
            if src != where[v]:
                rep.add(2, "wrong_source", f"wave {wi}: VM {v} moves from {src} but is on {where[v]}",
                        wave=wi, vm=v, host=src)
            if dst == where[v]:
                rep.add(2, "no_op", f"wave {wi}: VM {v} 'moves' to the host it is on ({dst})", wave=wi, vm=v)
                continue
            why = inst.allowed(v, dst)
            if why:
                rep.add(4, "ban" if why == "banned" else "features", f"wave {wi}: VM {v} moves to {dst}: {why}",
                        wave=wi, vm=v, host=dst)
            valid_moves.append((v, where[v], dst))
        # rule 5: touches per host (the host the VM really leaves counts as the source)
        for v, src, dst in valid_moves:
            touches[src] = touches.get(src, 0) + 1
            touches[dst] = touches.get(dst, 0) + 1
        for h, k in touches.items():
            if k > inst.limit:
                rep.add(5, "host_limit", f"wave {wi}: {k} migrations touch host {h} (limit {inst.limit})",
                        wave=wi, host=h)
        # rule 3: in-wave reservation on destinations
        for v, src, dst in valid_moves:
            row = arrivals.setdefault(dst, [0] * n)
            d = inst.dem[v]
            for i in range(n):
                row[i] += d[i]
        for h, arr in arrivals.items():
            tot = [load[h][i] + arr[i] for i in range(n)]
            over = _over(inst, tot, h)
            if over:
                rep.add(3, "in_wave_capacity", f"wave {wi}: destination {h} over capacity on {','.join(over)} "
                        "(VMs at wave start + arrivals)", wave=wi, host=h, load=tot, cap=list(inst.cap[h]))
        # rule 4: anti-affinity groups that held at the start of the wave must still hold
        touched_groups = set()
        for v, _src, _dst in valid_moves:
            touched_groups.update(inst.groups_of.get(v, ()))
        held = {gi for gi in touched_groups
                if len({where[x] for x in inst.groups[gi]}) == len(inst.groups[gi])}
        # apply the wave
        for v, src, dst in valid_moves:
            d = inst.dem[v]
            for i in range(n):
                load[src][i] -= d[i]
                load[dst][i] += d[i]
            where[v] = dst
            moves += 1
            mib += inst.mem[v]
        for gi in sorted(held):
            g = inst.groups[gi]
            if len({where[x] for x in g}) != len(g):
                rep.add(4, "anti_affinity", f"wave {wi}: anti-affinity group {gi} shares a host after the wave",
                        wave=wi, group=gi)
    for v, h in asg.items():
        if where[v] != h:
            rep.add(2, "replay_mismatch", f"after the waves VM {v} is on {where[v]}, assignment says {h}", vm=v)
    return moves, mib


def check(inst_doc, result, max_list=200):
    """Check a result against an instance; returns a JSON-able report."""
    inst = Instance(inst_doc)
    rep = Report(max_list)
    asg, waves = _check_format(inst, result, rep)
    _check_final(inst, asg, rep)
    moves, mib = _check_waves(inst, asg, waves, rep)
    used = set(asg.values())
    figures = {
        "hosts_used": len(used),
        "host_lb": inst.host_lb(),
        "migrations": sum(1 for v, h in asg.items() if h != inst.init[v]),
        "moves": moves,
        "gib_moved": round(mib / 1024.0, 3),
        "waves": len(waves),
    }
    return {
        "instance": inst.name,
        "valid": rep.count == 0,
        "n_violations": rep.count,
        "violations_by_rule": rep.by_rule,
        "violations": rep.items,
        "figures": figures,
    }


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("instance")
    p.add_argument("result")
    p.add_argument("--max-list", type=int, default=200, help="list at most this many violations (all are counted)")
    a = p.parse_args(argv)
    with open(a.instance, encoding="utf-8") as f:
        inst = json.load(f)
    with open(a.result, encoding="utf-8") as f:
        result = json.load(f)
    rep = check(inst, result, a.max_list)
    json.dump(rep, sys.stdout, indent=1)
    sys.stdout.write("\n")
    return 0 if rep["valid"] else 1


if __name__ == "__main__":
    sys.exit(main())
