"""Conventional controllers to compare the agents with, usable as policies (docs/pgsim.md#conventional-controllers).

A controller maps what the DGs measure at the end of a control step to the set-points held during the next
one (zero-order hold, like the agents): `setpoints(meas: Measurements, vn_v [E, N]) -> vn_v [E, N]`.

Besides the conventional ones (droop, the distributed secondary control, random), the strongest simple rules
a learned policy must beat (docs/evaluation.md#baseline-controllers): `constant` and `per-dg` (set-points
fitted on training seeds, `simsvc.fitting`), `local` (each DG undoes its own reactive-power droop from its own
measured Q; `local-continuous` without snapping to the action grid) and `oracle`, a centralised one-step
look-ahead on a copy of the true simulator state: an upper reference, not a controller a DG could run.
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from common.errors import InputError
from common.tomlfile import read_toml
from simsvc.systems import DG_COL, System, nearest_action, setpoint_choices

if TYPE_CHECKING:  # the simulator (Numba) loads only where a controller runs, not for the list of names
    from simsvc.scenarios import Scenario
    from simsvc.simulator import GridBatch, Measurements

CONTROLLERS = ("droop", "secondary", "random", "constant", "per-dg", "local", "local-continuous", "oracle")
# how reports and tables name each controller
CONTROLLER_LABELS = {"droop": "droop control", "secondary": "secondary control", "random": "random set-points",
                     "constant": "constant set-point (fitted)", "per-dg": "per-DG set-points (fitted)",
                     "local": "local rule", "local-continuous": "local rule (continuous)",
                     "oracle": "oracle look-ahead (upper reference)"}
FITTED = {"constant": "constant", "per-dg": "per_dg"}  # controller -> table of the fitted-set-points file
ORACLE_SWEEPS = 2
SHARING_GAIN_PER_S = 10.0  # c_q of the secondary controller's reactive-power sharing term (docs/scenarios.md)


class DroopOnly:
    """Primary control alone: every set-point stays at V_nom (no secondary voltage layer)."""

    def __init__(self, system: System):
        self.v_nom_v = system.v_nom_v

    def setpoints(self, meas: Measurements, vn_v: np.ndarray) -> np.ndarray:
        return np.full_like(vn_v, self.v_nom_v)


class CooperativeVoltageControl:
    """Distributed cooperative secondary voltage control after Bidram et al. (2013), discrete form.

    Each DG moves its set-point by consensus with its neighbours' voltages and, where pinned, towards the
    reference: Vn_i += −c_v·Δt·[Σ_j a_ij (v_i − v_j) + g_i (v_i − v_ref)] (p.u. of V_nom), on the agent
    graph with unit weights, then clips to the agents' set-point range. c_v is tuned per system
    (`[secondary_voltage] gain_per_s` in the system file).

    With `sharing_gain_per_s` = c_q > 0 (scenarios that reward reactive-power sharing, docs/scenarios.md) it
    also runs Bidram's reactive-power sharing consensus: Vn_i += −c_q·Δt·Σ_j a_ij (n_Q,i·Q_i − n_Q,j·Q_j)/V_nom,
    so a DG that carries more than its share of Q lowers its set-point.

    Under message loss (`links`, docs/scenarios.md#message-loss) a_ij is 1 only where DG i received DG j's
    message this step: the sums, and the mean a failed DG hears, run over the received links.
    """

    reads_links = True  # `controller_setpoints` hands it the environment's link mask

    def __init__(self, system: System, control_dt_s: float | None = None, gain_per_s: float | None = None,
                 v_ref_pu: float = 1.0, sharing_gain_per_s: float = 0.0):
        self.system = system
        self.gain_dt = float(gain_per_s or system.sec_v_gain_per_s) * float(control_dt_s or system.control_dt_s)
        adjacency = system.agent_adjacency.astype(np.float64)
        self.laplacian = np.diag(adjacency.sum(axis=1)) - adjacency
        self.pin = np.zeros(system.n_dg)
        self.pin[system.sec_v_pinned] = 1.0
        self.v_ref_pu = v_ref_pu
        self.sharing_gain_dt = float(sharing_gain_per_s) * float(control_dt_s or system.control_dt_s)
        self.n_q = system.dg_params[:, DG_COL["n_q"]]

    def setpoints(self, meas: Measurements, vn_v: np.ndarray, links: np.ndarray | None = None) -> np.ndarray:
        """The next set-points; `links` [E, N, D] (or None: every message arrives) says which neighbours'
        readings reached each DG this step."""
        from simsvc.links import received_adjacency

        adj = None if links is None else received_adjacency(self.system.agent_adjacency, links)
        s, v_pu = self.system, self._heard(meas.v_pu, self.v_ref_pu, adj)
        error = self._laplacian(v_pu, adj) + self.pin * (v_pu - self.v_ref_pu)
        if self.sharing_gain_dt > 0.0:
            droop_pu = self._heard(self.n_q * meas.q_var, 0.0, adj) / s.v_nom_v
            error = error + (self.sharing_gain_dt / self.gain_dt) * self._laplacian(droop_pu, adj)
        vn_pu = vn_v / s.v_nom_v - self.gain_dt * error
        return np.clip(vn_pu * s.v_nom_v, s.setpoint_min_v, s.setpoint_max_v)

    def _laplacian(self, x: np.ndarray, adj: np.ndarray | None) -> np.ndarray:
        """Σ_j a_ij (x_i − x_j) for every DG: on the agent graph, or on each env's received links `adj`."""
        if adj is None:
            return x @ self.laplacian.T
        return adj.sum(axis=2) * x - np.einsum("eij,ej->ei", adj, x)

    def _heard(self, x: np.ndarray, default: float, adj: np.ndarray | None = None) -> np.ndarray:
        return heard_from_neighbours(x, self.system.agent_adjacency, default, adj)


def heard_from_neighbours(x: np.ndarray, adjacency: np.ndarray, default: float,
                          adj: np.ndarray | None = None) -> np.ndarray:
    """x [E, N] with a failed sensor's reading (NaN, docs/scenarios.md) replaced by the mean of what the DG's
    neighbours with working sensors send it (over the received links `adj` [E, N, N] when given, else the agent
    graph `adjacency`), or by `default` when none of its neighbours measures (or is heard)."""
    bad = np.isnan(x)
    if not bad.any():
        return x
    if adj is None:
        graph = np.asarray(adjacency, dtype=np.float64)
        count = (~bad).astype(np.float64) @ graph.T
        sums = np.where(bad, 0.0, x) @ graph.T
    else:
        count = np.einsum("eij,ej->ei", adj, (~bad).astype(np.float64))
        sums = np.einsum("eij,ej->ei", adj, np.where(bad, 0.0, x))
    heard = np.where(count > 0, sums / np.maximum(count, 1.0), default)
    return np.where(bad, heard, x)


class RandomSetpoints:
    """Uniformly random discrete set-points from the agents' action set (a floor for learned policies)."""

    def __init__(self, system: System, seed: int):
        self.system = system
        self.rng = np.random.default_rng(seed)

    def setpoints(self, meas: Measurements, vn_v: np.ndarray) -> np.ndarray:
        s = self.system
        actions = self.rng.integers(0, s.n_actions, size=vn_v.shape)
        return setpoint_choices(s)[actions]


class FixedSetpoints:
    """Set-points that never change: fitted once on training seeds (`constant`: one for all DGs, `per-dg`:
    one per DG), read from the system's fitted-set-points file."""

    def __init__(self, setpoints_v: np.ndarray):
        self.setpoints_v = np.asarray(setpoints_v, dtype=np.float64)

    def setpoints(self, meas: Measurements, vn_v: np.ndarray) -> np.ndarray:
        return np.broadcast_to(self.setpoints_v, vn_v.shape).copy()


class LocalDroopInversion:
    """Each DG undoes its own reactive-power droop: V_n,i = V_nom + n_Q,i · Q_i, from its own measured Q_i
    alone (with the reduced model this puts its output voltage at V_nom for the Q it carries now), snapped
    to the nearest of the agents' discrete set-points, or only clipped to their range (`snap=False`)."""

    def __init__(self, system: System, snap: bool = True):
        self.system, self.snap = system, snap
        self.n_q = system.dg_params[:, DG_COL["n_q"]]
        self.choices = setpoint_choices(system)

    def setpoints(self, meas: Measurements, vn_v: np.ndarray) -> np.ndarray:
        s = self.system
        wanted = s.v_nom_v + self.n_q * meas.q_var
        wanted = np.where(np.isnan(wanted), vn_v, wanted)  # a failed sensor (NaN): the DG holds its set-point
        if self.snap:
            return self.choices[nearest_action(s, wanted)]
        return np.clip(wanted, s.setpoint_min_v, s.setpoint_max_v)


class OneStepOracle:
    """A centralised look-ahead on the true simulator state of `grid`: every decision, starting from the
    current set-points, it tries each DG's discrete set-points in turn on copies of the grid (one control
    step ahead, summed reward of all DGs) and keeps the best, for ORACLE_SWEEPS sweeps. It sees what no DG
    can: an upper reference for what set-point choice is worth, not a controller."""

    def __init__(self, system: System, grid: GridBatch):
        self.system, self.grid = system, grid
        self.choices = setpoint_choices(system)

    def setpoints(self, meas: Measurements, vn_v: np.ndarray) -> np.ndarray:
        from simsvc.lookahead import coordinate_search, held_returns

        out = np.empty_like(vn_v)
        for e in range(self.grid.n_envs):
            def score(candidates: np.ndarray, e: int = e) -> np.ndarray:
                copies = self.grid.replicate(np.full(len(candidates), e))
                return held_returns(copies, self.choices[candidates], 1)

            start = nearest_action(self.system, vn_v[e])
            actions, _, _ = coordinate_search(score, start, self.system.n_actions, ORACLE_SWEEPS)
            out[e] = self.choices[actions]
        return out


def controller_setpoints(ctrl: object, meas: Measurements, vn_v: np.ndarray, links: np.ndarray | None) -> np.ndarray:
    """`ctrl.setpoints(meas, vn_v)`, handing the environment's link mask (message loss) to a controller that
    reads its neighbours (`reads_links`); the others read nothing a lost message could carry."""
    if links is not None and getattr(ctrl, "reads_links", False):
        return ctrl.setpoints(meas, vn_v, links)
    return ctrl.setpoints(meas, vn_v)


def fitted_path(system: System) -> Path:
    """Where a system's fitted set-points live: fitted/NAME.toml beside its system file."""
    return system.path.parent / "fitted" / f"{system.path.stem}.toml"


def fitted_setpoints(system: System, controller: str) -> np.ndarray:
    """The `constant` or `per-dg` set-points (V, one per DG) fitted for `system` by `powernet fit-baselines`."""
    path = fitted_path(system)
    if not path.is_file():
        raise InputError(f"no fitted set-points for {system.name} at {path}: run `powernet fit-baselines "
                         f"--system {system.name}` first")
    table = read_toml(path, "fitted set-points file").get(FITTED[controller])
    values = None if not isinstance(table, dict) else table.get("setpoints_v")
    if not isinstance(values, list) or len(values) != system.n_dg:
        raise InputError(f"{path.name}: {FITTED[controller]}.setpoints_v must list {system.n_dg} set-points")
    return np.asarray(values, dtype=np.float64)


def make_controller(name: str, system: System, seed: int = 0, grid: GridBatch | None = None,
                    scenario: Scenario | None = None):
    """A controller by name (CONTROLLERS); `oracle` needs the grid it looks ahead on. In a scenario that
    rewards reactive-power sharing, `secondary` runs its sharing term too (SHARING_GAIN_PER_S)."""
    if name == "droop":
        return DroopOnly(system)
    if name == "secondary":
        sharing = SHARING_GAIN_PER_S if scenario is not None and scenario.sharing_weight > 0 else 0.0
        return CooperativeVoltageControl(system, sharing_gain_per_s=sharing)
    if name == "random":
        return RandomSetpoints(system, seed)
    if name in FITTED:
        return FixedSetpoints(fitted_setpoints(system, name))
    if name in ("local", "local-continuous"):
        return LocalDroopInversion(system, snap=name == "local")
    if name == "oracle":
        if grid is None:
            raise ValueError("the oracle needs the grid it controls")
        return OneStepOracle(system, grid)
    raise InputError(f"unknown controller '{name}'; choose one of {', '.join(CONTROLLERS)}")
