"""Step types. Each transforms a State in place (apply returns an undo token), states its cost and
the resources it reserves while it runs."""

from __future__ import annotations

from .costs import (BALLOON_SETUP_S, KSM_CPU_FRACTION, KSM_ENABLE_POINTS, KSM_S, POWER_OFF_S, POWER_ON_S, TUNE_S,
                    balloon_duration_s, balloon_points, effective_bandwidth_mbs, migration_prediction)


class StepError(ValueError):
    """A step that cannot be applied to the given state."""


class Step:
    """Base class; subclasses set ``kind``."""

    kind = "step"

    def apply(self, state):
        """Transform ``state`` in place; return an undo token."""
        raise NotImplementedError

    def undo(self, state, token):
        """Revert ``apply`` using its token."""
        raise NotImplementedError

    def cost(self, state):
        """Dict with at least ``duration_s``."""
        raise NotImplementedError

    def reservations(self, state):
        """List of (what, host index or guest index, resource or None, amount) held while the step runs."""
        raise NotImplementedError

    def hosts(self):
        """Host indexes whose load the step changes."""
        return ()


class Migrate(Step):
    """Live-migrate guest ``vm`` from ``src`` to ``dst``."""

    kind = "migrate"
    __slots__ = ("vm", "src", "dst", "sharing")

    def __init__(self, vm, src, dst, sharing=1):
        self.vm, self.src, self.dst, self.sharing = vm, src, dst, sharing

    def apply(self, state):
        if state.host_of[self.vm] != self.src:
            raise StepError("guest %s is not on %s" % (state.vm_ids[self.vm], state.host_ids[self.src]))
        if self.src == self.dst:
            raise StepError("guest %s already on %s" % (state.vm_ids[self.vm], state.host_ids[self.dst]))
        state.move(self.vm, self.dst)
        return self.src

    def undo(self, state, token):
        state.move(self.vm, token)

    def predict(self, state):
        bw = min(effective_bandwidth_mbs(state.bw_mbps[self.src], self.sharing),
                 effective_bandwidth_mbs(state.bw_mbps[self.dst], self.sharing))
        return migration_prediction(state.mem_alloc[self.vm], state.dirty[self.vm], bw)

    def cost(self, state):
        p = self.predict(state)
        return {"duration_s": p["duration_s"], "network_bytes": p["bytes"], "risk": p["risk"],
                "hosts": [state.host_ids[self.src], state.host_ids[self.dst]]}

    def reservations(self, state):
        # The guest's demand is held on the destination from the start while the source keeps it
        # until the switch-over: both hosts carry it for the whole migration.
        out = [("vm", self.vm, None, 1), ("migration_slot", self.src, None, 1), ("migration_slot", self.dst, None, 1)]
        for r, name in enumerate(state.res):
            out.append(("host_resource", self.dst, name, state.dem[r][self.vm]))
        return out

    def hosts(self):
        return (self.src, self.dst)


class Balloon(Step):
    """Set guest ``vm``'s balloon so its memory demand becomes ``target_mib``.

    ``from_mib`` (the demand before the step) and ``used_mib`` (what the guest uses), when given, keep
    the cost stable once the step is applied and price the guest's lost margin (costs.balloon_points)."""

    kind = "balloon"
    __slots__ = ("vm", "target_mib", "from_mib", "used_mib")

    def __init__(self, vm, target_mib, from_mib=None, used_mib=None):
        self.vm, self.target_mib, self.from_mib, self.used_mib = vm, target_mib, from_mib, used_mib

    def apply(self, state):
        r = state.res.index("mem")
        old = state.dem[r][self.vm]
        state.set_demand(self.vm, r, self.target_mib)
        return old

    def undo(self, state, token):
        state.set_demand(self.vm, state.res.index("mem"), token)

    def cost(self, state):
        before = self.from_mib if self.from_mib is not None else state.dem[state.res.index("mem")][self.vm]
        delta = before - self.target_mib
        # Shrinking a guest risks swapping inside it; growing is harmless.
        out = {"duration_s": round(balloon_duration_s(delta), 3) if delta else BALLOON_SETUP_S,
               "risk": "medium" if delta > 0 else "low"}
        if self.used_mib is not None:
            out["margin_before_mib"] = before - self.used_mib
            out["margin_after_mib"] = self.target_mib - self.used_mib
            out["points"] = round(balloon_points(before - self.used_mib, self.target_mib - self.used_mib), 3) \
                if delta > 0 else 0.0
        return out

    def reservations(self, state):
        out = [("vm", self.vm, None, 1)]
        r = state.res.index("mem")
        grow = self.target_mib - state.dem[r][self.vm]
        if grow > 0 and state.host_of[self.vm] >= 0:
            out.append(("host_resource", state.host_of[self.vm], "mem", grow))
        return out

    def hosts(self):
        return ()


class Ksm(Step):
    """Enable (with an estimated saving) or disable KSM on a host."""

    kind = "ksm"
    __slots__ = ("host", "enable", "saving_mib")

    def __init__(self, host, enable, saving_mib=0):
        self.host, self.enable, self.saving_mib = host, enable, saving_mib

    def apply(self, state):
        # KSM changes host-level usage, not guest demand: adjust the host totals directly.
        sign = 1 if self.enable else -1
        delta = {}
        if "mem" in state.res:
            r = state.res.index("mem")
            delta[r] = -sign * self.saving_mib
        if "cpu" in state.res:
            r = state.res.index("cpu")
            delta[r] = sign * state.cap[r][self.host] * KSM_CPU_FRACTION
        for r, d in delta.items():
            state.used[r][self.host] += d
        return delta

    def undo(self, state, token):
        for r, d in token.items():
            state.used[r][self.host] -= d

    def cost(self, state):
        out = {"duration_s": KSM_S, "cpu_fraction": KSM_CPU_FRACTION if self.enable else 0.0, "risk": "low"}
        if self.enable and self.saving_mib:
            out["points"] = KSM_ENABLE_POINTS
        return out

    def reservations(self, state):
        out = [("host_config", self.host, "ksm", 1)]
        if self.enable and "cpu" in state.res:
            r = state.res.index("cpu")
            out.append(("host_resource", self.host, "cpu", state.cap[r][self.host] * KSM_CPU_FRACTION))
        return out

    def hosts(self):
        return (self.host,)


class Tune(Step):
    """Cap guest ``vm``'s CPU (cgroup quota) at ``cpu_limit`` in the cpu resource's unit."""

    kind = "tune"
    __slots__ = ("vm", "cpu_limit")

    def __init__(self, vm, cpu_limit):
        self.vm, self.cpu_limit = vm, cpu_limit

    def apply(self, state):
        r = state.res.index("cpu")
        old = state.dem[r][self.vm]
        state.set_demand(self.vm, r, min(old, self.cpu_limit))
        return old

    def undo(self, state, token):
        state.set_demand(self.vm, state.res.index("cpu"), token)

    def cost(self, state):
        return {"duration_s": TUNE_S, "risk": "low"}

    def reservations(self, state):
        return [("vm", self.vm, None, 1)]


class PowerOff(Step):
    """Switch an empty host off."""

    kind = "power_off"
    __slots__ = ("host",)

    def __init__(self, host):
        self.host = host

    def apply(self, state):
        if any(h == self.host for h in state.host_of):
            raise StepError("host %s still runs guests" % state.host_ids[self.host])
        old = state.power_on[self.host]
        state.power_on[self.host] = False
        return old

    def undo(self, state, token):
        state.power_on[self.host] = token

    def cost(self, state):
        return {"duration_s": POWER_OFF_S, "risk": "low"}

    def reservations(self, state):
        return [("host_full", self.host, None, 1)]

    def hosts(self):
        return (self.host,)


class PowerOn(Step):
    """Switch a host on."""

    kind = "power_on"
    __slots__ = ("host",)

    def __init__(self, host):
        self.host = host

    def apply(self, state):
        old = state.power_on[self.host]
        state.power_on[self.host] = True
        return old

    def undo(self, state, token):
        state.power_on[self.host] = token

    def cost(self, state):
        # A host that does not come back leaves the plan short of capacity.
        return {"duration_s": POWER_ON_S, "risk": "medium"}

    def reservations(self, state):
        return [("host_full", self.host, None, 1)]

    def hosts(self):
        return (self.host,)
