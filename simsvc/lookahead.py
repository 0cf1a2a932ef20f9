"""Set-points tried on copies of a grid: the search behind the fitted baselines (one set-point for all DGs,
one per DG) and behind the oracle (a centralised one-step look-ahead on the true state).

Everything here is scored with the agents' own reward (`simsvc.reward.voltage_reward`, summed over DGs), on
the discrete set-points the agents choose from. See docs/evaluation.md#baseline-controllers.
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np

from simsvc.reward import DIVERGED_REWARD, voltage_reward
from simsvc.simulator import GridBatch


def held_returns(grid: GridBatch, vn_v: np.ndarray, n_steps: int) -> np.ndarray:
    """Summed reward per env of holding set-points `vn_v` ([E, N], V) for `n_steps` control steps from the
    grid's current state, as the environment scores them (a diverged env scores DIVERGED_REWARD per DG for
    that step and nothing after). The grid advances in place: pass a copy (`GridBatch.replicate`)."""
    control_steps = grid.steps_for(grid.system.control_dt_s)
    total = np.zeros(grid.n_envs)
    alive = grid.ok.copy()
    grid.vn_v[:] = vn_v
    for _ in range(n_steps):
        grid.advance(control_steps)
        rewards = voltage_reward(grid.measure().v_pu)
        rewards[~grid.ok] = DIVERGED_REWARD
        rewards = np.where(np.isfinite(rewards), rewards, DIVERGED_REWARD)
        total += np.where(alive, rewards.sum(axis=1), 0.0)
        alive &= grid.ok
    return total


def coordinate_search(score: Callable[[np.ndarray], np.ndarray], start: np.ndarray, n_actions: int,
                      max_sweeps: int) -> tuple[np.ndarray, float, int]:
    """Maximise `score` over discrete action vectors one coordinate at a time: for each DG in turn, try all
    its actions with the others fixed and keep the best (the current one on a tie). `score` maps candidate
    action vectors [C, N] to their scores [C]. Stops after a sweep that changes nothing or after
    `max_sweeps`; returns (actions, their score, sweeps run)."""
    current = np.array(start, dtype=np.int64)
    best = -np.inf
    for sweep in range(1, max_sweeps + 1):
        changed = False
        for i in range(current.size):
            candidates = np.repeat(current[None, :], n_actions, axis=0)
            candidates[:, i] = np.arange(n_actions)
            scores = score(candidates)
            pick = int(np.argmax(scores))
            if scores[pick] > scores[current[i]] + 1e-12:
                current[i], changed = pick, True
            best = float(scores[current[i]])
        if not changed:
            return current, best, sweep
    return current, best, max_sweeps
