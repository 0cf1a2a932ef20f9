"""The information gap of a scenario (docs/scenarios.md#the-information-gap): how much of the way from droop
control to a centralised look-ahead the best controllers that read only their own DG's measurement cover, and
how much of what is left a simple rule that reads its neighbours' messages wins back.

Every controller here runs whole episodes of a scenario in one batch of environments (one env per episode
seed, or per seed and candidate while fitting), deciding from what the DGs measured (`measured()`: with the
scenario's noise and delay), scored with the scenario's own reward. The fitted rules are fitted on training
seeds far below the evaluation seeds.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

import numpy as np

from simsvc.controllers import (
    FixedSetpoints,
    OneStepOracle,
    controller_setpoints,
    heard_from_neighbours,
    make_controller,
)
from simsvc.env import VecMicrogridEnv
from simsvc.links import received_adjacency
from simsvc.lookahead import coordinate_search
from simsvc.metrics import episode_summary
from simsvc.reward import DIVERGED_REWARD
from simsvc.scenario_effects import apply_load_factors, scenario_rewards
from simsvc.scenarios import Scenario
from simsvc.systems import DG_COL, System, nearest_action, setpoint_choices

GAP_CONTROLLERS = ("droop", "secondary", "local", "per-dg-fit", "local-fit", "neighbour-fit", "oracle")
LOCAL_CONTROLLERS = ("local", "per-dg-fit", "local-fit")  # what a DG can run on its own measurement alone
LOCAL_OFFSETS_V = np.arange(-15.0, 15.01, 2.5)   # the fitted local rule's offset grid o_i (V)
LOCAL_GAINS = np.array([0.5, 0.75, 1.0, 1.25, 1.5])  # ... and its gain grid g_i
# with sensor faults: gain 0 (a constant set-point) and offsets over the whole set-point range as well
FAULT_OFFSETS_V = np.arange(-15.0, 55.01, 2.5)
FAULT_GAINS = np.array([0.0, 0.25, 0.5, 0.75, 1.0, 1.25, 1.5])
FIT_SWEEPS = 2
Controller = Any  # anything with setpoints(meas, vn_v [E, N]) -> [E, N]


class LocalRule:
    """The fitted local rule: V_n,i = V_nom + g_i·n_Q,i·Q_i + o_i from the DG's own measured Q, snapped to the
    agents' set-points. g = 1, o = 0 is the `local` rule. `gain` and `offset_v` are [N] or [E, N] (one
    candidate per env while fitting). A DG whose sensor has failed (its Q reads NaN) cannot run the rule: it
    holds `fallback_v` ([N] or [E, N], fitted where the scenario has sensor faults), or, without one, its
    current set-point, as the `local` rule does."""

    def __init__(self, system: System, gain: np.ndarray, offset_v: np.ndarray, fallback_v: np.ndarray | None = None):
        self.system, self.gain, self.offset_v = system, np.asarray(gain, float), np.asarray(offset_v, float)
        self.fallback_v = None if fallback_v is None else np.asarray(fallback_v, float)
        self.n_q = system.dg_params[:, DG_COL["n_q"]]
        self.choices = setpoint_choices(system)

    def setpoints(self, meas: Any, vn_v: np.ndarray, links: np.ndarray | None = None) -> np.ndarray:
        wanted = self.system.v_nom_v + self.gain * self.droop_term_v(meas, links) + self.offset_v
        failed = np.isnan(wanted)
        if failed.any():
            held = vn_v if self.fallback_v is None else np.broadcast_to(self.fallback_v, vn_v.shape)
            wanted = np.where(failed, held, wanted)
        return self.choices[nearest_action(self.system, wanted)]

    def droop_term_v(self, meas: Any, links: np.ndarray | None) -> np.ndarray:
        """n_Q,i·Q_i (V) [E, N] from each DG's own measured Q; NaN where its sensor has failed."""
        return self.n_q * meas.q_var


class NeighbourRule(LocalRule):
    """The fitted local rule, except that a DG whose sensor has failed runs it on what its neighbours send:
    in place of its own n_Q,i·Q_i it takes the mean of n_Q,j·Q_j (V) over its neighbours j whose sensors work
    and whose message arrived this step (`links`, under message loss). With reactive power shared in proportion
    to the ratings n_Q·Q is the same at every DG, so a neighbour's droop term is a failed DG's best guess at its
    own. With no such neighbour heard it holds `fallback_v`. A DG whose sensor works reads only its own Q, as in
    LocalRule. One number per neighbour and step: the simplest use of a message, and a floor for what the
    learned communicating methods should reach (docs/scenarios.md#a-rule-that-reads-its-neighbours)."""

    reads_links = True  # `controller_setpoints` hands it the environment's link mask

    def droop_term_v(self, meas: Any, links: np.ndarray | None) -> np.ndarray:
        graph = self.system.agent_adjacency
        adj = None if links is None else received_adjacency(graph, links)
        return heard_from_neighbours(self.n_q * meas.q_var, graph, np.nan, adj)


class MeasuredStateOracle(OneStepOracle):
    """The oracle look-ahead of `simsvc.controllers.OneStepOracle` (each DG's ten set-points in turn, two
    sweeps, one control step ahead on copies of the true state), scored with the scenario's reward, and
    without foresight: the copies carry the loads in force when the DGs last measured, not a walk or load
    step taken since (which no DG and no neighbour could know yet). With loads fixed it is the oracle."""

    def __init__(self, env: VecMicrogridEnv):
        super().__init__(env.system, env.grid)
        self.env = env
        self.control_steps = env.grid.steps_for(env.control_dt_s)

    def setpoints(self, meas: Any, vn_v: np.ndarray) -> np.ndarray:
        env = self.env
        out = np.empty_like(vn_v)
        for e in range(self.grid.n_envs):
            def score(candidates: np.ndarray, e: int = e) -> np.ndarray:
                copies = self.grid.replicate(np.full(len(candidates), e))
                loads = np.repeat(env.measured_load_factors[e][None], len(candidates), axis=0)
                apply_load_factors(copies, loads)
                copies.vn_v[:] = self.choices[candidates]
                copies.advance(self.control_steps)
                rewards, _ = scenario_rewards(copies, copies.measure(), env.scenario, env._share_mix,
                                              env.loadbus_assign)
                rewards[~copies.ok] = DIVERGED_REWARD
                return np.where(np.isfinite(rewards), rewards, DIVERGED_REWARD).sum(axis=1)

            start = nearest_action(self.system, vn_v[e])
            actions, _, _ = coordinate_search(score, start, self.system.n_actions, 2)
            out[e] = self.choices[actions]
        return out


def batch_episodes(system: System, scenario: Scenario, seeds: Sequence[int],
                   make: Callable[[VecMicrogridEnv], Controller], disturbance: str | None = None,
                   trace_dt_s: float | None = None) -> dict[str, Any]:
    """One episode per seed, all in one batch, under the controller `make(env)` builds; per episode the
    voltages and rewards [T, N] (an episode that diverges ends there) and its return (and with `trace_dt_s`
    the env, whose `trace(k)` is episode k's fine trace)."""
    seeds = np.asarray(seeds, dtype=np.int64)
    env = VecMicrogridEnv(system, len(seeds), disturbance=disturbance or scenario.evaluation_disturbance(),
                          scenario=scenario, auto_reset=False, trace_dt_s=trace_dt_s)
    env.reset(0, episode_seeds=seeds)
    ctrl = make(env)
    alive = np.ones(len(seeds), dtype=np.bool_)
    vs, rs = [], []
    for _ in range(env.episode_steps):
        vn = controller_setpoints(ctrl, env.measured(), env.grid.vn_v.copy(), env.links)
        _, rewards, done, info = env.step_setpoints(vn)
        vs.append(np.where(alive[:, None], info["v_pu"], np.nan))
        rs.append(np.where(alive[:, None], rewards, 0.0))
        alive &= ~done
        env._finished[:] = False  # a diverged env stays put (and masked); the others go on
    v_pu, rewards = np.stack(vs, axis=1), np.stack(rs, axis=1)
    return {"v_pu": v_pu, "rewards": rewards, "returns": rewards.sum(axis=(1, 2)), "env": env}


def trace_episode(system: System, scenario: Scenario, seed: int, name: str, fitted: dict[str, Any],
                  trace_dt_s: float = 0.01) -> dict[str, np.ndarray]:
    """The fine trace (t, v_pu, ... every trace_dt_s, warm-up included) of one episode under a gap controller."""
    result = batch_episodes(system, scenario, [seed], gap_controller(name, system, fitted), trace_dt_s=trace_dt_s)
    return result["env"].trace(0)


def _scorer(system: System, scenario: Scenario, seeds: Sequence[int],
            make: Callable[[np.ndarray], Controller]) -> Callable[[np.ndarray], np.ndarray]:
    """score(params [C, ...]) -> mean return over `seeds` of each candidate, all candidates in one batch."""
    n_seeds = len(seeds)

    def score(params: np.ndarray) -> np.ndarray:
        tiled = np.repeat(params, n_seeds, axis=0)
        result = batch_episodes(system, scenario, np.tile(seeds, len(params)), lambda env: make(tiled))
        return result["returns"].reshape(len(params), n_seeds).mean(axis=1)

    return score


def fit_per_dg(system: System, scenario: Scenario, seeds: Sequence[int], sweeps: int = FIT_SWEEPS) -> dict[str, Any]:
    """Per-DG constant set-points for the scenario: the best common set-point, then coordinate search per DG
    over the ten set-points (FIT_SWEEPS sweeps), by mean return on `seeds`."""
    choices = setpoint_choices(system)
    score = _scorer(system, scenario, seeds, lambda actions: FixedSetpoints(choices[actions]))
    uniform = np.repeat(np.arange(system.n_actions)[:, None], system.n_dg, axis=1)
    best = int(np.argmax(score(uniform)))
    actions, train_return, ran = coordinate_search(score, np.full(system.n_dg, best), system.n_actions, sweeps)
    return {"setpoints_v": [float(v) for v in choices[actions]], "train_return": train_return, "sweeps": ran}


def fit_local_rule(system: System, scenario: Scenario, seeds: Sequence[int], sweeps: int = FIT_SWEEPS,
                   fallback_start_v: Sequence[float] | None = None) -> dict[str, Any]:
    """The local rule's gain and offset per DG for the scenario, by coordinate search from the `local` rule
    (g = 1, o = 0): per DG, the offset over LOCAL_OFFSETS_V, then the gain over LOCAL_GAINS, FIT_SWEEPS sweeps,
    by mean return on `seeds`.

    With sensor faults the rule also has, per DG, the set-point it holds while its sensor is failed (over the
    agents' set-points, from `fallback_start_v`, the fitted per-DG constants, or V_nom), and a wider family
    (FAULT_GAINS, FAULT_OFFSETS_V: gain 0 makes a DG a constant, so the family holds the per-DG constants and
    every mix of constants and local rules); the search then also starts from the per-DG constants, and the
    better of the two fits on `seeds` is kept."""
    n = system.n_dg
    choices = setpoint_choices(system)
    faults = scenario.fault_count(n) > 0
    start = np.full(n, system.v_nom_v) if fallback_start_v is None else np.asarray(fallback_start_v, float)
    fallback0 = choices[nearest_action(system, start)]
    offsets, gains = (FAULT_OFFSETS_V, FAULT_GAINS) if faults else (LOCAL_OFFSETS_V, LOCAL_GAINS)
    starts = [(np.ones(n), np.zeros(n))]
    if faults and fallback_start_v is not None:
        starts.append((np.zeros(n), fallback0 - system.v_nom_v))
    fits = [_search_local_rule(system, scenario, seeds, sweeps, g, o, fallback0.copy() if faults else None,
                               offsets, gains) for g, o in starts]
    return max(fits, key=lambda fit: fit["train_return"])


def fit_neighbour_rule(system: System, scenario: Scenario, seeds: Sequence[int], local_fit: dict[str, Any],
                       sweeps: int = FIT_SWEEPS) -> dict[str, Any]:
    """The neighbour rule's gain, offset and fallback per DG for a scenario with sensor faults: the same family
    and coordinate search as the fitted local rule's, started from the fitted local rule's parameters
    (`local_fit`), by mean return on `seeds`."""
    if scenario.fault_count(system.n_dg) == 0:
        raise ValueError(f"scenario {scenario.name} has no sensor faults: the neighbour rule is the local rule")
    start = [np.asarray(local_fit[k], dtype=np.float64).copy() for k in ("gain", "offset_v", "fallback_v")]
    return _search_local_rule(system, scenario, seeds, sweeps, *start, FAULT_OFFSETS_V, FAULT_GAINS,
                              rule=NeighbourRule)


def _search_local_rule(system: System, scenario: Scenario, seeds: Sequence[int], sweeps: int, gain: np.ndarray,
                       offset: np.ndarray, fallback: np.ndarray | None, offsets: np.ndarray, gains: np.ndarray,
                       rule: type[LocalRule] = LocalRule) -> dict[str, Any]:
    """Coordinate search of fit_local_rule (or, with `rule`, fit_neighbour_rule) from one start (gain, offset
    and, with faults, fallback [N])."""
    choices = setpoint_choices(system)
    parts = [("offset", offsets, offset), ("gain", gains, gain)]
    if fallback is not None:
        parts.append(("fallback", choices, fallback))
    held = np.zeros(system.n_dg) if fallback is None else fallback

    def candidates_score(i: int, values: np.ndarray, which: str) -> np.ndarray:
        g, o, f = (np.repeat(x[None], len(values), axis=0) for x in (gain, offset, held))
        {"gain": g, "offset": o, "fallback": f}[which][:, i] = values
        params = np.stack([g, o, f], axis=1)  # [C, 3, N]
        return _scorer(system, scenario, seeds,
                       lambda p: rule(system, p[:, 0], p[:, 1], None if fallback is None else p[:, 2]))(params)

    best = -np.inf
    for _ in range(sweeps):
        changed = False
        for i in range(system.n_dg):
            for which, grid, target in parts:
                scores = candidates_score(i, grid, which)
                current = int(np.argmin(np.abs(grid - target[i])))
                pick = int(np.argmax(scores))
                if scores[pick] > scores[current] + 1e-12:
                    target[i], changed = grid[pick], True
                best = float(scores[pick]) if scores[pick] > scores[current] + 1e-12 else float(scores[current])
        if not changed:
            break
    out = {"gain": gain.tolist(), "offset_v": offset.tolist(), "train_return": best}
    if fallback is not None:
        out["fallback_v"] = fallback.tolist()
    return out


def gap_controller(name: str, system: System, fitted: dict[str, Any]) -> Callable[[VecMicrogridEnv], Controller]:
    """make(env) for a controller of the gap table (GAP_CONTROLLERS); `fitted` holds the fitted rules."""
    if name == "per-dg-fit":
        return lambda env: FixedSetpoints(np.asarray(fitted["per-dg-fit"]["setpoints_v"]))
    if name in ("local-fit", "neighbour-fit"):
        rule, kind = fitted[name], LocalRule if name == "local-fit" else NeighbourRule
        fallback = np.asarray(rule["fallback_v"]) if "fallback_v" in rule else None
        return lambda env: kind(system, np.asarray(rule["gain"]), np.asarray(rule["offset_v"]), fallback)
    if name == "oracle":
        return MeasuredStateOracle
    return lambda env: make_controller(name, system, 0, grid=env.grid, scenario=env.scenario)


def strongest_baseline(rows: dict[str, Any]) -> str:
    """The name of the controller with the highest mean return among a gap result's controllers, the oracle
    (which reads the true state) and droop (the reference) left out."""
    return max((n for n in rows if n not in ("oracle", "droop")), key=lambda n: rows[n]["mean_return"])


def information_gap(returns: dict[str, float]) -> dict[str, Any]:
    """From mean returns: the droop-to-oracle range, the best local controller (LOCAL_CONTROLLERS) and the
    gap = (oracle − best local) / (oracle − droop); with a `neighbour-fit` row also the share of that gap the
    neighbour rule wins back, (neighbour rule − best local) / (oracle − best local)."""
    local = max(LOCAL_CONTROLLERS, key=lambda k: returns.get(k, -np.inf))
    span = returns["oracle"] - returns["droop"]
    out: dict[str, Any] = {"best_local": local, "range": span,
                           "gap": (returns["oracle"] - returns[local]) / span if span > 0 else None}
    left = returns["oracle"] - returns[local]
    if "neighbour-fit" in returns and left > 0:
        out["neighbour_share"] = (returns["neighbour-fit"] - returns[local]) / left
    return out


def measure_gap(system: System, scenario: Scenario, eval_seeds: Sequence[int], train_seeds: Sequence[int],
                controllers: Sequence[str] = GAP_CONTROLLERS, say: Callable[[str], None] = print,
                fit_sweeps: int = FIT_SWEEPS, reuse: dict[str, Any] | None = None) -> dict[str, Any]:
    """Fit the rules on `train_seeds`, run every controller on `eval_seeds`; returns per controller the mean
    return and metrics and per-episode traces, the fitted rules and the gap. The neighbour rule runs only where
    the scenario has sensor faults (elsewhere it is the local rule). `reuse`, an earlier result of the same
    system, scenario and seeds, lends its fitted rules and controller rows: only what it lacks is fitted and run."""
    import time

    fitted: dict[str, Any] = dict(reuse["fitted"]) if reuse else {}
    reused_rows: dict[str, Any] = dict(reuse["controllers"]) if reuse else {}
    faults = scenario.fault_count(system.n_dg) > 0
    controllers = [c for c in controllers if c != "neighbour-fit" or faults]
    if "per-dg-fit" in controllers and "per-dg-fit" not in fitted:
        t0 = time.monotonic()
        fitted["per-dg-fit"] = fit_per_dg(system, scenario, train_seeds, fit_sweeps)
        say(f"  per-dg-fit fitted in {time.monotonic() - t0:.0f} s: {fitted['per-dg-fit']['setpoints_v']}")
    if "local-fit" in controllers and "local-fit" not in fitted:
        t0 = time.monotonic()
        start = fitted["per-dg-fit"]["setpoints_v"] if "per-dg-fit" in fitted else None
        fitted["local-fit"] = fit_local_rule(system, scenario, train_seeds, fit_sweeps, start)
        say(f"  local-fit fitted in {time.monotonic() - t0:.0f} s: gain {fitted['local-fit']['gain']}, "
            f"offset {fitted['local-fit']['offset_v']} V")
    if "neighbour-fit" in controllers and "neighbour-fit" not in fitted:
        if "local-fit" not in fitted:
            raise ValueError("the neighbour rule is fitted from the fitted local rule: list local-fit too")
        t0 = time.monotonic()
        fitted["neighbour-fit"] = fit_neighbour_rule(system, scenario, train_seeds, fitted["local-fit"], fit_sweeps)
        say(f"  neighbour-fit fitted in {time.monotonic() - t0:.0f} s: gain {fitted['neighbour-fit']['gain']}, "
            f"offset {fitted['neighbour-fit']['offset_v']} V")
    rows: dict[str, Any] = {}
    for name in controllers:
        if name in reused_rows:
            rows[name] = reused_rows[name]
            say(f"  {name:13s} mean return {rows[name]['mean_return']:9.3f}  (reused)")
            continue
        t0 = time.monotonic()
        result = batch_episodes(system, scenario, eval_seeds, gap_controller(name, system, fitted))
        episodes = [episode_summary(result["v_pu"][k][np.isfinite(result["v_pu"][k]).all(axis=1)],
                                    result["rewards"][k][np.isfinite(result["v_pu"][k]).all(axis=1)])
                    for k in range(len(eval_seeds))]
        rows[name] = {"mean_return": float(result["returns"].mean()),
                      "violation_rate": float(np.mean([e["violation_rate"] for e in episodes])),
                      "max_dev_pu": float(np.max([e["max_dev_pu"] for e in episodes])),
                      "returns": [float(r) for r in result["returns"]], "wall_s": round(time.monotonic() - t0, 1),
                      "v_pu_first": result["v_pu"][0].tolist()}
        say(f"  {name:13s} mean return {rows[name]['mean_return']:9.3f}  ({rows[name]['wall_s']} s)")
    out: dict[str, Any] = {"controllers": rows, "fitted": fitted}
    if "oracle" in rows and "droop" in rows:
        out.update(information_gap({k: v["mean_return"] for k, v in rows.items()}))
    return out
