"""Async-mode distributed training: V-trace against a direct numpy sum on a hand-computed 2-agent example,
its on-policy reduction to n-step returns, a short `powernet train --mode async` run whose learner is slowed
so rollouts really arrive late, and a rollout older than dist.max_policy_lag dropped as stale. Free
loopback ports only; every child process is killed and reaped."""

from __future__ import annotations

import csv
import json
import os
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import torch
import zmq
from wire_helpers import forged_rollout

from actor.envs import make_vec_env
from actor.policy import ActingPolicy
from actor.rollout import RolloutCollector
from actor.sampler import action_sampler
from common import wire
from common.config import load_config
from common.nets import build_model, weight_arrays
from launch.dist import build_learner
from learner.returns import learning_rewards, nstep_returns, vtrace
from learner.update import make_optimizer, update

pytestmark = pytest.mark.timeout(90)
torch.set_num_threads(1)
ROOT = Path(__file__).resolve().parents[1]


def _vtrace_by_sums(r, v, dones, boot, ratio, gamma, rho_bar, c_bar):
    """V-trace from its definition, no recursion: v_s = V_s + sum_{t>=s} (prod_{k=s}^{t-1} gamma_k c_k) rho_t
    delta_t with gamma_k = gamma (1 - done_k); advantage rho_s (r_s + gamma_s v_{s+1} - V_s)."""
    rho, c = np.minimum(rho_bar, ratio), np.minimum(c_bar, ratio)
    disc = gamma * (1.0 - dones.astype(np.float64))[..., None]
    v_next = np.concatenate([v[1:], boot[None]])
    delta = rho * (r + disc * v_next - v)
    vs = np.empty_like(v)
    for s in range(len(r)):
        total, weight = v[s].copy(), np.ones_like(v[s])
        for t in range(s, len(r)):
            total = total + weight * delta[t]
            weight = weight * disc[t] * c[t]
        vs[s] = total
    return vs, rho * (r + disc * np.concatenate([vs[1:], boot[None]]) - v)


def test_vtrace_matches_the_definition_on_a_small_example():
    # 2 agents one hop apart, alpha 0.5: agent i learns from r_i + 0.5 r_j; 3 steps, the episode ends at t=1
    raw = np.array([[[1.0, 0.0]], [[0.0, 2.0]], [[1.0, 1.0]]], dtype=np.float32)          # [T=3, B=1, N=2]
    values = np.array([[[0.5, 0.2]], [[0.1, 0.4]], [[0.3, 0.3]]], dtype=np.float32)
    dones = np.array([[False], [True], [False]])
    boot = np.array([[1.0, 2.0]], dtype=np.float32)
    ratio = np.array([[[1.5, 0.5]], [[0.8, 1.0]], [[2.0, 0.25]]], dtype=np.float32)     # pi / mu
    gamma = 0.9
    mixed = learning_rewards(torch.from_numpy(raw), torch.tensor([[0, 1], [1, 0]]), 0.5, 1.0, None)
    np.testing.assert_allclose(mixed.numpy()[:, 0], [[1.0, 0.5], [1.0, 2.0], [1.5, 1.5]])
    vs, adv = vtrace(mixed, torch.from_numpy(values), torch.from_numpy(dones), torch.from_numpy(boot),
                     torch.from_numpy(np.log(ratio)), gamma, rho_clip=1.0, c_clip=1.0)
    want_vs, want_adv = _vtrace_by_sums(mixed.numpy().astype(np.float64), values.astype(np.float64), dones,
                                        boot.astype(np.float64), ratio.astype(np.float64), gamma, 1.0, 1.0)
    np.testing.assert_allclose(vs.numpy(), want_vs, rtol=0, atol=1e-6)
    np.testing.assert_allclose(adv.numpy(), want_adv, rtol=0, atol=1e-6)
    # by hand, agent 0: rho = (1, .8, 1); step 2: v = .3 + (1.5 + .9*1 - .3) = 2.4; step 1 ends the
    # episode: v = .1 + .8 (1 - .1) = .82; step 0: v = .5 + (1 + .9*.1 - .5) + .9*1*(.82 - .1) = 1.738
    np.testing.assert_allclose(vs.numpy()[:, 0, 0], [1.738, 0.82, 2.4], rtol=0, atol=1e-6)
    # advantage at step 0: rho (r + gamma v_1 - V_0) = 1 + .9*.82 - .5 = 1.238
    assert adv[0, 0, 0].item() == pytest.approx(1.238, abs=1e-6)


def test_vtrace_on_policy_gives_the_lambda_one_nstep_returns():
    gen = torch.Generator().manual_seed(3)
    rewards, values = torch.randn(6, 3, 4, generator=gen), torch.randn(6, 3, 4, generator=gen)
    dones = torch.rand(6, 3, generator=gen) < 0.3
    boot = torch.randn(3, 4, generator=gen) * (~dones[-1]).unsqueeze(-1)
    vs, adv = vtrace(rewards, values, dones, boot, torch.zeros_like(rewards), 0.95)
    returns = nstep_returns(rewards, dones, boot, 0.95)
    torch.testing.assert_close(vs, returns, rtol=0, atol=1e-5)
    torch.testing.assert_close(adv, returns - values, rtol=0, atol=1e-5)


def test_async_update_with_zero_lag_is_the_sync_update_up_to_rounding():
    cfg = load_config("configs/powernet.toml", ["train.n_steps=20", "train.seed=5"])
    env = make_vec_env(cfg.env, 2)
    models = []
    for _ in range(2):
        torch.manual_seed(5)
        models.append(build_model(cfg.model, env.adjacency, env.obs_dim, env.n_actions))
    policy = ActingPolicy.for_model(cfg.model, env.adjacency, env.obs_dim, env.n_actions)
    policy.load(weight_arrays(models[0]))
    collector = RolloutCollector(env, policy, 20, action_sampler(5))
    collector.reset(5)
    rollout, _ = collector.collect()
    stats = [update(m, make_optimizer(m, cfg.train), rollout, cfg.train, off_policy=flag)
             for m, flag in zip(models, (False, True), strict=True)]
    assert stats[1]["rho_mean"] == pytest.approx(1.0, abs=1e-5)
    assert stats[1]["mean_return_target"] == pytest.approx(stats[0]["mean_return_target"], abs=1e-5)
    for (name, a), b in zip(models[0].state_dict().items(), models[1].state_dict().values(), strict=True):
        torch.testing.assert_close(b, a, rtol=0, atol=1e-5, msg=name)


def test_async_run_accepts_lagged_rollouts_within_the_bound(tmp_path):
    out = tmp_path / "async"
    cmd = [sys.executable, "-m", "launch", "train", "-c", "configs/powernet.toml", "--mode", "async",
           "--actors", "2", "--steps", "160", "--out", str(out), "--progress", "off",
           "--set", "train.n_steps=20", "--set", "train.seed=3", "--set", "dist.max_policy_lag=1",
           "--set", "dist.learner_delay_s=0.4"]
    proc = subprocess.Popen(cmd, cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                            start_new_session=True, env={**os.environ, "OMP_NUM_THREADS": "1"})
    try:
        output, _ = proc.communicate(timeout=75)
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()
    assert proc.returncode == 0, output[-3000:]
    with (out / "metrics.csv").open() as fh:
        rows = list(csv.DictReader(fh))
    assert {"policy_lag", "policy_lag_max"} <= set(rows[0])
    assert len(rows) == 4  # 160 steps / (2 rollouts x 1 env x 20 steps)
    for row in rows:
        assert all(np.isfinite(float(row[k])) for k in ("loss", "policy_loss", "value_loss", "entropy"))
        assert 0 <= float(row["policy_lag"]) <= int(row["policy_lag_max"]) <= 1
        # the V-trace diagnostics are recorded; PPO's stay empty
        assert 0 < float(row["rho_mean"]) <= 1.0 and 0 <= float(row["rho_clipped"]) <= 1.0
        assert row["clip_fraction"] == row["approx_kl"] == ""
    # the slow learner lets rollouts of the previous version arrive after an update: lag 1 happens, and
    # nothing beyond the bound ever enters an update
    stats = json.loads((out / "learner_stats.json").read_text())
    assert stats["updates"] == 4 and stats["env_steps"] == 160
    assert stats["policy_lag_counts"].get("1", 0) >= 1, stats
    assert set(stats["policy_lag_counts"]) <= {"0", "1"}
    assert max(int(r["policy_lag_max"]) for r in rows) == 1
    # actors moved on by the PUB broadcast (without it, every rollout would go stale and the run stall)
    logs = [(out / "logs" / f"actor-{k}.log").read_text() for k in range(2)]
    applied = [int(m) for text in logs for m in re.findall(r"(\d+) weight versions applied from the broadcast", text)]
    assert applied and max(applied) >= 1, logs


def test_rollout_older_than_max_policy_lag_is_dropped_as_stale(tmp_path):
    cfg = load_config("configs/ia2c.toml", ["dist.mode=async", "dist.actors=1", "dist.max_policy_lag=2"])
    service = build_learner(cfg, tmp_path, "async-run", free_ports=True)
    ctx = zmq.Context()
    push = ctx.socket(zmq.PUSH)
    push.setsockopt(zmq.LINGER, 0)
    try:
        service.core.updates = 5  # as if five updates had happened
        push.connect(service.endpoints["rollout"])
        for seq, version in enumerate((2, 3, 6)):  # lag 3 (too old), lag 2 (the oldest allowed), lag -1 (future)
            push.send_multipart(forged_rollout(service.spec, "async-run", version, seq=seq))
        deadline = time.monotonic() + 10
        while (sum(service.dropped.values()) < 2 or not service.intake.queue) and time.monotonic() < deadline:
            service.poll(50)
        assert service.dropped == {"stale": 1, "future_version": 1}
        assert [r.version for r, _ in service.intake.queue] == [3]
        service.core.updates = 6  # one more update: the queued rollout ages to lag 3 before it is used
        assert service.intake.next_batch(service.version) is None
        assert service.dropped["stale"] == 2 and not service.intake.queue
    finally:
        push.close()
        ctx.term()
        service.close()


def test_actor_fetches_weights_when_the_broadcast_fell_behind(tmp_path):
    """A subscription that missed every broadcast (the slow-joiner case): the heartbeat replies announce the
    learner's version, and once it is more than max_policy_lag ahead the actor fetches the weights."""
    from actor.worker import StopRequested, _AsyncLink, _Control
    from launch.dist import actor_logger

    cfg = load_config("configs/ia2c.toml", ["dist.mode=async", "dist.actors=1", "dist.max_policy_lag=2"])
    service = build_learner(cfg, tmp_path, "async-run", free_ports=True)
    env = make_vec_env(cfg.env, 1)
    policy = ActingPolicy.for_model(cfg.model, env.adjacency, env.obs_dim, env.n_actions)
    ctx = zmq.Context()
    log = actor_logger(str(tmp_path), 0)
    control = _Control(ctx, service.endpoints["control"], "async-run", "actor-0", 10.0, log, 1 << 24)
    link = _AsyncLink(ctx, control, service.endpoints["weights"], 2, log, 1 << 24)
    try:
        service.core.updates = 4  # four updates whose broadcasts this actor never saw
        version, deadline = 0, time.monotonic() + 10
        while version == 0 and time.monotonic() < deadline:
            version = link.refresh(policy, version)
            service.poll(20)
            link.next_beat = 0.0  # heartbeat on every call, to keep the test short
        assert version == 4 and link.fetched == 1 and link.from_broadcast == 0
        service.stop_requested = True
        service.stop_actors(grace_s=0.2)
        with pytest.raises(StopRequested):
            for _ in range(100):
                link.refresh(policy, version)
                time.sleep(0.01)
    finally:
        link.close()
        control.close()
        ctx.term()
        service.close()


def test_credits_on_a_live_learner(tmp_path, monkeypatch):
    """Async flow control through the real control socket: a credit request from a connection holding no
    actor id is dropped; actor 0's first is granted at the current version; its next only once its rollout
    has come in and been taken into an update (one window outstanding per actor)."""
    monkeypatch.setattr("learner.credits.LAPSE_S", 1e9)  # a rollout that has not come in is never given up on
    cfg = load_config("configs/ia2c.toml", ["dist.mode=async", "dist.actors=1"])
    service = build_learner(cfg, tmp_path, "credit-run", free_ports=True)
    ctx = zmq.Context()
    stranger, dealer, push = ctx.socket(zmq.DEALER), ctx.socket(zmq.DEALER), ctx.socket(zmq.PUSH)

    def send(sock, kind, meta):
        sock.send_multipart(wire.encode(wire.Message(type=kind, run_id="credit-run", sender="actor-0", meta=meta)))

    def reply(sock, kind, wait_s=10.0):
        deadline = time.monotonic() + wait_s
        while time.monotonic() < deadline:
            service.poll(20)
            while sock.poll(0):
                msg = wire.decode(wire.recv(sock), expected_run_id="credit-run")
                if msg.type == kind:
                    return msg
        return None

    try:
        for sock in (stranger, dealer, push):
            sock.setsockopt(zmq.LINGER, 0)
        stranger.connect(service.endpoints["control"])
        dealer.connect(service.endpoints["control"])
        push.connect(service.endpoints["rollout"])
        send(stranger, wire.CREDIT, {"after": -1})
        deadline = time.monotonic() + 10
        while not service.dropped and time.monotonic() < deadline:
            service.poll(20)
        assert service.dropped == {"bad_actor": 1}
        send(dealer, wire.HELLO, {"actor": 0, "envs": 1})
        assert reply(dealer, wire.HELLO) is not None
        send(dealer, wire.CREDIT, {"after": -1})
        assert reply(dealer, wire.CREDIT).weight_version == 0
        send(dealer, wire.CREDIT, {"after": 0})       # the rollout it follows has not come in: no grant yet
        assert reply(dealer, wire.CREDIT, 1.0) is None
        push.send_multipart(forged_rollout(service.spec, "credit-run", 0, seq=0))
        deadline = time.monotonic() + 10
        while not service.intake.queue and time.monotonic() < deadline:
            service.poll(20)
        assert reply(dealer, wire.CREDIT, 1.0) is None  # queued: its window is not used yet
        with service.core:
            service._step()                            # the update takes it; the next window is granted
        assert service.version == 1
        assert reply(dealer, wire.CREDIT).weight_version == 0  # granted as the update began
        assert not service.dropped.keys() - {"bad_actor"} and stranger.poll(0) == 0
    finally:
        for sock in (stranger, dealer, push):
            sock.close()
        ctx.term()
        service.close()
