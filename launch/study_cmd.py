"""`powernet study` and `powernet report`: thin click wrappers over launch.study_spec, launch.study,
launch.report and launch.study_archive."""

from __future__ import annotations

import sys
from dataclasses import replace
from pathlib import Path

import click

from common.errors import InputError
from launch.errors import exit_on_user_error


@click.command("study")
@click.option("-c", "--config", "config_path", type=click.Path(dir_okay=False), required=True,
              help="study config, e.g. configs/studies/paper_mg6.toml")
@click.option("--out", "out_dir", type=click.Path(file_okay=False), required=True,
              help="study directory, e.g. studies/paper_mg6 (re-run the same command to continue)")
@click.option("--jobs", type=int, help="runs at a time (overrides study.jobs; capped by the machine's cores)")
@click.option("--steps", type=int, help="environment steps per run for this pass (overrides study.steps); a "
              "later pass with more steps continues the same runs from their checkpoints")
@click.option("--dry-run", is_flag=True, help="print the runs, their state and their commands; run nothing")
@click.option("--no-train", is_flag=True, help="train nothing: evaluate the runs that have finished and run "
              "the controllers (a study cut short, before `powernet report --archive`)")
@click.option("--restore", "restore_dir", type=click.Path(file_okay=False),
              help="an archive written by `powernet report --archive`: its finished runs are copied into OUT "
              "first and count as finished and evaluated")
@exit_on_user_error
def study(config_path: str, out_dir: str, jobs: int | None, steps: int | None, dry_run: bool, no_train: bool,
          restore_dir: str | None) -> None:
    """Train a grid of runs a few at a time (each resumable), evaluate them and the conventional controllers.

    Finished runs are skipped, interrupted ones resume from their latest checkpoint; Ctrl-C stops every
    child and leaves the study ready to continue. A study longer than one machine's session continues on
    another from its archive (--restore)."""
    from launch.study import run_study
    from launch.study_spec import load_study

    if jobs is not None and jobs < 1:
        raise InputError("--jobs must be at least 1")
    if steps is not None and steps < 1:
        raise InputError("--steps must be at least 1")
    spec = load_study(config_path)
    if steps is not None:
        spec = replace(spec, steps=steps)
    argv = ["study", "-c", config_path, "--out", out_dir, *(["--jobs", str(jobs)] if jobs else []),
            *(["--steps", str(steps)] if steps is not None else []), *(["--no-train"] if no_train else []),
            *(["--restore", restore_dir] if restore_dir else [])]
    status = run_study(spec, Path(out_dir), jobs=jobs, dry_run=dry_run, echo=click.echo, argv=argv,
                       train=not no_train, restore=Path(restore_dir) if restore_dir else None)
    if status:
        sys.exit(status)


@click.command("report")
@click.option("--study", "study_dir", type=click.Path(file_okay=False), required=True,
              help="study directory written by `powernet study`")
@click.option("--out", "out_dir", type=click.Path(file_okay=False),
              help="report folder (default: STUDY/report)")
@click.option("--trace-seed", type=int, help="evaluation seed of the voltage-trajectory figure (default: the first)")
@click.option("--archive", "archive_dir", type=click.Path(file_okay=False),
              help="also write a compact copy of the study (no checkpoints; small enough to commit) that "
              "`powernet report --study` reads and `powernet study --restore` continues from")
@exit_on_user_error
def report(study_dir: str, out_dir: str | None, trace_seed: int | None, archive_dir: str | None) -> None:
    """Write STUDY/report/report.md (results table with 95 % intervals, sample efficiency, provenance, wall
    times, commands), table.csv, efficiency.csv and PNG figures: learning curves, voltage trajectories and
    the α/β heat map."""
    from launch.report import write_report

    argv = ["report", "--study", study_dir, *(["--out", out_dir] if out_dir else []),
            *(["--trace-seed", str(trace_seed)] if trace_seed is not None else []),
            *(["--archive", archive_dir] if archive_dir else [])]
    path = write_report(study_dir, out_dir, trace_seed=trace_seed, argv=argv)
    click.echo(str(path))
    for png in sorted(path.parent.glob("*.png")):
        click.echo(str(png))
    if archive_dir:
        from launch.study_archive import archive_study

        kept = archive_study(study_dir, archive_dir)
        click.echo(f"{archive_dir}: {len(kept)} finished run(s), no checkpoints")
