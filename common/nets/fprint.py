"""FPrint: IA2C plus the neighbours' fingerprints (their previous policies), as in Foerster et al. 2017."""

from __future__ import annotations

import torch
import torch.nn.functional as F

from common.nets.base import AgentState, GraphActorCritic


class FPrint(GraphActorCritic):
    """LSTM input [relu(W_x o'_i), relu(W_p [fp_j for j in N(i)])]; fingerprints are detached data, so no
    gradient crosses between agents."""

    def build_inputs(self) -> int:
        self.obs_fc = self.linear(self.in_dim * (1 + self.neighbours.width), self.hidden)
        self.fp_fc = self.linear(self.n_actions * self.neighbours.width, self.hidden)
        return 2 * self.hidden

    uses_fingerprint = True

    def encode_obs(self, obs: torch.Tensor) -> torch.Tensor:
        return F.relu(self.obs_fc(self.with_neighbours(obs)))

    def lstm_input(self, x: torch.Tensor, state: AgentState) -> torch.Tensor:
        p = self.neighbours.zero_isolated(F.relu(self.fp_fc(self.neighbours(state.fp))))
        return torch.cat([x, p], dim=-1)
