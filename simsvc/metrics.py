"""Per-episode voltage-control metrics of the evaluation protocol (docs/mdp.md#metrics and
docs/evaluation.md#metrics-reported)."""

from __future__ import annotations

import numpy as np

BAND_LOW_PU = 0.95
BAND_HIGH_PU = 1.05


def outside_band(v_pu: np.ndarray) -> np.ndarray:
    """True where a voltage (p.u.) lies outside [0.95, 1.05]."""
    return (v_pu < BAND_LOW_PU) | (v_pu > BAND_HIGH_PU)


def episode_summary(v_pu: np.ndarray, rewards: np.ndarray) -> dict[str, float]:
    """Metrics of one episode from its per-step DG voltages and raw rewards, both shaped [T, N].

    return: sum of raw rewards over agents and steps; violation_rate: share of (agent, step) pairs outside
    the band; settling_step: first control step (0-based) at which every DG is inside the band, T if never;
    max_dev_pu: the largest |1 - v|.
    """
    v_pu = np.asarray(v_pu, dtype=np.float64)
    rewards = np.asarray(rewards, dtype=np.float64)
    if v_pu.ndim != 2 or rewards.shape != v_pu.shape:
        raise ValueError(f"expected v_pu and rewards of the same shape [T, N], got {v_pu.shape}, {rewards.shape}")
    n_steps = v_pu.shape[0]
    bad = outside_band(v_pu)
    inside_all = np.flatnonzero(~bad.any(axis=1))
    return {
        "return": float(rewards.sum()),
        "violation_rate": float(bad.mean()) if bad.size else 0.0,
        "settling_step": int(inside_all[0]) if inside_all.size else int(n_steps),
        "max_dev_pu": float(np.abs(1.0 - v_pu).max()) if v_pu.size else 0.0,
    }
