"""`powernet bench actors`: many async actors on one learner — how much of their work is used, how fast, how
soon the first update comes, and how much memory the learner holds.

Each configuration is a real `powernet train --mode MODE --actors A` run in its own process (the code path
users run), one after another; `--repeat` alternates the actor counts (2, 32, 2, 32, ...) so that a noisy,
shared machine spreads its noise over all of them. From each run:

- `first_update_s`: seconds from launching `powernet train` to the first row in metrics.csv (process
  start, imports, the actors' start-up and the first batch all count);
- `env_steps_per_s`: the steady rate, env steps per second of the learner's wall time over the last
  (1 - `warmup`) of the time between its first and last update; `env_steps_per_s_overall` the same from
  the first update on;
- `wasted_share`: rollouts that reached the learner intact but never entered an update (dropped as
  `stale` or `queue_full`), over those plus the ones used; `used_rollouts`, the drop counts by reason and
  the policy-lag counts come from learner_stats.json;
- `batch_rollouts_mean`: rollouts per update (env steps per update / window);
- `peak_rss_mib`: the largest VmHWM of the supervisor, the learner and each actor (`launch.procmem`);
- `load_avg_1m`: the machine's 1-minute load average before and after the run.

Before each run, untimed, `python -m actor.warm` of the measured code fills Numba's cache, so that a kernel
edited since the last run is not compiled inside the timed run.

`--code DIR` runs the trainings from another checkout of the project (e.g. the commit before a change,
unpacked with `git archive`), so before and after are measured by the same benchmark code.
"""

from __future__ import annotations

import json
import os
import platform
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import click

from common.errors import InputError
from launch.errors import exit_on_user_error
from launch.procmem import TreeMemory

WASTE_REASONS = ("stale", "queue_full")  # a rollout that arrived intact and was thrown away for its age


def steady_window(metrics_csv: Path, warmup: float) -> dict[str, float]:
    """Env steps/s over the last (1 - warmup) of the wall time between the first and the last update, and
    from the first update on; rollouts per update are left to the caller (it knows the window size)."""
    from launch.training_curves import read_metrics

    m = read_metrics(metrics_csv)
    steps, wall = m["env_steps"], m["wall_s"]
    n = len(steps)
    if n < 2:
        raise ValueError(f"{metrics_csv}: too few updates ({n}) to measure a rate")
    start_t = wall[0] + warmup * (wall[-1] - wall[0])
    first = min(int((wall < start_t).sum()), n - 2)
    return {"env_steps_per_s": float((steps[-1] - steps[first]) / (wall[-1] - wall[first])),
            "env_steps_per_s_overall": float((steps[-1] - steps[0]) / (wall[-1] - wall[0])),
            "timed_updates": int(n - 1 - first), "updates": int(n), "env_steps": int(steps[-1]),
            "learner_wall_s": float(wall[-1])}


def usage(stats: dict[str, Any], mode: str, actors: int) -> dict[str, Any]:
    """Rollouts used and wasted, from a learner_stats.json."""
    dropped = {k: int(v) for k, v in (stats.get("dropped") or {}).items()}
    if mode == "async":
        lags = {k: int(v) for k, v in (stats.get("policy_lag_counts") or {}).items()}
        used = sum(lags.values())
    else:
        lags, used = {"0": int(stats.get("updates", 0)) * actors}, int(stats.get("updates", 0)) * actors
    wasted = sum(dropped.get(k, 0) for k in WASTE_REASONS)
    mean_lag = sum(int(k) * v for k, v in lags.items()) / used if used else None
    return {"used_rollouts": used, "wasted_rollouts": wasted,
            "wasted_share": round(wasted / (used + wasted), 4) if used + wasted else None,
            "dropped": dropped, "policy_lag_counts": lags,
            "mean_policy_lag": round(mean_lag, 3) if mean_lag is not None else None,
            "max_policy_lag": max((int(k) for k, v in lags.items() if v), default=None)}


def _first_row(path: Path) -> bool:
    try:
        with path.open("rb") as fh:
            return fh.read(1 << 16).count(b"\n") >= 2
    except OSError:
        return False


def run_one(code: Path, config: str, system: str, mode: str, actors: int, envs_per_actor: int, steps: int,
            out: Path, warmup: float, timeout_s: float, overrides: list[str]) -> dict[str, Any]:
    """One `powernet train` run from the checkout `code`; its figures (see the module docstring)."""
    args = [sys.executable, "-m", "launch", "train", "-c", config, "--system", system, "--out", str(out),
            "--steps", str(steps), "--progress", "off", "--mode", mode, "--actors", str(actors),
            "--envs-per-actor", str(envs_per_actor), "--set", "train.log_every=10"]
    for item in overrides:
        args += ["--set", item]
    env = {**os.environ, "PYTHONUNBUFFERED": "1", "OMP_NUM_THREADS": "1"}
    # Numba's cache filled first, untimed: a kernel source edited since the last run would otherwise be
    # compiled inside the timed run (by `actor.warm` or by the actors), whichever code is measured
    subprocess.run([sys.executable, "-m", "actor.warm", "-c", config], cwd=code, env=env, capture_output=True,
                   timeout=timeout_s)
    load_before = os.getloadavg()[0]
    t0 = time.perf_counter()
    proc = subprocess.Popen(args, cwd=code, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, env=env,
                            start_new_session=True)
    memory = TreeMemory(proc.pid).start()
    first_update = None
    deadline = t0 + timeout_s
    try:
        while proc.poll() is None and time.perf_counter() < deadline:
            if first_update is None and _first_row(out / "metrics.csv"):
                first_update = time.perf_counter() - t0
            time.sleep(0.1)
    finally:
        if proc.poll() is None:  # Ctrl-C's path: the supervisor stops its children itself
            os.killpg(proc.pid, signal.SIGINT)
            try:
                proc.wait(15)
            except subprocess.TimeoutExpired:
                os.killpg(proc.pid, signal.SIGKILL)
                proc.wait()
        peaks = memory.stop()
    output = proc.stdout.read().decode(errors="replace") if proc.stdout else ""
    wall = time.perf_counter() - t0
    row: dict[str, Any] = {"mode": mode, "actors": actors, "envs_per_actor": envs_per_actor, "steps": steps,
                           "process_wall_s": round(wall, 2),
                           "load_avg_1m": [round(load_before, 2), round(os.getloadavg()[0], 2)],
                           "peak_rss_mib": peaks}
    if proc.returncode != 0:
        lines = output.strip().splitlines()
        return {**row, "available": False,
                "reason": lines[-1][:300] if lines else f"exit code {proc.returncode}"}
    row["available"] = True
    row["first_update_s"] = round(first_update, 2) if first_update is not None else None
    row.update(steady_window(out / "metrics.csv", warmup))
    window = envs_per_actor * _n_steps(out)
    row["batch_rollouts_mean"] = round(row["env_steps"] / row["updates"] / window, 2)
    stats_path = out / "learner_stats.json"
    if stats_path.is_file():
        row.update(usage(json.loads(stats_path.read_text()), mode, actors))
    row["learner_peak_mib"] = peaks.get("learner")
    row["actor_peak_mib"] = max((v for k, v in peaks.items() if k.startswith("actor")), default=None)
    return row


def _n_steps(run: Path) -> int:
    import tomllib

    with (run / "config.toml").open("rb") as fh:
        return int(tomllib.load(fh)["train"]["n_steps"])


def _line(row: dict[str, Any]) -> str:
    head = f"{row['mode']:>5} actors={row['actors']:>2}"
    if not row.get("available"):
        return f"{head}: unavailable ({row.get('reason')})"
    waste = row.get("wasted_share")
    return (f"{head}: {row['env_steps_per_s']:7.0f} env-steps/s (overall {row['env_steps_per_s_overall']:.0f}), "
            f"wasted {100 * waste if waste is not None else float('nan'):.1f}%, first update "
            f"{row['first_update_s']} s, {row['updates']} updates of {row['batch_rollouts_mean']} rollouts, "
            f"lag {row.get('mean_policy_lag')}, learner {row['learner_peak_mib']} MiB, "
            f"load {row['load_avg_1m'][0]}->{row['load_avg_1m'][1]}")


def run_bench(code: Path, actor_counts: list[int], mode: str, system: str, steps: int, repeat: int,
              envs_per_actor: int = 1, warmup: float = 0.5, timeout_s: float = 900.0,
              overrides: list[str] | None = None, algorithm: str = "powernet") -> dict[str, Any]:
    """Every actor count `repeat` times, alternating; the report with a summary per actor count."""
    config = f"configs/{algorithm}.toml"
    if not (code / config).is_file():
        raise InputError(f"no {config} under {code} (--code must be a checkout of this project)")
    rows = []
    with tempfile.TemporaryDirectory(prefix="bench-actors-") as tmp:
        for r in range(repeat):
            for a in actor_counts:
                out = Path(tmp) / f"{mode}-{a}-{r}"
                row = run_one(code, config, system, mode, a, envs_per_actor, steps, out, warmup, timeout_s,
                              overrides or [])
                row["repeat"] = r
                rows.append(row)
                click.echo(_line(row), err=True)
    return {"bench": "actors", "created": time.strftime("%Y-%m-%dT%H:%M:%S"),
            "machine": {"platform": platform.platform(), "python": platform.python_version(),
                        "cpus": os.cpu_count()},
            "settings": {"code": str(code), "commit": _commit(code), "algorithm": algorithm, "system": system,
                         "mode": mode, "actors": actor_counts, "envs_per_actor": envs_per_actor, "steps": steps,
                         "repeat": repeat, "warmup_share_of_time": warmup, "overrides": overrides or [],
                         "omp_num_threads": 1},
            "results": rows, "summary": _summary(rows)}


def _commit(code: Path) -> str | None:
    try:
        out = subprocess.run(["git", "-C", str(code), "rev-parse", "--short", "HEAD"], capture_output=True,
                             text=True, timeout=10)
    except (OSError, subprocess.SubprocessError):
        return None
    return out.stdout.strip() or None


def _summary(rows: list[dict[str, Any]]) -> dict[str, Any]:
    """Per actor count: the range (lowest, highest) over the repeats of each headline figure."""
    out: dict[str, Any] = {}
    keys = ("env_steps_per_s", "env_steps_per_s_overall", "wasted_share", "first_update_s",
            "batch_rollouts_mean", "mean_policy_lag", "learner_peak_mib", "actor_peak_mib")
    for row in rows:
        if not row.get("available"):
            continue
        cell = out.setdefault(str(row["actors"]), {k: [] for k in keys} | {"load_avg_1m": []})
        for k in keys:
            if row.get(k) is not None:
                cell[k].append(row[k])
        cell["load_avg_1m"].extend(row["load_avg_1m"])
    return {a: {k: [min(v), max(v)] if v else None for k, v in cell.items()} for a, cell in out.items()}


@click.command("actors")
@click.option("--out", "out_path", type=click.Path(dir_okay=False), default="runs/bench-actors.json",
              show_default=True, help="JSON output")
@click.option("--actors", "actors", default="2,32", show_default=True, help="comma-separated actor counts")
@click.option("--mode", type=click.Choice(["async", "sync"]), default="async", show_default=True)
@click.option("--system", default="microgrid-6", show_default=True, help="system name or file")
@click.option("--steps", type=int, default=20_000, show_default=True, help="env steps per run")
@click.option("--envs-per-actor", type=int, default=1, show_default=True)
@click.option("--repeat", type=int, default=1, show_default=True,
              help="runs per actor count, alternating between the counts")
@click.option("--warmup", type=float, default=0.5, show_default=True,
              help="share of the learner's time (first to last update) left out of the steady rate")
@click.option("--code", type=click.Path(file_okay=False, exists=True), default=".", show_default=True,
              help="the checkout whose code trains (e.g. an older commit unpacked elsewhere)")
@click.option("--set", "overrides", multiple=True, help="extra config overrides for every run (section.key=value)")
@click.option("--timeout", "timeout_s", type=float, default=900.0, show_default=True, help="seconds per run")
@exit_on_user_error
def bench_actors(out_path: str, actors: str, mode: str, system: str, steps: int, envs_per_actor: int, repeat: int,
                 warmup: float, code: str, overrides: tuple[str, ...], timeout_s: float) -> None:
    """Async actors on one learner: used and wasted rollouts, env-steps/s, first update, learner memory."""
    try:
        counts = [int(x) for x in actors.split(",") if x.strip()]
    except ValueError as exc:
        raise InputError(f"--actors: expected comma-separated integers, got {actors!r}") from exc
    if not counts or min(counts) < 1 or repeat < 1 or steps < 1:
        raise InputError("--actors, --repeat and --steps must be positive")
    if not 0.0 <= warmup < 1.0:
        raise InputError("--warmup must be in [0, 1)")
    result = run_bench(Path(code).resolve(), counts, mode, system, steps, repeat, envs_per_actor, warmup, timeout_s,
                       list(overrides))
    path = Path(out_path)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(result, indent=2) + "\n")
    click.echo(json.dumps(result["summary"], indent=2))
    click.echo(f"wrote {path}")
