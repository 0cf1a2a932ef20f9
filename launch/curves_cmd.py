"""`powernet curves`: the greedy evaluation curves (eval_curve.csv, written with train.eval_every) of several
runs in one figure, beside reference returns such as the local rule's, and a table of where each run
started, peaked and ended. It is how recipes are compared while they train (docs/evaluation.md#comparing-runs).
"""

from __future__ import annotations

import csv
import json
import math
from pathlib import Path

import click

from common.errors import InputError
from launch.errors import exit_on_user_error


def read_eval_curve(run: Path) -> tuple[list[int], list[float]]:
    """(env steps, greedy evaluation return) of RUN/eval_curve.csv, in file order."""
    path = run / "eval_curve.csv"
    if not path.is_file():
        raise InputError(f"--run {run}: no eval_curve.csv (train with train.eval_every > 0 to write one)")
    try:
        rows = list(csv.DictReader(path.open()))
        steps = [int(r["env_steps"]) for r in rows]
        returns = [float(r["eval_return"]) for r in rows]
    except (KeyError, ValueError, TypeError) as exc:
        raise InputError(f"--run {run}: eval_curve.csv is not readable ({type(exc).__name__}: {exc})") from None
    if not rows:
        raise InputError(f"--run {run}: eval_curve.csv has no rows yet")
    return steps, returns


def parse_reference(text: str) -> tuple[str, float]:
    """'NAME=VALUE' (a baseline's return) as (name, value)."""
    name, sep, value = text.rpartition("=")
    try:
        number = float(value)
    except ValueError:
        number = math.nan
    if not sep or not name.strip() or not math.isfinite(number):
        raise InputError(f"--reference {text!r}: expected NAME=VALUE with a finite number, e.g. 'local rule=16.246'")
    return name.strip(), number


@click.command("curves")
@click.option("--run", "runs", multiple=True, required=True, type=click.Path(file_okay=False),
              help="a run directory with eval_curve.csv; repeat for several")
@click.option("--label", "labels", multiple=True, help="legend label of each --run, in order (default: the "
              "run directory's name)")
@click.option("--reference", "references", multiple=True,
              help="a horizontal line 'NAME=VALUE', e.g. 'local rule=16.246'; repeat for several")
@click.option("--title", default="greedy evaluation during training", show_default=True)
@click.option("--out", "out_path", required=True, type=click.Path(dir_okay=False),
              help="PNG to write; the same name with .json holds the curves and the table")
@exit_on_user_error
def curves(runs: tuple[str, ...], labels: tuple[str, ...], references: tuple[str, ...], title: str,
           out_path: str) -> None:
    """Greedy evaluation curves of several runs in one figure, with reference lines, and a summary table."""
    if labels and len(labels) != len(runs):
        raise InputError(f"--label given {len(labels)} times for {len(runs)} --run; give one per run or none")
    refs = [parse_reference(r) for r in references]
    series = []
    for i, run_dir in enumerate(runs):
        run = Path(run_dir)
        steps, returns = read_eval_curve(run)
        series.append({"label": labels[i] if labels else run.name, "run": str(run), "env_steps": steps,
                       "eval_return": returns})
    from launch.plots import plot_eval_curves

    out = Path(out_path)
    out.parent.mkdir(parents=True, exist_ok=True)
    plot_eval_curves(series, refs, out, title)
    width = max(len(s["label"]) for s in series)
    click.echo(f"{'run':<{width}}  {'first':>18}  {'best':>18}  {'last':>18}")
    for s in series:
        best = max(range(len(s["eval_return"])), key=s["eval_return"].__getitem__)
        cells = [(s["env_steps"][k], s["eval_return"][k]) for k in (0, best, -1)]
        click.echo(f"{s['label']:<{width}}  " + "  ".join(f"{r:>8.3f} @ {n:>7,}" for n, r in cells))
    for name, value in refs:
        click.echo(f"reference {name}: {value:.3f}")
    table = out.with_suffix(".json")
    table.write_text(json.dumps({"title": title, "references": dict(refs), "runs": series}, indent=1) + "\n")
    click.echo(f"wrote {out} and {table}")
