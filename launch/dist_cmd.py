"""`powernet learner` and `powernet actor`: the two services of a distributed run, one process each."""

from __future__ import annotations

import json
import secrets
import sys
import time
from collections.abc import Callable
from pathlib import Path

import click

from common.config import load_config
from common.errors import InputError
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
@click.option("--bind", "bind", metavar="tcp://HOST:PORT",
              help="control socket address; rollouts bind PORT+1, weights PORT+2 (PORT 0: free ports). "
                   "HOST other than loopback needs --keys or --insecure")
@click.option("--keys", "keys_dir", type=click.Path(file_okay=False),
              help="CURVE key directory from `powernet keys`: encrypt and accept only its allowed actors")
@click.option("--insecure", is_flag=True, help="allow a non-loopback bind without CURVE (not recommended)")
@click.option("--first-wave", type=int, default=0, hidden=True,
              help="async: actors the first update waits for (the supervisor starts the others after it)")
@exit_on_user_error
def learner(config_path: str, out_dir: str, steps: int | None, overrides: tuple[str, ...], run_id: str | None,
            free_ports: bool, watch_parent: bool, resume: bool, bind: str | None, keys_dir: str | None,
            insecure: bool, first_wave: int) -> None:
    """Run the learner service: bind rollout/weights/control sockets and train."""
    # pyzmq (through common.security), torch and the simulator load here, not at import: --help stays quick.
    from common.security import parse_tcp
    from launch.dist import build_learner
    extra = list(overrides) + ([f"train.steps={steps}"] if steps is not None else [])
    if bind is not None:
        extra, free_ports = extra + _bind_overrides(bind), free_ports or parse_tcp(bind)[1] == 0
    cfg = load_config(config_path, extra)
    run_id = run_id or f"{Path(out_dir).name or 'run'}-{secrets.token_hex(4)}"
    service = build_learner(cfg, out_dir, run_id, free_ports=free_ports, watch_parent=watch_parent, resume=resume,
                            keys=keys_dir, insecure=insecure)
    if first_wave > 0 and service.intake.credits is not None:
        service.intake.credits.first_wave = min(first_wave, cfg.dist.actors)
    if service.security.warning:
        click.echo(f"warning: {service.security.warning}", err=True)
    try:
        service.write_endpoints(Path(out_dir) / "endpoints.json")
        click.echo(json.dumps({"run_id": run_id, **service.endpoints}), err=True)
        summary = service.run()
    finally:
        service.close()
    click.echo(json.dumps(summary))


@click.command("actor")
@click.option("--learner", "address", help="learner control endpoint, tcp://HOST:PORT")
@click.option("--learner-file", type=click.Path(dir_okay=False), hidden=True,
              help="instead of --learner: the learner's endpoints.json, waited for after the actor has set up")
@click.option("--id", "actor_id", type=int, required=True, help="actor index k in 0..dist.actors-1")
@click.option("-c", "--config", "config_path", type=click.Path(dir_okay=False), required=True,
              help="the run's config (the learner refuses a different one)")
@click.option("--set", "overrides", multiple=True, metavar="SECTION.KEY=VALUE", help="override a config key")
@click.option("--run-id", required=True, help="the run id the learner printed")
@click.option("--out", "out_dir", type=click.Path(file_okay=False), help="run directory for logs/actor-K.log")
@click.option("--timeout", "timeout_s", type=float, default=15.0, show_default=True,
              help="seconds without any answer from the learner before giving up")
@click.option("--keys", "keys_dir", type=click.Path(file_okay=False),
              help="CURVE key directory holding actor-K.key_secret (K = --id) and learner.key")
@exit_on_user_error
def actor(address: str | None, learner_file: str | None, actor_id: int, config_path: str,
          overrides: tuple[str, ...], run_id: str, out_dir: str | None, timeout_s: float,
          keys_dir: str | None) -> None:
    """Run one actor: step E envs, send rollouts, apply new weights; exit 0 when the learner says stop."""
    from actor.worker import LearnerGone, run_actor
    from common.security import client_security, is_loopback, parse_tcp
    from launch.dist import actor_logger

    if (address is None) == (learner_file is None):
        raise InputError("give the learner's control endpoint with --learner tcp://HOST:PORT")
    if address is not None:
        if not address.startswith(("tcp://", "ipc://")):
            raise InputError(f"--learner {address!r}: expected tcp://HOST:PORT")
        if address.startswith("tcp://"):
            parse_tcp(address, "--learner")
    security = client_security(keys_dir, actor_id)
    cfg = load_config(config_path, list(overrides))
    if not 0 <= actor_id < cfg.dist.actors:
        raise InputError(f"--id {actor_id}: expected 0..{cfg.dist.actors - 1} (dist.actors = {cfg.dist.actors})")
    log = actor_logger(out_dir, actor_id)
    if address is not None and security.secret is None and address.startswith("tcp://") \
            and not is_loopback(parse_tcp(address)[0]):
        log.warning("connecting to %s without CURVE keys (--keys): the link is not encrypted", address)
    learner = address if address is not None else _endpoint_from(Path(learner_file), max(timeout_s, 120.0))
    try:
        code = run_actor(cfg, learner, actor_id, run_id, log, timeout_s=timeout_s, security=security)
    except LearnerGone as exc:
        log.error("%s", exc)
        click.echo(f"error: actor {actor_id}: {exc}", err=True)
        sys.exit(3)
    sys.exit(code)


def _endpoint_from(path: Path, timeout_s: float) -> Callable[[], str]:
    """A function that waits (up to `timeout_s`) for the learner's endpoints.json and returns its control
    endpoint: an actor started with the learner sets itself up while the learner starts."""
    from actor.worker import LearnerGone

    def wait() -> str:
        deadline = time.monotonic() + timeout_s
        while True:
            try:
                return str(json.loads(path.read_text())["control"])
            except (OSError, ValueError, KeyError, TypeError):
                pass
            if time.monotonic() > deadline:
                raise LearnerGone(f"no learner endpoints in {path} after {timeout_s:.0f} s")
            time.sleep(0.05)

    return wait


def _bind_overrides(bind: str) -> list[str]:
    """Config overrides for ``--bind tcp://HOST:PORT``: control on PORT, rollouts PORT+1, weights PORT+2."""
    from common.security import parse_tcp

    host, port = parse_tcp(bind)
    if port > 65533:
        raise InputError(f"--bind {bind!r}: PORT+2 must be a valid port (PORT <= 65533)")
    ports = [] if port == 0 else [f"dist.control_port={port}", f"dist.rollout_port={port + 1}",
                                  f"dist.weights_port={port + 2}"]
    return [f"dist.host={json.dumps(host)}"] + ports


@click.command("keys")
@click.option("--out", "out_dir", type=click.Path(file_okay=False), required=True, help="key directory to create")
@click.option("--actors", type=int, default=1, show_default=True, help="actor key pairs to create (ids 0..N-1)")
@exit_on_user_error
def keys(out_dir: str, actors: int) -> None:
    """Create CURVE keys: the learner's pair, one pair per actor, and the learner's allow-list (DIR/allowed)."""
    from common.security import generate_keys

    made = generate_keys(out_dir, actors)
    click.echo(f"wrote {len(made)} key pairs to {out_dir} (secret files mode 0600); allow-list: "
               f"{Path(out_dir) / 'allowed'}")
