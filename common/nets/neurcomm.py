"""NeurComm (Chu et al. 2020): each agent's LSTM reads its neighbourhood's observations, the neighbours'
fingerprints and the neighbours' hidden states as messages; the messages are differentiable, so one agent's
loss trains its neighbours' networks too."""

from __future__ import annotations

import torch
import torch.nn.functional as F

from common.nets.base import GraphActorCritic
from common.nets.layers import StepLinear


class NeurComm(GraphActorCritic):
    """LSTM input [relu(W_x o'_i), relu(W_p [fp_j]_{N(i)}), relu(W_m [h_j]_{N(i)})], width 3H."""

    window_messages = ("fp", "msg")

    def build_inputs(self) -> int:
        width = self.neighbours.width
        self.obs_fc = self.linear(self.in_dim * (1 + width), self.hidden)
        self.fp_fc = self.linear(self.n_actions * width, self.hidden)
        self.msg_fc = self.linear(self.hidden * width, self.hidden)
        return 3 * self.hidden

    uses_fingerprint = True

    def encode_obs(self, obs: torch.Tensor, links: torch.Tensor | None = None) -> torch.Tensor:
        return F.relu(self.obs_fc(self.with_neighbours(obs, links)))

    def message_layers(self, steps: int, batch: int) -> dict[str, StepLinear]:
        nb = self.neighbours
        return {"fp": self.fp_fc.over_window(steps, batch, nb.mask),
                "msg": self.msg_fc.over_window(steps, batch, nb.mask)}

    def messages(self, layers: dict[str, StepLinear], t: int, h: torch.Tensor, fp: torch.Tensor,
                 links: torch.Tensor | None = None) -> list[torch.Tensor]:
        nb = self.neighbours
        p = nb.zero_isolated_am(F.relu(layers["fp"](t, nb.gather_am(fp, links))))
        m = nb.zero_isolated_am(F.relu(layers["msg"](t, nb.gather_am(h, links))))
        return [p, m]
