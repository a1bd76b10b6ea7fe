"""Lower bounds: hosts needed (capacity cover) and migrations needed at a host count."""

from __future__ import annotations

from .packing import EPS


def cover_k(pk, order, demand):
    """Smallest prefix of ``order`` whose limits cover the demand on every resource."""
    acc = [0.0] * pk.nr
    for n, h in enumerate(order, 1):
        for r in range(pk.nr):
            acc[r] += pk.lim[r][h]
        if all(acc[r] + EPS >= demand[r] for r in range(pk.nr)):
            return n
    return None


def migration_lb(pk, hosts, n_hosts):
    """Lower bound on migrations with at most ``n_hosts`` hosts used (relaxation: rules ignored).

    A kept host loses at least the fewest guests whose removal (largest first, per resource) brings
    it under its limits; every other non-empty host loses all its guests; the cheapest hosts to
    empty are chosen. Same bound as the benchmark's ``mig_lb``."""
    return migration_lb_curve(pk, hosts)(n_hosts)


def migration_lb_curve(pk, hosts):
    """``migration_lb`` for every host count at once: the per-host figures are computed once and the
    returned function answers each host count in constant time."""
    by_host = {}
    for i, h in enumerate(pk.home):
        if h >= 0:
            by_host.setdefault(h, []).append(i)
    keep_cost, cnt = {}, {}
    for h, items in by_host.items():
        cnt[h] = sum(pk.nmem[i] for i in items)
        best = 0
        for r in range(pk.nr):
            excess = sum(pk.dem[r][i] for i in items) - (pk.lim[r][h] if h in hosts else 0)
            if excess > EPS:
                n = 0
                d = pk.dem[r]
                for i in sorted(items, key=lambda j, d=d: -d[j]):
                    excess -= pk.dem[r][i]
                    n += pk.nmem[i]
                    if excess <= EPS:
                        break
                best = max(best, n)
        keep_cost[h] = best
    base = sum(keep_cost.values())
    prefix = [0]
    for x in sorted(cnt[h] - keep_cost[h] for h in by_host):
        prefix.append(prefix[-1] + x)
    n_used = len(by_host)

    def at(n_hosts):
        return base + prefix[min(max(0, n_used - n_hosts), n_used)]
    return at


def capacity_lb(pk, hosts, demand):
    """Hosts needed when the largest limits are used first (per resource, max over resources)."""
    lb = 1
    for r in range(pk.nr):
        caps = sorted((pk.lim[r][h] for h in hosts), reverse=True)
        acc = 0.0
        for n, c in enumerate(caps, 1):
            acc += c
            if acc + EPS >= demand[r]:
                lb = max(lb, n)
                break
    return lb
