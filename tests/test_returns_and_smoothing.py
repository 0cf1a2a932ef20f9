"""Spatially discounted rewards, n-step returns and GAE on a hand-computed 3-agent chain; action smoothing on
a hand-computed set-point sequence."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from toy_env import VecToyGraphEnv

from learner.returns import gae, learning_rewards, nstep_returns, targets

HOPS = torch.tensor([[0, 1, 2], [1, 0, 1], [2, 1, 0]])  # chain 0 - 1 - 2
REWARDS = torch.tensor([[[1.0, 2.0, 3.0]], [[0.0, 1.0, 0.0]]])  # [T=2, B=1, N=3]
BOOT = torch.ones(1, 3)
NOT_DONE = torch.zeros(2, 1, dtype=torch.bool)


@pytest.mark.parametrize("alpha, mixed", [
    (0.0, [[1.0, 2.0, 3.0], [0.0, 1.0, 0.0]]),          # own reward only
    (1.0, [[6.0, 6.0, 6.0], [1.0, 1.0, 1.0]]),          # global sum
    (0.5, [[2.75, 4.0, 4.25], [0.5, 1.0, 0.5]]),        # 1 + .5*2 + .25*3, ...
])
def test_spatial_discount_mixes_rewards_by_hop_distance(alpha, mixed):
    out = learning_rewards(REWARDS, HOPS, alpha, reward_norm=1.0, reward_clip=None)
    assert torch.allclose(out[:, 0], torch.tensor(mixed))


def test_spatial_discount_one_gives_global_reward_and_norm_and_clip_apply_after_mixing():
    out = learning_rewards(REWARDS, HOPS, 1.0, reward_norm=2.0, reward_clip=2.5)
    assert torch.allclose(out[:, 0], torch.tensor([[2.5, 2.5, 2.5], [0.5, 0.5, 0.5]]))


def test_nstep_returns_hand_computed_for_alpha_half():
    mixed = learning_rewards(REWARDS, HOPS, 0.5, 1.0, None)
    ret = nstep_returns(mixed, NOT_DONE, BOOT, gamma=0.9)
    # t1: r + 0.9 * 1; t0: r + 0.9 * R_t1
    assert torch.allclose(ret[1, 0], torch.tensor([1.4, 1.9, 1.4]))
    assert torch.allclose(ret[0, 0], torch.tensor([2.75 + 0.9 * 1.4, 4.0 + 0.9 * 1.9, 4.25 + 0.9 * 1.4]))


def test_done_cuts_the_return_and_the_bootstrap():
    dones = torch.tensor([[True], [True]])
    ret = nstep_returns(REWARDS, dones, BOOT * 100, gamma=0.9)
    assert torch.allclose(ret, REWARDS)


def test_gae_with_lambda_one_equals_nstep_advantage_and_lambda_zero_is_td():
    values = torch.tensor([[[0.5, 0.2, 0.1]], [[0.3, 0.4, 0.6]]])
    ret, adv = targets(REWARDS, values, NOT_DONE, BOOT, 0.9, None)
    adv1, ret1 = gae(REWARDS, values, NOT_DONE, BOOT, 0.9, 1.0)
    assert torch.allclose(adv1, adv) and torch.allclose(ret1, ret)
    adv0, _ = gae(REWARDS, values, NOT_DONE, BOOT, 0.9, 0.0)
    td = REWARDS[0] + 0.9 * values[1] - values[0]
    assert torch.allclose(adv0[0], td)


def test_action_smoothing_follows_hand_computed_setpoints():
    env = VecToyGraphEnv(num_envs=1, disturbance="none", smoothing_beta=0.5)
    env.reset(0)
    applied = []
    for a in (9, 9, 0, 5):
        _, _, _, info = env.step(np.full((1, env.n_agents), a, dtype=np.int64))
        applied.append(info["vn_v"][0, 0])
    # index units from the warm-up value 4.5: 6.75, 7.875, 3.9375, 4.46875; Vn = 490 + 5 * index
    expected = [490 + 5 * x for x in (6.75, 7.875, 3.9375, 4.46875)]
    assert np.allclose(applied, expected)


def test_microgrid_env_applies_action_smoothing_to_vn():
    from simsvc.env import VecMicrogridEnv

    env = VecMicrogridEnv("microgrid-6", num_envs=1, disturbance="none", smoothing_beta=0.5)
    env.reset(0)
    vn = [480.0]  # warm-up set-point V_nom
    for a in (9, 0, 4):
        _, _, _, info = env.step(np.full((1, env.n_agents), a, dtype=np.int64))
        vn.append(0.5 * vn[-1] + 0.5 * (490 + 5 * a))
        assert np.allclose(info["vn_v"][0], vn[-1])
