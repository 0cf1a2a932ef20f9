"""Where a study's run stands, read from its directory: the FINISHED.json marker, the study-run.json record,
the env steps its metrics.csv and checkpoint reached, and whether its evaluation is current."""

from __future__ import annotations

import os
from collections.abc import Sequence
from pathlib import Path

from launch.jsonfile import read_json, write_json

FINISHED = "FINISHED.json"
RUN_SPEC = "study-run.json"


def last_metrics_row(metrics: Path) -> dict[str, str] | None:
    """The last row of a metrics.csv whose env_steps cell is a number, as {column: cell}, read from the file's
    tail (None when the file is absent, empty or has no such row)."""
    try:
        with metrics.open("rb") as fh:
            header = fh.readline().decode().strip().split(",")
            fh.seek(0, os.SEEK_END)
            size = fh.tell()
            fh.seek(max(0, size - 8192))
            lines = [ln for ln in fh.read().decode(errors="replace").splitlines() if ln.strip()]
    except OSError:
        return None
    if "env_steps" not in header or len(lines) < 2:
        return None
    col = header.index("env_steps")
    for line in reversed(lines):
        cells = line.split(",")
        try:
            float(cells[col])
        except (IndexError, ValueError):
            continue
        return dict(zip(header, cells, strict=False))  # a cut-off row keeps the cells it has
    return None


def last_env_steps(metrics: Path) -> int:
    """env_steps of the last row of a metrics.csv (0 when absent or empty)."""
    row = last_metrics_row(metrics)
    return int(float(row["env_steps"])) if row is not None else 0


def checkpoint_env_steps(run_dir: Path) -> int:
    """env_steps stored in the run's latest checkpoint (0 when it has none)."""
    latest = run_dir / "checkpoints" / "latest.pt"
    if not latest.is_file():
        return 0
    from learner.checkpoint import load_checkpoint

    try:
        return int(load_checkpoint(latest).get("env_steps", 0))
    except Exception:  # noqa: BLE001 - an unreadable checkpoint means "not finished"
        return 0


def run_state(run_dir: Path, steps: int) -> str:
    """finished, resume (a checkpoint to continue from) or new."""
    marker = read_json(run_dir / FINISHED)
    if marker is not None and int(marker.get("env_steps", 0)) >= steps:
        return "finished"
    if not (run_dir / "checkpoints" / "latest.pt").is_file():
        return "new"
    if marker is None and last_env_steps(run_dir / "metrics.csv") >= steps:
        done = checkpoint_env_steps(run_dir)  # trained outside the study, or the marker was never written
        if done >= steps:
            write_json(run_dir / FINISHED, {"env_steps": done, "note": "found finished (no study marker)"})
            return "finished"
    return "resume"


def eval_is_current(run_dir: Path, eval_seeds: Sequence[int]) -> bool:
    """True when run/eval/summary.json used these seeds and is newer than the latest checkpoint, or the run
    has no checkpoint (restored from an archive: its evaluation is the last there will be)."""
    summary_path = run_dir / "eval" / "summary.json"
    latest = run_dir / "checkpoints" / "latest.pt"
    summary = read_json(summary_path)
    if summary is None or summary.get("seeds") != list(eval_seeds) or summary.get("checkpoint") != "latest":
        return False
    return not latest.is_file() or summary_path.stat().st_mtime >= latest.stat().st_mtime
