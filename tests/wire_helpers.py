"""Forged rollout messages, for the tests that feed a live learner what a broken or hostile actor might send."""

from __future__ import annotations

from typing import Any

import numpy as np

from common import wire


def valid_meta(actor: int = 0) -> dict[str, Any]:
    """Rollout meta an honest actor could send for a window in which nothing happened."""
    return {"actor": actor, "episodes": 0, "episode_return_sum": 0.0, "violations": 0, "diverged": 0,
            "episodes_done": 0, "at_boundary": True, "t_simulate": 0.5}


def forged_arrays(spec: wire.RolloutSpec) -> dict[str, np.ndarray]:
    """The arrays of a one-env rollout that fits spec and its value ranges (zeros; uniform fingerprints)."""
    arrays = {name: np.zeros(shape, dtype=wire.ALLOWED_DTYPES[dt]) for name, (shape, dt) in spec.layout(1).items()}
    if "fp0" in arrays:
        arrays["fp0"][:] = 1.0 / arrays["fp0"].shape[-1]
    return arrays


def forged_rollout(spec: wire.RolloutSpec, run_id: str, version: int = 0, nan_reward: bool = False,
                   seq: int = 0, actor: int = 0, meta: dict[str, Any] | None = None,
                   arrays: dict[str, np.ndarray] | None = None, **last_dim: int) -> list:
    """Frames of a one-env rollout of zeros that fits spec, from actor `actor` acting with weight `version`;
    `nan_reward` puts one NaN in the rewards, `name=width` gives array `name` a wrong last dimension, `meta`
    replaces meta fields (the value `...` removes one) and `arrays` replaces arrays."""
    arrays = {**forged_arrays(spec), **(arrays or {})}
    for name, width in last_dim.items():
        arrays[name] = np.zeros((*arrays[name].shape[:-1], width), dtype=arrays[name].dtype)
    if nan_reward:
        arrays["rewards"].flat[0] = np.nan
    fields = {**valid_meta(actor), **(meta or {})}
    fields = {k: v for k, v in fields.items() if v is not ...}
    return wire.encode(wire.Message(type=wire.ROLLOUT, run_id=run_id, sender=f"actor-{actor}", seq=seq,
                                    weight_version=version, meta=fields, arrays=arrays))
