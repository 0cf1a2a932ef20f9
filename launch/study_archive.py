"""A compact copy of a study, small enough to commit: what the report reads, without checkpoints.

A full-budget study outlives one session of this machine (paper_mg6 at 1e6 steps is about 4 h on 2 cores),
and a study directory does not travel between machines: its checkpoints are 4 MB a run and its metrics.csv
files 9 MB. The archive keeps, per finished run, its spec, marker, resolved config, evaluation summary, the
voltage trace of the first evaluation seed and its training curve in the report's own env-step bins; plus
the study's config, invocations and controller baselines. `powernet report --study ARCHIVE` gives the same
numbers as the full study, and `powernet study --restore ARCHIVE` continues the study from it: archived
runs count as finished and evaluated, the rest train. Unfinished runs are left out (a run without its
checkpoint cannot resume)."""

from __future__ import annotations

import csv
import shutil
from collections.abc import Collection
from pathlib import Path

import numpy as np

from common.errors import InputError
from launch.jsonfile import read_json
from launch.run_state import FINISHED, RUN_SPEC
from launch.training_curves import bin_by_steps, read_metrics, superseding_rows

CURVE_COLUMNS = ("update", "env_steps", "wall_s", "episode_return", "episodes", "violation_rate", "diverged")


def compact_metrics(src: Path, dest: Path) -> int:
    """metrics.csv in the report's env-step bins: per bin the last row's update, env steps and wall time,
    the mean training return and violation share over its rows, its episode count and its diverged episodes
    (the report warns about those). Returns the rows."""
    m = read_metrics(src)
    keep = superseding_rows(m["env_steps"])
    nan = np.full(m["env_steps"].size, np.nan)
    kept = {name: m.get(name, nan)[keep] for name in CURVE_COLUMNS}  # a column the run did not log stays empty
    binned_steps, ret, last = bin_by_steps(kept["env_steps"], kept["episode_return"])
    _, violations, _ = bin_by_steps(kept["env_steps"], kept["violation_rate"])
    starts = np.r_[0, last[:-1] + 1]
    episodes = np.add.reduceat(np.nan_to_num(kept["episodes"]), starts)
    diverged = (np.add.reduceat(np.nan_to_num(kept["diverged"]), starts) if np.isfinite(kept["diverged"]).any()
                else np.full(binned_steps.size, np.nan))  # a run older than the column keeps it empty
    columns = {"update": kept["update"][last], "env_steps": binned_steps, "wall_s": kept["wall_s"][last],
               "episode_return": ret, "episodes": episodes, "violation_rate": violations, "diverged": diverged}

    def text(x: float, integer: bool = False) -> str:
        if not np.isfinite(x):
            return ""
        return str(int(x)) if integer else repr(float(x))  # repr: exact, so binning the copy changes nothing

    dest.parent.mkdir(parents=True, exist_ok=True)
    with dest.open("w", newline="") as fh:
        writer = csv.writer(fh)
        writer.writerow(CURVE_COLUMNS)
        for k in range(binned_steps.size):
            writer.writerow([text(columns[c][k], c in ("update", "env_steps", "episodes", "diverged"))
                             for c in CURVE_COLUMNS])
    return int(binned_steps.size)


def _copy(src: Path, dest: Path) -> None:
    """Copy a file when it exists (an unevaluated run has no summary, a controller no trace)."""
    if src.is_file():
        dest.parent.mkdir(parents=True, exist_ok=True)
        shutil.copy2(src, dest)


def _first_seed(summary_path: Path) -> int | None:
    seeds = (read_json(summary_path) or {}).get("seeds") or []
    return int(seeds[0]) if seeds else None


def archive_study(study_dir: str | Path, dest: str | Path) -> list[str]:
    """Write the compact copy of study_dir to dest (replacing what dest held); returns the archived run ids."""
    study_dir, dest = Path(study_dir), Path(dest)
    if not (study_dir / "runs").is_dir():
        raise InputError(f"--study {study_dir}: no runs/ folder (run `powernet study` first)")
    if dest.resolve() == study_dir.resolve() or study_dir.resolve() in dest.resolve().parents:
        raise InputError(f"--archive {dest}: must lie outside the study directory {study_dir}")
    if dest.exists() and any(dest.iterdir()) and not (dest / "runs").is_dir():
        raise InputError(f"--archive {dest}: exists and is not a study archive (no runs/ folder); pick a new folder")
    for stale in ("runs", "baselines"):
        shutil.rmtree(dest / stale, ignore_errors=True)
    dest.mkdir(parents=True, exist_ok=True)
    for name in ("study.toml", "invocations.jsonl"):
        _copy(study_dir / name, dest / name)
    for summary in sorted((study_dir / "baselines").glob("*/*/summary.json")):
        rel = summary.parent.relative_to(study_dir)
        _copy(summary, dest / rel / "summary.json")
        seed = _first_seed(summary)
        _copy(summary.parent / f"episode-{seed}.npz", dest / rel / f"episode-{seed}.npz")
    kept = []
    for spec in sorted((study_dir / "runs").glob(f"*/{RUN_SPEC}")):
        run, out = spec.parent, dest / "runs" / spec.parent.name
        if not (run / FINISHED).is_file() or not (run / "metrics.csv").is_file():
            continue
        for name in (RUN_SPEC, FINISHED, "config.toml", "eval/summary.json"):
            _copy(run / name, out / name)
        seed = _first_seed(run / "eval" / "summary.json")
        _copy(run / "eval" / f"episode-{seed}.npz", out / "eval" / f"episode-{seed}.npz")
        compact_metrics(run / "metrics.csv", out / "metrics.csv")
        kept.append(run.name)
    return kept


def restore_study(archive: str | Path, study_dir: str | Path, steps: int, run_ids: Collection[str],
                  dry_run: bool = False) -> list[str]:
    """Copy the archive's runs of this study (run_ids) that finished `steps` env steps into study_dir, unless
    study_dir already has them finished; merge its invocations and baselines. Returns the restored run ids
    (with dry_run, the ones it would restore, copying nothing)."""
    archive, study_dir = Path(archive), Path(study_dir)
    if not (archive / "runs").is_dir():
        raise InputError(f"--restore {archive}: no runs/ folder (write one with `powernet report --archive`)")
    restored = []
    for marker_path in sorted((archive / "runs").glob(f"*/{FINISHED}")):
        src = marker_path.parent
        marker = read_json(marker_path) or {}
        if src.name not in run_ids or int(marker.get("env_steps", 0)) < steps:
            continue
        target = study_dir / "runs" / src.name
        mine = read_json(target / FINISHED) or {}
        if int(mine.get("env_steps", 0)) >= steps:
            continue
        restored.append(src.name)
        if dry_run:
            continue
        if target.exists():
            shutil.rmtree(target)  # an unfinished attempt here: the archived run got further
        shutil.copytree(src, target)
    if dry_run:
        return restored
    for summary in sorted((archive / "baselines").glob("*/*/summary.json")):
        target = study_dir / summary.parent.relative_to(archive)
        if not (target / "summary.json").is_file():
            shutil.copytree(summary.parent, target)
    _merge_invocations(archive / "invocations.jsonl", study_dir / "invocations.jsonl")
    return restored


def _merge_invocations(src: Path, dest: Path) -> None:
    """The archive's study invocations first, then this directory's own, each once."""
    if not src.is_file():
        return
    theirs = [ln for ln in src.read_text().splitlines() if ln.strip()]
    mine = [ln for ln in dest.read_text().splitlines() if ln.strip()] if dest.is_file() else []
    merged = [*theirs, *(ln for ln in mine if ln not in theirs)]
    dest.parent.mkdir(parents=True, exist_ok=True)
    dest.write_text("\n".join(merged) + "\n")
