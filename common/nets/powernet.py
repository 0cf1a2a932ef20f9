"""PowerNet (Chen et al. 2021): the NeurComm communication network. What makes it PowerNet lives in its
training recipe, not here: the spatially discounted reward (train.spatial_discount) and the action smoothing
applied by the environment (env.smoothing_beta), both set in configs/powernet_*.toml."""

from __future__ import annotations

from common.nets.neurcomm import NeurComm


class PowerNet(NeurComm):
    """Same network as NeurComm; a distinct class so checkpoints and logs name the algorithm."""
