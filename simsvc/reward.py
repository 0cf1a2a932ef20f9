"""The agents' reward, alone in a module without the simulator: the environment scores every step with it,
and the learner derives the value ranges of a run's rollouts from it without importing Numba."""

from __future__ import annotations

import numpy as np

DIVERGED_REWARD = -10.0  # per DG, for the step in which an episode's simulation diverges


def voltage_reward(v_pu: np.ndarray) -> np.ndarray:
    """Per-agent reward of one control step: 0.05 − |1 − v| in band, −10 far out, −|1 − v| else
    (docs/mdp.md#rewards)."""
    dev = np.abs(1.0 - v_pu)
    reward = -dev
    reward = np.where((v_pu >= 0.95) & (v_pu <= 1.05), 0.05 - dev, reward)
    return np.where((v_pu <= 0.8) | (v_pu >= 1.25), DIVERGED_REWARD, reward)


# -- the extra terms of scenarios (docs/scenarios.md#rewards) -----------------------------------------------
SHARING_CAP_PU = 0.25  # the sharing error counts up to this (p.u. of V_nom), so a reward stays bounded


def neighbour_mean_matrix(adjacency: np.ndarray) -> np.ndarray:
    """W [N, N] with (W x)_i the mean of x_j over agent i's neighbours (an agent without neighbours: x_i)."""
    a = np.asarray(adjacency, dtype=np.float64)
    degree = a.sum(axis=1, keepdims=True)
    return np.where(degree > 0, a / np.maximum(degree, 1.0), np.eye(a.shape[0]))


def sharing_error_pu(droop_v: np.ndarray, mix: np.ndarray, v_nom_v: float) -> np.ndarray:
    """Proportional reactive-power sharing error of every agent, |n_Q,i·Q_i − mean_{j∈N(i)} n_Q,j·Q_j| / V_nom,
    capped at SHARING_CAP_PU. `droop_v` [..., N] holds n_Q,i·Q_i in volts, `mix` is neighbour_mean_matrix."""
    return np.minimum(np.abs(droop_v - droop_v @ mix.T) / v_nom_v, SHARING_CAP_PU)


def loadbus_reward(v_load_pu: np.ndarray, assign: np.ndarray) -> np.ndarray:
    """Per agent, the mean `voltage_reward` of the load buses assigned to it (`assign` [N, n_load], 0/1); 0 for
    an agent with none. `v_load_pu` [..., n_load]."""
    assign = np.asarray(assign, dtype=np.float64)
    count = assign.sum(axis=1)
    return (voltage_reward(v_load_pu) @ assign.T) / np.maximum(count, 1.0)


def reward_bounds(sharing_weight: float = 0.0, loadbus_weight: float = 0.0) -> tuple[float, float]:
    """The lowest and highest per-agent reward of one control step with the given term weights, divergence
    included: the voltage term over every voltage, plus each extra term over its whole range."""
    volts = np.concatenate([np.linspace(0.0, 2.0, 400_001), [0.8, 0.95, 1.0, 1.05, 1.25]])  # p.u., and the edges
    v = voltage_reward(volts)
    low = float(v.min()) + loadbus_weight * min(float(v.min()), 0.0) - sharing_weight * SHARING_CAP_PU
    high = float(v.max()) + loadbus_weight * max(float(v.max()), 0.0)
    return min(low, DIVERGED_REWARD), max(high, DIVERGED_REWARD)
