"""The single-process trainer (`powernet train --mode local`): one process steps the envs and updates. It is
the ground truth the distributed system must match, so it uses the same pieces: the actors' collectors
(`actor.groups`, seeded per group as sync mode seeds its actors) and the learner's core (`learner.core`).

Run directory: config.toml (resolved), metrics.csv (a row per update), tb/ (the same metrics as TensorBoard
scalars), checkpoints/{latest,best}.pt, logs/learner.log, and eval_curve.csv with train.eval_every.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch

from actor.envs import agent_spec, make_vec_env
from common import config as config_mod
from common.config import Config
from common.errors import InputError
from common.logs import setup_logging
from common.nets import GraphActorCritic, build_model, weight_arrays
from common.seeding import seed_everything
from launch.eval_curve import EvalCurve
from launch.provenance import provenance_header
from learner.checkpoint import checkpoint_path
from learner.core import LearnerCore, read_checkpoint


def learner_device(cfg: Config) -> torch.device:
    """train.device, refused with one line when CUDA is asked for and torch sees none."""
    if cfg.train.device == "cuda" and not torch.cuda.is_available():
        raise InputError("config key train.device: cuda requested but torch sees no CUDA device")
    return torch.device(cfg.train.device)


def prepare_run(cfg: Config, out_dir: str | Path, resume: bool) -> tuple[Path, GraphActorCritic]:
    """What every trainer does first, in this order so that all build the same initial weights: refuse a
    fresh run over an old one (or a resume without a checkpoint), check the system, write config.toml, seed,
    build the model from the system's agent graph. Returns the checkpoint path and the model."""
    latest = checkpoint_path(out_dir, resume)
    spec = agent_spec(cfg.env)
    device = learner_device(cfg)
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    (out / "config.toml").write_text(config_mod.dumps(cfg, header=provenance_header()))
    seed_everything(cfg.train.seed)
    model = build_model(cfg.model, spec.adjacency, spec.obs_dim, spec.n_actions)
    model.window_kernel = cfg.train.unroll == "kernel"
    if cfg.train.init_from and not resume:  # a resume continues its own checkpoint, which already began there
        load_initial_weights(model, cfg)
    model = model.to(device)
    model.warm_window_kernel()
    return latest, model


def load_initial_weights(model: GraphActorCritic, cfg: Config) -> None:
    """Fine-tuning: put the weights of cfg.train.init_from into the fresh model (everything else, the optimiser,
    the counters and the schedules, starts as in a fresh run). The checkpoint must hold the same algorithm on a
    system of the same shape; anything else is one line naming what differs."""
    source = Path(cfg.train.init_from)
    if source.is_dir():
        source = source / "checkpoints" / "latest.pt"
    if not source.is_file():
        raise InputError(f"train.init_from: no checkpoint at {source}")
    ckpt = read_checkpoint(source)
    theirs = ckpt.get("config", {}).get("model", {}).get("algorithm")
    if theirs is not None and theirs != cfg.model.algorithm:
        raise InputError(f"train.init_from: {source} holds a {theirs} model; this run trains {cfg.model.algorithm}")
    ours = model.state_dict()
    state = ckpt["model"]
    wrong = sorted(k for k in ours.keys() | state.keys()
                   if k not in ours or k not in state or tuple(ours[k].shape) != tuple(state[k].shape))
    if wrong:
        system = ckpt.get("config", {}).get("env", {}).get("system", "?")
        raise InputError(f"train.init_from: {source} (trained on {system}) does not fit this run's model on "
                         f"{cfg.env.system}: {len(wrong)} tensors differ, first {wrong[0]!r}")
    model.load_state_dict(state)


def _evaluate(curve: EvalCurve, model: GraphActorCritic, core: LearnerCore, log: Any) -> None:
    row = curve.run(model, core.env_steps, core.updates, core.wall_s)
    log.info("greedy evaluation at %d env steps: return %.3f over %d seeds (%.1f s)", core.env_steps,
             row["eval_return"], len(curve.seeds), row["eval_s"])


def train_local(cfg: Config, out_dir: str | Path, resume: bool = False, echo: bool = False,
                progress: Callable[[dict[str, Any]], None] | None = None) -> dict[str, Any]:
    """Train until cfg.train.steps environment steps; return a small summary. With `resume`, continue from
    out_dir/checkpoints/latest.pt (bit-identical to an uninterrupted run when checkpoints fall on episode
    boundaries, as with the default n_steps = episode length)."""
    # the acting path (its Numba kernel) only here: the learner service shares `prepare_run`, not acting
    from actor.groups import GroupedCollector, envs_per_group
    from actor.policy import ActingPolicy

    torch.set_num_threads(cfg.train.threads)  # torch's default (every core) collapses on a busy machine
    latest, model = prepare_run(cfg, out_dir, resume)
    log = setup_logging(Path(out_dir) / "logs" / "learner.log", "learner", echo=echo)
    tc = cfg.train
    # train.env_groups > 1 splits the envs exactly as sync mode's actors own them (actor/groups.py); deferred
    # auto-resets give the same data as immediate ones (the next collect runs the pending warm-ups first)
    per_group = envs_per_group(tc.num_envs, tc.env_groups)
    envs = [make_vec_env(cfg.env, per_group, defer_reset=True) for _ in range(tc.env_groups)]
    policy = ActingPolicy.for_model(cfg.model, envs[0].adjacency, envs[0].obs_dim, envs[0].n_actions)
    collector = GroupedCollector(envs, policy, tc.n_steps, tc.seed)
    core = LearnerCore(cfg, model, out_dir, log, streams=collector.streams, progress=progress)
    if resume:
        fresh = collector.continue_streams(core.restore(read_checkpoint(latest)))
        if fresh:
            log.warning("env groups %s: the checkpoint's sampler state is not a PCG64 stream (an older version's); "
                        "they sample from a fresh stream", fresh)
    else:
        collector.reset()
    curve = EvalCurve(cfg, out_dir, core.env_steps, resumed=core.resumed)
    log.info("config %s", cfg.to_dict())
    log.info("algorithm %s on %s: %d agents, %d envs, %d parameters, device %s", cfg.model.algorithm,
             cfg.env.system, model.n_agents, tc.num_envs, sum(p.numel() for p in model.parameters()),
             tc.device)
    with core:
        while not core.done:
            policy.load(weight_arrays(model))  # the actors' acting path, on the weights just learned
            batch, windows = collector.collect(version=core.updates)
            stats = core.learn(batch)
            core.record(stats, batch, windows, lags=[0])
            if curve.due(core.env_steps):
                _evaluate(curve, model, core, log)
        core.checkpoint()
        if curve.due(core.env_steps, final=True):
            _evaluate(curve, model, core, log)
    log.info("finished: %d updates, %d env steps, recent return %.3f", core.updates, core.env_steps,
             core.recent_mean)
    return core.summary()
