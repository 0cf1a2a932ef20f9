"""Physical behaviour of PGSim: droop steady state, power balance, the Bidram 4-DG case, settling."""

from __future__ import annotations

import math
from dataclasses import replace

import numpy as np
import pytest

from simsvc.episodes import run_episode, run_for
from simsvc.simulator import GridBatch
from simsvc.systems import DG_COL, load_system


def settle(system, seconds: float, dg_model: str | None = None, load_factors=None) -> GridBatch:
    grid = GridBatch(system, 1, dg_model=dg_model)
    if load_factors is not None:
        grid.set_load_factors(np.asarray(load_factors)[None])
    grid.advance(grid.steps_for(seconds))
    assert grid.ok.all()
    return grid


@pytest.fixture(scope="module")
def droop_cases():
    """Settled droop-only grids: bidram-4 (full model) and microgrid-6 with its secondary layers off."""
    bidram = load_system("bidram-4")
    mg6 = replace(load_system("microgrid-6"), sec_f_enabled=False)
    return {
        "bidram-4/full": (bidram, settle(bidram, 2.0)),
        "microgrid-6/reduced": (mg6, settle(mg6, 2.0, load_factors=[0.9, 1.1, 1.0, 1.2])),
        "microgrid-6/full": (mg6, settle(mg6, 2.0, dg_model="full")),
    }


@pytest.mark.parametrize("case", ["bidram-4/full", "microgrid-6/reduced", "microgrid-6/full"])
def test_droop_steady_frequency_is_nominal_minus_mp_p_and_common(droop_cases, case):
    system, grid = droop_cases[case]
    m = grid.measure()
    omega = 2 * math.pi * m.f_hz[0]
    expected = system.omega_nom - system.dg_params[:, DG_COL["m_p"]] * m.p_w[0]
    np.testing.assert_allclose(omega, expected, rtol=0, atol=1e-9)
    assert np.ptp(m.f_hz[0]) < 1e-6, "every DG must run at the same steady frequency"
    assert m.f_hz[0].max() < system.frequency_hz, "droop alone leaves the frequency below nominal"


@pytest.mark.parametrize("case", ["bidram-4/full", "microgrid-6/reduced", "microgrid-6/full"])
def test_droop_shares_active_power_inversely_to_mp(droop_cases, case):
    system, grid = droop_cases[case]
    mp_p = system.dg_params[:, DG_COL["m_p"]] * grid.measure().p_w[0]
    np.testing.assert_allclose(mp_p, mp_p.mean(), rtol=1e-6)


@pytest.mark.parametrize("case", ["bidram-4/full", "microgrid-6/reduced", "microgrid-6/full"])
def test_dg_power_equals_power_consumed_in_loads_lines_and_inductors(droop_cases, case):
    _, grid = droop_cases[case]
    produced, consumed = grid.power_balance()
    assert abs(produced[0] - consumed[0]) <= 0.005 * consumed[0]
    filtered_total = grid.measure().p_w[0].sum()
    assert abs(filtered_total - consumed[0]) <= 0.005 * consumed[0]


def test_bidram_droop_alone_leaves_every_voltage_below_nominal():
    run = run_for(load_system("bidram-4"), "droop", duration_s=1.5)
    assert np.all(run.v_pu[-1] < 0.98)
    assert np.all(run.v_pu[-1] > 0.9)


def test_bidram_secondary_restores_pinned_dg_to_nominal_within_a_second():
    system = load_system("bidram-4")
    start_s = 0.5
    run = run_for(system, "secondary", duration_s=2.0, controller_start_s=start_s)
    t = run.trace["t"]
    v1 = run.trace["v_pu"][:, 0]
    before = v1[(t > start_s - 0.1) & (t <= start_s)]
    assert np.all(before < 0.97), "the pinned DG starts from its droop voltage"
    after = v1[t >= start_s + 1.0]
    assert np.all(np.abs(after - 1.0) < 0.005), f"pinned DG not restored: {after.min():.4f}..{after.max():.4f}"
    assert np.all(run.v_pu[-1] > 0.99), "consensus lifts the other DGs towards nominal too"


@pytest.mark.parametrize("name", ["microgrid-6", "microgrid-20"])
def test_trained_systems_settle_from_their_initial_state_under_droop(name):
    system = load_system(name)
    grid = settle(system, 2.0)
    v_before = grid.measure().v_pu.copy()
    grid.advance(grid.steps_for(0.05))
    v_after = grid.measure().v_pu
    assert np.all(np.isfinite(v_after))
    assert np.abs(v_after - v_before).max() < 2e-4
    assert np.all((v_after > 0.85) & (v_after < 1.0)), "droop alone sits below nominal"


def test_microgrid6_droop_voltages_sit_around_091_to_092_pu():
    run = run_episode(load_system("microgrid-6"), "droop", seed=2000, disturbance="none")
    assert np.all((run.v_pu[-1] > 0.905) & (run.v_pu[-1] < 0.925))
    assert run.summary["violation_rate"] == 1.0


@pytest.mark.parametrize("name", ["microgrid-6", "microgrid-20"])
def test_secondary_controller_beats_droop_on_every_evaluation_seed(name):
    system = load_system(name)
    for seed in (2000, 2025, 2050):
        droop = run_episode(system, "droop", seed)
        secondary = run_episode(system, "secondary", seed)
        assert secondary.summary["return"] > droop.summary["return"] + 5.0
        assert secondary.summary["violation_rate"] < droop.summary["violation_rate"]
        assert np.all(np.abs(secondary.v_pu[-1] - 1.0) < 0.05), "the controller ends inside the band"
