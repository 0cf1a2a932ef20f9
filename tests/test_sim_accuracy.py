"""Convergence of PGSim's fixed-step integrator against itself and against the original r_N equations.

The schedule is one seeded microgrid episode cut into 28 control-step intervals: the 0.4 s warm-up at
V_nom (8 intervals), then 20 steps with set-points U(490, 535) V and load factors walking by U(±0.05) from
U(0.8, 1.2). Voltages are compared at every interval end.
"""

from __future__ import annotations

import numpy as np
import pytest

from simsvc import model, reference
from simsvc.simulator import GridBatch
from simsvc.systems import DG_COL, System, load_system

SEED = 7
TOL_PU = 1e-4


def _schedule(name: str, n_steps: int | None = None) -> tuple[System, reference.Schedule]:
    system = load_system(name)
    return system, reference.episode_schedule(system, SEED, n_steps=n_steps)


def test_episode_schedule_has_warmup_at_vnom_then_walking_loads():
    system, sched = _schedule("microgrid-6")
    assert sched.n_intervals == 28 and abs(sched.end_times_s[-1] - 1.4) < 1e-12
    np.testing.assert_array_equal(sched.vn_v[:8], system.v_nom_v)
    assert np.all((sched.vn_v[8:] >= 490.0) & (sched.vn_v[8:] <= 535.0))
    np.testing.assert_array_equal(sched.load_factor[:9], np.repeat(sched.load_factor[:1], 9, axis=0))
    steps = np.diff(sched.load_factor[8:], axis=0)
    assert np.all(np.abs(steps) <= 0.05) and np.all(steps != 0.0)


@pytest.mark.parametrize("name, dg_model", [("microgrid-6", "reduced"), ("microgrid-20", "reduced"),
                                            ("microgrid-6", "full")])
def test_halving_step_changes_voltages_less_than_1e4_pu(name: str, dg_model: str):
    system, sched = _schedule(name)
    dt_s = system.dt_s(dg_model)
    coarse = reference.solve_ours(system, dg_model, sched, dt_s=dt_s)
    fine = reference.solve_ours(system, dg_model, sched, dt_s=0.5 * dt_s)
    assert np.all(np.isfinite(coarse)) and np.all((coarse > 0.8) & (coarse < 1.2))
    assert np.abs(coarse - fine).max() < TOL_PU


@pytest.mark.parametrize("dg_model", ["reduced", "full"])
def test_tight_radau_solution_of_rn_equations_agrees_within_1e4_pu(dg_model: str):
    """The full model runs on microgrid-6 too (an episode with load changes; bidram-4 has none)."""
    system, sched = _schedule("microgrid-6")
    ours = reference.solve_ours(system, dg_model, sched)
    radau = reference.solve_reference(system, dg_model, sched, method="radau")
    assert np.abs(ours - radau).max() < TOL_PU


def test_gap_to_rn_reference_is_the_virtual_shunt_and_vanishes_as_rn_grows():
    """Our kernel is the r_N → ∞ limit: the gap falls about 100× when r_N grows 100× (a short episode)."""
    system, sched = _schedule("microgrid-6", n_steps=2)
    ours = reference.solve_ours(system, "reduced", sched, dt_s=system.dt_s("reduced") / 8)
    gap = [np.abs(ours - reference.solve_reference(system, "reduced", sched, r_n_ohm=r_n)).max()
           for r_n in (1e4, 1e6)]
    assert gap[0] < TOL_PU
    assert gap[1] < gap[0] / 30.0


def test_odeint_at_original_tolerances_matches_radau():
    system, sched = _schedule("microgrid-6", n_steps=4)
    radau = reference.solve_reference(system, "reduced", sched, method="radau")
    lsoda = reference.solve_reference(system, "reduced", sched, method="odeint")
    assert np.abs(radau - lsoda).max() < 1e-8


@pytest.mark.parametrize("dg_model, n_steps", [("reduced", 300), ("full", 2000)])
def test_numpy_twin_matches_numba_kernel(dg_model: str, n_steps: int):
    """Two envs with different loads and set-points, across t_on (the secondary frequency switch-on)."""
    system = load_system("microgrid-6")
    grid = GridBatch(system, 2, dg_model=dg_model)
    factors = np.array([np.full(system.n_load, 0.8), np.linspace(0.9, 1.3, system.n_load)])
    grid.set_load_factors(factors)
    grid.vn_v[:] = [[495.0] * system.n_dg, np.linspace(490.0, 540.0, system.n_dg)]
    t0_s = system.sec_f_t_on_s - 0.25 * n_steps * grid.dt_s
    grid.t_s[:] = t0_s
    x0 = grid.x.copy()
    grid.advance(n_steps)

    twin = reference.numpy_grid(system, dg_model, grid.dt_s)
    load_l = system.load_l_h * factors
    m = model.kcl_matrix(system.n_bus, system.dg_bus, system.dg_params[:, DG_COL["l_c"]], system.line_from,
                         system.line_to, system.line_l_h, system.load_bus, load_l)
    x = x0.copy()
    reference.advance_numpy(twin, x, t0_s, n_steps, grid.dt_s, grid.vn_v, system.load_r_ohm * factors, load_l,
                            np.linalg.inv(m))
    scale = np.maximum(np.abs(grid.x), 1.0)
    assert np.all(np.abs(x - grid.x) / scale < 1e-9)
    assert np.abs(grid.x[:, -system.n_dg:] - system.omega_nom).max() > 1e-3   # w really moved after t_on
