"""Shared building blocks: per-agent linear layers and LSTM weights batched over an agent dimension, the
padded neighbour gather that turns "the neighbours' x" into one tensor op, and `StepLinear`, which runs a
layer step by step through a recurrent window at the cost of one plain matmul per step.

Each agent owns its weights, stored stacked as one tensor with a leading agent axis, so a forward pass for all
agents of all environments is one batched matmul instead of a Python loop over agent modules. Inside the
unroll, activations are agent-major ([N, B, F]) so these matmuls need no transposes.
"""

from __future__ import annotations

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


def agent_major_matmul(x: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor) -> torch.Tensor:
    """Agent-major x [N, B, in] times per-agent weight [N, in, out] plus bias [N, out] (or one shared)."""
    if weight.shape[0] == 1:
        return x @ weight[0] + bias[0]
    return torch.baddbmm(bias.unsqueeze(1), x, weight)


def window_weight_grad(x: torch.Tensor, grad: torch.Tensor, rows: int) -> torch.Tensor:
    """The gradient of a per-agent weight [rows, in, out] over a whole window, one batched matmul: the sum over
    steps and envs of x^T grad for each agent, from its inputs x [T, N, B, in] and output gradients grad
    [T, N, B, out]; with rows = 1 (a shared weight) summed over the agents too."""
    if rows == 1:
        xs, gs = x.reshape(1, -1, x.shape[-1]), grad.reshape(1, -1, grad.shape[-1])
    else:
        xs = x.transpose(0, 1).reshape(rows, -1, x.shape[-1])  # [N, T*B, in]
        gs = grad.transpose(0, 1).reshape(rows, -1, grad.shape[-1])
    return torch.bmm(xs.transpose(1, 2), gs)


class _WindowWeightGrad(torch.autograd.Function):
    """Identity on `base` [T, N, B, out] (what each step adds to its matmul output). Its gradient is therefore
    every step's output gradient at once, and autograd runs this node only after all steps, so the weight
    gradient is one batched matmul over the inputs the steps recorded in `inputs`."""

    @staticmethod
    def forward(ctx, weight: torch.Tensor, base: torch.Tensor, inputs: list[torch.Tensor],
                slot_mask: torch.Tensor | None) -> torch.Tensor:
        ctx.inputs = inputs
        ctx.slot_mask = slot_mask
        ctx.rows = weight.shape[0]
        ctx.set_materialize_grads(False)
        return base.view_as(base)

    @staticmethod
    @once_differentiable
    def backward(ctx, grad: torch.Tensor | None) -> tuple[torch.Tensor | None, torch.Tensor | None, None, None]:
        if grad is None:
            return None, None, None, None
        dw = None
        if ctx.needs_input_grad[0]:
            x = torch.stack(ctx.inputs)  # [T, N, B, in], same layout as grad
            if ctx.slot_mask is not None:  # zero the padding slots, which the forward's weight ignored
                n, d = ctx.slot_mask.shape[:2]
                x = (x.view(*x.shape[:3], d, -1) * ctx.slot_mask.view(n, 1, d, 1)).view(x.shape)
            dw = window_weight_grad(x, grad, ctx.rows)
        return dw, grad, None, None


class StepLinear:
    """A per-agent (or shared) linear layer applied step by step over one window: step t maps x [N, B, in]
    to x W + base[t]. `base` [T, N, B, out] is the bias, or a precomputed part of the output.

    Per-step matmuls with one or few envs are tiny, so their cost is per-op overhead. Each step is therefore a
    single baddbmm on the detached weight; the weight gradient is summed over the window in one bmm by
    `_WindowWeightGrad` (a full [N, in, out] outer product per step would dominate the update otherwise).

    `slot_mask` [N, D, 1] marks which of the D equal input slots of each agent are real (a neighbour gather's
    padding): the others are ignored, so they may hold anything finite. Over several steps the weight rows
    are masked once; for a single step (acting) the smaller input is masked instead. Values and gradients
    equal a plain per-step layer on zero-padded inputs up to float summation order."""

    def __init__(self, weight: torch.Tensor, base: torch.Tensor, slot_mask: torch.Tensor | None = None) -> None:
        self.record = torch.is_grad_enabled() and (weight.requires_grad or base.requires_grad)
        self.weight = weight.detach() if self.record else weight  # [1 or N, in, out]
        self.input_mask = None
        if slot_mask is not None:
            (n, d), (rows, width, out) = slot_mask.shape[:2], self.weight.shape
            if base.shape[0] > 1:
                masked = self.weight.view(rows, d, width // d, out) * slot_mask.view(n, d, 1, 1)
                self.weight = masked.view(n, width, out)
            else:
                self.input_mask = slot_mask.view(n, 1, d, 1)
        self.inputs: list[torch.Tensor] = []
        if self.record:
            base = _WindowWeightGrad.apply(weight, base, self.inputs, slot_mask)
        self.base = base.unbind(0)  # one node whose backward stacks all steps' gradients (t-indexing would not)

    def __call__(self, t: int, x: torch.Tensor) -> torch.Tensor:
        if self.input_mask is not None:
            x = (x.view(*x.shape[:2], self.input_mask.shape[2], -1) * self.input_mask).view(x.shape)
        if self.record:  # detached: a graph-holding input would close a cycle through this window's node
            self.inputs.append(x.detach())
        base = self.base[t]
        if self.weight.shape[0] == 1:
            n, b = x.shape[0], x.shape[1]
            out = torch.baddbmm(base.reshape(1, n * b, -1), x.reshape(1, n * b, -1), self.weight)
            return out.view(n, b, -1)
        return torch.baddbmm(base, x, self.weight)


class AgentLinear(nn.Module):
    """y_i = x_i W_i + b_i for every agent i at once; x is [..., N, in] and y is [..., N, out].

    With `shared=True` all agents use one W (stored with an agent axis of size 1).
    """

    def __init__(self, n_agents: int, in_features: int, out_features: int, shared: bool = False) -> None:
        super().__init__()
        rows = 1 if shared else n_agents
        self.n_agents = n_agents
        self.weight = nn.Parameter(torch.empty(rows, in_features, out_features))
        self.bias = nn.Parameter(torch.zeros(rows, out_features))
        _orthogonal_(self.weight)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return agent_matmul(x, self.weight, self.bias)

    def over_window(self, steps: int, batch: int, slot_mask: torch.Tensor | None = None) -> StepLinear:
        """This layer as a `StepLinear` for a window of `steps` steps of `batch` envs (agent-major)."""
        rows, out = self.bias.shape
        base = self.bias.view(1, rows, 1, out).expand(steps, self.n_agents, batch, out)
        return StepLinear(self.weight, base, slot_mask)

    def agent_major(self, x: torch.Tensor) -> torch.Tensor:
        """x [N, B, in] -> [N, B, out] (agent-major)."""
        return agent_major_matmul(x, self.weight, self.bias)


class AgentLSTMCell(nn.Module):
    """LSTM weights for every agent (gate order i, f, g, o); input and recurrent weights are stored stacked
    in one matrix [x rows; h rows], so the part of the gates that depends on the input alone can be computed
    for a whole window at once, and a step is a single batched matmul over the rest."""

    def __init__(self, n_agents: int, in_features: int, hidden: int, shared: bool = False) -> None:
        super().__init__()
        rows = 1 if shared else n_agents
        self.hidden = hidden
        weight = torch.empty(rows, in_features + hidden, 4 * hidden)
        _orthogonal_(weight[:, :in_features])
        _orthogonal_(weight[:, in_features:])
        self.weight = nn.Parameter(weight)
        self.bias = nn.Parameter(torch.zeros(rows, 4 * hidden))

    def agent_major(self, x: torch.Tensor, h: torch.Tensor, c: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """One step from the whole input x [N, B, in] and the state h, c [N, B, H] (agent-major)."""
        return self.cell(agent_major_matmul(torch.cat([x, h], dim=-1), self.weight, self.bias), c)

    @staticmethod
    def cell(gates: torch.Tensor, c: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """The new (h, c) from the pre-activation gates [..., 4H] and the previous c."""
        i, f, g, o = gates.chunk(4, dim=-1)
        c_new = torch.sigmoid(f) * c + torch.sigmoid(i) * torch.tanh(g)
        return torch.sigmoid(o) * torch.tanh(c_new), c_new


class NeighbourGather(nn.Module):
    """x [..., N, F] -> [..., N, D*F]: agent i's row holds x_j of its neighbours j (sorted), zero-padded to the
    largest degree D; `mean_am` gives the neighbourhood average instead. The `*_am` variants take agent-major
    x [N, B, F] and leave the padding slots unzeroed (the `StepLinear` reading them ignores them, given
    `mask`). The graph lives in buffers, so it travels with the model's state and device.

    Every gather takes an optional link mask (message loss, docs/scenarios.md#message-loss): 1 where agent i
    received neighbour slot s's message at that step, 0 where it was lost; env-major [..., B, N, D] for
    `forward`/`padded`, agent-major [N, B, D] for the `*_am` variants. A lost slot reads 0, the padding's fill,
    and the mean is over the received slots (0 when none). None is the graph alone, computed as before."""

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
        # mask / degree per slot, for the agent-major mean (derived, so not part of checkpoints)
        weights = mask / np.maximum(degree, 1.0)[:, None]
        self.register_buffer("mean_weights", torch.from_numpy(weights[:, :, None, None]), persistent=False)

    def padded(self, x: torch.Tensor, links: torch.Tensor | None = None) -> torch.Tensor:
        """[..., N, F] -> [..., N, D, F], zeros in the padding slots (and in lost links' slots)."""
        n, f = x.shape[-2], x.shape[-1]
        picked = x.index_select(-2, self.index).reshape(*x.shape[:-2], n, self.width, f)
        if links is not None:
            return picked * (self.mask * links.to(x.dtype).unsqueeze(-1))
        return picked * self.mask

    def forward(self, x: torch.Tensor, links: torch.Tensor | None = None) -> torch.Tensor:
        return self.padded(x, links).flatten(-2)

    def gather_am(self, x: torch.Tensor, links: torch.Tensor | None = None) -> torch.Tensor:
        """Agent-major [N, B, F] -> [N, B, D*F], padding slots unspecified (finite); lost links' slots 0."""
        n, b, f = x.shape
        picked = x.index_select(0, self.index)  # [N*D, B, F]
        if links is not None:  # [N, B, D] -> the gathered layout [N, D, B, 1]
            picked = picked.view(n, self.width, b, f) * links.to(x.dtype).transpose(1, 2).unsqueeze(-1)
        if b == 1:  # already [N, 1, D*F] in memory; skipping the reshapes saves ops in both passes
            return picked.view(n, 1, self.width * f)
        return picked.view(n, self.width, b, f).transpose(1, 2).reshape(n, b, self.width * f)

    def mean_am(self, x: torch.Tensor, links: torch.Tensor | None = None) -> torch.Tensor:
        """Agent-major [N, B, F] -> [N, B, F]: the neighbourhood average (zero for an isolated agent); with
        links [N, B, D], the average of the received slots (zero when none arrived)."""
        n, b, f = x.shape
        weights = self.mean_weights
        if links is not None:
            received = links.to(x.dtype) * self.mask.view(n, 1, self.width)  # [N, B, D]
            weights = (received / received.sum(-1, keepdim=True).clamp(min=1.0)).transpose(1, 2).unsqueeze(-1)
        return (x.index_select(0, self.index).view(n, self.width, b, f) * weights).sum(1)

    def zero_isolated(self, x: torch.Tensor) -> torch.Tensor:
        """x [..., N, F] with the rows of agents without neighbours zeroed (their message is empty); the
        multiplication is skipped on graphs with no isolated agent, where it would be by one."""
        return x * self.has_neighbours if self.any_isolated else x

    def zero_isolated_am(self, x: torch.Tensor) -> torch.Tensor:
        """`zero_isolated` for agent-major x [N, B, F]."""
        return x * self.has_neighbours.unsqueeze(-1) if self.any_isolated else x
