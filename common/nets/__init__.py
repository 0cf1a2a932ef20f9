"""The networks of PowerNet and its baselines, shared by actor and learner; `build_model` picks one by name."""

from __future__ import annotations

import numpy as np

from common.config import ModelConfig
from common.graph import hop_distances
from common.nets.base import AgentState, GraphActorCritic
from common.nets.commnet import CommNet
from common.nets.consenet import ConseNet
from common.nets.dial import DIAL
from common.nets.fprint import FPrint
from common.nets.ia2c import IA2C
from common.nets.neurcomm import NeurComm
from common.nets.powernet import PowerNet

NETWORKS: dict[str, type[GraphActorCritic]] = {
    "powernet": PowerNet,
    "neurcomm": NeurComm,
    "commnet": CommNet,
    "dial": DIAL,
    "consenet": ConseNet,
    "fprint": FPrint,
    "ia2c": IA2C,
}


def build_model(cfg: ModelConfig, adjacency: np.ndarray, obs_dim: int, n_actions: int) -> GraphActorCritic:
    """The network of `cfg.algorithm` for an agent graph; weights come from torch's global RNG (seed first)."""
    return NETWORKS[cfg.algorithm](adjacency, obs_dim, n_actions, hidden=cfg.hidden,
                                   share_weights=cfg.share_weights)


__all__ = ["AgentState", "GraphActorCritic", "NETWORKS", "build_model", "hop_distances"]
