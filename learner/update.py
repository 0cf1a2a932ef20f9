"""The learner's update as a pure function of (model, optimiser, batch, config): the reference trainer and
the distributed learner call exactly this, so they cannot drift apart.

Per agent i (docs/algorithms.md#loss): L_i = -mean_t(log pi_i(a) A_i) + c_v mean_t (R_i - V_i)^2 - c_e mean_t H(pi_i);
the total is the sum over agents (train.loss_reduction = mean divides by N). With train.loss = ppo the policy
term is PPO's clipped surrogate and the batch is used for train.ppo_epochs steps. Async mode's a2c update
(`off_policy`) replaces the returns and advantages by V-trace targets computed inside the loss.
"""

from __future__ import annotations

import copy
import dataclasses
import math
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
    links: torch.Tensor | None = None  # [T, B, N, D] bool: the messages received at acting time (message loss)


def _on_device(model: GraphActorCritic, rollout: Rollout, cfg: TrainConfig) -> tuple[dict[str, torch.Tensor],
                                                                                 torch.Tensor, AgentState]:
    """The rollout's arrays as tensors on the model's device, its learning rewards (spatially discounted,
    scaled, clipped) and the recurrent state before its first step."""
    device = model.hop_distance.device
    x = {name: torch.from_numpy(value).to(device) for name, value in rollout.arrays().items()}
    rewards = R.learning_rewards(x["rewards"], model.hop_distance, cfg.spatial_discount, cfg.reward_norm,
                                 reward_clip(cfg))
    return x, rewards, AgentState(x["h0"], x["c0"], x["fp0"])


def prepare(model: GraphActorCritic, rollout: Rollout, cfg: TrainConfig) -> Batch:
    """Move a rollout to the model's device and compute its returns and advantages (no gradient)."""
    x, rewards, state0 = _on_device(model, rollout, cfg)
    returns, advantages = R.targets(rewards, x["values"], x["dones"], x["bootstrap"], cfg.gamma, gae_lambda(cfg))
    return Batch(x["obs"], x["actions"], x["starts"], x["logp"], returns, normalised(advantages, cfg), state0,
                 x.get("links"))


def normalised(advantages: torch.Tensor, cfg: TrainConfig) -> torch.Tensor:
    """The advantages, standardised over the whole batch when train.advantage_norm is on (as MAPPO does):
    the policy step's size then no longer scales with the reward's."""
    if not cfg.advantage_norm:
        return advantages
    return (advantages - advantages.mean()) / (advantages.std(unbiased=False) + 1e-8)


def agent_losses(model: GraphActorCritic, batch: Batch, cfg: TrainConfig) -> dict[str, torch.Tensor]:
    """Recompute the window from its (detached) start state and return per-agent loss terms, each [N]:
    total, policy, value, entropy, plus PPO diagnostics. Kept separate so tests can differentiate one
    agent's loss alone. The unroll sees the link masks the actors acted with (none lost without them)."""
    logits, hs, _ = model.unroll(batch.obs, batch.starts, batch.state0.detach(), batch.links)
    log_probs = F.log_softmax(logits, dim=-1)
    logp = log_probs.gather(-1, batch.actions.unsqueeze(-1)).squeeze(-1)
    entropy = -(log_probs.exp() * log_probs).sum(-1)
    values = model.value(hs, batch.actions, batch.obs)
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


class OffPolicyBatch(NamedTuple):
    """A rollout as tensors for the V-trace update: the targets need the learner's current policy and values,
    so they are computed inside the loss (`vtrace_losses`) from the learning rewards kept here."""

    obs: torch.Tensor
    actions: torch.Tensor
    starts: torch.Tensor
    logp: torch.Tensor  # behaviour (acting-time) log-probabilities
    rewards: torch.Tensor  # spatially discounted, scaled, clipped learning rewards [T, B, N]
    dones: torch.Tensor
    bootstrap: torch.Tensor
    state0: AgentState
    links: torch.Tensor | None = None


def prepare_off_policy(model: GraphActorCritic, rollout: Rollout, cfg: TrainConfig) -> OffPolicyBatch:
    """Move a rollout to the model's device and compute its learning rewards (targets come later)."""
    x, rewards, state0 = _on_device(model, rollout, cfg)
    return OffPolicyBatch(x["obs"], x["actions"], x["starts"], x["logp"], rewards, x["dones"], x["bootstrap"],
                          state0, x.get("links"))


def vtrace_losses(model: GraphActorCritic, batch: OffPolicyBatch, cfg: TrainConfig) -> dict[str, torch.Tensor]:
    """Per-agent a2c loss terms [N] on V-trace-corrected targets (async mode), from one unroll of the window.

    Each agent's importance ratio is its own pi_i(a_i) / mu_i(a_i) (independent learners; the neighbourhood
    critic's dependence on the neighbours' actions is not corrected). V is the learner's current value,
    detached; the window's bootstrap is the acting-time value (the observation after the window is not
    sent). With zero lag pi = mu, so the targets are the n-step returns R and the advantages R - V: the
    sync a2c update, except that V is recomputed here instead of taken from acting time (equal up to
    floating-point rounding, not bit for bit). GAE lambda, when set, scales the traces c (IMPALA's remark).
    """
    logits, hs, _ = model.unroll(batch.obs, batch.starts, batch.state0.detach(), batch.links)
    log_probs = F.log_softmax(logits, dim=-1)
    logp = log_probs.gather(-1, batch.actions.unsqueeze(-1)).squeeze(-1)
    entropy = -(log_probs.exp() * log_probs).sum(-1)
    values = model.value(hs, batch.actions, batch.obs)
    log_ratio = (logp - batch.logp).detach()
    lam = gae_lambda(cfg)
    vs, advantages = R.vtrace(batch.rewards, values.detach(), batch.dones, batch.bootstrap, log_ratio,
                              cfg.gamma, cfg.vtrace_rho_clip, cfg.vtrace_c_clip, 1.0 if lam is None else lam)
    advantages = normalised(advantages, cfg)
    dims = (0, 1)
    policy = -(logp * advantages).mean(dims)
    value = (vs - values).pow(2).mean(dims)
    ent = entropy.mean(dims)
    total = policy + cfg.value_coef * value - cfg.entropy_coef * ent
    ratio = log_ratio.exp()
    return {"total": total, "policy": policy, "value": value, "entropy": ent,
            "return_target": vs.mean(), "rho_mean": ratio.clamp(max=cfg.vtrace_rho_clip).mean(),
            "rho_clipped": (ratio > cfg.vtrace_rho_clip).float().mean()}


def make_optimizer(model: GraphActorCritic, cfg: TrainConfig) -> torch.optim.Optimizer:
    """RMSprop (the paper's) or Adam, from the config. Adam's fused kernel (train.fused_adam) makes one pass over
    each parameter tensor instead of about ten elementwise passes; on microgrid-20's 1.7 M parameters that is
    ~2 ms per step instead of ~20 (docs/algorithms.md#optimiser)."""
    if cfg.optimizer == "adam":
        return torch.optim.Adam(model.parameters(), lr=cfg.lr, eps=cfg.optim_eps, fused=cfg.fused_adam or None)
    return torch.optim.RMSprop(model.parameters(), lr=cfg.lr, alpha=cfg.rmsprop_alpha, eps=cfg.optim_eps)


def learning_rate(cfg: TrainConfig, env_steps: int) -> float:
    """The scheduled learning rate after `env_steps` environment steps (linear decays to 0 at train.steps)."""
    if cfg.lr_schedule == "linear":
        return cfg.lr * max(0.0, 1.0 - env_steps / cfg.steps)
    return cfg.lr


def scheduled(cfg: TrainConfig, env_steps: int) -> TrainConfig:
    """cfg with the entropy coefficient of `env_steps` (train.entropy_schedule = linear decays it to 0 at
    train.steps: explore early, act on the learned differences late); cfg itself when constant."""
    if cfg.entropy_schedule == "linear":
        return dataclasses.replace(cfg, entropy_coef=cfg.entropy_coef * max(0.0, 1.0 - env_steps / cfg.steps))
    return cfg


def set_learning_rate(optimiser: torch.optim.Optimizer, lr: float) -> None:
    for group in optimiser.param_groups:
        group["lr"] = lr


def _snapshot(model: GraphActorCritic, optimiser: torch.optim.Optimizer) -> tuple[dict, dict]:
    """Copies of the parameters and optimiser state, to undo a multi-epoch update whose later epoch fails."""
    return ({k: v.detach().clone() for k, v in model.state_dict().items()}, copy.deepcopy(optimiser.state_dict()))


def _safe(loss: torch.Tensor, grad_norm: torch.Tensor, cfg: TrainConfig) -> bool:
    """Whether an optimiser step on these gradients may run: a finite loss and a finite gradient norm (before
    clipping) no larger than train.skip_grad_norm (0: any finite norm)."""
    norm = float(grad_norm)
    return (bool(torch.isfinite(loss)) and math.isfinite(norm)
            and (cfg.skip_grad_norm == 0 or norm <= cfg.skip_grad_norm))


def update(model: GraphActorCritic, optimiser: torch.optim.Optimizer, rollout: Rollout, cfg: TrainConfig,
           off_policy: bool = False) -> dict[str, float]:
    """One learner update from one batch; returns scalar statistics (losses are per-agent means).

    `off_policy` (async mode) corrects an a2c update with V-trace (`vtrace_losses`); PPO keeps its own
    correction, the clipped ratio to the acting policy, so it ignores the flag.

    An update applies completely or not at all: when the loss or the gradient norm of any epoch is non-finite
    or above train.skip_grad_norm, no optimiser step is taken (earlier PPO epochs are undone), the parameters
    and optimiser state stay as they were, and the statistics say ``skipped`` = 1. Otherwise nothing differs
    from an unguarded update, bit for bit."""
    vtrace = off_policy and cfg.loss == "a2c"
    batch = prepare_off_policy(model, rollout, cfg) if vtrace else prepare(model, rollout, cfg)
    n_agents = model.n_agents
    epochs = cfg.ppo_epochs if cfg.loss == "ppo" else 1
    snapshot = _snapshot(model, optimiser) if epochs > 1 else None
    skipped = False
    for epoch in range(epochs):
        terms = vtrace_losses(model, batch, cfg) if vtrace else agent_losses(model, batch, cfg)
        loss = terms["total"].sum() if cfg.loss_reduction == "sum" else terms["total"].mean()
        optimiser.zero_grad(set_to_none=True)
        loss.backward()
        if cfg.max_grad_norm > 0:
            grad_norm = torch.nn.utils.clip_grad_norm_(model.parameters(), cfg.max_grad_norm)
        else:
            grad_norm = torch.linalg.vector_norm(
                torch.stack([p.grad.norm() for p in model.parameters() if p.grad is not None]))
        if not _safe(loss, grad_norm, cfg):
            optimiser.zero_grad(set_to_none=True)
            if snapshot is not None and epoch > 0:
                model.load_state_dict(snapshot[0])
                optimiser.load_state_dict(snapshot[1])
            skipped = True
            break
        optimiser.step()
        model.after_optimizer_step()
    stats = {
        "loss": float(loss.detach()),
        "policy_loss": float(terms["policy"].detach().sum() / n_agents),
        "value_loss": float(terms["value"].detach().sum() / n_agents),
        "entropy": float(terms["entropy"].detach().sum() / n_agents),
        "grad_norm": float(grad_norm),
        "lr": float(optimiser.param_groups[0]["lr"]),
        "mean_return_target": float(terms["return_target"]) if vtrace else float(batch.returns.mean()),
        "skipped": float(skipped),
    }
    for key in ("clip_fraction", "approx_kl", "rho_mean", "rho_clipped"):
        if key in terms:
            stats[key] = float(terms[key].detach())
    return stats
