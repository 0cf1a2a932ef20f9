"""The command-line options the per-algorithm benchmarks share (`bench learner`, `bench act`): where the JSON
goes and which systems, algorithms and env counts form the grid."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import click


def grid_options(out_default: str, envs_help: str) -> Callable[[Callable[..., Any]], Callable[..., Any]]:
    """--out, --systems, --algorithms and --envs, in that order."""
    options = [
        click.option("--out", "out_path", type=click.Path(dir_okay=False), default=out_default, show_default=True,
                     help="JSON output"),
        click.option("--systems", default="microgrid-6,microgrid-20", show_default=True,
                     help="comma-separated system names or system file paths"),
        click.option("--algorithms", default="all", show_default=True, help="comma-separated, or all"),
        click.option("--envs", default="1,4,16", show_default=True, help=envs_help),
    ]

    def decorate(command: Callable[..., Any]) -> Callable[..., Any]:
        for option in reversed(options):
            command = option(command)
        return command

    return decorate
