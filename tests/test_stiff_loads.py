"""Loads whose R and L are scaled apart decay faster than the nominal ones; the grid then splits its fixed
step into sub-steps (GridBatch.substeps) so that the integration stays stable and accurate. One factor for R
and L, the only draw before independent factors existed, keeps one step and the same trajectories."""

from __future__ import annotations

import numpy as np
import pytest

from simsvc.scenario_effects import apply_load_factors
from simsvc.simulator import STIFF_LOAD_STEP, GridBatch
from simsvc.systems import load_system


def _grid(name: str, r_factor: float, l_factor: float, dt_s: float | None = None) -> GridBatch:
    """One env of the system, at rest, with every load's R and L scaled by the two factors."""
    system = load_system(name)
    grid = GridBatch(system, 1, dt_s=dt_s)
    factors = np.empty((1, 2, system.n_load))
    factors[:, 0], factors[:, 1] = r_factor, l_factor
    apply_load_factors(grid, factors)
    return grid


def _run(grid: GridBatch, seconds: float) -> None:
    grid.vn_v[:] = grid.system.v_nom_v * 1.02  # a set-point step after the warm-up: a transient to follow
    grid.advance(grid.steps_for(grid.system.warmup_s))
    grid.vn_v[:] = grid.system.v_nom_v * 1.05
    grid.advance(grid.steps_for(seconds))


@pytest.mark.parametrize("factor", [0.5, 0.8, 1.0, 1.2, 1.5])
def test_one_factor_for_r_and_l_never_sub_steps(factor):
    for name in ("microgrid-6", "microgrid-20"):
        assert _grid(name, factor, factor).substeps().tolist() == [1]


def test_the_sub_step_count_follows_the_fastest_load():
    system = load_system("microgrid-20")
    fastest = (system.load_r_ohm / system.load_l_h).max()
    assert fastest * system.dt_s("reduced") == pytest.approx(STIFF_LOAD_STEP, rel=0.01)  # microgrid-20 sets it
    assert _grid("microgrid-20", 1.0, 1.0).substeps().tolist() == [1]
    assert _grid("microgrid-20", 1.2, 0.8).substeps().tolist() == [2]  # 1.5x faster
    assert _grid("microgrid-20", 1.5, 0.5).substeps().tolist() == [3]  # 3x, the walk's extreme
    # microgrid-6's loads are slower: its step takes even the walk's extreme in one
    assert _grid("microgrid-6", 1.5, 0.5).substeps().tolist() == [2]
    assert _grid("microgrid-6", 1.2, 0.8).substeps().tolist() == [1]


def test_stiff_loads_stay_stable_and_match_a_four_times_finer_step(monkeypatch):
    fine = _grid("microgrid-20", 1.5, 0.5, dt_s=load_system("microgrid-20").dt_s("reduced") / 4)
    _run(fine, 1.0)
    grid = _grid("microgrid-20", 1.5, 0.5)
    _run(grid, 1.0)
    assert grid.ok.all() and fine.ok.all()
    assert np.abs(grid.measure().v_pu - fine.measure().v_pu).max() < 1e-5
    # without the sub-steps the same grid diverges: what independent factors did before
    monkeypatch.setattr(GridBatch, "substeps", lambda self: np.ones(self.n_envs, dtype=np.int64))
    plain = _grid("microgrid-20", 1.5, 0.5)
    _run(plain, 1.0)
    assert not plain.ok.any()


def test_nominal_loads_integrate_exactly_as_the_plain_kernel_call():
    from simsvc import model

    grid, direct = _grid("microgrid-20", 0.9, 0.9), _grid("microgrid-20", 0.9, 0.9)
    grid.advance(400)
    s, ok = direct.system, direct.ok.copy()
    model.advance(direct.x, direct.t_s, 400, direct.dt_s, direct.model, s.dg_params, s.dg_bus, direct.vn_v,
                  s.line_from, s.line_to, s.line_r_ohm, s.line_l_h, s.load_bus, direct._load_r, direct._load_l,
                  direct._minv, direct._ldl, direct.net, s.omega_nom, direct.flow, s.sec_f_t_on_s, ok)
    assert grid.ok.all() and ok.all() and np.array_equal(grid.x, direct.x)
