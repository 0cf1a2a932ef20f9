"""CommNet (Sukhbaatar et al. 2016) on the agent graph: the message is the mean of the neighbours' hidden
states of the previous step."""

from __future__ import annotations

import torch
import torch.nn.functional as F

from common.nets.base import GraphActorCritic
from common.nets.layers import StepLinear


class CommNet(GraphActorCritic):
    """LSTM input relu(W_x o'_i) + W_m mean_{j in N(i)} h_j (the message term is linear)."""

    def build_inputs(self) -> int:
        self.obs_fc = self.linear(self.in_dim * (1 + self.neighbours.width), self.hidden)
        self.msg_fc = self.linear(self.hidden, self.hidden)
        return self.hidden

    additive_messages = True

    def encode_obs(self, obs: torch.Tensor, links: torch.Tensor | None = None) -> torch.Tensor:
        return F.relu(self.obs_fc(self.with_neighbours(obs, links)))

    def message_layers(self, steps: int, batch: int) -> dict[str, StepLinear]:
        return {"msg": self.msg_fc.over_window(steps, batch)}

    def messages(self, layers: dict[str, StepLinear], t: int, h: torch.Tensor, fp: torch.Tensor,
                 links: torch.Tensor | None = None) -> list[torch.Tensor]:
        nb = self.neighbours
        return [nb.zero_isolated_am(layers["msg"](t, nb.mean_am(h, links)))]
