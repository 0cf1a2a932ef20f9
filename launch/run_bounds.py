"""The value ranges a run's rollouts must respect, derived from what the run trains on: the reward
definition (`simsvc.reward`: `voltage_reward` and the divergence penalty), the system's agents and episode length,
and the discount. The learner service enforces them on every rollout (`wire.validate_rollout`: a finite but
absurd value is dropped as "out_of_range" instead of reaching the update); `common` and `learner` never
import the simulator, so they are computed here and handed over.

- rewards: the reward's range over every voltage (and the divergence penalty), plus 1 % of its span (the
  float32 rounding of 0.05 lies a hair above 0.05);
- values and bootstrap: the critic estimates discounted sums of learning rewards (spatially mixed over at
  most N agents, divided by train.reward_norm, clipped by train.reward_clip) over at most min(episode
  length, 1 / (1 - gamma)) steps; it may overshoot what it learns, so the bound is `MARGIN` times that;
- the LSTM cell state c0 grows by at most 1 per step since the episode's start, so |c0| <= episode length;
- observations: the environment clips them to `OBS_ABS_MAX` (`VecMicrogridEnv._observe`);
- one episode's return (rollout meta) sums the rewards of N agents over the episode.
- and, not a range: whether the scenario loses messages between neighbours, so that every rollout must carry
  its link masks (`links`, docs/scenarios.md#message-loss).

Environments registered by tests (no system file) get no derived ranges; the generic ones of
`common.wire_schema.default_bounds` still apply.
"""

from __future__ import annotations

from common import wire
from common.config import Config, reward_clip
from common.errors import InputError

MARGIN = 10.0
OBS_ABS_MAX = 1e6


def reward_range(scenario: str = "classic") -> tuple[float, float]:
    """The lowest and highest per-agent reward one control step can give, from the reward's definition and the
    scenario's extra terms (`simsvc.reward.reward_bounds`)."""
    from simsvc.reward import reward_bounds
    from simsvc.scenarios import load_scenario

    sc = load_scenario(scenario)
    return reward_bounds(sc.sharing_weight, sc.loadbus_weight)


def run_bounds(cfg: Config) -> wire.RunBounds | None:
    """The ranges of a run of `cfg`, or None for an environment without a system file."""
    from simsvc.systems import load_system

    try:
        system = load_system(cfg.env.system)
    except InputError:
        return None
    if system.episode_steps is None:
        return None
    n, steps = system.n_dg, int(system.episode_steps)
    low, high = reward_range(cfg.env.scenario)
    span = high - low
    worst = max(abs(low), abs(high))
    tc = cfg.train
    per_step = n * worst / tc.reward_norm
    clip = reward_clip(tc)
    if clip is not None:
        per_step = min(per_step, clip)
    horizon = steps if tc.gamma >= 1.0 else min(steps, 1.0 / (1.0 - tc.gamma))
    value = MARGIN * per_step * horizon + 1.0
    arrays = {"rewards": (low - 0.01 * span, high + 0.01 * span), "values": (-value, value),
              "bootstrap": (-value, value), "c0": (-(steps + 1.0), steps + 1.0),
              "obs": (-OBS_ABS_MAX, OBS_ABS_MAX)}
    from simsvc.scenarios import load_scenario

    return wire.RunBounds(arrays=arrays, max_episode_return=1.01 * n * steps * worst + 1.0,
                          message_loss=load_scenario(cfg.env.scenario).message_loss > 0)
