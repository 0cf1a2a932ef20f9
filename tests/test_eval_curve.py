"""Greedy evaluation during training: rows at the scheduled steps, equal to `powernet evaluate` on the same
weights, and no effect on what the run learns."""

from __future__ import annotations

import csv

import pytest
import torch
from checkpoint_helpers import assert_same_params

from common.config import load_config
from launch.eval_curve import first_reaching
from launch.evaluate import evaluate_run
from launch.local_trainer import train_local

torch.set_num_threads(1)
BASE = ["train.steps=120", "train.num_envs=2", "train.checkpoint_every=1000"]  # 40 env steps per update


def test_evaluation_during_training_changes_nothing_and_matches_powernet_evaluate(tmp_path):
    plain = load_config("configs/ia2c.toml", BASE)
    train_local(plain, tmp_path / "plain")
    evaluated = load_config("configs/ia2c.toml", BASE + ["train.eval_every=80", "train.eval_episodes=2"])
    train_local(evaluated, tmp_path / "eval")
    assert_same_params(tmp_path / "plain" / "checkpoints" / "latest.pt",
                       tmp_path / "eval" / "checkpoints" / "latest.pt", atol=0.0)
    assert not (tmp_path / "plain" / "eval_curve.csv").exists()
    rows = list(csv.DictReader((tmp_path / "eval" / "eval_curve.csv").open()))
    assert [int(r["env_steps"]) for r in rows] == [80, 120]  # the schedule, then the end of the run
    assert all(float(r["train_wall_s"]) > 0 and float(r["eval_s"]) > 0 for r in rows)
    final = evaluate_run(tmp_path / "eval", episodes=2, seed=2000)
    assert float(rows[-1]["eval_return"]) == pytest.approx(final["mean_return"], abs=1e-5)
    assert float(rows[-1]["eval_return_min"]) <= float(rows[-1]["eval_return"])


def test_first_reaching_finds_the_first_row_at_or_above_the_threshold(tmp_path):
    path = tmp_path / "eval_curve.csv"
    path.write_text("env_steps,update,train_wall_s,eval_return,eval_return_min,violation_rate,max_dev_pu,eval_s\n"
                    "100,1,2.0,5.1,5.0,0,0.01,0.1\n200,2,4.0,5.6,5.5,0,0.01,0.1\n300,3,6.0,5.5,5.4,0,0.01,0.1\n")
    assert first_reaching(path, 5.6)["env_steps"] == 200 and first_reaching(path, 5.6)["train_wall_s"] == 4.0
    assert first_reaching(path, 5.7) is None


def test_a_resumed_run_continues_the_curve_and_its_clock(tmp_path):
    # the split run stops at 80 env steps (checkpoint); a row the lost process wrote after it (at 120) is
    # dropped, training repeats it exactly, and the training clock carries on from the checkpoint
    curve = BASE[1:] + ["train.eval_every=40", "train.eval_episodes=2"]
    split, full = tmp_path / "split", tmp_path / "full"
    train_local(load_config("configs/ia2c.toml", curve + ["train.steps=80"]), split)
    with (split / "eval_curve.csv").open("a") as fh:
        fh.write("120,3,999.0,-99.0,-99.0,0,0.01,0.1\n")
    cfg = load_config("configs/ia2c.toml", curve + ["train.steps=160"])
    train_local(cfg, split, resume=True)
    train_local(cfg, full)
    resumed = list(csv.DictReader((split / "eval_curve.csv").open()))
    straight = list(csv.DictReader((full / "eval_curve.csv").open()))
    assert [(r["env_steps"], r["eval_return"]) for r in resumed] == \
        [(r["env_steps"], r["eval_return"]) for r in straight] and len(resumed) == 4
    clock = [float(r["train_wall_s"]) for r in resumed]
    assert clock == sorted(set(clock))  # strictly increasing across the resume
    metrics = [float(r["wall_s"]) for r in csv.DictReader((split / "metrics.csv").open())]
    assert metrics == sorted(metrics)
