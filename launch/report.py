"""`powernet report --study DIR`: DIR/report/report.md (a results table with 95 % intervals over training
seeds, a sample-efficiency table from the training curves, provenance, wall times, commands), table.csv and
efficiency.csv, and PNG figures (learning curves, voltage trajectories, the α/β heat map) from a study
directory written by `powernet study`."""

from __future__ import annotations

import json
import re
import shlex
from collections import defaultdict
from collections.abc import Sequence
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import numpy as np

from common.errors import InputError
from launch.provenance import git_commit, has_uncommitted_changes, machine
from launch.report_figures import plot_heatmap, plot_learning_curves, plot_voltages
from launch.report_stats import interval_cell
from launch.report_tables import (
    communication_lines,
    efficiency_lines,
    ranking_lines,
    results_table,
    scenario_note,
    write_csv,
)
from launch.run_state import RUN_SPEC, last_env_steps
from launch.study_results import Group, RunResult, collect, groups_of, read_baselines, read_invocations
from launch.study_spec import ALPHA_KEY, BETA_KEY
from launch.training_curves import read_metrics


def _episode_v(path: Path) -> np.ndarray | None:
    """The DG voltages [T, N] of an episode-<seed>.npz, None when it is missing or has none."""
    if not path.is_file():
        return None
    with np.load(path) as data:
        return np.asarray(data["v_pu"]) if "v_pu" in data else None


def _control_dt(run_dir: Path) -> float:
    """The run's control interval (s), the time axis of its voltage trajectories."""
    from launch.plots import control_dt_s

    return control_dt_s(run_dir / "config.toml")


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


def _voltage_lines(study_dir: Path, out: Path, group_list: Sequence[Group], system: str,
                   trace_seed: int | None) -> list[str]:
    """The voltage-trajectory figure of the system's best run against the controllers, and its caption."""
    best = _best_run(group_list, system)
    if best is None:
        return []
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
    if not panels:
        return []
    path = out / f"voltages_{system}_seed{seed}.png"
    plot_voltages(panels, _control_dt(best.run_dir), path,
                  f"DG voltages on {system}, evaluation seed {seed} (greedy policy; loads fixed within the episode)")
    return [f"Voltage trajectories on evaluation seed {seed}: the best "
            f"{best.spec['algorithm']} run by evaluation return (`{best.spec['run_id']}`) against "
            "the conventional controllers.", "", f"![Voltages on {system}]({path.name})", ""]


def _system_lines(study_dir: Path, out: Path, group_list: Sequence[Group], controllers: dict[str, dict[str, Any]],
                  system: str, trace_seed: int | None, csv_rows: list[dict[str, Any]],
                  efficiency_rows: list[dict[str, Any]]) -> list[str]:
    """A system's section: results table, ranking, sample efficiency, learning curves, voltage trajectories."""
    lines = [f"## {system}", ""]
    lines += results_table(group_list, controllers, system, csv_rows)
    lines.append("")
    lines += scenario_note(controllers)
    lines += ranking_lines(group_list, controllers, system)
    lines += communication_lines(group_list, system)
    lines += efficiency_lines(group_list, system, efficiency_rows)
    curve = out / f"learning_curves_{system}.png"
    if plot_learning_curves(group_list, system, curve):
        lines += [f"![Learning curves on {system}]({curve.name})", ""]
    return lines + _voltage_lines(study_dir, out, group_list, system, trace_seed)


def _sweep_lines(out: Path, group_list: Sequence[Group]) -> list[str]:
    """A section with its heat map per α/β sweep: the best cell, the runner-up, whether their intervals overlap."""
    lines: list[str] = []
    for (system, algorithm, rest), cells in sorted(_sweep_cells(group_list).items()):
        suffix = f"_{re.sub(r'[^A-Za-z0-9.=-]+', '-', rest)}" if rest else ""
        path = out / f"alpha_beta_{system}_{algorithm}{suffix}.png"
        title = f"α/β sweep: {algorithm} on {system}" + (f" ({rest})" if rest else "")
        plot_heatmap(cells, path, title + ", evaluation return")
        ranked = sorted(cells.items(), key=lambda kv: -kv[1][0])
        (a1, b1), s1 = ranked[0]
        text = f"Highest mean evaluation return at α = {a1:g}, β = {b1:g} ({interval_cell(*s1, '{:.3f}')})"
        if len(ranked) > 1:
            (a2, b2), s2 = ranked[1]
            overlap = "unknown (single seeds)" if s1[2] < 2 or s2[2] < 2 else \
                ("yes" if abs(s1[0] - s2[0]) <= s1[1] + s2[1] else "no")
            text += (f"; runner-up α = {a2:g}, β = {b2:g} ({interval_cell(*s2, '{:.3f}')}); 95 % intervals "
                     f"overlap: {overlap}")
        lines += [f"## {title}", "", text + ".", "", f"![α/β sweep]({path.name})", ""]
    return lines


def write_report(study_dir: str | Path, out_dir: str | Path | None = None, trace_seed: int | None = None,
                 argv: Sequence[str] = ()) -> Path:
    """Write report.md, table.csv, efficiency.csv and the figures; returns the report.md path."""
    study_dir = Path(study_dir)
    if not (study_dir / "runs").is_dir():
        raise InputError(f"--study {study_dir}: no runs/ folder (run `powernet study` first)")
    out = Path(out_dir) if out_dir else study_dir / "report"
    out.mkdir(parents=True, exist_ok=True)
    results = collect(study_dir)
    if not results:
        raise InputError(f"--study {study_dir}: no runs with {RUN_SPEC} found")
    group_list = sorted(groups_of(results), key=lambda g: (g.system, g.algorithm, g.tag))
    base = read_baselines(study_dir)
    systems = sorted({g.system for g in group_list} | set(base))
    lines = [f"# Study `{study_dir.name}`", ""]
    lines += _provenance_lines(study_dir, results, argv)
    lines += divergence_lines(results)
    csv_rows: list[dict[str, Any]] = []
    efficiency_rows: list[dict[str, Any]] = []
    for system in systems:
        lines += _system_lines(study_dir, out, group_list, base.get(system, {}), system, trace_seed, csv_rows,
                               efficiency_rows)
    lines += _sweep_lines(out, group_list)
    lines += _wall_time_lines(results)
    lines += _command_lines(study_dir, results, argv)
    (out / "report.md").write_text("\n".join(lines) + "\n")
    write_csv(out / "table.csv", csv_rows)
    write_csv(out / "efficiency.csv", efficiency_rows)
    return out / "report.md"


def _provenance_lines(study_dir: Path, results: Sequence[RunResult], argv: Sequence[str]) -> list[str]:
    """Training commits, the report's own commit, software, machines, run counts and the training budget."""
    invocations = read_invocations(study_dir)
    commits = sorted({r.commit for r in results if r.commit})
    versions = sorted({r.versions for r in results if r.versions})
    dirty = any(inv.get("dirty") for inv in invocations)
    machines = {json.dumps(inv.get("machine", {}), sort_keys=True) for inv in invocations}
    head, head_dirty = git_commit(), has_uncommitted_changes()
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


def diverged_episodes(metrics: Path) -> tuple[int, int]:
    """(training episodes whose simulation diverged, training episodes) summed over a run's metrics.csv; (0, 0)
    when the file or its `diverged` column is missing (runs older than the column)."""
    try:
        m = read_metrics(metrics)
    except (OSError, ValueError):
        return 0, 0
    if "diverged" not in m or "episodes" not in m:
        return 0, 0
    counted = np.isfinite(m["diverged"]) & np.isfinite(m["episodes"])
    return int(m["diverged"][counted].sum()), int(m["episodes"][counted].sum())


def divergence_lines(results: Sequence[RunResult]) -> list[str]:
    """A warning section when any run's simulation diverged in training: a diverged episode gives every agent
    the -10 penalty and ends, so even a few per thousand can dominate what the learners see."""
    rows = [(r.spec["run_id"], *diverged_episodes(r.run_dir / "metrics.csv")) for r in results]
    hit = [(run, d, n) for run, d, n in rows if d > 0]
    if not hit:
        return []
    lines = ["## Simulation divergences in training", "",
             f"**{len(hit)} of {len(rows)} runs had training episodes whose simulation diverged** (every agent "
             "got −10 and the episode ended). Even a few per thousand can dominate the value loss and the "
             "advantages; check the integration step for this system and scenario (docs/pgsim.md#stiff-loads) "
             "before reading the ranking.", "",
             "| run | diverged training episodes | training episodes | share |", "|---|---|---|---|"]
    lines += [f"| {run} | {d:,} | {n:,} | {d / max(n, 1):.2%} |" for run, d, n in hit]
    return lines + [""]


def _wall_time_lines(results: Sequence[RunResult]) -> list[str]:
    """Per run: env steps, attempts, training and evaluation wall time; then the spread over finished runs.
    A run the study did not time (trained outside it, or its study killed before recording the attempt)
    shows its own clock from metrics.csv, marked *, or – when that is missing too."""
    lines = ["## Wall time per run", "",
             "| run | env steps | attempts | training wall time (s) | evaluation wall time (s) |",
             "|---|---|---|---|---|"]
    for r in results:
        steps, wall = r.env_steps, r.train_wall_s
        ev = r.spec.get("evaluations", [])
        ev_wall = f"{ev[-1]['wall_s']:.1f}" if ev else "–"
        mark = "" if r.recorded else "*"
        wall_cell = "–" if wall is None else f"{wall:.1f}{mark}"
        lines.append(f"| {r.spec['run_id']} | {'–' if steps is None else steps} | "
                     f"{len(r.spec.get('attempts', []))} | {wall_cell} | {ev_wall} |")
    walls = [r.train_wall_s for r in results if r.finished and r.train_wall_s is not None]
    if walls:
        lines += ["", f"Training wall time of a finished run: mean {np.mean(walls):.1f} s, "
                  f"min {np.min(walls):.1f} s, max {np.max(walls):.1f} s (sum over its attempts; runs trained "
                  "side by side share the machine)."]
    if any(not r.recorded for r in results):
        lines += ["", "\\* not timed by the study (the run was trained outside it, or the study stopped before "
                  "recording the attempt): the run's own clock, the last `wall_s` of its metrics.csv."]
    return lines + [""]


def _command_lines(study_dir: Path, results: Sequence[RunResult], argv: Sequence[str]) -> list[str]:
    """Every command that produced the study and this report, so that a reader can re-run them."""
    lines = ["## Commands", "", "Study invocations (from the repository root):", "", "```"]
    for inv in read_invocations(study_dir):
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
