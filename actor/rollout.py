"""Collect n-step windows from a vectorised environment with one compiled acting step per control step.

Acting uses `actor.policy.ActingPolicy` (the networks' forward pass without torch) and a NumPy sampling
stream (`actor.sampler`), in the actors and in the local trainer alike, so both act identically.
The acting LSTM state advances exactly once per environment step and is carried across windows (zeroed at
episode starts). A window's last observation needs a value for bootstrapping; when every env has just
finished its episode that value is 0 and nothing is computed, so the next window starts with the newest
weights (the default n = T case is then exactly on-policy). Otherwise the step for that observation is
computed once, its value bootstraps this window, and its sampled action opens the next window.

With an env built with ``defer_reset`` (VecMicrogridEnv), a window that ends with every episode done leaves
the next episodes' warm-up pending: `finish_resets()` runs it, e.g. while the learner updates on the window
just sent, and otherwise the next `collect` does so first. The data are identical to an immediate reset.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np

from actor.policy import ActingPolicy, State
from actor.sampler import sampler_state, set_sampler_state
from common.rollout import Rollout


@dataclass
class _Step:
    """What acting on one observation produced."""

    obs: np.ndarray
    starts: np.ndarray
    links: np.ndarray | None
    prev_state: State
    new_state: State
    actions: np.ndarray
    logp: np.ndarray
    value: np.ndarray


class RolloutCollector:
    """Steps `env` with `policy` and returns Rollouts of `n_steps` steps; sampling uses `sampler` only."""

    def __init__(self, env: Any, policy: ActingPolicy, n_steps: int, sampler: np.random.Generator) -> None:
        self.env = env
        self.policy = policy
        self.n_steps = n_steps
        self.sampler = sampler
        self.seed_base = 0
        self.episodes_done = np.zeros(env.n_envs, dtype=np.int64)
        self._obs: np.ndarray | None = None
        self._links: np.ndarray | None = None  # the env's link mask of _obs (None without message loss)
        self._state: State | None = None
        self._starts: np.ndarray | None = None
        self._pending: _Step | None = None
        self._deferred = bool(getattr(env, "defer_reset", False))

    def reset(self, seed: int, episodes_done: np.ndarray | None = None) -> None:
        """Start (or, with `episodes_done`, continue) the seeded episode sequence of every env."""
        done = np.zeros(self.env.n_envs, dtype=np.int64) if episodes_done is None else episodes_done.copy()
        self.seed_base = int(seed)
        self.episodes_done = done
        obs = self.env.reset(self.seed_base + int(done.max(initial=0)) * self.env.n_envs)
        self.episodes_done[:] = done.max(initial=0)
        self._obs = np.ascontiguousarray(obs, dtype=np.float32)
        self._links = self._env_links()
        self._state = self.policy.initial_state(self.env.n_envs)
        self._starts = np.ones(self.env.n_envs, dtype=bool)
        self._pending = None

    def stream(self) -> dict[str, Any]:
        """Where this collector's seeded episodes and action sampler stand (checkpointed by the learner)."""
        return {"episodes_done": int(self.episodes_done.max(initial=0)), "at_boundary": self.at_episode_boundary,
                "sampler_state": sampler_state(self.sampler)}

    def continue_stream(self, seed: int, stream: dict[str, Any]) -> None:
        """Continue the episode sequence and sampler recorded by `stream` (fresh episodes start). A sampler state
        that is not this sampler's raises `actor.sampler.SamplerStateError` before anything changes."""
        if stream.get("sampler_state") is not None:
            set_sampler_state(self.sampler, stream["sampler_state"])
        episodes = stream.get("episodes_done") or 0
        self.reset(seed, np.full(self.env.n_envs, int(episodes), dtype=np.int64))

    def finish_resets(self) -> None:
        """Run the env's pending (deferred) episode starts now and take their first observations."""
        if self._deferred and self.env.resets_pending:
            self._obs = np.ascontiguousarray(self.env.finish_resets(), dtype=np.float32)
            self._links = self._env_links()

    def _env_links(self) -> np.ndarray | None:
        """The env's link mask for the observation it just returned ([E, N, D] bool), or None when it has no
        message loss (or no such attribute)."""
        links = getattr(self.env, "links", None)
        return None if links is None else np.array(links, dtype=np.bool_)

    @property
    def at_episode_boundary(self) -> bool:
        """True when no step is pending, i.e. every env is about to start a fresh episode."""
        return self._pending is None

    def _act(self) -> _Step:
        u = self.sampler.random((self.env.n_envs, self.policy.n_agents))
        out = self.policy.act(self._obs, self._starts, self._state, u, self._links)
        return _Step(self._obs, self._starts, self._links, self._state, out.state, out.actions, out.logp,
                     out.values)

    def collect(self, version: int = 0) -> tuple[Rollout, dict[str, Any]]:
        """Run one window; return it and its episode statistics (raw rewards, finished episode returns)."""
        n, env = self.n_steps, self.env
        self.finish_resets()
        step = self._pending if self._pending is not None else self._act()
        state0 = step.prev_state
        obs, actions, logp, values, starts, rewards, dones, links = [], [], [], [], [], [], [], []
        finished, violations, diverged = [], 0, 0
        for t in range(n):
            obs.append(step.obs)
            starts.append(step.starts)
            links.append(step.links)
            actions.append(step.actions)
            logp.append(step.logp)
            values.append(step.value)
            next_obs, reward, done, info = env.step(step.actions)
            done = np.asarray(done, dtype=bool)
            rewards.append(np.asarray(reward, dtype=np.float32))
            dones.append(done)
            violations += int(np.asarray(info["violations"]).sum())
            diverged += int(np.asarray(info["diverged"]).sum())
            any_done = bool(done.any())
            if any_done:
                finished.extend(np.asarray(info["episode_return"])[done].tolist())
                self.episodes_done += done
            if self._deferred and any_done and (t < n - 1 or not done.all()):
                next_obs = env.finish_resets()  # acting on now: the new episodes' first observations
            self._obs = np.ascontiguousarray(next_obs, dtype=np.float32)
            self._links = self._env_links()
            self._state = step.new_state
            self._starts = done.copy()
            if t < n - 1 or not done.all():
                step = self._act()
        if dones[-1].all():
            self._pending = None
            bootstrap = np.zeros_like(values[0])
        else:
            self._pending = step
            bootstrap = step.value * (~dones[-1])[:, None]
        rollout = Rollout(
            obs=np.stack(obs), actions=np.stack(actions), rewards=np.stack(rewards), dones=np.stack(dones),
            starts=np.stack(starts), values=np.stack(values), logp=np.stack(logp), bootstrap=bootstrap,
            h0=state0.h, c0=state0.c, fp0=state0.fp, version=version,
            links=None if links[0] is None else np.stack(links))
        raw = rollout.rewards
        stats = {"env_steps": n * env.n_envs, "reward_mean": float(raw.mean()),
                 "episode_returns": finished, "violation_rate": violations / raw.size,
                 "diverged": diverged}
        return rollout, stats


def window_meta(stats: dict[str, Any], rewards_size: int) -> dict[str, Any]:
    """The summary of a window that the learner records (sent as rollout meta): finished episodes, the sum of
    their returns, voltage-violation count and diverged envs."""
    returns = stats["episode_returns"]
    return {"episodes": len(returns), "episode_return_sum": float(np.sum(returns)),
            "violations": int(round(stats["violation_rate"] * rewards_size)), "diverged": int(stats["diverged"])}
