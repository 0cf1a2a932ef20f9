"""Build the vectorised environment a config asks for, or only learn its agent graph and sizes.

`env.system` names a shipped system (`simsvc/systems/NAME.toml`) or a path to a system TOML file; either
way the file is the one registry of systems (`simsvc.systems.resolve_system_path`). Tests may add
environments of their own with `register_env` (the toy graph env lives with the tests); production code
registers none. The simulator itself is imported only when an env is built: `agent_spec` reads the
system file alone, which is all the learner needs to build its networks.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import replace
from typing import Any, NamedTuple

import numpy as np

from common.config import EnvConfig


class AgentSpec(NamedTuple):
    """What the networks need to know of an environment: the agent graph and the per-agent sizes."""

    adjacency: np.ndarray  # [N, N] bool, symmetric
    obs_dim: int
    n_actions: int

    @property
    def n_agents(self) -> int:
        return int(self.adjacency.shape[0])


class RegisteredEnv(NamedTuple):
    make: Callable[..., Any]  # make(num_envs, disturbance=, noise_std=, smoothing_beta=, defer_reset=)
    spec: Callable[[], AgentSpec]


_REGISTERED: dict[str, RegisteredEnv] = {}


def register_env(name: str, make: Callable[..., Any], spec: Callable[[], AgentSpec]) -> None:
    """Make `env.system = name` build `make(...)` instead of a PGSim system (for tests)."""
    _REGISTERED[name] = RegisteredEnv(make, spec)


def agent_spec(cfg: EnvConfig) -> AgentSpec:
    """The agent graph and sizes of cfg.system, read from its system file without building a simulator.
    An unknown system raises InputError naming the choices."""
    if cfg.system in _REGISTERED:
        return _REGISTERED[cfg.system].spec()
    from simsvc.systems import OBS_NAMES, load_system

    system = load_system(cfg.system)
    return AgentSpec(system.agent_adjacency.copy(), len(OBS_NAMES), system.n_actions)


def make_vec_env(cfg: EnvConfig, num_envs: int, disturbance: str | None = None, defer_reset: bool = False, *,
                 trace_dt_s: float | None = None, auto_reset: bool = True) -> Any:
    """A VecMicrogridEnv of `num_envs` envs of cfg.system (episode length and control interval from its
    system file). `defer_reset` asks for deferred auto-resets (`finish_resets`); `trace_dt_s` records fine
    traces (s between samples) and `auto_reset=False` keeps a finished episode, trace included, until reset."""
    kwargs = {"disturbance": disturbance or cfg.disturbance, "noise_std": cfg.noise_std,
              "smoothing_beta": cfg.smoothing_beta, "defer_reset": defer_reset}
    if cfg.system in _REGISTERED:
        if trace_dt_s is not None or not auto_reset or cfg.obs_norm != "system":
            raise ValueError(f"the registered env {cfg.system!r} records no traces, always resets and has no "
                             "observation statistics")
        return _REGISTERED[cfg.system].make(num_envs, **kwargs)
    from simsvc.env import VecMicrogridEnv

    return VecMicrogridEnv(system=cfg.system, num_envs=num_envs, action_mode="discrete", scenario=cfg.scenario,
                           trace_dt_s=trace_dt_s, auto_reset=auto_reset, obs_norm=observation_scale_of(cfg), **kwargs)


def observation_scale_of(cfg: EnvConfig) -> str:
    """VecMicrogridEnv's `obs_norm` for a config: "system", or the scenario whose droop statistics scale the
    observations (env.obs_norm_scenario, else env.scenario)."""
    return "system" if cfg.obs_norm == "system" else (cfg.obs_norm_scenario or cfg.scenario)


def on_scenario(cfg: EnvConfig, scenario: str) -> EnvConfig:
    """cfg evaluated on another scenario (generalisation): the episodes and reward of `scenario`, the
    observation scale the policy was trained with."""
    if cfg.obs_norm == "system":
        return replace(cfg, scenario=scenario)
    return replace(cfg, scenario=scenario, obs_norm_scenario=cfg.obs_norm_scenario or cfg.scenario)
