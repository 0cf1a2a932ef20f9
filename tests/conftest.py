"""Shared fixtures of the test suite."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
from proc_helpers import children, kill_all, wait_gone
from toy_env import VecToyGraphEnv, toy_spec

from actor.envs import register_env

register_env("toy-graph", VecToyGraphEnv, toy_spec)  # a test-only system: learning with a known optimum


@pytest.fixture
def no_orphans() -> Iterator[None]:
    """Fail the test if it leaves descendant processes running (and kill them)."""
    before = children()
    yield
    left = wait_gone(children() - before, 5.0)
    kill_all(left)
    assert not left, f"child processes left running: {sorted(left)}"
