"""The torch-free acting path: the compiled step agrees with the learner's torch forward for every algorithm
(logits, values, LSTM state, fingerprints, log-probabilities and sampled actions), its state_dict layout is
the model's, the sampler's state round-trips, and `powernet bench act` reports every cell."""

from __future__ import annotations

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from actor.policy import ActingPolicy
from actor.sampler import SamplerStateError, action_sampler, sample_from_probs, sampler_state, set_sampler_state
from common.algorithms import ALGORITHMS
from common.config import ModelConfig
from common.nets import build_model, weight_arrays
from common.nets.base import AgentState

OBS, ACTIONS = 9, 10


def _graph(isolated: bool) -> np.ndarray:
    """Six agents, degrees 1..3 (and one isolated agent when asked): padding and empty messages."""
    adj = np.zeros((6, 6), dtype=bool)
    for i, j in [(0, 1), (1, 2), (2, 3), (3, 4), (1, 4), (4, 5)]:
        adj[i, j] = adj[j, i] = True
    if isolated:
        adj[5, :] = adj[:, 5] = False
    return adj


def _torch_step(model, obs, starts, state, u, links=None):
    """The learner's forward for one acting step, sampling with the acting path's inverse-CDF rule."""
    with torch.no_grad():
        logits, new = model.step(torch.from_numpy(obs), state, torch.from_numpy(starts),
                                 None if links is None else torch.from_numpy(links))
        actions = sample_from_probs(F.softmax(logits, dim=-1).numpy(), u)
        a = torch.from_numpy(actions)
        logp = F.log_softmax(logits, dim=-1).gather(-1, a.unsqueeze(-1)).squeeze(-1)
        values = model.value(new.h, a, torch.from_numpy(obs))
    return logits.numpy(), new, actions, logp.numpy(), values.numpy()


@pytest.mark.parametrize("lossy", [False, True])  # lossy: random link masks (message loss, padding slots too)
@pytest.mark.parametrize("algorithm", ALGORITHMS)
def test_fast_step_agrees_with_the_torch_forward(algorithm, lossy):
    rng = np.random.default_rng(0)
    for share_weights, isolated in [(False, False), (True, True)]:
        cfg = ModelConfig(algorithm=algorithm, share_weights=share_weights)
        adj = _graph(isolated)
        torch.manual_seed(1)
        model = build_model(cfg, adj, OBS, ACTIONS)
        with torch.no_grad():  # random biases too, and larger weights: saturated and zero ReLUs both occur
            for p in model.parameters():
                p.add_(0.3 * torch.randn_like(p))
        policy = ActingPolicy.for_model(cfg, adj, OBS, ACTIONS)
        policy.load(weight_arrays(model))
        batch = 3
        fast, ref = policy.initial_state(batch), model.initial_state(batch)
        for t in range(6):
            obs = rng.standard_normal((batch, 6, OBS)).astype(np.float32)
            starts = np.array([t == 0, t == 3, False])  # a reset mid-run in one env, none in another
            u = rng.random((batch, 6))
            links = rng.random((batch, 6, model.neighbours.width)) >= 0.4 if lossy else None
            out = policy.act(obs, starts, fast, u, links)
            logits, new, actions, logp, values = _torch_step(model, obs, starts, ref, u, links)
            np.testing.assert_array_equal(out.actions, actions)
            for name, got, want in [("logits", out.logits, logits), ("values", out.values, values),
                                    ("logp", out.logp, logp), ("h", out.state.h, new.h.numpy()),
                                    ("c", out.state.c, new.c.numpy()), ("fp", out.state.fp, new.fp.numpy())]:
                np.testing.assert_allclose(got, want, rtol=0, atol=1e-5, err_msg=f"{algorithm} {name} step {t}")
            fast = out.state  # each side carries its own state, so differences would accumulate
            ref = AgentState(*(s.clone() for s in new))


@pytest.mark.parametrize("share_weights", [False, True])
def test_state_dict_layout_is_the_torch_models(share_weights):
    adj = _graph(isolated=True)
    for algorithm in ALGORITHMS:
        cfg = ModelConfig(algorithm=algorithm, share_weights=share_weights)
        model = build_model(cfg, adj, OBS, ACTIONS)
        policy = ActingPolicy.for_model(cfg, adj, OBS, ACTIONS)
        arrays = weight_arrays(model)
        assert policy.shapes == {k: v.shape for k, v in arrays.items()}, algorithm
        assert {k: v.dtype for k, v in policy.params.items()} == {k: v.dtype for k, v in arrays.items()}
        policy.load(arrays)  # the graph buffers it computed itself are the model's
        for name in ("hop_distance", "agent_id"):
            np.testing.assert_array_equal(policy.params[name], arrays[name])


def test_sampler_state_round_trips_and_refuses_a_foreign_state():
    gen = action_sampler(11)
    gen.random(7)
    saved = sampler_state(gen)
    ahead = gen.random(5)
    other = action_sampler(0)
    set_sampler_state(other, saved)
    np.testing.assert_array_equal(other.random(5), ahead)
    with pytest.raises(SamplerStateError):
        set_sampler_state(other, torch.Generator().manual_seed(1).get_state().numpy())
    # inverse CDF: u below the first probability picks action 0, u near 1 the last non-zero one
    probs = np.array([[0.25, 0.5, 0.25, 0.0]], dtype=np.float32)
    assert sample_from_probs(probs, np.array([0.1]))[0] == 0
    assert sample_from_probs(probs, np.array([0.5]))[0] == 1
    assert sample_from_probs(probs, np.array([0.9999]))[0] == 2


def test_bench_act_reports_each_path_for_every_cell():
    from launch.bench_act import run_bench

    report = run_bench(["microgrid-6"], ["ia2c", "powernet"], [1, 2], calls=2, rounds=1, echo=False)
    rows = report["results"]
    assert [(r["algorithm"], r["envs"]) for r in rows] == [("ia2c", 1), ("ia2c", 2), ("powernet", 1), ("powernet", 2)]
    for row in rows:
        assert row["fast_ms"] > 0 and row["torch_ms"] > 0
        assert ("anchor_ms" in row) == (row["algorithm"] == "powernet")  # the per-agent loop is NeurComm's
    assert set(report["summary"]["microgrid-6"]) >= {"worst_fast_per_env_ms", "target_ms", "target_met"}


def test_a_foreign_sampler_state_restarts_only_that_groups_sampler():
    # a checkpoint from before the NumPy sampler holds torch generator states: the group keeps its episode
    # counter, samples from a fresh stream of its own seed, and the trainer is told which groups did
    from actor.envs import make_vec_env
    from actor.groups import GroupedCollector, group_sampler
    from common.config import load_config

    cfg = load_config("configs/ia2c.toml")
    envs = [make_vec_env(cfg.env, 1, defer_reset=True) for _ in range(2)]
    policy = ActingPolicy.for_model(cfg.model, envs[0].adjacency, envs[0].obs_dim, envs[0].n_actions)
    grouped = GroupedCollector(envs, policy, 20, seed=3)
    ours = action_sampler(9)
    fresh = grouped.continue_streams({
        0: {"episodes_done": 2, "sampler_state": sampler_state(ours)},
        1: {"episodes_done": 2, "sampler_state": torch.Generator().manual_seed(1).get_state().numpy()}})
    assert fresh == [1]
    assert [int(c.episodes_done.max()) for c in grouped.collectors] == [2, 2]
    np.testing.assert_array_equal(sampler_state(grouped.collectors[0].sampler), sampler_state(ours))
    np.testing.assert_array_equal(sampler_state(grouped.collectors[1].sampler), sampler_state(group_sampler(3, 1)))
