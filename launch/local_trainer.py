"""The single-process reference trainer (`powernet train --mode local`): one process steps the envs and
updates. It is the ground truth the distributed system must match, so it uses the same pieces: the actor's
RolloutCollector and the learner's pure `update`.

Run directory: config.toml (resolved), metrics.csv (a row per update), tb/ (the same metrics as TensorBoard
scalars, grouped charts/, losses/, system/), checkpoints/{latest,best}.pt, logs/learner.log.
"""

from __future__ import annotations

import platform
import subprocess
import time
from collections.abc import Callable
from importlib import metadata
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch.utils.tensorboard import SummaryWriter

from actor.envs import make_vec_env
from actor.groups import GroupedCollector, envs_per_group
from actor.rollout import RolloutCollector
from common import config as config_mod
from common.config import Config
from common.errors import InputError
from common.logs import setup_logging
from common.metrics_csv import open_metrics
from common.nets import build_model
from common.seeding import rng_state, seed_everything, set_rng_state
from common.tb import TB_GROUPS, log_scalars  # noqa: F401 (TB_GROUPS re-exported)
from learner.checkpoint import load_checkpoint, save_checkpoint
from learner.update import learning_rate, make_optimizer, set_learning_rate, update

METRIC_FIELDS = ("update", "env_steps", "wall_s", "lr", "reward_mean", "episode_return", "episodes",
                 "violation_rate", "diverged", "loss", "policy_loss", "value_loss", "entropy", "grad_norm",
                 "policy_lag")
# TensorBoard groups and the row writer live in common.tb, shared with the learner service.


def _provenance() -> str:
    """Git commit and package versions, written as comments above the resolved config."""
    try:
        commit = subprocess.run(["git", "rev-parse", "HEAD"], capture_output=True, text=True, timeout=5,
                                cwd=Path(__file__).resolve().parent).stdout.strip() or "unknown"
    except (OSError, subprocess.SubprocessError):
        commit = "unknown"
    versions = []
    for pkg in ("torch", "numpy", "numba"):
        try:
            versions.append(f"{pkg} {metadata.version(pkg)}")
        except metadata.PackageNotFoundError:
            pass
    return f"resolved by powernet train\ngit commit {commit}\npython {platform.python_version()}, " + \
        ", ".join(versions)


def _device(cfg: Config) -> torch.device:
    if cfg.train.device == "cuda" and not torch.cuda.is_available():
        raise InputError("config key train.device: cuda requested but torch sees no CUDA device")
    return torch.device(cfg.train.device)


def train_local(cfg: Config, out_dir: str | Path, resume: bool = False, echo: bool = False,
                progress: Callable[[dict[str, Any]], None] | None = None) -> dict[str, Any]:
    """Train until cfg.train.steps environment steps; return a small summary. With `resume`, continue from
    out_dir/checkpoints/latest.pt (bit-identical to an uninterrupted run when checkpoints fall on episode
    boundaries, as with the default n_steps = episode_steps)."""
    out = Path(out_dir)
    latest = out / "checkpoints" / "latest.pt"
    if latest.exists() and not resume:
        raise InputError(f"{out} already holds a run; pass --resume to continue it or choose another --out")
    if resume and not latest.exists():
        raise InputError(f"--resume: no checkpoint at {latest}")
    out.mkdir(parents=True, exist_ok=True)
    (out / "config.toml").write_text(config_mod.dumps(cfg, header=_provenance()))
    log = setup_logging(out / "logs" / "learner.log", "learner", echo=echo)
    tc = cfg.train

    sampler = seed_everything(tc.seed)
    device = _device(cfg)
    # train.env_groups > 1 splits the envs exactly as sync mode's actors own them (actor/groups.py)
    per_group = envs_per_group(tc.num_envs, tc.env_groups)
    # deferred auto-resets: the same data as immediate ones (the next collect runs the pending warm-ups first)
    envs = [make_vec_env(cfg.env, per_group, defer_reset=True) for _ in range(tc.env_groups)]
    env = envs[0]
    model = build_model(cfg.model, env.adjacency, env.obs_dim, env.n_actions).to(device)
    optimiser = make_optimizer(model, tc)
    collector = RolloutCollector(env, model, tc.n_steps, sampler) if len(envs) == 1 else \
        GroupedCollector(envs, model, tc.n_steps, tc.seed)
    updates, env_steps, best = 0, 0, -np.inf
    if resume:
        ckpt = load_checkpoint(latest)
        model.load_state_dict(ckpt["model"])
        optimiser.load_state_dict(ckpt["optimizer"])
        updates, env_steps, best = ckpt["updates"], ckpt["env_steps"], ckpt["best_return"]
        set_rng_state(ckpt["rng"], sampler)
        episodes = np.asarray(ckpt["episodes_done"])
        if not ckpt["at_episode_boundary"] or episodes.min() != episodes.max():
            log.warning("checkpoint was taken mid-episode: resumed envs start fresh episodes, so this run "
                        "will not repeat an uninterrupted one exactly")
        collector.reset(ckpt["seed_base"], episodes)
        log.info("resumed from %s at update %d, %d env steps", latest, updates, env_steps)
    else:
        collector.reset(tc.seed)
    log.info("config %s", cfg.to_dict())
    log.info("algorithm %s on %s: %d agents, %d envs, %d parameters, device %s", cfg.model.algorithm,
             cfg.env.system, env.n_agents, tc.num_envs, sum(p.numel() for p in model.parameters()), device)

    def checkpoint() -> None:
        nonlocal best
        payload = {"model": model.state_dict(), "optimizer": optimiser.state_dict(), "updates": updates,
                   "env_steps": env_steps, "rng": rng_state(sampler), "seed_base": collector.seed_base,
                   "episodes_done": collector.episodes_done.copy(),
                   "at_episode_boundary": collector.at_episode_boundary, "config": cfg.to_dict(),
                   "best_return": best, "recent_return": recent}
        save_checkpoint(latest, payload)
        if np.isfinite(recent) and recent > best:
            best = payload["best_return"] = recent
            save_checkpoint(out / "checkpoints" / "best.pt", payload)

    metrics_fh, writer = open_metrics(out / "metrics.csv", METRIC_FIELDS, updates if resume else None)
    tb = SummaryWriter(log_dir=str(out / "tb"))
    start = time.perf_counter()
    next_ckpt = (env_steps // tc.checkpoint_every + 1) * tc.checkpoint_every
    recent_returns: list[float] = []
    recent = float("nan")
    try:
        while env_steps < tc.steps:
            set_learning_rate(optimiser, learning_rate(tc, env_steps))
            model.eval()
            rollout, window = collector.collect(version=updates)
            model.train()
            stats = update(model, optimiser, rollout, tc)
            if not np.isfinite(stats["loss"]):
                raise FloatingPointError(f"non-finite loss at update {updates}: {stats}")
            updates += 1
            env_steps += window["env_steps"]
            returns = window["episode_returns"]
            recent_returns = (recent_returns + returns)[-100:]
            recent = float(np.mean(recent_returns)) if recent_returns else float("nan")
            row = {
                "update": updates, "env_steps": env_steps, "wall_s": round(time.perf_counter() - start, 4),
                "lr": stats["lr"], "reward_mean": window["reward_mean"],
                "episode_return": float(np.mean(returns)) if returns else "", "episodes": len(returns),
                "violation_rate": window["violation_rate"], "diverged": window["diverged"],
                "loss": stats["loss"], "policy_loss": stats["policy_loss"], "value_loss": stats["value_loss"],
                "entropy": stats["entropy"], "grad_norm": stats["grad_norm"], "policy_lag": 0}
            writer.writerow(row)
            log_scalars(tb, row, env_steps)
            if progress is not None:  # e.g. launch.progress.Progress.update
                progress(row)
            if updates % tc.log_every == 0:
                metrics_fh.flush()
                tb.flush()
                log.info("update %d  env steps %d  recent return %.3f  loss %.4f  entropy %.3f  %.0f steps/s",
                         updates, env_steps, recent, stats["loss"], stats["entropy"],
                         env_steps / max(time.perf_counter() - start, 1e-9))
            if env_steps >= next_ckpt:
                checkpoint()
                next_ckpt = (env_steps // tc.checkpoint_every + 1) * tc.checkpoint_every
        checkpoint()
    finally:
        metrics_fh.close()
        tb.close()
    log.info("finished: %d updates, %d env steps, recent return %.3f", updates, env_steps, recent)
    return {"updates": updates, "env_steps": env_steps, "recent_return": recent,
            "wall_s": time.perf_counter() - start}
