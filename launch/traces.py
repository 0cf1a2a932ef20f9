"""Voltage traces of a scenario under the best learned policy, the strongest baseline and droop (`powernet
traces`). The baselines are rebuilt from a `powernet gap` JSON file (simsvc.gap); the learned policies are the
greedy policies of trained runs, evaluated as `powernet evaluate --scenario` evaluates them."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np

from common.errors import InputError

GAP_KEYS = ("system", "scenario", "controllers", "fitted")


def read_gap_file(path: str | Path) -> dict[str, Any]:
    """A `powernet gap` result (SHORT-SCENARIO.json), checked for what the traces need: the system, the scenario,
    every controller's mean return and the fitted rules."""
    path = Path(path)
    if not path.is_file():
        raise InputError(f"gap file not found: {path}")
    try:
        result = json.loads(path.read_text())
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise InputError(f"{path}: not a JSON file ({exc})") from exc
    if not isinstance(result, dict):
        raise InputError(f"{path}: expected a JSON object written by `powernet gap`")
    missing = [k for k in GAP_KEYS if k not in result]
    if missing:
        raise InputError(f"{path}: not a `powernet gap` result, missing {', '.join(missing)}")
    rows = result["controllers"]
    if (not isinstance(rows, dict) or "droop" not in rows
            or not all(isinstance(r, dict) and "mean_return" in r for r in rows.values())):
        raise InputError(f"{path}: controllers must hold droop and a mean_return for every controller")
    if not any(n not in ("oracle", "droop") for n in rows):
        raise InputError(f"{path}: no baseline besides droop and the oracle")
    return result


class LearnedPolicy:
    """A trained run's greedy policy (run/checkpoints/<checkpoint>.pt), checked to be for `system_name`."""

    def __init__(self, run: str | Path, checkpoint: str, system_name: str):
        from common.config import load_config
        from launch.evaluate import load_policy
        from simsvc.systems import load_system

        self.run = Path(run)
        if not (self.run / "config.toml").is_file():
            raise InputError(f"no config.toml in {self.run}: not a trained run directory")
        own = load_system(load_config(self.run / "config.toml").env.system).name
        if own != system_name:
            raise InputError(f"{self.run} was trained on {own}, the gap file is for {system_name}")
        self.cfg, self.model = load_policy(self.run, checkpoint)
        self.algorithm = self.cfg.model.algorithm
        self.trained_scenario = self.cfg.env.scenario

    def returns(self, scenario: str, seeds: list[int]) -> list[float]:
        """Greedy episode returns on `seeds` under `scenario`, exactly as `powernet evaluate --scenario`."""
        from actor.envs import on_scenario
        from launch.evaluate import evaluation_env, run_episode
        from simsvc.metrics import episode_summary

        env = evaluation_env(on_scenario(self.cfg.env, scenario))
        out = []
        for seed in seeds:
            trace = run_episode(env, self.model, seed)
            out.append(episode_summary(trace["v_pu"], trace["rewards"])["return"])
        return out

    def trace(self, scenario: str, seed: int, trace_dt_s: float = 0.01) -> tuple[dict[str, np.ndarray], float]:
        """The fine trace (every trace_dt_s, warm-up included) of the greedy episode on `seed`, and its return."""
        from actor.envs import make_vec_env, on_scenario
        from launch.evaluate import run_episode
        from simsvc.scenarios import load_scenario

        env = make_vec_env(on_scenario(self.cfg.env, scenario), 1,
                           disturbance=load_scenario(scenario).evaluation_disturbance(), trace_dt_s=trace_dt_s,
                           auto_reset=False)  # the episode's trace outlives its end
        episode = run_episode(env, self.model, seed)
        return env.trace(0), float(episode["rewards"].sum())


def controller_returns(gap_result: dict[str, Any], name: str, seeds: list[int]) -> list[float]:
    """Episode returns on `seeds` of the gap file's controller `name` (fitted rules as the file records them)."""
    from simsvc.gap import batch_episodes, gap_controller
    from simsvc.scenarios import load_scenario
    from simsvc.systems import load_system

    system = load_system(gap_result["system"])
    result = batch_episodes(system, load_scenario(gap_result["scenario"]), seeds,
                            gap_controller(name, system, gap_result["fitted"]))
    return [float(r) for r in result["returns"]]


def controller_trace(gap_result: dict[str, Any], name: str, seed: int) -> dict[str, np.ndarray]:
    """The fine trace of the gap file's controller `name` on `seed` (simsvc.gap.trace_episode)."""
    from simsvc.gap import trace_episode
    from simsvc.scenarios import load_scenario
    from simsvc.systems import load_system

    return trace_episode(load_system(gap_result["system"]), load_scenario(gap_result["scenario"]), seed, name,
                         gap_result["fitted"])


def draw_traces(path: Path, panels: list[tuple[str, dict[str, np.ndarray]]], title: str) -> None:
    """Panels side by side sharing the y axis, each (title, fine trace), written as a PNG at 100 dpi."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from launch.gap_cmd import voltage_panel

    fig, axes = plt.subplots(1, len(panels), figsize=(5.2 * len(panels), 3.9), sharey=True, squeeze=False)
    for ax, (name, trace) in zip(axes[0], panels, strict=True):
        voltage_panel(ax, trace, name)
    axes[0][0].set_ylabel("DG voltage (p.u.)")
    fig.suptitle(title, fontsize=10)
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)
