"""Whole runs of one grid under a conventional controller: an MDP episode, or a free run of given length."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from simsvc.controllers import controller_setpoints, make_controller
from simsvc.env import MicrogridEnv
from simsvc.metrics import episode_summary
from simsvc.scenarios import Scenario
from simsvc.simulator import GridBatch, stack_trace
from simsvc.systems import System

TRACE_DT_S = 0.01


@dataclass
class ControllerRun:
    """A trace (t from 0 s; v_pu, p_w, q_var, f_hz, vn_v each [time, DG]) and per-control-step results."""

    trace: dict[str, np.ndarray]
    v_pu: np.ndarray      # [control steps, DG], measured at the end of each control step
    rewards: np.ndarray   # [control steps, DG]; empty for free runs
    summary: dict[str, float]


def run_episode(system: System, controller: str, seed: int, disturbance: str = "episode",
                dg_model: str | None = None, scenario: str | Scenario | None = None) -> ControllerRun:
    """One MDP episode (warm-up included in the trace) with the controller choosing every set-point from what
    the DGs measured (`VecMicrogridEnv.measured`: with the scenario's noise and delay)."""
    env = MicrogridEnv(system, disturbance=disturbance, dg_model=dg_model, trace_dt_s=TRACE_DT_S, scenario=scenario)
    if controller == "oracle" and not env.vec.scenario.is_classic:
        # the gap table's oracle: scored with the scenario's reward (sharing, load buses), not the voltage term alone
        from simsvc.gap import MeasuredStateOracle

        ctrl = MeasuredStateOracle(env.vec)
    else:
        ctrl = make_controller(controller, system, seed, grid=env.vec.grid, scenario=env.vec.scenario)
    env.reset(seed)
    vs, rs = [], []
    done = False
    while not done:
        meas = env.vec.measured()
        vn = controller_setpoints(ctrl, meas, env.vec.grid.vn_v.copy(), env.vec.links)
        _, rewards, done, info = env.step_setpoints(vn[0])
        vs.append(info["v_pu"])
        rs.append(rewards)
    v_pu, rewards = np.array(vs), np.array(rs)
    return ControllerRun(env.trace(), v_pu, rewards, episode_summary(v_pu, rewards))


def run_for(system: System, controller: str, duration_s: float, seed: int = 0, dg_model: str | None = None,
            controller_start_s: float | None = None) -> ControllerRun:
    """A free run from rest with nominal loads; the controller acts every control step from its start
    time (the system's warm-up, or 0.5 s where it has none, so primary control settles first)."""
    grid = GridBatch(system, 1, dg_model=dg_model)
    ctrl = make_controller(controller, system, seed, grid=grid)
    start_s = controller_start_s if controller_start_s is not None else (system.warmup_s or 0.5)
    n_ctrl = grid.steps_for(system.control_dt_s)
    n_trace = grid.steps_for(TRACE_DT_S) if n_ctrl % grid.steps_for(TRACE_DT_S) == 0 else n_ctrl
    first = np.zeros(1, dtype=np.int64)
    rows = grid.trace_samples(first)
    vs: list[np.ndarray] = []
    n_steps = round(duration_s / system.control_dt_s)
    for _ in range(n_steps):
        if grid.t_s[0] >= start_s - 1e-9:
            grid.vn_v[:] = ctrl.setpoints(grid.measure(), grid.vn_v.copy())
        for _ in range(n_ctrl // n_trace):
            grid.advance(n_trace)
            rows.extend(grid.trace_samples(first))
        vs.append(grid.measure().v_pu[0])
    trace = stack_trace(rows)
    v_pu = np.array(vs)
    summary = {"max_dev_pu": float(np.abs(1.0 - v_pu).max()) if v_pu.size else 0.0, "diverged": bool(not grid.ok[0])}
    return ControllerRun(trace, v_pu, np.zeros((0, system.n_dg)), summary)
