"""ConseNet: agents see only their own observation and are coupled by consensus on their LSTM parameters."""

from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F

from common.nets.base import GraphActorCritic


class ConseNet(GraphActorCritic):
    """LSTM input relu(W_x o_i). After every optimiser step each agent's LSTM weights become the mean of its
    own and its neighbours' weights, all agents at once from the pre-step values (simultaneous, not in agent
    order, so the result does not depend on how agents are numbered)."""

    def __init__(self, adjacency: np.ndarray, *args, **kwargs) -> None:
        super().__init__(adjacency, *args, **kwargs)
        closed = np.asarray(adjacency, dtype=np.float32) + np.eye(len(adjacency), dtype=np.float32)
        self.register_buffer("consensus", torch.from_numpy(closed / closed.sum(axis=1, keepdims=True)))

    window_messages = ()

    def build_inputs(self) -> int:
        self.obs_fc = self.linear(self.in_dim, self.hidden)
        return self.hidden

    def encode_obs(self, obs: torch.Tensor, links: torch.Tensor | None = None) -> torch.Tensor:
        return F.relu(self.obs_fc(obs))  # the own observation only: no link to lose

    @torch.no_grad()
    def after_optimizer_step(self) -> None:
        if self.share_weights:
            return
        for param in self.lstm.parameters():
            param.copy_(torch.einsum("ij,j...->i...", self.consensus, param))
