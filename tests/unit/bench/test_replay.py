"""bench/replay_model.py: CloudSim power interpolation, CPU sharing and SLA metric arithmetic by hand."""
from __future__ import annotations

import argparse
import importlib.util
import json
import os
import sys

import pytest

np = pytest.importorskip("numpy")

_BENCH = os.path.abspath(os.path.join(os.path.dirname(__file__), "..", "..", "..", "bench"))
if _BENCH not in sys.path:
    sys.path.insert(0, _BENCH)
_SPEC = importlib.util.spec_from_file_location("replay_model", os.path.join(_BENCH, "replay_model.py"))
rmod = importlib.util.module_from_spec(_SPEC)
_SPEC.loader.exec_module(rmod)

G4, G5 = rmod.POWER_G4, rmod.POWER_G5
NORMAL, OUT, IN = rmod.NORMAL, rmod.OUT, rmod.IN


def test_power_interpolation():
    assert rmod.power(G4, 0.0) == pytest.approx(86.0)
    assert rmod.power(G4, 1.0) == pytest.approx(117.0)
    assert rmod.power(G4, 0.05) == pytest.approx(87.7)        # halfway 86 -> 89.4
    assert rmod.power(G4, 0.75) == pytest.approx(110.0)       # halfway 108 (70 %) -> 112 (80 %)
    assert rmod.power(G5, 0.42) == pytest.approx(111.2)       # 110 + 0.2 x (116 - 110)
    assert rmod.power(G5, 0.3) == pytest.approx(105.0)        # a table point
    tables = np.asarray([G4, G5])
    assert rmod.power(tables, np.array([0.5, 0.95])).tolist() == pytest.approx([102.0, 134.0])


def test_energy_zero_when_starting_idle():
    # CloudSim's getEnergyLinearInterpolation: 0 when the span starts at 0 % (host off)
    assert float(rmod.energy_ws(86.0, 117.0, 0.0, 300)) == 0.0
    assert float(rmod.energy_ws(86.0, 117.0, 0.1, 300)) == pytest.approx((86 + 117) / 2 * 300)


def test_migration_time():
    # RAM / (1 Gbit/s / 2) = MB / 62.5 MB/s
    assert rmod.migration_seconds(1740) == pytest.approx(27.84)
    assert rmod.migration_seconds(870) == pytest.approx(13.92)
    assert rmod.migration_seconds(613) == pytest.approx(9.808)


def test_oversubscribed_host_scales_and_floors():
    host_mips, pe = np.array([3720.0]), np.array([1860.0])
    # requests 1860, 2232 (capped at one 1860 PE), 1000: required 4720 > 3720, scale 3720 / 4720
    alloc, h_alloc, h_req = rmod.allocate([0, 0, 0], [NORMAL] * 3, [1860.0, 2232.0, 1000.0], host_mips, pe)
    assert alloc.tolist() == [1465.0, 1465.0, 788.0]          # floor(1860 x 0.7881), floor(1000 x 0.7881)
    assert h_alloc.tolist() == [3718.0]
    assert h_req.tolist() == [5092.0]


def test_tiny_replay_by_hand():
    """2 hosts (h0 G4: 2 x 1860 MIPS, h1 G5: 2 x 2660), 2 VMs, 3 steps of 300 s.

    Requests (MIPS): steps 0 and 1: v0 930, v1 1860; step 2 (and the end point): v0 1860, v1 2232.
    Both VMs start on h0; at the start of step 2 v1 (1740 MB) migrates to h1 for 27.84 s.

    span A [0, 300): h0 allocates 930 + 1860 = 2790 = 75 %, both ends: P = 110 W -> 110 x 300 = 33000 Ws
    span B [300, 600): start 75 % (110 W); end uses step-2 requests on the same hosts: 1860 + min(2232, 1860)
        = 3720 = 100 % (117 W) -> (110 + 117) / 2 x 300 = 34050 Ws
    span C [600, 627.84): h0: v0 1860 + v1 out 0.9 x 1860 = 1674 (counted 1674 / 0.9 = 1860) = 3720 = 100 %;
        h0 requested 1860 + 2232 = 4092 > 3720 -> violation; h1: v1 in: 0.1 x 2232 = 223.2 MIPS
        (4.1955 %, P = 93.7 + 3.3 x 0.41955 = 95.0845 W), requested 2232 -> violation.
        energy 117 x 27.84 + 95.0845 x 27.84; both hosts active and violating for 27.84 s each.
        v1 under-allocated in migration: (2232 - 1674) x 27.84 = 15534.72 MIPS s
    span D [627.84, 900): h0 v0 1860 = 50 % (102 W); h1 v1 2232 = 41.955 % (110 + 6 x 0.19549 = 111.173 W)
        energy 102 x 272.16 + 111.173 x 272.16; no violation.
    SLATAH = (27.84 + 27.84) / (300 + 300 + 2 x 27.84 + 2 x 272.16) = 55.68 / 1200 = 4.64 %
    requested MIPS s = 2790 x 300 x 2 + 4092 x 300 = 2901600; PDM = 15534.72 / 2901600 = 0.53538 %
    SLAV = 0.0464 x 0.0053538 = 0.024842 %; ESV = energy (kWh) x SLAV
    """
    host_mips, pe = np.array([3720.0, 5320.0]), np.array([1860.0, 2660.0])
    tables = np.asarray([G4, G5])
    early = np.array([930.0, 1860.0])
    late = np.array([1860.0, 2232.0])
    both_on_h0 = (np.array([0, 1]), np.array([0, 0]), np.array([NORMAL, NORMAL]))
    migrating = (np.array([0, 1, 1]), np.array([0, 0, 1]), np.array([NORMAL, OUT, IN]))
    moved = (np.array([0, 1]), np.array([0, 1]), np.array([NORMAL, NORMAL]))
    m = rmod.Metrics()
    m.span(both_on_h0, early, early, 300.0, host_mips, pe, tables)
    m.span(both_on_h0, early, late, 300.0, host_mips, pe, tables)
    dur = rmod.migration_seconds(1740)
    m.migrations += 1
    m.span(migrating, late, late, dur, host_mips, pe, tables)
    m.span(moved, late, late, 300.0 - dur, host_mips, pe, tables)
    r = m.result()
    p_in = 93.7 + 3.3 * (223.2 / 5320 * 10)
    p_h1 = 110.0 + 6.0 * (2232.0 / 5320 * 10 - 4)
    energy_ws = 33000 + 34050 + 117 * 27.84 + p_in * 27.84 + 102 * 272.16 + p_h1 * 272.16
    assert p_in == pytest.approx(95.0845, abs=1e-4) and p_h1 == pytest.approx(111.1729, abs=1e-4)
    assert r["energy_kwh"] == pytest.approx(energy_ws / 3.6e6)
    assert r["energy_kwh"] == pytest.approx(0.0363810, abs=1e-6)
    assert r["migrations"] == 1
    assert r["slatah_pct"] == pytest.approx(4.64)
    assert r["pdm_pct"] == pytest.approx(100 * 15534.72 / 2901600)
    assert r["slav_pct"] == pytest.approx(100 * 0.0464 * 15534.72 / 2901600)
    assert r["esv"] == pytest.approx(r["energy_kwh"] * 0.0464 * 15534.72 / 2901600)


def test_fleet_alternates_g4_g5():
    f = rmod.fleet(4)
    assert f["mips"].tolist() == [3720.0, 5320.0, 3720.0, 5320.0]
    assert f["tables"][1].tolist() == list(G5)


def test_replay_cli_smoke(tmp_path, capsys):
    """bench/replay.py end to end on 3 VMs, 4 hosts, 3 steps (planner in the loop)."""
    spec = importlib.util.spec_from_file_location("bench_replay", os.path.join(_BENCH, "replay.py"))
    replay = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(replay)
    traces = tmp_path / "day"
    traces.mkdir()
    for i, level in enumerate((10, 40, 70)):
        (traces / ("vm%d" % i)).write_text("\n".join(str(level) for _unused in range(288)) + "\n")
    out = tmp_path / "res.json"
    assert replay.main(["--trace-dir", str(traces), "--out", str(out), "--hosts", "4", "--steps", "3",
                        "--budget", "0.1", "--initial-budget", "0.1"]) == 0
    res = json.loads(out.read_text())
    for key in ("energy_kwh", "migrations", "slatah_pct", "pdm_pct", "slav_pct", "esv"):
        assert key in res
    assert res["energy_kwh"] > 0 and res["steps"] == 3 and res["vms"] == 3
    assert json.loads(capsys.readouterr().out.strip().splitlines()[-1])["esv"] == res["esv"]


def test_diagnostics_split_slatah_and_pdm():
    """The by-hand case above, split by cause: h0's shortfall is the PE cap (v1 asks 2232 of a 1860 PE),
    h1's is v1 migrating in; the under-allocation in migration is the PE cap plus the 10 % loss."""
    host_mips, pe = np.array([3720.0, 5320.0]), np.array([1860.0, 2660.0])
    tables = np.asarray([G4, G5])
    late = np.array([1860.0, 2232.0])
    migrating = (np.array([0, 1, 1]), np.array([0, 0, 1]), np.array([NORMAL, OUT, IN]))
    m = rmod.Metrics()
    dur = rmod.migration_seconds(1740)
    m.span(migrating, late, late, dur, host_mips, pe, tables)
    r, d = m.result(), m.diagnostics()
    slatah = d["slatah_migrating_in_pct"] + d["slatah_other_pct"] + d["slatah_overload_pct"]
    assert slatah == pytest.approx(r["slatah_pct"])
    assert d["slatah_migrating_in_pct"] == pytest.approx(50.0) and d["slatah_other_pct"] == pytest.approx(50.0)
    assert d["pdm_pe_cap_pct"] + d["pdm_migration_loss_pct"] + d["pdm_overload_pct"] == pytest.approx(r["pdm_pct"])
    assert d["pdm_migration_loss_pct"] == pytest.approx(100 * 186.0 * dur / ((1860 + 2232) * dur))
    # an oversubscribed source: the extra under-allocation is counted as overload
    m2 = rmod.Metrics()
    rows = (np.array([0, 1, 1]), np.array([0, 0, 1]), np.array([NORMAL, OUT, IN]))
    m2.span(rows, np.array([1860.0, 1860.0]) * 1.5, np.array([1860.0, 1860.0]), 10.0, host_mips / 1.5, pe, tables)
    assert m2.diagnostics()["pdm_overload_pct"] > 0 and m2.diagnostics()["slatah_overload_pct"] > 0


def _replay_module():
    spec = importlib.util.spec_from_file_location("bench_replay", os.path.join(_BENCH, "replay.py"))
    replay = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(replay)
    return replay


def test_forecast_demand_uses_the_past_only():
    """--demand forecast: mean + beta x std of the last --window samples up to now; future samples unused."""
    replay = _replay_module()
    rng = np.random.default_rng(1)
    util = rng.uniform(0.0, 1.0, size=(8, 289))
    args = argparse.Namespace(hosts=4, demand="forecast", window=5, beta=0.5, current_weight=0.0, ceiling=100.0)
    rp = replay.Replay(util, args, plan_document=None)
    k = 20
    got = rp.demand(k)
    win = util[:, k - 4:k + 1] * rp.vm_mips[:, None]
    assert got == pytest.approx(np.minimum(win.mean(axis=1) + 0.5 * win.std(axis=1), rp.vm_mips))
    util[:, k + 1:] = 1.0                     # the future changes: the demand at k does not
    assert rp.demand(k) == pytest.approx(got)
    assert rp.demand(0) == pytest.approx(util[:, 0] * rp.vm_mips)   # one sample: no spread yet
    args.demand = "tangent"
    tangent = rp.demand(k)
    assert rp.reserve > 0 and np.all(tangent >= win.mean(axis=1) - 1e-9)
