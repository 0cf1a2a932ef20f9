"""The report's tables as Markdown lines and CSV rows: the evaluation results with 95 % intervals over
training seeds, the ranking paragraph, and the sample-efficiency table read off the training curves."""

from __future__ import annotations

import csv
import math
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from launch.report_stats import difference_interval, interval_cell, mean_interval
from launch.study_results import Group
from launch.training_curves import CURVE_BIN_STEPS, EFFICIENCY_WINDOW_STEPS, learning_facts
from simsvc.controllers import CONTROLLER_LABELS

METRICS = (("mean_return", "evaluation return", "{:.3f}"),
           ("violation_rate", "violation share", "{:.3f}"),
           ("mean_settling_step", "settling step", "{:.2f}"),
           ("max_dev_pu", "largest deviation (p.u.)", "{:.4f}"))


def controller_label(name: str) -> str:
    """How tables name a controller (the oracle is marked as an upper reference, not a controller)."""
    return CONTROLLER_LABELS.get(name, f"{name} control")


def results_table(group_list: Sequence[Group], controllers: dict[str, dict[str, Any]], system: str,
                  csv_rows: list[dict[str, Any]]) -> list[str]:
    """The system's evaluation results: a row per (method, overrides) with 95 % intervals over training
    seeds, a row per conventional controller, and the note that says how to read them; rows go to csv_rows."""
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
            cells.append(interval_cell(mean, half, n, fmt))
            row[key], row[f"{key}_ci95"] = mean, half
        csv_rows.append(row)
        lines.append(f"| {g.algorithm} | {g.tag} | {seeds} | " + " | ".join(cells) + " |")
    for controller, summary in sorted(controllers.items()):
        cells = [fmt.format(summary[key]) for key, _, fmt in METRICS]
        csv_rows.append({"system": system, "method": controller_label(controller), "overrides": "", "seeds": 0,
                         **{key: summary[key] for key, _, _ in METRICS}})
        lines.append(f"| {controller_label(controller)} | – | – | " + " | ".join(cells) + " |")
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


def scenario_note(controllers: dict[str, dict[str, Any]]) -> list[str]:
    """Under the table of a study on a scenario: which baselines were fitted for what, so that nobody reads the
    classic-fitted rows as the strongest simple rules of that scenario. Empty on `classic`."""
    scenario = next((c["scenario"] for c in controllers.values() if c.get("scenario")), None)
    if not scenario:
        return []
    return [f"The controllers ran on scenario `{scenario}`: the fitted constant and per-DG set-points are the ones "
            "fitted on `classic`, the local rule is not refitted, and the oracle looks ahead with the scenario's "
            f"reward. Rules fitted for `{scenario}` itself are often stronger: `powernet gap --scenario {scenario}` "
            "fits and tables them.", ""]


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
            f"({interval_cell(m1, h1, mine.stat('mean_return')[2], '{:.3f}')}); the best other is {rival.algorithm} "
            f"({interval_cell(m2, h2, rival.stat('mean_return')[2], '{:.3f}')}), a difference of {m1 - m2:+.3f}")
    if math.isnan(h1) or math.isnan(h2):
        text += " (no interval: single training seeds)."
    else:
        overlap = abs(m1 - m2) <= h1 + h2
        text += (f", {'within' if overlap else 'beyond'} the two 95 % intervals "
                 f"({'they overlap' if overlap else 'they do not overlap'}).")
    for controller, summary in sorted(controllers.items()):
        value = summary["mean_return"]
        text += f" Against {controller_label(controller)} ({value:.3f}): {m1 - value:+.3f}"
        if math.isnan(h1):
            text += "."
        else:
            where = "below" if value < m1 - h1 else "above" if value > m1 + h1 else "inside"
            text += f"; the controller's value lies {where} {focus}'s interval."
    return [text, ""]


COMMUNICATING = ("powernet", "neurcomm", "commnet", "dial")  # methods whose agents exchange learned messages


def communication_lines(group_list: Sequence[Group], system: str, reference: str = "ia2c") -> list[str]:
    """Whether communication helps: each communicating method's evaluation return minus the independent
    learner's (`reference`, same override tag), with the 95 % Welch interval of the difference over training
    seeds, and a verdict that claims a difference only when the interval excludes zero. Empty unless the
    study has the reference and at least one communicating method."""
    groups = [g for g in group_list if g.system == system and g.evaluated]
    refs = {g.tag: g for g in groups if g.algorithm == reference}
    pairs = [(g, refs[g.tag]) for g in groups if g.algorithm in COMMUNICATING and g.tag in refs]
    if not pairs:
        return []
    lines = [f"**Communication against {reference} on {system}** (evaluation return, difference of the means over "
             "training seeds, 95 % Welch interval):", "",
             "| method | overrides | difference | 95 % interval | verdict |", "|---|---|---|---|---|"]
    for g, ref in sorted(pairs, key=lambda p: -p[0].stat("mean_return")[0]):
        diff, half = difference_interval([r.summary["mean_return"] for r in g.evaluated],
                                         [r.summary["mean_return"] for r in ref.evaluated])
        if math.isnan(half):
            span, verdict = "–", "no interval (fewer than 2 seeds or no spread)"
        else:
            span = f"[{diff - half:+.3f}, {diff + half:+.3f}]"
            verdict = (f"better than {reference}" if diff - half > 0 else
                       f"worse than {reference}" if diff + half < 0 else "no difference shown")
        lines.append(f"| {g.algorithm} | {g.tag} | {diff:+.3f} | {span} | {verdict} |")
    return lines + [""]


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
        cells = [interval_cell(*stats[k], "{:.3f}") for k in ("start", "final", "area_mean")]
        steps = "never" if not n_reached else interval_cell(*to_t, "{:,.0f}")
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


def write_csv(path: Path, rows: Sequence[dict[str, Any]]) -> None:
    """The rows as CSV with the union of their keys as columns (nothing written when there are none)."""
    if not rows:
        return
    keys: list[str] = []
    for row in rows:
        keys += [k for k in row if k not in keys]
    with path.open("w", newline="") as fh:
        writer = csv.DictWriter(fh, fieldnames=keys)
        writer.writeheader()
        writer.writerows(rows)
