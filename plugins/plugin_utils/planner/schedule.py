"""Wave scheduling of migrations: per-host limits, capacity held on both hosts while a guest moves,
anti-affinity, spread and depends kept at every instant, bandwidth sharing, cycles broken through a temporary
host."""

from __future__ import annotations

import time

from .costs import RISK_HIGH_RHO, effective_bandwidth_mbs, migration_prediction
from .packing import EPS
from .wave_rules import LabelRules

INF_BW = float("inf")


class ScheduleError(Exception):
    """The moves cannot be ordered safely (no temporary host breaks the deadlock)."""

    def __init__(self, text, items=()):
        super().__init__(text)
        self.items = list(items)


class Schedule:
    """Waves of ``(item, [(vm, src, dst), ...])``; ``temp`` lists (item, host) detours via a temporary host."""

    def __init__(self):
        self.waves = []
        self.temp = []
        self.durations = []     # per wave: list of predicted seconds per move
        self.makespan_s = 0.0


def _risky_when_shared(state, members, src, dst):
    """Needs the links alone: pre-copy converges at full bandwidth but not on half of it."""
    full = min(effective_bandwidth_mbs(state.bw_mbps[src]), effective_bandwidth_mbs(state.bw_mbps[dst]))
    for v in members:
        if state.dirty[v] < RISK_HIGH_RHO * full <= 2 * state.dirty[v]:
            return True
    return False


def schedule(pk, final, opts, start=None, deadline=None):
    """Order the moves from the current placement (or ``start``, a host per guest) to ``final`` (item -> host)
    into safe waves. Raises ScheduleError when they cannot be ordered, or, given a ``deadline`` (monotonic
    time), when a wave would start after it.

    Positions are tracked per guest (a hard-affinity bundle may start split over hosts); a gathered
    bundle's members move in the same wave, a split one gathers a source host at a time (``_move_units``).
    """
    st = pk.state
    limit = opts["max_migrations_per_host"]
    nr = pk.nr
    vcur = list(st.host_of if start is None else start)
    used = [[0] * pk.nh for _unused in range(nr)]
    for v, h in enumerate(vcur):
        if h >= 0:
            for r in range(nr):
                used[r][h] += st.dem[r][v]
    vm_aa = pk.cons.vm_aa
    occ = [dict() for _unused in pk.occ]
    keyf = pk.keyf

    def key(gi, h):
        kf = keyf[gi]
        return h if kf is None else kf[h]

    for v, h in enumerate(vcur):
        if h >= 0 and vm_aa[v]:
            for gi in vm_aa[v]:
                k = key(gi, h)
                occ[gi][k] = occ[gi].get(k, 0) + 1
    pending = {}
    for i, d in enumerate(final):
        if d >= 0 and any(vcur[v] != d for v in pk.members[i]):
            pending[i] = d
    src = pk.home if start is None else [vcur[m[0]] for m in pk.members]
    solo = {i: _risky_when_shared(st, pk.members[i], src[i], d) for i, d in pending.items() if src[i] >= 0}
    mem_r = st.res.index("mem") if "mem" in st.res else 0
    out = Schedule()
    bundle_groups = _bundle_groups(pk)
    ctx = (pk, vcur, used, occ, key, bundle_groups)
    rules = LabelRules(pk.cons, vcur) if (pk.cons.spread or pk.cons.depends) else None

    def over(h):
        for r in range(nr):
            if used[r][h] > pk.lim[r][h] + EPS:
                return True
        return False

    def relieves(i):
        for v in pk.members[i]:
            h = vcur[v]
            if h >= 0 and over(h):
                return True
        return False

    order = None
    # Safety bound: every wave moves a guest; detours could in principle bounce, three waves per move stop them.
    max_waves = opts["max_waves"] or 3 * len(pending) + 10
    while pending:
        if len(out.waves) >= max_waves:
            raise ScheduleError("more than %d waves needed" % max_waves, sorted(pending))
        if deadline is not None and time.monotonic() > deadline:
            raise ScheduleError("out of time after %d waves, %d guests still to move" % (len(out.waves), len(pending)),
                                sorted(pending))
        touched = {}
        arr = [dict() for _unused in range(nr)]
        arriving = set()
        wave = []
        if rules is not None:
            rules.start_wave()
        # The order is fixed once (overloaded sources first, then largest memory); later waves skip
        # what is done (pending only shrinks: a detoured guest stays pending until it lands).
        if order is None:
            order = sorted(pending, key=lambda i: (not relieves(i), -pk.dem[mem_r][i], i))
        else:
            order = [i for i in order if i in pending]
        single = pk.single
        for i in order:
            d = pending[i]
            if single:
                # Fast path (one guest per item): limits first, they reject most candidates.
                src = vcur[i]
                if solo.get(i):
                    if touched.get(d, 0) or touched.get(src, 0):
                        continue
                elif touched.get(d, 0) >= limit or touched.get(src, 0) >= limit:
                    continue
                movers = [i]
                srcs = {src} if src >= 0 else set()
                if not _fits(ctx, movers, d, arr) or not _aa_free(ctx, movers, d, arriving):
                    continue
                if rules is not None and not rules.allows(movers, vcur, d):
                    continue
            else:
                # A bundle: the first unit of its guests that the limits and capacities allow now.
                movers = srcs = None
                for unit in _move_units(pk, vcur, bundle_groups, i, d):
                    unit_srcs = {vcur[unit[0]]} if vcur[unit[0]] >= 0 else set()
                    if solo.get(i):
                        if touched.get(d, 0) or any(touched.get(s, 0) for s in unit_srcs):
                            continue
                    elif touched.get(d, 0) >= limit or any(touched.get(s, 0) >= limit for s in unit_srcs):
                        continue
                    if _fits(ctx, unit, d, arr) and _aa_free(ctx, unit, d, arriving) and \
                            (rules is None or rules.allows(unit, vcur, d)):
                        movers, srcs = unit, unit_srcs
                        break
                if movers is None:
                    continue
            wave.append((i, d, movers))
            if rules is not None:
                rules.add(movers, vcur, d)
            for h in srcs | {d}:
                touched[h] = limit if solo.get(i) else touched.get(h, 0) + 1
            for v in movers:
                for r in range(nr):
                    arr[r][d] = arr[r].get(d, 0) + st.dem[r][v]
                for gi in vm_aa[v] or ():
                    arriving.add((gi, key(gi, d)))
        if not wave:
            wave = _break_deadlock(ctx, pending, opts, out, rules)
        out.waves.append(_apply_wave(ctx, wave, pending, final))
        if rules is not None:
            rules.commit(out.waves[-1])
    _durations(pk, out, limit)
    return out


def _fits(ctx, movers, d, arr):
    pk, _vcur, used, _occ, _key, _groups = ctx
    dem = pk.state.dem
    for r in range(pk.nr):
        add = 0
        for v in movers:
            add += dem[r][v]
        if used[r][d] + arr[r].get(d, 0) + add > pk.lim[r][d] + EPS:
            return False
    return True


def _aa_free(ctx, movers, d, arriving):
    """No member of a mover's anti-affinity groups on ``d`` now (even one leaving) or arriving there."""
    pk, _vcur, _used, occ, key, _groups = ctx
    for v in movers:
        for gi in pk.cons.vm_aa[v] or ():
            k = key(gi, d)
            if occ[gi].get(k, 0) > 0 or (gi, k) in arriving:
                return False
    return True


def _cycle_items(ctx, pending):
    """Items on waits-for cycles (an item waits for the items leaving its destination), cycle order."""
    _pk, vcur, _used, _occ, _key, _groups = ctx
    leaving = {}
    for j in sorted(pending):
        for v in ctx[0].members[j]:
            if vcur[v] >= 0 and vcur[v] != pending[j]:
                leaving.setdefault(vcur[v], []).append(j)
    state = {}
    found = []
    for start in sorted(pending):
        if start in state:
            continue
        path, pos = [], {}
        i = start
        while i is not None and i not in state:
            state[i] = 1
            pos[i] = len(path)
            path.append(i)
            nxt = leaving.get(pending[i])
            i = nxt[0] if nxt else None
        if i is not None and i in pos:
            found.extend(path[pos[i]:])
    return found


def _bundle_groups(pk):
    """Per bundle item: the guest lists of the hard affinity groups it was built from."""
    groups = {}
    if not pk.single:
        for _e, vms in pk.cons.aff:
            groups.setdefault(pk.item_of[vms[0]], []).append(vms)
    return groups


def _move_units(pk, vcur, bundle_groups, i, d):
    """Lists of item ``i``'s guests that may move to ``d`` together now, preferred first.

    A gathered bundle moves whole. A split one (its affinity does not hold yet) gathers one source host at
    a time: all its guests there together, else each set of them tied by an affinity group that holds now.
    A guest never moves without the others of a group that holds (a nested group would be split).
    """
    by_src = {}
    for v in pk.members[i]:
        if vcur[v] != d:
            by_src.setdefault(vcur[v], []).append(v)
    units = list(by_src.values())
    if len(units) == 1 and len(units[0]) == len(pk.members[i]):
        return units
    for movers in list(units):
        if len(movers) > 1:
            tied = _tied_sets(movers, bundle_groups.get(i, ()), vcur)
            if len(tied) > 1:
                units.extend(tied)
    return units


def _tied_sets(movers, groups, vcur):
    """Split ``movers`` (guests on one host) into the sets that holding affinity groups tie together."""
    src = vcur[movers[0]]
    part = {v: (v,) for v in movers}
    for vms in groups:
        if all(vcur[v] == src for v in vms):
            merged = tuple(sorted({w for v in vms for w in part[v]}))
            for v in merged:
                part[v] = merged
    sets, seen = [], set()
    for v in movers:
        if part[v] not in seen:
            seen.add(part[v])
            sets.append(list(part[v]))
    return sets


def _temp_host(ctx, i, pending, rules=None):
    """(temporary host, guests to move there) for a detour of item ``i``, or (None, None)."""
    pk, vcur, used, _occ, _key, bundle_groups = ctx
    nr = pk.nr
    no_arrivals = [{} for _unused in range(nr)]
    for movers in _move_units(pk, vcur, bundle_groups, i, pending[i]):
        best, best_load = None, None
        add = [sum(pk.state.dem[r][v] for v in movers) for r in range(nr)]
        for t in range(pk.nh):
            if t == pending[i] or t == vcur[movers[0]] or not pk.allowed(i, t) or not pk.state.power_on[t]:
                continue
            if not _fits(ctx, movers, t, no_arrivals) or not _aa_free(ctx, movers, t, set()):
                continue
            if rules is not None and not rules.allows(movers, vcur, t):
                continue
            load = max((used[r][t] + add[r]) / pk.lim[r][t] if pk.lim[r][t] > 0 else 0.0 for r in range(nr))
            if best is None or load < best_load:
                best, best_load = t, load
        if best is not None:
            return best, movers
    return None, None


def _break_deadlock(ctx, pending, opts, out, rules=None):
    """Route one item of a waits-for cycle (else any blocked item) through a temporary host."""
    if not opts["temp_hosts"]:
        raise ScheduleError("migration cycle and temporary hosts are disabled", sorted(pending))
    pk = ctx[0]
    ones = [1] * pk.nr
    cyc = _cycle_items(ctx, pending)
    rest = [i for i in pending if i not in set(cyc)]
    for group in (cyc, rest):
        for i in sorted(group, key=lambda j: (pk.size(j, ones), j)):
            t, movers = _temp_host(ctx, i, pending, rules)
            if t is not None:
                out.temp.append((i, t))
                return [(i, t, movers)]
    raise ScheduleError("migration cycle: no temporary host can take any of %d blocked guests" % len(pending),
                        sorted(pending))


def _apply_wave(ctx, wave, pending, final):
    """Commit a wave; returns it as (item, [(vm, src, dst), ...])."""
    pk, vcur, used, occ, key, _groups = ctx
    dem = pk.state.dem
    vm_aa = pk.cons.vm_aa
    rr = range(pk.nr)
    done = []
    for i, d, movers in wave:
        vm_moves = []
        for v in movers:
            s = vcur[v]
            for r in rr:
                x = dem[r][v]
                if s >= 0:
                    used[r][s] -= x
                used[r][d] += x
            for gi in vm_aa[v] or ():
                kd = key(gi, d)
                if s >= 0:
                    occ[gi][key(gi, s)] -= 1
                occ[gi][kd] = occ[gi].get(kd, 0) + 1
            vcur[v] = d
            vm_moves.append((v, s, d))
        m = pk.members[i]
        if (vcur[m[0]] == final[i]) if len(m) == 1 else all(vcur[v] == final[i] for v in m):
            del pending[i]
        done.append((i, vm_moves))
    return done


def concatenate(schedules):
    """One schedule running ``schedules`` one after the other (stages of a long reassignment)."""
    out = Schedule()
    for sched in schedules:
        out.waves += sched.waves
        out.temp += sched.temp
        out.durations += sched.durations
        out.makespan_s += sched.makespan_s
    out.makespan_s = round(out.makespan_s, 3)
    return out


def _durations(pk, out, limit):
    st = pk.state
    total = 0.0
    cache = {}
    del limit
    for wave in out.waves:
        share = {}
        for _i, moves in wave:
            for _v, s, d in moves:
                share[s] = share.get(s, 0) + 1
                share[d] = share.get(d, 0) + 1
        ds = []
        for _i, moves in wave:
            for v, s, d in moves:
                bw = min(effective_bandwidth_mbs(st.bw_mbps[s], share[s]) if s >= 0 else INF_BW,
                         effective_bandwidth_mbs(st.bw_mbps[d], share[d]))
                key = (st.mem_alloc[v], st.dirty[v], bw)
                t = cache.get(key)
                if t is None:
                    t = cache[key] = migration_prediction(*key)["duration_s"]
                ds.append(t)
        out.durations.append(ds)
        total += max(ds) if ds else 0.0
    out.makespan_s = round(total, 3)
