"""Turn a scheduled plan into the output document: steps with reasons, predictions and loads."""

from __future__ import annotations

from .costs import effective_bandwidth_mbs, migration_prediction
from .steps import Migrate

# Up to this many hosts every step reports every host's load; above, only the hosts it touches.
ALL_LOADS_MAX_HOSTS = 16
# The explanation lists steps one per line up to this many lines (plans can have thousands).
MAX_STEP_LINES = 200


def _loads(state, hosts):
    return {state.host_ids[h]: state.load_pct(h) for h in hosts}


def build_steps(prob, reasons, sched, pre_steps, post_steps, wave_offset):
    """Replay the plan on a copy of the state; returns (steps, waves, gib_moved)."""
    st = prob.state.copy()
    small = st.n_hosts <= ALL_LOADS_MAX_HOSTS
    all_hosts = range(st.n_hosts)
    steps, waves = [], [[] for _unused in range(wave_offset)]
    gib = 0.0
    temp = set(sched.temp)
    cache = {}   # predictions by (memory, dirty rate, bandwidth): flavours repeat

    def add(step, wave, reason, extra=None, cost=None):
        cost = cost or step.cost(st)    # before apply: a balloon's cost depends on its starting size
        step.apply(st)
        d = {"id": len(steps) + 1, "wave": wave, "kind": step.kind}
        if extra:
            d.update(extra)
        d["reason"] = {"expectation": reason[0], "text": reason[1]}
        d["cost"] = cost
        touched = all_hosts if small else step.hosts()
        d["loads_after"] = _loads(st, touched)
        steps.append(d)
        return d

    for step, reason, extra in pre_steps:
        add(step, 0, reason, extra)
    for w, wave in enumerate(sched.waves):
        fw = []
        share = {}
        for _i, moves in wave:
            for _v, s, d in moves:
                share[s] = share.get(s, 0) + 1
                share[d] = share.get(d, 0) + 1
        for i, moves in wave:
            reason = reasons.by_item.get(i, ("objective", "placement"))
            for v, src, d in moves:
                if (i, d) in temp:
                    reason = ("schedule:cycle", "temporary host %s breaks a migration cycle (%s)" % (st.host_ids[d], reason[1]))
                sharing = max(share.get(src, 1), share[d])
                step = Migrate(v, src, d, sharing)
                bw = min(effective_bandwidth_mbs(st.bw_mbps[src], sharing), effective_bandwidth_mbs(st.bw_mbps[d], sharing))
                key = (st.mem_alloc[v], st.dirty[v], bw)
                pred = cache.get(key)
                if pred is None:
                    pred = cache[key] = migration_prediction(*key)
                extra = {"vm": st.vm_ids[v], "from": st.host_ids[src], "to": st.host_ids[d],
                         "predicted": {"duration_s": pred["duration_s"], "bytes": pred["bytes"],
                                       "downtime_ms": pred["downtime_ms"], "risk": pred["risk"]}}
                cost = {"duration_s": pred["duration_s"], "network_bytes": pred["bytes"], "risk": pred["risk"],
                        "hosts": [st.host_ids[src], st.host_ids[d]]}
                add(step, w + wave_offset, reason, extra, cost)
                fw.append({"vm": st.vm_ids[v], "from": st.host_ids[src], "to": st.host_ids[d]})
                gib += st.mem_alloc[v] / 1024.0
        waves.append(fw)
    last = len(waves)
    for step, reason, extra in post_steps:
        add(step, last, reason, extra)
    return steps, waves, gib


def summary_lines(prob, metrics, steps, conflicts, soft):
    """Human-readable explanation lines."""
    st = prob.state
    out = []
    if conflicts:
        out.append("infeasible: no plan satisfies every hard expectation; nothing will be changed")
        for c in conflicts:
            out.append("conflict [%s]: %s" % (", ".join(c["expectations"]), c["text"]))
        return out
    if not steps:
        out.append("nothing to do: every hard expectation holds and no move pays off (%d hosts, %d guests)"
                   % (st.n_hosts, st.n_vms))
    else:
        out.append("%d step(s): %d migration(s) in %d wave(s), %.1f GiB moved, predicted makespan %.0f s; %d host(s) used"
                   % (len(steps), metrics["migrations"], metrics["waves"], metrics["gib_moved"], metrics["makespan_s"],
                      metrics["hosts_used"]))
    for s in steps:
        if s["kind"] == "migrate":
            out.append("wave %d: migrate %s %s -> %s (%s: %s; %.0f s, risk %s)" % (
                s["wave"], s["vm"], s["from"], s["to"], s["reason"]["expectation"], s["reason"]["text"],
                s["predicted"]["duration_s"], s["predicted"]["risk"]))
        else:
            out.append("wave %d: %s %s (%s: %s)" % (
                s["wave"], s["kind"], s.get("host", s.get("vm", "")), s["reason"]["expectation"], s["reason"]["text"]))
        if len(out) > MAX_STEP_LINES:
            out.append("... (%d more steps)" % (len(steps) - s["id"]))
            break
    for note in metrics.get("memory") or ():
        out.append("memory on %s: %s: %s" % (note["host"], note["chosen"], note["text"]))
    for eid, text in soft:
        out.append("soft expectation not met: %s: %s" % (eid, text))
    return out
