"""Conventional controllers to compare the agents with, usable as policies (docs/pgsim.md#conventional-controllers).

A controller maps the DG voltages measured at the end of a control step to the set-points held during
the next one (zero-order hold, like the agents): `setpoints(v_pu [E, N], vn_v [E, N]) -> vn_v [E, N]`.
"""

from __future__ import annotations

import numpy as np

from common.errors import InputError
from simsvc.systems import System

CONTROLLERS = ("droop", "secondary", "random")


class DroopOnly:
    """Primary control alone: every set-point stays at V_nom (no secondary voltage layer)."""

    def __init__(self, system: System):
        self.v_nom_v = system.v_nom_v

    def setpoints(self, v_pu: np.ndarray, vn_v: np.ndarray) -> np.ndarray:
        return np.full_like(vn_v, self.v_nom_v)


class CooperativeVoltageControl:
    """Distributed cooperative secondary voltage control after Bidram et al. (2013), discrete form.

    Each DG moves its set-point by consensus with its neighbours' voltages and, where pinned, towards the
    reference: Vn_i += −c_v·Δt·[Σ_j a_ij (v_i − v_j) + g_i (v_i − v_ref)] (p.u. of V_nom), on the agent
    graph with unit weights, then clips to the agents' set-point range. c_v is tuned per system
    (`[secondary_voltage] gain_per_s` in the system file).
    """

    def __init__(self, system: System, control_dt_s: float | None = None, gain_per_s: float | None = None,
                 v_ref_pu: float = 1.0):
        self.system = system
        self.gain_dt = float(gain_per_s or system.sec_v_gain_per_s) * float(control_dt_s or system.control_dt_s)
        adjacency = system.agent_adjacency.astype(np.float64)
        self.laplacian = np.diag(adjacency.sum(axis=1)) - adjacency
        self.pin = np.zeros(system.n_dg)
        self.pin[system.sec_v_pinned] = 1.0
        self.v_ref_pu = v_ref_pu

    def setpoints(self, v_pu: np.ndarray, vn_v: np.ndarray) -> np.ndarray:
        s = self.system
        error = v_pu @ self.laplacian.T + self.pin * (v_pu - self.v_ref_pu)
        vn_pu = vn_v / s.v_nom_v - self.gain_dt * error
        return np.clip(vn_pu * s.v_nom_v, s.setpoint_min_v, s.setpoint_max_v)


class RandomSetpoints:
    """Uniformly random discrete set-points from the agents' action set (a floor for learned policies)."""

    def __init__(self, system: System, seed: int):
        self.system = system
        self.rng = np.random.default_rng(seed)

    def setpoints(self, v_pu: np.ndarray, vn_v: np.ndarray) -> np.ndarray:
        s = self.system
        actions = self.rng.integers(0, s.n_actions, size=vn_v.shape)
        return s.setpoint_min_v + actions * (s.setpoint_max_v - s.setpoint_min_v) / s.n_actions


def make_controller(name: str, system: System, seed: int = 0):
    """A controller by name: droop | secondary | random."""
    if name == "droop":
        return DroopOnly(system)
    if name == "secondary":
        return CooperativeVoltageControl(system)
    if name == "random":
        return RandomSetpoints(system, seed)
    raise InputError(f"unknown controller '{name}'; choose one of {', '.join(CONTROLLERS)}")
