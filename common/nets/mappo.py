"""MAPPO: a recurrent actor on the agent's own observation (weights shared across agents in its config) and a
centralised critic on the global state, trained with PPO on the team reward (docs/algorithms.md#mappo)."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from common.nets.base import GraphActorCritic


class GlobalCritic(nn.Module):
    """V(s) for every agent at once: s = [o_1, ..., o_N] through two ReLU layers of width H and a linear layer
    with one output per agent (each agent's learning reward has its own value)."""

    def __init__(self, n_agents: int, obs_dim: int, hidden: int) -> None:
        super().__init__()
        self.fc1 = nn.Linear(n_agents * obs_dim, hidden)
        self.fc2 = nn.Linear(hidden, hidden)
        self.out = nn.Linear(hidden, n_agents)
        for layer in (self.fc1, self.fc2, self.out):
            nn.init.orthogonal_(layer.weight)
            nn.init.zeros_(layer.bias)

    def forward(self, obs: torch.Tensor) -> torch.Tensor:
        """obs [..., N, O] -> values [..., N]."""
        state = obs.flatten(-2)
        return self.out(F.relu(self.fc2(F.relu(self.fc1(state)))))


class MAPPO(GraphActorCritic):
    """LSTM input relu(W_x o_i): the actor reads no neighbour, only the critic sees everything."""

    window_messages = ()

    def build_inputs(self) -> int:
        self.obs_fc = self.linear(self.in_dim, self.hidden)
        return self.hidden

    def encode_obs(self, obs: torch.Tensor, links: torch.Tensor | None = None) -> torch.Tensor:
        return F.relu(self.obs_fc(obs))  # the own observation only: no link to lose

    def build_critic(self) -> nn.Module:
        return GlobalCritic(self.n_agents, self.obs_dim, self.hidden)

    def value(self, h: torch.Tensor, actions: torch.Tensor, obs: torch.Tensor) -> torch.Tensor:
        """V_i(s) from the global state, the observations of all agents [..., N, O] (without agent ids)."""
        return self.critic(obs)
