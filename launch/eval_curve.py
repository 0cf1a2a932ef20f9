"""Greedy evaluation during training (`train.eval_every`): the learning curve that the results compare, and
the time a recipe needs to reach a baseline's return (docs/evaluation.md#evaluation-during-training).

Every `train.eval_every` env steps the local trainer pauses, evaluates a CPU copy of the model greedily on
`train.eval_episodes` protocol seeds (as `powernet evaluate` does) and appends one row to eval_curve.csv.
Evaluation draws no random number of the run (greedy actions, its own env seeded per episode), so a run
trains the same parameters with or without it; its time is kept out of the training wall time.
"""

from __future__ import annotations

import copy
import csv
import time
from pathlib import Path
from typing import Any

import numpy as np
import torch

from common.config import Config
from common.nets import GraphActorCritic
from launch.eval_protocol import evaluation_seeds
from launch.evaluate import evaluation_env, run_episode
from simsvc.metrics import episode_summary

EVAL_CURVE_FIELDS = ("env_steps", "update", "train_wall_s", "eval_return", "eval_return_min",
                     "violation_rate", "max_dev_pu", "eval_s")


class EvalCurve:
    """Evaluates when training crosses the next multiple of train.eval_every; rows go to eval_curve.csv."""

    def __init__(self, cfg: Config, out_dir: str | Path, env_steps: int, resumed: bool = False) -> None:
        """`resumed`: the run continues from a checkpoint at `env_steps`; rows written after it (by the
        interrupted process) are dropped, as training repeats them, and the evaluation time of the rows kept
        stays out of the training clock, which the checkpoint carries on."""
        tc = cfg.train
        self.every, self.seeds = tc.eval_every, evaluation_seeds(tc.eval_seed, tc.eval_episodes)
        self.path = Path(out_dir) / "eval_curve.csv"
        self.env = evaluation_env(cfg.env) if self.every else None
        self.next = (env_steps // self.every + 1) * self.every if self.every else 0
        self.eval_time = 0.0  # seconds spent evaluating, kept out of the training wall time
        if resumed and self.path.exists():
            kept = [r for r in csv.DictReader(self.path.open()) if int(r["env_steps"]) <= env_steps]
            with self.path.open("w", newline="") as fh:
                writer = csv.DictWriter(fh, fieldnames=EVAL_CURVE_FIELDS)
                writer.writeheader()
                writer.writerows(kept)
            self.eval_time = sum(float(r["eval_s"]) for r in kept)

    def due(self, env_steps: int, final: bool = False) -> bool:
        """Whether an evaluation is due at env_steps (at the end of a run always, once per env_steps)."""
        if not self.every:
            return False
        return env_steps >= self.next or (final and env_steps > self._last_row_steps())

    def run(self, model: GraphActorCritic, env_steps: int, update: int, wall_s: float) -> dict[str, Any]:
        """Evaluate `model` now and append the row; wall_s is the trainer's clock (evaluation excluded)."""
        start = time.perf_counter()
        cpu = copy.deepcopy(model).to("cpu").eval() if next(model.parameters()).device.type != "cpu" else model
        summaries = []
        with torch.no_grad():
            for seed in self.seeds:
                trace = run_episode(self.env, cpu, seed)
                summaries.append(episode_summary(trace["v_pu"], trace["rewards"]))
        returns = np.array([s["return"] for s in summaries])
        took = time.perf_counter() - start
        row = {"env_steps": env_steps, "update": update, "train_wall_s": round(wall_s - self.eval_time, 3),
               "eval_return": round(float(returns.mean()), 6), "eval_return_min": round(float(returns.min()), 6),
               "violation_rate": round(float(np.mean([s["violation_rate"] for s in summaries])), 6),
               "max_dev_pu": round(float(np.mean([s["max_dev_pu"] for s in summaries])), 6),
               "eval_s": round(took, 3)}
        self.eval_time += took
        new = not self.path.exists()
        with self.path.open("a", newline="") as fh:
            writer = csv.DictWriter(fh, fieldnames=EVAL_CURVE_FIELDS)
            if new:
                writer.writeheader()
            writer.writerow(row)
        self.next = (env_steps // self.every + 1) * self.every
        return row

    def _last_row_steps(self) -> int:
        if not self.path.exists():
            return -1
        rows = list(csv.DictReader(self.path.open()))
        return int(rows[-1]["env_steps"]) if rows else -1


def first_reaching(path: str | Path, threshold: float) -> dict[str, float] | None:
    """The first row of an eval_curve.csv whose eval_return is at least `threshold` (None if none is)."""
    for row in csv.DictReader(Path(path).open()):
        if float(row["eval_return"]) >= threshold:
            return {k: float(v) for k, v in row.items()}
    return None
