"""Greedy evaluation of a trained run (`powernet evaluate`): the argmax policy on fixed seeds, loads as the
scenario evaluates them (classic: fixed within each episode), LSTM state reset per episode. Writes
run/eval/summary.json (run/eval-SCENARIO/ when evaluated on another scenario than the run's) and one npz trace
per episode (v_pu, rewards, actions, vn_v, f_hz: each [T, N])."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import torch

from actor.envs import agent_spec, make_vec_env, on_scenario
from common.config import Config, load_config
from common.errors import InputError
from common.nets import AgentState, GraphActorCritic, build_model
from launch.eval_protocol import SEED_STRIDE, write_eval_summary
from learner.core import read_checkpoint
from simsvc.metrics import episode_summary
from simsvc.scenarios import load_scenario


@torch.no_grad()
def run_episode(env: Any, model: GraphActorCritic, seed: int, greedy: bool = True,
                sampler: torch.Generator | None = None,
                on_step: Callable[[Any, np.ndarray, AgentState], None] | None = None) -> dict[str, np.ndarray]:
    """One episode of a 1-env VecEnv under the policy; returns its per-step traces, each [T, N].

    `on_step(env, actions, state)`, when given, is called once per control step after the policy has chosen
    its actions [1, N] (from the recurrent `state` it returns with them) and before the env applies them, so
    it sees what the policy acted on (measurements, message links, hidden state): how `powernet feedback`
    reads what each set-point responded to."""
    obs = torch.from_numpy(np.asarray(env.reset(seed), dtype=np.float32))
    state = model.initial_state(1, device="cpu")
    starts = torch.ones(1, dtype=torch.bool)
    trace: dict[str, list[np.ndarray]] = {k: [] for k in ("v_pu", "rewards", "actions", "vn_v", "f_hz")}
    done = False
    while not done:
        links = getattr(env, "links", None)  # the messages that reach each agent now (message loss), or None
        logits, state = model.step(obs, state, starts, None if links is None else torch.from_numpy(links))
        if greedy:
            actions = logits.argmax(dim=-1)
        else:
            probs = torch.softmax(logits, dim=-1).reshape(-1, logits.shape[-1])
            actions = torch.multinomial(probs, 1, generator=sampler).reshape(logits.shape[:-1])
        if on_step is not None:
            on_step(env, actions.numpy(), state)
        next_obs, rewards, dones, info = env.step(actions.numpy())
        for key in ("v_pu", "vn_v", "f_hz"):
            trace[key].append(np.asarray(info[key])[0])
        trace["rewards"].append(np.asarray(rewards)[0])
        trace["actions"].append(actions.numpy()[0])
        done = bool(dones[0])
        obs = torch.from_numpy(np.asarray(next_obs, dtype=np.float32))
        starts = torch.zeros(1, dtype=torch.bool)
    return {k: np.stack(v) for k, v in trace.items()}


def evaluation_env(env_cfg: Any) -> Any:
    """The 1-env VecEnv every greedy evaluation uses: the run's system under its scenario's evaluation
    disturbance (classic: loads fixed within each episode; paper: the walk on)."""
    return make_vec_env(env_cfg, 1, disturbance=load_scenario(env_cfg.scenario).evaluation_disturbance())


def load_policy(run: Path, checkpoint: str = "latest") -> tuple[Config, GraphActorCritic]:
    """The run's config and its network from run/checkpoints/<checkpoint>.pt, in eval mode; InputError when the
    checkpoint is missing."""
    ckpt_path = run / "checkpoints" / f"{checkpoint}.pt"
    if not ckpt_path.is_file():
        raise InputError(f"no checkpoint at {ckpt_path}: train the run first or pass another --run")
    cfg = load_config(run / "config.toml")
    spec = agent_spec(cfg.env)
    torch.manual_seed(0)
    model = build_model(cfg.model, spec.adjacency, spec.obs_dim, spec.n_actions)
    model.load_state_dict(read_checkpoint(ckpt_path)["model"])
    model.eval()
    return cfg, model


def evaluate_run(run_dir: str | Path, episodes: int = 20, seed: int = 2000, checkpoint: str = "latest",
                 scenario: str | None = None) -> dict[str, Any]:
    """Evaluate run_dir/checkpoints/<checkpoint>.pt greedily and write run_dir/eval/ (with another `scenario`
    than the run's: run_dir/eval-NAME/), under the scenario's evaluation disturbance."""
    run = Path(run_dir)
    if scenario is not None:
        load_scenario(scenario)  # an unknown scenario is the first thing to report
    if episodes < 1:
        raise InputError("--episodes must be at least 1")
    cfg, model = load_policy(run, checkpoint)
    own = cfg.env.scenario
    env_cfg = cfg.env if scenario is None else on_scenario(cfg.env, scenario)
    sc = load_scenario(env_cfg.scenario)
    env = evaluation_env(env_cfg)
    out = run / ("eval" if scenario is None or scenario == own else f"eval-{sc.name}")
    out.mkdir(parents=True, exist_ok=True)
    rows = []
    for k in range(episodes):
        ep_seed = seed + SEED_STRIDE * k
        trace = run_episode(env, model, ep_seed)
        np.savez_compressed(out / f"episode-{ep_seed}.npz", seed=ep_seed, **trace)
        rows.append({"seed": ep_seed, **episode_summary(trace["v_pu"], trace["rewards"])})
    head = {"run": str(run), "checkpoint": checkpoint, "algorithm": cfg.model.algorithm, "system": cfg.env.system,
            "scenario": sc.name}
    return write_eval_summary(out / "summary.json", head, rows)
