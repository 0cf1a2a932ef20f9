"""How a batch of environments is split into groups, each with its own seed stream and action sampler.

Sync mode must reproduce the single-process trainer exactly, yet each actor process owns its envs and its
sampling RNG. So both sides use the same rule: group (= actor) k of a run seeded S steps E envs whose
episodes are seeded ``group_seed(S, k) + e + E * episode`` and samples actions from a NumPy PCG64 stream
seeded ``group_seed(S, k) + 1`` (`actor.sampler`); the learner's batch is the groups' windows concatenated
in order of k. Group 0 is the one-group trainer (seed S, sampler S + 1), so ``train.env_groups = 1``
changes nothing.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from actor.policy import ActingPolicy
from actor.rollout import RolloutCollector, window_meta
from actor.sampler import SamplerStateError, action_sampler
from common.errors import InputError
from common.rollout import Rollout

SEED_STRIDE = 1_000_000  # seeds of group k start here; a group may run 1e6 / E episodes before streams meet


def group_seed(seed: int, k: int) -> int:
    """The env seed base of group (actor) k."""
    return int(seed) + SEED_STRIDE * int(k)


def group_sampler(seed: int, k: int) -> np.random.Generator:
    """The action-sampling stream of group (actor) k."""
    return action_sampler(group_seed(seed, k) + 1)


def envs_per_group(num_envs: int, groups: int) -> int:
    """E for `groups` equal groups of `num_envs` envs, or an InputError when they do not divide."""
    if groups < 1 or num_envs % groups:
        raise InputError(f"config key train.env_groups: {groups} groups cannot split train.num_envs={num_envs} "
                         "evenly")
    return num_envs // groups


class GroupedCollector:
    """Several RolloutCollectors stepped one after another; `collect` joins their windows along the env axis.

    It behaves like sync mode's actors together (one group per actor, seeded as in the module doc) inside
    one process: the local trainer's collector, with one group unless train.env_groups says otherwise. The
    groups share one acting policy; load the newest weights into it before each `collect`.
    """

    def __init__(self, envs: list[Any], policy: ActingPolicy, n_steps: int, seed: int) -> None:
        self.policy = policy
        self.collectors = [RolloutCollector(env, policy, n_steps, group_sampler(seed, k))
                           for k, env in enumerate(envs)]
        self.seed = int(seed)

    def reset(self) -> None:
        """Start every group's episode sequence from its own seed base."""
        for k, col in enumerate(self.collectors):
            col.reset(group_seed(self.seed, k))

    def streams(self) -> dict[int, dict[str, Any]]:
        """Each group's position in its seed and sampler streams (see RolloutCollector.stream)."""
        return {k: col.stream() for k, col in enumerate(self.collectors)}

    def continue_streams(self, streams: dict[int, dict[str, Any]]) -> list[int]:
        """Continue every group from a checkpoint's streams (a group without one starts afresh); return the
        groups whose sampler state was not this sampler's (an older checkpoint), which restart their sampler."""
        fresh = []
        for k, col in enumerate(self.collectors):
            if k not in streams:
                col.reset(group_seed(self.seed, k))
                continue
            try:
                col.continue_stream(group_seed(self.seed, k), streams[k])
            except SamplerStateError:
                col.continue_stream(group_seed(self.seed, k), {**streams[k], "sampler_state": None})
                fresh.append(k)
        return fresh

    def collect(self, version: int = 0) -> tuple[Rollout, list[dict[str, Any]]]:
        """One window of every group, joined in group order, with each group's window summary."""
        parts = [c.collect(version) for c in self.collectors]
        return Rollout.concat([r for r, _ in parts]), [window_meta(s, r.rewards.size) for r, s in parts]
