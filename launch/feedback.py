"""How closely a learned policy follows the droop term, the quantity every fitted rule acts on
(docs/evaluation.md#does-a-policy-close-the-loop).

The local rule sets V_n,i − V_nom = n_Q,i·Q_i from the DG's own measured Q, the neighbour rule the same from
the mean n_Q,j·Q_j its working neighbours send when its own sensor has failed: both follow their input with a
slope of about 1 V/V. A greedy policy that holds one set-point per DG, whatever the load, has slope 0. Over
greedy evaluation episodes we regress each agent-step's commanded set-point (minus V_nom) on

- the DG's own droop term, for DGs whose sensor works, and
- the mean droop term of its working neighbours whose message arrived, for DGs whose sensor has failed
  (scenarios with sensor faults; agent-steps where no working neighbour is heard are left out),

and report slope (V/V), R² and the number of agent-steps of each fit.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np


def line_fit(x: np.ndarray, y: np.ndarray) -> dict[str, float | int | None]:
    """Least-squares slope and R² of y on x (with an intercept), over the finite pairs; None where fewer than 3
    pairs or x does not vary."""
    ok = np.isfinite(x) & np.isfinite(y)
    x, y = x[ok], y[ok]
    if len(x) < 3 or np.ptp(x) == 0.0:
        return {"slope": None, "r2": None, "n": int(len(x))}
    slope, intercept = np.polyfit(x, y, 1)
    resid = y - (slope * x + intercept)
    total = float(((y - y.mean()) ** 2).sum())
    r2 = 1.0 - float((resid ** 2).sum()) / total if total > 0 else 0.0
    return {"slope": float(slope), "r2": r2, "n": int(len(x))}


def droop_inputs(system: Any, meas: Any, links: np.ndarray | None) -> tuple[np.ndarray, np.ndarray]:
    """own [E, N]: n_Q,i·Q_i (V), NaN where the sensor has failed; heard [E, N]: for a failed DG the mean
    n_Q,j·Q_j of its working neighbours heard this step (NaN when none), NaN for a working DG."""
    from simsvc.gap import NeighbourRule

    n = system.n_dg
    rule = NeighbourRule(system, np.ones(n), np.zeros(n))
    own = rule.n_q * meas.q_var
    failed = np.isnan(own)
    heard = rule.droop_term_v(meas, links)
    return own, np.where(failed, heard, np.nan)


def policy_feedback(run: str | Path, seeds: list[int], scenario: str | None = None,
                    checkpoint: str = "latest") -> dict[str, Any]:
    """The two fits of the module docstring for the run's greedy policy on `seeds` (its own scenario unless
    `scenario` names another), with the mean return of those episodes."""
    from actor.envs import on_scenario
    from launch.evaluate import evaluation_env, load_policy, run_episode
    from simsvc.systems import setpoint_choices

    cfg, model = load_policy(Path(run), checkpoint)
    env_cfg = cfg.env if scenario is None else on_scenario(cfg.env, scenario)
    env = evaluation_env(env_cfg)
    system = env.system
    choices = setpoint_choices(system)
    own_x, own_y, heard_x, heard_y = [], [], [], []

    def record(env: Any, actions: np.ndarray) -> None:
        """One step's fit points: what each DG's set-point responded to, and the set-point."""
        own, heard = droop_inputs(system, env.measured(), env.links)
        offset = choices[actions[0]] - system.v_nom_v
        working = np.isfinite(own[0])
        own_x.append(own[0][working])
        own_y.append(offset[working])
        heard_x.append(heard[0][~working])
        heard_y.append(offset[~working])

    returns = [run_episode(env, model, seed, on_step=record)["rewards"].astype(np.float64).sum() for seed in seeds]
    cat = np.concatenate
    return {"run": str(run), "algorithm": cfg.model.algorithm, "scenario": env_cfg.scenario,
            "mean_return": float(np.mean(returns)), "own": line_fit(cat(own_x), cat(own_y)),
            "heard": line_fit(cat(heard_x), cat(heard_y)), "setpoint_std_v": float(np.std(cat(own_y + heard_y)))}
