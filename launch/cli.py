"""The `powernet` command line: one click group, each command a thin wrapper over a library call.

Commands are imported when they run, not when the group is built: the command modules pull in torch,
numba, matplotlib or scipy, and `powernet --help` (or any one command) should not pay for all of them.
The listing's one-line help is read from each command function's docstring in its source file.
"""

from __future__ import annotations

import ast
import importlib
import importlib.util
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import click

from launch.errors import exit_on_user_error

# Command name -> "module:attribute" of its click command (keeps this file a table of contents).
COMMANDS: dict[str, str] = {
    "sim": "launch.sim_cmd:sim",
    "train": "launch.train_cmd:train",
    "evaluate": "launch.train_cmd:evaluate",
    "learner": "launch.dist_cmd:learner",
    "actor": "launch.dist_cmd:actor",
    "keys": "launch.dist_cmd:keys",
    "plot": "launch.plot_cmd:plot",
    "curves": "launch.curves_cmd:curves",
    "study": "launch.study_cmd:study",
    "report": "launch.study_cmd:report",
    "fit-baselines": "launch.fit_cmd:fit_baselines",
    "gap": "launch.gap_cmd:gap",
    "traces": "launch.traces_cmd:traces",
    "feedback": "launch.feedback_cmd:feedback",
}
BENCH_COMMANDS: dict[str, str] = {
    "act": "launch.bench_act:bench_act",
    "actors": "launch.bench_actors:bench_actors",
    "sim": "launch.bench_sim:bench_sim",
    "learner": "launch.train_cmd:bench_learner",
    "scale": "launch.bench_scale:bench_scale",
    "system": "launch.bench_system:bench_system",
}


def source_docstring(target: str) -> str | None:
    """The docstring of the function `module:attribute`, read from its source without importing the module
    (None when the source or the function cannot be found that way)."""
    module_name, _, attr = target.partition(":")
    spec = importlib.util.find_spec(module_name)
    if spec is None or spec.origin is None or not spec.origin.endswith(".py"):
        return None
    tree = ast.parse(Path(spec.origin).read_text(encoding="utf-8"))
    for node in tree.body:
        if isinstance(node, ast.FunctionDef) and node.name == attr:
            return ast.get_docstring(node)
    return None


class LazyGroup(click.Group):
    """A click group whose subcommands, given as name -> "module:attribute", are imported on first use."""

    def __init__(self, *args: Any, lazy_commands: Mapping[str, str] | None = None, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.lazy_commands = dict(lazy_commands or {})

    def list_commands(self, ctx: click.Context) -> list[str]:
        return sorted({*self.commands, *self.lazy_commands})

    def get_command(self, ctx: click.Context, cmd_name: str) -> click.Command | None:
        if cmd_name not in self.commands and cmd_name in self.lazy_commands:
            module_name, _, attr = self.lazy_commands[cmd_name].partition(":")
            self.add_command(getattr(importlib.import_module(module_name), attr), cmd_name)
        return super().get_command(ctx, cmd_name)

    def format_commands(self, ctx: click.Context, formatter: click.HelpFormatter) -> None:
        """The command listing, as click writes it, without importing the commands not loaded yet."""
        names = self.list_commands(ctx)
        if not names:
            return
        limit = formatter.width - 6 - max(len(name) for name in names)
        rows = []
        for name in names:
            cmd = self.commands.get(name)
            doc = None if cmd is not None else source_docstring(self.lazy_commands[name])
            if doc is not None:
                cmd = click.Command(name, help=doc)
            else:
                cmd = self.get_command(ctx, name)
            if cmd is not None and not cmd.hidden:
                rows.append((name, cmd.get_short_help_str(limit)))
        if rows:
            with formatter.section("Commands"):
                formatter.write_dl(rows)


@click.group(cls=LazyGroup, lazy_commands=COMMANDS, context_settings={"help_option_names": ["-h", "--help"]})
def main() -> None:
    """PowerNet: multi-agent RL for secondary voltage control of isolated microgrids."""


@main.group(cls=LazyGroup, lazy_commands=BENCH_COMMANDS)
def bench() -> None:
    """Speed benchmarks; each prints a table and writes JSON."""


__all__ = ["main", "exit_on_user_error", "LazyGroup", "COMMANDS", "BENCH_COMMANDS"]
