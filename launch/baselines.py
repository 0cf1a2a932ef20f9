"""The conventional controllers (droop, secondary, random) of a study, run on the same evaluation seeds as
the learned policies, so that the report's table has their rows: baselines/<system>/<controller>/."""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from launch.eval_protocol import write_eval_summary
from launch.jsonfile import read_json
from launch.study_spec import Study


def run_baselines(study: Study, out: Path, say: Callable[[str], None]) -> None:
    """The conventional controllers on the evaluation seeds, once per system (skipped when current)."""
    seeds = study.eval_seeds
    for system_name in study.systems:
        for controller in study.controllers:
            target = out / "baselines" / system_name / controller
            existing = read_json(target / "summary.json")
            if existing is not None and existing.get("seeds") == seeds:
                continue
            t0 = time.monotonic()
            rows = baseline_episodes(system_name, controller, seeds, target)
            summary = write_eval_summary(target / "summary.json", {"controller": controller, "system": system_name},
                                         rows, {"wall_s": round(time.monotonic() - t0, 2)})
            say(f"baseline {controller} on {system_name}: mean return {summary['mean_return']:.3f}, "
                f"violation share {summary['violation_rate']:.3f}")


def baseline_episodes(system_name: str, controller: str, seeds: Sequence[int], out: Path) -> list[dict[str, Any]]:
    """Run a conventional controller on each seed (loads fixed within an episode, as the greedy evaluation);
    write episode-<seed>.npz (v_pu, rewards: [T, N]) and return the per-episode metrics."""
    import numpy as np

    from simsvc.episodes import run_episode
    from simsvc.systems import load_system

    system = load_system(system_name)
    out.mkdir(parents=True, exist_ok=True)
    rows = []
    for seed in seeds:
        result = run_episode(system, controller, seed, disturbance="episode")
        np.savez_compressed(out / f"episode-{seed}.npz", seed=seed, v_pu=result.v_pu, rewards=result.rewards)
        rows.append({"seed": seed, **result.summary})
    return rows
