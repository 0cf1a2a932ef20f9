"""FPrint: IA2C plus the neighbours' fingerprints (their previous policies), as in Foerster et al. 2017."""

from __future__ import annotations

import torch
import torch.nn.functional as F

from common.nets.base import GraphActorCritic
from common.nets.layers import StepLinear


class FPrint(GraphActorCritic):
    """LSTM input [relu(W_x o'_i), relu(W_p [fp_j for j in N(i)])]; fingerprints are detached data, so no
    gradient crosses between agents."""

    window_messages = ("fp",)

    def build_inputs(self) -> int:
        self.obs_fc = self.linear(self.in_dim * (1 + self.neighbours.width), self.hidden)
        self.fp_fc = self.linear(self.n_actions * self.neighbours.width, self.hidden)
        return 2 * self.hidden

    uses_fingerprint = True

    def encode_obs(self, obs: torch.Tensor, links: torch.Tensor | None = None) -> torch.Tensor:
        return F.relu(self.obs_fc(self.with_neighbours(obs, links)))

    def message_layers(self, steps: int, batch: int) -> dict[str, StepLinear]:
        return {"fp": self.fp_fc.over_window(steps, batch, self.neighbours.mask)}

    def messages(self, layers: dict[str, StepLinear], t: int, h: torch.Tensor, fp: torch.Tensor,
                 links: torch.Tensor | None = None) -> list[torch.Tensor]:
        nb = self.neighbours
        return [nb.zero_isolated_am(F.relu(layers["fp"](t, nb.gather_am(fp, links))))]
