"""`powernet bench scale`: how every per-control-step cost grows with the number of DGs N (docs/feeders.md#cost-growth).

For each system (default: microgrid-6, microgrid-20, oberrhein-50, oberrhein-95, oberrhein-159), in this
process on one thread unless said otherwise:

* `sim_ms_e1`, `sim_ms_e8`: PGSim physics of one control step for 1 and 8 envs in one call: new load
  factors (refactorising M, as the 'walk' disturbance does every step), 50 RK4 steps, the measurements;
* `sim_dense_ms_e1`: the same physics with the dense solve and frequency flow (`solver="dense"`), 1 env;
* `env_ms_e1`, `env_ms_e8`: `VecMicrogridEnv.step` with random actions ('walk'), resets included;
* `act_ms_<alg>`: one acting step of the compiled acting policy (`actor.policy.ActingPolicy.act`, 1 env);
* `update_ms_<alg>_e1`, `update_ms_<alg>_e8`: one learner update on a 20-step window of 1 and 8 envs
  (`learner.update.update`, synthetic data of the real shapes, as `powernet bench learner`);
* `rollout_bytes_e1`, `weights_bytes_<alg>`: encoded wire message sizes (`common.wire.encode`) of one
  20-step rollout of one env and of one weight broadcast;
* `learner_peak_mib_<alg>`, `actor_peak_mib_<alg>`: peak resident memory (VmHWM) of a fresh process that
  builds the learner (network + optimiser) and runs two 8-env updates, or the actor side (8 envs, acting
  policy) and runs two 20-step windows.

Each time is the process's CPU time per call (not wall time: on a shared machine, waiting for a core would
inflate long calls most), the minimum and the median over `--rounds` rounds. Growth exponents are
least-squares slopes of log(cost) on log(N), over every system and over the systems with N >= 20 (the
issue's target: <= 1.2 for simulation and the learner update).
"""

from __future__ import annotations

import json
import os
import platform
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import click
import numpy as np

from launch.errors import exit_on_user_error

DEFAULT_SYSTEMS = ("microgrid-6", "microgrid-20", "oberrhein-50", "oberrhein-95", "oberrhein-159")
ALGS = ("powernet", "ia2c")
WINDOW = 20


def _timed(fn: Callable[[], Any], rounds: int, budget_s: float = 0.3) -> tuple[float, float]:
    """(min, median) CPU ms per call of fn: one warm-up call, then `rounds` rounds of as many calls as fit
    in about budget_s (at least one). CPU time of this process, not wall time: on a shared machine a
    descheduled process loses wall time that its work did not use, and more so the longer a call runs,
    which would bias large systems upwards (every kernel here runs on one thread)."""
    start = time.process_time()
    fn()
    calls = max(1, int(budget_s / max(time.process_time() - start, 1e-6)))
    per_call = []
    for _ in range(rounds):
        start = time.process_time()
        for _ in range(calls):
            fn()
        per_call.append(1e3 * (time.process_time() - start) / calls)
    return float(np.min(per_call)), float(np.median(per_call))


def _physics_ms(system, n_envs: int, rounds: int, budget_s: float, **grid_options) -> tuple[float, float]:
    """(min, median) CPU ms of one control step of `n_envs` envs from a warmed-up grid: new load factors, the
    RK4 steps, the measurement. `grid_options` pick the solver and flow (`GridBatch`)."""
    from simsvc.simulator import GridBatch

    grid = GridBatch(system, n_envs, **grid_options)
    steps = grid.steps_for(system.control_dt_s)
    grid.advance(grid.steps_for(system.warmup_s))
    factors = np.random.default_rng(0).uniform(0.9, 1.1, (16, n_envs, system.n_load))
    k = [0]

    def physics() -> None:
        grid.set_load_factors(factors[k[0] % 16])
        grid.advance(steps)
        grid.measure()
        k[0] += 1

    return _timed(physics, rounds, budget_s)


def _sim_cells(name: str, rounds: int, budget_s: float = 0.3) -> dict[str, float]:
    from simsvc.env import VecMicrogridEnv
    from simsvc.systems import load_system

    system = load_system(name)
    out: dict[str, float] = {}
    for n_envs in (1, 8):
        out[f"sim_ms_e{n_envs}"], out[f"sim_med_ms_e{n_envs}"] = _physics_ms(system, n_envs, rounds, budget_s)
        env = VecMicrogridEnv(system, n_envs, disturbance="walk")
        env.reset(0)
        actions = np.random.default_rng(0).integers(0, system.n_actions, (64, n_envs, system.n_dg))
        k = [0]

        def env_step(env=env, actions=actions, k=k) -> None:
            env.step(actions[k[0] % 64])
            k[0] += 1

        out[f"env_ms_e{n_envs}"], out[f"env_med_ms_e{n_envs}"] = _timed(env_step, rounds, budget_s)
    # the same physics with the dense solve and flow (docs/pgsim.md#sparse-network-solve), for comparison
    out["sim_dense_ms_e1"], out["sim_dense_med_ms_e1"] = _physics_ms(system, 1, rounds, budget_s,
                                                                     solver="dense", flow="dense")
    return out


def _graph(name: str):
    from actor.envs import agent_spec
    from common.config import load_config

    return agent_spec(load_config(None, [f"env.system={json.dumps(name)}"]).env)


def _learning_cells(name: str, rounds: int, budget_s: float = 0.3) -> dict[str, float]:
    import torch

    torch.set_num_threads(1)
    spec = _graph(name)
    out: dict[str, float] = {}
    for alg in ALGS:
        out.update(_alg_cells(alg, spec, rounds, rollout_bytes=alg == ALGS[0], budget_s=budget_s))
    return out


def _alg_cells(alg: str, spec: Any, rounds: int, rollout_bytes: bool, budget_s: float = 0.3) -> dict[str, float]:
    """Update, acting and message-size cells of one algorithm on one agent graph."""
    import torch

    from actor.policy import ActingPolicy
    from actor.sampler import action_sampler
    from common import wire
    from common.config import ModelConfig, TrainConfig
    from common.nets import build_model, weight_arrays
    from launch.bench_learner import synthetic_rollout
    from learner.update import make_optimizer, update

    n = spec.n_agents
    out: dict[str, float] = {}
    torch.manual_seed(0)
    cfg = ModelConfig(algorithm=alg)
    train_cfg = TrainConfig(device="cpu")
    model = build_model(cfg, spec.adjacency, spec.obs_dim, spec.n_actions)
    opt = make_optimizer(model, train_cfg)
    rng = np.random.default_rng(0)
    for n_envs in (1, 8):
        rollout = synthetic_rollout(n_envs, n, spec.obs_dim, spec.n_actions, cfg.hidden, rng)
        low, med = _timed(lambda r=rollout: update(model, opt, r, train_cfg), max(1, min(3, rounds)), 0.0)
        out[f"update_ms_{alg}_e{n_envs}"], out[f"update_med_ms_{alg}_e{n_envs}"] = low, med
        if n_envs == 1 and rollout_bytes:
            msg = wire.Message(type=wire.ROLLOUT, run_id="bench", sender="actor-0", seq=0, weight_version=0,
                               meta={}, arrays=rollout.arrays())
            out["rollout_bytes_e1"] = float(sum(memoryview(f).nbytes for f in wire.encode(msg)))
    msg = wire.Message(type=wire.WEIGHTS, run_id="bench", sender="learner", seq=0, weight_version=1, meta={},
                       arrays=wire.state_dict_to_arrays(model.state_dict()))
    out[f"weights_bytes_{alg}"] = float(sum(memoryview(f).nbytes for f in wire.encode(msg)))
    policy = ActingPolicy.for_model(cfg, spec.adjacency, spec.obs_dim, spec.n_actions)
    policy.load(weight_arrays(model.eval()))
    obs = rng.standard_normal((1, n, spec.obs_dim)).astype(np.float32)
    starts = np.zeros(1, dtype=bool)
    state, sampler = policy.initial_state(1), action_sampler(1)
    out[f"act_ms_{alg}"], out[f"act_med_ms_{alg}"] = _timed(
        lambda: policy.act(obs, starts, state, sampler.random((1, n))), rounds, budget_s)
    return out


def _peak_child(role: str, name: str, alg: str) -> float:
    """VmHWM (MiB) of a fresh process playing `role` (learner or actor) on system `name`."""
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    done = subprocess.run([sys.executable, "-m", "launch.bench_scale", role, name, alg], env=env, check=True,
                          capture_output=True, text=True, timeout=900)
    return float(done.stdout.strip().splitlines()[-1])


def _child(role: str, name: str, alg: str) -> None:
    """Body of a peak-memory child: build the role's objects, do two windows of work, print VmHWM (MiB)."""
    import torch

    from launch.procmem import vm_hwm_mib

    torch.set_num_threads(1)
    spec = _graph(name)
    from common.config import ModelConfig, TrainConfig
    from common.nets import build_model, weight_arrays

    cfg = ModelConfig(algorithm=alg)
    model = build_model(cfg, spec.adjacency, spec.obs_dim, spec.n_actions)
    if role == "learner":
        from launch.bench_learner import synthetic_rollout
        from learner.update import make_optimizer, update

        train_cfg = TrainConfig(device="cpu")
        opt = make_optimizer(model, train_cfg)
        rollout = synthetic_rollout(8, spec.n_agents, spec.obs_dim, spec.n_actions, cfg.hidden,
                                    np.random.default_rng(0))
        for _ in range(2):
            update(model, opt, rollout, train_cfg)
    else:
        from actor.policy import ActingPolicy
        from actor.sampler import action_sampler
        from simsvc.env import VecMicrogridEnv

        policy = ActingPolicy.for_model(cfg, spec.adjacency, spec.obs_dim, spec.n_actions)
        policy.load(weight_arrays(model.eval()))
        del model
        env = VecMicrogridEnv(name, 8, disturbance="walk")
        obs = env.reset(0).astype(np.float32)
        starts = np.ones(8, dtype=bool)
        state, sampler = policy.initial_state(8), action_sampler(1)
        for _ in range(2 * WINDOW):
            acted = policy.act(obs, starts, state, sampler.random((8, spec.n_agents)))
            state = acted.state
            obs, _, done, _ = env.step(acted.actions)
            obs = np.asarray(obs, dtype=np.float32)
            starts = np.asarray(done, dtype=bool).reshape(8)
    print(vm_hwm_mib(os.getpid()))


def fit_exponent(n: list[float], cost: list[float]) -> float:
    """Least-squares slope of log(cost) on log(n)."""
    return float(np.polyfit(np.log(np.asarray(n, float)), np.log(np.asarray(cost, float)), 1)[0])


def exponents_of(rows: list[dict[str, Any]]) -> dict[str, dict[str, float | None]]:
    """Growth exponent of every cost over all systems and over those with N >= 20."""
    metrics = [k for k in rows[0] if k not in ("system", "n_dg", "n_bus") and "_med_" not in k]
    out = {}
    for key in metrics:
        pts = [(r["n_dg"], r[key]) for r in rows if r.get(key)]
        big = [(n, c) for n, c in pts if n >= 20]
        out[key] = {"all": round(fit_exponent(*zip(*pts, strict=True)), 3) if len(pts) >= 2 else None,
                    "n_ge_20": round(fit_exponent(*zip(*big, strict=True)), 3) if len(big) >= 2 else None}
    return out


def combine(reports: list[dict[str, Any]]) -> dict[str, Any]:
    """One report from repeated runs over the same systems: every cost is the median over the runs of each
    run's figure (itself a minimum over rounds), so that one run's lucky or disturbed cell does not bend an
    exponent; message sizes are identical anyway. Exponents are fitted afresh."""
    systems = [r["system"] for r in reports[0]["results"]]
    if any([r["system"] for r in rep["results"]] != systems for rep in reports):
        raise ValueError("the reports must cover the same systems in the same order")
    rows = []
    for k, first in enumerate(reports[0]["results"]):
        row = dict(first)
        for key, value in first.items():
            if isinstance(value, float):
                row[key] = float(np.median([rep["results"][k][key] for rep in reports if key in rep["results"][k]]))
        rows.append(row)
    return {"bench": "scale", "combined_from": [rep["created"] for rep in reports],
            "machine": [rep["machine"] for rep in reports], "settings": reports[0]["settings"],
            "results": rows, "exponents": exponents_of(rows)}


def run_bench(systems: list[str], rounds: int, memory: bool = True, echo: bool = True, budget_s: float = 0.3
              ) -> dict[str, Any]:
    """Measure every cell of every system; budget_s is the CPU time of one timing round (tests shrink it)."""
    from simsvc.systems import load_system

    load_before = os.getloadavg()[0]
    rows = []
    for name in systems:
        system = load_system(name)
        row: dict[str, Any] = {"system": name, "n_dg": system.n_dg, "n_bus": system.n_bus}
        row.update(_sim_cells(name, rounds, budget_s))
        row.update(_learning_cells(name, rounds, budget_s))
        if memory:
            for alg in ALGS:
                row[f"learner_peak_mib_{alg}"] = _peak_child("learner", name, alg)
                row[f"actor_peak_mib_{alg}"] = _peak_child("actor", name, alg)
        rows.append({k: (round(v, 5) if isinstance(v, float) else v) for k, v in row.items()})
        if echo:
            click.echo(f"{name:>14} N={system.n_dg:<4d} sim {row['sim_ms_e1']:.2f}/{row['sim_ms_e8']:.2f} ms  "
                       f"act pn {row['act_ms_powernet']:.3f} ms  update pn {row['update_ms_powernet_e1']:.1f} ms",
                       err=True)
    exponents = exponents_of(rows)
    return {"bench": "scale", "created": time.strftime("%Y-%m-%dT%H:%M:%S"),
            "machine": {"platform": platform.platform(), "python": platform.python_version(), "cpus": os.cpu_count(),
                        "load_avg_1m_before": round(load_before, 2), "load_avg_1m_after": round(os.getloadavg()[0], 2)},
            "settings": {"rounds": rounds, "threads": 1, "window_steps": WINDOW, "algorithms": list(ALGS)},
            "results": rows, "exponents": exponents}


PLOT_GROUPS = (
    ("CPU time per control step (ms)", ("sim_ms_e1", "sim_ms_e8", "sim_dense_ms_e1", "env_ms_e1",
                                        "act_ms_powernet", "act_ms_ia2c")),
    ("learner update per 20-step window (CPU ms)", ("update_ms_powernet_e1", "update_ms_powernet_e8",
                                                "update_ms_ia2c_e1", "update_ms_ia2c_e8")),
    ("bytes and peak MiB", ("rollout_bytes_e1", "weights_bytes_powernet", "weights_bytes_ia2c",
                            "learner_peak_mib_powernet", "actor_peak_mib_powernet")),
)


def plot(report: dict[str, Any], path: Path) -> None:
    """Log-log panels of each cost against N, with the fitted exponent (N >= 20) in the legend."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    rows = report["results"]
    n = np.array([r["n_dg"] for r in rows], float)
    fig, axes = plt.subplots(1, len(PLOT_GROUPS), figsize=(6 * len(PLOT_GROUPS), 4.5))
    for ax, (title, keys) in zip(axes, PLOT_GROUPS, strict=True):
        for key in keys:
            if not all(key in r for r in rows):
                continue
            y = np.array([r[key] for r in rows], float)
            slope = report["exponents"][key]["n_ge_20"]
            ax.loglog(n, y, "o-", label=f"{key} (N^{slope:.2f})" if slope is not None else key)
        ref = n / n[0]
        ax.loglog(n, ref * ax.get_ylim()[0] * 2, "k:", lw=0.8, label="slope 1")
        ax.set_xlabel("DGs N")
        ax.set_title(title)
        ax.legend(fontsize=7)
        ax.grid(True, which="both", alpha=0.3)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


@click.command("scale")
@click.option("--out", "out_dir", default="results/scaling", show_default=True,
              help="Directory for scale.json and scale.png.")
@click.option("--systems", default=",".join(DEFAULT_SYSTEMS), show_default=True,
              help="Comma-separated systems (names or paths), in order of N.")
@click.option("--rounds", default=5, show_default=True, help="Timing rounds per cell (min and median kept).")
@click.option("--no-memory", is_flag=True, help="Skip the peak-memory child processes.")
@click.option("--combine", "combine_paths", multiple=True, type=click.Path(exists=True, dir_okay=False),
              help="Measure nothing: merge these scale.json files of repeated runs (each cost's median).")
@exit_on_user_error
def bench_scale(out_dir: str, systems: str, rounds: int, no_memory: bool, combine_paths: tuple[str, ...]) -> None:
    """How simulation, acting, learner update, message sizes and memory grow with the number of DGs."""
    if combine_paths:
        report = combine([json.loads(Path(p).read_text()) for p in combine_paths])
    else:
        import torch

        torch.set_num_threads(1)
        report = run_bench([s.strip() for s in systems.split(",") if s.strip()], rounds, memory=not no_memory)
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    (out / "scale.json").write_text(json.dumps(report, indent=2) + "\n")
    plot(report, out / "scale.png")
    for key, fit in report["exponents"].items():
        click.echo(f"{key:>28}: N^{fit['all']} (all), N^{fit['n_ge_20']} (N >= 20)")
    click.echo(f"wrote {out / 'scale.json'} and {out / 'scale.png'}")


if __name__ == "__main__":
    _child(sys.argv[1], sys.argv[2], sys.argv[3])
