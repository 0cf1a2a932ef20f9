"""The single-process reference trainer: short runs of every algorithm on microgrid-6, bit-identical resume,
the CLI's run directory and evaluation, and learning on the toy graph env (known optimum)."""

from __future__ import annotations

import csv
import json

import numpy as np
import pytest
import torch
from checkpoint_helpers import assert_same_params
from click.testing import CliRunner
from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

from actor.envs import make_vec_env
from common.algorithms import ALGORITHMS
from common.config import load_config
from launch.cli import main
from launch.evaluate import evaluate_run
from launch.local_trainer import train_local
from learner.checkpoint import load_checkpoint

torch.set_num_threads(1)


def _rows(run):
    return list(csv.DictReader((run / "metrics.csv").open()))


@pytest.mark.parametrize("algorithm", ALGORITHMS)
def test_each_algorithm_trains_on_microgrid6_with_finite_losses(tmp_path, algorithm):
    cfg = load_config(f"configs/{algorithm}.toml", ["train.steps=80", "train.num_envs=2"])
    train_local(cfg, tmp_path)
    rows = _rows(tmp_path)
    assert len(rows) == 2
    for row in rows:
        for key in ("loss", "policy_loss", "value_loss", "entropy", "grad_norm"):
            assert np.isfinite(float(row[key])), (key, row)


def test_ppo_with_gae_and_linear_schedule_trains_with_finite_losses(tmp_path):
    cfg = load_config("configs/powernet.toml", ["train.steps=80", "train.num_envs=2", 'train.loss="ppo"',
                                                    "train.gae_lambda=0.95", 'train.lr_schedule="linear"',
                                                    'train.optimizer="adam"', 'train.loss_reduction="mean"'])
    train_local(cfg, tmp_path)
    rows = _rows(tmp_path)
    assert all(np.isfinite(float(r["loss"])) for r in rows)
    assert float(rows[1]["lr"]) == pytest.approx(5e-4 * 0.5)


def test_resume_gives_the_same_parameters_as_an_uninterrupted_run(tmp_path):
    overrides = ["train.num_envs=2", "train.checkpoint_every=1000"]
    full = load_config("configs/powernet.toml", overrides + ["train.steps=160"])
    train_local(full, tmp_path / "full")
    half = load_config("configs/powernet.toml", overrides + ["train.steps=80"])
    train_local(half, tmp_path / "split")
    train_local(full, tmp_path / "split", resume=True)
    full_ckpt, split_ckpt = (tmp_path / name / "checkpoints" / "latest.pt" for name in ("full", "split"))
    assert load_checkpoint(split_ckpt)["env_steps"] == 160
    assert_same_params(full_ckpt, split_ckpt, atol=0.0)
    assert len(_rows(tmp_path / "split")) == 4


def test_cli_train_then_evaluate_writes_the_run_directory(tmp_path):
    run = tmp_path / "run"
    runner = CliRunner()
    result = runner.invoke(main, ["train", "-c", "configs/ia2c.toml", "--mode", "local", "--steps", "40",
                                  "--out", str(run)])
    assert result.exit_code == 0, result.output
    assert load_config(run / "config.toml").train.steps == 40
    assert (run / "checkpoints" / "latest.pt").is_file() and (run / "logs" / "learner.log").is_file()
    assert len(_rows(run)) == 2
    events = EventAccumulator(str(run / "tb"))
    events.Reload()
    assert "losses/loss" in events.Tags()["scalars"] and "charts/reward_mean" in events.Tags()["scalars"]
    assert [e.step for e in events.Scalars("losses/loss")] == [int(r["env_steps"]) for r in _rows(run)]
    result = runner.invoke(main, ["evaluate", "--run", str(run), "--episodes", "2", "--seed", "2000"])
    assert result.exit_code == 0, result.output
    summary = json.loads((run / "eval" / "summary.json").read_text())
    for key in ("mean_return", "std_return", "violation_rate", "mean_settling_step", "max_dev_pu"):
        assert np.isfinite(summary[key])
    assert summary["episodes"] == 2 and summary["seeds"] == [2000, 2025]
    trace = np.load(run / "eval" / "episode-2025.npz")
    assert trace["v_pu"].shape == (20, 6)
    again = runner.invoke(main, ["train", "-c", "configs/ia2c.toml", "--steps", "40", "--out", str(run)])
    assert again.exit_code == 2 and "--resume" in again.stderr


def _random_policy_step_return(seeds):
    cfg = load_config(None, ['env.system="toy-graph"'])
    env = make_vec_env(cfg.env, 1, disturbance="episode")
    rng = np.random.default_rng(0)
    total = 0.0
    for seed in seeds:
        env.reset(seed)
        for _ in range(env.episode_steps):
            _, rewards, _, _ = env.step(rng.integers(0, env.n_actions, (1, env.n_agents)))
            total += rewards.sum()
    return total / (len(seeds) * env.episode_steps * env.n_agents)


def _toy_learning_per_step(run, algorithm, steps):
    """Train on the toy graph env and return the greedy policy's mean reward per agent-step."""
    cfg = load_config(None, ['env.system="toy-graph"', 'env.disturbance="episode"', f"train.steps={steps}",
                             "train.num_envs=8", "train.gamma=0.5", "train.spatial_discount=0.5",
                             "train.reward_norm=20.0", "train.lr=1e-3", 'train.optimizer="adam"',
                             f'model.algorithm="{algorithm}"', "train.seed=3"])
    train_local(cfg, run)
    summary = evaluate_run(run, episodes=10, seed=2000)
    return summary["mean_return"] / (20 * 6), summary


LEARNED_PER_STEP = -0.8  # what a working learner must beat on the toy graph


@pytest.mark.parametrize("algorithm, steps", [("ia2c", 40_000), ("powernet", 60_000)])
def test_learning_beats_random_policy_on_toy_graph(tmp_path, algorithm, steps):
    # Toy optimum ~ +0.6 per agent-step; uniform random ~ -3.4; the best policy that ignores its
    # observation (a constant middle set-point) ~ -1.5. A broken gradient cannot get past that.
    per_step, summary = _toy_learning_per_step(tmp_path, algorithm, steps)
    random_per_step = _random_policy_step_return(summary["seeds"])
    assert random_per_step < -3.0
    assert per_step > LEARNED_PER_STEP, per_step
    assert per_step - random_per_step > 2.4


def test_broken_policy_gradient_cannot_pass_the_learning_bar(tmp_path, monkeypatch):
    # Negative control for the test above: the same IA2C run with every advantage zeroed (no policy
    # gradient; the critic and the entropy term still train) must stay below the bar, so the bar measures
    # the policy gradient and not, say, the critic or the initialisation.
    import learner.update as learner_update

    prepare = learner_update.prepare

    def no_advantage(*args, **kwargs):
        batch = prepare(*args, **kwargs)
        return batch._replace(advantages=torch.zeros_like(batch.advantages))

    monkeypatch.setattr(learner_update, "prepare", no_advantage)
    per_step, _ = _toy_learning_per_step(tmp_path, "ia2c", 40_000)
    assert per_step < LEARNED_PER_STEP - 1.0, per_step
