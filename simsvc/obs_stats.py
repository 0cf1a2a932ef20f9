"""Fixed observation statistics of a system, from droop-only episodes (docs/pgsim.md#observation-statistics).

The agents see (measurement − mean) / std per observation channel, pooled over DGs. The numbers are
stored in each system file's [obs_norm] table; `python -m simsvc.obs_stats microgrid-6` recomputes them.
"""

from __future__ import annotations

import sys

import numpy as np

from simsvc.env import OBS_NAMES, VecMicrogridEnv
from simsvc.systems import System, load_system


def droop_observation_stats(system: System | str, episodes: int = 16, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """Mean and std of the 9 raw observation channels over `episodes` droop-only training episodes."""
    env = VecMicrogridEnv(system, episodes, disturbance="walk")
    env.reset(seed)
    rows = [env.raw_observation(env.measure())]
    droop = np.full((episodes, env.n_agents), env.system.v_nom_v)
    for _ in range(env.episode_steps - 1):
        env.step_setpoints(droop)
        rows.append(env.raw_observation(env.measure()))
    data = np.concatenate([r.reshape(-1, len(OBS_NAMES)) for r in rows])
    std = data.std(axis=0)
    return data.mean(axis=0), np.where(std > 1e-9, std, 1.0)


def main(argv: list[str]) -> None:
    """Print an [obs_norm] table for the system named in argv[1]."""
    mean, std = droop_observation_stats(load_system(argv[1] if len(argv) > 1 else "microgrid-6"))
    fmt = lambda v: "[" + ", ".join(f"{x:.6g}" for x in v) + "]"  # noqa: E731
    print(f"[obs_norm]   # channels: {', '.join(OBS_NAMES)}\nmean = {fmt(mean)}\nstd = {fmt(std)}")


if __name__ == "__main__":
    main(sys.argv)
