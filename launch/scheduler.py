"""Running `powernet` subprocesses a few at a time: job slots, a log per task, progress lines with an ETA,
and an interruption (Ctrl-C, SIGTERM, the parent's death) that stops every child's process group, so no
training process outlives the study that started it."""

from __future__ import annotations

import os
import shlex
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, TextIO

GRACE_S = 15.0  # SIGINT -> SIGTERM -> SIGKILL escalation of a child's process group


def now_text() -> str:
    """The local time with its UTC offset, to the second: how study records date their events."""
    return datetime.now(timezone.utc).astimezone().isoformat(timespec="seconds")


def cli_text(args: Sequence[str]) -> str:
    """A `powernet ...` command line (what `python -m launch ...` runs)."""
    return "powernet " + shlex.join(args)


class Interrupted(Exception):
    """Ctrl-C or SIGTERM reached the study; children have been stopped."""


@dataclass
class Task:
    """A subprocess the scheduler runs: `make_args(slot)` after `python -m launch`, output appended to `log`
    (slot: which of the `jobs` places it runs in)."""

    name: str
    make_args: Callable[[int], list[str]]
    log: Path
    on_start: Callable[[subprocess.Popen], None] = lambda proc: None
    on_exit: Callable[[int, float], None] = lambda rc, wall: None
    progress: Callable[[], str] = lambda: ""
    work: Callable[[], tuple[int, int]] | None = None  # (units done, units in all), e.g. env steps; for the ETA


@dataclass
class RunningTask:
    """A started attempt of a task: its process, open log, start time and job slot."""

    task: Task
    proc: subprocess.Popen
    log: TextIO
    t0: float
    slot: int
    units0: int = 0  # work units done when this attempt started


def estimate_left_s(units_done: float, busy_s: float, units_left: float, parallel: int) -> float | None:
    """Seconds until `units_left` are done at the rate seen so far (units_done in busy_s seconds of one job),
    with `parallel` jobs side by side; None before there is a rate to go by."""
    if units_done <= 0 or busy_s <= 0 or parallel < 1:
        return None
    return units_left / (units_done / busy_s) / parallel


def format_duration(seconds: float) -> str:
    """'2 h 05 min', '14 min', 'under a minute'."""
    minutes = int(round(seconds / 60))
    if minutes < 1:
        return "under a minute"
    return f"{minutes // 60} h {minutes % 60:02d} min" if minutes >= 60 else f"{minutes} min"


def child_setup() -> None:
    """In the child before exec: default SIGINT (so Python raises KeyboardInterrupt even when the study was
    started with SIGINT ignored), and SIGTERM when the study process dies (Linux), so no run outlives it."""
    signal.signal(signal.SIGINT, signal.SIG_DFL)
    if sys.platform.startswith("linux"):
        try:
            import ctypes

            ctypes.CDLL(None, use_errno=True).prctl(1, signal.SIGTERM)  # PR_SET_PDEATHSIG
        except (OSError, AttributeError):
            pass


def stop_group(proc: subprocess.Popen, grace_s: float = GRACE_S) -> None:
    """Stop a child and its own children: SIGINT to its process group, then SIGTERM, then SIGKILL."""
    for sig, wait_s in ((signal.SIGINT, grace_s), (signal.SIGTERM, 5.0), (signal.SIGKILL, 5.0)):
        try:
            os.killpg(proc.pid, sig)
        except (ProcessLookupError, PermissionError):
            pass
        try:
            proc.wait(timeout=wait_s)
        except subprocess.TimeoutExpired:
            continue
        except KeyboardInterrupt:  # a second Ctrl-C: go straight to SIGKILL
            continue
        break
    try:  # whatever of the group is left (e.g. actors of a sync run whose supervisor already exited)
        os.killpg(proc.pid, signal.SIGKILL)
    except (ProcessLookupError, PermissionError):
        pass


@contextmanager
def interruptible() -> Iterator[None]:
    """Ctrl-C and SIGTERM both raise KeyboardInterrupt in the study process while inside the block."""
    def raise_interrupt(signum: int, frame: Any) -> None:
        raise KeyboardInterrupt

    old_int = signal.signal(signal.SIGINT, signal.default_int_handler)
    old_term = signal.signal(signal.SIGTERM, raise_interrupt)
    try:
        yield
    finally:
        signal.signal(signal.SIGINT, old_int)
        signal.signal(signal.SIGTERM, old_term)


def _start(task: Task, slot: int, env: Mapping[str, str]) -> RunningTask:
    """Start `python -m launch ARGS` of a task in its own process group, its output appended to its log."""
    args = task.make_args(slot)
    task.log.parent.mkdir(parents=True, exist_ok=True)
    log = task.log.open("a")
    log.write(f"\n===== {now_text()} {cli_text(args)}\n")
    log.flush()
    proc = subprocess.Popen([sys.executable, "-m", "launch", *args], stdout=log, stderr=subprocess.STDOUT,
                            stdin=subprocess.DEVNULL, env=dict(env), start_new_session=True, preexec_fn=child_setup)
    started = RunningTask(task, proc, log, time.monotonic(), slot, task.work()[0] if task.work is not None else 0)
    task.on_start(proc)
    return started


def run_tasks(tasks: Sequence[Task], jobs: int, say: Callable[[str], None], progress_every_s: float,
              env: Mapping[str, str], label: str) -> list[str]:
    """Run tasks `jobs` at a time; returns the names of failed tasks. On Ctrl-C/SIGTERM every running child
    group is stopped and Interrupted raised."""
    queue = list(tasks)
    running: list[RunningTask] = []
    failed: list[str] = []
    done = 0
    units_done, busy_s = 0, 0.0  # work finished by ended attempts of this invocation, and their job-seconds
    next_report = time.monotonic() + progress_every_s
    try:
        while queue or running:
            free = sorted(set(range(jobs)) - {r.slot for r in running})
            while queue and free:
                running.append(_start(queue.pop(0), free.pop(0), env))
            for item in list(running):
                rc = item.proc.poll()
                if rc is None:
                    continue
                running.remove(item)
                item.log.close()
                wall = time.monotonic() - item.t0
                if item.task.work is not None:
                    units_done += item.task.work()[0] - item.units0
                    busy_s += wall
                done += 1
                if rc != 0:
                    failed.append(item.task.name)
                    say(f"{label} {done}/{len(tasks)}: {item.task.name} FAILED (exit {rc}); see {item.task.log}")
                else:
                    say(f"{label} {done}/{len(tasks)}: {item.task.name} done in {wall:.0f} s")
                item.task.on_exit(rc, wall)
            if running and time.monotonic() >= next_report:
                next_report = time.monotonic() + progress_every_s
                states = ", ".join(f"{r.task.name} {r.task.progress()}".strip() for r in running)
                line = f"{label}: {done}/{len(tasks)} done, {len(queue)} queued; running: {states}"
                left = time_left_s(running, queue, units_done, busy_s, jobs)
                say(line + (f"; about {format_duration(left)} left" if left is not None else ""))
            time.sleep(0.1)
    except KeyboardInterrupt:
        say(f"interrupted: stopping {len(running)} running process group(s)")
        for item in running:
            stop_group(item.proc)
            item.log.close()
            item.task.on_exit(item.proc.returncode if item.proc.returncode is not None else -signal.SIGINT,
                              time.monotonic() - item.t0)
        raise Interrupted from None
    return failed


def time_left_s(running: Sequence[RunningTask], queue: Sequence[Task], units_done: int, busy_s: float,
                jobs: int) -> float | None:
    """The ETA of the tasks that report work: their units still to do at the rate of this invocation so far."""
    now = time.monotonic()
    left = 0
    for item in running:
        if item.task.work is not None:
            have, total = item.task.work()
            units_done += have - item.units0
            busy_s += now - item.t0
            left += max(0, total - have)
    for task in queue:
        if task.work is not None:
            have, total = task.work()
            left += max(0, total - have)
    return estimate_left_s(units_done, busy_s, left, min(jobs, len(running) + len(queue)))
