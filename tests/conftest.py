"""Shared fixtures of the test suite."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
from proc_helpers import children, kill_all, wait_gone


@pytest.fixture
def no_orphans() -> Iterator[None]:
    """Fail the test if it leaves descendant processes running (and kill them)."""
    before = children()
    yield
    left = wait_gone(children() - before, 5.0)
    kill_all(left)
    assert not left, f"child processes left running: {sorted(left)}"
