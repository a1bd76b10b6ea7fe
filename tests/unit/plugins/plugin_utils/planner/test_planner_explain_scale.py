"""Scaling guards for what runs after the search (soft report, explanation): counted work, no stopwatch.

An imported ROADEF b_10-size instance carries ~15,000 soft ceilings of one or two hosts each; the soft
report once rebuilt every host's load (a pass over all guests) and scanned every host for each
ceiling, 339 s of a 348 s plan at 50,000 guests. These tests count that work instead of timing it.
"""

from __future__ import annotations

from ansible_collections.autopilot.kvm.plugins.plugin_utils.planner import api
from ansible_collections.autopilot.kvm.plugins.plugin_utils.planner.api import plan_document
from ansible_collections.autopilot.kvm.plugins.plugin_utils.planner.parse import parse_document
from ansible_collections.autopilot.kvm.plugins.plugin_utils.planner.validate import check_plan

from .planner_helpers import doc, host, vm

N_HOSTS = 60
PER_HOST = 3


def _scale_doc(n_hosts=N_HOSTS, maintenance=0):
    """Hosts with per-host soft ceilings on both resources (as the ROADEF importer writes them),
    two fleet-wide soft ceilings, hard anti-affinity groups of 2-10 guests; optional maintenance."""
    hosts = [host("h%d" % h, cpu=10000 + 37 * h, mem=10000 + 53 * h) for h in range(n_hosts)]
    vms = [vm("v%d" % v, "h%d" % (v % n_hosts), cpu=500 + (v * 7) % 900, mem=400 + (v * 11) % 1300)
           for v in range(n_hosts * PER_HOST)]
    exps = []
    for r, res in enumerate(("cpu", "mem")):
        for h in range(n_hosts):
            # Every 4th host gets a ceiling below its load: those are reported.
            pct = 5 + (h % 7) if h % 4 == 0 else 60 + (h % 13)
            hs = ["h%d" % h] + (["h%d" % ((h + 1) % n_hosts)] if h % 3 == 0 else [])
            exps.append({"id": "safety-%d-%d" % (r, h), "type": "ceiling", "resource": res, "max_pct": pct,
                         "hard": False, "hosts": hs})
        exps.append({"id": "fleet-%s" % res, "type": "ceiling", "resource": res, "max_pct": 12, "hard": False,
                     "hosts": "*"})
    v, size = 0, 2
    while v + size <= len(vms) // 2:
        # Guests v, v+1, ... sit on consecutive hosts: the group already holds.
        exps.append({"id": "aa-%d" % v, "type": "anti_affinity", "vms": ["v%d" % x for x in range(v, v + size)]})
        v += size
        size = 2 + (size - 1) % 9
    if maintenance:
        exps.append({"id": "mnt", "type": "maintenance", "hosts": ["h%d" % h for h in range(maintenance)]})
    return doc(hosts, vms, exps, objective="balance", min_gain_per_gib=1e9)


def _reference_soft_ceilings(st, cons, final):
    """The soft-ceiling part of the report computed the slow way (fresh loads, every host, per ceiling)."""
    out = []
    for e, r, hosts, pct in cons.soft_ceil:
        used = [0.0] * st.n_hosts
        for v, h in enumerate(final):
            if h >= 0:
                used[h] += st.dem[r][v]
        over = [st.host_ids[h] for h in range(st.n_hosts) if (hosts is None or h in hosts)
                and used[h] > st.cap[r][h] * pct / 100.0 + 1e-9]
        if over:
            out.append((e.id, "%d host(s) above %s%% %s, e.g. %s" % (len(over), pct, st.res[r], over[0])))
    return out


class _Count:
    def __init__(self):
        self.n = 0


class _CountingList(list):
    """A list that counts full passes (iter) and element reads (index)."""

    def __init__(self, items, passes, reads):
        super().__init__(items)
        self.passes, self.reads = passes, reads

    def __iter__(self):
        self.passes.n += 1
        return super().__iter__()

    def __getitem__(self, i):
        self.reads.n += 1
        return super().__getitem__(i)


class _CountingSet(frozenset):
    """A host set that counts membership tests and visited members."""

    counter = None

    def __contains__(self, x):
        self.counter.n += 1
        return super().__contains__(x)

    def __iter__(self):
        for x in super().__iter__():
            self.counter.n += 1
            yield x


def _moved_final(st):
    """A final placement that differs from the start: every 5th guest shifted to the next host."""
    return [(h + 1) % st.n_hosts if v % 5 == 0 else h for v, h in enumerate(st.host_of)]


def test_soft_report_matches_the_per_ceiling_reference():
    prob = parse_document(_scale_doc())
    st, cons = prob.state, prob.cons
    final = _moved_final(st)
    got = api._soft_report(prob, final)  # pylint: disable=protected-access
    want = _reference_soft_ceilings(st, cons, final)
    assert got == want
    assert len(want) > N_HOSTS // 4     # the document does exercise reported ceilings


def test_soft_report_work_is_linear_in_guests_plus_ceiling_scopes():
    prob = parse_document(_scale_doc())
    st, cons = prob.state, prob.cons
    passes, reads, scope = _Count(), _Count(), _Count()
    final = _CountingList(_moved_final(st), passes, _Count())
    st.dem = [_CountingList(d, _Count(), reads) for d in st.dem]
    scoped = []
    for k, (e, r, hosts, pct) in enumerate(cons.soft_ceil):
        if hosts is not None:
            hosts = _CountingSet(hosts)
            hosts.counter = scope
            scoped.append(hosts)
        cons.soft_ceil[k] = (e, r, hosts, pct)
    n_ceilings = len(cons.soft_ceil)
    assert n_ceilings == 2 * N_HOSTS + 2 and len(scoped) == 2 * N_HOSTS

    report = api._soft_report(prob, final)  # pylint: disable=protected-access

    assert report
    resources = len({r for _e, r, _h, _p in cons.soft_ceil})
    # One pass over the guests per resource, not per ceiling (was one per ceiling: 122 here, 14,788 at B scale).
    assert passes.n <= resources
    assert reads.n <= resources * st.n_vms
    # Each scoped ceiling looks at its own hosts only (was every host per ceiling: n_hosts * n_ceilings).
    assert scope.n <= 2 * sum(len(h) for h in scoped)


def test_plan_with_moves_and_many_ceilings_builds_loads_once_per_resource(monkeypatch):
    calls = []
    real = api._final_used  # pylint: disable=protected-access

    def counted(st, final, r):
        calls.append(r)
        return real(st, final, r)

    monkeypatch.setattr(api, "_final_used", counted)
    d = _scale_doc(maintenance=4)
    res = plan_document(d)
    assert check_plan(d, res) == []
    assert res["feasible"] is True and res["metrics"]["migrations"] >= 4 * PER_HOST
    assert sorted(calls) == [0, 1]      # two resources carry soft ceilings; 122 ceilings
    # The report lines are those of the per-ceiling reference on the planned placement.
    prob = parse_document(d)
    st = prob.state
    final = [st.host_index[res["assignment"][vid]] for vid in st.vm_ids]
    want = ["soft expectation not met: %s: %s" % x for x in _reference_soft_ceilings(st, prob.cons, final)]
    assert want and [line for line in res["explain"] if line.startswith("soft expectation not met")] == want
