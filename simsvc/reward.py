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
