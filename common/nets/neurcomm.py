"""NeurComm (Chu et al. 2020): each agent's LSTM reads its neighbourhood's observations, the neighbours'
fingerprints and the neighbours' hidden states as messages; the messages are differentiable, so one agent's
loss trains its neighbours' networks too."""

from __future__ import annotations

import torch
import torch.nn.functional as F

from common.nets.base import AgentState, GraphActorCritic


class NeurComm(GraphActorCritic):
    """LSTM input [relu(W_x o'_i), relu(W_p [fp_j]_{N(i)}), relu(W_m [h_j]_{N(i)})], width 3H."""

    def build_inputs(self) -> int:
        width = self.neighbours.width
        self.obs_fc = self.linear(self.in_dim * (1 + width), self.hidden)
        self.fp_fc = self.linear(self.n_actions * width, self.hidden)
        self.msg_fc = self.linear(self.hidden * width, self.hidden)
        return 3 * self.hidden

    uses_fingerprint = True

    def encode_obs(self, obs: torch.Tensor) -> torch.Tensor:
        return F.relu(self.obs_fc(self.with_neighbours(obs)))

    def lstm_input(self, x: torch.Tensor, state: AgentState) -> torch.Tensor:
        nb = self.neighbours
        p = nb.zero_isolated(F.relu(self.fp_fc(nb(state.fp))))
        m = nb.zero_isolated(F.relu(self.msg_fc(nb(state.h))))
        return torch.cat([x, p, m], dim=-1)
