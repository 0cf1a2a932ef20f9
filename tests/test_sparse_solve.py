"""The sparse network solve and the Taylor frequency flow give the dense path's trajectories to round-off
(docs/pgsim.md#sparse-network-solve, #sparse-frequency-flow), without storing anything of size n_bus²."""

from __future__ import annotations

import numpy as np
import pytest

from simsvc import model
from simsvc.simulator import GridBatch
from simsvc.systems import DG_COL, load_system


def _run(system, solver: str, flow: str = "auto", n_envs: int = 2, control_steps: int = 12) -> GridBatch:
    """Warm-up, then control steps with seeded random set-points and load factors (both change every step)."""
    grid = GridBatch(system, n_envs, solver=solver, flow=flow)
    rng = np.random.default_rng(7)
    grid.set_load_factors(rng.uniform(0.8, 1.2, (n_envs, system.n_load)))
    steps = grid.steps_for(system.control_dt_s)
    grid.advance(grid.steps_for(system.warmup_s))
    for _ in range(control_steps):
        grid.vn_v[:] = rng.uniform(system.setpoint_min_v, system.setpoint_max_v, (n_envs, system.n_dg))
        grid.set_load_factors(rng.uniform(0.8, 1.2, (n_envs, system.n_load)))
        grid.advance(steps)
    return grid


@pytest.mark.parametrize("name", ["microgrid-6", "microgrid-20"])
def test_sparse_and_dense_solves_give_the_same_trajectories(name):
    system = load_system(name)
    sparse, dense = _run(system, "sparse"), _run(system, "dense")
    assert sparse.ok.all() and dense.ok.all()
    scale = np.abs(dense.x).max(axis=0) + 1.0
    assert np.all(np.abs(sparse.x - dense.x) / scale < 1e-9)
    np.testing.assert_allclose(sparse.bus_voltages_dq(), dense.bus_voltages_dq(), rtol=0, atol=1e-7)
    np.testing.assert_allclose(sparse.measure().v_pu, dense.measure().v_pu, rtol=0, atol=1e-12)
    # the sparse batch keeps no n_bus x n_bus matrix per env
    assert sparse._minv.size == 1 and sparse._ldl.shape == (2, system.n_bus + sparse.net.row.size)


@pytest.mark.parametrize("name", ["microgrid-20", "oberrhein-159"])
def test_the_factor_solves_the_kcl_system(name):
    system = load_system(name)
    grid = GridBatch(system, 3)
    rng = np.random.default_rng(3)
    grid.set_load_factors(rng.uniform(0.5, 1.5, (3, system.n_load)))
    m = model.kcl_matrix(system.n_bus, system.dg_bus, system.dg_params[:, DG_COL["l_c"]], system.line_from,
                         system.line_to, system.line_l_h, system.load_bus, grid._load_l)
    b = rng.normal(size=(system.n_bus, 2)) * 1e6
    for e in range(3):
        out = np.empty((system.n_bus, 2))
        model.ldl_solve(grid._ldl[e], grid.net.colptr, grid.net.row, grid.net.order, b, out)
        np.testing.assert_allclose(out, np.linalg.solve(m[e], b), rtol=1e-10, atol=1e-9)


def test_a_radial_feeder_factorises_without_fill_and_a_loop_with_little():
    for name, fill in (("oberrhein-159", 0), ("microgrid-6", 0), ("microgrid-20", 7)):
        system = load_system(name)
        grid = GridBatch(system, 1)
        n_edges = len({tuple(sorted(e)) for e in zip(system.line_from, system.line_to, strict=True)})
        assert grid.net.row.size - n_edges == fill, name


def test_the_taylor_flow_matches_the_exact_dense_flow():
    system = load_system("oberrhein-95")
    assert GridBatch(system, 1).flow.taylor_terms > 0            # auto picks the series here ...
    assert GridBatch(load_system("microgrid-20"), 1).flow.taylor_terms == 0   # ... and the exact matrices on mg20
    taylor = _run(system, "sparse", "taylor", n_envs=1, control_steps=4)
    dense = _run(system, "sparse", "dense", n_envs=1, control_steps=4)
    w = slice(taylor.o_w, None)
    assert np.abs(taylor.x[:, w] - system.omega_nom).max() > 1e-2             # the set-points moved
    np.testing.assert_allclose(taylor.x[:, w], dense.x[:, w], rtol=1e-13, atol=0)
    scale = np.abs(dense.x).max(axis=0) + 1.0
    assert np.all(np.abs(taylor.x - dense.x) / scale < 1e-9)


def test_loads_that_share_a_bus_add_their_admittances_in_the_sparse_solve():
    # no shipped system has two loads on one bus; the sparse factor's update must still add both (np.add.at)
    import dataclasses

    base = load_system("microgrid-6")
    bus = base.load_bus.copy()
    bus[1] = bus[0]
    system = dataclasses.replace(base, load_bus=bus)
    sparse, dense = _run(system, "sparse"), _run(system, "dense")
    assert sparse._loads_share_bus and not GridBatch(base, 1)._loads_share_bus
    assert sparse.ok.all() and dense.ok.all()
    scale = np.abs(dense.x).max(axis=0) + 1.0
    assert np.all(np.abs(sparse.x - dense.x) / scale < 1e-9)
