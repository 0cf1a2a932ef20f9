"""A seeded toy graph environment with a known optimum, for tests and debugging of the learning code.

It has the interface of `simsvc.env.VecMicrogridEnv`; tests/conftest.py registers it as system "toy-graph"
(`actor.envs.register_env`), so the trainer, rollout and evaluation code are identical for both. Each agent owns a
set-point index s_i (action a_i in 0..9, smoothed with beta as in PGSim) and a hidden target k_i drawn per episode
(and random-walking with disturbance "walk"); its observation shows its own target, so the optimum is a_i =
round(k_i). Reward r_i = 1 - |e_i| - 0.5 mean_{j in N(i)} |e_j| with e = s - k: neighbours' errors leak into each
agent's reward, so the spatial discount matters. The best per-agent step reward is 1 (0.75 on average when acting
optimally on continuous targets); a uniformly random policy averages about -3.4.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from actor.envs import AgentSpec
from common.graph import hop_distances

# microgrid-6's agent graph, reused so toy runs exercise the same message paths.
TOY_EDGES = ((1, 2), (1, 3), (2, 3), (2, 4), (3, 5), (4, 5), (4, 6), (5, 6))
N_ACTIONS = 10
OBS_DIM = 9
WARMUP_SETPOINT = 4.5
VOLT_PER_UNIT_ERROR = 0.01
RBF_CENTRES = np.arange(1.5, 8.0)


def smoothed_setpoint(previous: np.ndarray, commanded: np.ndarray, beta: float) -> np.ndarray:
    """Action smoothing as in PGSim (docs/mdp.md): applied = beta * previous + (1 - beta) * commanded."""
    return beta * previous + (1.0 - beta) * commanded


def toy_adjacency(edges: tuple[tuple[int, int], ...] = TOY_EDGES) -> np.ndarray:
    """Symmetric boolean adjacency from 1-based edges."""
    n = max(max(e) for e in edges)
    adjacency = np.zeros((n, n), dtype=bool)
    for a, b in edges:
        adjacency[a - 1, b - 1] = adjacency[b - 1, a - 1] = True
    return adjacency


class VecToyGraphEnv:
    """E toy episodes stepped together; auto-resets like VecMicrogridEnv."""

    def __init__(self, num_envs: int = 1, disturbance: str = "walk", noise_std: float = 0.0,
                 smoothing_beta: float = 0.0, episode_steps: int = 20, defer_reset: bool = False) -> None:
        if disturbance not in ("none", "episode", "walk"):
            raise ValueError(f"unknown disturbance {disturbance!r}")
        self.adjacency = toy_adjacency()
        self.n_agents = len(self.adjacency)
        self.neighbors = [np.flatnonzero(row).astype(np.int64) for row in self.adjacency]
        self.hop_distance = hop_distances(self.adjacency)
        self.n_envs = num_envs
        self.obs_dim = OBS_DIM
        self.n_actions = N_ACTIONS
        self.episode_steps = episode_steps
        self.control_dt_s = 0.05
        self.disturbance = disturbance
        self.noise_std = noise_std
        self.beta = smoothing_beta
        degree = self.adjacency.sum(axis=1, keepdims=True)
        self._mean_nbr = self.adjacency / np.maximum(degree, 1)
        shape = (num_envs, self.n_agents)
        self._target = np.zeros(shape)
        self._setpoint = np.zeros(shape)
        self._v_pu = np.ones(shape)
        self._t = np.zeros(num_envs, dtype=np.int64)
        self._return = np.zeros(num_envs)
        self._episode = np.zeros(num_envs, dtype=np.int64)
        self._seed_base = 0
        self._rngs: list[np.random.Generator] = []

    def _start_episode(self, e: int) -> None:
        seed = self._seed_base + e + int(self._episode[e]) * self.n_envs
        rng = np.random.default_rng(seed)
        if self.disturbance == "none":
            self._target[e] = 1.5 + (np.arange(self.n_agents) % 6)
        else:
            self._target[e] = rng.uniform(1.0, 8.0, self.n_agents)
        self._setpoint[e] = WARMUP_SETPOINT
        self._v_pu[e] = 1.0 + VOLT_PER_UNIT_ERROR * (WARMUP_SETPOINT - self._target[e])
        self._t[e] = 0
        self._return[e] = 0.0
        self._rngs[e] = rng

    def _observe(self) -> np.ndarray:
        """Own target as a scalar and on 7 radial basis functions (so a linear read-out can find the
        optimum), and the applied set-point."""
        obs = np.zeros((self.n_envs, self.n_agents, OBS_DIM))
        obs[..., 0] = (self._target - 4.5) / 4.5
        obs[..., 1:8] = np.exp(-((self._target[..., None] - RBF_CENTRES) ** 2))
        obs[..., 8] = (self._setpoint - 4.5) / 4.5
        if self.noise_std > 0:
            for e in range(self.n_envs):
                obs[e] += self.noise_std * self._rngs[e].standard_normal(obs[e].shape)
        return obs.astype(np.float32)

    def reset(self, seed: int) -> np.ndarray:
        """Start every env; env e then runs episodes seeded seed+e, seed+e+E, seed+e+2E, ..."""
        self._seed_base = int(seed)
        self._episode[:] = 0
        self._rngs = [np.random.default_rng(0)] * self.n_envs
        for e in range(self.n_envs):
            self._start_episode(e)
        return self._observe()

    def _check(self, actions: Any) -> np.ndarray:
        actions = np.asarray(actions)
        if actions.shape != (self.n_envs, self.n_agents):
            raise ValueError(f"actions must have shape {(self.n_envs, self.n_agents)}, got {actions.shape}")
        if actions.dtype.kind not in "iu":
            raise ValueError(f"discrete actions must be integers, got dtype {actions.dtype}")
        if actions.min() < 0 or actions.max() >= N_ACTIONS:
            raise ValueError(f"actions must lie in 0..{N_ACTIONS - 1}")
        return actions.astype(np.int64)

    def step(self, actions: Any) -> tuple[np.ndarray, np.ndarray, np.ndarray, dict[str, np.ndarray]]:
        actions = self._check(actions)
        self._setpoint = smoothed_setpoint(self._setpoint, actions.astype(np.float64), self.beta)
        error = self._setpoint - self._target
        nbr_error = np.abs(error) @ self._mean_nbr.T
        rewards = 1.0 - np.abs(error) - 0.5 * nbr_error
        self._v_pu = 1.0 + VOLT_PER_UNIT_ERROR * (error + 0.5 * (error @ self._mean_nbr.T))
        self._return += rewards.sum(axis=1)
        self._t += 1
        done = self._t >= self.episode_steps
        info = {
            "v_pu": self._v_pu.copy(),
            "f_hz": np.full_like(self._v_pu, 60.0),
            "p_w": np.zeros_like(self._v_pu),
            "q_var": np.zeros_like(self._v_pu),
            "vn_v": 490.0 + 5.0 * self._setpoint,
            "violations": ((self._v_pu < 0.95) | (self._v_pu > 1.05)).sum(axis=1).astype(np.int64),
            "diverged": np.zeros(self.n_envs, dtype=bool),
            "episode_return": self._return.copy(),
        }
        if self.disturbance == "walk":
            for e in range(self.n_envs):
                self._target[e] = np.clip(self._target[e] + self._rngs[e].uniform(-0.25, 0.25, self.n_agents),
                                          0.0, 9.0)
        obs = self._observe()
        if done.any():
            info["final_obs"] = obs.copy()
            for e in np.flatnonzero(done):
                self._episode[e] += 1
                self._start_episode(e)
            obs = self._observe()
        return obs, rewards.astype(np.float32), done, info


def toy_spec() -> AgentSpec:
    """The toy env's agent graph and sizes, as `actor.envs.agent_spec` reports them."""
    return AgentSpec(toy_adjacency(), OBS_DIM, N_ACTIONS)
