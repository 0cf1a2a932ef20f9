"""Learning rewards and targets: spatial discount over the agent graph, scaling and clipping, n-step returns
and GAE. Shapes: rewards/values [T, B, N], dones [T, B], bootstrap [B, N]; everything is torch and pure."""

from __future__ import annotations

import torch


def spatial_weights(hop_distance: torch.Tensor, alpha: float) -> torch.Tensor:
    """W[i, j] = alpha ** d(i, j), with alpha ** 0 = 1 even for alpha = 0 (own reward only)."""
    weights = torch.pow(torch.as_tensor(alpha, dtype=torch.float64), hop_distance.to(torch.float64))
    weights = torch.where(hop_distance == 0, torch.ones_like(weights), weights)
    return weights.to(torch.float32)


def learning_rewards(rewards: torch.Tensor, hop_distance: torch.Tensor, alpha: float, reward_norm: float,
                     reward_clip: float | None) -> torch.Tensor:
    """r~_i = sum_j alpha^d(i,j) r_j, then divided by reward_norm, then clipped to [-c, c] if asked.

    Mixing before clipping follows the original code (its environment mixed, its trainer scaled and
    clipped); scaling commutes with mixing, so only the clip position matters.
    """
    mixed = torch.einsum("ij,...j->...i", spatial_weights(hop_distance, alpha).to(rewards.device), rewards)
    scaled = mixed / reward_norm
    return scaled.clamp(-reward_clip, reward_clip) if reward_clip is not None else scaled


def nstep_returns(rewards: torch.Tensor, dones: torch.Tensor, bootstrap: torch.Tensor, gamma: float
                  ) -> torch.Tensor:
    """R_t = r_t + gamma (1 - done_t) R_{t+1}, with R_T = bootstrap (the value after the window)."""
    notdone = (~dones).to(rewards.dtype).unsqueeze(-1)
    returns = torch.empty_like(rewards)
    running = bootstrap
    for t in range(rewards.shape[0] - 1, -1, -1):
        running = rewards[t] + gamma * notdone[t] * running
        returns[t] = running
    return returns


def gae(rewards: torch.Tensor, values: torch.Tensor, dones: torch.Tensor, bootstrap: torch.Tensor,
        gamma: float, lam: float) -> tuple[torch.Tensor, torch.Tensor]:
    """GAE(lambda) advantages and the value targets A + V. lambda = 1 gives the n-step advantage exactly."""
    notdone = (~dones).to(rewards.dtype).unsqueeze(-1)
    advantages = torch.empty_like(rewards)
    running = torch.zeros_like(bootstrap)
    next_value = bootstrap
    for t in range(rewards.shape[0] - 1, -1, -1):
        delta = rewards[t] + gamma * notdone[t] * next_value - values[t]
        running = delta + gamma * lam * notdone[t] * running
        advantages[t] = running
        next_value = values[t]
    return advantages, advantages + values


def targets(rewards: torch.Tensor, values: torch.Tensor, dones: torch.Tensor, bootstrap: torch.Tensor,
            gamma: float, lam: float | None) -> tuple[torch.Tensor, torch.Tensor]:
    """(returns, advantages) from learning rewards: n-step when lam is None, else GAE(lam)."""
    if lam is None:
        returns = nstep_returns(rewards, dones, bootstrap, gamma)
        return returns, returns - values
    advantages, returns = gae(rewards, values, dones, bootstrap, gamma, lam)
    return returns, advantages
