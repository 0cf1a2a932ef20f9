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

Where a policy does not follow, the probes say at which stage the droop term is lost: a ridge regression
(`probe_r2`) fitted on the even-numbered episodes and scored (R²) on the odd ones, of what varies from
episode to episode: the target minus its mean over the fitting episodes at the same DG and control step (a
recurrent state that only counts steps predicts a load pattern every episode shares; that is not knowing this
episode's load). The probes go from
- a working DG's own LSTM state h_t to its own droop term (it can read its own Q),
- a failed DG's own h_t to its heard droop term (the information reached the agent),
- the mean h_{t-1} of the working neighbours it heard, the state every message of step t is computed from, to
  the same target (the neighbours know the load; with IA2C, whose agents read no message, this says what
  messages could carry).
A high neighbour R² with a low own R² means messages could carry the load but the agent does not take it in;
a high own R² with a flat slope means the agent knows it but does not act on it.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

PROBES = ("working_own_h", "failed_own_h", "failed_neighbour_h")  # the three probes of the module docstring


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


def probe_r2(x: np.ndarray, y: np.ndarray, train: np.ndarray, cell: np.ndarray, ridge: float = 0.1
             ) -> dict[str, float | int | None]:
    """R² on the held-out rows (~train) of a ridge regression of y [M] on x [M, F] fitted on the `train` rows
    (features centred on them, not rescaled: a unit that barely varies, like a saturated LSTM output, gets no
    weight instead of being blown up to unit scale; penalty `ridge` times the mean diagonal of the fitting rows'
    Gram matrix, so a few hundred rows do not overfit 64 features), after y has had its mean over the `train`
    rows of the same `cell` [M] (DG and control step) taken away; rows of cells without a training row are left
    out. None where either part has fewer than 10 rows."""
    ok = np.isfinite(y) & np.isfinite(x).all(axis=1)
    cells, index = np.unique(cell, return_inverse=True)
    counts = np.bincount(index, weights=(ok & train).astype(float), minlength=len(cells))
    sums = np.bincount(index, weights=np.where(ok & train, y, 0.0), minlength=len(cells))
    ok &= counts[index] > 0
    y = np.where(ok, y - sums[index] / np.maximum(counts[index], 1.0), np.nan)
    fit, test = ok & train, ok & ~train
    if fit.sum() < 10 or test.sum() < 10:
        return {"r2": None, "n_fit": int(fit.sum()), "n_test": int(test.sum())}
    design = np.hstack([x - x[fit].mean(axis=0), np.ones((len(x), 1))])
    a = design[fit]
    gram = a.T @ a
    scale = max(float(np.trace(gram[:-1, :-1])) / max(a.shape[1] - 1, 1), 1e-12)  # > 0 when nothing varies
    penalty = ridge * scale * np.eye(a.shape[1])
    penalty[-1, -1] = 0.0  # the intercept is not shrunk
    coef = np.linalg.solve(gram + penalty, a.T @ y[fit])
    resid = y[test] - design[test] @ coef
    total = float(((y[test] - y[test].mean()) ** 2).sum())
    r2 = 1.0 - float((resid ** 2).sum()) / total if total > 0 else 0.0
    return {"r2": r2, "n_fit": int(fit.sum()), "n_test": int(test.sum())}


def heard_hidden(h_prev: np.ndarray, failed: np.ndarray, graph: np.ndarray, links: np.ndarray | None) -> np.ndarray:
    """[N, H]: for each failed DG the mean previous LSTM state of its working neighbours heard this step (NaN
    where none, and for working DGs): the neighbours and the mean the neighbour rule reads. h_prev [N, H],
    failed [N] bool, links [1, N, D] or None."""
    from simsvc.controllers import heard_from_neighbours
    from simsvc.links import received_adjacency

    x = np.where(failed[None, :], np.nan, h_prev.T)  # [H, N]: each hidden unit read like a sensor, per DG
    adj = None if links is None else np.broadcast_to(received_adjacency(graph, links)[0], (x.shape[0], *graph.shape))
    return np.where(failed[None, :], heard_from_neighbours(x, graph, np.nan, adj), np.nan).T


def policy_feedback(run: str | Path, seeds: list[int], scenario: str | None = None,
                    checkpoint: str = "latest") -> dict[str, Any]:
    """The two fits and the three probes of the module docstring for the run's greedy policy on `seeds` (its own
    scenario unless `scenario` names another), with the mean return of those episodes."""
    from actor.envs import on_scenario
    from launch.evaluate import evaluation_env, load_policy, run_episode
    from simsvc.systems import setpoint_choices

    cfg, model = load_policy(Path(run), checkpoint)
    env_cfg = cfg.env if scenario is None else on_scenario(cfg.env, scenario)
    env = evaluation_env(env_cfg)
    system = env.system
    choices = setpoint_choices(system)
    graph = system.agent_adjacency
    own_x, own_y, heard_x, heard_y = [], [], [], []
    probe_rows: dict[str, list[tuple[np.ndarray, ...]]] = {k: [] for k in PROBES}
    episode = {"index": -1, "step": 0, "h_prev": None}

    def record(env: Any, actions: np.ndarray, state: Any) -> None:
        """One step's fit points (what each DG's set-point responded to, and the set-point) and probe rows."""
        own, heard = droop_inputs(system, env.measured(), env.links)
        offset = choices[actions[0]] - system.v_nom_v
        working = np.isfinite(own[0])
        own_x.append(own[0][working])
        own_y.append(offset[working])
        heard_x.append(heard[0][~working])
        heard_y.append(offset[~working])
        h = state.h[0].numpy().astype(np.float64)  # [N, H], the state this step's action came from
        h_prev = np.zeros_like(h) if episode["h_prev"] is None else episode["h_prev"]
        even = np.full(system.n_dg, episode["index"] % 2 == 0)
        cell = episode["step"] * system.n_dg + np.arange(system.n_dg)
        nbr = heard_hidden(h_prev, ~working, graph, env.links)
        for name, x, y, rows in (("working_own_h", h, own[0], working), ("failed_own_h", h, heard[0], ~working),
                                 ("failed_neighbour_h", nbr, heard[0], ~working)):
            probe_rows[name].append((x[rows], y[rows], even[rows], cell[rows]))
        episode.update(step=episode["step"] + 1, h_prev=h)

    returns = []
    for seed in seeds:
        episode.update(index=episode["index"] + 1, step=0, h_prev=None)
        returns.append(run_episode(env, model, seed, on_step=record)["rewards"].astype(np.float64).sum())
    probes = {}
    for name, rows in probe_rows.items():
        x, y, train, cell = (np.concatenate(part) for part in zip(*rows, strict=True))
        probes[name] = probe_r2(x, y, train, cell)
    cat = np.concatenate
    return {"run": str(run), "algorithm": cfg.model.algorithm, "scenario": env_cfg.scenario,
            "mean_return": float(np.mean(returns)), "own": line_fit(cat(own_x), cat(own_y)),
            "heard": line_fit(cat(heard_x), cat(heard_y)), "setpoint_std_v": float(np.std(cat(own_y + heard_y))),
            "probe_r2": probes}
