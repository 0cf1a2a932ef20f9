"""`powernet learner` and `powernet actor`: the two services of a distributed run, one process each."""

from __future__ import annotations

import json
import secrets
import sys
from pathlib import Path

import click

from common.config import load_config
from launch.errors import exit_on_user_error


@click.command("learner")
@click.option("-c", "--config", "config_path", type=click.Path(dir_okay=False), required=True)
@click.option("--out", "out_dir", type=click.Path(file_okay=False), required=True, help="run directory")
@click.option("--steps", type=int, help="environment steps in total (overrides train.steps)")
@click.option("--set", "overrides", multiple=True, metavar="SECTION.KEY=VALUE", help="override a config key")
@click.option("--run-id", help="run id every message must carry (default: generated, printed)")
@click.option("--free-ports", is_flag=True, help="bind free ports instead of dist.*_port (see endpoints.json)")
@click.option("--watch-parent", is_flag=True, hidden=True, help="stop when the launching process is gone")
@click.option("--resume", is_flag=True, help="continue the run in --out from its latest checkpoint")
@exit_on_user_error
def learner(config_path: str, out_dir: str, steps: int | None, overrides: tuple[str, ...], run_id: str | None,
            free_ports: bool, watch_parent: bool, resume: bool) -> None:
    """Run the learner service: bind rollout/weights/control sockets and train."""
    from launch.dist import build_learner

    extra = list(overrides) + ([f"train.steps={steps}"] if steps is not None else [])
    cfg = load_config(config_path, extra)
    run_id = run_id or f"{Path(out_dir).name or 'run'}-{secrets.token_hex(4)}"
    service = build_learner(cfg, out_dir, run_id, free_ports=free_ports, watch_parent=watch_parent, resume=resume)
    try:
        service.write_endpoints(Path(out_dir) / "endpoints.json")
        click.echo(json.dumps({"run_id": run_id, **service.endpoints}), err=True)
        summary = service.run()
    finally:
        service.close()
    click.echo(json.dumps(summary))


@click.command("actor")
@click.option("--learner", "address", required=True, help="learner control endpoint, tcp://HOST:PORT")
@click.option("--id", "actor_id", type=int, required=True, help="actor index k in 0..dist.actors-1")
@click.option("-c", "--config", "config_path", type=click.Path(dir_okay=False), required=True,
              help="the run's config (the learner refuses a different one)")
@click.option("--set", "overrides", multiple=True, metavar="SECTION.KEY=VALUE", help="override a config key")
@click.option("--run-id", required=True, help="the run id the learner printed")
@click.option("--out", "out_dir", type=click.Path(file_okay=False), help="run directory for logs/actor-K.log")
@click.option("--timeout", "timeout_s", type=float, default=15.0, show_default=True,
              help="seconds without any answer from the learner before giving up")
@exit_on_user_error
def actor(address: str, actor_id: int, config_path: str, overrides: tuple[str, ...], run_id: str,
          out_dir: str | None, timeout_s: float) -> None:
    """Run one actor: step E envs, send rollouts, apply new weights; exit 0 when the learner says stop."""
    from actor.worker import LearnerGone, run_actor
    from common.errors import InputError
    from launch.dist import actor_logger

    if not address.startswith(("tcp://", "ipc://")):
        raise InputError(f"--learner {address!r}: expected tcp://HOST:PORT")
    cfg = load_config(config_path, list(overrides))
    if not 0 <= actor_id < cfg.dist.actors:
        raise InputError(f"--id {actor_id}: expected 0..{cfg.dist.actors - 1} (dist.actors = {cfg.dist.actors})")
    log = actor_logger(out_dir, actor_id)
    try:
        code = run_actor(cfg, address, actor_id, run_id, log, timeout_s=timeout_s)
    except LearnerGone as exc:
        log.error("%s", exc)
        click.echo(f"error: actor {actor_id}: {exc}", err=True)
        sys.exit(3)
    sys.exit(code)
