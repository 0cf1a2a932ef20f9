"""Fit the fixed-set-point baselines on training seeds: the best single set-point for every DG (`constant`)
and, from there, per-DG set-points by coordinate descent (`per-dg`). Both choose among the agents' discrete
set-points and are scored with the agents' reward over whole episodes, loads fixed within each episode as
in the evaluation protocol. Training seeds are a contiguous range far below the evaluation seeds (2000 and
up), so a fitted baseline never sees an evaluation episode. See docs/evaluation.md#baseline-controllers.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import numpy as np

from simsvc.env import VecMicrogridEnv
from simsvc.lookahead import coordinate_search, held_returns
from simsvc.systems import System, setpoint_choices

MAX_SWEEPS = 4


def episode_scorer(system: System, first_seed: int, n_seeds: int) -> Callable[[np.ndarray], np.ndarray]:
    """score(actions [C, N]) -> the mean episode return of holding each candidate's set-points from the end
    of the warm-up, over the training seeds first_seed .. first_seed + n_seeds - 1."""
    env = VecMicrogridEnv(system, n_seeds, disturbance="episode", auto_reset=False)
    env.reset(first_seed)  # env k: seed first_seed + k, warmed up with V_n = V_nom
    choices = setpoint_choices(system)

    def score(actions: np.ndarray) -> np.ndarray:
        c = len(actions)
        copies = env.grid.replicate(np.tile(np.arange(n_seeds), c))
        vn = np.repeat(choices[actions], n_seeds, axis=0)
        return held_returns(copies, vn, env.episode_steps).reshape(c, n_seeds).mean(axis=1)

    return score


def fit_setpoints(system: System, first_seed: int, n_seeds: int, max_sweeps: int = MAX_SWEEPS) -> dict[str, Any]:
    """The fitted `constant` and `per-dg` set-points with their mean training return, as the fitted-file
    tables (`constant`, `per_dg`)."""
    score = episode_scorer(system, first_seed, n_seeds)
    choices = setpoint_choices(system)
    uniform = np.repeat(np.arange(system.n_actions)[:, None], system.n_dg, axis=1)
    constant_returns = score(uniform)
    best = int(np.argmax(constant_returns))
    actions, per_dg_return, sweeps = coordinate_search(score, np.full(system.n_dg, best), system.n_actions,
                                                       max_sweeps)
    return {
        "constant": {"action": best, "setpoints_v": [float(choices[best])] * system.n_dg,
                     "train_return": float(constant_returns[best]),
                     "train_return_per_setpoint": [round(float(r), 6) for r in constant_returns]},
        "per_dg": {"actions": [int(a) for a in actions], "setpoints_v": [float(v) for v in choices[actions]],
                   "train_return": per_dg_return, "sweeps": sweeps},
    }
