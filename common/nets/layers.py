"""Shared building blocks: per-agent linear layers and LSTM cells batched over an agent dimension, and the
padded neighbour gather that turns "the neighbours' x" into one tensor op.

Each agent owns its weights, stored stacked as one tensor with a leading agent axis, so a forward pass for all
agents of all environments is one batched matmul instead of a Python loop over agent modules.
"""

from __future__ import annotations

import numpy as np
import torch
from torch import nn


def _orthogonal_(weight: torch.Tensor, gain: float = 1.0) -> None:
    """Orthogonal init of each agent's [in, out] slice independently (gain 1, as the original)."""
    with torch.no_grad():
        for k in range(weight.shape[0]):
            nn.init.orthogonal_(weight[k], gain=gain)


def agent_matmul(x: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor) -> torch.Tensor:
    """x [..., N, in] times per-agent weight [N, in, out] plus bias [N, out] (or one shared [1, ...])."""
    if weight.shape[0] == 1:
        return x @ weight[0] + bias[0]
    n = weight.shape[0]
    lead = x.shape[:-2]
    flat = x.reshape(-1, n, x.shape[-1]).transpose(0, 1)  # [N, M, in]
    out = torch.baddbmm(bias.unsqueeze(1), flat, weight)  # [N, M, out]
    return out.transpose(0, 1).reshape(*lead, n, -1)


class AgentLinear(nn.Module):
    """y_i = x_i W_i + b_i for every agent i at once; x is [..., N, in] and y is [..., N, out].

    With `shared=True` all agents use one W (stored with an agent axis of size 1).
    """

    def __init__(self, n_agents: int, in_features: int, out_features: int, shared: bool = False) -> None:
        super().__init__()
        rows = 1 if shared else n_agents
        self.weight = nn.Parameter(torch.empty(rows, in_features, out_features))
        self.bias = nn.Parameter(torch.zeros(rows, out_features))
        _orthogonal_(self.weight)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return agent_matmul(x, self.weight, self.bias)


class AgentLSTMCell(nn.Module):
    """One LSTM step for every agent at once (gate order i, f, g, o); input and recurrent weights are stored
    stacked in one matrix so a step is a single batched matmul over [x, h]."""

    def __init__(self, n_agents: int, in_features: int, hidden: int, shared: bool = False) -> None:
        super().__init__()
        rows = 1 if shared else n_agents
        self.hidden = hidden
        weight = torch.empty(rows, in_features + hidden, 4 * hidden)
        _orthogonal_(weight[:, :in_features])
        _orthogonal_(weight[:, in_features:])
        self.weight = nn.Parameter(weight)
        self.bias = nn.Parameter(torch.zeros(rows, 4 * hidden))

    def forward(self, x: torch.Tensor, h: torch.Tensor, c: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        gates = agent_matmul(torch.cat([x, h], dim=-1), self.weight, self.bias)
        i, f, g, o = gates.chunk(4, dim=-1)
        c_new = torch.sigmoid(f) * c + torch.sigmoid(i) * torch.tanh(g)
        h_new = torch.sigmoid(o) * torch.tanh(c_new)
        return h_new, c_new


class NeighbourGather(nn.Module):
    """x [..., N, F] -> [..., N, D*F]: agent i's row holds x_j of its neighbours j (sorted), zero-padded to the
    largest degree D; `mean` gives the neighbourhood average instead. The graph lives in buffers, so it
    travels with the model's state and device."""

    def __init__(self, adjacency: np.ndarray) -> None:
        super().__init__()
        adjacency = np.asarray(adjacency, dtype=bool)
        n = adjacency.shape[0]
        neighbours = [np.flatnonzero(adjacency[i]) for i in range(n)]
        width = max(1, max((len(nb) for nb in neighbours), default=0))
        index = np.zeros((n, width), dtype=np.int64)
        mask = np.zeros((n, width), dtype=np.float32)
        for i, nb in enumerate(neighbours):
            index[i, : len(nb)] = nb
            mask[i, : len(nb)] = 1.0
        degree = mask.sum(axis=1)
        self.width = width
        self.register_buffer("index", torch.from_numpy(index.reshape(-1)))
        self.register_buffer("mask", torch.from_numpy(mask).unsqueeze(-1))  # [N, D, 1]
        self.register_buffer("has_neighbours", torch.from_numpy((degree > 0).astype(np.float32))[:, None])
        self.register_buffer("inv_degree", torch.from_numpy(1.0 / np.maximum(degree, 1.0))[:, None].float())

    def padded(self, x: torch.Tensor) -> torch.Tensor:
        """[..., N, F] -> [..., N, D, F], zeros in the padding slots."""
        n, f = x.shape[-2], x.shape[-1]
        picked = x.index_select(-2, self.index).reshape(*x.shape[:-2], n, self.width, f)
        return picked * self.mask

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.padded(x).flatten(-2)

    def mean(self, x: torch.Tensor) -> torch.Tensor:
        """[..., N, F] -> [..., N, F]: average over the neighbours (zero for an isolated agent)."""
        return self.padded(x).sum(dim=-2) * self.inv_degree
