"""`powernet train`, `powernet evaluate` and `powernet bench learner`: thin click wrappers over
launch.local_trainer, launch.evaluate and launch.bench_learner."""

from __future__ import annotations

import json
from pathlib import Path

import click

from common.config import load_config, replace
from common.errors import InputError
from launch.bench_options import grid_options
from launch.errors import exit_on_user_error


def system_argument(system: str) -> str:
    """--system as the config keeps it: a shipped name as given, a file path made absolute (so that the run's
    config.toml still finds it from another directory, e.g. for `powernet evaluate`)."""
    return str(Path(system).resolve()) if system.endswith(".toml") or "/" in system else system


@click.command()
@click.option("-c", "--config", "config_path", type=click.Path(dir_okay=False),
              help="TOML config, e.g. configs/powernet.toml (with --resume: the run's config.toml)")
@click.option("--system", help="the grid: a shipped system's name (microgrid-6, microgrid-20, ...) or the path of a "
              "system TOML file (overrides env.system)")
@click.option("--preset", help="a training recipe applied to every algorithm alike: paper (the original) or tuned "
              "(configs/presets/NAME.toml), or a preset file; its keys override the config file, --set overrides it")
@click.option("--mode", type=click.Choice(["local", "sync", "async"]), default="local", show_default=True,
              help="local: one process steps the envs and updates (the reference trainer); sync: a learner "
              "and --actors actor processes, exactly on-policy; async: actors never wait, lag-bounded "
              "rollouts corrected with V-trace")
@click.option("--actors", type=int, help="sync/async: actor processes (overrides dist.actors)")
@click.option("--envs-per-actor", type=int, help="sync/async: envs of each actor (overrides dist.envs_per_actor)")
@click.option("--steps", type=int, help="environment steps in total (overrides train.steps)")
@click.option("--out", "out_dir", type=click.Path(file_okay=False), required=True, help="run directory")
@click.option("--set", "overrides", multiple=True, metavar="SECTION.KEY=VALUE", help="override a config key")
@click.option("--device", type=click.Choice(["cpu", "cuda"]), help="learner device (overrides train.device)")
@click.option("--resume", is_flag=True, help="continue the run in --out from its latest checkpoint")
@click.option("--progress", "progress_style", type=click.Choice(["auto", "bar", "plain", "off"]), default="auto",
              show_default=True, help="auto: a progress bar on a terminal, plain lines every train.log_every "
              "updates otherwise")
@exit_on_user_error
def train(config_path: str | None, system: str | None, preset: str | None, mode: str, actors: int | None,
          envs_per_actor: int | None, steps: int | None, out_dir: str, overrides: tuple[str, ...],
          device: str | None, resume: bool, progress_style: str) -> None:
    """Train an algorithm on a system and write the run directory."""
    # --mode defaults to local, which has no actors: refuse rather than silently train in one process.
    actor_flags = [flag for flag, value in (("--actors", actors), ("--envs-per-actor", envs_per_actor))
                   if value is not None]
    if actor_flags and mode == "local":
        raise InputError(f"{' and '.join(actor_flags)} need distributed training: add --mode sync or --mode "
                         f"async (--mode local runs one process and has no actors)")
    if config_path is None:
        if not resume:
            raise InputError("missing -c/--config (e.g. -c configs/powernet.toml)")
        config_path = str(Path(out_dir) / "config.toml")
    from launch.presets import preset_overrides

    extra = [*(preset_overrides(preset) if preset else []), *overrides]
    if system is not None:
        extra.append(f"env.system={json.dumps(system_argument(system))}")
    if steps is not None:
        extra.append(f"train.steps={steps}")
    if device is not None:
        extra.append(f'train.device="{device}"')
    extra += [f"dist.actors={actors}"] * (actors is not None)
    extra += [f"dist.envs_per_actor={envs_per_actor}"] * (envs_per_actor is not None)
    cfg = load_config(config_path, extra)
    from actor.envs import agent_spec

    agent_spec(cfg.env)  # an unknown system or a broken system file: one line, before anything starts
    from simsvc.scenarios import load_scenario

    load_scenario(cfg.env.scenario)  # likewise an unknown scenario or a broken scenario file
    from launch.progress import Progress

    display = Progress(cfg.train.steps, style=progress_style, every=cfg.train.log_every, desc=mode)
    echo = display.style != "bar"  # on a terminal the bar replaces the echoed log lines (logs/ keeps them)
    if mode in ("sync", "async"):
        from launch.dist import TrainingFailed, run_distributed

        try:
            with display:
                summary = run_distributed(replace(cfg, dist={"mode": mode}), out_dir, echo=echo,
                                          progress=display.update, resume=resume)
        except TrainingFailed as exc:  # the details (exit codes, last log lines) are in the supervisor log
            first = str(exc).strip().splitlines()[0] if str(exc).strip() else "training failed"
            click.echo(f"error: {first} (see {Path(out_dir) / 'logs'})", err=True)
            raise SystemExit(1) from None
    else:
        from launch.local_trainer import train_local  # torch: only the process that trains imports it

        with display:
            summary = train_local(cfg, out_dir, resume=resume, echo=echo, progress=display.update)
    click.echo(json.dumps(summary))


@click.command()
@click.option("--run", "run_dir", type=click.Path(file_okay=False), required=True, help="run directory")
@click.option("--episodes", type=int, default=20, show_default=True, help="evaluation episodes")
@click.option("--seed", type=int, default=2000, show_default=True,
              help="first seed; episode k uses seed + 25 k (the protocol's 2000, 2025, ..., 2475)")
@click.option("--checkpoint", type=click.Choice(["latest", "best"]), default="latest", show_default=True)
@click.option("--scenario", help="evaluate on this scenario instead of the run's own (configs/scenarios/NAME.toml "
              "or a scenario file); the results go to RUN/eval-NAME/")
@exit_on_user_error
def evaluate(run_dir: str, episodes: int, seed: int, checkpoint: str, scenario: str | None) -> None:
    """Run the greedy policy on fixed seeds; write RUN/eval/summary.json and per-episode npz traces."""
    from launch.evaluate import evaluate_run

    summary = evaluate_run(run_dir, episodes=episodes, seed=seed, checkpoint=checkpoint, scenario=scenario)
    keys = ("episodes", "mean_return", "std_return", "violation_rate", "mean_settling_step", "max_dev_pu")
    click.echo(json.dumps({k: summary[k] for k in keys}))


@click.command("learner")
@grid_options("runs/bench-learner.json", "batch sizes (envs per update) to time")
@click.option("--repeats", type=int, default=5, show_default=True, help="timed updates per measurement")
@click.option("--threads", type=int, default=1, show_default=True, help="torch CPU threads")
@click.option("--unroll", type=click.Choice(["kernel", "torch"]), default="kernel", show_default=True,
              help="train.unroll: the compiled window kernel (where the network has one) or torch's loop")
@exit_on_user_error
def bench_learner(out_path: str, systems: str, algorithms: str, envs: str, repeats: int, threads: int,
                  unroll: str) -> None:
    """Updates/s and agent-steps/s learned per algorithm and system, against the per-agent-loop style."""
    from launch.bench_learner import run_bench

    try:
        env_counts = [int(x) for x in envs.split(",")]
    except ValueError as exc:
        raise InputError(f"--envs: expected comma-separated integers, got {envs!r}") from exc
    result = run_bench(systems.split(","), algorithms, env_counts, repeats, threads, unroll)
    path = Path(out_path)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(result, indent=2) + "\n")
    click.echo(json.dumps(result["summary"], indent=2))
    click.echo(f"wrote {path}")
