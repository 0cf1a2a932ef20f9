"""Forged rollout messages, for the tests that feed a live learner what a broken or hostile actor might send."""

from __future__ import annotations

import numpy as np

from common import wire


def forged_rollout(spec: wire.RolloutSpec, run_id: str, version: int = 0, nan_reward: bool = False,
                   **last_dim: int) -> list:
    """Frames of a one-env rollout of zeros that fits spec, from actor 0 acting with weight `version`;
    `nan_reward` puts one NaN in the rewards, and `name=width` gives array `name` a wrong last dimension."""
    arrays = {name: np.zeros(shape, dtype=wire.ALLOWED_DTYPES[dt]) for name, (shape, dt) in spec.layout(1).items()}
    for name, width in last_dim.items():
        arrays[name] = np.zeros((*arrays[name].shape[:-1], width), dtype=arrays[name].dtype)
    if nan_reward:
        arrays["rewards"].flat[0] = np.nan
    return wire.encode(wire.Message(type=wire.ROLLOUT, run_id=run_id, sender="actor-0", weight_version=version,
                                    meta={"actor": 0}, arrays=arrays))
