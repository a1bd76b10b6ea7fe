"""Cluster state: hosts and guests in flat lists indexed by int ids, with incremental loads."""

from __future__ import annotations

KNOWN_RESOURCES = ("cpu", "mem", "disk", "net")

# Default migration link when a host does not say: 10 GbE, the usual dedicated migration network.
DEFAULT_BANDWIDTH_MBPS = 10000.0


class State:
    """Hosts (capacity, features, power, maintenance, labels) and guests (demand, placement).

    ``res`` lists the tracked resources; ``cap[r][h]``, ``dem[r][v]`` and ``used[r][h]`` are
    per-resource flat lists, so a move updates ``len(res)`` numbers and nothing else.
    ``host_of[v]`` is the host index or -1 for a guest that does not run.
    """

    __slots__ = ("res", "packing", "host_ids", "host_index", "cap", "features", "fmask", "labels",
                 "power_on", "maintenance", "bw_mbps", "vm_ids", "vm_index", "dem", "mem_alloc",
                 "vcpu", "dirty", "host_of", "requires", "last_migrated", "used", "feature_bits",
                 "transient", "move_cost", "host_move_cost", "service")

    def __init__(self, res, packing, hosts, vms, transient=()):
        """``hosts``/``vms`` are lists of plain dicts already validated by the parser; ``transient`` names
        the resources a migrated guest keeps using on the host it left (see the parser)."""
        self.res = list(res)
        self.packing = list(packing)
        self.host_ids = [h["id"] for h in hosts]
        self.host_index = {hid: i for i, hid in enumerate(self.host_ids)}
        self.cap = [[h["cap"].get(r, 0) for h in hosts] for r in self.res]
        self.features = [frozenset(h.get("features") or ()) for h in hosts]
        self.feature_bits = {}
        self.fmask = [self.mask_of(f) for f in self.features]
        self.labels = [dict(h.get("labels") or {}) for h in hosts]
        self.power_on = [h.get("power", "on") == "on" for h in hosts]
        self.maintenance = [bool(h.get("maintenance", False)) for h in hosts]
        self.bw_mbps = [float(h.get("migration_bandwidth_mbps") or DEFAULT_BANDWIDTH_MBPS) for h in hosts]
        self.vm_ids = [v["id"] for v in vms]
        self.vm_index = {vid: i for i, vid in enumerate(self.vm_ids)}
        self.dem = [[v["dem"].get(r, 0) for v in vms] for r in self.res]
        self.mem_alloc = [v.get("mem_alloc_mib", v["dem"].get("mem", 0)) or 0 for v in vms]
        self.vcpu = [int(v.get("vcpu") or 1) for v in vms]
        self.dirty = [float(v.get("dirty_mbps") or 0.0) for v in vms]
        self.host_of = [self.host_index[v["host"]] if v.get("host") is not None else -1 for v in vms]
        self.requires = [self.mask_of(v.get("requires") or ()) for v in vms]
        self.last_migrated = [v.get("last_migrated_s_ago") for v in vms]
        self.transient = [r for r, name in enumerate(self.res) if name in transient]
        # Move costs (objective "cost"): a guest's own, and per (source, destination) host pair; a guest's
        # service (index, or -1) for the cost of the most-moved service.
        self.move_cost = [v.get("move_cost") or 0 for v in vms]
        self.host_move_cost = [{self.host_index[k]: c for k, c in (h.get("move_cost_to") or {}).items() if c}
                               for h in hosts]
        names = {}
        self.service = [names.setdefault(v["service"], len(names)) if v.get("service") is not None else -1
                        for v in vms]
        self.used = None
        self.recompute()

    @property
    def n_hosts(self):
        return len(self.host_ids)

    @property
    def n_vms(self):
        return len(self.vm_ids)

    def mask_of(self, names):
        """Bit mask of feature names; unknown names get fresh bits (no host has them)."""
        m = 0
        for f in names:
            b = self.feature_bits.get(f)
            if b is None:
                b = self.feature_bits[f] = 1 << len(self.feature_bits)
            m |= b
        return m

    def recompute(self):
        """Rebuild ``used`` from scratch (O(V))."""
        nh = len(self.host_ids)
        self.used = []
        for r in range(len(self.res)):
            u = [0] * nh
            d = self.dem[r]
            for v, h in enumerate(self.host_of):
                if h >= 0:
                    u[h] += d[v]
            self.used.append(u)

    def move(self, v, h):
        """Move guest ``v`` to host ``h`` (-1: stop it), updating loads incrementally."""
        old = self.host_of[v]
        if old == h:
            return
        for r in range(len(self.res)):
            d = self.dem[r][v]
            if old >= 0:
                self.used[r][old] -= d
            if h >= 0:
                self.used[r][h] += d
        self.host_of[v] = h

    def set_demand(self, v, r, value):
        """Change one guest demand (balloon, CPU cap) keeping loads consistent."""
        old = self.dem[r][v]
        h = self.host_of[v]
        if h >= 0:
            self.used[r][h] += value - old
        self.dem[r][v] = value

    def load_pct(self, h):
        """Percent of capacity used on host ``h`` per tracked resource."""
        out = {}
        used, cap = self.used, self.cap
        for r, name in enumerate(self.res):
            c = cap[r][h]
            u = used[r][h]
            out[name] = round(100.0 * u / c, 1) if c else (0.0 if not u else float("inf"))
        return out

    def vms_on(self):
        """List of guest lists per host (built on demand, O(V))."""
        out = [[] for _unused in self.host_ids]
        for v, h in enumerate(self.host_of):
            if h >= 0:
                out[h].append(v)
        return out

    def copy(self):
        """Copy of the mutable parts (placement, demand, loads, power); static parts are shared."""
        new = object.__new__(State)
        for k in self.__slots__:
            setattr(new, k, getattr(self, k))
        new.host_of = list(self.host_of)
        new.dem = [list(d) for d in self.dem]
        new.used = [list(u) for u in self.used]
        new.power_on = list(self.power_on)
        return new
