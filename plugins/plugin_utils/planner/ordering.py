"""Ordering the migrations to a target placement, with the fallbacks of objective "cost" when they cannot be
ordered safely in one go: blocked guests sent elsewhere, stages through the placements the search kept, and
last the repair's fewest required moves."""

from __future__ import annotations

import time

from .objective import CostModel
from .schedule import ScheduleError, concatenate, schedule
from .search import _repair, ref_caps

# Objective "cost": wave bound per migration of the target, plus a floor (a plan needing more is mostly one
# migration at a time; successful ROADEF plans of 400-900 migrations need under 20 waves).
COST_WAVES_PER_MOVE = 0.25
COST_WAVES_MIN = 50
# Objective "cost": rounds of sending blocked guests elsewhere, and the most blocked guests worth it.
REDIRECT_ROUNDS = 5
REDIRECT_MAX = 20
# Objective "cost": the newest kept placements tried in one go before stages (newest first, at most this many). What
# can be ordered is not monotone along the search's path: the closing descent may make swaps that a full cluster
# cannot order while the placement it started from can be. (On ROADEF a2_4 at 300 s the plan stopped after 2
# migrations with and without this: none of those placements could be ordered there.)
NEWEST_TRIES = 3
# Objective "cost": an attempt to order a target may take FIRST_TRY_SHARE of the time left when it is the first (the
# fallbacks need the rest), all of it otherwise, and never less than MIN_TRY_S. A target of tens of thousands of
# migrations that cannot be ordered grinds through thousands of waves before the wave bound stops it: on a
# 55,000-guest ROADEF-like document the first attempt took 210 s of a 30 s budget, then the plan fell back to the
# repair.
FIRST_TRY_SHARE = 0.5
MIN_TRY_S = 1.0


def schedule_target(prob, pk, reasons, deadline, stats):
    """(Packing, Reasons, Schedule, unreached) for the search's target; when its migrations cannot be ordered
    safely (objective "cost"): the blocked guests sent elsewhere, else stages through the placements the cost
    search kept; else the fewest required moves. ``unreached`` is None when the plan reaches the target, else
    (target placement per item, its weighted cost): every hard expectation holds there, transient usage
    included, but no safe order of migrations to it was found. Raises ScheduleError when even the fallbacks
    cannot be ordered."""
    st, cons, opts = prob.state, prob.cons, prob.options
    try:
        return pk, reasons, _order(pk, opts, deadline, share=FIRST_TRY_SHARE), None
    except ScheduleError as exc:
        first = exc
    unreached = None
    if opts["objective"] == "cost":
        # (no "cost" entry when the search left guests unplaced and so did not run the cost search)
        stats.setdefault("cost", {})
        final = list(pk.asg)
        unreached = (final, CostModel(pk, opts["service_move_cost"]).total()["total"])
        sched = _schedule_redirected(pk, reasons, opts, first.items, deadline)
        if sched is not None:
            stats["cost"]["redirected"] = sum(1 for i, h in enumerate(pk.asg) if h != final[i])
            stats["cost"]["scheduled"] = round(CostModel(pk, opts["service_move_cost"]).total()["total"], 3)
            return pk, reasons, sched, unreached
        pk.reset(final)
        sched = _schedule_checkpoint(pk, reasons, opts, deadline, stats)
        if sched is not None:
            return pk, reasons, sched, unreached
    pk, reasons, left, _f = _repair(st, cons, opts, ref_caps(st), allow_off=opts["allow_power_on"])
    if left or pk.hard_violations():
        raise first
    stats["schedule_fallback"] = True
    return pk, reasons, schedule(pk, list(pk.asg), opts), unreached


def _order(pk, opts, deadline, start=None, share=1.0):
    """Schedule the moves to ``pk``'s placement. Objective "cost" bounds the attempt, so that a target that cannot
    be ordered leaves the fallbacks their time: by waves (``_wave_cap``) and by the clock (``share`` of the time
    left before ``deadline``, at least ``MIN_TRY_S``)."""
    cut = None
    if opts["objective"] == "cost":
        now = time.monotonic()
        cut = now + max(MIN_TRY_S, share * (deadline - now))
    return schedule(pk, list(pk.asg), _wave_cap(pk, opts), start, deadline=cut)


def _wave_cap(pk, opts):
    """Objective "cost": a target whose migrations need more waves than ``COST_WAVES_PER_MOVE`` of their
    number is given up early (the scheduler otherwise bounces blocked guests between temporary hosts up to
    three waves per move before it gives up, seconds the checkpoint fallback needs)."""
    if opts["objective"] != "cost" or opts["max_waves"] is not None:
        return opts
    return dict(opts, max_waves=int(COST_WAVES_PER_MOVE * pk.migrations()) + COST_WAVES_MIN)


def _schedule_redirected(pk, reasons, opts, blocked, deadline):
    """Objective "cost": send the guests the scheduler could not order (a swap of two guests that fit
    nowhere else meanwhile, say) to another host their target allows, home first, and schedule again, up to
    ``REDIRECT_ROUNDS`` times. Returns the schedule (``pk`` on the changed target) or None."""
    st = pk.state
    for _round in range(REDIRECT_ROUNDS):
        if len(blocked) > REDIRECT_MAX or time.monotonic() > deadline:
            return None
        # All of them out first: two guests swapping hosts can both go home only once both have left.
        movers = [i for i in blocked if pk.nmem[i] == 1 and pk.asg[i] != pk.home[i]]
        was = {i: pk.asg[i] for i in movers}
        for i in movers:
            pk.move(i, -1)
        for i in movers:
            dests = [pk.home[i]] + sorted((h for h in range(pk.nh) if st.power_on[h] and h != was[i]), key=pk.load)
            dest = next((h for h in dests if h >= 0 and pk.can_place(i, h)), was[i])
            pk.move(i, dest)
            if dest != was[i]:
                reasons.set(i, "objective:cost", "sent to %s: its first target could not be reached safely"
                            % st.host_ids[dest], force=True)
        if pk.hard_violations():
            return None
        try:
            return _order(pk, opts, deadline)
        except ScheduleError as exc:
            blocked = exc.items
    return None


def _furthest(pk, cps, reached, start, opts, deadline):
    """(index, schedule) of the furthest kept placement after ``reached`` the scheduler can order from
    ``start``: galloping (the next one, then 2, 4, ... further) then bisection, so a stage costs about twice the
    logarithm of its length in attempts (failed ones are the slow ones). None when not even the next one can."""

    def attempt(k):
        return _try_order(pk, cps[k][1], opts, start, deadline)
    last = len(cps) - 1
    found, step, bad = None, 1, None
    while time.monotonic() < deadline:
        k = min(reached + step, last)
        sched = attempt(k)
        if sched is None:
            bad = k
            break
        found = (k, sched)
        if k == last:
            return found
        step *= 2
    if found is None:
        return None
    lo, hi = found[0] + 1, bad - 1 if bad is not None else found[0]
    while lo <= hi and time.monotonic() < deadline:
        mid = (lo + hi) // 2
        sched = attempt(mid)
        if sched is None:
            hi = mid - 1
        else:
            found, lo = (mid, sched), mid + 1
    return found


def _try_order(pk, placement, opts, start, deadline):
    """The schedule from ``start`` to ``placement`` (``pk`` left on it), or None when it cannot be ordered (by
    ``deadline``, or ``MIN_TRY_S`` from now if later)."""
    pk.reset(placement)
    try:
        return _order(pk, opts, deadline, start)
    except ScheduleError:
        return None


def _hosts_of(pk, placement, start):
    """Host per guest once ``placement`` (host per item) is reached from ``start`` (host per guest)."""
    out = list(start)
    for i, h in enumerate(placement):
        for v in pk.members[i]:
            out[v] = h if h >= 0 else out[v]
    return out


def _schedule_checkpoint(pk, reasons, opts, deadline, stats):
    """Stages through the placements the cost search kept on its way: the newest ones first in one go, then,
    from where the last stage ends, the furthest kept placement (the final one included) the scheduler can
    order safely (``_furthest``), while time is left. Returns the stages' schedule run one after the other
    (``pk`` left on the placement the last stage reaches), or None when not even the first can be ordered."""
    cps = list(getattr(pk, "checkpoints", None) or [])
    if not cps:
        return None
    cps.append((CostModel(pk, opts["service_move_cost"]).total()["total"], list(pk.asg)))
    st = pk.state
    start, reached, stages = list(st.host_of), -1, []
    for k in range(len(cps) - 2, max(-1, len(cps) - 2 - NEWEST_TRIES), -1):
        if time.monotonic() >= deadline:
            break
        sched = _try_order(pk, cps[k][1], opts, start, deadline)
        if sched is None:
            continue
        stages.append(sched)
        reached = k
        start = _hosts_of(pk, cps[k][1], start)
        break
    while reached < len(cps) - 1 and time.monotonic() < deadline:
        found = _furthest(pk, cps, reached, start, opts, deadline)
        if found is None:
            break
        reached, sched = found
        stages.append(sched)
        start = _hosts_of(pk, cps[reached][1], start)
    if not stages:
        return None
    pk.reset(cps[reached][1])
    stats["cost"]["scheduled"] = round(cps[reached][0], 3)
    stats["cost"]["stages"] = len(stages)
    stats["cost"]["checkpoint"] = "%d of %d" % (reached + 1, len(cps))
    before = stats["cost"].get("before", {}).get("total", cps[0][0])
    text = "weighted cost %.0f -> %.0f (in %d stages: the migrations to the lowest-cost placement cannot be " \
           "ordered safely in one)" % (before, cps[reached][0], len(stages))
    for i, h in enumerate(pk.asg):
        if h != pk.home[i]:
            reasons.set(i, "objective:cost", text, force=True)
    return concatenate(stages)
