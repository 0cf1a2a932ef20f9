"""`powernet report --study DIR`: DIR/report/report.md (a results table with 95 % intervals over training
seeds, a sample-efficiency table from the training curves, provenance, wall times, commands), table.csv and
efficiency.csv, and PNG figures (learning curves, voltage trajectories, the α/β heat map) from a study
directory written by `powernet study`."""

from __future__ import annotations

import csv
import json
import math
import re
import shlex
import warnings
from collections import defaultdict
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import numpy as np

from common.errors import InputError
from launch.study import ALPHA_KEY, BETA_KEY, FINISHED, RUN_SPEC, git_commit, last_env_steps, machine

METRICS = (("mean_return", "evaluation return", "{:.3f}"),
           ("violation_rate", "violation share", "{:.3f}"),
           ("mean_settling_step", "settling step", "{:.2f}"),
           ("max_dev_pu", "largest deviation (p.u.)", "{:.4f}"))

# two-sided 95 % Student-t critical values t_{0.975, df}, df = 1 .. 30
_T975 = (12.7062, 4.3027, 3.1824, 2.7764, 2.5706, 2.4469, 2.3646, 2.3060, 2.2622, 2.2281, 2.2010, 2.1788,
         2.1604, 2.1448, 2.1314, 2.1199, 2.1098, 2.1009, 2.0930, 2.0860, 2.0796, 2.0739, 2.0687, 2.0639,
         2.0595, 2.0555, 2.0518, 2.0484, 2.0452, 2.0423)


def t_critical(df: int) -> float:
    """t_{0.975, df}: a table up to 30 degrees of freedom, a Cornish-Fisher expansion above."""
    if df < 1:
        raise ValueError("a t interval needs at least one degree of freedom")
    if df <= len(_T975):
        return _T975[df - 1]
    z = 1.959963984540054
    g1 = (z**3 + z) / 4
    g2 = (5 * z**5 + 16 * z**3 + 3 * z) / 96
    g3 = (3 * z**7 + 19 * z**5 + 17 * z**3 - 15 * z) / 384
    return z + g1 / df + g2 / df**2 + g3 / df**3


def mean_interval(values: Sequence[float]) -> tuple[float, float, int]:
    """(mean, half-width of the 95 % t-interval, n) of the finite values; the half-width is NaN for n < 2."""
    x = np.asarray([v for v in values if v is not None and np.isfinite(v)], dtype=np.float64)
    if x.size == 0:
        return float("nan"), float("nan"), 0
    if x.size == 1:
        return float(x[0]), float("nan"), 1
    return float(x.mean()), t_critical(x.size - 1) * float(x.std(ddof=1)) / math.sqrt(x.size), int(x.size)


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
    def train_wall_s(self) -> float:
        return float(sum(a.get("wall_s", 0.0) for a in self.spec.get("attempts", [])))


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
    commit = re.search(r"^# git commit (\S+)", text, re.M)
    versions = re.search(r"^# (python .*)$", text, re.M)
    return (cfg.get("train", {}).get("spatial_discount"), cfg.get("env", {}).get("smoothing_beta"),
            commit.group(1) if commit else "", versions.group(1) if versions else "")


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
    by_key: dict[tuple[str, str, str], Group] = {}
    for r in results:
        by_key.setdefault(r.group, Group(*r.group)).runs.append(r)
    return list(by_key.values())


def baselines(study_dir: Path) -> dict[str, dict[str, dict[str, Any]]]:
    """system -> controller -> summary of the conventional controllers."""
    found: dict[str, dict[str, dict[str, Any]]] = defaultdict(dict)
    for path in sorted((study_dir / "baselines").glob("*/*/summary.json")):
        found[path.parent.parent.name][path.parent.name] = json.loads(path.read_text())
    return dict(found)


def _cell(mean: float, half: float, n: int, fmt: str) -> str:
    if n == 0:
        return "–"
    if n == 1:
        return fmt.format(mean) + "†"
    return f"{fmt.format(mean)} ± {fmt.format(half)}"


# -------------------------------------------------------------------------------------------- figures

def _plt() -> Any:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


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


def _training_rows(run_dir: Path) -> tuple[np.ndarray, np.ndarray] | None:
    """(env steps, training episode return) of a run's metrics.csv in CURVE_BIN_STEPS bins, rows superseded
    by a resumed attempt dropped first; None when there are none."""
    from launch.plots import read_metrics

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
    from launch.plots import smooth

    rows = _training_rows(run_dir)
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


def _curve(run_dir: Path, grid: np.ndarray) -> np.ndarray | None:
    """A run's training return, a trailing mean over 2 % of its rows, interpolated onto `grid` env steps (NaN
    outside its range)."""
    from launch.plots import smooth

    rows = _training_rows(run_dir)
    if rows is None:
        return None
    steps, ret = rows
    sm = smooth(ret, max(1, steps.size // 50))
    ok = np.isfinite(sm)
    if ok.sum() < 1:
        return None
    return np.interp(grid, steps[ok], sm[ok], left=np.nan, right=np.nan)


def plot_learning_curves(groups: Sequence[Group], system: str, path: Path) -> bool:
    """Training return vs env steps: per group the mean over seeds and its 95 % t-band; False if no data."""
    plt = _plt()
    fig, ax = plt.subplots(figsize=(9, 5))
    drawn = 0
    mine = [g for g in groups if g.system == system]
    palette = plt.get_cmap("tab10" if len(mine) <= 10 else "tab20")  # a sweep has more lines than tab10 colours
    for k, group in enumerate(mine):
        ends = [last_env_steps(r.run_dir / "metrics.csv") for r in group.finished]
        if not ends or max(ends) == 0:
            continue
        grid = np.linspace(0, max(ends), 200)
        curves = [c for c in (_curve(r.run_dir, grid) for r in group.finished) if c is not None]
        if not curves:
            continue
        stack = np.vstack(curves)
        n = np.isfinite(stack).sum(axis=0)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", RuntimeWarning)  # all-NaN columns (no run reached those steps)
            mean = np.nanmean(stack, axis=0)
            sd = np.nanstd(stack, axis=0, ddof=1) if stack.shape[0] > 1 else np.zeros_like(grid)
        label = group.algorithm if group.tag == "base" else f"{group.algorithm} {group.tag}"
        color = palette(k % palette.N)
        ax.plot(grid, mean, color=color, lw=1.8, label=f"{label} ({len(curves)} seed{'s' * (len(curves) > 1)})")
        if stack.shape[0] > 1:
            tcrit = np.array([t_critical(int(c) - 1) if c > 1 else np.nan for c in n])
            half = tcrit * sd / np.sqrt(np.maximum(n, 1))
            ax.fill_between(grid, mean - half, mean + half, color=color, alpha=0.18, lw=0)
        drawn += 1
    if not drawn:
        plt.close(fig)
        return False
    ax.set_xlabel("environment steps")
    ax.set_ylabel("training episode return (smoothed)")
    ax.set_title(f"Learning curves on {system}: mean over training seeds, band = 95 % t-interval")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=7, ncol=2 if drawn > 8 else 1, loc="lower right")
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return True


def plot_voltages(panels: Sequence[tuple[str, np.ndarray]], control_dt_s: float, path: Path, title: str) -> None:
    """Every DG's voltage (p.u.) against time, one panel per controller, the 0.95/1.05 band dashed."""
    plt = _plt()
    fig, axes = plt.subplots(1, len(panels), figsize=(4.6 * len(panels), 4.2), sharey=True, squeeze=False)
    for ax, (name, v_pu) in zip(axes[0], panels, strict=True):
        t = control_dt_s * np.arange(1, v_pu.shape[0] + 1)
        for i in range(v_pu.shape[1]):
            ax.plot(t, v_pu[:, i], lw=1.1, marker=".", ms=3, label=f"DG {i + 1}")
        for level in (0.95, 1.05):
            ax.axhline(level, color="k", ls="--", lw=0.8)
        ax.axhline(1.0, color="0.6", ls=":", lw=0.8)
        ax.set_title(name, fontsize=9)
        ax.set_xlabel("time (s)")
        ax.grid(alpha=0.3)
    axes[0, 0].set_ylabel("DG voltage (p.u.)")
    if panels and panels[0][1].shape[1] <= 10:
        axes[0, -1].legend(fontsize=7, loc="lower right")
    fig.suptitle(title, fontsize=10)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def plot_heatmap(cells: dict[tuple[float, float], tuple[float, float, int]], path: Path, title: str) -> None:
    """Mean evaluation return over seeds for each (α, β), annotated with mean ± 95 % half-width."""
    plt = _plt()
    alphas = sorted({a for a, _ in cells})
    betas = sorted({b for _, b in cells})
    grid = np.full((len(alphas), len(betas)), np.nan)
    for (a, b), (mean, _, _) in cells.items():
        grid[alphas.index(a), betas.index(b)] = mean
    fig, ax = plt.subplots(figsize=(1.6 * len(betas) + 2.5, 0.9 * len(alphas) + 1.8))
    image = ax.imshow(grid, cmap="viridis", aspect="auto", origin="lower")
    fig.colorbar(image, ax=ax, label="evaluation return (mean over seeds)")
    finite = grid[np.isfinite(grid)]
    mid = float(finite.mean()) if finite.size else 0.0
    for (a, b), (mean, half, n) in cells.items():
        text = f"{mean:.2f}" + (f"\n±{half:.2f}" if n > 1 else "\n(1 seed)")
        ax.text(betas.index(b), alphas.index(a), text, ha="center", va="center", fontsize=8,
                color="white" if mean < mid else "black")
    ax.set_xticks(range(len(betas)), [f"{b:g}" for b in betas])
    ax.set_yticks(range(len(alphas)), [f"{a:g}" for a in alphas])
    ax.set_xlabel("action smoothing β (env.smoothing_beta)")
    ax.set_ylabel("spatial discount α (train.spatial_discount)")
    ax.set_title(title, fontsize=10)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


# --------------------------------------------------------------------------------------------- report

def _episode_v(path: Path) -> np.ndarray | None:
    if not path.is_file():
        return None
    with np.load(path) as data:
        return np.asarray(data["v_pu"]) if "v_pu" in data else None


def _control_dt(run_dir: Path) -> float:
    from launch.plots import _control_dt as read

    return read(run_dir / "config.toml")


def _best_run(groups: Sequence[Group], system: str) -> RunResult | None:
    """The evaluated PowerNet run of the system with the highest evaluation return (any algorithm if the
    study has no PowerNet run)."""
    runs = [r for g in groups if g.system == system for r in g.evaluated]
    pool = [r for r in runs if r.spec["algorithm"] == "powernet"] or runs
    return max(pool, key=lambda r: r.summary["mean_return"], default=None)  # type: ignore[index]


def _sweep_cells(group_list: Sequence[Group]) -> dict[tuple[str, str, str], dict[tuple[float, float], Any]]:
    """(system, algorithm, other overrides) -> {(α, β): (mean, half, n)} where α or β takes 2+ values."""
    sweeps: dict[tuple[str, str, str], dict[tuple[float, float], Any]] = defaultdict(dict)
    for g in group_list:
        ev = g.evaluated
        if not ev or ev[0].alpha is None or ev[0].beta is None:
            continue
        rest = {k: v for k, v in ev[0].spec.get("overrides", {}).items() if k not in (ALPHA_KEY, BETA_KEY)}
        rest_tag = ",".join(f"{k}={v}" for k, v in sorted(rest.items()))
        sweeps[(g.system, g.algorithm, rest_tag)][(float(ev[0].alpha), float(ev[0].beta))] = g.stat("mean_return")
    return {k: v for k, v in sweeps.items()
            if len({a for a, _ in v}) > 1 or len({b for _, b in v}) > 1}


def write_report(study_dir: str | Path, out_dir: str | Path | None = None, trace_seed: int | None = None,
                 argv: Sequence[str] = ()) -> Path:
    """Write report.md and the figures; returns the report.md path."""
    study_dir = Path(study_dir)
    if not (study_dir / "runs").is_dir():
        raise InputError(f"--study {study_dir}: no runs/ folder (run `powernet study` first)")
    out = Path(out_dir) if out_dir else study_dir / "report"
    out.mkdir(parents=True, exist_ok=True)
    results = collect(study_dir)
    if not results:
        raise InputError(f"--study {study_dir}: no runs with {RUN_SPEC} found")
    group_list = sorted(groups_of(results), key=lambda g: (g.system, g.algorithm, g.tag))
    base = baselines(study_dir)
    systems = sorted({g.system for g in group_list} | set(base))
    name = study_dir.name
    lines = [f"# Study `{name}`", ""]
    lines += _provenance_lines(study_dir, results, argv)
    figures: list[str] = []
    csv_rows: list[dict[str, Any]] = []
    efficiency_rows: list[dict[str, Any]] = []
    for system in systems:
        lines += [f"## {system}", ""]
        lines += _table(group_list, base.get(system, {}), system, csv_rows)
        lines.append("")
        lines += ranking_lines(group_list, base.get(system, {}), system)
        lines += efficiency_lines(group_list, system, efficiency_rows)
        curve = out / f"learning_curves_{system}.png"
        if plot_learning_curves(group_list, system, curve):
            figures.append(curve.name)
            lines += [f"![Learning curves on {system}]({curve.name})", ""]
        best = _best_run(group_list, system)
        if best is not None:
            seeds = best.summary.get("seeds") or []  # type: ignore[union-attr]
            seed = trace_seed if trace_seed is not None else (seeds[0] if seeds else 2000)
            panels = []
            v = _episode_v(best.run_dir / "eval" / f"episode-{seed}.npz")
            if v is not None:
                panels.append((f"{best.spec['run_id']} (greedy)", v))
            for controller in ("secondary", "droop"):
                v = _episode_v(study_dir / "baselines" / system / controller / f"episode-{seed}.npz")
                if v is not None:
                    panels.append((f"{controller} control", v))
            if panels:
                path = out / f"voltages_{system}_seed{seed}.png"
                plot_voltages(panels, _control_dt(best.run_dir), path,
                              f"DG voltages on {system}, evaluation seed {seed} (greedy policy; loads fixed "
                              "within the episode)")
                figures.append(path.name)
                lines += [f"Voltage trajectories on evaluation seed {seed}: the best "
                          f"{best.spec['algorithm']} run by evaluation return (`{best.spec['run_id']}`) against "
                          "the conventional controllers.", "", f"![Voltages on {system}]({path.name})", ""]
    for (system, algorithm, rest), cells in sorted(_sweep_cells(group_list).items()):
        suffix = f"_{re.sub(r'[^A-Za-z0-9.=-]+', '-', rest)}" if rest else ""
        path = out / f"alpha_beta_{system}_{algorithm}{suffix}.png"
        title = f"α/β sweep: {algorithm} on {system}" + (f" ({rest})" if rest else "")
        plot_heatmap(cells, path, title + ", evaluation return")
        figures.append(path.name)
        ranked = sorted(cells.items(), key=lambda kv: -kv[1][0])
        (a1, b1), s1 = ranked[0]
        text = f"Highest mean evaluation return at α = {a1:g}, β = {b1:g} ({_cell(*s1, '{:.3f}')})"
        if len(ranked) > 1:
            (a2, b2), s2 = ranked[1]
            overlap = "unknown (single seeds)" if s1[2] < 2 or s2[2] < 2 else \
                ("yes" if abs(s1[0] - s2[0]) <= s1[1] + s2[1] else "no")
            text += (f"; runner-up α = {a2:g}, β = {b2:g} ({_cell(*s2, '{:.3f}')}); 95 % intervals overlap: "
                     f"{overlap}")
        lines += [f"## {title}", "", text + ".", "", f"![α/β sweep]({path.name})", ""]
    lines += _wall_time_lines(results)
    lines += _command_lines(study_dir, results, argv)
    (out / "report.md").write_text("\n".join(lines) + "\n")
    _write_csv(out / "table.csv", csv_rows)
    _write_csv(out / "efficiency.csv", efficiency_rows)
    return out / "report.md"


def ranking_lines(group_list: Sequence[Group], controllers: dict[str, dict[str, Any]], system: str,
                  focus: str = "powernet") -> list[str]:
    """Where `focus` ranks among the learned methods by evaluation return, its margin over the best other one
    relative to their 95 % intervals, and its standing against the conventional controllers (one paragraph;
    empty unless the study compares `focus` with at least one other algorithm)."""
    groups = [g for g in group_list if g.system == system and g.evaluated]
    if focus not in {g.algorithm for g in groups} or len({g.algorithm for g in groups}) < 2:
        return []
    ranked = sorted(groups, key=lambda g: -g.stat("mean_return")[0])
    rank = next(k for k, g in enumerate(ranked) if g.algorithm == focus)
    mine = ranked[rank]
    m1, h1, _ = mine.stat("mean_return")
    rival = ranked[1] if rank == 0 else ranked[0]
    m2, h2, _ = rival.stat("mean_return")
    text = (f"**Ranking on {system}.** {focus} ranks {rank + 1} of {len(ranked)} learned methods by evaluation return "
            f"({_cell(m1, h1, mine.stat('mean_return')[2], '{:.3f}')}); the best other is {rival.algorithm} "
            f"({_cell(m2, h2, rival.stat('mean_return')[2], '{:.3f}')}), a difference of {m1 - m2:+.3f}")
    if math.isnan(h1) or math.isnan(h2):
        text += " (no interval: single training seeds)."
    else:
        overlap = abs(m1 - m2) <= h1 + h2
        text += (f", {'within' if overlap else 'beyond'} the two 95 % intervals "
                 f"({'they overlap' if overlap else 'they do not overlap'}).")
    for controller, summary in sorted(controllers.items()):
        value = summary["mean_return"]
        text += f" Against {controller} control ({value:.3f}): {m1 - value:+.3f}"
        if math.isnan(h1):
            text += "."
        else:
            where = "below" if value < m1 - h1 else "above" if value > m1 + h1 else "inside"
            text += f"; the controller's value lies {where} {focus}'s interval."
    return [text, ""]


EFFICIENCY_SHARE = 0.9  # the threshold lies this share of the way from the starting to the best final return


def efficiency_lines(group_list: Sequence[Group], system: str, csv_rows: list[dict[str, Any]],
                     focus: str = "powernet") -> list[str]:
    """Sample efficiency from the training curves: per method the starting, final and area-mean training
    return, and the env steps until its smoothed return first reaches a threshold common to the system:
    r0 + 0.9 (r_best - r0), with r0 the mean starting return of every run and r_best the best method's mean
    final return. Training returns come from the stochastic policy under random disturbances, so they are
    lower than the greedy evaluation returns; they compare methods with each other, not with the table above."""
    groups = [(g, [f for f in (learning_facts(r.run_dir) for r in g.finished) if f is not None])
              for g in group_list if g.system == system]
    groups = [(g, fs) for g, fs in groups if fs]
    if not groups:
        return []
    r0 = float(np.mean([f.start for _, fs in groups for f in fs]))
    best_group, best_fs = max(groups, key=lambda gf: np.mean([f.final for f in gf[1]]))
    r_best = float(np.mean([f.final for f in best_fs]))
    threshold = r0 + EFFICIENCY_SHARE * (r_best - r0)
    rows = []
    for g, fs in groups:
        stats = {key: mean_interval([getattr(f, key) for f in fs]) for key in ("start", "final", "area_mean")}
        reached = [s for s in (f.steps_to(threshold) for f in fs) if s is not None]
        to_t = mean_interval(reached)
        rows.append((stats["area_mean"][0], g, fs, stats, to_t, len(reached)))
        csv_rows.append({"system": system, "method": g.algorithm, "overrides": g.tag, "seeds": len(fs),
                         **{f"train_{k}": v[0] for k, v in stats.items()},
                         **{f"train_{k}_ci95": v[1] for k, v in stats.items()},
                         "threshold": threshold, "steps_to_threshold": to_t[0],
                         "steps_to_threshold_ci95": to_t[1], "seeds_reaching": len(reached)})
    rows.sort(key=lambda row: -row[0])
    lines = [f"**Sample efficiency on {system}.** Training return (stochastic policy, random disturbances), "
             f"in bins of {CURVE_BIN_STEPS} env steps, as means over windows of {EFFICIENCY_WINDOW_STEPS:,} env "
             "steps: starting return over the first "
             "window, final return over the last 5 % of the run, area-mean return over the smoothed curve; a step "
             f"count is the middle of the first window that reaches the threshold. Threshold: {threshold:.3f}, "
             f"{EFFICIENCY_SHARE:.0%} of the way from the mean starting return {r0:.3f} to the best final return "
             f"{r_best:.3f} ({best_group.algorithm}). Rows are sorted by the area-mean return.", "",
             "| method | overrides | seeds | starting return | final return | area-mean return | "
             "env steps to threshold |", "|---|---|---|---|---|---|---|"]
    for _, g, fs, stats, to_t, n_reached in rows:
        cells = [_cell(*stats[k], "{:.3f}") for k in ("start", "final", "area_mean")]
        steps = "never" if not n_reached else _cell(*to_t, "{:,.0f}")
        if 0 < n_reached < len(fs):
            steps += f" ({n_reached} of {len(fs)} seeds; the rest never)"
        lines.append(f"| {g.algorithm} | {g.tag} | {len(fs)} | " + " | ".join(cells) + f" | {steps} |")
    lines.append("")
    mine = [row for row in rows if row[1].algorithm == focus]
    if len(mine) == 1 and len({row[1].algorithm for row in rows}) > 1:  # a sweep of one method ranks nothing
        rank = rows.index(mine[0]) + 1
        rival = rows[1] if rank == 1 else rows[0]
        (m1, h1, _), (m2, h2, _) = mine[0][3]["area_mean"], rival[3]["area_mean"]
        text = (f"By area-mean training return {focus} ranks {rank} of {len(rows)}; the best other is "
                f"{rival[1].algorithm}, a difference of {m1 - m2:+.3f}")
        if math.isnan(h1) or math.isnan(h2):
            text += " (no interval: single training seeds)."
        else:
            text += f", {'within' if abs(m1 - m2) <= h1 + h2 else 'beyond'} the two 95 % intervals."
        lines += [text, ""]
    return lines


def _table(group_list: Sequence[Group], controllers: dict[str, dict[str, Any]], system: str,
           csv_rows: list[dict[str, Any]]) -> list[str]:
    head = "| method | overrides | seeds | " + " | ".join(label for _, label, _ in METRICS) + " |"
    lines = [head, "|" + "---|" * (3 + len(METRICS))]
    groups = [g for g in group_list if g.system == system]
    groups.sort(key=lambda g: -g.stat("mean_return")[0] if g.evaluated else math.inf)
    for g in groups:
        seeds = f"{len(g.evaluated)}" + (f" of {len(g.runs)}" if len(g.evaluated) != len(g.runs) else "")
        cells = []
        row: dict[str, Any] = {"system": system, "method": g.algorithm, "overrides": g.tag,
                               "seeds": len(g.evaluated)}
        for key, _, fmt in METRICS:
            mean, half, n = g.stat(key)
            cells.append(_cell(mean, half, n, fmt))
            row[key], row[f"{key}_ci95"] = mean, half
        csv_rows.append(row)
        lines.append(f"| {g.algorithm} | {g.tag} | {seeds} | " + " | ".join(cells) + " |")
    for controller, summary in sorted(controllers.items()):
        cells = [fmt.format(summary[key]) for key, _, fmt in METRICS]
        csv_rows.append({"system": system, "method": f"{controller} control", "overrides": "", "seeds": 0,
                         **{key: summary[key] for key, _, _ in METRICS}})
        lines.append(f"| {controller} control | – | – | " + " | ".join(cells) + " |")
    n_eval = max((len(g.evaluated[0].summary.get("seeds", [])) for g in groups if g.evaluated), default=0)
    lines += ["", f"Each learned policy is evaluated greedily on {n_eval or 'the'} fixed evaluation seeds; a cell is "
              "the mean over training seeds of the per-run value, ± the half-width of the 95 % Student-t interval "
              "over training seeds. † marks a single training seed: its value is shown with no interval. "
              "`seeds`: evaluated runs (of all runs of the row when some are missing). Return: sum of raw rewards "
              "over agents and steps, averaged over episodes; violation share: (agent, step) pairs outside "
              "[0.95, 1.05] p.u.; settling step: first control step with every DG in the band (T if never), "
              "averaged over episodes; largest deviation: max |1 − v| over all episodes. Conventional controllers "
              "have no training seeds, so their rows show the value on the same evaluation seeds without an "
              "interval. Rows are sorted by mean evaluation return."]
    return lines


def _provenance_lines(study_dir: Path, results: Sequence[RunResult], argv: Sequence[str]) -> list[str]:
    invocations = _invocations(study_dir)
    commits = sorted({r.commit for r in results if r.commit})
    versions = sorted({r.versions for r in results if r.versions})
    dirty = any(inv.get("dirty") for inv in invocations)
    machines = {json.dumps(inv.get("machine", {}), sort_keys=True) for inv in invocations}
    head, head_dirty = git_commit()
    lines = ["## Provenance", "",
             f"- Training commit(s) (from each run's config.toml): {', '.join(f'`{c}`' for c in commits) or 'unknown'}"
             + (" — a study invocation ran with uncommitted changes" if dirty else ""),
             f"- Report written at {datetime.now(timezone.utc).isoformat(timespec='seconds')} from commit `{head}`"
             + (" (with uncommitted changes)" if head_dirty else ""),
             f"- Software: {'; '.join(versions) or 'unknown'}"]
    for text in sorted(machines) or [json.dumps(machine(), sort_keys=True)]:
        m = json.loads(text)
        lines.append(f"- Machine: {m.get('host', '?')}, {m.get('cpu', '?')}, {m.get('cores', '?')} cores, "
                     f"{m.get('os', '?')}, Python {m.get('python', '?')}")
    finished = sum(r.finished for r in results)
    evaluated = sum(r.summary is not None for r in results)
    budgets = sorted({int(r.spec.get("steps", 0)) for r in results})
    reached = [last_env_steps(r.run_dir / "metrics.csv") for r in results]
    lines += [f"- Runs: {len(results)} ({finished} finished, {evaluated} evaluated)",
              f"- Training budget: {', '.join(f'{b:,}' for b in budgets)} environment steps per run (runs reached "
              f"{min(reached, default=0):,}–{max(reached, default=0):,}); the paper's protocol is 1,000,000"
              + ("" if budgets and min(budgets) >= 1_000_000 else
                 " — this is a shorter budget, so the numbers describe early training, not converged policies"),
              ""]
    return lines


def _invocations(study_dir: Path) -> list[dict[str, Any]]:
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


def _wall_time_lines(results: Sequence[RunResult]) -> list[str]:
    lines = ["## Wall time per run", "",
             "| run | env steps | attempts | training wall time (s) | evaluation wall time (s) |",
             "|---|---|---|---|---|"]
    for r in results:
        attempts = r.spec.get("attempts", [])
        steps = max((a.get("end_env_steps", 0) for a in attempts), default=0)
        ev = r.spec.get("evaluations", [])
        ev_wall = f"{ev[-1]['wall_s']:.1f}" if ev else "–"
        lines.append(f"| {r.spec['run_id']} | {steps} | {len(attempts)} | {r.train_wall_s:.1f} | {ev_wall} |")
    walls = [r.train_wall_s for r in results if r.finished]
    if walls:
        lines += ["", f"Training wall time of a finished run: mean {np.mean(walls):.1f} s, "
                  f"min {np.min(walls):.1f} s, max {np.max(walls):.1f} s (sum over its attempts; runs trained "
                  "side by side share the machine)."]
    return lines + [""]


def _command_lines(study_dir: Path, results: Sequence[RunResult], argv: Sequence[str]) -> list[str]:
    lines = ["## Commands", "", "Study invocations (from the repository root):", "", "```"]
    for inv in _invocations(study_dir):
        lines.append(f"{inv.get('command', '')}    # {inv.get('started', '')}, exit {inv.get('exit_status')}")
    lines += ["```", "", "This report:", "", "```",
              "powernet " + shlex.join(argv) if argv else f"powernet report --study {shlex.quote(str(study_dir))}",
              "```", "", "Every training and evaluation command the study ran (`powernet` = `python -m launch`):",
              "", "```"]
    for r in results:
        for a in r.spec.get("attempts", []):
            lines.append(a.get("command", ""))
        for e in r.spec.get("evaluations", []):
            lines.append(e.get("command", ""))
    lines += ["```", ""]
    return lines


def _write_csv(path: Path, rows: Sequence[dict[str, Any]]) -> None:
    if not rows:
        return
    keys: list[str] = []
    for row in rows:
        keys += [k for k in row if k not in keys]
    with path.open("w", newline="") as fh:
        writer = csv.DictWriter(fh, fieldnames=keys)
        writer.writeheader()
        writer.writerows(rows)

