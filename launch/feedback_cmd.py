"""`powernet feedback`: does a learned policy close the loop? The slope and R² of its greedy set-points against
the droop term a DG measures, or hears from its neighbours when its own sensor has failed, and linear probes
of whether that term reaches the agents' recurrent state (launch/feedback.py,
docs/evaluation.md#does-a-policy-close-the-loop). Prints a table and writes JSON."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import click

from launch.errors import exit_on_user_error


def label(run: Path) -> str:
    """STUDY/RUN for a run of a study (run names repeat across studies), else RUN."""
    return f"{run.parent.parent.name}/{run.name}" if (run.parent.parent / "study.toml").is_file() else run.name


@click.command("feedback")
@click.option("--run", "runs", type=click.Path(), multiple=True, required=True,
              help="a trained run directory (config.toml, checkpoints/); repeat for several")
@click.option("--scenario", default=None, help="evaluate on this scenario instead of each run's own")
@click.option("--checkpoint", type=click.Choice(["latest", "best"]), default="latest", show_default=True)
@click.option("--episodes", type=int, default=20, show_default=True, help="greedy episodes per run")
@click.option("--seed", type=int, default=2000, show_default=True,
              help="first evaluation seed; episode k uses seed + 25 k (the protocol's 2000, 2025, ..., 2475)")
@click.option("--out", "out_path", type=click.Path(dir_okay=False), required=True, help="JSON output")
@exit_on_user_error
def feedback(runs: tuple[str, ...], scenario: str | None, checkpoint: str, episodes: int, seed: int,
             out_path: str) -> None:
    """Does a policy close the loop: slope of its set-points against the droop term it measures or hears."""
    from common.errors import InputError
    from launch.eval_protocol import evaluation_seeds
    from launch.feedback import policy_feedback
    from launch.provenance import git_commit, has_uncommitted_changes
    from simsvc.scenarios import load_scenario

    if episodes < 1:
        raise InputError("--episodes must be at least 1")
    for run in runs:
        if not (Path(run) / "config.toml").is_file():
            raise InputError(f"no config.toml in {run}: not a trained run directory")
    if scenario is not None:
        load_scenario(scenario)  # an unknown name is one line before any work
    seeds = evaluation_seeds(seed, episodes)
    rows = []
    click.echo(f"{'run':34s} {'return':>8s}  own: slope   R²      n   heard: slope   R²      n"
               "   probe R²: working h, failed h, heard h")

    def cell(fit: dict) -> str:
        if fit["slope"] is None:
            return f"{'–':>11s} {'–':>5s} {fit['n']:6d}"
        return f"{fit['slope']:11.3f} {fit['r2']:5.2f} {fit['n']:6d}"

    for run in runs:
        row = policy_feedback(run, seeds, scenario, checkpoint)
        rows.append(row)
        probes = "  ".join("–" if p["r2"] is None else f"{p['r2']:.2f}" for p in row["probe_r2"].values())
        click.echo(f"{label(Path(run)):34s} {row['mean_return']:8.3f} {cell(row['own'])}   {cell(row['heard'])}"
                   f"   {probes}")
    out = Path(out_path)
    out.parent.mkdir(parents=True, exist_ok=True)
    record = {"command": "powernet feedback " + " ".join(sys.argv[2:]), "commit": git_commit(),
              "uncommitted_changes": has_uncommitted_changes(), "seeds": seeds, "checkpoint": checkpoint,
              "runs": rows}
    out.write_text(json.dumps(record, indent=1) + "\n")
    click.echo(f"wrote {out}")
