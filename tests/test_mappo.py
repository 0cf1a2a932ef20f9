"""MAPPO: the actor reads only its own observation, the critic the global state; advantage normalisation and
the entropy schedule (training options every algorithm can use)."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from common.config import load_config
from common.nets import build_model
from common.rollout import Rollout
from learner.update import normalised, prepare

torch.set_num_threads(1)
N, OBS, ACTIONS = 6, 4, 5


def _chain(n: int) -> np.ndarray:
    adj = np.zeros((n, n), dtype=bool)
    for i in range(n - 1):
        adj[i, i + 1] = adj[i + 1, i] = True
    return adj


def _model(algorithm: str = "mappo"):
    torch.manual_seed(0)
    cfg = load_config(f"configs/{algorithm}.toml").model
    return build_model(cfg, _chain(N), OBS, ACTIONS)


def test_the_critic_of_every_agent_sees_every_agents_observation():
    model = _model()
    obs = torch.randn(3, N, OBS)
    h = torch.zeros(3, N, model.hidden)
    actions = torch.zeros(3, N, dtype=torch.long)
    far = obs.clone()
    far[:, N - 1] += 1.0  # agent 5 is 5 hops from agent 0 on the chain
    change = (model.value(h, actions, far) - model.value(h, actions, obs)).abs()
    assert (change > 1e-6).all()  # V_0 ... V_5 all move
    # the neighbourhood critic of IA2C, by contrast, does not read observations at all
    ia2c = _model("ia2c")
    h2 = torch.randn(3, N, ia2c.hidden)
    assert torch.equal(ia2c.value(h2, actions, far), ia2c.value(h2, actions, obs))


def test_the_shared_actor_reads_only_its_own_observation():
    model = _model()
    assert model.share_weights and model.obs_fc.weight.shape[0] == 1
    obs = torch.randn(2, N, OBS)
    state = model.initial_state(2)
    starts = torch.ones(2, dtype=torch.bool)
    logits, _ = model.step(obs, state, starts)
    moved = obs.clone()
    moved[:, 1] += 1.0  # agent 0's only neighbour
    logits2, _ = model.step(moved, state, starts)
    assert torch.equal(logits[:, 0], logits2[:, 0]) and torch.equal(logits[:, 2:], logits2[:, 2:])
    assert not torch.allclose(logits[:, 1], logits2[:, 1])


def _rollout(rng: np.random.Generator, model) -> Rollout:
    t, b = 5, 2
    f32 = np.float32
    return Rollout(obs=rng.normal(size=(t, b, N, OBS)).astype(f32), actions=rng.integers(0, ACTIONS, (t, b, N)),
                   rewards=rng.normal(size=(t, b, N)).astype(f32), dones=np.zeros((t, b), bool),
                   starts=np.zeros((t, b), bool), logp=np.full((t, b, N), -1.6, f32),
                   values=rng.normal(size=(t, b, N)).astype(f32), bootstrap=np.zeros((b, N), f32),
                   h0=np.zeros((b, N, model.hidden), f32), c0=np.zeros((b, N, model.hidden), f32),
                   fp0=np.full((b, N, ACTIONS), 1 / ACTIONS, f32))


@pytest.mark.parametrize("on", [False, True])
def test_advantage_normalisation_standardises_the_batch_only_when_asked(on):
    model = _model()
    cfg = load_config("configs/mappo.toml", [f"train.advantage_norm={'true' if on else 'false'}"]).train
    rollout = _rollout(np.random.default_rng(1), model)
    batch = prepare(model, rollout, cfg)
    raw = prepare(model, rollout, load_config("configs/mappo.toml", ["train.advantage_norm=false"]).train)
    if on:
        assert float(batch.advantages.mean()) == pytest.approx(0.0, abs=1e-6)
        assert float(batch.advantages.std(unbiased=False)) == pytest.approx(1.0, abs=1e-5)
        assert torch.allclose(batch.advantages * raw.advantages.std(unbiased=False) + raw.advantages.mean(),
                              raw.advantages, atol=1e-5)
    else:
        assert torch.equal(batch.advantages, raw.advantages)
        assert torch.equal(normalised(raw.advantages, cfg), raw.advantages)
    assert torch.equal(batch.returns, raw.returns)


def test_the_linear_entropy_schedule_decays_the_bonus_to_zero_and_constant_keeps_it():
    from learner.update import scheduled

    linear = load_config(None, ['train.entropy_schedule="linear"', "train.steps=1000",
                                "train.entropy_coef=0.01"]).train
    assert scheduled(linear, 0).entropy_coef == pytest.approx(0.01)
    assert scheduled(linear, 250).entropy_coef == pytest.approx(0.0075)
    assert scheduled(linear, 1000).entropy_coef == 0.0 and scheduled(linear, 2000).entropy_coef == 0.0
    assert scheduled(linear, 250).lr == linear.lr  # nothing else moves
    constant = load_config(None, ["train.steps=1000"]).train
    assert scheduled(constant, 500) is constant
