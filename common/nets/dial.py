"""DIAL (Foerster et al. 2016) on the agent graph: learned messages from the neighbours' hidden states plus
the agent's own previous action."""

from __future__ import annotations

import torch
import torch.nn.functional as F

from common.nets.base import AgentState, GraphActorCritic


class DIAL(GraphActorCritic):
    """LSTM input relu(W_x o'_i) + relu(W_m [h_j for j in N(i)]) + onehot_H(argmax fp_i)."""

    def build_inputs(self) -> int:
        if self.n_actions > self.hidden:
            raise ValueError("DIAL embeds the previous action as a one-hot of width H: needs H >= actions")
        self.obs_fc = self.linear(self.in_dim * (1 + self.neighbours.width), self.hidden)
        self.msg_fc = self.linear(self.hidden * self.neighbours.width, self.hidden)
        return self.hidden

    uses_fingerprint = True

    def encode_obs(self, obs: torch.Tensor) -> torch.Tensor:
        return F.relu(self.obs_fc(self.with_neighbours(obs)))

    def lstm_input(self, x: torch.Tensor, state: AgentState) -> torch.Tensor:
        m = self.neighbours.zero_isolated(F.relu(self.msg_fc(self.neighbours(state.h))))
        own_action = F.one_hot(state.fp.argmax(dim=-1), self.hidden).to(x.dtype)
        return x + m + own_action
