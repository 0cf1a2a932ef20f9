"""The `powernet` command line: one click group, each command a thin wrapper over a library call."""

from __future__ import annotations

import click

from launch.errors import exit_on_user_error


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
def main() -> None:
    """PowerNet: multi-agent RL for secondary voltage control of isolated microgrids."""


@main.group()
def bench() -> None:
    """Speed benchmarks; each prints a table and writes JSON."""


def _register() -> None:
    """Attach the commands that live in their own modules (keeps this file a table of contents)."""
    from launch import bench_sim, bench_system, dist_cmd, plot_cmd, sim_cmd, train_cmd

    main.add_command(sim_cmd.sim)
    bench.add_command(bench_sim.bench_sim)
    main.add_command(train_cmd.train)
    main.add_command(train_cmd.evaluate)
    bench.add_command(train_cmd.bench_learner)
    main.add_command(dist_cmd.learner)
    main.add_command(dist_cmd.actor)
    main.add_command(dist_cmd.keys)
    main.add_command(plot_cmd.plot)
    bench.add_command(bench_system.bench_system)
    from launch import study_cmd

    main.add_command(study_cmd.study)
    main.add_command(study_cmd.report)


_register()

__all__ = ["main", "exit_on_user_error"]
