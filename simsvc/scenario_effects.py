"""What a scenario does beside the grid's own physics, as plain functions over a `GridBatch`: the load factors it
sets (R and L scaled apart), the DGs whose sensors fail in an episode, the load-bus assignment and the extra
reward terms (docs/scenarios.md). `simsvc.env` applies them every step; `simsvc.gap` scores set-point
candidates with the same functions on copies of the grid."""

from __future__ import annotations

import numpy as np

from simsvc.reward import loadbus_reward, sharing_error_pu, voltage_reward
from simsvc.scenarios import Scenario
from simsvc.simulator import GridBatch, Measurements
from simsvc.systems import DG_COL, System

FAULT_STREAM = 2  # spawn key of the generator that picks the DGs whose sensors fail in an episode


def scenario_rewards(grid: GridBatch, meas: Measurements, scenario: Scenario, share_mix: np.ndarray | None,
                     loadbus_assign: np.ndarray | None) -> tuple[np.ndarray, dict[str, np.ndarray]]:
    """Raw per-agent rewards of the grid's current state (`meas` = grid.measure()): the voltage reward plus the
    scenario's extra terms (docs/scenarios.md#rewards), and those terms' inputs for `info`. `share_mix`
    (reward.neighbour_mean_matrix) and `loadbus_assign` (loadbus_assignment) are None when a term is off."""
    s = grid.system
    rewards = voltage_reward(meas.v_pu)
    extra: dict[str, np.ndarray] = {}
    if share_mix is not None:
        extra["sharing_error_pu"] = sharing_error_pu(s.dg_params[:, DG_COL["n_q"]] * meas.q_var, share_mix, s.v_nom_v)
        rewards = rewards - scenario.sharing_weight * extra["sharing_error_pu"]
    if loadbus_assign is not None:
        extra["v_load_pu"] = load_bus_voltages_pu(grid)
        rewards = rewards + scenario.loadbus_weight * loadbus_reward(extra["v_load_pu"], loadbus_assign)
    return rewards, extra


def load_bus_voltages_pu(grid: GridBatch) -> np.ndarray:
    """The voltage magnitude of every load's bus now, p.u. of V_nom, [E, n_load]."""
    vb = grid.bus_voltages_dq()[:, grid.system.load_bus, :]
    return np.hypot(vb[..., 0], vb[..., 1]) / grid.system.v_nom_v


def fault_set(seed: int, n_dg: int, n_faults: int) -> np.ndarray:
    """[n_dg] booleans: the DGs whose sensors fail in the episode of `seed`, n_faults of them drawn without
    replacement from the seed's own fault stream (apart from the load and noise streams, so a seed's loads
    and noise are those of the same scenario without faults)."""
    rng = np.random.default_rng(np.random.SeedSequence(int(seed), spawn_key=(FAULT_STREAM,)))
    out = np.zeros(n_dg, dtype=np.bool_)
    out[rng.choice(n_dg, size=n_faults, replace=False)] = True
    return out


def apply_load_factors(grid: GridBatch, factors: np.ndarray, envs: np.ndarray | None = None) -> None:
    """Scale every load's R by factors[:, 0] and its L by factors[:, 1] ([E', 2, n_load], rows `envs`).

    `GridBatch.set_load_factors` scales R and L by one factor; it is given the L factors (the KCL matrix
    depends on L alone), and where R's factor differs (independent R and L) R is then set apart, so
    `grid.load_factor` holds the L factors."""
    factors = np.asarray(factors, dtype=np.float64)
    grid.set_load_factors(factors[:, 1], envs)
    if not np.array_equal(factors[:, 0], factors[:, 1]):
        rows = slice(None) if envs is None else envs
        grid._load_r[rows] = grid.system.load_r_ohm * factors[:, 0]


def loadbus_assignment(system: System, nearest: int = 1) -> np.ndarray:
    """[N, n_load] 0/1: load k counts for the `nearest` DGs electrically nearest to its bus, by the sum of
    line impedance magnitudes |R + jωL| along the cheapest path (ties go to the lower DG number)."""
    s = system
    dist = np.full((s.n_bus, s.n_bus), np.inf)
    np.fill_diagonal(dist, 0.0)
    z = np.hypot(s.line_r_ohm, s.omega_nom * s.line_l_h)
    for a, b, w in zip(s.line_from, s.line_to, z, strict=True):
        dist[a, b] = dist[b, a] = min(dist[a, b], w)
    for k in range(s.n_bus):  # Floyd-Warshall: a handful of buses
        dist = np.minimum(dist, dist[:, k:k + 1] + dist[k:k + 1, :])
    assign = np.zeros((s.n_dg, s.n_load))
    for k, bus in enumerate(s.load_bus):
        order = np.lexsort((np.arange(s.n_dg), dist[bus, s.dg_bus]))
        assign[order[:min(nearest, s.n_dg)], k] = 1.0
    return assign
