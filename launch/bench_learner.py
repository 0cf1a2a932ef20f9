"""`powernet bench learner`: how fast the learner's update runs per algorithm and system, on CPU (and CUDA
when torch sees one), timed on synthetic n-step windows of the real agent graphs.

The anchor is the original code's style, measured in the same process: one Python module per agent and a
Python loop over agents at every step (NeurComm's network). Targets from the issue: at least 5x less time per
20-step update window, and a cost that grows far less than linearly with the number of envs per update.
"""

from __future__ import annotations

import json
import platform
import time
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from actor.envs import agent_spec
from common.algorithms import ALGORITHMS
from common.config import ModelConfig, TrainConfig, load_config
from common.errors import InputError
from common.nets import build_model
from common.rollout import Rollout
from learner.update import make_optimizer, update

WINDOW = 20


def synthetic_rollout(n_envs: int, n_agents: int, obs_dim: int, n_actions: int, hidden: int,
                      rng: np.random.Generator) -> Rollout:
    """A window shaped like real data: one 20-step episode per env."""
    t, e, n = WINDOW, n_envs, n_agents
    dones = np.zeros((t, e), dtype=bool)
    dones[-1] = True
    starts = np.zeros((t, e), dtype=bool)
    starts[0] = True
    f32 = np.float32
    return Rollout(
        obs=rng.standard_normal((t, e, n, obs_dim)).astype(f32),
        actions=rng.integers(0, n_actions, (t, e, n)).astype(np.int64),
        rewards=rng.uniform(-0.1, 0.05, (t, e, n)).astype(f32), dones=dones, starts=starts,
        values=rng.standard_normal((t, e, n)).astype(f32), logp=np.full((t, e, n), -np.log(n_actions), f32),
        bootstrap=np.zeros((e, n), f32), h0=np.zeros((e, n, hidden), f32), c0=np.zeros((e, n, hidden), f32),
        fp0=np.full((e, n, n_actions), 1.0 / n_actions, f32))


def _timed(fn, repeats: int, device: torch.device) -> float:
    """Median seconds of fn() over `repeats` runs after one warm-up."""
    fn()
    times = []
    for _ in range(repeats):
        if device.type == "cuda":
            torch.cuda.synchronize()
        start = time.perf_counter()
        fn()
        if device.type == "cuda":
            torch.cuda.synchronize()
        times.append(time.perf_counter() - start)
    return float(np.median(times))


class LoopedNeurComm(nn.Module):
    """The anchor: NeurComm written as the original does, a list of per-agent modules and a Python loop over
    agents inside every step. Only for timing; not used for training."""

    def __init__(self, adjacency: np.ndarray, obs_dim: int, n_actions: int, hidden: int) -> None:
        super().__init__()
        self.nbrs = [np.flatnonzero(row).tolist() for row in adjacency]
        self.n_actions = n_actions
        self.obs_fc = nn.ModuleList(nn.Linear(obs_dim * (1 + len(nb)), hidden) for nb in self.nbrs)
        self.fp_fc = nn.ModuleList(nn.Linear(n_actions * len(nb), hidden) for nb in self.nbrs)
        self.msg_fc = nn.ModuleList(nn.Linear(hidden * len(nb), hidden) for nb in self.nbrs)
        self.lstm = nn.ModuleList(nn.LSTMCell(3 * hidden, hidden) for _ in self.nbrs)
        self.actor = nn.ModuleList(nn.Linear(hidden, n_actions) for _ in self.nbrs)
        self.critic = nn.ModuleList(nn.Linear(hidden + n_actions * len(nb), 1) for nb in self.nbrs)

    def step(self, obs: torch.Tensor, h: list, c: list, fp: list) -> tuple[list, list, list, list]:
        new_h, new_c, logits = [], [], []
        for i, nb in enumerate(self.nbrs):
            x = F.relu(self.obs_fc[i](torch.cat([obs[:, i]] + [obs[:, j] for j in nb], -1)))
            p = F.relu(self.fp_fc[i](torch.cat([fp[j] for j in nb], -1)))
            m = F.relu(self.msg_fc[i](torch.cat([h[j] for j in nb], -1)))
            hi, ci = self.lstm[i](torch.cat([x, p, m], -1), (h[i], c[i]))
            new_h.append(hi)
            new_c.append(ci)
            logits.append(self.actor[i](hi))
        return new_h, new_c, [F.softmax(lg, -1).detach() for lg in logits], logits

    def loss(self, rollout: dict[str, torch.Tensor]) -> torch.Tensor:
        obs, actions, adv = rollout["obs"], rollout["actions"], rollout["adv"]
        b, n, hid = obs.shape[1], len(self.nbrs), self.lstm[0].hidden_size
        h = [torch.zeros(b, hid) for _ in range(n)]
        c = [torch.zeros(b, hid) for _ in range(n)]
        fp = [torch.full((b, self.n_actions), 1.0 / self.n_actions) for _ in range(n)]
        total = torch.zeros(())
        for t in range(obs.shape[0]):
            h, c, fp, logits = self.step(obs[t], h, c, fp)
            for i, nb in enumerate(self.nbrs):
                logp = F.log_softmax(logits[i], -1)
                a_nb = [F.one_hot(actions[t, :, j], self.n_actions).float() for j in nb]
                v = self.critic[i](torch.cat([h[i]] + a_nb, -1)).squeeze(-1)
                chosen = logp.gather(-1, actions[t, :, i : i + 1]).squeeze(-1)
                ent = -(logp.exp() * logp).sum(-1)
                total = total - (chosen * adv[t, :, i]).mean() + 0.5 * (adv[t, :, i] - v).pow(2).mean() \
                    - 0.01 * ent.mean()
        return total


def _anchor(adjacency: np.ndarray, obs_dim: int, n_actions: int, hidden: int, repeats: int,
            rng: np.random.Generator) -> dict[str, float]:
    model = LoopedNeurComm(adjacency, obs_dim, n_actions, hidden)
    opt = torch.optim.RMSprop(model.parameters(), lr=5e-4, alpha=0.99, eps=1e-5)
    n = len(adjacency)
    data = {"obs": torch.from_numpy(rng.standard_normal((WINDOW, 1, n, obs_dim)).astype(np.float32)),
            "actions": torch.from_numpy(rng.integers(0, n_actions, (WINDOW, 1, n))),
            "adv": torch.from_numpy(rng.standard_normal((WINDOW, 1, n)).astype(np.float32))}
    h = [torch.zeros(1, hidden) for _ in range(n)]
    fp = [torch.full((1, n_actions), 0.1) for _ in range(n)]

    @torch.no_grad()
    def act() -> None:
        model.step(data["obs"][0], h, h, fp)

    def learn() -> None:
        opt.zero_grad()
        model.loss(data).backward()
        nn.utils.clip_grad_norm_(model.parameters(), 40.0)
        opt.step()

    cpu = torch.device("cpu")
    return {"act_step_ms": 1e3 * _timed(act, repeats * 10, cpu), "update_ms": 1e3 * _timed(learn, repeats, cpu)}


def _measure(alg: str, graph: dict[str, Any], device: torch.device, env_counts: list[int], repeats: int,
             rng: np.random.Generator, unroll: str = "kernel") -> list[dict[str, Any]]:
    torch.manual_seed(0)
    model_cfg = ModelConfig(algorithm=alg)
    train_cfg = TrainConfig(device=device.type, unroll=unroll)
    model = build_model(model_cfg, graph["adjacency"], graph["obs_dim"], graph["n_actions"]).to(device)
    model.window_kernel = train_cfg.unroll == "kernel"
    opt = make_optimizer(model, train_cfg)
    rows = []
    for n_envs in env_counts:
        rollout = synthetic_rollout(n_envs, graph["n_agents"], graph["obs_dim"], graph["n_actions"],
                                    model_cfg.hidden, rng)
        obs = torch.from_numpy(rollout.obs[0]).to(device)
        state = model.initial_state(n_envs, device=device)
        starts = torch.zeros(n_envs, dtype=torch.bool, device=device)

        @torch.no_grad()
        def act(obs=obs, state=state, starts=starts) -> None:
            logits, new_state = model.step(obs, state, starts)
            model.value(new_state.h, logits.argmax(-1), obs)

        def learn(rollout=rollout) -> None:
            update(model, opt, rollout, train_cfg)

        update_s = _timed(learn, repeats, device)
        rows.append({"algorithm": alg, "system": graph["system"], "device": device.type, "envs": n_envs,
                     "update_ms": 1e3 * update_s, "updates_per_s": 1.0 / update_s,
                     "agent_steps_per_s": WINDOW * n_envs * graph["n_agents"] / update_s,
                     "act_step_ms": 1e3 * _timed(act, repeats * 10, device)})
    return rows


def run_bench(systems: list[str], algorithms: str, env_counts: list[int], repeats: int, threads: int,
              unroll: str = "kernel") -> dict[str, Any]:
    """Time every (algorithm, system, device, envs) cell plus the per-agent-loop anchor; return JSON-able."""
    algs = list(ALGORITHMS) if algorithms == "all" else [a.strip() for a in algorithms.split(",")]
    for alg in algs:
        if alg not in ALGORITHMS:
            raise InputError(f"--algorithms: unknown algorithm {alg!r} (known: {', '.join(ALGORITHMS)})")
    if repeats < 1 or not env_counts or min(env_counts) < 1:
        raise InputError("--repeats and every --envs count must be at least 1")
    torch.set_num_threads(threads)
    devices = [torch.device("cpu")] + ([torch.device("cuda")] if torch.cuda.is_available() else [])
    rng = np.random.default_rng(0)
    rows, anchors, summary = [], {}, {}
    for system in systems:
        spec = agent_spec(load_config(None, [f"env.system={json.dumps(system)}"]).env)
        graph = {"system": system, "adjacency": np.asarray(spec.adjacency, dtype=bool), "n_agents": spec.n_agents,
                 "obs_dim": spec.obs_dim, "n_actions": spec.n_actions}
        torch.manual_seed(0)
        anchors[system] = _anchor(graph["adjacency"], spec.obs_dim, spec.n_actions, 64, repeats, rng)
        for device in devices:
            for alg in algs:
                rows.extend(_measure(alg, graph, device, env_counts, repeats, rng, unroll))
        for device in devices:
            cells = [r for r in rows if r["system"] == system and r["device"] == device.type]
            one = {r["algorithm"]: r["update_ms"] for r in cells if r["envs"] == env_counts[0]}
            most = {r["algorithm"]: r["update_ms"] for r in cells if r["envs"] == env_counts[-1]}
            summary[f"{system}/{device.type}"] = {
                "anchor_update_ms_cpu": anchors[system]["update_ms"],
                "anchor_act_step_ms_cpu": anchors[system]["act_step_ms"],
                "update_ms_envs_1st": one,
                "speedup_vs_anchor": {a: anchors[system]["update_ms"] / v for a, v in one.items()},
                f"cost_ratio_envs_{env_counts[-1]}_vs_{env_counts[0]}": {a: most[a] / one[a] for a in one},
            }
    return {"machine": {"python": platform.python_version(), "torch": torch.__version__, "threads": threads,
                        "processor": platform.processor() or platform.machine(),
                        "cuda": torch.cuda.get_device_name(0) if torch.cuda.is_available() else None},
            "window_steps": WINDOW, "env_counts": env_counts, "unroll": unroll, "anchor": anchors, "results": rows,
            "summary": summary}
