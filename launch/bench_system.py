"""`powernet bench system`: agent-steps/s of full training (envs + inference + transport + updates) in each
distributed mode next to the single-process reference trainer with the same total number of envs.

What is measured
----------------
Every configuration is a real `powernet train` run in its own process (the same code path users run),
one after another on this machine. Throughput is the steady state read from the run's metrics.csv: env
steps between the row at `warmup` (share of the updates, default 20 %) and the last row, divided by the
wall time between those rows, so process start, imports, JIT compilation and the actors' first connection
are left out. Agent-steps/s = env steps/s x agents of the system.

For distributed runs the learner's and the actors' stage timers (common.timers, in learner_stats.json)
give where the wall time goes. Transport and (de)serialisation are the actor's `send` (encode + zmq send
of a rollout) and `load` (validate + load received weights) and the learner's `receive` (decode, validate
and copy of rollouts), `control` (control requests) and `publish` (weights encode + send). In sync mode
these lie on the update's critical path, so `transport_share` = (learner transport + mean actor transport)
/ learner wall time since its first update; in async mode, where nobody waits, it is the larger of the
learner's and the mean actor's own share. The learner's totals end with its training loop (the final
checkpoint and the stop handshake are not step time); its `record` stage is the bookkeeping after each
update (metrics row, TensorBoard scalars, log line, scheduled checkpoints).

Besides the headline grid (1 env per actor, local with the same total envs), `--wide AxE` adds rows of A
actors with E envs each next to local with A*E envs (default 1x4 and 2x4): more simulation per message
dilutes the fixed per-message and per-update costs.

Each row also has `peak_rss_mib`: the largest VmHWM seen (sampled every 0.2 s from /proc, Linux only) of
the supervisor (the `powernet train` process; in local mode the trainer itself), the learner and each actor.
"""

from __future__ import annotations

import json
import os
import platform
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import click
import numpy as np

from common.errors import InputError
from launch.errors import exit_on_user_error
from launch.procmem import TreeMemory

STEPS_PER_RUN_AGENT_STEPS = 30_000  # default run length: env steps x agents, within [500, 3000] env steps
ACTOR_TRANSPORT = ("send", "load")
SYNC_TARGETS = {"microgrid-6": 1100.0, "microgrid-20": 400.0}  # env-steps/s end to end, sync mode
ACTOR_MIB, SUPERVISOR_MIB = 250.0, 120.0  # peak resident memory (VmHWM) targets
LEARNER_TRANSPORT = ("receive", "control", "publish")


def steady_rate(metrics_csv: Path, warmup: float) -> dict[str, float]:
    """Env steps/s between the row at share `warmup` of the updates and the last row of metrics.csv."""
    from launch.plots import read_metrics

    m = read_metrics(metrics_csv)
    n = len(m["env_steps"])
    first = min(int(warmup * n), n - 2)
    if first < 0:
        raise ValueError(f"{metrics_csv}: too few updates ({n}) to measure a rate")
    steps = m["env_steps"][-1] - m["env_steps"][first]
    wall = m["wall_s"][-1] - m["wall_s"][first]
    lag = m.get("policy_lag", np.zeros(1))
    return {"env_steps_per_s": float(steps / wall), "timed_env_steps": int(steps), "timed_wall_s": float(wall),
            "updates": int(n), "mean_policy_lag": float(np.nanmean(lag)) if lag.size else 0.0}


def transport_breakdown(stats: dict[str, Any], mode: str = "sync") -> dict[str, Any]:
    """Per-stage shares of the learner's and the actors' wall time, and the transport share of step time:
    in sync mode learner and actor transport add up on each update's critical path; in async mode every
    process runs its own pipeline, so it is the larger of the learner's and the mean actor's share."""
    learner = stats.get("timers") or {}
    actors = list((stats.get("actor_timers") or {}).values())
    if not learner or not learner.get("wall"):
        return {}
    l_wall = learner["wall"]
    l_transport = sum(learner.get(k, 0.0) for k in LEARNER_TRANSPORT)
    out: dict[str, Any] = {
        "learner_share": {k: round(v / l_wall, 4) for k, v in learner.items() if k != "wall"},
        # poll time not spent handling messages: the learner waiting for rollouts
        "learner_idle_share": round((learner.get("poll", 0.0) - learner.get("receive", 0.0)
                                     - learner.get("control", 0.0)) / l_wall, 4),
        # outside every timed stage: batching, the loop itself (and, before the `record` stage existed,
        # metrics/TensorBoard rows and checkpoints)
        "learner_untimed_share": round(1 - sum(learner.get(k, 0.0) for k in ("poll", "learn", "publish", "record"))
                                       / l_wall, 4),
    }
    a_transport, a_wall = 0.0, 0.0
    if actors:
        shares = {}
        for key in sorted({k for a in actors for k in a}):
            if key != "wall":
                shares[key] = round(float(np.mean([a.get(key, 0.0) / a["wall"] for a in actors if a.get("wall")])),
                                    4)
        out["actor_share"] = shares
        a_transport = float(np.mean([sum(a.get(k, 0.0) for k in ACTOR_TRANSPORT) for a in actors]))
        a_wall = float(np.mean([a.get("wall", 0.0) for a in actors]))
    out["learner_transport_share"] = round(l_transport / l_wall, 4)
    out["actor_transport_share"] = round(a_transport / a_wall, 4) if a_wall > 0 else None
    if mode == "sync":
        out["transport_share"] = round((l_transport + a_transport) / l_wall, 4)
    else:
        out["transport_share"] = max(out["learner_transport_share"], out["actor_transport_share"] or 0.0)
    out["timers"] = {"learner": learner, "actors": stats.get("actor_timers")}
    return out


def default_steps(n_agents: int) -> int:
    """Env steps of one benchmark run: 3000 on microgrid-6, 1500 on microgrid-20, fewer on larger grids."""
    return max(500, min(3000, STEPS_PER_RUN_AGENT_STEPS // n_agents))


def _run_one(config: str, system: str, mode: str, actors: int, steps: int, out: Path, warmup: float,
             timeout_s: float, envs_per_actor: int = 1) -> dict[str, Any]:
    """One `powernet train` run; its steady throughput and, when distributed, its stage timers. Local runs
    get actors x envs_per_actor envs."""
    args = [sys.executable, "-m", "launch", "train", "-c", config, "--system", system, "--out", str(out),
            "--steps", str(steps), "--progress", "off", "--set", "train.log_every=10"]
    if mode == "local":
        args += ["--set", f"train.num_envs={actors * envs_per_actor}"]
    else:
        args += ["--mode", mode, "--actors", str(actors), "--envs-per-actor", str(envs_per_actor)]
    # one intra-op thread everywhere, as the supervisor gives its children: on a shared 2-core machine a
    # multi-threaded torch in the local trainer collapsed to ~15 steps/s (OpenMP spinning under load)
    env = {**os.environ, "PYTHONUNBUFFERED": "1", "OMP_NUM_THREADS": "1"}
    t0 = time.perf_counter()
    proc = subprocess.Popen(args, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env)
    memory = TreeMemory(proc.pid).start()  # VmHWM of the supervisor, learner and actors while they live
    try:
        stdout, stderr = proc.communicate(timeout=timeout_s)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
        peaks = memory.stop()
    wall = time.perf_counter() - t0
    if proc.returncode != 0:
        lines = (stderr or stdout).strip().splitlines()
        return {"available": False, "reason": lines[-1][:300] if lines else f"exit code {proc.returncode}"}
    result: dict[str, Any] = {"available": True, "process_wall_s": round(wall, 2), "peak_rss_mib": peaks}
    result.update(steady_rate(out / "metrics.csv", warmup))
    stats_path = out / "learner_stats.json"
    if stats_path.is_file():
        result.update(transport_breakdown(json.loads(stats_path.read_text()), mode))
    return result


def run_bench(systems: list[str], actor_counts: list[int], modes: list[str], steps: int | None,
              warmup: float = 0.2, algorithm: str = "powernet", timeout_s: float = 600.0,
              echo: bool = True, wide: list[tuple[int, int]] | None = None) -> dict[str, Any]:
    """Measure every (system, actors, mode) plus `--mode local` with the same total envs, then each
    (actors, envs per actor) of `wide` the same way; return the report. `steps`: env steps per run (None:
    `default_steps` of the system)."""
    from actor.envs import agent_spec
    from common.config import load_config

    rows = []
    with tempfile.TemporaryDirectory(prefix="bench-system-") as tmp:
        for system in systems:
            config = f"configs/{algorithm}.toml"
            if not Path(config).is_file():
                raise InputError(f"no config {config} (run from the repository root; --algorithm {algorithm}?)")
            n_agents = agent_spec(load_config(config, [f"env.system={json.dumps(system)}"]).env).n_agents
            run_steps = steps or default_steps(n_agents)
            grid = [(a, 1) for a in actor_counts] + [(a, e) for a, e in wide or [] if e != 1]
            for a, epa in grid:
                local = None
                for mode in ["local", *modes]:
                    out = Path(tmp) / f"{Path(system).stem}-{mode}-{a}x{epa}"
                    # more envs per message: the same number of updates, so steps scale with the envs
                    res = _run_one(config, system, mode, a, run_steps * epa, out, warmup, timeout_s, epa)
                    row = {"system": system, "mode": mode, "actors": a if mode != "local" else 0,
                           "envs_per_actor": epa if mode != "local" else 0,
                           "total_envs": a * epa, "agents": n_agents, **res}
                    if res["available"]:
                        row["agent_steps_per_s"] = round(res["env_steps_per_s"] * n_agents, 1)
                        row["env_steps_per_s"] = round(res["env_steps_per_s"], 1)
                        if mode == "local":
                            local = row["env_steps_per_s"]
                        elif local:
                            row["speedup_vs_local"] = round(row["env_steps_per_s"] / local, 3)
                    rows.append(row)
                    if echo:
                        click.echo(_line(row), err=True)
    summary = _summary(rows)
    return {
        "bench": "system", "created": time.strftime("%Y-%m-%dT%H:%M:%S"),
        "machine": {"platform": platform.platform(), "python": platform.python_version(),
                    "cpus": os.cpu_count(), "load_avg_1m_at_end": round(os.getloadavg()[0], 2)},
        "settings": {"algorithm": algorithm, "steps": steps, "warmup_share": warmup, "envs_per_actor": 1,
                     "wide": [f"{a}x{e}" for a, e in wide or []],
                     "omp_num_threads": 1,
                     "modes": ["local", *modes], "actors": actor_counts},
        "results": rows, "summary": summary,
    }


def _line(row: dict[str, Any]) -> str:
    if not row.get("available"):
        return f"{row['system']:>13} {row['mode']:>5} actors={row['actors']}: unavailable ({row.get('reason')})"
    extra = f"  x{row['speedup_vs_local']:.2f} vs local" if "speedup_vs_local" in row else ""
    if "transport_share" in row:
        extra += f"  transport {100 * row['transport_share']:.1f}% of step time"
    if row.get("peak_rss_mib"):
        extra += "  peak MiB " + " ".join(f"{k}={v:.0f}" for k, v in row["peak_rss_mib"].items())
    return (f"{row['system']:>13} {row['mode']:>5} envs={row['total_envs']} actors={row['actors']}: "
            f"{row['env_steps_per_s']:7.0f} env-steps/s {row['agent_steps_per_s']:9.0f} agent-steps/s{extra}")


def _summary(rows: list[dict[str, Any]]) -> dict[str, Any]:
    """Per system: the sync rows' env-steps/s (key ACTORSxENVS) and the largest peak memory of an actor and
    of the supervisor over them, next to the targets (env-steps/s on microgrid-6 and -20, memory anywhere)."""
    out: dict[str, Any] = {}
    for row in rows:
        if row["mode"] != "sync" or not row.get("available"):
            continue
        cell = out.setdefault(row["system"], {"sync_env_steps_per_s": {}, "target_env_steps_per_s":
                                              SYNC_TARGETS.get(Path(row["system"]).stem),
                                              "actor_peak_mib": 0.0, "supervisor_peak_mib": 0.0,
                                              "target_actor_mib": ACTOR_MIB, "target_supervisor_mib": SUPERVISOR_MIB})
        cell["sync_env_steps_per_s"][f"{row['actors']}x{row['envs_per_actor']}"] = row["env_steps_per_s"]
        peaks = row.get("peak_rss_mib") or {}
        cell["actor_peak_mib"] = max([cell["actor_peak_mib"]] + [v for k, v in peaks.items() if k.startswith("actor")])
        cell["supervisor_peak_mib"] = max(cell["supervisor_peak_mib"], peaks.get("supervisor", 0.0))
    for cell in out.values():
        target = cell["target_env_steps_per_s"]
        cell["configs_meeting_target"] = None if target is None else \
            [k for k, v in cell["sync_env_steps_per_s"].items() if v >= target]
        cell["memory_met"] = cell["actor_peak_mib"] <= ACTOR_MIB and cell["supervisor_peak_mib"] <= SUPERVISOR_MIB
    return out


@click.command("system")
@click.option("--out", "out_path", type=click.Path(dir_okay=False), default="runs/bench-system.json",
              show_default=True, help="JSON output")
@click.option("--systems", default="microgrid-6,microgrid-20", show_default=True,
              help="comma-separated system names or system file paths")
@click.option("--actors", "actors", default="1,2", show_default=True,
              help="actor counts (1 env each); local runs use the same total envs")
@click.option("--modes", default="sync,async", show_default=True,
              help="distributed modes to try; one the CLI refuses is recorded as unavailable")
@click.option("--steps", type=int, help="env steps per run (default: 30,000 agent-steps' worth, within 500..3000: "
              "3000 on microgrid-6, 1500 on microgrid-20)")
@click.option("--warmup", type=float, default=0.2, show_default=True,
              help="share of the updates left out of the timing (start-up, JIT, first connection)")
@click.option("--algorithm", default="powernet", show_default=True, help="trains configs/<algorithm>.toml")
@click.option("--wide", default="1x4,2x4", show_default=True,
              help="extra ACTORSxENVS rows (comma-separated; '' for none): ENVS per actor, local with ACTORS*ENVS")
@exit_on_user_error
def bench_system(out_path: str, systems: str, actors: str, modes: str, steps: int | None, warmup: float,
                 algorithm: str, wide: str) -> None:
    """Agent-steps/s of full training per mode and actor count, and the share of time in transport."""
    try:
        actor_counts = [int(x) for x in actors.split(",")]
    except ValueError as exc:
        raise InputError(f"--actors: expected comma-separated integers, got {actors!r}") from exc
    try:
        wide_grid = [(int(a), int(e)) for a, e in (w.strip().lower().split("x") for w in wide.split(",")
                                                   if w.strip())]
    except ValueError as exc:
        raise InputError(f"--wide: expected ACTORSxENVS items like 2x4, got {wide!r}") from exc
    if not 0.0 <= warmup < 1.0:
        raise InputError("--warmup must be in [0, 1)")
    names = [s.strip() for s in systems.split(",") if s.strip()]
    result = run_bench(names, actor_counts, [m.strip() for m in modes.split(",") if m.strip()], steps,
                       warmup=warmup, algorithm=algorithm, wide=wide_grid)
    path = Path(out_path)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(result, indent=2) + "\n")
    click.echo(json.dumps(result["summary"], indent=2))
    click.echo(f"wrote {path}")
