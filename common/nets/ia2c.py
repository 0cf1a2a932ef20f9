"""IA2C: independent recurrent actor-critics; agent i sees o'_i = [o_i, o_j for j in N(i)] but no messages."""

from __future__ import annotations

import torch
import torch.nn.functional as F

from common.nets.base import GraphActorCritic


class IA2C(GraphActorCritic):
    """LSTM input relu(W_x o'_i)."""

    window_messages = ()

    def build_inputs(self) -> int:
        self.obs_fc = self.linear(self.in_dim * (1 + self.neighbours.width), self.hidden)
        return self.hidden

    def encode_obs(self, obs: torch.Tensor, links: torch.Tensor | None = None) -> torch.Tensor:
        return F.relu(self.obs_fc(self.with_neighbours(obs, links)))
