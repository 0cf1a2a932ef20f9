"""Training curves read from a run's metrics.csv: rows superseded by a resumed attempt dropped, binned by env
steps, smoothed, and the sample-efficiency numbers of one run (starting, final and area-mean return, the
env steps to a threshold). The report and the study archive read curves through here, so that an archived
run's compact curve gives the numbers of its full metrics.csv."""

from __future__ import annotations

import csv
import warnings
from dataclasses import dataclass
from pathlib import Path

import numpy as np


def read_metrics(path: Path) -> dict[str, np.ndarray]:
    """metrics.csv as float columns (empty cells become NaN); raises ValueError when it has no rows."""
    with Path(path).open(newline="") as fh:
        rows = list(csv.DictReader(fh))
    if not rows or "env_steps" not in rows[0]:
        raise ValueError(f"{path} has no metrics rows")

    def cell(value: str | None) -> float:
        try:
            return float(value) if value not in (None, "") else np.nan
        except ValueError:
            return np.nan

    return {key: np.array([cell(r.get(key)) for r in rows]) for key in rows[0]}


def smooth(values: np.ndarray, window: int) -> np.ndarray:
    """Trailing moving average over the finite entries (NaNs skipped; NaN where the window holds none)."""
    finite = np.isfinite(values)
    sums = np.cumsum(np.where(finite, values, 0.0))
    counts = np.cumsum(finite)
    lag_sums = np.concatenate([np.zeros(window), sums[:-window]]) if len(values) > window else np.zeros_like(sums)
    lag_counts = np.concatenate([np.zeros(window), counts[:-window]]) if len(values) > window \
        else np.zeros_like(counts)
    n = counts - lag_counts
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(n > 0, (sums - lag_sums) / np.maximum(n, 1), np.nan)


def superseding_rows(steps: np.ndarray) -> np.ndarray:
    """Indices of the rows that later rows do not supersede: a resumed run re-trains from its checkpoint
    and appends rows for env steps already logged by the interrupted attempt; the later ones count."""
    keep, low = [], np.inf
    for k in range(steps.size - 1, -1, -1):
        if steps[k] < low:
            keep.append(k)
            low = steps[k]
    return np.array(keep[::-1], dtype=np.int64)


CURVE_BIN_STEPS = 500  # env steps per point of a training curve, whatever the run's length


def bin_by_steps(steps: np.ndarray, values: np.ndarray,
                 width: int = CURVE_BIN_STEPS) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Rows of increasing env steps grouped into bins ((k-1)·width, k·width]: per bin, the env steps of its
    last row, the mean of its finite values (NaN when none) and the index of its last row. Binning binned
    rows changes nothing, so a compact copy of a run (launch.study_archive) reports what the run does."""
    if steps.size == 0:
        return steps, values, np.zeros(0, dtype=np.int64)
    idx = np.ceil(steps / width).astype(np.int64)
    starts = np.flatnonzero(np.r_[True, idx[1:] != idx[:-1]])
    last = np.r_[starts[1:], steps.size] - 1
    finite = np.isfinite(values)
    sums = np.add.reduceat(np.where(finite, values, 0.0), starts)
    counts = np.add.reduceat(finite.astype(np.int64), starts)
    with np.errstate(invalid="ignore", divide="ignore"):
        means = np.where(counts > 0, sums / np.maximum(counts, 1), np.nan)
    return steps[last], means, last


def training_rows(run_dir: Path) -> tuple[np.ndarray, np.ndarray] | None:
    """(env steps, training episode return) of a run's metrics.csv in CURVE_BIN_STEPS bins, rows superseded
    by a resumed attempt dropped first; None when there are none."""
    try:
        m = read_metrics(run_dir / "metrics.csv")
    except (OSError, ValueError):
        return None
    steps, ret = m["env_steps"], m.get("episode_return")
    if ret is None or steps.size == 0:
        return None
    keep = superseding_rows(steps)
    binned_steps, binned_ret, _ = bin_by_steps(steps[keep], ret[keep])
    return binned_steps, binned_ret


@dataclass
class LearningFacts:
    """A run's training-return curve and the numbers the sample-efficiency table reads off it."""

    steps: np.ndarray  # env steps of the run's rows
    smoothed: np.ndarray  # trailing mean of the training episode return over `window` rows (NaN: none finite)
    window: int  # rows in EFFICIENCY_WINDOW_STEPS env steps
    start: float  # mean training return over the first `window` rows
    final: float  # mean training return over the last 5 % of the rows (at least `window`)
    area_mean: float  # area under the smoothed curve / env steps it spans: level and speed in one number

    def steps_to(self, threshold: float) -> float | None:
        """Env steps at the middle of the first window whose mean return reaches threshold (None if none does);
        the middle, not the end, so that a longer window does not report a later step."""
        with np.errstate(invalid="ignore"):
            hit = np.flatnonzero(self.smoothed >= threshold)
        return float(self.steps[max(0, hit[0] - self.window // 2)]) if hit.size else None


EFFICIENCY_WINDOW_STEPS = 4000  # env steps each efficiency window spans, whatever the run's length


def learning_facts(run_dir: Path) -> LearningFacts | None:
    """The run's training curve and its efficiency numbers; None without a training curve. Its windows span
    a fixed number of env steps, so that a longer run neither starts later nor crosses a threshold later than
    a shorter one with the same early curve."""
    rows = training_rows(run_dir)
    if rows is None:
        return None
    steps, ret = rows
    per_row = float(np.median(np.diff(steps))) if steps.size > 1 else float(steps[0])
    window = int(max(1, round(EFFICIENCY_WINDOW_STEPS / max(per_row, 1.0))))
    sm = smooth(ret, window)
    ok = np.isfinite(sm)
    if ok.sum() < 1:
        return None
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)  # a window of NaN returns only
        start = float(np.nanmean(ret[:window]))
        final = float(np.nanmean(ret[-max(window, steps.size // 20):]))
    s_ok, sm_ok = steps[ok], sm[ok]
    span = float(s_ok[-1] - s_ok[0])
    area = float(np.trapezoid(sm_ok, s_ok)) / span if span > 0 else float(sm_ok[-1])
    return LearningFacts(steps, sm, window, start, final, area)


def curve_on_grid(run_dir: Path, grid: np.ndarray) -> np.ndarray | None:
    """A run's training return, a trailing mean over 2 % of its rows, interpolated onto `grid` env steps (NaN
    outside its range)."""
    rows = training_rows(run_dir)
    if rows is None:
        return None
    steps, ret = rows
    sm = smooth(ret, max(1, steps.size // 50))
    ok = np.isfinite(sm)
    if ok.sum() < 1:
        return None
    return np.interp(grid, steps[ok], sm[ok], left=np.nan, right=np.nan)
