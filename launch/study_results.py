"""A study directory as the report reads it: each run's spec, FINISHED marker, evaluation summary and
config facts (α, β, commit, versions), the runs grouped over training seeds, the controllers' summaries and
the record of the study's invocations."""

from __future__ import annotations

import json
import math
from collections import defaultdict
from collections.abc import Sequence
from dataclasses import dataclass, field
from functools import cached_property
from pathlib import Path
from typing import Any

from launch.provenance import read_provenance_header
from launch.report_stats import mean_interval
from launch.run_state import FINISHED, RUN_SPEC, last_metrics_row


@dataclass
class RunResult:
    """One run of the study as the report sees it."""

    run_dir: Path
    spec: dict[str, Any]
    finished: bool
    summary: dict[str, Any] | None
    alpha: float | None = None
    beta: float | None = None
    commit: str = ""
    versions: str = ""

    @property
    def group(self) -> tuple[str, str, str]:
        return self.spec["system"], self.spec["algorithm"], self.spec["tag"]

    @property
    def recorded(self) -> bool:
        """Whether the study timed this run's training; a run trained outside it and found finished (or one
        whose study was killed before it wrote the attempt down) has no attempts."""
        return bool(self.spec.get("attempts"))

    @property
    def train_wall_s(self) -> float | None:
        """Seconds of training: the sum over the study's attempts, else the run's own clock (the last `wall_s`
        of its metrics.csv), else None when neither exists."""
        if self.recorded:
            return float(sum(a.get("wall_s", 0.0) for a in self.spec["attempts"]))
        return self._own_clock[1]

    @property
    def env_steps(self) -> int | None:
        """Env steps trained: the furthest attempt, else the run's metrics.csv, else None."""
        if self.recorded:
            return int(max(a.get("end_env_steps", 0) for a in self.spec["attempts"]))
        return self._own_clock[0]

    @cached_property
    def _own_clock(self) -> tuple[int | None, float | None]:
        """(env steps, wall seconds) of metrics.csv's last row, or None for what it lacks; read once per run."""
        row = last_metrics_row(self.run_dir / "metrics.csv")
        if row is None:
            return None, None
        steps = int(float(row["env_steps"]))
        try:
            wall = float(row["wall_s"])
        except (KeyError, ValueError):  # no wall_s column, or a cut-off or empty cell
            return steps, None
        return steps, (wall if math.isfinite(wall) else None)


@dataclass
class Group:
    """Runs of one (system, algorithm, override tag) over training seeds."""

    system: str
    algorithm: str
    tag: str
    runs: list[RunResult] = field(default_factory=list)

    @property
    def finished(self) -> list[RunResult]:
        """Runs that reached their budget: the ones whose training curves the report compares (a run cut
        short would pull a group's final return toward its start, and an archive keeps only these)."""
        return [r for r in self.runs if r.finished]

    @property
    def evaluated(self) -> list[RunResult]:
        return [r for r in self.runs if r.summary is not None]

    def stat(self, key: str) -> tuple[float, float, int]:
        return mean_interval([r.summary[key] for r in self.evaluated])  # type: ignore[index]


def _config_facts(run_dir: Path) -> tuple[float | None, float | None, str, str]:
    """(α, β, git commit, versions line) from the resolved config.toml a run wrote."""
    import tomllib

    path = run_dir / "config.toml"
    try:
        text = path.read_text()
        cfg = tomllib.loads(text)
    except (OSError, tomllib.TOMLDecodeError):
        return None, None, "", ""
    commit, versions = read_provenance_header(text)
    return (cfg.get("train", {}).get("spatial_discount"), cfg.get("env", {}).get("smoothing_beta"),
            commit, versions)


def collect(study_dir: Path) -> list[RunResult]:
    """Every run directory of the study with its spec, marker and evaluation summary."""
    results = []
    for spec_path in sorted((study_dir / "runs").glob(f"*/{RUN_SPEC}")):
        run_dir = spec_path.parent
        try:
            spec = json.loads(spec_path.read_text())
        except ValueError:
            continue
        summary_path = run_dir / "eval" / "summary.json"
        summary = json.loads(summary_path.read_text()) if summary_path.is_file() else None
        alpha, beta, commit, versions = _config_facts(run_dir)
        results.append(RunResult(run_dir, spec, (run_dir / FINISHED).is_file(), summary, alpha, beta, commit,
                                 versions))
    return results


def groups_of(results: Sequence[RunResult]) -> list[Group]:
    """The runs grouped by (system, algorithm, override tag), in the order their first runs come."""
    by_key: dict[tuple[str, str, str], Group] = {}
    for r in results:
        by_key.setdefault(r.group, Group(*r.group)).runs.append(r)
    return list(by_key.values())


def read_baselines(study_dir: Path) -> dict[str, dict[str, dict[str, Any]]]:
    """system -> controller -> summary of the conventional controllers."""
    found: dict[str, dict[str, dict[str, Any]]] = defaultdict(dict)
    for path in sorted((study_dir / "baselines").glob("*/*/summary.json")):
        found[path.parent.parent.name][path.parent.name] = json.loads(path.read_text())
    return dict(found)


def read_invocations(study_dir: Path) -> list[dict[str, Any]]:
    """The study's invocations.jsonl records, oldest first (unreadable lines skipped)."""
    path = study_dir / "invocations.jsonl"
    if not path.is_file():
        return []
    out = []
    for line in path.read_text().splitlines():
        try:
            out.append(json.loads(line))
        except ValueError:
            continue
    return out
