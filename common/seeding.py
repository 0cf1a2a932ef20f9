"""The one seeding block: torch, numpy and Python's `random` from one seed, and their states for
checkpoints (a resumed run must continue with exactly the random numbers an uninterrupted run would use)."""

from __future__ import annotations

import random
from collections.abc import Mapping
from typing import Any

import numpy as np
import torch


def seed_everything(seed: int) -> None:
    """Seed the global generators (the networks' initial weights come from torch's). Action sampling uses
    separate streams, one per env group or actor (`actor.groups.group_sampler`)."""
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)


def global_rng_state() -> dict[str, Any]:
    """The global Python, NumPy and torch generators, as picklable values (action samplers are separate:
    each env group or actor checkpoints its own)."""
    state = {"python": random.getstate(), "numpy": np.random.get_state(), "torch": torch.get_rng_state()}
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def set_global_rng_state(state: Mapping[str, Any]) -> None:
    """Restore what `global_rng_state` saved."""
    random.setstate(state["python"])
    np.random.set_state(state["numpy"])
    torch.set_rng_state(state["torch"])
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])
