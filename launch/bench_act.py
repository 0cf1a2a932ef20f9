"""`powernet bench act`: what one acting step costs, per algorithm, system and number of envs.

Three ways of computing the same step, timed in this process on one thread:

* `fast_ms`: what actors and the local trainer run, `actor.policy.ActingPolicy.act` (the compiled kernel:
  state reset, messages, LSTM, policy, inverse-CDF sampling, neighbourhood values) plus drawing the
  uniforms from the sampler, i.e. the body of `RolloutCollector._act`;
* `torch_ms`: the learner's network doing the same in torch under `no_grad` (`model.step`, softmax,
  sampling, log-probabilities, `model.value`), i.e. how actors acted before;
* `anchor_ms`: the original code's style for NeurComm/PowerNet, one torch module per agent and a Python
  loop over agents (`launch.bench_learner.LoopedNeurComm`), forward only, as `powernet bench learner`
  times it.

Each figure is the median (and the minimum) over rounds of repeated calls after a warm-up, in ms per call;
`*_per_env_ms` divides by the number of envs. Weights are random; the cost does not depend on them except
through ReLU sparsity. Timings on a shared machine vary: the JSON records the load average before and
after, and the command can be repeated.
"""

from __future__ import annotations

import json
import os
import platform
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any, NamedTuple

import click
import numpy as np

from common.errors import InputError
from launch.bench_options import grid_options
from launch.errors import exit_on_user_error

TARGET_MS = {"microgrid-6": 0.1, "microgrid-20": 0.3}  # per env-step, from the issue


class _Graph(NamedTuple):
    system: str
    adjacency: np.ndarray
    obs_dim: int
    n_actions: int
    n_agents: int


def _timed(fn: Callable[[], Any], calls: int, rounds: int) -> tuple[float, float]:
    """(median, min) ms per call of fn over `rounds` rounds of `calls` calls, after a warm-up round."""
    for _ in range(calls):
        fn()
    per_call = []
    for _ in range(rounds):
        start = time.perf_counter()
        for _ in range(calls):
            fn()
        per_call.append(1e3 * (time.perf_counter() - start) / calls)
    return float(np.median(per_call)), float(np.min(per_call))


def _cell(algorithm: str, spec: _Graph, n_envs: int, calls: int, rounds: int, anchor: bool) -> dict[str, Any]:
    """Time the three paths for one (algorithm, system, envs) cell."""
    import torch
    import torch.nn.functional as F

    from actor.policy import ActingPolicy
    from actor.sampler import action_sampler
    from common.config import ModelConfig
    from common.nets import build_model, weight_arrays
    from launch.bench_learner import LoopedNeurComm

    cfg = ModelConfig(algorithm=algorithm)
    n, rng = spec.n_agents, np.random.default_rng(0)
    torch.manual_seed(0)
    model = build_model(cfg, spec.adjacency, spec.obs_dim, spec.n_actions).eval()
    policy = ActingPolicy.for_model(cfg, spec.adjacency, spec.obs_dim, spec.n_actions)
    policy.load(weight_arrays(model))
    obs = rng.standard_normal((n_envs, n, spec.obs_dim)).astype(np.float32)
    starts = np.zeros(n_envs, dtype=bool)
    state, sampler = policy.initial_state(n_envs), action_sampler(1)
    t_obs, t_starts, t_state = torch.from_numpy(obs), torch.from_numpy(starts), model.initial_state(n_envs)
    generator = torch.Generator().manual_seed(1)

    def fast() -> None:
        policy.act(obs, starts, state, sampler.random((n_envs, n)))

    @torch.no_grad()
    def torch_step() -> None:
        logits, new = model.step(t_obs, t_state, t_starts)
        actions = torch.multinomial(F.softmax(logits, -1).reshape(-1, spec.n_actions), 1,
                                    generator=generator).reshape(logits.shape[:-1])
        F.log_softmax(logits, -1).gather(-1, actions.unsqueeze(-1))
        model.value(new.h, actions, t_obs)

    row: dict[str, Any] = {"algorithm": algorithm, "system": spec.system, "agents": n, "envs": n_envs}
    for name, fn in (("fast", fast), ("torch", torch_step)):
        med, low = _timed(fn, calls, rounds)
        row.update({f"{name}_ms": round(med, 5), f"{name}_min_ms": round(low, 5),
                    f"{name}_per_env_ms": round(med / n_envs, 5)})
    if anchor:
        loop = LoopedNeurComm(spec.adjacency, spec.obs_dim, spec.n_actions, cfg.hidden)
        h = [torch.zeros(n_envs, cfg.hidden) for _ in range(n)]
        fp = [torch.full((n_envs, spec.n_actions), 1.0 / spec.n_actions) for _ in range(n)]
        with torch.no_grad():
            med, low = _timed(lambda: loop.step(t_obs, h, h, fp), calls, rounds)
        row.update({"anchor_ms": round(med, 5), "anchor_min_ms": round(low, 5),
                    "anchor_per_env_ms": round(med / n_envs, 5)})
    row["speedup_vs_torch"] = round(row["torch_ms"] / row["fast_ms"], 2)
    return row


def run_bench(systems: list[str], algorithms: list[str], env_counts: list[int], calls: int = 200,
              rounds: int = 7, echo: bool = True) -> dict[str, Any]:
    """Time every (system, algorithm, envs) cell; return the report with a per-system summary."""
    import torch

    from actor.envs import agent_spec
    from common.config import load_config

    torch.set_num_threads(1)
    load_before = os.getloadavg()[0]
    rows = []
    for system in systems:
        agents = agent_spec(load_config(None, [f"env.system={json.dumps(system)}"]).env)
        spec = _Graph(system, agents.adjacency, agents.obs_dim, agents.n_actions, agents.n_agents)
        for algorithm in algorithms:
            for n_envs in env_counts:
                row = _cell(algorithm, spec, n_envs, max(10, calls // n_envs), rounds,
                            anchor=algorithm in ("powernet", "neurcomm"))
                rows.append(row)
                if echo:
                    click.echo(_line(row), err=True)
    return {"bench": "act", "created": time.strftime("%Y-%m-%dT%H:%M:%S"),
            "machine": {"platform": platform.platform(), "python": platform.python_version(),
                        "cpus": os.cpu_count(), "torch": torch.__version__,
                        "load_avg_1m_before": round(load_before, 2), "load_avg_1m_after": round(os.getloadavg()[0], 2)},
            "settings": {"calls_per_round": calls, "rounds": rounds, "threads": 1},
            "results": rows, "summary": _summary(rows)}


def _line(row: dict[str, Any]) -> str:
    anchor = f"  loop {row['anchor_per_env_ms']:.4f}" if "anchor_ms" in row else ""
    return (f"{row['system']:>13} {row['algorithm']:>9} envs={row['envs']:>2}: per env-step fast "
            f"{row['fast_per_env_ms']:.4f} ms  torch {row['torch_per_env_ms']:.4f}{anchor}  "
            f"(x{row['speedup_vs_torch']:.1f} vs torch)")


def _summary(rows: list[dict[str, Any]]) -> dict[str, Any]:
    """Per system: the slowest fast-path env-step over algorithms and env counts, against the target."""
    out: dict[str, Any] = {}
    for system in sorted({r["system"] for r in rows}):
        cells = [r for r in rows if r["system"] == system]
        worst = max(cells, key=lambda r: r["fast_per_env_ms"])
        target = TARGET_MS.get(Path(system).stem)
        out[system] = {"worst_fast_per_env_ms": worst["fast_per_env_ms"],
                       "worst_cell": f"{worst['algorithm']} x{worst['envs']}", "target_ms": target,
                       "target_met": None if target is None else worst["fast_per_env_ms"] <= target,
                       "median_speedup_vs_torch": float(np.median([r["speedup_vs_torch"] for r in cells]))}
    return out


@click.command("act")
@grid_options("runs/bench-act.json", "envs per acting step")
@click.option("--calls", type=int, default=200, show_default=True, help="calls per timing round (÷ envs)")
@click.option("--rounds", type=int, default=7, show_default=True, help="timing rounds; the median is reported")
@exit_on_user_error
def bench_act(out_path: str, systems: str, algorithms: str, envs: str, calls: int, rounds: int) -> None:
    """Ms per acting step: the compiled acting path next to the torch forward and a per-agent loop."""
    from common.algorithms import ALGORITHMS

    algs = list(ALGORITHMS) if algorithms == "all" else [a.strip() for a in algorithms.split(",")]
    unknown = [a for a in algs if a not in ALGORITHMS]
    if unknown:
        raise InputError(f"--algorithms: unknown {unknown} (known: {', '.join(ALGORITHMS)})")
    try:
        env_counts = [int(x) for x in envs.split(",")]
    except ValueError as exc:
        raise InputError(f"--envs: expected comma-separated integers, got {envs!r}") from exc
    if calls < 1 or rounds < 1 or min(env_counts) < 1:
        raise InputError("--calls, --rounds and every --envs count must be at least 1")
    result = run_bench([s.strip() for s in systems.split(",") if s.strip()], algs, env_counts, calls, rounds)
    path = Path(out_path)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(result, indent=2) + "\n")
    click.echo(json.dumps(result["summary"], indent=2))
    click.echo(f"wrote {path}")
