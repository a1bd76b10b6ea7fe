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


# --- memory overcommit: balloon and KSM steps weighed against migrations --------------------
# Costs are compared in "points": one point is the fixed disruption of one live migration.
# A migration costs MIGRATION_FIXED_POINTS + GiB sent x (1 + MIGRATION_RISK_POINTS[risk]).
# The fixed part prices what every migration does whatever its size: a stop-and-copy pause
# (up to MAX_DOWNTIME_S), cold caches and TLBs on the destination, and a failure mode that leaves
# the guest on its source; it is set equal to sending 1 GiB, so small guests are not "free" to move.
MIGRATION_FIXED_POINTS = 1.0
# Extra points per GiB sent by the risk class of the pre-copy model (RISK_MEDIUM_RHO / RISK_HIGH_RHO):
# a medium-risk migration may need throttling (half again), a high-risk one may not converge (3x).
MIGRATION_RISK_POINTS = {"low": 0.0, "medium": 0.5, "high": 2.0}
# A balloon shrink costs BALLOON_SHRINK_POINTS + BALLOON_RISK_POINTS x (1 - margin_after / margin_before),
# margins being the guest's memory above what it uses (MiB). The fixed part is one API call and the
# guest's page reclaim (a twentieth of a migration); the risk part reaches BALLOON_RISK_POINTS (half a
# migration) when the whole margin is taken: the guest may then swap, which unlike a migration's pause
# lasts until the balloon grows back, but the floor below keeps used + margin, so it is bounded.
BALLOON_SHRINK_POINTS = 0.05
BALLOON_RISK_POINTS = 0.5
# Switching KSM on costs ksmd's CPU (memory_policy.KSMD_CPU_BUDGET: at most a tenth of one core, for as long
# as it runs) plus copy-on-write faults when merged pages are written: priced at 0.3 of a migration,
# below it because it is undone by one sysfs write, above a balloon shrink because it lasts.
KSM_ENABLE_POINTS = 0.3

# The balloon floor rule, mirrored from plugins/plugin_utils/memory_policy.py (the planner imports
# nothing outside its package; tests/unit/.../test_planner_memory.py asserts the values agree), so the
# planner and the memory role shrink a guest to the same floor:
#   floor = min(max(guarantee, used + margin), max memory),
#   margin = max(USED_MARGIN_MIB, ceil(GUEST_FREE_FRACTION x scale x max memory)),
#   scale = host free fraction / PRESSURE_FREE_FRACTION, clamped to [0, 1] (capacity view).
GUEST_FREE_FRACTION = 0.20         # share of max memory kept free above used at the pressure threshold
USED_MARGIN_MIB = 32               # MiB always kept above used (the balloon module's used_margin_mib)
PRESSURE_FREE_FRACTION = 0.20      # host free fraction where the margin starts to scale down
CRITICAL_FREE_FRACTION = 0.05      # below it the per-run shrink bound doubles (CRITICAL_RATE_FACTOR)
CRITICAL_RATE_FACTOR = 2
SHRINK_FRACTION_PER_RUN = 0.25     # most a balloon shrinks in one run, share of max memory
GROW_FRACTION_PER_RUN = 0.25       # most a balloon grows in one run, share of max memory
MIN_CHANGE_MIB = 16                # smallest balloon change worth a step, MiB
MIN_CHANGE_FRACTION = 0.02         # ... or this share of max memory, whichever is larger
BALLOON_TOLERANCE_MIB = 8          # the balloon module's tolerance: a balloon may settle this far off target
# Balloons grow back only while the host stays this share of its limit below it after growing: the
# memory policy's hysteresis band (RELIEF_FREE_FRACTION 0.30 - PRESSURE_FREE_FRACTION 0.20), so a host
# just brought under its limit by shrinking is not grown back over it on the next run.
GROW_HYSTERESIS_FRACTION = 0.10


def migration_points(prediction):
    """Points of one migration from ``migration_prediction``'s result (see MIGRATION_FIXED_POINTS)."""
    gib = prediction["bytes"] / float(1024 * MIB)
    return MIGRATION_FIXED_POINTS + gib * (1.0 + MIGRATION_RISK_POINTS.get(prediction["risk"], 0.0))


def balloon_points(margin_before_mib, margin_after_mib):
    """Points of a balloon shrink taking the guest's margin above used from ``before`` to ``after`` MiB."""
    if margin_before_mib <= 0:
        return BALLOON_SHRINK_POINTS + BALLOON_RISK_POINTS
    lost = 1.0 - max(0.0, min(1.0, float(margin_after_mib) / margin_before_mib))
    return BALLOON_SHRINK_POINTS + BALLOON_RISK_POINTS * lost
