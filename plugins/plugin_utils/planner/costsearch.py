"""Local search for objective "cost": move one guest, or swap two, to lower the weighted cost
(objective.py) while every hard expectation keeps holding.

Late acceptance hill climbing (Burke and Bykov): a candidate is taken when it costs no more than the
current placement or than the placement ``history`` candidates ago, so the search can cross ridges of a
few worse moves yet needs no temperature schedule to tune per instance. Candidates are priced before
they are checked (pricing is arithmetic; the hard checks walk groups), and only candidates that would
be taken are checked. The best placement is kept by a journal of the moves made since it was reached:
the search returns to it at the end, and restarts from it when it has drifted too far. Given time, the search
ends in rounds that weigh one resource more for a while (emphasis.py).
"""

from __future__ import annotations

import random
import time

from . import forks
from .emphasis import EMPHASIS_FACTOR, EMPHASIS_SHARE, EMPHASIS_START, Emphasis
from .objective import CostModel

# Candidates per second of budget: the work bound of a run is budget_s x this, so a small problem's run ends the
# same on a fast or a slow machine. Set above what the 2-core reference machine does when idle (ROADEF A, 1,000
# guests, 3-12 resources: 50,000-420,000/s, most of them rejected on capacity before they are priced; the top of
# that range is a1_2 with the growing range below, whose big guests rarely fit), so on large problems the deadline
# ends the search, as metrics.search.cost.deadline_cut says. At 250,000 a1_2 stopped at 180 s of 300.
ITERATIONS_PER_S = 1000000
# Late-acceptance history, in candidates: one per HISTORY_PER_WORK of the candidates the run will price (the work
# bound, or fewer at the rate of the first HISTORY_PROBE_S seconds), within [HISTORY_MIN, HISTORY_MAX]. Longer
# histories leave deeper local optima but need more candidates to settle: on ROADEF a2_2-a2_5 and a1_4, 1 and 50
# beat 500 and 5,000 at 30 s (1-2 M candidates), 1,000 beat 300 at 120 s (4-9 M), 3,000 beat 1 on a2_2 at 90 s
# (9 M): the best lay at 3,000-8,000 candidates per history slot.
HISTORY_PER_WORK = 5000
HISTORY_MIN = 300
HISTORY_MAX = 10000
HISTORY_PROBE_S = 1.0
# Share of candidates that swap two guests (the rest move one): swaps keep full hosts full.
SWAP_SHARE = 0.5
# Journal length, in movable guests, after which the search returns to its best placement.
RESTART_AFTER = 20
# Share of single moves that fit but cost too much that try an ejection chain, and guests of the destination tried
# each time.
CHAIN_SHARE = 0.2
CHAIN_TRIES = 8
# Share of single moves of a guest away from home that try its home host (where it uses no new capacity). Under
# transient resources every guest away from home holds them twice, so going home is what frees capacity for the
# next moves. At 60 s on ROADEF (seeds 0 and 1; mean cost / best known): a1_4, a2_2, a2_3 (transient) 1.292 at 0.3,
# 1.233 at 0.5, 1.262 at 0.7; a2_4, a2_5 (none) 1.366 at 0.1, 1.318 at 0.3, 1.339 at 0.5, 1.342 at 0 (home moves
# help there too, within the spread between 0.3 and 0.5); a1_2 1.006-1.016 at 0.3 and 0.5, 1.026-1.033 at 0.7.
HOME_SHARE = 0.5
# Under transient resources, share of swaps whose partner is a guest whose home is the first guest's host: it goes
# back where its transient usage already is, which is what makes a swap fit there (on ROADEF a2_2 99 % of the swaps
# drawn at random that do not fit fail on a transient resource). Without transient resources every swap partner is
# drawn by size. Cost / best known, seeds 0 and 1, side by side with swaps drawn by size only: at 300 s a1_4
# 1.0581 / 1.0208 -> 0.9931 / 0.9983, a2_3 1.1129 / 1.0869 -> 1.0760 / 1.0693, a2_2 1.0877 / 1.1279 -> 1.0985 /
# 1.1072; at 60 s a2_2, a2_3 and a1_4 gained on both seeds, while a2_5 (no transient resource) with the same draw
# went from 1.2180 / 1.2539 to 1.3879 / 1.4137.
HOME_SWAP_SHARE = 0.5
# Making room (after Gavranović et al.'s "big process rearrangement", ROADEF 2012): a guest from a host that costs
# something goes to a host that could hold it were it empty, overfull or not, and that host's guests move on to the
# best of ROOM_TRIES random hosts (the host it left first), biggest first: those whose move lowers the cost, then
# any until the host fits again; kept only when every hard rule holds and the whole lowers the cost (late
# acceptance of such rearrangements cost a1_2 1-2 % at 60-300 s: they pull the search far from where it was
# converging; strictly lower only, a1_2 and a2_1 kept the gains below). One such attempt
# prices ~ROOM_TRIES x guests per host moves, so it is tried for ROOM_SHARE of the candidates from costly hosts and
# gets at most ROOM_TIME_SHARE of the search time. On ROADEF a2_1 (big guests alone on hosts whose soft ceiling is
# below their size) it took the 60 s cost from 9.1 M to 0.39-2.9 M in every one of a dozen runs; on a1_2, a1_4 and
# a2_2-a2_5 the results stayed within run-to-run spread; at 5 % of the time a2_1 stayed at 1.1-7.5 M.
ROOM_SHARE = 0.01
ROOM_TIME_SHARE = 0.15
ROOM_TRIES = 100
# Cost units a rearrangement must gain to be kept (rounding noise of the float prices is far below it).
ROOM_MIN_GAIN = 1e-6
# Share of the search time kept for the closing descent: the best placement late acceptance passed through is rarely
# a local optimum (it was reached on the way and left again). From the 300 s ROADEF a2_2 and a2_5 answers, a descent
# that makes every improving move and swap until none is left gained 6.8 % and 3.4 % (measured with the challenge's
# checker), most of it in the first of its 8-9 sweeps; a sweep over 1,000 guests and 100 hosts takes 1-3 s here.
# In the planner it took 1.3-6.4 % off the cost of a2_2-a2_5 at 60 and 300 s, under 0.3 % off a1_2-a1_4.
POLISH_SHARE = 0.1
# Evacuation (making room, made deliberate): every EVACUATE_EVERY of the walk's time, the EVACUATE_SHARE of movable
# guests whose hosts shed the most overload when they leave are each tried on every host whose hard limits could
# hold them, cheapest price first, making room there; the first rearrangement that lowers the cost is kept. Making
# room at random draws one (guest, host) pair among thousands: on ROADEF a2_5 one big guest on a host whose safety
# capacities are 0 (31.5 M there, a tenth of the best known) had left it in only the 4 best of 21 answers. At 60 s
# (seeds 0 and 1, a2_5 also 2 and 3; mean cost / best known) a2_2-a2_5 and a1_4 went from 1.1719 to 1.1294, a2_2
# from 1.25 / 1.23 to 1.17 / 1.19, a2_3 from 1.20 / 1.20 to 1.12 / 1.12. Each run gets at most EVACUATE_TIME_SHARE
# of its interval; the first comes after the history's probe (HISTORY_PROBE_S), so a plan of a second or less
# (the replay's) never runs one.
# Homecoming (fewest migrations): each guest away from home is moved back, and up to HOMECOMING_EJECTIONS of its
# home's guests move on, each where that costs least, when that is what it takes to lower the cost. Once the load is
# within its ceilings, what is left of the cost is migrations, which late acceptance takes off slowly: on ROADEF a2_1
# (load 0 after 20 s of a 100 s walk, 639 migrations) it took off 2 a second. From a placement of that walk (cost 685),
# one pass of homecoming took the cost to 401 in 2.6 s and three more to 362; room-making towards home instead
# (``_make_room``) reached 438, from the 300 s answer (343) 324 against 306. It runs after the closing descent, until a
# pass sends no guest home or kicks are due, and during the walk after each evacuation (for at most
# HOMECOMING_TIME_SHARE of the interval) while migrations make up at least HOMECOMING_MIN_SHARE of the cost. Without
# that bound, at 300 s (seed 0) a2_1 went from 336 to 280 (the winners had 329 at 300 s; the best known is 198), but
# where the load dominates the greedy returns cost late acceptance its way: a1_4 1.0572 × the best known (1.0047-1.024
# before), a2_2 1.1737 (1.05-1.13), a2_5 1.1760 (1.10-1.29).
HOMECOMING_EJECTIONS = 4
HOMECOMING_TIME_SHARE = 0.1
HOMECOMING_MIN_SHARE = 0.5
EVACUATE_SHARE = 0.02
EVACUATE_EVERY = 0.1
EVACUATE_TIME_SHARE = 0.1
# Kicks (iterated local search, after Gavranovic et al., ROADEF 2012, whose search descends and is shaken when stuck):
# the time the closing descent leaves goes to moving KICK_MOVES random guests to random hosts where they fit, a
# descent around the hosts they touched, and keeping the whole only when it lowers the cost. At 300 s on ROADEF a2_2
# and a2_3 the descent ended 17-20 s early; 100 kicks in that time, 16-17 of them kept, took 4.3 M and 3.2 M (0.3-0.5
# %) more off the cost. With half the time for descent and kicks (60 s, a2_2 and a2_3), 2, 4 and 8 moves per kick
# gained alike (10-18 M in 10-15 s).
KICK_MOVES = 4
# Kicks stop after this many in a row keep nothing (a small problem's local optimum may be the best there is: on
# ROADEF a1_1, 600 kicks kept none), and get at most the closing descent's share of the search time even when late
# acceptance ended early (at its work bound or a cost of 0), so a small problem's plan is not held to its deadline.
KICK_PATIENCE = 200
# The wall clock is read once per this many candidates; the hosts that cost something are listed anew.
CHECK_EVERY = 1024
# ... but that list scans every host and resource: at most this many hosts per CHECK_EVERY candidates, so the scan
# keeps the share of the walk it has on 100 hosts (about 0.4 ms against 7 ms for 1,024 candidates on ROADEF a2_*).
# At 5,000 hosts and 12 resources (a synthetic instance of ROADEF b_10's size) a scan took 20 ms, and scanning every
# 1,024 candidates took 24 % of the walk's time (cProfile).
HOT_SCAN_HOSTS = 128
# Share of candidates that take a guest from a host that costs something (above a soft ceiling, short of
# a free ratio): most of the cost sits there, so most of the gain does.
FOCUS_SHARE = 0.5
# Growing range (after Gavranovic et al., ROADEF 2012, who work through the processes sorted by size in growing
# ranges): the candidates that do not come from a costly host start from, and swap with, only the biggest
# GROW_START share of the movable guests at first; the range grows evenly to all of them by GROW_UNTIL of the
# late-acceptance time. Big guests decide which hosts are full; small ones fill what is left, and moved early they
# are moved again. Size: the guest's demand summed over the resources, each as a share of the largest hard limit
# on it. At 60 s on ROADEF a1_2, a1_4, a2_2-a2_5 (seeds 0 and 1, mean cost / best known): all guests from the
# start 1.2002; GROW_UNTIL 0.25 1.1743, 0.5 1.1688, 0.8 1.1525, 1.0 1.1692 (differences among these within the
# run-to-run spread); a2_4 gained most (1.094 / 1.074 -> 1.023 / 1.009 at 0.8), then a2_2 and a1_2.
GROW_START = 0.05
GROW_UNTIL = 0.8
# Placements kept on the way (new best ones, at most one per this share of the work bound): when the scheduler
# cannot order the migrations to the final one safely, ordering.py goes there in stages through them, so they must
# lie close together (on ROADEF a2_4 one per 2 % of the work was too far apart: no stage beyond the first could be
# ordered). At most MAX_CHECKPOINT_SLOTS item positions are kept in all (32 MiB of list slots), at most
# MAX_CHECKPOINTS placements; past that, every other one of the older half is dropped.
CHECKPOINT_SHARE = 0.001
MAX_CHECKPOINTS = 400
MAX_CHECKPOINT_SLOTS = 4000000


def _by_size(pk, movable, hosts):
    """``movable`` biggest first: demand summed over the resources, each as a share of the largest hard limit of
    ``hosts`` on it (so a resource counts by how much of a host a guest takes, whatever its unit)."""
    top = [max([pk.lim[r][h] for h in hosts] + [0]) for r in range(pk.nr)]
    dem = pk.dem
    limited = [r for r in range(pk.nr) if top[r] > 0]
    return sorted(movable, key=lambda i: -sum(dem[r][i] / top[r] for r in limited))


def _by_home(pk, movable):
    """``movable`` guests by their home host (none for a guest without one)."""
    out = [[] for _h in range(pk.nh)]
    for i in movable:
        if pk.home[i] >= 0:
            out[pk.home[i]].append(i)
    return out


def _grown(n, time_share):
    """How many of the ``n`` biggest guests candidates come from once ``time_share`` of the search has passed."""
    share = min(1.0, GROW_START + (1.0 - GROW_START) * time_share / GROW_UNTIL)
    return min(n, max(2, int(n * share)))


def _swap(pk, i, j, a, b, joint=False):
    """Exchange the hosts of items ``i`` (on ``a``) and ``j`` (on ``b``) if every hard rule holds, as two
    moves one after the other, each safe when it is made: one of the two must fit before the other leaves.
    A swap of two guests that fit only once both have left could not be migrated without a temporary host,
    and full clusters have none (on ROADEF a2_4 such targets could not be ordered, even in stages). With
    ``joint`` (options.joint_swaps) such a swap is made too, when the end placement keeps every hard rule."""
    for x, y, hx, hy in ((i, j, a, b), (j, i, b, a)):
        if pk.can_place(x, hy):
            pk.move(x, hy)
            if pk.can_place(y, hx):
                pk.move(y, hx)
                if pk.rules_hold(i, a, b) and pk.rules_hold(j, a, b):
                    return True
                pk.move(y, hy)
            pk.move(x, hx)
    if not (joint and pk.allowed(i, b) and pk.allowed(j, a)):
        return False
    pk.move(i, b)
    pk.move(j, a)
    # Each guest alone in its group on its new host (aa_ok counts the guest itself out), nothing over a limit.
    if not pk.over(a) and not pk.over(b) and pk.aa_ok(i, b) and pk.aa_ok(j, a) and pk.rules_hold(i, a, b) and \
            pk.rules_hold(j, a, b):
        return True
    pk.move(j, b)
    pk.move(i, a)
    return False


def _chain(pk, model, i, a, b, d, thr, on_host, hosts, rand, home, cap, moved):
    """Move ``i`` from ``a`` to ``b``, then one of ``b``'s guests on to some host so that the two cost at
    most ``thr`` together. Returns (guest item, its new host, its cost change, its migrations change) with
    both moves made, or None with nothing changed."""
    if not pk.can_place(i, b):
        return None
    pk.move(i, b)
    model.moved(i, a, b)
    items = on_host[b]
    for _try in range(CHAIN_TRIES):
        k = items[int(rand() * len(items))] if items else i
        c = hosts[int(rand() * len(hosts))]
        if k == i or pk.asg[k] != b or c == b:
            continue
        d2 = model.shift_delta(k, c)
        dm2 = (c != home[k]) - (b != home[k])
        if d + d2 <= thr and (cap is None or moved + dm2 <= cap) and pk.can_place(k, c):
            pk.move(k, c)
            model.moved(k, b, c)
            return k, c, d2, dm2
    pk.move(i, a)
    model.moved(i, b, a)
    return None


def _room_host(pk, i, a, hosts, rand):
    """A random host other than ``a`` whose hard limits could hold ``i`` were it empty, or -1."""
    dem, lim, nr = pk.dem, pk.lim, pk.nr
    for _try in range(ROOM_TRIES):
        b = hosts[int(rand() * len(hosts))]
        if b != a and all(dem[r][i] <= lim[r][b] for r in range(nr)):
            return b
    return -1


def _make_room(pk, model, i, b, on_host, hosts, rand, cap, moved):
    """Move ``i`` to ``b`` even when ``b`` cannot hold it, then move ``b``'s guests on, biggest first: first those
    whose move lowers the cost, then any until ``b`` fits again. Kept when every hard rule holds, the whole lowers
    the cost and the migration budget allows it; else undone. ``on_host`` (guests by host, where entries of guests
    that have left may linger) lists each guest moved on its new host when kept. Returns (journal entries, cost
    change, migrations change) or None with nothing changed."""
    # pylint: disable=too-many-locals
    a, home, dem, lim = pk.asg[i], pk.home, pk.dem, pk.lim
    if not _may_enter(pk, i, b):
        return None
    d = model.shift_delta(i, b)
    dm = (b != home[i]) - (a != home[i])
    pk.move(i, b)
    model.moved(i, a, b)
    undo = [(i, a)]
    others = [k for k in on_host[b] if k != i and pk.asg[k] == b]
    others.sort(key=lambda k: -sum(dem[r][k] / (lim[r][b] or 1) for r in range(pk.nr)))
    for must in (False, True):
        for k in others:
            if must and not pk.over(b):
                break
            if pk.asg[k] != b:
                continue
            # Price where it fits first (cheap), check the placement rules only in order of price.
            price = {}
            for t in range(ROOM_TRIES + 1):
                c = hosts[int(rand() * len(hosts))] if t else a
                if c != b and c not in price and pk.fits(k, c):
                    dk = model.shift_delta(k, c)
                    if must or dk < 0:
                        price[c] = dk
            for c in sorted(price, key=price.__getitem__):
                if pk.can_place(k, c):
                    pk.move(k, c)
                    model.moved(k, b, c)
                    undo.append((k, b))
                    d += price[c]
                    dm += (c != home[k]) - (b != home[k])
                    break
    if not pk.over(b) and d < -ROOM_MIN_GAIN and (cap is None or moved + dm <= cap) and pk.rules_hold(i, a, b):
        for k, _was in undo:
            on_host[pk.asg[k]].append(k)
        return undo, d, dm
    _undo(pk, model, undo)
    return None


def _may_enter(pk, i, b):
    """Every hard rule but capacity holds once ``i`` is on ``b``."""
    return pk.allowed(i, b) and pk.aa_ok(i, b) and (not (pk.sp_of[i] or pk.dp_of[i]) or pk.rules_ok(i, b))


def _cheapest_ejection(pk, model, i, b, on_host, hosts, cap, moved):
    """The move of one of ``b``'s guests but ``i`` that costs least, every hard rule and the migration budget kept:
    (guest, host, cost change, migrations change), or None. ``on_host`` may list guests that have left."""
    asg, home, fits, shift_delta = pk.asg, pk.home, pk.fits, model.shift_delta
    priced = []
    for k in set(on_host[b]):
        if k == i or asg[k] != b:
            continue
        for c in hosts:
            if c != b and fits(k, c):
                priced.append((shift_delta(k, c), k, c))
    priced.sort()
    for dk, k, c in priced:
        dm = (c != home[k]) - (b != home[k])
        if (cap is None or moved + dm <= cap) and pk.can_place(k, c):
            return k, c, dk, dm
    return None


def _best_shift(pk, model, i, hosts, cap, moved):
    """The host that lowers the cost most when ``i`` moves there (every hard rule kept), with the cost and
    migrations changes, or None."""
    a, home = pk.asg[i], pk.home[i]
    best, best_d = None, -ROOM_MIN_GAIN
    fits, shift_delta = pk.fits, model.shift_delta
    for b in hosts:
        if b == a or not fits(i, b):
            continue
        d = shift_delta(i, b)
        if d < best_d:
            dm = (b != home) - (a != home)
            if (cap is None or moved + dm <= cap) and pk.can_place(i, b):
                best, best_d = (b, d, dm), d
    return best


def _improving_swap(pk, model, i, partners, cap, moved, joint):
    """Make the first swap of ``i`` with one of ``partners`` that lowers the cost (every hard rule and the
    migration budget kept). Returns (partner, the host ``i`` went to, cost change, migrations change) or None."""
    asg, home = pk.asg, pk.home
    a = asg[i]
    for j in partners:
        b = asg[j]
        if b == a or not pk.swap_fits(i, j):
            continue
        d = model.swap_delta(i, j)
        if d is None or d >= -ROOM_MIN_GAIN:
            continue
        dm = (b != home[i]) - (a != home[i]) + (a != home[j]) - (b != home[j])
        if (cap is None or moved + dm <= cap) and _swap(pk, i, j, a, b, joint):
            model.moved(i, a, b)
            model.moved(j, b, a)
            return j, b, d, dm
    return None


def _descend(pk, model, movable, hosts, stop, rand, cap, moved, joint=False):
    """Make improving moves (each guest to its best host) and swaps (first improving partner) until none is
    left or the clock reaches ``stop`` (swaps as ``_swap`` makes them, ``joint`` or not). Returns (cost change,
    migrations change, moves made, sweeps)."""
    # pylint: disable=too-many-locals
    asg = pk.asg
    change = dmoved = made = sweeps = 0
    order = list(movable)
    improved = True
    while improved and time.monotonic() < stop:
        improved = False
        sweeps += 1
        order.sort(key=lambda _i: rand())
        for n, i in enumerate(order):
            if n % 16 == 0 and time.monotonic() > stop:
                return change, dmoved, made, sweeps
            found = _best_shift(pk, model, i, hosts, cap, moved + dmoved)
            if found is not None:
                b, d, dm = found
                a = asg[i]
                pk.move(i, b)
                model.moved(i, a, b)
                change, dmoved, made, improved = change + d, dmoved + dm, made + 1, True
        for i in order:
            if time.monotonic() > stop:
                return change, dmoved, made, sweeps
            found = _improving_swap(pk, model, i, order, cap, moved + dmoved, joint)
            if found is not None:
                _j, _b, d, dm = found
                change, dmoved, made, improved = change + d, dmoved + dm, made + 2, True
    return change, dmoved, made, sweeps


def _booked(i, a, b, on_host, journal, dirty):
    """Book guest ``i``'s move from ``a`` to ``b`` (already made): the guests by host, the journal that can undo
    it, and both hosts as dirty."""
    on_host[a].remove(i)
    on_host[b].append(i)
    journal.append((i, a))
    dirty.add(a)
    dirty.add(b)


def _descend_around(pk, model, dirty, movable, hosts, on_host, stop, cap, moved, joint, journal):
    """First-improvement descent over the moves that touch a host in ``dirty``: each guest on it to its best host,
    any guest onto it, each of its guests swapped with any other. A move's price depends only on the hosts it
    touches (load terms; group and service terms aside), so once a dirty host has been searched it is clean until a
    move touches it again. Moves made are added to ``journal``; ``on_host`` is kept up to date. Returns (cost
    change, migrations change)."""
    # pylint: disable=too-many-locals,too-many-branches
    asg, home = pk.asg, pk.home
    fits, shift_delta = pk.fits, model.shift_delta
    change = dmoved = 0

    while dirty:
        if time.monotonic() > stop:
            break
        h = dirty.pop()
        for i in list(on_host[h]):
            found = _best_shift(pk, model, i, hosts, cap, moved + dmoved)
            if found is not None:
                b, d, dm = found
                pk.move(i, b)
                model.moved(i, h, b)
                _booked(i, h, b, on_host, journal, dirty)
                change, dmoved = change + d, dmoved + dm
        for i in movable:
            a = asg[i]
            if a == h or not fits(i, h):
                continue
            d = shift_delta(i, h)
            if d < -ROOM_MIN_GAIN:
                dm = (h != home[i]) - (a != home[i])
                if (cap is None or moved + dmoved + dm <= cap) and pk.can_place(i, h):
                    pk.move(i, h)
                    model.moved(i, a, h)
                    _booked(i, a, h, on_host, journal, dirty)
                    change, dmoved = change + d, dmoved + dm
        for i in list(on_host[h]):
            if asg[i] != h or time.monotonic() > stop:
                continue
            found = _improving_swap(pk, model, i, movable, cap, moved + dmoved, joint)
            if found is not None:
                j, b, d, dm = found
                _booked(i, h, b, on_host, journal, dirty)
                _booked(j, b, h, on_host, journal, dirty)
                change, dmoved = change + d, dmoved + dm
    return change, dmoved


def _kick_and_descend(pk, model, movable, hosts, stop, rand, cap, moved, joint):
    """Iterated local search from a local optimum (after Gavranovic et al., ROADEF 2012, whose search is a descent
    that is shaken when stuck): move KICK_MOVES random guests to random hosts where they fit, descend around the
    hosts they touched, keep the result when it costs less and undo it otherwise, until ``stop`` or KICK_PATIENCE
    kicks in a row kept nothing. Returns (cost change, migrations change, kicks, kicks kept)."""
    # pylint: disable=too-many-locals
    asg, home = pk.asg, pk.home
    on_host = [[] for _h in range(pk.nh)]
    for i in movable:
        on_host[asg[i]].append(i)
    change = dmoved = kicks = kept = idle = 0
    nmov, nhosts = len(movable), len(hosts)
    while time.monotonic() < stop and idle < KICK_PATIENCE:
        kicks += 1
        idle += 1
        journal, dirty = [], set()
        d_kick = dm_kick = 0
        for _try in range(KICK_MOVES * 8):
            if len(journal) >= KICK_MOVES:
                break
            i = movable[int(rand() * nmov)]
            a, b = asg[i], hosts[int(rand() * nhosts)]
            dm = (b != home[i]) - (a != home[i])
            if b == a or not pk.fits(i, b) or not (cap is None or moved + dmoved + dm_kick + dm <= cap) or \
                    not pk.can_place(i, b):
                continue
            d_kick += model.shift_delta(i, b)
            dm_kick += dm
            pk.move(i, b)
            model.moved(i, a, b)
            _booked(i, a, b, on_host, journal, dirty)
        d, dm = _descend_around(pk, model, dirty, movable, hosts, on_host, stop, cap, moved + dmoved + dm_kick,
                                joint, journal)
        if d_kick + d < -ROOM_MIN_GAIN:
            change, dmoved, kept, idle = change + d_kick + d, dmoved + dm_kick + dm, kept + 1, 0
            continue
        _undo(pk, model, journal, on_host)
    return change, dmoved, kicks, kept


def _own_load(pk, model, i, a):
    """What host ``a`` sheds of its overload above first ceilings when guest ``i`` leaves it."""
    used, lim1, w1, dem = pk.used, model.lim1, model.w1, pk.dem
    own = 0.0
    for r in range(pk.nr):
        over = used[r][a] - lim1[r][a]
        if over > 0:
            x = dem[r][i]
            own += w1[r][a] * (x if x < over else over)
    return own


def _evacuate(pk, model, movable, hosts, stop, rand, cap, moved, on_host, journal):
    """The EVACUATE_SHARE of ``movable`` whose hosts shed the most when they leave, each tried on every host whose
    hard limits could hold it, cheapest price first, making room there (``_make_room``); the first rearrangement
    that lowers the cost is kept, until ``stop``. Moves made are added to ``journal`` and ``on_host``. Returns
    (cost change, migrations change, rearrangements kept)."""
    asg, dem, lim, nr = pk.asg, pk.dem, pk.lim, pk.nr
    change = dmoved = kept = 0
    ranked = sorted(movable, key=lambda i: -_own_load(pk, model, i, asg[i]))
    for i in ranked[:max(1, int(EVACUATE_SHARE * len(movable)))]:
        a = asg[i]
        if _own_load(pk, model, i, a) <= 0:
            break
        targets = [b for b in hosts if b != a and all(dem[r][i] <= lim[r][b] for r in range(nr))]
        targets.sort(key=lambda b: model.shift_delta(i, b))
        for b in targets:
            if time.monotonic() > stop:
                return change, dmoved, kept
            made = _make_room(pk, model, i, b, on_host, hosts, rand, cap, moved + dmoved)
            if made is not None:
                room, d, dm = made
                journal.extend(room)
                change, dmoved, kept = change + d, dmoved + dm, kept + 1
                break
    return change, dmoved, kept


class _Tally:
    """Runs of an operation, what they achieved (guests, rearrangements) and the cost they took off."""

    def __init__(self):
        self.runs, self.kept, self.gain = 0, 0, 0.0

    def add(self, change, kept):
        self.runs, self.kept, self.gain = self.runs + 1, self.kept + kept, self.gain - change

    def stats(self):
        return {"runs": self.runs, "kept": self.kept, "gain": round(self.gain, 3)}


def _migrations_dominate(model):
    """True when migrations make up at least HOMECOMING_MIN_SHARE of the cost (O(hosts x resources + guests))."""
    cost = model.total()
    return cost["total"] > 0 and cost["moves"] + cost["service_moves"] >= HOMECOMING_MIN_SHARE * cost["total"]


def _homecoming(pk, model, movable, hosts, stop, rand, cap, moved, on_host, journal):
    """Each guest of ``movable`` away from a home in ``hosts``, in random order until ``stop``, moved back home, and
    while its home is over a hard limit or the whole does not yet lower the cost, up to HOMECOMING_EJECTIONS of the
    home's guests moved on, each where that costs least (``_cheapest_ejection``). Kept when every hard rule holds and
    the whole lowers the cost, else undone. Moves made are added to ``journal`` and ``on_host``. Returns (cost change,
    migrations change, guests sent home)."""
    # pylint: disable=too-many-locals
    asg, home = pk.asg, pk.home
    usable = set(hosts)
    away = [i for i in movable if asg[i] != home[i] and home[i] in usable]
    away.sort(key=lambda _i: rand())
    change = dmoved = kept = 0
    for i in away:
        # Each try prices every guest of the home on every host: the clock is cheap beside it.
        if time.monotonic() > stop:
            break
        a, b = asg[i], home[i]
        if a == b or not _may_enter(pk, i, b):
            continue
        d, dm = model.shift_delta(i, b), -1
        pk.move(i, b)
        model.moved(i, a, b)
        undo = [(i, a)]
        for _ejection in range(HOMECOMING_EJECTIONS):
            over = pk.over(b)
            if d < -ROOM_MIN_GAIN and not over:
                break
            found = _cheapest_ejection(pk, model, i, b, on_host, hosts, cap, moved + dmoved + dm)
            if found is None or (found[2] >= -ROOM_MIN_GAIN and not over):
                break
            k, c, dk, dmk = found
            pk.move(k, c)
            model.moved(k, b, c)
            undo.append((k, b))
            d, dm = d + dk, dm + dmk
        if d < -ROOM_MIN_GAIN and not pk.over(b) and pk.rules_hold(i, a, b):
            for k, _was in undo:
                on_host[asg[k]].append(k)
            journal.extend(undo)
            change, dmoved, kept = change + d, dmoved + dm, kept + 1
        else:
            _undo(pk, model, undo)
    return change, dmoved, kept


def _home_if_free(pk, model):
    """Send back home every moved guest whose move gains nothing (a plateau the search wandered over): a
    migration that buys nothing is not worth its risk. Returns how many went back."""
    back = 0
    for i, h in enumerate(pk.asg):
        home = pk.home[i]
        if h == home or home < 0 or pk.nmem[i] != 1 or pk.pinned[i]:
            continue
        if model.shift_delta(i, home) <= 0 and pk.can_place(i, home):
            pk.move(i, home)
            model.moved(i, h, home)
            back += 1
    return back


def _undo(pk, model, journal, on_host=None):
    """Take back the moves of ``journal`` (guest, host it left), latest first; ``on_host``, when given, follows."""
    for i, was in reversed(journal):
        now = pk.asg[i]
        pk.move(i, was)
        model.moved(i, now, was)
        if on_host is not None:
            on_host[now].remove(i)
            on_host[was].append(i)
    journal.clear()


def _costly_hosts(model, hosts):
    """Hosts with a positive load or free-ratio term, and the items on each (O(items + hosts x resources))."""
    pk = model.pk
    used, cap = pk.used, model.cap
    out = []
    for h in hosts:
        hot = False
        for r, row in enumerate(model.ceil):
            if used[r][h] > model.lim1[r][h]:
                hot = True
            for lim, _w in row[h] or ():
                if used[r][h] > lim:
                    hot = True
        for rf, rp, k, _w in model.ratio_at[h]:
            if k * (cap[rp][h] - used[rp][h]) > cap[rf][h] - used[rf][h]:
                hot = True
        if hot:
            out.append(h)
    return out


def _keep(checkpoints, cost, asg):
    checkpoints.append((cost, list(asg)))
    most = max(10, min(MAX_CHECKPOINTS, MAX_CHECKPOINT_SLOTS // max(1, len(asg))))
    if len(checkpoints) > most:
        # Thin out the older half: the latest placements are the ones worth falling back to.
        del checkpoints[1:most // 2:2]


def _rounded(cost):
    return {k: round(x, 3) for k, x in cost.items()}


def improve_cost(pk, reasons, deadline, opts, rng, stats, post_per_move=0.0):
    """Lower the weighted cost of ``pk``'s placement until ``deadline`` or the work bound, in
    ``options.search_workers`` searches side by side (forks.py), and keep the cheapest answer. Returns the number
    of moves made (``stats["cost"]`` has the cost by term before and after)."""
    workers = opts["search_workers"]
    # Worker 0 is this process with the caller's generator, so one worker or many, its search is the same.
    seeds = ["%s:%d" % (opts["seed"], k) for k in range(1, workers)] if forks.can_fork() else []

    def side_search(seed):
        side_stats = {}
        side_made, total = _search(pk, deadline, opts, random.Random(seed), side_stats, post_per_move)
        return total, side_made, pk.asg, pk.checkpoints, side_stats["cost"]

    handles = forks.start(seeds, side_search)
    try:
        made, total = _search(pk, deadline, opts, rng, stats, post_per_move)
    except BaseException:
        forks.stop(handles)
        raise
    if handles:
        answers = forks.collect(handles, max(deadline, time.monotonic()) + forks.GRACE_S)
        summary, chosen, candidates = [round(total, 3)], 0, [stats["cost"]["candidates"]]
        for k, (status, value) in enumerate(answers, 1):
            if status != "ok":
                summary.append("%s: %s" % (status, value))
                candidates.append(None)
                continue
            summary.append(round(value[0], 3))
            candidates.append(value[4]["candidates"])
            if value[0] < total - ROOM_MIN_GAIN:
                total, made, asg, checkpoints, cost_stats = value
                pk.reset(asg)
                pk.checkpoints = checkpoints
                stats["cost"], chosen = cost_stats, k
        stats["cost"]["workers"] = {"after": summary, "candidates": candidates, "chosen": chosen}
    text = "weighted cost %.0f -> %.0f" % (stats["cost"]["before"]["total"], stats["cost"]["after"]["total"])
    for i, h in enumerate(pk.asg):
        if h != pk.home[i]:
            reasons.set(i, "objective:cost", text)
    return made


def _search(pk, deadline, opts, rng, stats, post_per_move):
    """One search: a walk (``_walk``) and, when there is time for them, rounds of emphasis (emphasis.py), each a
    walk with one resource emphasised and one under the true weights, from the best placement so far. Returns
    (moves made, cost after)."""
    t0 = time.monotonic()
    emphasis = Emphasis(deadline - t0)
    if not emphasis.enabled:
        return _walk(pk, deadline, opts, rng, stats, post_per_move)
    # One migration budget for all the walks: from the placement the first starts on.
    cap = _migration_cap(pk, opts)
    # The first walk is planned for the whole time and hands over to the rounds (ending with its descent at
    # EMPHASIS_START of the time) only when they have something to win.
    first_end = t0 + EMPHASIS_START * (deadline - t0)
    handover = {"at": first_end - POLISH_SHARE * (first_end - t0), "deadline": first_end,
                "wanted": emphasis.wanted, "taken": False}
    made, cost = _walk(pk, deadline, opts, rng, stats, post_per_move, cap=cap, handover=handover)
    if not handover["taken"]:
        return made, cost
    checkpoints = pk.checkpoints
    # The walks move ``pk`` under their own models: the true cost is priced afresh after each.
    model = CostModel(pk, opts["service_move_cost"])
    emphasis.keep_or_restore(pk, model)
    while True:
        now = time.monotonic()
        left = deadline - post_per_move * pk.migrations() - now
        if left < emphasis.round_s:
            break
        r = emphasis.next_resource(model)
        if r is None:
            break
        last = left < 2 * emphasis.round_s
        round_stats = {}
        made += _walk(pk, now + EMPHASIS_SHARE * emphasis.round_s, opts, rng, round_stats, 0.0, r, cap)[0]
        stop = deadline if last else time.monotonic() + (1 - EMPHASIS_SHARE) * emphasis.round_s
        made += _walk(pk, stop, opts, rng, round_stats, post_per_move if last else 0.0, cap=cap)[0]
        before = emphasis.best
        model = CostModel(pk, opts["service_move_cost"])
        if not emphasis.keep_or_restore(pk, model):
            _keep_below(checkpoints, pk.checkpoints, before)
    pk.checkpoints = checkpoints
    after = model.total()
    stats["cost"]["after"] = _rounded(after)
    stats["cost"]["emphasis"] = emphasis.stats()
    return made, after["total"]


def _keep_below(checkpoints, found, best):
    """Add the placements of ``found`` (cost, placement) that cost less than ``best`` to ``checkpoints``: those on the
    way to a new best are stages the scheduler may use, and stages go from better to better."""
    for cost, asg in found:
        if cost < best:
            _keep(checkpoints, cost, asg)


def _migration_cap(pk, opts):
    """Migrations the search may reach (options.migration_budget: optional ones on top of what the repair needed),
    or None."""
    budget = opts["migration_budget"]
    return None if budget is None else pk.migrations() + budget


def _walk(pk, deadline, opts, rng, stats, post_per_move, emphasised=None, cap=None, handover=None):
    """Late acceptance, then the closing descent, with resource ``emphasised`` (if any) weighing EMPHASIS_FACTOR
    times its true weights, within ``cap`` migrations (from the placement it starts on when None). ``handover``
    (dict): once the clock reaches its ``at``, when ``wanted(model)``, late acceptance ends there and the descent
    by its ``deadline`` (``taken`` set True). Returns (moves made, cost after, under those weights)."""
    # pylint: disable=too-many-locals,too-many-branches,too-many-statements
    model = CostModel(pk, opts["service_move_cost"])
    if emphasised is not None:
        model.emphasise(emphasised, EMPHASIS_FACTOR)
    st = pk.state
    asg = pk.asg
    movable = [i for i in range(len(asg)) if pk.nmem[i] == 1 and not pk.pinned[i] and asg[i] >= 0]
    hosts = [h for h in range(pk.nh) if pk.usable[h] and st.power_on[h]]
    before = model.total()
    stats["cost"] = {"before": _rounded(before)}
    cur = best = before["total"]
    work = int(opts["budget_s"] * ITERATIONS_PER_S)
    it = made = 0
    if len(movable) < 2 or len(hosts) < 2:
        work = 0
    history = HISTORY_MIN
    hist = [cur] * history
    t_start = time.monotonic()
    probing = True
    journal = []
    rand = rng.random
    nmov, nhosts = len(movable), len(hosts)
    limit_journal = RESTART_AFTER * nmov
    home = pk.home
    joint = opts["joint_swaps"]
    moved = pk.migrations()
    cap = _migration_cap(pk, opts) if cap is None else cap
    stop = deadline
    cut = False
    movable_set = set(movable)
    hot, on_host = [], None
    checkpoints = pk.checkpoints = []
    next_checkpoint = 0
    rooms, room_s, now = 0, 0.0, t_start
    next_evacuation, evacuations, homecomings = t_start + 1.5 * HISTORY_PROBE_S, _Tally(), _Tally()
    by_size = _by_size(pk, movable, hosts)
    by_home = _by_home(pk, movable) if pk.trans else None
    span = _grown(nmov, 0.0)
    scan_every = CHECK_EVERY * -(-nhosts // HOT_SCAN_HOSTS)
    while it < work:
        if it % CHECK_EVERY == 0:
            if best <= 0:
                break
            if it % scan_every == 0:
                hot = _costly_hosts(model, hosts)
            if it % (16 * CHECK_EVERY) == 0 or on_host is None:
                on_host = pk.items_by_host()
                on_host = [[i for i in items if i in movable_set] for items in on_host]
            if it % (16 * CHECK_EVERY) == 0:
                # Leave the scheduler and the explanation the time their migrations take, the descent its share.
                stop = deadline - post_per_move * pk.migrations()
                stop -= POLISH_SHARE * (stop - t_start)
            now = time.monotonic()
            if now > stop:
                cut = True
                break
            if handover is not None and now >= handover["at"]:
                if handover["wanted"](model):
                    handover["taken"] = True
                    # The rounds after this walk keep back the scheduler's time; its descent runs to the handover.
                    deadline, post_per_move = handover["deadline"], 0.0
                    break
                handover = None
            if now >= next_evacuation:
                interval = EVACUATE_EVERY * (stop - t_start)
                next_evacuation = now + interval
                d, dm, kept = _evacuate(pk, model, movable, hosts, now + EVACUATE_TIME_SHARE * interval, rand, cap,
                                        moved, on_host, journal)
                evacuations.add(d, kept)
                d2 = dm2 = 0
                if _migrations_dominate(model):
                    d2, dm2, sent = _homecoming(pk, model, movable, hosts, time.monotonic() + HOMECOMING_TIME_SHARE *
                                                interval, rand, cap, moved + dm, on_host, journal)
                    homecomings.add(d2, sent)
                cur += d + d2
                moved += dm + dm2
                if cur < best - 1e-6:
                    best = cur
                    journal.clear()
            span = _grown(nmov, (now - t_start) / max(stop - t_start, 1e-9))
            if probing and now - t_start >= HISTORY_PROBE_S:
                probing = False
                expected = min(work, it * (stop - t_start) / (now - t_start))
                history = int(min(HISTORY_MAX, max(HISTORY_MIN, expected // HISTORY_PER_WORK)))
                hist = [cur] * history
        it += 1
        focused = hot and rand() < FOCUS_SHARE
        if focused:
            items = on_host[hot[int(rand() * len(hot))]]
            if not items:
                continue
            i = items[int(rand() * len(items))]
        else:
            i = by_size[int(rand() * span)]
        a = asg[i]
        j, room = -1, None
        if focused and rand() < ROOM_SHARE and room_s <= ROOM_TIME_SHARE * (now - t_start):
            t_room = time.monotonic()
            b = _room_host(pk, i, a, hosts, rand)
            done = None if b < 0 else _make_room(pk, model, i, b, on_host, hosts, rand, cap, moved)
            room_s += time.monotonic() - t_room
            if done is None:
                continue
            room, d, dm = done
            journal.extend(room)
            rooms += 1
        elif rand() < SWAP_SHARE:
            if by_home is not None and rand() < HOME_SWAP_SHARE:
                partners = by_home[a]
                if not partners:
                    continue
                j = partners[int(rand() * len(partners))]
            else:
                j = by_size[int(rand() * span)]
            b = asg[j]
            if b == a or not pk.swap_fits(i, j):
                continue
            d = model.swap_delta(i, j)
            if d is None:
                continue
        else:
            # A move that does not fit is never taken (an ejection chain starts from a move that fits but costs too
            # much), so it is not priced.
            if a != home[i] and rand() < HOME_SHARE:
                b = home[i]     # back home: its transient usage is there already
            else:
                b = hosts[int(rand() * nhosts)]
            if b == a or not pk.fits(i, b):
                continue
            d = model.shift_delta(i, b)
        slot = it % history
        if room is None:
            thr = hist[slot] - cur
            if thr < 0:
                thr = 0
            dm = (b != home[i]) - (a != home[i])
            if j >= 0:
                dm += (a != home[j]) - (b != home[j])
            if cap is not None and moved + dm > cap:
                continue
            if d > thr:
                if j >= 0 or rand() >= CHAIN_SHARE:
                    continue
                # Ejection chain: the move overloads ``b``; one of ``b``'s guests may move on and pay for both.
                chained = _chain(pk, model, i, a, b, d, thr, on_host, hosts, rand, home, cap, moved + dm)
                if chained is None:
                    continue
                k, c, d2, dm2 = chained
                journal.append((i, a))
                journal.append((k, b))
                on_host[b].append(i)
                on_host[c].append(k)
                d += d2
                dm += dm2
            elif j < 0:
                if not pk.can_place(i, b):
                    continue
                pk.move(i, b)
                model.moved(i, a, b)
                journal.append((i, a))
                on_host[b].append(i)
            else:
                if not _swap(pk, i, j, a, b, joint):
                    continue
                model.moved(i, a, b)
                model.moved(j, b, a)
                journal.append((i, a))
                journal.append((j, b))
                on_host[b].append(i)
                on_host[a].append(j)
        new = cur + d
        made += 1
        moved += dm
        cur = new
        if cur < best - 1e-6:
            best = cur
            journal.clear()
            if it >= next_checkpoint:
                _keep(checkpoints, best, asg)
                next_checkpoint = it + int(CHECKPOINT_SHARE * work)
        elif len(journal) > limit_journal:
            _undo(pk, model, journal)
            cur = best
            moved = pk.migrations()
        if cur < hist[slot]:
            hist[slot] = cur
    _undo(pk, model, journal)
    if work and best < before["total"]:
        # Where late acceptance got to, kept for the ordering: the descent may make swaps no safe order reaches.
        _keep(checkpoints, best, asg)
    polish_stop = deadline - post_per_move * pk.migrations()
    t_polish = time.monotonic()
    polished = _descend(pk, model, movable, hosts, polish_stop, rand, cap, pk.migrations(), joint) if work else \
        (0, 0, 0, 0)
    # The descent ends early when it reaches a local optimum: homecoming and kicks use the rest of its share of the
    # time.
    kick_stop = min(polish_stop, t_polish + POLISH_SHARE * (polish_stop - t_start))
    homecoming_change = 0.0
    if work:
        on_host = [[i for i in items if i in movable_set] for items in pk.items_by_host()]
        while time.monotonic() < kick_stop:
            d, _dm, sent = _homecoming(pk, model, movable, hosts, kick_stop, rand, cap, pk.migrations(), on_host, [])
            homecomings.add(d, sent)
            homecoming_change += d
            if not sent:
                break
    kicked = (0, 0, 0, 0)
    # Kicks only while there is cost left to take off: homecoming may have taken the last of it.
    if work and best + polished[0] + homecoming_change > ROOM_MIN_GAIN:
        kicked = _kick_and_descend(pk, model, movable, hosts, kick_stop, rand, cap, pk.migrations(), joint)
    polish_s = round(time.monotonic() - t_polish, 3)
    stats["cost"]["sent_home"] = _home_if_free(pk, model)
    after = model.total()
    stats["cost"]["after"] = _rounded(after)
    stats["cost"].update(candidates=it, accepted=made, rooms_made=rooms, room_s=round(room_s, 3), work_bound=work,
                         evacuations=evacuations.stats(), homecoming=homecomings.stats(),
                         emphasis={"rounds": 0},
                         deadline_cut=cut, history=history, polish={
                             "gain": round(-polished[0], 3), "moves": polished[2], "sweeps": polished[3],
                             "s": polish_s, "kick_gain": round(-kicked[0], 3), "kicks": kicked[2],
                             "kicks_kept": kicked[3]})
    return made, after["total"]
