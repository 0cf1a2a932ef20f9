"""Peak resident memory (VmHWM) of a training run's processes, read from /proc while they run (Linux only).

A process's VmHWM is gone once it exits, so `TreeMemory` samples the launched process and its descendants
in a background thread and keeps the largest value seen per role: the supervisor (the launched
`powernet train`), the learner and each actor, named from their command lines.
"""

from __future__ import annotations

import threading
from pathlib import Path

PROC = Path("/proc")


def vm_hwm_mib(pid: int) -> float | None:
    """The peak resident set size of `pid` in MiB, or None when it is gone (or /proc has no such field)."""
    try:
        for line in (PROC / str(pid) / "status").read_text().splitlines():
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) / 1024.0
    except (OSError, ValueError, IndexError):
        return None
    return None


def child_pids(pid: int) -> list[int]:
    """The direct children of `pid` (from every thread's children list)."""
    out: list[int] = []
    try:
        for task in (PROC / str(pid) / "task").iterdir():
            try:
                out.extend(int(x) for x in (task / "children").read_text().split())
            except OSError:
                continue
    except OSError:
        return []
    return out


def role(pid: int) -> str | None:
    """'learner' or 'actor-K' for a `python -m launch learner|actor --id K` process, else None."""
    try:
        args = (PROC / str(pid) / "cmdline").read_bytes().split(b"\0")
    except OSError:
        return None
    words = [a.decode(errors="replace") for a in args if a]
    if "learner" in words:
        return "learner"
    if "actor" in words and "--id" in words[:-1]:
        return f"actor-{words[words.index('--id') + 1]}"
    return None


class TreeMemory:
    """Samples VmHWM of `pid` (as "supervisor") and of its learner and actor descendants every `every_s`
    until `stop`; `peaks` maps each role to the largest VmHWM seen, in MiB."""

    def __init__(self, pid: int, every_s: float = 0.2) -> None:
        self.pid, self.every_s = pid, every_s
        self.peaks: dict[str, float] = {}
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def start(self) -> TreeMemory:
        self._thread.start()
        return self

    def stop(self) -> dict[str, float]:
        self._stop.set()
        self._thread.join()
        return {k: round(v, 1) for k, v in sorted(self.peaks.items())}

    def sample(self) -> None:
        """Record the current VmHWM of every process of the tree."""
        todo = [(self.pid, "supervisor")]
        while todo:
            pid, name = todo.pop()
            value = vm_hwm_mib(pid)
            if value is not None and name is not None:
                self.peaks[name] = max(self.peaks.get(name, 0.0), value)
            todo.extend((child, role(child)) for child in child_pids(pid))

    def _run(self) -> None:
        while not self._stop.is_set():
            self.sample()
            self._stop.wait(self.every_s)
