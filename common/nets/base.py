"""The actor-critic skeleton every algorithm shares: per-agent LSTM, actor head, neighbourhood critic, state
reset at episode starts and the time unroll. An algorithm only says what enters each agent's LSTM cell.

Shapes: B environments, N agents, O observation width, A actions, H hidden width; time T leads when present.
"""

from __future__ import annotations

from typing import NamedTuple

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from common.graph import hop_distances
from common.nets.layers import AgentLinear, AgentLSTMCell, NeighbourGather, deferred_weight_grads


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
    """Base of all seven networks. Subclasses build their input layers in `build_inputs` (returning the LSTM
    input width) and compute the LSTM input in `lstm_input(obs, state)`, where `state` is the previous step's.
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
        self.critic = AgentLinear(n, hidden + self.neighbours.width * n_actions, 1, share_weights)

    def linear(self, in_features: int, out_features: int) -> AgentLinear:
        """A per-agent (or shared) linear layer of this model."""
        return AgentLinear(self.n_agents, in_features, out_features, self.share_weights)

    uses_fingerprint = False  # True where lstm_input reads state.fp (the unroll then tracks it per step)

    def build_inputs(self) -> int:
        raise NotImplementedError

    def encode_obs(self, obs: torch.Tensor) -> torch.Tensor:
        """The part of the LSTM input that depends on observations only; applied to a whole window at once."""
        raise NotImplementedError

    def lstm_input(self, obs_features: torch.Tensor, state: AgentState) -> torch.Tensor:
        """Combine encoded observations with the previous step's state (messages, fingerprints)."""
        return obs_features

    def with_neighbours(self, obs: torch.Tensor) -> torch.Tensor:
        """o'_i = [o_i, o_j for j in N(i)], zero-padded to the largest degree."""
        return torch.cat([obs, self.neighbours(obs)], dim=-1)

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
        keep = (~starts).to(state.h.dtype)[:, None, None]
        uniform = 1.0 / self.n_actions
        return AgentState(state.h * keep, state.c * keep, state.fp * keep + uniform * (1.0 - keep))

    def _with_id(self, obs: torch.Tensor) -> torch.Tensor:
        if not self.share_weights:
            return obs
        return torch.cat([obs, self.agent_id.expand(*obs.shape[:-2], -1, -1)], dim=-1)

    def _recur(self, features: torch.Tensor, state: AgentState, starts: torch.Tensor | None
               ) -> tuple[torch.Tensor, torch.Tensor]:
        """One recurrent step; `starts=None` means no env starts an episode here, so the reset (a
        multiplication by one) is skipped."""
        if starts is not None:
            state = self.reset_where(state, starts)
        return self.lstm(self.lstm_input(features, state), state.h, state.c)

    def step(self, obs: torch.Tensor, state: AgentState, starts: torch.Tensor
             ) -> tuple[torch.Tensor, AgentState]:
        """One acting step for all agents of all envs: obs [B, N, O], starts [B] bool -> logits [B, N, A] and
        the new state (whose fp is the new policy, detached: fingerprints are data, not a gradient path)."""
        h, c = self._recur(self.encode_obs(self._with_id(obs)), state, starts)
        logits = self.actor(h)
        return logits, AgentState(h, c, F.softmax(logits, dim=-1).detach())

    def value(self, h: torch.Tensor, actions: torch.Tensor) -> torch.Tensor:
        """Neighbourhood critic V_i = w_i . [h_i, onehot(a_j) for j in N(i)]; h [..., N, H], actions [..., N]."""
        onehot = F.one_hot(actions, self.n_actions).to(h.dtype)
        return self.critic(torch.cat([h, self.neighbours(onehot)], dim=-1)).squeeze(-1)

    def unroll(self, obs: torch.Tensor, starts: torch.Tensor, state: AgentState
               ) -> tuple[torch.Tensor, torch.Tensor, AgentState]:
        """Recompute a window as one graph: obs [T, B, N, O], starts [T, B] -> logits [T, B, N, A],
        h [T, B, N, H] and the final state. Gradients flow through the messages between steps. Only the
        recurrent part runs step by step; the observation encoder and the heads run once on the window."""
        features = self.encode_obs(self._with_id(obs))
        any_start = starts.any(dim=1).tolist()  # one host sync per window, not one per step
        hs = []
        with deferred_weight_grads(self):
            for t, features_t in enumerate(features.unbind(0)):
                h, c = self._recur(features_t, state, starts[t] if any_start[t] else None)
                fp = state.fp
                if self.uses_fingerprint:
                    with torch.no_grad():
                        fp = F.softmax(self.actor(h), dim=-1)
                state = AgentState(h, c, fp)
                hs.append(h)
        h_all = torch.stack(hs)
        logits = self.actor(h_all)
        return logits, h_all, AgentState(state.h, state.c, F.softmax(logits[-1], dim=-1).detach())
