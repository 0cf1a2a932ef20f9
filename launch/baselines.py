"""The conventional controllers (droop, secondary, random) of a study, run on the same evaluation seeds as
the learned policies, so that the report's table has their rows: baselines/<system>/<controller>/. They run on
the scenario the study's `set` names (`env.scenario=...`; classic when none), as the runs are evaluated."""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from launch.eval_protocol import write_eval_summary
from launch.jsonfile import read_json
from launch.study_spec import Study


def study_scenario(study: Study) -> str:
    """The scenario the study's common `set` selects (the last `env.scenario=...`), else classic."""
    from common.config import parse_override

    scenario = "classic"
    for text in study.common_set:
        section, key, value = parse_override(text)
        if (section, key) == ("env", "scenario"):
            scenario = str(value)
    return scenario


def run_baselines(study: Study, out: Path, say: Callable[[str], None]) -> None:
    """The conventional controllers on the evaluation seeds, once per system (skipped when current)."""
    seeds = study.eval_seeds
    scenario = study_scenario(study)
    for system_name in study.systems:
        for controller in study.controllers:
            target = out / "baselines" / system_name / controller
            existing = read_json(target / "summary.json")
            if (existing is not None and existing.get("seeds") == seeds
                    and existing.get("scenario", "classic") == scenario):
                continue
            t0 = time.monotonic()
            rows = baseline_episodes(system_name, controller, seeds, target, scenario)
            head = {"controller": controller, "system": system_name}
            if scenario != "classic":
                head["scenario"] = scenario
            summary = write_eval_summary(target / "summary.json", head, rows,
                                         {"wall_s": round(time.monotonic() - t0, 2)})
            say(f"baseline {controller} on {system_name}: mean return {summary['mean_return']:.3f}, "
                f"violation share {summary['violation_rate']:.3f}")


def baseline_episodes(system_name: str, controller: str, seeds: Sequence[int], out: Path,
                      scenario: str = "classic") -> list[dict[str, Any]]:
    """Run a conventional controller on each seed (under the scenario's evaluation disturbance, as the greedy
    evaluation: classic keeps loads fixed within an episode); write episode-<seed>.npz (v_pu, rewards: [T, N])
    and return the per-episode metrics."""
    import numpy as np

    from simsvc.episodes import run_episode
    from simsvc.scenarios import load_scenario
    from simsvc.systems import load_system

    system = load_system(system_name)
    sc = load_scenario(scenario)
    out.mkdir(parents=True, exist_ok=True)
    rows = []
    for seed in seeds:
        result = run_episode(system, controller, seed, disturbance=sc.evaluation_disturbance(), scenario=sc)
        np.savez_compressed(out / f"episode-{seed}.npz", seed=seed, v_pu=result.v_pu, rewards=result.rewards)
        rows.append({"seed": seed, **result.summary})
    return rows
