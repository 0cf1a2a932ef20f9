"""The actor-critic skeleton every algorithm shares: per-agent LSTM, actor head, neighbourhood critic, state
reset at episode starts and the time unroll. An algorithm only says what enters each agent's LSTM cell.

Shapes: B environments, N agents, O observation width, A actions, H hidden width; time T leads when present.
The public methods take and return env-major tensors ([..., B, N, F]); inside the unroll the recurrent state
is agent-major ([N, B, F]), the layout of the per-agent batched matmuls.

Message loss (docs/scenarios.md#message-loss): `step` and `unroll` take an optional link mask ([..., B, N, D],
True/1 where agent i received its neighbour slot s's message at that step). Everything an agent reads of a
neighbour passes through `NeighbourGather`, which zeroes a lost slot (the padding's fill) or averages over the
received ones; the neighbourhood critic's neighbour actions and MAPPO's centralised critic are training-time
information and ignore it. None is no loss, computed exactly as before the mask existed.
"""

from __future__ import annotations

from typing import NamedTuple

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from common.graph import hop_distances
from common.nets.layers import AgentLinear, AgentLSTMCell, NeighbourGather, StepLinear, agent_matmul


class AgentState(NamedTuple):
    """Recurrent state of all agents: LSTM h and c [B, N, H], and fp [B, N, A], each agent's policy of the
    previous step (the "fingerprint", uniform at an episode start)."""

    h: torch.Tensor
    c: torch.Tensor
    fp: torch.Tensor

    def detach(self) -> AgentState:
        return AgentState(self.h.detach(), self.c.detach(), self.fp.detach())

    def to(self, device: torch.device | str) -> AgentState:
        return AgentState(self.h.to(device), self.c.to(device), self.fp.to(device))


class GraphActorCritic(nn.Module):
    """Base of all the networks. Subclasses build their input layers in `build_inputs` (returning the LSTM
    input width), encode a window's observations in `encode_obs`, and compute the per-step inputs that
    depend on the previous state (messages, fingerprints) in `messages`.
    """

    def __init__(self, adjacency: np.ndarray, obs_dim: int, n_actions: int, hidden: int = 64,
                 share_weights: bool = False) -> None:
        super().__init__()
        adjacency = np.asarray(adjacency, dtype=bool)
        self.n_agents = n = adjacency.shape[0]
        self.obs_dim = obs_dim
        self.n_actions = n_actions
        self.hidden = hidden
        self.share_weights = share_weights
        self.neighbours = NeighbourGather(adjacency)
        self.register_buffer("hop_distance", torch.from_numpy(hop_distances(adjacency)))
        self.register_buffer("agent_id", torch.eye(n) if share_weights else torch.zeros(n, 0))
        self.in_dim = obs_dim + self.agent_id.shape[1]
        lstm_in = self.build_inputs()
        self.lstm = AgentLSTMCell(n, lstm_in, hidden, share_weights)
        self.actor = AgentLinear(n, hidden, n_actions, share_weights)
        self.critic = self.build_critic()

    def linear(self, in_features: int, out_features: int) -> AgentLinear:
        """A per-agent (or shared) linear layer of this model."""
        return AgentLinear(self.n_agents, in_features, out_features, self.share_weights)

    uses_fingerprint = False  # True where `messages` reads fp (the unroll then tracks it per step)
    # The messages `messages` builds, in the names `common.nets.window_kernel` knows ("fp": relu(fp_fc(gathered
    # fingerprints)), "msg": relu(msg_fc(gathered h))), for networks whose window that kernel can unroll;
    # None for the others, which always unroll in torch.
    window_messages: tuple[str, ...] | None = None
    # Whether `unroll` runs through the compiled window kernel where it can (CPU, float32, window_messages
    # set); the trainers set it from train.unroll (docs/algorithms.md#window-kernel).
    window_kernel = False
    # True where the messages are added to the encoded observation (CommNet, DIAL) and so read the same LSTM
    # weight rows; otherwise they are concatenated after it and read the rows that follow.
    additive_messages = False

    def build_inputs(self) -> int:
        raise NotImplementedError

    def build_critic(self) -> nn.Module:
        """The value head; by default the neighbourhood critic read by `value`."""
        return AgentLinear(self.n_agents, self.hidden + self.neighbours.width * self.n_actions, 1,
                           self.share_weights)

    def encode_obs(self, obs: torch.Tensor, links: torch.Tensor | None = None) -> torch.Tensor:
        """The part of the LSTM input that depends on observations only; applied to a whole window at once.
        `links` [..., B, N, D] is the link mask of those observations (None: every message arrives)."""
        raise NotImplementedError

    def message_layers(self, steps: int, batch: int) -> dict[str, StepLinear]:
        """The layers `messages` applies step by step, prepared for a window of `steps` steps of `batch` envs."""
        return {}

    def messages(self, layers: dict[str, StepLinear], t: int, h: torch.Tensor, fp: torch.Tensor,
                 links: torch.Tensor | None = None) -> list[torch.Tensor]:
        """The LSTM inputs of step t that depend on the previous step's state (agent-major h [N, B, H],
        fp [N, B, A]), in their order in the LSTM weight rows; none for algorithms without communication,
        a single one where `additive_messages`. `links` [N, B, D] (agent-major) masks the neighbours' messages
        of this step (None: all arrive)."""
        return []

    def with_neighbours(self, obs: torch.Tensor, links: torch.Tensor | None = None) -> torch.Tensor:
        """o'_i = [o_i, o_j for j in N(i)], zero-padded to the largest degree; a lost link's o_j reads 0."""
        return torch.cat([obs, self.neighbours(obs, links)], dim=-1)

    def after_optimizer_step(self) -> None:
        """Hook for parameter consensus (ConseNet); a no-op elsewhere."""

    def initial_state(self, batch: int, device: torch.device | str | None = None) -> AgentState:
        """Zero LSTM state and uniform fingerprints for `batch` environments."""
        device = device if device is not None else self.hop_distance.device
        zeros = torch.zeros(batch, self.n_agents, self.hidden, device=device)
        fp = torch.full((batch, self.n_agents, self.n_actions), 1.0 / self.n_actions, device=device)
        return AgentState(zeros, zeros.clone(), fp)

    def reset_where(self, state: AgentState, starts: torch.Tensor) -> AgentState:
        """Zero the state of the environments whose current observation starts an episode."""
        return self._reset(state, (~starts).to(state.h.dtype)[:, None, None])

    def _reset(self, state: AgentState, keep: torch.Tensor) -> AgentState:
        uniform = 1.0 / self.n_actions
        return AgentState(state.h * keep, state.c * keep, state.fp * keep + uniform * (1.0 - keep))

    def _with_id(self, obs: torch.Tensor) -> torch.Tensor:
        if not self.share_weights:
            return obs
        return torch.cat([obs, self.agent_id.expand(*obs.shape[:-2], -1, -1)], dim=-1)

    def step(self, obs: torch.Tensor, state: AgentState, starts: torch.Tensor, links: torch.Tensor | None = None
             ) -> tuple[torch.Tensor, AgentState]:
        """One acting step for all agents of all envs: obs [B, N, O], starts [B] bool, links [B, N, D] (or
        None) -> logits [B, N, A] and the new state (whose fp is the new policy, detached: fingerprints are
        data, not a gradient path)."""
        state = self.reset_where(state, starts)
        x = self.encode_obs(self._with_id(obs), links).transpose(0, 1)  # [N, B, X]
        h, c, fp = (s.transpose(0, 1) for s in state)
        links_am = None if links is None else links.transpose(0, 1)  # [N, B, D]
        messages = self.messages(self.message_layers(1, obs.shape[0]), 0, h, fp, links_am)
        if self.additive_messages:
            x = x + messages[0]
        elif messages:
            x = torch.cat([x, *messages], dim=-1)
        h, c = self.lstm.agent_major(x, h, c)
        logits = self.actor.agent_major(h).transpose(0, 1)
        return logits, AgentState(h.transpose(0, 1), c.transpose(0, 1), F.softmax(logits, dim=-1).detach())

    def value(self, h: torch.Tensor, actions: torch.Tensor, obs: torch.Tensor) -> torch.Tensor:
        """Neighbourhood critic V_i = w_i . [h_i, onehot(a_j) for j in N(i)]; h [..., N, H], actions [..., N].
        The observations obs [..., N, O] are for critics on the global state (MAPPO); this one ignores them."""
        onehot = F.one_hot(actions, self.n_actions).to(h.dtype)
        return self.critic(torch.cat([h, self.neighbours(onehot)], dim=-1)).squeeze(-1)

    def unroll(self, obs: torch.Tensor, starts: torch.Tensor, state: AgentState, links: torch.Tensor | None = None
               ) -> tuple[torch.Tensor, torch.Tensor, AgentState]:
        """Recompute a window as one graph: obs [T, B, N, O], starts [T, B], links [T, B, N, D] (or None) ->
        logits [T, B, N, A], h [T, B, N, H] and the final state. Gradients flow through the messages between
        steps (not through lost ones).

        Only what depends on the previous state runs step by step: the observation encoder, its share of
        the LSTM gates and the heads run once on the window, and each step is one matmul per layer on
        agent-major tensors (see `StepLinear`)."""
        steps, batch = starts.shape
        features = self.encode_obs(self._with_id(obs), links)  # [T, B, N, X]
        weight, bias = self.lstm.weight, self.lstm.bias
        if self.additive_messages:  # x W + m W would cost a second matmul: add x to the messages per step
            x_steps = features.transpose(1, 2).contiguous().unbind(0)  # T x [N, B, X]
            gates = StepLinear(weight, bias.view(1, bias.shape[0], 1, -1).expand(steps, self.n_agents, batch, -1))
        else:  # the observation's share of the gates, for the whole window at once
            x_rows = features.shape[-1]
            gates_x = agent_matmul(features, weight[:, :x_rows], bias).transpose(1, 2).contiguous()
            if self._kernel_applies(obs, state):  # the steps compiled (docs/algorithms.md#window-kernel)
                return self._heads(*self._kernel_steps(gates_x, x_rows, starts, state, links))
            gates = StepLinear(weight[:, x_rows:], gates_x)  # gates_x: [T, N, B, 4H]
        link_steps = [None] * steps if links is None else links.transpose(1, 2).unbind(0)  # T x [N, B, D]
        layers = self.message_layers(steps, batch)
        h, c, fp = (s.transpose(0, 1) for s in state)
        any_start = starts.any(dim=1).tolist()  # one host sync per window, not one per step
        hs = []
        for t in range(steps):
            if any_start[t]:
                h, c, fp = self._reset(AgentState(h, c, fp), (~starts[t]).to(h.dtype)[None, :, None])
            messages = self.messages(layers, t, h, fp, link_steps[t])
            if self.additive_messages:
                messages = [x_steps[t] + messages[0]]
            inputs = torch.cat([*messages, h], dim=-1) if messages else h
            h, c = self.lstm.cell(gates(t, inputs), c)
            if self.uses_fingerprint and t + 1 < steps:  # the last step's fp comes from the logits below
                with torch.no_grad():
                    fp = F.softmax(self.actor.agent_major(h), dim=-1)
            hs.append(h)
        return self._heads(torch.stack(hs), h, c)

    def _heads(self, h_steps: torch.Tensor, h: torch.Tensor, c: torch.Tensor
               ) -> tuple[torch.Tensor, torch.Tensor, AgentState]:
        """`unroll`'s outputs from every step's h, agent-major [T, N, B, H], and the last h, c [N, B, H]: the
        logits [T, B, N, A], h [T, B, N, H] and the final state (its fp the last step's policy)."""
        h_all = h_steps.transpose(1, 2)  # [T, B, N, H]
        logits = self.actor(h_all)
        final = AgentState(h.transpose(0, 1).contiguous(), c.transpose(0, 1).contiguous(),
                           F.softmax(logits[-1], dim=-1).detach())
        return logits, h_all, final

    def warm_window_kernel(self) -> None:
        """Load the window kernel's compiled code now (half a second in a fresh process) by unrolling and
        differentiating a one-step window of zeros, so that it is not paid inside the first timed update.
        Parameters, gradients (left None) and random streams are untouched; a no-op where torch unrolls."""
        obs = torch.zeros(1, 1, self.n_agents, self.obs_dim, device=self.hop_distance.device)
        state = self.initial_state(1)
        if not self._kernel_applies(obs, state):
            return
        logits, _, _ = self.unroll(obs, torch.ones(1, 1, dtype=torch.bool), state)
        logits.sum().backward()
        for param in self.parameters():
            param.grad = None

    def _kernel_applies(self, obs: torch.Tensor, state: AgentState) -> bool:
        """The kernel unrolls where it is asked to and can: a covered network, on CPU, in float32, from a start
        state that needs no gradient (the learner's is detached; the kernel passes none back to it)."""
        return (self.window_kernel and self.window_messages is not None and obs.device.type == "cpu"
                and obs.dtype == torch.float32 and self.lstm.weight.dtype == torch.float32
                and not (state.h.requires_grad or state.c.requires_grad))

    def _kernel_steps(self, gates_x: torch.Tensor, x_rows: int, starts: torch.Tensor, state: AgentState,
                      links: torch.Tensor | None) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """`unroll`'s step-by-step part through `WindowRecurrence` (the same values to float32 rounding), from the
        observation's share of the gates gates_x [T, N, B, 4H]: every step's h [T, N, B, H] and the last h, c."""
        steps, batch = starts.shape
        n, nb = self.n_agents, self.neighbours
        weight = self.lstm.weight
        empty = weight.new_zeros(1, 0, 0)
        use_fp, use_msg = "fp" in self.window_messages, "msg" in self.window_messages
        fp_layer = self.fp_fc if use_fp else None
        msg_layer = self.msg_fc if use_msg else None
        if links is None:
            links_am = np.ones((steps, n, batch, nb.width), dtype=np.float32)
        else:
            links_am = np.ascontiguousarray(links.transpose(1, 2).numpy(), dtype=np.float32)
        am = lambda x: np.ascontiguousarray(x.detach().transpose(0, 1).numpy(), dtype=np.float32)  # noqa: E731
        graph = {"index": nb.index.view(n, nb.width).numpy(), "degree": nb.mask.sum((1, 2)).long().numpy(),
                 "links": links_am, "starts": np.ascontiguousarray(starts.numpy()),
                 "h0": am(state.h), "c0": am(state.c), "fp0": am(state.fp),
                 "wact": self.actor.weight.detach().numpy(), "bact": self.actor.bias.detach().numpy(),
                 "use_fp": use_fp, "use_msg": use_msg, "track_fp": self.uses_fingerprint, "row0": x_rows}
        from common.nets.window_kernel import WindowRecurrence  # Numba, only in processes that use it

        h_steps, c = WindowRecurrence.apply(
            gates_x, weight, fp_layer.weight if use_fp else empty, fp_layer.bias if use_fp else empty[0],
            msg_layer.weight if use_msg else empty, msg_layer.bias if use_msg else empty[0], graph)
        return h_steps, h_steps[-1], c
