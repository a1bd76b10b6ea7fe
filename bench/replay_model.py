"""CloudSim 3.0.3 power/SLA model for the PlanetLab dynamic-consolidation replay (bench/replay.py).

Everything here follows the CloudSim code used by Beloglazov & Buyya (CCPE 2012):
* power: PowerModelSpecPower, linear interpolation between the 11 measured points (0, 10, ..., 100 %);
* energy between two host updates: PowerHost.getEnergyLinearInterpolation: 0 when the utilisation
  at the start of the span is 0 (host off or idle), else (P(from) + P(to)) / 2 x seconds;
* CPU sharing: VmSchedulerTimeSharedOverSubscription: a VM's request is capped at one PE (every
  VM has one PE); a VM migrating in reserves 10 % of its request on the destination, a VM
  migrating out gets 90 % of its request on the source; when the host's total required MIPS
  exceed its capacity, every allocation is scaled by capacity / required and floored;
* host history (HostDynamicWorkload.updateVmsProcessing): allocated = sum of VM allocations, a
  migrating-out VM counted as allocation / 0.9; requested = sum of VM requests, migrating-in VMs
  included; active = allocated > 0. VM history: one entry per VM from the host it is not
  migrating into, "in migration" when migrating out;
* metrics (power Helper): SLATAH = time with allocated < requested / total time, over active
  hosts; PDM = sum over VMs of (requested - allocated) x time while in migration / total
  requested MIPS x time; SLAV = SLATAH x PDM; ESV = energy x SLAV. Each history entry holds
  until the next one (piecewise constant).
"""
from __future__ import annotations

import numpy as np

# HP ProLiant ML110 G4 / G5 (SPECpower): watts at 0, 10, ..., 100 % CPU.
POWER_G4 = (86.0, 89.4, 92.6, 96.0, 99.5, 102.0, 106.0, 108.0, 112.0, 114.0, 117.0)
POWER_G5 = (93.7, 97.0, 101.0, 105.0, 110.0, 116.0, 121.0, 125.0, 129.0, 133.0, 135.0)
HOST_PE_MIPS = (1860.0, 2660.0)       # G4, G5
HOST_PES = 2
HOST_RAM_MB = 4096
HOST_BW_MBPS = 1000.0                 # 1 Gbit/s (CloudSim: 1,000,000 kbit/s)
VM_MIPS = (2500.0, 2000.0, 1000.0, 500.0)
VM_RAM_MB = (870, 1740, 1740, 613)
INTERVAL_S = 300.0

NORMAL, OUT, IN = 0, 1, 2


def migration_seconds(ram_mb, bw_mbps=HOST_BW_MBPS):
    """CloudSim: ram / (bw / (2 x 8)): the RAM over half the link, in MB/s."""
    return ram_mb / (bw_mbps / 16.0)


def power(table, u):
    """Watts at utilisation ``u`` (0..1, scalar or array) for a table of 11 points, or tables[h]."""
    t = np.asarray(table, dtype=float)
    x = np.clip(np.asarray(u, dtype=float), 0.0, 1.0) * 10.0
    i = np.minimum(np.floor(x).astype(int), 9)
    frac = x - i
    if t.ndim == 1:
        lo, hi = t[i], t[i + 1]
    else:
        rows = np.arange(t.shape[0]) if np.ndim(u) else 0
        lo, hi = t[rows, i], t[rows, i + 1]
    return lo + (hi - lo) * frac


def energy_ws(p_from, p_to, u_from, dt):
    """Energy in W s of one span (arrays or scalars): 0 where the start utilisation is 0."""
    return np.where(np.asarray(u_from) > 0, (np.asarray(p_from) + np.asarray(p_to)) / 2.0 * dt, 0.0)


def allocate(row_host, row_kind, row_req, host_mips, pe_mips):
    """CPU sharing at one instant.

    row_* describe (VM, host) rows: the host index, NORMAL / OUT (source of a migration) / IN
    (destination), and the VM's requested MIPS. Returns (alloc per row, host allocated MIPS as
    recorded in the host history, host requested MIPS).
    """
    nh = host_mips.shape[0]
    row_host = np.asarray(row_host, dtype=np.int64)
    row_kind = np.asarray(row_kind)
    req = np.asarray(row_req, dtype=float)
    capped = np.minimum(req, pe_mips[row_host])
    required = np.where(row_kind == IN, capped * 0.1, capped)
    tot = np.bincount(row_host, weights=required, minlength=nh)
    over = tot > host_mips
    scale = np.where(over, host_mips / np.where(tot > 0, tot, 1.0), 1.0)
    mult = np.where(row_kind == OUT, 0.9, np.where(row_kind == IN, 0.1, 1.0))
    plain = capped * mult
    scaled = np.floor(capped * scale[row_host] * mult)
    alloc = np.where(over[row_host], scaled, plain)
    counted = np.where(row_kind == OUT, alloc / 0.9, alloc)
    host_alloc = np.bincount(row_host, weights=counted, minlength=nh)
    host_req = np.bincount(row_host, weights=req, minlength=nh)
    return alloc, host_alloc, host_req


class Metrics:
    """Accumulates energy, SLATAH, PDM over piecewise-constant spans."""

    def __init__(self):
        self.energy_ws = 0.0
        self.host_active_s = 0.0
        self.host_violation_s = 0.0
        self.vm_requested = 0.0          # MIPS x s
        self.vm_allocated = 0.0
        self.vm_underalloc_migration = 0.0
        self.migrations = 0
        # Diagnostics (not CloudSim metrics): where SLATAH and PDM come from.
        self.viol_over_s = 0.0           # violating host-s on hosts whose required MIPS exceed capacity
        self.viol_in_only_s = 0.0        # violating host-s caused only by VMs migrating in (CloudSim artefact)
        self.viol_other_s = 0.0          # the rest (PE cap: a VM asking more than one PE)
        self.pdm_mig_ws = 0.0            # under-allocation in migration: the 10 % migration loss
        self.pdm_over_ws = 0.0           # ... the extra from an oversubscribed source host
        self.pdm_pe_ws = 0.0             # ... the PE cap

    def span(self, rows, req_start, req_end, dt, host_mips, pe_mips, tables):
        """One span of ``dt`` seconds with fixed rows (host, kind, vm) and VM requests at both ends.

        ``rows`` = (row_vm, row_host, row_kind); ``req_start``/``req_end`` are per-VM requested
        MIPS at the span's start and end (the end value only enters the energy, as in CloudSim,
        where the host utilisation at the next update closes the trapezoid).
        """
        row_vm, row_host, row_kind = rows
        r0 = np.asarray(req_start, dtype=float)[row_vm]
        alloc, h_alloc, h_req = allocate(row_host, row_kind, r0, host_mips, pe_mips)
        u0 = np.minimum(h_alloc / host_mips, 1.0)
        if dt <= 0:
            return
        r1 = np.asarray(req_end, dtype=float)[row_vm]
        _a1, h_alloc1, _r1 = allocate(row_host, row_kind, r1, host_mips, pe_mips)
        u1 = np.minimum(h_alloc1 / host_mips, 1.0)
        self.energy_ws += float(energy_ws(power(tables, u0), power(tables, u1), u0, dt).sum())
        active = h_alloc > 0
        self.host_active_s += dt * float(active.sum())
        self.host_violation_s += dt * float((active & (h_alloc < h_req)).sum())
        hist = row_kind != IN
        self.vm_requested += dt * float(r0[hist].sum())
        self.vm_allocated += dt * float(alloc[hist].sum())
        mig = (row_kind == OUT) & (alloc < r0)
        self.vm_underalloc_migration += dt * float((r0[mig] - alloc[mig]).sum())
        self._diagnose(row_host, row_kind, r0, alloc, active & (h_alloc < h_req), host_mips, pe_mips, dt)

    def _diagnose(self, row_host, row_kind, r0, alloc, viol, host_mips, pe_mips, dt):
        nh = host_mips.shape[0]
        capped = np.minimum(r0, pe_mips[row_host])
        required = np.where(row_kind == IN, capped * 0.1, capped)
        over = np.bincount(row_host, weights=required, minlength=nh) > host_mips
        has_in = np.bincount(row_host, weights=(row_kind == IN).astype(float), minlength=nh) > 0
        self.viol_over_s += dt * float((viol & over).sum())
        self.viol_in_only_s += dt * float((viol & ~over & has_in).sum())
        self.viol_other_s += dt * float((viol & ~over & ~has_in).sum())
        out = row_kind == OUT
        self.pdm_pe_ws += dt * float((r0[out] - capped[out]).sum())
        self.pdm_mig_ws += dt * float((0.1 * capped[out]).sum())
        self.pdm_over_ws += dt * float(np.maximum(0.0, 0.9 * capped[out] - alloc[out]).sum())

    def diagnostics(self):
        """SLATAH and PDM split by cause, in the same units as the metrics (percent)."""
        act, req = self.host_active_s or 1.0, self.vm_requested or 1.0
        return {"slatah_overload_pct": 100.0 * self.viol_over_s / act,
                "slatah_migrating_in_pct": 100.0 * self.viol_in_only_s / act,
                "slatah_other_pct": 100.0 * self.viol_other_s / act,
                "pdm_migration_loss_pct": 100.0 * self.pdm_mig_ws / req,
                "pdm_overload_pct": 100.0 * self.pdm_over_ws / req,
                "pdm_pe_cap_pct": 100.0 * self.pdm_pe_ws / req}

    def result(self):
        slatah = self.host_violation_s / self.host_active_s if self.host_active_s else 0.0
        pdm = self.vm_underalloc_migration / self.vm_requested if self.vm_requested else 0.0
        slav = slatah * pdm
        kwh = self.energy_ws / 3.6e6
        return {"energy_kwh": kwh, "migrations": self.migrations, "slatah_pct": 100.0 * slatah,
                "pdm_pct": 100.0 * pdm, "slav_pct": 100.0 * slav, "esv": kwh * slav,
                "overall_sla_pct": (100.0 * (self.vm_requested - self.vm_allocated) / self.vm_requested
                                    if self.vm_requested else 0.0)}


def fleet(n_hosts=800):
    """Host arrays for the CloudSim fleet: host i is G4 when i % 2 == 0 (CloudSim's i % 2 type)."""
    kind = np.arange(n_hosts) % 2
    pe = np.asarray(HOST_PE_MIPS)[kind]
    return {"kind": kind, "pe_mips": pe, "mips": pe * HOST_PES,
            "tables": np.asarray([POWER_G4, POWER_G5])[kind]}
