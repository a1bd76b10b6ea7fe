"""Step factories: for a state and compiled expectations, the steps worth considering, each with the
expectation it serves. Factories test possibility (hard rules, capacity), not optimality."""

from __future__ import annotations

from .packing import EPS
from .steps import Balloon, Ksm, Migrate, PowerOff, PowerOn, Tune

# Fraction of guest memory KSM is assumed to merge on a host of similar guests. Conservative:
# published KSM savings range from ~10 % (mixed guests) to 50 %+ (identical images); we take the low end.
KSM_SHARE_FRACTION = 0.10


def migrate_candidates(state, cons, v, hosts=None):
    """Migrate steps for guest ``v`` to every host where hard rules and the hard limits allow it."""
    src = state.host_of[v]
    out = []
    for h in range(state.n_hosts) if hosts is None else hosts:
        if h == src or not state.power_on[h] or not cons.allowed(state, v, h):
            continue
        if all(state.used[r][h] + state.dem[r][v] <= cons.limit[r][h] + EPS for r in range(len(state.res))):
            out.append(Migrate(v, src, h))
    return out


def tune_steps(state, cons):
    """CPU caps not enforced yet (demand above the cap) -> (Tune, expectation id)."""
    out = []
    if "cpu" not in state.res:
        return out
    r = state.res.index("cpu")
    for v, (e, capped) in sorted(cons.tune.items()):
        if state.dem[r][v] > capped + EPS:
            out.append((Tune(v, capped), e.id))
    return out


def power_off_steps(state, cons, final_host_of):
    """Empty, powered-on hosts that power saving lets us switch off."""
    busy = set(h for h in final_host_of if h >= 0)
    out = []
    e = cons.power_saving
    if e is None:
        return out
    for h in sorted(cons.may_power_off):
        if state.power_on[h] and h not in busy:
            out.append((PowerOff(h), e.id))
    return out


def power_on_steps(state, final_host_of):
    """Hosts that are off but receive guests."""
    return [PowerOn(h) for h in sorted(set(x for x in final_host_of if x >= 0)) if not state.power_on[h]]


def balloon_steps(state, cons, h):
    """Shrink guests on host ``h`` towards their memory guarantee (never below it)."""
    out = []
    if "mem" not in state.res:
        return out
    r = state.res.index("mem")
    for v in range(state.n_vms):
        if state.host_of[v] != h or v not in cons.guarantee:
            continue
        e, mn = cons.guarantee[v]
        if state.dem[r][v] > mn + EPS:
            out.append((Balloon(v, mn), e.id))
    return out


def ksm_steps(state, cons):
    """Enable KSM on hosts whose memory exceeds the hard limit (estimated saving, see KSM_SHARE_FRACTION)."""
    out = []
    if "mem" not in state.res:
        return out
    r = state.res.index("mem")
    for h in range(state.n_hosts):
        if state.used[r][h] > cons.limit[r][h] + EPS:
            saving = int(state.used[r][h] * KSM_SHARE_FRACTION)
            out.append((Ksm(h, True, saving), cons.limit_exp[r][h] or "capacity"))
    return out
