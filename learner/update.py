"""The learner's update as a pure function of (model, optimiser, batch, config): the reference trainer and
the distributed learner call exactly this, so they cannot drift apart.

Per agent i (algorithms.md): L_i = -mean_t(log pi_i(a) A_i) + c_v mean_t (R_i - V_i)^2 - c_e mean_t H(pi_i);
the total is the sum over agents (train.loss_reduction = mean divides by N). With train.loss = ppo the policy
term is PPO's clipped surrogate and the batch is used for train.ppo_epochs steps.
"""

from __future__ import annotations

from typing import NamedTuple

import torch
import torch.nn.functional as F

from common.config import TrainConfig, gae_lambda, reward_clip
from common.nets.base import AgentState, GraphActorCritic
from common.rollout import Rollout
from learner import returns as R


class Batch(NamedTuple):
    """A rollout as tensors on the learner's device, with its learning targets."""

    obs: torch.Tensor
    actions: torch.Tensor
    starts: torch.Tensor
    logp: torch.Tensor
    returns: torch.Tensor
    advantages: torch.Tensor
    state0: AgentState


def prepare(model: GraphActorCritic, rollout: Rollout, cfg: TrainConfig) -> Batch:
    """Move a rollout to the model's device and compute its returns and advantages (no gradient)."""
    device = model.hop_distance.device

    def t(x):
        return torch.from_numpy(x).to(device)

    rewards = R.learning_rewards(t(rollout.rewards), model.hop_distance, cfg.spatial_discount,
                                 cfg.reward_norm, reward_clip(cfg))
    returns, advantages = R.targets(rewards, t(rollout.values), t(rollout.dones), t(rollout.bootstrap),
                                    cfg.gamma, gae_lambda(cfg))
    state0 = AgentState(t(rollout.h0), t(rollout.c0), t(rollout.fp0))
    return Batch(t(rollout.obs), t(rollout.actions), t(rollout.starts), t(rollout.logp), returns, advantages,
                 state0)


def agent_losses(model: GraphActorCritic, batch: Batch, cfg: TrainConfig) -> dict[str, torch.Tensor]:
    """Recompute the window from its (detached) start state and return per-agent loss terms, each [N]:
    total, policy, value, entropy, plus PPO diagnostics. Kept separate so tests can differentiate one
    agent's loss alone."""
    logits, hs, _ = model.unroll(batch.obs, batch.starts, batch.state0.detach())
    log_probs = F.log_softmax(logits, dim=-1)
    logp = log_probs.gather(-1, batch.actions.unsqueeze(-1)).squeeze(-1)
    entropy = -(log_probs.exp() * log_probs).sum(-1)
    values = model.value(hs, batch.actions)
    dims = (0, 1)
    if cfg.loss == "ppo":
        ratio = torch.exp(logp - batch.logp)
        clipped = ratio.clamp(1.0 - cfg.ppo_clip, 1.0 + cfg.ppo_clip)
        policy = -torch.minimum(ratio * batch.advantages, clipped * batch.advantages).mean(dims)
        extra = {"clip_fraction": ((ratio - 1.0).abs() > cfg.ppo_clip).float().mean(),
                 "approx_kl": (batch.logp - logp).mean()}
    else:
        policy = -(logp * batch.advantages).mean(dims)
        extra = {}
    value = (batch.returns - values).pow(2).mean(dims)
    ent = entropy.mean(dims)
    total = policy + cfg.value_coef * value - cfg.entropy_coef * ent
    return {"total": total, "policy": policy, "value": value, "entropy": ent, **extra}


def make_optimizer(model: GraphActorCritic, cfg: TrainConfig) -> torch.optim.Optimizer:
    """RMSprop (the paper's) or Adam, from the config."""
    if cfg.optimizer == "adam":
        return torch.optim.Adam(model.parameters(), lr=cfg.lr, eps=cfg.optim_eps)
    return torch.optim.RMSprop(model.parameters(), lr=cfg.lr, alpha=cfg.rmsprop_alpha, eps=cfg.optim_eps)


def learning_rate(cfg: TrainConfig, env_steps: int) -> float:
    """The scheduled learning rate after `env_steps` environment steps (linear decays to 0 at train.steps)."""
    if cfg.lr_schedule == "linear":
        return cfg.lr * max(0.0, 1.0 - env_steps / cfg.steps)
    return cfg.lr


def set_learning_rate(optimiser: torch.optim.Optimizer, lr: float) -> None:
    for group in optimiser.param_groups:
        group["lr"] = lr


def update(model: GraphActorCritic, optimiser: torch.optim.Optimizer, rollout: Rollout, cfg: TrainConfig
           ) -> dict[str, float]:
    """One learner update from one batch; returns scalar statistics (losses are per-agent means)."""
    batch = prepare(model, rollout, cfg)
    n_agents = model.n_agents
    epochs = cfg.ppo_epochs if cfg.loss == "ppo" else 1
    for _ in range(epochs):
        terms = agent_losses(model, batch, cfg)
        loss = terms["total"].sum() if cfg.loss_reduction == "sum" else terms["total"].mean()
        optimiser.zero_grad(set_to_none=True)
        loss.backward()
        if cfg.max_grad_norm > 0:
            grad_norm = torch.nn.utils.clip_grad_norm_(model.parameters(), cfg.max_grad_norm)
        else:
            grad_norm = torch.linalg.vector_norm(
                torch.stack([p.grad.norm() for p in model.parameters() if p.grad is not None]))
        optimiser.step()
        model.after_optimizer_step()
    stats = {
        "loss": float(loss.detach()),
        "policy_loss": float(terms["policy"].detach().sum() / n_agents),
        "value_loss": float(terms["value"].detach().sum() / n_agents),
        "entropy": float(terms["entropy"].detach().sum() / n_agents),
        "grad_norm": float(grad_norm),
        "lr": float(optimiser.param_groups[0]["lr"]),
        "mean_return_target": float(batch.returns.mean()),
    }
    for key in ("clip_fraction", "approx_kl"):
        if key in terms:
            stats[key] = float(terms[key].detach())
    return stats
