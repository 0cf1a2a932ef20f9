"""`powernet plot --run DIR`: learning curves and evaluation voltage traces of a run, as PNG in DIR/plots/."""

from __future__ import annotations

from pathlib import Path

import click

from common.errors import InputError
from launch.errors import exit_on_user_error


@click.command("plot")
@click.option("--run", "run_dir", type=click.Path(file_okay=False), required=True, help="run directory")
@click.option("--traces", type=int, default=4, show_default=True,
              help="evaluation episodes (RUN/eval/episode-*.npz) to draw voltage traces for")
@exit_on_user_error
def plot(run_dir: str, traces: int) -> None:
    """Draw RUN/plots/{return,losses,violations}.png from metrics.csv, and eval-*.png when RUN/eval/ exists."""
    from launch.plots import plot_run, read_metrics, return_change

    run = Path(run_dir)
    if not run.is_dir():
        raise InputError(f"--run {run}: no such run directory")
    if not (run / "metrics.csv").is_file():
        raise InputError(f"--run {run}: no metrics.csv (not a training run directory, or training has not "
                         "written any update yet)")
    try:
        written = plot_run(run, max_traces=max(0, traces))
    except (ValueError, KeyError) as exc:
        raise InputError(f"--run {run}: cannot read metrics.csv ({exc})") from exc
    for path in written:
        click.echo(str(path))
    first, last = return_change(read_metrics(run / "metrics.csv"))
    click.echo(f"training return: {first:.3f} over the first 10% of updates, {last:.3f} over the last 10% "
               f"({last - first:+.3f})")
