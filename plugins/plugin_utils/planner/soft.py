"""Soft expectations: after the search, single moves that reduce weighted soft violations without
breaking a hard one, opening a host (when consolidating) or moving a guest in cool-down."""

from __future__ import annotations

import time


def _under_soft_ceiling(pk, i, r, hosts, pct):
    """Destination test: a host in the ceiling's scope stays under it with guest ``i``."""
    cap = pk.state.cap[r]

    def ok(g):
        return (hosts is not None and g not in hosts) or pk.used[r][g] + pk.dem[r][i] <= cap[g] * pct / 100.0 + 1e-9
    return ok


def _targets(pk, consolidating):
    return [h for h in range(pk.nh) if pk.usable[h] and pk.state.power_on[h] and (pk.cnt[h] > 0 or not consolidating)]


def _try_move(pk, i, hosts, ok, reasons, eid, text, allowance=None):
    """Move item ``i`` to the least-loaded host of ``hosts`` passing ``ok(h)``; True on success.

    ``allowance`` (a one-element list, or None for no limit) holds the migrations still allowed: a
    move that would add more is not made."""
    if pk.pinned[i]:
        return False
    best, best_load = None, None
    for h in hosts:
        if h == pk.asg[i] or not ok(h) or not pk.can_place(i, h):
            continue
        if allowance is not None and _added(pk, i, h) > allowance[0]:
            continue
        load = pk.load(h)
        if best is None or load < best_load:
            best, best_load = h, load
    if best is None:
        return False
    if allowance is not None:
        allowance[0] -= _added(pk, i, best)
    pk.move(i, best)
    reasons.set(i, eid, text, force=True)
    return True


def _added(pk, i, h):
    """Migrations added by moving item ``i`` to ``h`` (negative when it goes home)."""
    home = pk.home[i]
    return pk.nmem[i] * ((h != home) - (pk.asg[i] != home))


def improve_soft(pk, reasons, deadline, consolidating, budget=None):
    """Greedy pass over soft expectations, heaviest first. Returns the number of moves; the migrations
    they add stay within ``budget`` (None: no limit)."""
    cons, st = pk.cons, pk.state
    hosts = _targets(pk, consolidating)
    work = []
    for e, is_fence, allowed in cons.soft_place:
        work.append((e.weight, e.id, "place", (e, is_fence, allowed)))
    for e, vms, lab in cons.soft_aa:
        work.append((e.weight, e.id, "aa", (e, vms, lab)))
    for e, vms in cons.soft_aff:
        work.append((e.weight, e.id, "aff", (e, vms)))
    for e, r, hs, pct in cons.soft_ceil:
        work.append((e.weight, e.id, "ceil", (e, r, hs, pct)))
    work.sort(key=lambda w: (-w[0], w[1]))
    moves = 0
    allowance = None if budget is None else [budget]
    for _w, eid, kind, arg in work:
        if time.monotonic() > deadline or (allowance is not None and allowance[0] <= 0):
            break
        if kind == "place":
            e, is_fence, allowed = arg
            for v in e.vms:
                i = pk.item_of[v]
                if pk.asg[i] >= 0 and (pk.asg[i] in allowed) != is_fence:
                    moves += _try_move(pk, i, hosts, lambda h, a=allowed, f=is_fence: (h in a) == f, reasons, eid,
                                       "%s %s" % ("only on" if is_fence else "not on", "the listed hosts"),
                                       allowance)
        elif kind == "aa":
            e, vms, lab = arg
            keys = list(range(pk.nh)) if lab is None else cons.label_key[lab]
            seen = {}
            for v in vms:
                i = pk.item_of[v]
                h = pk.asg[i]
                if h < 0:
                    continue
                k = keys[h]
                if k in seen:
                    taken = {keys[pk.asg[pk.item_of[x]]] for x in vms if pk.asg[pk.item_of[x]] >= 0}
                    if _try_move(pk, i, hosts, lambda g, t=taken, ks=keys: ks[g] not in t, reasons, eid,
                                 "%s apart from %s" % (st.vm_ids[v], st.vm_ids[seen[k]]), allowance):
                        moves += 1
                        continue
                seen[keys[pk.asg[i]]] = v
        elif kind == "aff":
            e, vms = arg
            count = {}
            for v in vms:
                h = pk.asg[pk.item_of[v]]
                if h >= 0:
                    count[h] = count.get(h, 0) + 1
            if len(count) > 1:
                target = max(count, key=lambda h, c=count: (c[h], -h))
                for v in vms:
                    i = pk.item_of[v]
                    if pk.asg[i] != target:
                        moves += _try_move(pk, i, [target], lambda h: True, reasons, eid,
                                           "join %s on %s" % (e.id, st.host_ids[target]), allowance)
        else:
            e, r, hs, pct = arg
            by_host = None
            for h in range(pk.nh) if hs is None else sorted(hs):
                limit = st.cap[r][h] * pct / 100.0
                if pk.used[r][h] <= limit + 1e-9:
                    continue
                if by_host is None:
                    by_host = pk.items_by_host()
                items = sorted((i for i in by_host[h] if pk.asg[i] == h), key=lambda j, d=pk.dem[r]: (d[j], j))
                for i in items:
                    if pk.used[r][h] <= limit + 1e-9:
                        break
                    if pk.dem[r][i] < pk.used[r][h] - limit:
                        continue   # too small to bring the host under the soft ceiling alone
                    moves += _try_move(pk, i, hosts, _under_soft_ceiling(pk, i, r, hs, pct), reasons, eid,
                                       "%s %s above %s%%" % (st.host_ids[h], st.res[r], pct), allowance)
    return moves
