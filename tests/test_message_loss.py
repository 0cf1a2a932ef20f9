"""Message loss between neighbours (the scenario key `links.loss`, docs/scenarios.md#message-loss): the key and
the `lossy` scenario, the masks the environment draws (their statistics, their own seeded stream, the same
masks on every replay), what a lost link does to each network (the fill value, the mean over received links,
no gradient), the compiled acting kernel and the torch forward on the same masks, the masks' way through the
collector, the wire and the update, the secondary controller, and short trainings (local, and sync = local).
Deterministic and fast (microgrid-6, a few hundred steps at most)."""

from __future__ import annotations

import csv
import math
from dataclasses import replace

import numpy as np
import pytest
import torch
from checkpoint_helpers import assert_same_params

from actor.policy import ActingPolicy, neighbour_table
from actor.rollout import RolloutCollector
from actor.sampler import action_sampler, sampler_state
from common import wire
from common.algorithms import ALGORITHMS
from common.config import ModelConfig, TrainConfig, load_config
from common.errors import InputError
from common.nets import build_model, weight_arrays
from common.nets.base import AgentState
from common.rollout import Rollout
from learner.update import agent_losses, prepare
from simsvc.controllers import controller_setpoints, make_controller
from simsvc.env import VecMicrogridEnv
from simsvc.links import LINK_STREAM, LinkLoss, neighbour_slots, received_adjacency
from simsvc.scenarios import load_scenario, parse_scenario
from simsvc.simulator import Measurements
from simsvc.systems import load_system

torch.set_num_threads(1)
SYSTEM = load_system("microgrid-6")
OBS, ACTIONS = 9, 10
READS_NEIGHBOURS = ("ia2c", "fprint", "commnet", "dial", "neurcomm", "powernet")
OWN_ONLY = ("consenet", "mappo")
LOSSY = load_scenario("lossy")


def _graph() -> np.ndarray:
    """Six agents, degrees 1..3 (the graph of tests/test_acting_policy.py): padding slots and several neighbours."""
    adj = np.zeros((6, 6), dtype=bool)
    for i, j in [(0, 1), (1, 2), (2, 3), (3, 4), (1, 4), (4, 5)]:
        adj[i, j] = adj[j, i] = True
    return adj


def _model(algorithm: str, adj: np.ndarray, hidden: int = 64):
    torch.manual_seed(1)
    model = build_model(ModelConfig(algorithm=algorithm, hidden=hidden), adj, OBS, ACTIONS)
    with torch.no_grad():  # random biases and larger weights, so that every input shows in the output
        for p in model.parameters():
            p.add_(0.3 * torch.randn_like(p))
    return model


def _state(model, batch: int, seed: int = 2) -> AgentState:
    g = torch.Generator().manual_seed(seed)
    n, h = model.n_agents, model.hidden
    return AgentState(torch.tanh(torch.randn(batch, n, h, generator=g)), torch.randn(batch, n, h, generator=g),
                      torch.softmax(torch.randn(batch, n, ACTIONS, generator=g), -1))


# -- the key and the scenario -------------------------------------------------------------------------------
def test_the_loss_key_is_read_and_checked() -> None:
    assert parse_scenario({"links": {"loss": 0.3}}).message_loss == 0.3
    assert parse_scenario({}).message_loss == 0.0
    for doc, message in (({"links": {"loss": 1.0}}, "links.loss: must be < 1"),
                         ({"links": {"loss": -0.1}}, "links.loss: must be >= 0"),
                         ({"links": {"loss": "often"}}, "links.loss: expected a finite number"),
                         ({"links": {"loss": True}}, "links.loss: expected a finite number"),
                         ({"links": {"rate": 0.1}}, "links.rate: unknown key"),
                         ({"links": 0.3}, "links: expected a table")):
        with pytest.raises(InputError, match="^f.toml: " + message) as info:
            parse_scenario(doc, "f.toml")
        assert "\n" not in str(info.value)


def test_lossy_is_sensoroutage_with_a_lossy_channel_and_classic_is_unchanged() -> None:
    outage = load_scenario("sensoroutage")
    assert LOSSY.message_loss == 0.3 and outage.message_loss == 0.0
    assert replace(LOSSY, name=outage.name, description=outage.description, message_loss=0.0) == outage
    classic = load_scenario("classic")
    assert classic.is_classic and classic.message_loss == 0.0
    assert not replace(classic, message_loss=0.1).is_classic


# -- the masks -----------------------------------------------------------------------------------------------
def test_the_masks_lose_the_share_p_of_real_links_each_direction_on_its_own() -> None:
    adj = load_system("microgrid-20").agent_adjacency
    index, degree = neighbour_table(adj)
    real = neighbour_slots(adj)
    np.testing.assert_array_equal(real, np.arange(index.shape[1])[None, :] < degree[:, None])
    links = LinkLoss(adj, 0.3, 4)
    for e in range(4):
        links.start(e, 100 + e)
    draws = []
    for _ in range(400):
        links.draw(np.arange(4))
        draws.append(links.mask.copy())
    masks = np.stack(draws)  # [K, E, N, D]
    assert not masks[..., ~real].any()  # padding slots never carry a message
    lost = ~masks[..., real]
    assert abs(lost.mean() - 0.3) < 0.01
    # both directions of every edge: independent draws, so P(both lost) = p^2 and no correlation
    pairs = [(i, s, j, int(np.flatnonzero(index[j, : degree[j]] == i)[0]))
             for i in range(len(adj)) for s, j in enumerate(index[i, : degree[i]]) if i < j]
    a = np.stack([~masks[:, :, i, s] for i, s, _, _ in pairs])
    b = np.stack([~masks[:, :, j, t] for _, _, j, t in pairs])
    assert abs((a & b).mean() - a.mean() * b.mean()) < 0.01 and abs((a & b).mean() - 0.09) < 0.015
    assert not np.array_equal(a, b)


def test_the_env_draws_each_episodes_masks_from_its_seeds_own_stream() -> None:
    env = VecMicrogridEnv("microgrid-6", 2, scenario=LOSSY)
    env.reset(3)
    index, degree = neighbour_table(env.adjacency)
    real = np.arange(index.shape[1])[None, :] < degree[:, None]
    assert env.links.shape == (2, 6, index.shape[1]) and env.links.dtype == np.bool_
    for e in range(2):
        rng = np.random.default_rng(np.random.SeedSequence(3 + e, spawn_key=(LINK_STREAM,)))
        np.testing.assert_array_equal(env.links[e], (rng.random(real.shape) >= 0.3) & real)
    assert VecMicrogridEnv("microgrid-6", 1, scenario="sensoroutage").links is None


def _drive(env: VecMicrogridEnv, seed: int, actions: np.ndarray) -> dict[str, list]:
    """Step env through `actions` [K, E, N] from reset(seed), finishing deferred resets as an actor does;
    record what each acting step sees and what each step does."""
    out: dict[str, list] = {"obs": [env.reset(seed)], "links": [env.links]}
    for a in actions:
        obs, rewards, done, info = env.step(a)
        if env.defer_reset and env.resets_pending:
            obs = env.finish_resets()
        for key, value in (("obs", obs), ("links", env.links), ("rewards", rewards),
                           ("loads", info["load_factor"]), ("faults", info["sensor_fault"])):
            out.setdefault(key, []).append(value)
    return out


def test_masks_replay_exactly_and_move_no_other_random_stream() -> None:
    actions = np.random.default_rng(0).integers(0, 10, size=(25, 2, 6))  # across an episode boundary (20)
    first = _drive(VecMicrogridEnv("microgrid-6", 2, scenario=LOSSY), 11, actions)
    again = _drive(VecMicrogridEnv("microgrid-6", 2, scenario=LOSSY), 11, actions)
    deferred = _drive(VecMicrogridEnv("microgrid-6", 2, scenario=LOSSY, defer_reset=True), 11, actions)
    no_loss = _drive(VecMicrogridEnv("microgrid-6", 2, scenario=replace(LOSSY, message_loss=0.0)), 11, actions)
    for key in first:
        for run in (again, deferred):
            for x, y in zip(first[key], run[key], strict=True):
                np.testing.assert_array_equal(x, y, err_msg=key)
    for key in ("obs", "rewards", "loads", "faults"):  # loads, faults and noise do not move with the masks
        for x, y in zip(first[key], no_loss[key], strict=True):
            np.testing.assert_array_equal(x, y, err_msg=key)
    assert all(m is None for m in no_loss["links"])
    masks = np.stack(first["links"])
    assert (~masks[..., neighbour_slots(SYSTEM.agent_adjacency)]).any()  # some links were lost
    assert not np.array_equal(masks[1], masks[2]) and not np.array_equal(masks[0, 0], masks[0, 1])
    # a restarted episode (env 0's second, seed 11 + 2) draws what a fresh start from its seed draws
    fresh = VecMicrogridEnv("microgrid-6", 1, scenario=LOSSY)
    fresh.reset(13)
    np.testing.assert_array_equal(first["links"][20][0], fresh.links[0])


# -- the networks ----------------------------------------------------------------------------------------------
@pytest.mark.parametrize("algorithm", READS_NEIGHBOURS)
def test_a_lost_link_reads_the_fill_value_and_leaves_the_other_agents_alone(algorithm) -> None:
    adj = _graph()
    model = _model(algorithm, adj)
    i, j, slot = 1, 2, 1  # agent 1's neighbours are 0, 2, 4: slot 1 is agent 2
    state = _state(model, 2)
    obs = torch.randn(2, 6, OBS, generator=torch.Generator().manual_seed(3))
    starts = torch.zeros(2, dtype=torch.bool)
    links = torch.ones(2, 6, model.neighbours.width, dtype=torch.bool)
    links[0, i, slot] = False
    with torch.no_grad():
        masked, masked_state = model.step(obs, state, starts, links)
        plain, plain_state = model.step(obs, state, starts)
        # by hand: neighbour j's observation, hidden state and fingerprint replaced by the fill value 0; for
        # CommNet's mean over the received links, j's h is the mean of i's other neighbours (0 and 4)
        obs0, h0, fp0 = obs.clone(), state.h.clone(), state.fp.clone()
        obs0[0, j] = 0.0
        h0[0, j] = (state.h[0, 0] + state.h[0, 4]) / 2 if algorithm == "commnet" else 0.0
        fp0[0, j] = 0.0
        by_hand, hand_state = model.step(obs0, AgentState(h0, state.c, fp0), starts)
    torch.testing.assert_close(masked[0, i], by_hand[0, i], rtol=0, atol=1e-6)
    torch.testing.assert_close(masked_state.h[0, i], hand_state.h[0, i], rtol=0, atol=1e-6)
    assert (masked[0, i] - plain[0, i]).abs().max() > 1e-3  # the loss shows
    others = torch.ones(2, 6, dtype=torch.bool)
    others[0, i] = False
    torch.testing.assert_close(masked[others], plain[others], rtol=0, atol=1e-6)
    torch.testing.assert_close(masked_state.h[others], plain_state.h[others], rtol=0, atol=1e-6)


def test_commnets_mean_is_over_the_received_links_and_zero_when_none_arrives() -> None:
    model = _model("commnet", _graph())
    h = _state(model, 1).h.transpose(0, 1)  # agent-major [N, B, H]
    links = torch.ones(6, 1, model.neighbours.width, dtype=torch.bool)
    links[1, 0, 0] = False  # agent 1 loses agent 0: the mean of agents 2 and 4
    links[0, 0, 0] = False  # agent 0 (one neighbour) loses it: nothing arrives
    mean = model.neighbours.mean_am(h, links)
    torch.testing.assert_close(mean[1, 0], (h[2, 0] + h[4, 0]) / 2, rtol=0, atol=1e-7)
    assert mean[0, 0].abs().max() == 0.0
    torch.testing.assert_close(mean[3:], model.neighbours.mean_am(h)[3:], rtol=0, atol=0)


@pytest.mark.parametrize("algorithm", OWN_ONLY)
def test_networks_without_neighbour_inputs_ignore_the_masks(algorithm) -> None:
    model = _model(algorithm, _graph())
    state, obs = _state(model, 2), torch.randn(2, 6, OBS)
    links = torch.rand(2, 6, model.neighbours.width) > 0.5
    with torch.no_grad():
        a, _ = model.step(obs, state, torch.zeros(2, dtype=torch.bool), links)
        b, _ = model.step(obs, state, torch.zeros(2, dtype=torch.bool))
    torch.testing.assert_close(a, b, rtol=0, atol=0)


@pytest.mark.parametrize("kernel", [False, True])
@pytest.mark.parametrize("algorithm", ALGORITHMS)
def test_the_unroll_with_masks_is_the_acting_steps_with_masks(algorithm, kernel) -> None:
    model = _model(algorithm, _graph(), hidden=16)
    model.window_kernel = kernel  # the compiled window unroll where the network has one (train.unroll)
    steps, batch = 4, 2
    g = torch.Generator().manual_seed(5)
    obs = torch.randn(steps, batch, 6, OBS, generator=g)
    starts = torch.zeros(steps, batch, dtype=torch.bool)
    starts[2, 1] = True
    links = torch.rand(steps, batch, 6, model.neighbours.width, generator=g) > 0.4
    state0 = _state(model, batch)
    with torch.no_grad():
        logits, _, _ = model.unroll(obs, starts, state0, links)
        state, stepped = state0, []
        for t in range(steps):
            out, state = model.step(obs[t], state, starts[t], links[t])
            stepped.append(out)
    torch.testing.assert_close(logits, torch.stack(stepped), rtol=0, atol=1e-5)


@pytest.mark.parametrize("kernel", [False, True])
@pytest.mark.parametrize("algorithm", READS_NEIGHBOURS)
def test_no_gradient_passes_a_lost_link(algorithm, kernel) -> None:
    model = _model(algorithm, _graph(), hidden=16)
    model.window_kernel = kernel
    obs = torch.randn(1, 1, 6, OBS, requires_grad=True)
    links = torch.ones(1, 1, 6, model.neighbours.width, dtype=torch.bool)
    links[0, 0, 1, 1] = False  # agent 1 loses agent 2
    logits, _, _ = model.unroll(obs, torch.zeros(1, 1, dtype=torch.bool), _state(model, 1), links)
    (grad,) = torch.autograd.grad(logits[0, 0, 1].sum(), obs)
    assert grad[0, 0, 2].abs().max() == 0.0 and grad[0, 0, 0].abs().max() > 0.0 and grad[0, 0, 4].abs().max() > 0


@pytest.mark.parametrize("kernel", [False, True])
@pytest.mark.parametrize("algorithm", ("neurcomm", "powernet"))
def test_no_gradient_passes_a_lost_message_between_steps(algorithm, kernel) -> None:
    """Over two steps the hidden-state message carries agent 2's first observation to agent 1, unless agent 1
    loses agent 2's message at the second step (and agent 2's observation at the first)."""
    model = _model(algorithm, _graph(), hidden=16)
    model.window_kernel = kernel
    obs = torch.randn(2, 1, 6, OBS, requires_grad=True)
    for lost, reaches in ((False, True), (True, False)):
        links = torch.ones(2, 1, 6, model.neighbours.width, dtype=torch.bool)
        links[0, 0, 1, 1] = False  # at step 0 agent 1 does not see agent 2's observation
        links[1, 0, 1, 1] = not lost
        logits, _, _ = model.unroll(obs, torch.zeros(2, 1, dtype=torch.bool), _state(model, 1), links)
        (grad,) = torch.autograd.grad(logits[1, 0, 1].sum(), obs)
        assert bool(grad[0, 0, 2].abs().max() > 0.0) is reaches


# -- acting, collecting, the wire and the update ----------------------------------------------------------------
def _collector(algorithm: str = "powernet", seed: int = 7) -> tuple[RolloutCollector, object]:
    env = VecMicrogridEnv("microgrid-6", 2, scenario=LOSSY)
    model = _model(algorithm, env.adjacency)
    policy = ActingPolicy.for_model(ModelConfig(algorithm=algorithm), env.adjacency, env.obs_dim, env.n_actions)
    policy.load(weight_arrays(model))
    col = RolloutCollector(env, policy, 20, action_sampler(3))
    col.reset(seed)
    return col, model


def test_the_collector_carries_each_observations_mask_and_the_update_unrolls_with_them() -> None:
    col, model = _collector()
    rollout, _ = col.collect(0)
    rollout.validate()
    assert rollout.links.shape == (20, 2, 6, model.neighbours.width) and rollout.links.dtype == np.bool_
    replay = VecMicrogridEnv("microgrid-6", 2, scenario=LOSSY)  # the same episodes, the same actions
    replay.reset(7)
    for t in range(20):
        np.testing.assert_array_equal(rollout.links[t], replay.links, err_msg=f"step {t}")
        replay.step(rollout.actions[t])
    batch = prepare(model, rollout, TrainConfig())
    assert batch.links is not None
    with torch.no_grad():
        logits, _, _ = model.unroll(batch.obs, batch.starts, batch.state0, batch.links)
        blind, _, _ = model.unroll(batch.obs, batch.starts, batch.state0)
    logp = torch.log_softmax(logits, -1).gather(-1, batch.actions.unsqueeze(-1)).squeeze(-1)
    torch.testing.assert_close(logp, batch.logp, rtol=0, atol=1e-5)  # what the actor acted with
    assert (torch.log_softmax(blind, -1) - torch.log_softmax(logits, -1)).abs().max() > 1e-3
    losses = agent_losses(model, batch, TrainConfig())
    assert torch.isfinite(losses["total"]).all()


def test_the_wire_carries_and_checks_the_masks() -> None:
    col, model = _collector("ia2c")
    rollout, _ = col.collect(0)
    width = model.neighbours.width
    spec = wire.RolloutSpec(n_agents=6, obs_dim=OBS, n_actions=ACTIONS, n_steps=20, hidden=64, fp_dim=ACTIONS,
                            links_width=width)
    arrays = {**rollout.arrays(), wire.SAMPLER_STATE: sampler_state(col.sampler)}
    msg = wire.Message(type=wire.ROLLOUT, run_id="r", sender="actor-0", seq=0, weight_version=0,
                       meta={}, arrays=arrays)
    got = wire.decode(wire.encode(msg), expected_run_id="r")
    wire.validate_rollout(got, spec)
    np.testing.assert_array_equal(got.arrays["links"], rollout.links)

    def reason(spec: wire.RolloutSpec, **changes: np.ndarray | None) -> str:
        bad = {k: v for k, v in {**arrays, **changes}.items() if v is not None}
        with pytest.raises(wire.WireError) as info:
            wire.validate_rollout(replace(msg, arrays=bad), spec)
        return info.value.reason

    assert reason(spec, links=None) == "missing_array"
    assert reason(spec, links=rollout.links.astype(np.float32)) == "bad_dtype"
    assert reason(spec, links=np.ones((20, 2, 6, width + 1), dtype=bool)) == "bad_shape"
    assert reason(replace(spec, links_width=None)) == "unexpected_array"  # a run without message loss
    with pytest.raises(InputError, match="rollout field links"):
        replace(rollout, links=rollout.links[:, :, :, 0]).validate()
    with pytest.raises(InputError, match="with and without link masks"):
        Rollout.concat([rollout, replace(rollout, links=None)])
    joined = Rollout.concat([rollout, rollout])
    assert joined.links.shape == (20, 4, 6, width)


# -- the secondary controller -----------------------------------------------------------------------------------
def test_the_secondary_controller_averages_over_the_received_links_only() -> None:
    sec = make_controller("secondary", SYSTEM, scenario=load_scenario("sharing"))
    rng = np.random.default_rng(4)
    v = 0.97 + 0.05 * rng.random((2, 6))
    v[1, 2] = np.nan  # env 1: DG 3's sensor has failed
    q = 8e4 + 2e4 * rng.random((2, 6))
    zeros = np.zeros((2, 6))
    meas = Measurements(v_pu=v, f_hz=zeros, p_w=zeros, q_var=q, delta_rad=zeros, io_dq_a=np.zeros((2, 6, 2)),
                        io_DQ_a=np.zeros((2, 6, 2)), vb_DQ_v=np.zeros((2, 6, 2)))
    vn = np.full((2, 6), 515.0)
    index, degree = neighbour_table(SYSTEM.agent_adjacency)
    all_in = np.arange(index.shape[1])[None, None, :] < degree[None, :, None]
    all_in = np.repeat(all_in, 2, axis=0)
    np.testing.assert_allclose(controller_setpoints(sec, meas, vn, all_in), sec.setpoints(meas, vn), rtol=1e-14)
    links = all_in & (rng.random(all_in.shape) >= 0.5)
    adj = received_adjacency(SYSTEM.agent_adjacency, links)
    for e in range(2):  # by hand: the controller on each env's graph of received links
        by_hand = make_controller("secondary", replace(SYSTEM, agent_adjacency=adj[e] > 0),
                                  scenario=load_scenario("sharing"))
        np.testing.assert_allclose(controller_setpoints(sec, meas, vn, links)[e],
                                   by_hand.setpoints(meas, vn)[e], rtol=1e-12)
    assert np.isfinite(controller_setpoints(sec, meas, vn, links)).all()
    for name in ("droop", "local"):  # controllers that read no neighbour take no mask
        ctrl = make_controller(name, SYSTEM)
        np.testing.assert_array_equal(controller_setpoints(ctrl, meas, vn, links), ctrl.setpoints(meas, vn))


# -- training ----------------------------------------------------------------------------------------------------
@pytest.mark.parametrize("algorithm", ["powernet", "commnet"])
def test_a_short_local_training_on_lossy_has_finite_losses(tmp_path, algorithm) -> None:
    from launch.evaluate import evaluation_env, run_episode
    from launch.local_trainer import train_local

    cfg = load_config(f"configs/{algorithm}.toml", ['env.scenario="lossy"', "train.steps=200", "train.seed=3"])
    summary = train_local(cfg, tmp_path / "run")
    assert summary["env_steps"] == 200
    rows = list(csv.DictReader((tmp_path / "run" / "metrics.csv").open()))
    assert len(rows) == 10
    for row in rows:
        for key in ("loss", "policy_loss", "value_loss", "entropy", "grad_norm"):
            assert math.isfinite(float(row[key])), (key, row[key])
    torch.manual_seed(0)
    env = evaluation_env(cfg.env)
    assert env.links is None or env.links.shape[0] == 1
    trace = run_episode(env, _model(algorithm, env.adjacency), 2000)  # greedy evaluation reads the masks too
    assert trace["rewards"].shape == (20, 6) and np.isfinite(trace["rewards"]).all()


@pytest.mark.timeout(180)
def test_sync_matches_local_with_message_loss(tmp_path, no_orphans) -> None:
    from launch.dist import run_distributed
    from launch.local_trainer import train_local

    actors, updates = 2, 2
    common = ['env.scenario="lossy"', "train.n_steps=20", f"train.steps={updates * 20 * actors}", "train.seed=5"]
    train_local(load_config("configs/powernet.toml", [*common, f"train.num_envs={actors}",
                                                      f"train.env_groups={actors}"]), tmp_path / "local")
    summary = run_distributed(load_config("configs/powernet.toml", [*common, f"dist.actors={actors}",
                                                                     "dist.envs_per_actor=1"]), tmp_path / "sync")
    assert summary["updates"] == updates and summary["dropped"] == {}
    local_ckpt, sync_ckpt = (tmp_path / name / "checkpoints" / "latest.pt" for name in ("local", "sync"))
    assert_same_params(local_ckpt, sync_ckpt)
