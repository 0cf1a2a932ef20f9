"""Comparing two runs' final checkpoints, shared by the tests that prove a split, resumed or distributed run
trains exactly what a plain one does."""

from __future__ import annotations

from pathlib import Path

import torch

from learner.checkpoint import load_checkpoint


def assert_same_params(a_path: Path, b_path: Path, atol: float = 1e-6) -> None:
    """Same update and step counters and every parameter within atol (0 means bit-identical)."""
    a, b = load_checkpoint(a_path), load_checkpoint(b_path)
    assert (a["updates"], a["env_steps"]) == (b["updates"], b["env_steps"])
    assert a["model"].keys() == b["model"].keys()
    for key, value in a["model"].items():
        torch.testing.assert_close(b["model"][key], value, rtol=0, atol=atol, msg=key)
