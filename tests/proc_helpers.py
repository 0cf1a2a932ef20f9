"""Process helpers shared by the multi-process tests: descendants of the test process, liveness of recorded
PIDs (a zombie counts as gone); the `no_orphans` fixture built on them is in conftest.py."""

from __future__ import annotations

import os
import signal
import time
from collections.abc import Iterable


def _stat(pid: int) -> list[str] | None:
    """Fields of /proc/PID/stat after the command name (state first, then the parent pid), or None."""
    try:
        stat = open(f"/proc/{pid}/stat").read()
    except OSError:
        return None
    return stat[stat.rindex(")") + 2:].split()


def children() -> set[int]:
    """Live (non-zombie) descendants of this process, read from /proc."""
    parent: dict[int, int] = {}
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            fields = _stat(int(entry))
            if fields is not None and fields[0] != "Z":
                parent[int(entry)] = int(fields[1])
    found: set[int] = set()
    frontier = {os.getpid()}
    while frontier:
        frontier = {pid for pid, ppid in parent.items() if ppid in frontier} - found
        found |= frontier
    return found


def alive(pid: int) -> bool:
    """True while `pid` runs (a zombie, exited but not yet reaped, is not alive)."""
    fields = _stat(pid)
    return fields is not None and fields[0] != "Z"


def wait_gone(pids: Iterable[int], timeout_s: float) -> set[int]:
    """Wait up to `timeout_s` for every pid to exit; return those still alive."""
    pids = set(pids)
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline and any(alive(p) for p in pids):
        time.sleep(0.05)
    return {p for p in pids if alive(p)}


def kill_all(pids: Iterable[int]) -> None:
    """SIGKILL whatever of `pids` still runs (clean-up in a finally)."""
    for pid in pids:
        if alive(pid):
            try:
                os.kill(pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
