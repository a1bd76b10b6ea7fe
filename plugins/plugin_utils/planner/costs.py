"""Cost models: live-migration pre-copy prediction and the costs of the other step kinds."""

from __future__ import annotations

# --- units -----------------------------------------------------------------------------------
MIB = 1048576                      # bytes per MiB
MB = 1000000                       # bytes per MB (dirty rates and link speeds are decimal)
BITS_PER_BYTE = 8

# --- link -----------------------------------------------------------------------------------
# Fraction of the nominal link rate a migration stream achieves (TCP/IP + QEMU framing). BtrPlace's
# mVM model divides bits by 9 instead of 8 ("real is less than theoretical"), i.e. 8/9 = 0.889.
LINK_EFFICIENCY = 8.0 / 9.0

# --- pre-copy ---------------------------------------------------------------------------------
# QEMU's default downtime-limit is 300 ms: pre-copy stops once the remaining dirty set can be sent
# within it (stop-and-copy phase).
MAX_DOWNTIME_S = 0.300
# QEMU has no round limit but auto-converge starts throttling after a few rounds without
# progress; the model gives up on convergence after 30 rounds and charges the rest as stop-copy.
MAX_ROUNDS = 30
# Per-migration fixed overhead: connection set-up, device state transfer, final handshake (s).
# libvirt/QEMU measurements on idle small guests show 0.5-2 s end to end; we take the middle.
SETUP_S = 1.0

# --- risk thresholds on rho = dirty rate / effective bandwidth -----------------------------
# Pre-copy converges geometrically with ratio rho; at rho >= 0.8 more than 10 rounds are needed to
# shrink the dirty set 10x (0.8^10 = 0.107) and any bandwidth dip stalls it; at rho >= 1 it never
# converges without throttling or post-copy.
RISK_MEDIUM_RHO = 0.5
RISK_HIGH_RHO = 0.8

# --- other steps ------------------------------------------------------------------------------
# Host power on: BIOS POST + boot + libvirtd up; servers take 2-5 min (kerub hard-codes 10-1000 s).
POWER_ON_S = 300.0
# Host power off: guests are gone (emptied first); an orderly shutdown takes about a minute.
POWER_OFF_S = 60.0
# Balloon: virtio-balloon inflates at roughly 1 GiB/s inside the guest; add a 1 s command round trip.
BALLOON_MIB_PER_S = 1024.0
BALLOON_SETUP_S = 1.0
# KSM toggling is a sysfs write; merging pays off over minutes and costs CPU on the host:
# ksmd at the vdsm boost ceiling (1250 pages / 10 ms) uses ~ one core's worth at most -> reserve 5 %.
KSM_CPU_FRACTION = 0.05
KSM_S = 1.0
# cgroup CPU quota update (virsh schedinfo): one API call.
TUNE_S = 0.5


def effective_bandwidth_mbs(link_mbps, sharing=1):
    """Achievable MB/s for one migration on a link of ``link_mbps`` Mbit/s shared by ``sharing`` streams."""
    return link_mbps * LINK_EFFICIENCY / BITS_PER_BYTE / max(1, sharing)


def migration_prediction(mem_mib, dirty_mbs, bandwidth_mbs):
    """Pre-copy model: returns dict(duration_s, bytes, downtime_ms, rounds, risk, rho).

    Round 0 sends all memory; round i sends what was dirtied during round i-1 (dirty rate x its
    duration), so volumes shrink geometrically by rho = dirty / bandwidth. Stop-and-copy starts once
    the remaining volume fits in MAX_DOWNTIME_S, or after MAX_ROUNDS.
    """
    mem_mb = mem_mib * MIB / MB
    bw = max(bandwidth_mbs, 1e-9)
    rho = dirty_mbs / bw
    total_mb = 0.0
    t = 0.0
    vol = mem_mb
    stop_mb = bw * MAX_DOWNTIME_S
    rounds = 0
    while vol > stop_mb and rounds < MAX_ROUNDS:
        dt = vol / bw
        t += dt
        total_mb += vol
        vol = min(mem_mb, dirty_mbs * dt)   # never more dirty than the whole memory
        rounds += 1
    downtime = vol / bw
    total_mb += vol
    t += downtime + SETUP_S
    if rho >= RISK_HIGH_RHO or rounds >= MAX_ROUNDS:
        risk = "high"
    elif rho >= RISK_MEDIUM_RHO:
        risk = "medium"
    else:
        risk = "low"
    return {"duration_s": round(t, 3), "bytes": int(total_mb * MB), "downtime_ms": round(downtime * 1000.0, 1),
            "rounds": rounds, "risk": risk, "rho": round(rho, 3)}


def balloon_duration_s(delta_mib):
    """Seconds to move a balloon by ``delta_mib``."""
    return BALLOON_SETUP_S + abs(delta_mib) / BALLOON_MIB_PER_S
