"""One-machine distributed training: build the learner service, and supervise learner + N actor processes.

`run_distributed` starts ``python -m launch learner`` and ``python -m launch actor`` as child processes on
free loopback ports (the learner picks them and writes RUN/endpoints.json), restarts an actor that dies
(logging its exit code or signal and last log lines) or hangs (alive, but the learner has heard nothing from
it, no rollout and no heartbeat, for dist.actor_hang_s: RUN/liveness.json, written by the learner), and stops
every child when the learner ends, fails, or the user presses Ctrl-C. Each service logs to
RUN/logs/<service>.log (its raw stderr to .out).

In async mode it starts at most as many actors as there are CPU cores together with the learner (they set
up while it starts, and wait for its endpoints) and the rest once the learner has made its first update (or
after START_WAVE_WAIT_S): actors starting together share the cores, so starting all of them at once delays
every one of them, and the first update with them. In sync mode, where every update needs every actor, all
start at once, after `python -m actor.warm` has filled the kernel cache.
"""

from __future__ import annotations

import json
import logging
import os
import secrets
import signal
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from common import config as config_mod
from common.config import Config
from common.logs import setup_logging

MAX_RESTARTS = 5
START_WAVE_WAIT_S = 30.0  # async: the other actors start after the first update, or after this long
LIVENESS_STALE_S = 10.0   # a liveness file older than this says nothing about the actors (the learner is busy)


class TrainingFailed(RuntimeError):
    """The learner process failed; the message carries its exit status and last log lines."""


def build_learner(cfg: Config, out_dir: str | Path, run_id: str, free_ports: bool = False, echo: bool = False,
                  watch_parent: bool = False, resume: bool = False, keys: str | Path | None = None,
                  insecure: bool = False) -> Any:
    """Seed, build the model as the local trainer does (from the system's agent graph: the learner builds no
    simulator), write config.toml, bind the learner's sockets and give them the run's value bounds
    (`launch.run_bounds`); with `resume`, continue from
    RUN/checkpoints/latest.pt (model, optimiser, counters, actors' streams). `keys`/`insecure`: the bind
    policy of `common.security` (checked first, before anything is written)."""
    from common.security import server_security  # pyzmq: the learner's, not the supervisor's
    from launch.local_trainer import prepare_run
    from launch.run_bounds import run_bounds
    from learner.core import read_checkpoint
    from learner.service import LearnerService, torch_threads

    security = server_security(cfg.dist.host, keys, insecure)
    torch_threads()
    latest, model = prepare_run(cfg, out_dir, resume)
    service = LearnerService(cfg, model, out_dir, run_id, free_ports=free_ports, echo=echo,
                             watch_parent=watch_parent, security=security)
    if security.warning:
        service.log.warning("%s", security.warning)
    bounds = run_bounds(cfg)  # the value ranges of this run's rollouts, from its reward and discount
    if bounds is not None:
        service.use_bounds(bounds)
    if resume:
        service.restore(read_checkpoint(latest))
    return service


def _tail(path: Path, lines: int = 8) -> str:
    try:
        return "\n".join(path.read_text(errors="replace").splitlines()[-lines:])
    except OSError:
        return "(no log)"


def _describe(rc: int) -> str:
    if rc < 0:
        try:
            return f"signal {signal.Signals(-rc).name}"
        except ValueError:
            return f"signal {-rc}"
    return f"exit code {rc}"


def _stop(procs: list[subprocess.Popen], grace_s: float = 3.0) -> None:
    """SIGTERM each live child, then SIGKILL whatever is left after `grace_s`; reap all."""
    for p in procs:
        if p.poll() is None:
            p.terminate()
    deadline = time.monotonic() + grace_s
    for p in procs:
        try:
            p.wait(max(0.0, deadline - time.monotonic()))
        except subprocess.TimeoutExpired:
            p.kill()
            p.wait()


class _Children:
    """The supervisor's child processes, each with its raw output in RUN/logs/NAME.out; dead actors are
    restarted (up to MAX_RESTARTS times each) with their exit status and last log lines logged."""

    def __init__(self, logs: Path, log: logging.Logger) -> None:
        self.logs, self.log = logs, log
        self.procs: list[subprocess.Popen] = []
        self.actors: dict[int, subprocess.Popen] = {}
        self.started_at: dict[int, float] = {}  # actor -> time.time() of its (re)start
        self.restarts: dict[int, int] = {}
        self._env = {**os.environ, "PYTHONUNBUFFERED": "1", "OMP_NUM_THREADS": "1"}

    def spawn(self, name: str, args: list[str]) -> subprocess.Popen:
        with (self.logs / f"{name}.out").open("ab") as fh:
            proc = subprocess.Popen([sys.executable, "-m", "launch", *args], stdout=fh, stderr=subprocess.STDOUT,
                                    env=self._env, start_new_session=True)
        self.procs.append(proc)
        return proc

    def start_actor(self, k: int, args: list[str]) -> None:
        self.actors[k] = self.spawn(f"actor-{k}", args)
        self.started_at[k] = time.time()
        self.log.info("actor %d started (pid %d)", k, self.actors[k].pid)

    def _restart(self, k: int, actor_args: Callable[[int], list[str]]) -> None:
        self.restarts[k] = self.restarts.get(k, 0) + 1
        if self.restarts[k] > MAX_RESTARTS:
            raise TrainingFailed(f"actor {k} died or hung {self.restarts[k]} times; giving up")
        self.start_actor(k, actor_args(k))
        self.log.info("restarted actor %d (restart %d)", k, self.restarts[k])

    def restart_dead_actors(self, actor_args: Callable[[int], list[str]]) -> None:
        for k, p in list(self.actors.items()):
            rc = p.poll()
            if rc is None or rc == 0:
                continue
            self.log.warning("actor %d (pid %d) died with %s; last lines of its log:\n%s", k, p.pid, _describe(rc),
                             _tail(self.logs / f"actor-{k}.log"))
            self._restart(k, actor_args)

    def restart_hung_actors(self, liveness: dict[str, Any] | None, hang_s: float, start_s: float,
                            actor_args: Callable[[int], list[str]]) -> None:
        """Kill and restart every live actor the learner has not heard from (no rollout, no heartbeat) for
        `hang_s` seconds; one not heard since it (re)started gets `start_s` at least. `liveness` is the
        learner's RUN/liveness.json; without a fresh one nothing is judged (a busy learner hears no one)."""
        if hang_s <= 0 or liveness is None:
            return
        written = liveness.get("time")
        heard = liveness.get("heard")
        if not isinstance(written, int | float) or not isinstance(heard, dict) \
                or time.time() - written > LIVENESS_STALE_S:
            return
        for k, p in list(self.actors.items()):
            if p.poll() is not None:
                continue
            started = self.started_at[k]
            last = heard.get(str(k))
            if isinstance(last, int | float) and last >= started:
                silent, limit = written - last, hang_s
            else:
                silent, limit = written - started, max(hang_s, start_s)
            if silent <= limit:
                continue
            self.log.warning("actor %d (pid %d) is hung: the learner has heard nothing from it (no rollout, no "
                             "heartbeat) for %.0f s (dist.actor_hang_s = %g); killing and restarting it; last "
                             "lines of its log:\n%s", k, p.pid, silent, hang_s, _tail(self.logs / f"actor-{k}.log"))
            p.kill()
            p.wait()
            self._restart(k, actor_args)

    def wait_actors(self, timeout_s: float) -> None:
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline and any(p.poll() is None for p in self.actors.values()):
            time.sleep(0.05)

    def stop(self) -> None:
        _stop(self.procs)
        for k, p in sorted(self.actors.items()):
            self.log.info("actor %d (pid %d) ended with %s", k, p.pid, _describe(p.returncode))


def _read_liveness(path: Path) -> dict[str, Any] | None:
    """The learner's RUN/liveness.json, or None when it is missing or half-written."""
    try:
        data = json.loads(path.read_text())
    except (OSError, ValueError):
        return None
    return data if isinstance(data, dict) else None


def _wait_for_endpoints(learner: subprocess.Popen, endpoints: Path, logs: Path, timeout_s: float) -> str:
    """The learner's control endpoint, once it has bound its sockets and written RUN/endpoints.json."""
    deadline = time.monotonic() + timeout_s
    while not endpoints.exists():
        if learner.poll() is not None or time.monotonic() > deadline:
            raise TrainingFailed(f"learner did not start ({_describe(learner.poll() or 0)}):\n"
                                 f"{_tail(logs / 'learner.out')}")
        time.sleep(0.05)
    return str(json.loads(endpoints.read_text())["control"])


def _start_warm(cfg_path: Path, logs: Path) -> subprocess.Popen:
    """`python -m actor.warm`: fill Numba's cache with the simulator's and the acting step's kernels, so the
    actors load them instead of each compiling them (and holding the compiler's memory) at once."""
    with (logs / "warm.out").open("ab") as fh:
        return subprocess.Popen([sys.executable, "-m", "actor.warm", "-c", str(cfg_path)], stdout=fh,
                                stderr=subprocess.STDOUT, start_new_session=True,
                                env={**os.environ, "PYTHONUNBUFFERED": "1", "OMP_NUM_THREADS": "1"})


def _finish_warm(proc: subprocess.Popen, log: logging.Logger, timeout_s: float) -> None:
    """Wait for the warm-up; if it fails or hangs the actors compile for themselves (a warning, no error)."""
    try:
        rc = proc.wait(timeout_s)
    except subprocess.TimeoutExpired:
        _stop([proc])
        rc = proc.returncode
    if rc != 0:
        log.warning("compiling the actors' kernels ahead failed (%s); each actor compiles its own", _describe(rc))


def run_distributed(cfg: Config, out_dir: str | Path, echo: bool = False, actor_timeout_s: float = 15.0,
                    start_timeout_s: float = 120.0, resume: bool = False,
                    progress: Callable[[dict[str, str]], None] | None = None) -> dict[str, Any]:
    """Train with a learner and cfg.dist.actors actor processes; return the learner's summary.
    `progress` gets every row the learner appends to metrics.csv (tailed while supervising)."""
    from launch.progress import MetricsTail
    from learner.checkpoint import checkpoint_path

    out = Path(out_dir)
    checkpoint_path(out, resume)
    logs = out / "logs"
    logs.mkdir(parents=True, exist_ok=True)
    log = setup_logging(logs / "supervisor.log", "supervisor", echo=echo)
    cfg_path = out / "launch-config.toml"
    cfg_path.write_text(config_mod.dumps(cfg))
    run_id = f"{out.name or 'run'}-{secrets.token_hex(4)}"
    endpoints = out / "endpoints.json"
    endpoints.unlink(missing_ok=True)
    liveness_path = out / "liveness.json"
    liveness_path.unlink(missing_ok=True)
    children = _Children(logs, log)
    try:
        # async: the first wave sets up while the learner starts and waits for its endpoints; the kernels are
        # compiled by those few actors themselves (the rest start after the first update, from the cache)
        first_wave = cfg.dist.actors
        if cfg.dist.mode == "async":
            first_wave = min(cfg.dist.actors, max(1, os.cpu_count() or 1))
        learner = children.spawn("learner", ["learner", "-c", str(cfg_path), "--out", str(out), "--run-id", run_id,
                                             "--free-ports", "--watch-parent"] + ["--resume"] * resume
                                 + ["--first-wave", str(first_wave)] * (first_wave < cfg.dist.actors))
        control: str | None = None

        def actor_args(k: int) -> list[str]:
            where = ["--learner", control] if control is not None else ["--learner-file", str(endpoints)]
            return ["actor", *where, "--id", str(k), "-c", str(cfg_path), "--run-id", run_id,
                    "--out", str(out), "--timeout", str(actor_timeout_s)]

        if cfg.dist.mode == "async":
            for k in range(first_wave):
                children.start_actor(k, actor_args(k))
            control = _wait_for_endpoints(learner, endpoints, logs, start_timeout_s)
            log.info("run %s: learner pid %d at %s; %d of %d actors started", run_id, learner.pid, control,
                     first_wave, cfg.dist.actors)
        else:
            warm = _start_warm(cfg_path, logs)  # compiles the actors' kernels once while the learner starts
            control = _wait_for_endpoints(learner, endpoints, logs, start_timeout_s)
            _finish_warm(warm, log, start_timeout_s)
            log.info("run %s: learner pid %d at %s; starting %d actors", run_id, learner.pid, control,
                     cfg.dist.actors)
            for k in range(first_wave):
                children.start_actor(k, actor_args(k))
        waiting = list(range(first_wave, cfg.dist.actors))
        wave_deadline = time.monotonic() + START_WAVE_WAIT_S
        tail = MetricsTail(out / "metrics.csv")

        def feed() -> None:
            for row in tail.read() if progress is not None else ():
                progress(row)

        next_check = 0.0
        while (rc := learner.poll()) is None:
            feed()
            children.restart_dead_actors(actor_args)
            if time.monotonic() >= next_check:  # the learner rewrites liveness.json about every second
                next_check = time.monotonic() + 1.0
                liveness = _read_liveness(liveness_path)
                children.restart_hung_actors(liveness, cfg.dist.actor_hang_s, start_timeout_s, actor_args)
                updated = liveness is not None and isinstance(liveness.get("version"), int) \
                    and liveness["version"] >= 1
                if waiting and (updated or time.monotonic() > wave_deadline):
                    log.info("starting actors %d..%d (%s)", waiting[0], waiting[-1],
                             "the learner has updated" if updated else f"{START_WAVE_WAIT_S:.0f} s have passed")
                    for k in waiting:
                        children.start_actor(k, actor_args(k))
                    waiting = []
            time.sleep(0.1)
        if rc != 0:
            raise TrainingFailed(f"learner failed with {_describe(rc)}; last lines of its log:\n"
                                 f"{_tail(logs / 'learner.log')}\n{_tail(logs / 'learner.out')}")
        feed()
        children.wait_actors(5.0)
        summary = json.loads((out / "learner_stats.json").read_text())
        log.info("finished: %s", summary)
        return summary
    except KeyboardInterrupt:
        log.warning("interrupted: stopping every process")
        raise
    finally:
        children.stop()
        endpoints.unlink(missing_ok=True)
        liveness_path.unlink(missing_ok=True)


def actor_logger(out_dir: str | None, actor_id: int) -> logging.Logger:
    """The actor's logger: RUN/logs/actor-K.log when a run directory is given, else stderr only."""
    if out_dir is not None:
        return setup_logging(Path(out_dir) / "logs" / f"actor-{actor_id}.log", f"actor-{actor_id}")
    logger = logging.getLogger(f"powernet.actor-{actor_id}")
    if not logger.handlers:
        handler = logging.StreamHandler()
        handler.setFormatter(logging.Formatter(f"%(asctime)s %(levelname)s actor-{actor_id} %(message)s"))
        logger.addHandler(handler)
        logger.setLevel(logging.INFO)
    return logger
