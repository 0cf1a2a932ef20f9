"""DIAL (Foerster et al. 2016) on the agent graph: learned messages from the neighbours' hidden states plus
the agent's own previous action."""

from __future__ import annotations

import torch
import torch.nn.functional as F

from common.nets.base import GraphActorCritic
from common.nets.layers import StepLinear


class DIAL(GraphActorCritic):
    """LSTM input relu(W_x o'_i) + relu(W_m [h_j for j in N(i)]) + onehot_H(argmax fp_i)."""

    def build_inputs(self) -> int:
        if self.n_actions > self.hidden:
            raise ValueError("DIAL embeds the previous action as a one-hot of width H: needs H >= actions")
        self.obs_fc = self.linear(self.in_dim * (1 + self.neighbours.width), self.hidden)
        self.msg_fc = self.linear(self.hidden * self.neighbours.width, self.hidden)
        # row a is the width-H one-hot of action a (a lookup is cheaper per step than F.one_hot)
        self.register_buffer("action_onehot", torch.eye(self.n_actions, self.hidden), persistent=False)
        return self.hidden

    uses_fingerprint = True
    additive_messages = True

    def encode_obs(self, obs: torch.Tensor, links: torch.Tensor | None = None) -> torch.Tensor:
        return F.relu(self.obs_fc(self.with_neighbours(obs, links)))

    def message_layers(self, steps: int, batch: int) -> dict[str, StepLinear]:
        return {"msg": self.msg_fc.over_window(steps, batch, self.neighbours.mask)}

    def messages(self, layers: dict[str, StepLinear], t: int, h: torch.Tensor, fp: torch.Tensor,
                 links: torch.Tensor | None = None) -> list[torch.Tensor]:
        nb = self.neighbours
        m = nb.zero_isolated_am(F.relu(layers["msg"](t, nb.gather_am(h, links))))
        own_action = self.action_onehot.index_select(0, fp.argmax(dim=-1).flatten()).view_as(m)
        return [m + own_action]
