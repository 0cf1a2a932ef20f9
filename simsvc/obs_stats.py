"""Fixed observation statistics of a system, from droop-only episodes (docs/pgsim.md#observation-statistics).

The agents see (measurement − mean) / std per observation channel, pooled over DGs. The numbers are
stored in each system file's [obs_norm] table; `python -m simsvc.obs_stats microgrid-6` recomputes them.
"""

from __future__ import annotations

import sys

import numpy as np

from simsvc.env import OBS_NAMES, VecMicrogridEnv
from simsvc.scenarios import Scenario, load_scenario
from simsvc.systems import System, load_system


def droop_observation_stats(system: System | str, episodes: int = 16, seed: int = 0,
                            scenario: Scenario | str | None = None) -> tuple[np.ndarray, np.ndarray]:
    """Mean and std of the 9 raw observation channels over `episodes` droop-only training episodes (of
    `scenario`, `classic` by default), true measurements (no sensor fault, noise or delay)."""
    env = VecMicrogridEnv(system, episodes, disturbance="walk", scenario=scenario)
    env.reset(seed)
    rows = [env.raw_observation(env.measure())]
    droop = np.full((episodes, env.n_agents), env.system.v_nom_v)
    for _ in range(env.episode_steps - 1):
        env.step_setpoints(droop)
        rows.append(env.raw_observation(env.measure()))
    data = np.concatenate([r.reshape(-1, len(OBS_NAMES)) for r in rows])
    std = data.std(axis=0)
    return data.mean(axis=0), np.where(std > 1e-9, std, 1.0)


def observation_scale(system: System, obs_norm: str | Scenario) -> tuple[np.ndarray, np.ndarray]:
    """The mean and std (SI, [9]) an env normalises observations with: with "system" the system file's; with a
    scenario (name, file or Scenario) the droop statistics of that scenario's own training episodes, so that
    loads far from the system's nominal ones do not put the inputs many standard deviations off
    (docs/scenarios.md#observation-scale). `classic`'s are the system file's."""
    if isinstance(obs_norm, str) and obs_norm == "system":
        return system.obs_mean, system.obs_std
    scenario = load_scenario(obs_norm)
    if scenario.is_classic:
        return system.obs_mean, system.obs_std
    return _scenario_stats(system, scenario)


_SCENARIO_STATS: dict[tuple, tuple[np.ndarray, np.ndarray]] = {}  # (system name, file, scenario) -> stats


def _scenario_stats(system: System, scenario: Scenario) -> tuple[np.ndarray, np.ndarray]:
    key = (system.name, str(system.path), scenario)
    if key not in _SCENARIO_STATS:
        mean, std = droop_observation_stats(system, scenario=scenario)
        mean.flags.writeable = std.flags.writeable = False  # shared by every env built with these statistics
        _SCENARIO_STATS[key] = (mean, std)
    return _SCENARIO_STATS[key]


def main(argv: list[str]) -> None:
    """Print an [obs_norm] table for the system named in argv[1]."""
    mean, std = droop_observation_stats(load_system(argv[1] if len(argv) > 1 else "microgrid-6"))
    fmt = lambda v: "[" + ", ".join(f"{x:.6g}" for x in v) + "]"  # noqa: E731
    print(f"[obs_norm]   # channels: {', '.join(OBS_NAMES)}\nmean = {fmt(mean)}\nstd = {fmt(std)}")


if __name__ == "__main__":
    main(sys.argv)
