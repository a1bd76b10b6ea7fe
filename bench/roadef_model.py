"""ROADEF/EURO 2012 (Google) machine reassignment: instance reader, planner-document mapping, solution I/O.

The challenge files are whitespace-separated integers (``model_*.txt``, ``assignment_*.txt``,
solution files). They are read in 16 MB blocks with numpy's C text parser (no Python token
list), and every fixed-stride block (machines, processes, balances) is sliced out of the
one token array as a 2-D view, so a B instance (50,000 processes, 5,000 machines: a 25 M-entry
machine-move-cost matrix) costs one int64 array and no per-token Python object.

Model file layout (challenge specification, section 4.1):
  R, then per resource: transient(0/1) weight_load_cost
  M, then per machine: neighborhood location capacity[R] safety_capacity[R] machine_move_cost[M]
  S, then per service: spread_min n_deps dep[n_deps]
  P, then per process: service requirement[R] process_move_cost
  B, then per balance: resource1 resource2 target weight_balance_cost
  weight_process_move_cost weight_service_move_cost weight_machine_move_cost
Assignment and solution files: P machine indexes (process order).

``to_document`` maps an instance onto the planner's input document (see docs/benchmarks-field.md
for what is and is not expressible there).
"""
from __future__ import annotations

import os

import numpy as np

# The planner knows these resource names only (planner/state.py KNOWN_RESOURCES).
PLANNER_RESOURCES = ("cpu", "mem", "disk", "net")


class RoadefError(ValueError):
    """Malformed challenge file."""


CHUNK_BYTES = 1 << 24
_WHITESPACE = (b" ", b"\n", b"\t", b"\r", b"\x0b", b"\x0c")


def _parse_block(block, path):
    block = block.strip()
    if not block:
        return None
    try:
        return np.fromstring(block, dtype=np.int64, sep=" ")
    except ValueError as exc:
        raise RoadefError("%s: not a whitespace-separated integer file (%s)" % (path, exc)) from exc


def read_ints(path, chunk=CHUNK_BYTES):
    """All integers of a whitespace-separated file as one int64 array.

    Reads ``chunk`` bytes at a time, cuts each block after its last whitespace (the partial token
    is carried over) and parses it with numpy's C text parser into one preallocated array (a file
    of n bytes holds at most n / 2 + 1 integers; pages never written are never resident): memory
    is the result plus one block, with no per-token Python object (about 3x faster than
    np.fromfile's text mode here).
    """
    out = np.empty(os.path.getsize(path) // 2 + 1, dtype=np.int64)
    pos, carry = 0, b""
    with open(path, "rb") as f:
        while True:
            data = f.read(chunk)
            if not data:
                break
            data = carry + data
            cut = max(data.rfind(w) for w in _WHITESPACE)
            carry = data[cut + 1:]
            if cut >= 0:
                arr = _parse_block(data[:cut + 1], path)
                if arr is not None:
                    out[pos:pos + arr.size] = arr
                    pos += arr.size
    arr = _parse_block(carry, path)
    if arr is not None:
        out[pos:pos + arr.size] = arr
        pos += arr.size
    return out[:pos]


class Instance:
    """One challenge instance; arrays are numpy (int64 unless noted), indexes are 0-based.

    transient[R] bool, wload[R], neigh[M], loc[M], cap[M,R], scap[M,R], mmc[M,M], spread[S],
    dep_ptr[S+1] / dep_idx (CSR: services that service s depends on), serv[P], req[P,R], pmc[P],
    bal[B,4] (r1, r2, target, weight), w_pmc, w_smc, w_mmc (ints), a0[P] (initial assignment).
    """

    # pylint: disable=too-many-instance-attributes,too-few-public-methods

    def __init__(self):
        self.R = self.M = self.S = self.P = 0
        self.transient = self.wload = self.neigh = self.loc = None
        self.cap = self.scap = self.mmc = None
        self.spread = self.dep_ptr = self.dep_idx = None
        self.serv = self.req = self.pmc = self.bal = None
        self.w_pmc = self.w_smc = self.w_mmc = 0
        self.a0 = None

    def deps(self, s):
        """Services that service ``s`` depends on."""
        return self.dep_idx[self.dep_ptr[s]:self.dep_ptr[s + 1]]

    def stats(self):
        return {"processes": self.P, "machines": self.M, "resources": self.R, "services": self.S,
                "neighborhoods": int(np.unique(self.neigh).size), "locations": int(np.unique(self.loc).size),
                "dependencies": int(self.dep_idx.size), "balances": int(self.bal.shape[0]),
                "transient": int(self.transient.sum())}


def _take(t, pos, k, what):
    if pos + k > t.size:
        raise RoadefError("model file ends inside %s (need %d more integers at %d of %d)" % (what, k, pos, t.size))
    return t[pos:pos + k], pos + k


def parse_model(model_path, assign_path=None):
    """Read a model file (and optionally the initial assignment) into an Instance."""
    t = read_ints(model_path)
    inst = Instance()
    pos = 0
    (r,), pos = _take(t, pos, 1, "resource count")
    inst.R = R = int(r)
    blk, pos = _take(t, pos, 2 * R, "resources")
    blk = blk.reshape(R, 2)
    inst.transient = blk[:, 0].astype(bool)
    inst.wload = blk[:, 1].copy()
    (m,), pos = _take(t, pos, 1, "machine count")
    inst.M = M = int(m)
    stride = 2 + 2 * R + M
    blk, pos = _take(t, pos, M * stride, "machines")
    blk = blk.reshape(M, stride)
    inst.neigh = blk[:, 0].copy()
    inst.loc = blk[:, 1].copy()
    inst.cap = blk[:, 2:2 + R].copy()
    inst.scap = blk[:, 2 + R:2 + 2 * R].copy()
    inst.mmc = blk[:, 2 + 2 * R:]          # view into the token array: no second M x M copy
    (s,), pos = _take(t, pos, 1, "service count")
    inst.S = S = int(s)
    spread = np.zeros(S, dtype=np.int64)
    ptr = np.zeros(S + 1, dtype=np.int64)
    idx_parts = []
    for k in range(S):
        (sm, nd), pos = _take(t, pos, 2, "service %d" % k)
        spread[k] = sm
        d, pos = _take(t, pos, int(nd), "dependencies of service %d" % k)
        idx_parts.append(d)
        ptr[k + 1] = ptr[k] + int(nd)
    inst.spread = spread
    inst.dep_ptr = ptr
    inst.dep_idx = np.concatenate(idx_parts).astype(np.int64) if idx_parts else np.zeros(0, dtype=np.int64)
    (p,), pos = _take(t, pos, 1, "process count")
    inst.P = P = int(p)
    stride = R + 2
    blk, pos = _take(t, pos, P * stride, "processes")
    blk = blk.reshape(P, stride)
    inst.serv = blk[:, 0].copy()
    inst.req = blk[:, 1:1 + R].copy()
    inst.pmc = blk[:, 1 + R].copy()
    (b,), pos = _take(t, pos, 1, "balance count")
    blk, pos = _take(t, pos, 4 * int(b), "balances")
    inst.bal = blk.reshape(int(b), 4).copy()
    w, pos = _take(t, pos, 3, "move cost weights")
    inst.w_pmc, inst.w_smc, inst.w_mmc = (int(x) for x in w)
    if pos != t.size:
        raise RoadefError("%s: %d trailing integers after the model" % (model_path, t.size - pos))
    _validate(inst)
    if assign_path is not None:
        inst.a0 = read_solution(assign_path, inst)
    return inst


def _validate(inst):
    for name, arr, hi in (("neighborhood", inst.neigh, None), ("location", inst.loc, None),
                          ("process service", inst.serv, inst.S), ("dependency", inst.dep_idx, inst.S)):
        if arr.size and (arr.min() < 0 or (hi is not None and arr.max() >= hi)):
            raise RoadefError("%s index out of range" % name)
    if inst.bal.size and (inst.bal[:, :2].min() < 0 or inst.bal[:, :2].max() >= inst.R):
        raise RoadefError("balance resource index out of range")


# --- solution files (the challenge's output format) -------------------------------------------

def write_solution(path, assignment):
    """Write a solution: the machine index of every process, in process order, space separated."""
    a = np.asarray(assignment, dtype=np.int64)
    with open(path, "w", encoding="ascii") as f:
        f.write(" ".join(map(str, a.tolist())))
        f.write("\n")


def read_solution(path, inst):
    """Read an assignment or solution file for ``inst``; checks length and machine range."""
    a = read_ints(path)
    if a.size != inst.P:
        raise RoadefError("%s: %d machine indexes for %d processes" % (path, a.size, inst.P))
    if a.size and (a.min() < 0 or a.max() >= inst.M):
        raise RoadefError("%s: machine index out of range 0..%d" % (path, inst.M - 1))
    return a


# --- mapping onto the planner document --------------------------------------------------------

def host_id(m):
    return "m%d" % m


def vm_id(p):
    return "p%d" % p


def pick_resources(inst, a=None, slots=len(PLANNER_RESOURCES)):
    """ROADEF resources mapped one-to-one onto planner resource names (at most ``slots``).

    All of them when R <= slots; otherwise the ``slots`` tightest by peak utilisation of the
    initial assignment (max over machines of usage / capacity), transient ones first.
    Returns the ROADEF resource indexes, ascending.
    """
    if inst.R <= slots:
        return list(range(inst.R))
    a = inst.a0 if a is None else a
    use = np.zeros((inst.M, inst.R), dtype=np.int64)
    np.add.at(use, a, inst.req)
    util = np.where(inst.cap > 0, use / np.maximum(inst.cap, 1), 0.0)
    peak = util.max(axis=0)
    order = sorted(range(inst.R), key=lambda r: (not inst.transient[r], -peak[r], r))
    return sorted(order[:slots])


FOLD_SCALE = 1000000.0


def fold_resources(inst, group):
    """Fold ROADEF resources ``group`` into one planner resource, conservatively.

    Process demand d[p] = max_r req[p, r] / n[r] and machine capacity c[m] = min_r cap[m, r] / n[r]
    with n[r] = the largest capacity of r (x FOLD_SCALE): sum d <= c on a machine implies every
    folded resource fits there. Machines whose initial folded usage already exceeds c get c raised
    to it (else the planner would treat the fold's slack as an overload to repair); only there the
    fold is not sound, and the challenge checker guards the result. Returns (d[P], c[M], raised).
    """
    g = list(group)
    norm = np.maximum(inst.cap[:, g].max(axis=0), 1).astype(float) / FOLD_SCALE
    d = (inst.req[:, g] / norm).max(axis=1)
    c = (inst.cap[:, g] / norm).min(axis=1)
    init = np.bincount(inst.a0, weights=d, minlength=inst.M)
    raised = init > c
    c = np.where(raised, init, c)
    return np.ceil(d * 1000.0) / 1000.0, np.floor(c * 1000.0) / 1000.0, int(raised.sum())


def _service_members(inst):
    """Process indexes of each service (list of int lists)."""
    order = np.argsort(inst.serv, kind="stable")
    bounds = np.searchsorted(inst.serv[order], np.arange(inst.S + 1))
    return [order[bounds[s]:bounds[s + 1]].tolist() for s in range(inst.S)]


# Largest machine count whose machine-move-cost matrix goes into the document (as each host's sparse
# ``move_cost_to``): 1,000 machines is at most 1 M entries; B instances of 5,000 machines would be 25 M.
MAX_MMC_MACHINES = 1000


def to_document(inst, budget_s=10.0, seed=0, objective="cost", resources=None, max_migrations_per_host=1000,
                fold=False):
    """Planner input document for ``inst`` (initial assignment ``inst.a0``).

    Returns (doc, notes): ``doc`` holds only keys the planner reads; ``notes`` records the
    mapping and what could not be expressed (also kept in ``doc["x_roadef"]``, which callers
    strip before planning).
    """
    # pylint: disable=too-many-locals
    if inst.a0 is None:
        raise RoadefError("to_document needs the initial assignment")
    nslots = len(PLANNER_RESOURCES)
    folded, fold_raised = [], 0
    if resources is not None:
        rs = list(resources)
    elif fold and inst.R > nslots:
        rs = pick_resources(inst, slots=nslots - 1)
        folded = [r for r in range(inst.R) if r not in rs]
    else:
        rs = list(range(inst.R))
    # Up to four resources keep the planner's usual names; more are declared as r<index> (the
    # planner packs any resource a document declares).
    names = list(PLANNER_RESOURCES[:len(rs)]) if len(rs) <= nslots else ["r%d" % r for r in rs]
    cap = inst.cap[:, rs].tolist()
    req = inst.req[:, rs].tolist()
    if folded:
        fd, fc, fold_raised = fold_resources(inst, folded)
        fd, fc = fd.tolist(), fc.tolist()
        for m in range(inst.M):
            cap[m].append(fc[m])
        for p in range(inst.P):
            req[p].append(fd[p])
    all_names = names + ([PLANNER_RESOURCES[len(rs)]] if folded else [])
    hosts = [{"id": host_id(m), "cap": dict(zip(all_names, cap[m])),
              "labels": {"location": "l%d" % inst.loc[m], "neighborhood": "n%d" % inst.neigh[m]}}
             for m in range(inst.M)]
    # The planner's only per-move cost is the memory it copies (gain per GiB ranks optional moves):
    # carry the weighted process move cost there (1 MiB floor: zero-cost moves still rank finite).
    move_mib = (1 + inst.pmc * inst.w_pmc).tolist()
    move_cost = (inst.pmc * inst.w_pmc).tolist()
    a0 = inst.a0.tolist()
    serv = inst.serv.tolist()
    vms = [{"id": vm_id(p), "dem": dict(zip(all_names, req[p])), "mem_alloc_mib": move_mib[p], "host": host_id(a0[p]),
            "move_cost": move_cost[p], "service": "s%d" % serv[p]}
           for p in range(inst.P)]
    mmc_mapped = inst.M <= MAX_MMC_MACHINES
    if mmc_mapped and inst.w_mmc:
        weighted = inst.mmc * inst.w_mmc
        for m in range(inst.M):
            row = weighted[m]
            nz = np.flatnonzero(row).tolist()
            if nz:
                hosts[m]["move_cost_to"] = dict(zip([host_id(k) for k in nz], row[nz].tolist()))
    exps = []
    # Soft ceilings at the safety capacity, weighted by the load-cost weight (one per resource and %):
    # the "cost" objective charges weight x load above the ceiling, the challenge's load cost.
    skipped_ceilings = []
    for k, r in enumerate(rs):
        groups = {}
        for m in range(inst.M):
            c, sc = int(inst.cap[m, r]), int(inst.scap[m, r])
            if c <= 0 or sc >= c:
                continue     # no room above the safety capacity: nothing to weigh
            if sc < 0:
                skipped_ceilings.append((int(r), m))
                continue
            groups.setdefault(100.0 * sc / c, []).append(host_id(m))
        for j, (pct, hs) in enumerate(sorted(groups.items())):
            exps.append({"id": "safety-r%d-%d" % (r, j), "type": "ceiling", "resource": names[k], "max_pct": pct,
                         "hard": False, "weight": int(inst.wload[r]), "hosts": hs})
    mapped = {int(r): names[k] for k, r in enumerate(rs)}
    n_ratio = 0
    for b, (r1, r2, target, w) in enumerate(inst.bal.tolist()):
        if r1 in mapped and r2 in mapped:
            exps.append({"id": "balance-%d" % b, "type": "free_ratio", "resource": mapped[r2], "per": mapped[r1],
                         "ratio": target, "weight": w, "hard": False})
            n_ratio += 1
    members = _service_members(inst)
    n_conflict = n_spread = n_dep = 0
    for s, procs in enumerate(members):
        if len(procs) > 1:
            exps.append({"id": "service-%d" % s, "type": "anti_affinity", "vms": [vm_id(p) for p in procs],
                         "hard": True})
            n_conflict += 1
        if inst.spread[s] >= 2:
            exps.append({"id": "spread-%d" % s, "type": "spread", "vms": [vm_id(p) for p in procs],
                         "label": "location", "min": int(inst.spread[s]), "hard": True})
            n_spread += 1
    for s in range(inst.S):
        if not members[s]:
            continue
        for d in inst.deps(s).tolist():
            exps.append({"id": "dependency-%d-%d" % (s, d), "type": "depends", "vms": [vm_id(p) for p in members[s]],
                         "on": [vm_id(p) for p in members[d]], "label": "neighborhood", "hard": True})
            n_dep += 1
    transient = [names[k] for k, r in enumerate(rs) if inst.transient[r]]
    not_modelled = [] if mmc_mapped else ["machine move cost (more than %d machines)" % MAX_MMC_MACHINES]
    if folded:
        not_modelled.append("folded resources are packed conservatively, not costed")
    notes = {
        "resources_mapped": {names[k]: int(r) for k, r in enumerate(rs)},
        "resources_folded": {all_names[-1]: folded} if folded else {},
        "fold_unsound_machines": fold_raised,
        "resources_unmapped": [r for r in range(inst.R) if r not in rs and r not in folded],
        "transient_resources": [int(r) for r in np.flatnonzero(inst.transient)],
        "service_groups": n_conflict,
        "spread_rules": n_spread,
        "dependency_rules": n_dep,
        "balance_costs": n_ratio,
        "ceilings_skipped_zero_safety": len(skipped_ceilings),
        "not_modelled": not_modelled,
    }
    doc = {"resources": all_names, "hosts": hosts, "vms": vms, "expectations": exps,
           "transient_resources": transient,
           "options": {"budget_s": float(budget_s), "seed": int(seed), "objective": objective,
                       "service_move_cost": int(inst.w_smc),
                       "max_migrations_per_host": int(max_migrations_per_host)},
           "x_roadef": notes}
    return doc, notes


def assignment_from_plan(inst, plan):
    """Machine index per process from a planner result (processes it does not mention stay put)."""
    a = inst.a0.copy()
    asg = plan.get("assignment") or {}
    for p in range(inst.P):
        h = asg.get(vm_id(p))
        if h is not None:
            a[p] = int(h[1:])
    return a


def write_synthetic(out_dir, processes=50000, machines=5000, resources=12, services=4999, seed=1,
                    name="bscale", hot_share=0.0):
    """Write a synthetic instance of B scale (default: b_10's sizes) whose initial assignment is valid.

    For importer/checker/planner timing only (the real B instances are not shipped here): process p
    is in service p % services and on machine p % machines (so a service's processes sit on
    distinct machines when services < machines), 5 neighbourhoods, 25 locations, spread 1, every
    10th service depends on the next one, 4 transient resources, safety capacity 3/4 of capacity,
    one balance, weights 1 / 10 / 100. With ``hot_share`` 0 the processes are small (machines about
    5 % full, load cost 0); above 0 that share of the machines (drawn at random) starts HOT_FILL full
    on every resource, above its safety capacities, and the others COLD_FILL, so the search has load
    to take off at that scale. Returns (model path, assignment path).
    """
    rng = np.random.default_rng(seed)
    R, M, S, P = resources, machines, services, processes
    model = os.path.join(out_dir, "model_%s.txt" % name)
    assign = os.path.join(out_dir, "assignment_%s.txt" % name)
    cap = rng.integers(800000, 1000000, size=(M, R))
    base = rng.integers(0, 10, size=M)
    if hot_share > 0:
        req = _filled_requests(rng, cap, P, hot_share)
    else:
        req = rng.integers(1000, 9000, size=(P, R))
    with open(model, "w", encoding="ascii") as f:
        f.write("%d\n" % R)
        f.writelines("%d 10\n" % int(r < 4) for r in range(R))
        f.write("%d\n" % M)
        for m in range(M):
            move_costs = (base + m) % 10
            move_costs[m] = 0   # staying costs nothing
            row = [m % 5, m % 25] + cap[m].tolist() + (cap[m] * 3 // 4).tolist() + move_costs.tolist()
            f.write(" ".join(map(str, row)) + "\n")
        f.write("%d\n" % S)
        f.writelines("1 1 %d\n" % ((s + 1) % S) if s % 10 == 0 else "1 0\n" for s in range(S))
        f.write("%d\n" % P)
        for p in range(P):
            f.write("%d %s %d\n" % (p % S, " ".join(map(str, req[p].tolist())), p % 7))
        f.write("1\n0 1 1\n10\n1 10 100\n")
    write_solution(assign, np.arange(P) % M)
    return model, assign


# Fill of a synthetic machine's capacity at the start: hot ones above the safety capacity (3/4), cold ones with
# the room to take their excess (0.3 x 0.92 + 0.7 x 0.55 = 0.66 of the summed capacity at a hot share of 0.3).
HOT_FILL = 0.92
COLD_FILL = 0.55


def _filled_requests(rng, cap, processes, hot_share):
    """Requests (processes x resources) filling machine p % M to HOT_FILL or COLD_FILL of its capacity on every
    resource: each process's share of its machine drawn uniformly in [0.5, 1.5), then scaled so the machine's
    shares sum to its fill (rounded down, so the placement stays within capacity)."""
    machines = cap.shape[0]
    on = np.arange(processes) % machines
    fill = np.where(rng.random(machines) < hot_share, HOT_FILL, COLD_FILL)
    share = rng.uniform(0.5, 1.5, size=(processes, cap.shape[1]))
    total = np.zeros((machines, cap.shape[1]))
    np.add.at(total, on, share)
    return np.floor(share / total[on] * cap[on] * fill[on, None]).astype(np.int64)
