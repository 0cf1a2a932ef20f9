"""The networks of PowerNet and its baselines, shared by actor and learner; `build_model` picks one by name."""

from __future__ import annotations

import numpy as np

from common.algorithms import network_class
from common.config import ModelConfig
from common.graph import hop_distances
from common.nets.base import AgentState, GraphActorCritic


def weight_arrays(model: GraphActorCritic) -> dict[str, np.ndarray]:
    """The model's state_dict as NumPy arrays (views of CPU tensors), the form `actor.policy.ActingPolicy.load`
    and the wire take: the acting path reads the same stacked weights the learner trains."""
    return {name: t.detach().cpu().numpy() for name, t in model.state_dict().items()}


def build_model(cfg: ModelConfig, adjacency: np.ndarray, obs_dim: int, n_actions: int) -> GraphActorCritic:
    """The network of `cfg.algorithm` for an agent graph; weights come from torch's global RNG (seed first)."""
    return network_class(cfg.algorithm)(adjacency, obs_dim, n_actions, hidden=cfg.hidden,
                                        share_weights=cfg.share_weights)


__all__ = ["AgentState", "GraphActorCritic", "build_model", "hop_distances", "weight_arrays"]
