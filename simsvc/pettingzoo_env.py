"""PGSim through PettingZoo's `ParallelEnv` interface, so off-the-shelf multi-agent RL tooling can drive it.

`MicrogridParallelEnv` is a thin view over `simsvc.env.MicrogridEnv`: the physics, seeding, rewards and
action validation are that class's; this module only translates between arrays indexed by DG and the
dicts keyed by agent name (`dg_1` .. `dg_N`) that PettingZoo expects, and maps the episode ends (docs/mdp.md) to
PettingZoo's two flags: reaching the fixed horizon T is a *truncation* (the task has no natural end, the
clock ran out), a diverged simulation a *termination*. All agents act and finish together, so after the
step that ends an episode `agents` is empty until the next `reset`.

Seeds: `reset(seed=s)` runs the episode of seed `s`; `reset()` without a seed runs the next one (s+1, s+2,
...; 0 first), the sequence of training episodes (docs/mdp.md#seeds).
"""

from __future__ import annotations

from typing import Any

import gymnasium
import numpy as np
from pettingzoo import ParallelEnv

from simsvc.env import OBS_DIM, MicrogridEnv
from simsvc.systems import System

AgentID = str
INFO_KEYS = ("v_pu", "f_hz", "p_w", "q_var")


class MicrogridParallelEnv(ParallelEnv[AgentID, np.ndarray, Any]):
    """One microgrid episode at a time; each DG is an agent choosing its secondary voltage set-point."""

    metadata: dict[str, Any] = {"name": "powernet_microgrid_v0", "render_modes": [], "is_parallelizable": True}

    def __init__(self, system: str | System = "microgrid-6", render_mode: str | None = None, **env_kwargs: Any):
        if render_mode is not None:
            raise ValueError(f"MicrogridParallelEnv renders nothing; render_mode must be None, got {render_mode!r}")
        self.render_mode = render_mode
        self.env = MicrogridEnv(system, **env_kwargs)
        self.continuous = env_kwargs.get("action_mode", "discrete") == "continuous"
        n = self.env.n_agents
        self.possible_agents: list[AgentID] = [f"dg_{i + 1}" for i in range(n)]
        self.agents: list[AgentID] = []
        self._index = {name: i for i, name in enumerate(self.possible_agents)}
        # One space object per agent, built once: PettingZoo requires the same object on every call.
        self.observation_spaces = {
            a: gymnasium.spaces.Box(-np.inf, np.inf, shape=(OBS_DIM,), dtype=np.float32) for a in self.possible_agents
        }
        self.action_spaces = {a: self._make_action_space() for a in self.possible_agents}
        self.state_space = gymnasium.spaces.Box(-np.inf, np.inf, shape=(n * OBS_DIM,), dtype=np.float32)
        self.neighbors = {a: [self.possible_agents[j] for j in self.env.neighbors[i]]
                          for i, a in enumerate(self.possible_agents)}
        self._next_seed = 0
        self._obs: np.ndarray | None = None

    def _make_action_space(self) -> gymnasium.spaces.Space:
        if self.continuous:
            return gymnasium.spaces.Box(-1.0, 1.0, shape=(1,), dtype=np.float32)
        return gymnasium.spaces.Discrete(self.env.n_actions)

    # -- spaces ---------------------------------------------------------------------------------------
    def observation_space(self, agent: AgentID) -> gymnasium.spaces.Space:
        """The 9 normalised measurements of one DG (docs/mdp.md#observations)."""
        return self.observation_spaces[agent]

    def action_space(self, agent: AgentID) -> gymnasium.spaces.Space:
        """Discrete(n_actions) set-point index, or Box(−1, 1, (1,)) in continuous mode."""
        return self.action_spaces[agent]

    # -- episodes -------------------------------------------------------------------------------------
    def reset(self, seed: int | None = None, options: dict | None = None
              ) -> tuple[dict[AgentID, np.ndarray], dict[AgentID, dict]]:
        """Start the episode of `seed` (the next seed when None); `options` is accepted and unused."""
        if seed is None:
            seed = self._next_seed
        if isinstance(seed, bool) or not isinstance(seed, (int, np.integer)):
            raise ValueError(f"seed must be an integer or None, got {seed!r}")
        self._next_seed = int(seed) + 1
        obs = self.env.reset(int(seed))
        self._obs = obs
        self.agents = list(self.possible_agents)
        meas = self.env.vec.grid.measure()
        infos = self._agent_infos({k: getattr(meas, k)[0] for k in INFO_KEYS})
        return self._by_agent(obs), infos

    def step(self, actions: dict[AgentID, Any]) -> tuple[dict[AgentID, np.ndarray], dict[AgentID, float],
                                                         dict[AgentID, bool], dict[AgentID, bool],
                                                         dict[AgentID, dict]]:
        """Apply every live agent's action for one control step; all agents finish on the same step."""
        if not self.agents:
            raise RuntimeError("the episode is over (or was never started): call reset() before step()")
        missing = [a for a in self.agents if a not in actions]
        unknown = [a for a in actions if a not in self._index]
        if missing or unknown:
            raise ValueError(f"step() needs one action per live agent; missing {missing}, unknown {unknown}")
        obs, rewards, done, info = self.env.step(self._action_array(actions))
        self._obs = obs
        diverged = bool(info["diverged"])
        terminated = diverged
        truncated = done and not diverged
        agents = self.agents
        out = (self._by_agent(obs),
               {a: float(rewards[self._index[a]]) for a in agents},
               dict.fromkeys(agents, terminated),
               dict.fromkeys(agents, truncated),
               self._agent_infos(info))
        if done:
            self.agents = []
        return out

    def _action_array(self, actions: dict[AgentID, Any]) -> np.ndarray:
        """Order the agents' actions by DG; the range and type checks are MicrogridEnv's."""
        values = []
        for a in self.possible_agents:
            v = np.asarray(actions[a])
            if self.continuous:
                if v.size != 1:
                    raise ValueError(f"continuous action of {a} must hold one value, got shape {v.shape}")
                v = v.reshape(())
            elif v.shape != ():
                raise ValueError(f"discrete action of {a} must be a scalar, got shape {v.shape}")
            values.append(v)
        return np.stack(values)

    def _by_agent(self, obs: np.ndarray) -> dict[AgentID, np.ndarray]:
        return {a: obs[self._index[a]] for a in self.agents}

    def _agent_infos(self, info: dict[str, Any]) -> dict[AgentID, dict]:
        return {a: {k: float(info[k][self._index[a]]) for k in INFO_KEYS} for a in self.agents}

    # -- extras ---------------------------------------------------------------------------------------
    def state(self) -> np.ndarray:
        """Global state for centralised critics: every agent's latest observation, concatenated by DG."""
        if self._obs is None:
            raise RuntimeError("call reset() before state()")
        return self._obs.reshape(-1).copy()

    def render(self) -> None:
        """Nothing to draw; traces come from `powernet sim`."""
        return None

    def close(self) -> None:
        """No resources to release."""


def parallel_env(system: str | System = "microgrid-6", **env_kwargs: Any) -> MicrogridParallelEnv:
    """PettingZoo-style factory: `parallel_env("microgrid-20", disturbance="episode")`."""
    return MicrogridParallelEnv(system, **env_kwargs)
