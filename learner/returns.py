"""Learning rewards and targets: spatial discount over the agent graph, scaling and clipping, n-step returns,
GAE and V-trace (async mode). Shapes: rewards/values [T, B, N], dones [T, B], bootstrap [B, N]; everything
is torch and pure."""

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


def vtrace(rewards: torch.Tensor, values: torch.Tensor, dones: torch.Tensor, bootstrap: torch.Tensor,
           log_ratio: torch.Tensor, gamma: float, rho_clip: float = 1.0, c_clip: float = 1.0,
           lam: float = 1.0) -> tuple[torch.Tensor, torch.Tensor]:
    """V-trace targets v_s and policy-gradient advantages for off-policy windows (IMPALA, Espeholt et al.).

    `log_ratio` = log pi(a_t) - log mu(a_t) per agent, [T, B, N] (pi the learner's policy, mu the acting
    one); rho_t = min(rho_clip, pi/mu), c_t = lam * min(c_clip, pi/mu). With delta_t = rho_t (r_t +
    gamma (1 - done_t) V_{t+1} - V_t) and V_T = v_T = bootstrap, backwards:
    v_s = V_s + delta_s + gamma (1 - done_s) c_s (v_{s+1} - V_{s+1}), and the advantage is
    rho_s (r_s + gamma (1 - done_s) v_{s+1} - V_s).

    On-policy (log_ratio = 0, clips >= 1, lam = 1) the V terms telescope: v_s = r_s + gamma (1 - done_s)
    v_{s+1}, exactly the n-step return R_s of `nstep_returns` whatever V is, and the advantage is R_s - V_s.
    """
    ratio = torch.exp(log_ratio)
    rho = ratio.clamp(max=rho_clip)
    c = lam * ratio.clamp(max=c_clip)
    discount = gamma * (~dones).to(rewards.dtype).unsqueeze(-1)
    next_values = torch.cat([values[1:], bootstrap.unsqueeze(0)])
    delta = rho * (rewards + discount * next_values - values)
    vs_minus_v = torch.empty_like(rewards)
    running = torch.zeros_like(bootstrap)
    for t in range(rewards.shape[0] - 1, -1, -1):
        running = delta[t] + discount[t] * c[t] * running
        vs_minus_v[t] = running
    vs = vs_minus_v + values
    next_vs = torch.cat([vs[1:], bootstrap.unsqueeze(0)])
    return vs, rho * (rewards + discount * next_vs - values)
