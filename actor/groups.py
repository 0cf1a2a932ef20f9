"""How a batch of environments is split into groups, each with its own seed stream and action sampler.

Sync mode must reproduce the single-process trainer exactly, yet each actor process owns its envs and its
sampling RNG. So both sides use the same rule: group (= actor) k of a run seeded S steps E envs whose
episodes are seeded ``group_seed(S, k) + e + E * episode`` and samples actions from a torch generator seeded
``group_seed(S, k) + 1``; the learner's batch is the groups' windows concatenated in order of k. Group 0 is
exactly the old one-group trainer (seed S, sampler S + 1), so ``train.env_groups = 1`` changes nothing.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import torch

from actor.rollout import RolloutCollector
from common.errors import InputError
from common.nets.base import GraphActorCritic
from common.rollout import Rollout

SEED_STRIDE = 1_000_000  # seeds of group k start here; a group may run 1e6 / E episodes before streams meet


def group_seed(seed: int, k: int) -> int:
    """The env seed base of group (actor) k."""
    return int(seed) + SEED_STRIDE * int(k)


def group_sampler(seed: int, k: int) -> torch.Generator:
    """The action-sampling generator of group k (group 0 equals `seed_everything(seed)`'s sampler)."""
    return torch.Generator().manual_seed(group_seed(seed, k) + 1)


def envs_per_group(num_envs: int, groups: int) -> int:
    """E for `groups` equal groups of `num_envs` envs, or an InputError when they do not divide."""
    if groups < 1 or num_envs % groups:
        raise InputError(f"config key train.env_groups: {groups} groups cannot split train.num_envs={num_envs} "
                         "evenly")
    return num_envs // groups


class GroupedCollector:
    """Several RolloutCollectors stepped one after another; `collect` joins their windows along the env axis.

    It behaves like one RolloutCollector over all envs, but with per-group seeding (see the module doc).
    Resume restores env episodes; the extra groups' sampler streams restart from their seeds.
    """

    def __init__(self, envs: list[Any], model: GraphActorCritic, n_steps: int, seed: int) -> None:
        self.collectors = [RolloutCollector(env, model, n_steps, group_sampler(seed, k))
                           for k, env in enumerate(envs)]
        self.seed_base = int(seed)

    def reset(self, seed: int, episodes_done: np.ndarray | None = None) -> None:
        """Reset every group with its own seed base (and, on resume, its slice of `episodes_done`)."""
        self.seed_base = int(seed)
        start = 0
        for k, col in enumerate(self.collectors):
            n = col.env.n_envs
            part = None if episodes_done is None else np.asarray(episodes_done)[start:start + n]
            col.reset(group_seed(seed, k), part)
            start += n

    @property
    def episodes_done(self) -> np.ndarray:
        return np.concatenate([c.episodes_done for c in self.collectors])

    def finish_resets(self) -> None:
        """Run every group's deferred episode starts (see RolloutCollector.finish_resets)."""
        for c in self.collectors:
            c.finish_resets()

    @property
    def at_episode_boundary(self) -> bool:
        return all(c.at_episode_boundary for c in self.collectors)

    def collect(self, version: int = 0) -> tuple[Rollout, dict[str, Any]]:
        """One window of every group, joined in group order, with the groups' statistics merged."""
        parts = [c.collect(version) for c in self.collectors]
        return Rollout.concat([r for r, _ in parts]), merge_window_stats([s for _, s in parts],
                                                                         [r.rewards for r, _ in parts])


def merge_window_stats(stats: list[dict[str, Any]], rewards: list[np.ndarray]) -> dict[str, Any]:
    """Statistics of several windows as if they were one (rewards weighted by their size)."""
    sizes = [r.size for r in rewards]
    total = sum(sizes)
    return {"env_steps": sum(s["env_steps"] for s in stats),
            "reward_mean": float(sum(float(r.sum(dtype=np.float64)) for r in rewards) / total),
            "episode_returns": [x for s in stats for x in s["episode_returns"]],
            "violation_rate": sum(s["violation_rate"] * n for s, n in zip(stats, sizes, strict=True)) / total,
            "diverged": sum(s["diverged"] for s in stats)}
