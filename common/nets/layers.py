"""Shared building blocks: per-agent linear layers and LSTM cells batched over an agent dimension, and the
padded neighbour gather that turns "the neighbours' x" into one tensor op.

Each agent owns its weights, stored stacked as one tensor with a leading agent axis, so a forward pass for all
agents of all environments is one batched matmul instead of a Python loop over agent modules.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager

import numpy as np
import torch
from torch import nn
from torch.autograd.function import once_differentiable


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


def _graph_task() -> int:
    """Id of the backward pass now running (so pending pairs of two passes over one graph never mix)."""
    return torch._C._current_graph_task_id()


class _Alias(torch.autograd.Function):
    """Identity on the weight in forward; in backward, turns the window's pending (input, output-grad) pairs
    into the weight gradient with one batched matmul. Autograd runs it only after every per-step use."""

    @staticmethod
    def forward(ctx, weight: torch.Tensor, window: WeightWindow) -> torch.Tensor:
        ctx.window = window
        ctx.set_materialize_grads(False)
        return weight.view_as(weight)

    @staticmethod
    @once_differentiable
    def backward(ctx, grad: torch.Tensor | None) -> tuple[torch.Tensor | None, None]:
        pairs = ctx.window.pending.pop(_graph_task(), [])
        if not pairs:
            return grad, None
        xs = torch.cat([x for x, _ in pairs], dim=1)  # [R, sum M, in]
        gs = torch.cat([g for _, g in pairs], dim=1)  # [R, sum M, out]
        dw = torch.bmm(xs.transpose(1, 2), gs)
        return (dw if grad is None else dw + grad), None


class _StepMatmul(torch.autograd.Function):
    """agent_matmul(x, weight, bias) for x [..., N, in] as one autograd node (the agent-major transposes
    happen inside, on plain tensors), with the weight gradient deferred to `_Alias`."""

    @staticmethod
    def forward(ctx, x: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor, window: WeightWindow
                ) -> torch.Tensor:
        rows, n = weight.shape[0], x.shape[-2]
        flat = x.reshape(1, -1, x.shape[-1]) if rows == 1 else x.reshape(-1, n, x.shape[-1]).transpose(0, 1)
        ctx.save_for_backward(flat, weight)
        ctx.window = window
        ctx.x_shape = x.shape
        ctx.set_materialize_grads(False)
        out = torch.baddbmm(bias.unsqueeze(1), flat, weight)  # [R, M, out]
        if rows == 1:
            return out.reshape(*x.shape[:-1], -1)
        return out.transpose(0, 1).reshape(*x.shape[:-1], -1)

    @staticmethod
    @once_differentiable
    def backward(ctx, grad: torch.Tensor | None) -> tuple[torch.Tensor | None, None, torch.Tensor | None, None]:
        if grad is None:
            return None, None, None, None
        flat, weight = ctx.saved_tensors
        rows, n = weight.shape[0], ctx.x_shape[-2]
        if rows == 1:
            g = grad.reshape(1, -1, grad.shape[-1])
        else:
            g = grad.reshape(-1, n, grad.shape[-1]).transpose(0, 1)  # [N, M, out]
        dx = None
        if ctx.needs_input_grad[0]:
            dflat = torch.bmm(g, weight.transpose(1, 2))
            dx = dflat.reshape(ctx.x_shape) if rows == 1 else dflat.transpose(0, 1).reshape(ctx.x_shape)
        if ctx.needs_input_grad[1]:
            ctx.window.pending.setdefault(_graph_task(), []).append((flat, g))
        dbias = g.sum(1) if ctx.needs_input_grad[2] else None
        return dx, None, dbias, None


class WeightWindow:
    """One layer's weight over one unrolled window. Per-step matmuls with a small batch (one env: a
    matrix-vector product per agent) would each write a full [N, in, out] outer product as the weight
    gradient, plus its accumulation; that dominated the update. Here each step only stores its input and
    output gradient, and the weight gradient is summed over the whole window in one bmm. Values and
    gradients are unchanged up to float summation order."""

    def __init__(self) -> None:
        self.alias: torch.Tensor | None = None
        self.pending: dict[int, list[tuple[torch.Tensor, torch.Tensor]]] = {}

    def matmul(self, x: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor) -> torch.Tensor:
        """Same as `agent_matmul(x, weight, bias)`; falls back to it where no gradient is recorded."""
        if not (torch.is_grad_enabled() and weight.requires_grad):
            return agent_matmul(x, weight, bias)
        if self.alias is None:
            self.alias = _Alias.apply(weight, self)
        return _StepMatmul.apply(x, self.alias, bias, self)


@contextmanager
def deferred_weight_grads(model: nn.Module) -> Iterator[None]:
    """Within the block, every per-agent layer of `model` defers its weight gradient to one batched matmul
    per window (see `WeightWindow`); use it around a recurrent unroll that runs the layers step by step."""
    layers = [m for m in model.modules() if isinstance(m, (AgentLinear, AgentLSTMCell))]
    for layer in layers:
        layer.window = WeightWindow()
    try:
        yield
    finally:
        for layer in layers:
            layer.window = None


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

    window: WeightWindow | None = None  # set by `deferred_weight_grads` during an unroll

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.window is not None:
            return self.window.matmul(x, self.weight, self.bias)
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

    window: WeightWindow | None = None  # set by `deferred_weight_grads` during an unroll

    def forward(self, x: torch.Tensor, h: torch.Tensor, c: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        xh = torch.cat([x, h], dim=-1)
        if self.window is not None:
            gates = self.window.matmul(xh, self.weight, self.bias)
        else:
            gates = agent_matmul(xh, self.weight, self.bias)
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
        self.any_isolated = bool((degree == 0).any())
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

    def zero_isolated(self, x: torch.Tensor) -> torch.Tensor:
        """x [..., N, F] with the rows of agents without neighbours zeroed (their message is empty); the
        multiplication is skipped on graphs with no isolated agent, where it would be by one."""
        return x * self.has_neighbours if self.any_isolated else x

    def mean(self, x: torch.Tensor) -> torch.Tensor:
        """[..., N, F] -> [..., N, F]: average over the neighbours (zero for an isolated agent)."""
        return self.padded(x).sum(dim=-2) * self.inv_degree
