"""Collect n-step windows from a vectorised environment with one batched forward pass per control step.

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
import torch
import torch.nn.functional as F

from common.nets.base import AgentState, GraphActorCritic
from common.rollout import Rollout


@dataclass
class _Step:
    """What acting on one observation produced (all on CPU)."""

    obs: torch.Tensor
    starts: torch.Tensor
    prev_state: AgentState
    new_state: AgentState
    actions: torch.Tensor
    logp: torch.Tensor
    value: torch.Tensor


class RolloutCollector:
    """Steps `env` with `model` and returns Rollouts of `n_steps` steps; sampling uses `sampler` only."""

    def __init__(self, env: Any, model: GraphActorCritic, n_steps: int, sampler: torch.Generator) -> None:
        self.env = env
        self.model = model
        self.n_steps = n_steps
        self.sampler = sampler
        self.seed_base = 0
        self.episodes_done = np.zeros(env.n_envs, dtype=np.int64)
        self._obs: torch.Tensor | None = None
        self._state: AgentState | None = None
        self._starts: torch.Tensor | None = None
        self._pending: _Step | None = None
        self._deferred = bool(getattr(env, "defer_reset", False))

    def reset(self, seed: int, episodes_done: np.ndarray | None = None) -> None:
        """Start (or, with `episodes_done`, continue) the seeded episode sequence of every env."""
        done = np.zeros(self.env.n_envs, dtype=np.int64) if episodes_done is None else episodes_done.copy()
        self.seed_base = int(seed)
        self.episodes_done = done
        obs = self.env.reset(self.seed_base + int(done.max(initial=0)) * self.env.n_envs)
        self.episodes_done[:] = done.max(initial=0)
        self._obs = torch.from_numpy(np.asarray(obs, dtype=np.float32))
        self._state = self.model.initial_state(self.env.n_envs, device="cpu")
        self._starts = torch.ones(self.env.n_envs, dtype=torch.bool)
        self._pending = None

    def stream(self) -> dict[str, Any]:
        """Where this collector's seeded episodes and action sampler stand (checkpointed by the learner)."""
        return {"episodes_done": int(self.episodes_done.max(initial=0)), "at_boundary": self.at_episode_boundary,
                "sampler_state": self.sampler.get_state().numpy().copy()}

    def continue_stream(self, seed: int, stream: dict[str, Any]) -> None:
        """Continue the episode sequence and sampler recorded by `stream` (fresh episodes start)."""
        episodes = stream.get("episodes_done") or 0
        self.reset(seed, np.full(self.env.n_envs, int(episodes), dtype=np.int64))
        if stream.get("sampler_state") is not None:
            self.sampler.set_state(torch.from_numpy(np.array(stream["sampler_state"], dtype=np.uint8)))

    def finish_resets(self) -> None:
        """Run the env's pending (deferred) episode starts now and take their first observations."""
        if self._deferred and self.env.resets_pending:
            self._obs = torch.from_numpy(np.asarray(self.env.finish_resets(), dtype=np.float32))

    @property
    def at_episode_boundary(self) -> bool:
        """True when no step is pending, i.e. every env is about to start a fresh episode."""
        return self._pending is None

    @torch.no_grad()
    def _act(self) -> _Step:
        device = self.model.hop_distance.device
        state = self._state
        logits, new_state = self.model.step(self._obs.to(device), state.to(device), self._starts.to(device))
        logits = logits.cpu()
        actions = torch.multinomial(F.softmax(logits, dim=-1).reshape(-1, logits.shape[-1]), 1,
                                    generator=self.sampler).reshape(logits.shape[:-1])
        logp = F.log_softmax(logits, dim=-1).gather(-1, actions.unsqueeze(-1)).squeeze(-1)
        value = self.model.value(new_state.h, actions.to(device)).cpu()
        return _Step(self._obs, self._starts, state, new_state.to("cpu"), actions, logp, value)

    def collect(self, version: int = 0) -> tuple[Rollout, dict[str, Any]]:
        """Run one window; return it and its episode statistics (raw rewards, finished episode returns)."""
        n, env = self.n_steps, self.env
        self.finish_resets()
        step = self._pending if self._pending is not None else self._act()
        state0 = step.prev_state
        obs, actions, logp, values, starts, rewards, dones = [], [], [], [], [], [], []
        finished, violations, diverged = [], 0, 0
        for t in range(n):
            obs.append(step.obs)
            starts.append(step.starts)
            actions.append(step.actions)
            logp.append(step.logp)
            values.append(step.value)
            next_obs, reward, done, info = env.step(step.actions.numpy())
            done = np.asarray(done, dtype=bool)
            rewards.append(np.asarray(reward, dtype=np.float32))
            dones.append(done)
            violations += int(np.sum(info["violations"]))
            diverged += int(np.sum(info["diverged"]))
            finished.extend(np.asarray(info["episode_return"])[done].tolist())
            self.episodes_done += done
            if self._deferred and done.any() and (t < n - 1 or not done.all()):
                next_obs = env.finish_resets()  # acting on now: the new episodes' first observations
            self._obs = torch.from_numpy(np.asarray(next_obs, dtype=np.float32))
            self._state = step.new_state
            self._starts = torch.from_numpy(done.copy())
            if t < n - 1 or not done.all():
                step = self._act()
        if dones[-1].all():
            self._pending = None
            bootstrap = torch.zeros_like(values[0])
        else:
            self._pending = step
            bootstrap = step.value * torch.from_numpy(~dones[-1])[:, None]
        rollout = Rollout(
            obs=torch.stack(obs).numpy(), actions=torch.stack(actions).numpy(),
            rewards=np.stack(rewards), dones=np.stack(dones), starts=torch.stack(starts).numpy(),
            values=torch.stack(values).numpy(), logp=torch.stack(logp).numpy(), bootstrap=bootstrap.numpy(),
            h0=state0.h.numpy(), c0=state0.c.numpy(), fp0=state0.fp.numpy(), version=version)
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
