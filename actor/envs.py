"""Build the vectorised environment a config asks for; the simulator is imported only when needed, so the
learning code runs (and is tested) on the toy env without it."""

from __future__ import annotations

from typing import Any

from common.config import EnvConfig
from common.errors import InputError


def make_vec_env(cfg: EnvConfig, num_envs: int, disturbance: str | None = None, defer_reset: bool = False) -> Any:
    """A VecMicrogridEnv (or the toy env for system "toy-graph") of `num_envs` envs, checked against cfg.
    `defer_reset` asks the microgrid env for deferred auto-resets (`finish_resets`); the toy env ignores it."""
    kwargs = {"num_envs": num_envs, "disturbance": disturbance or cfg.disturbance, "noise_std": cfg.noise_std,
              "smoothing_beta": cfg.smoothing_beta, "action_mode": "discrete"}
    if cfg.system == "toy-graph":
        from actor.toy_env import VecToyGraphEnv

        env = VecToyGraphEnv(system=cfg.system, episode_steps=cfg.episode_steps, **kwargs)
    else:
        from simsvc.env import VecMicrogridEnv

        env = VecMicrogridEnv(system=cfg.system, episode_steps=cfg.episode_steps,
                              control_dt_s=cfg.control_dt_s, defer_reset=defer_reset, **kwargs)
    if env.episode_steps != cfg.episode_steps:
        raise InputError(f"config key env.episode_steps: {cfg.system} runs {env.episode_steps}-step episodes, "
                         f"not {cfg.episode_steps}")
    dt = getattr(env, "control_dt_s", cfg.control_dt_s)
    if abs(dt - cfg.control_dt_s) > 1e-12:
        raise InputError(f"config key env.control_dt_s: {cfg.system} steps every {dt} s, not {cfg.control_dt_s}")
    return env
