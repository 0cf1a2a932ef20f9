"""Sync-mode distributed training: the learner and actor processes reproduce the single-process reference
trainer (same parameters after K updates), and bad messages on the learner's rollout socket are dropped and
counted without disturbing training. Every child process is reaped; free loopback ports only."""

from __future__ import annotations

import threading
import time

import msgpack
import pytest
import torch
import zmq
from checkpoint_helpers import assert_same_params
from wire_helpers import forged_rollout

from actor.worker import run_actor
from common.config import load_config
from launch.dist import actor_logger, build_learner, run_distributed
from launch.local_trainer import train_local
from learner.checkpoint import load_checkpoint

pytestmark = pytest.mark.timeout(120)
torch.set_num_threads(1)


@pytest.mark.parametrize("actors, envs", [(1, 2), (2, 1)])
def test_sync_matches_local_reference(tmp_path, no_orphans, actors, envs):
    updates = 3
    common = ["train.n_steps=20", f"train.steps={updates * 20 * actors * envs}", "train.seed=7"]
    local = load_config("configs/powernet.toml",
                        common + [f"train.num_envs={actors * envs}", f"train.env_groups={actors}"])
    train_local(local, tmp_path / "local")
    dist = load_config("configs/powernet.toml",
                       common + [f"dist.actors={actors}", f"dist.envs_per_actor={envs}"])
    summary = run_distributed(dist, tmp_path / "sync")
    assert summary["updates"] == updates and summary["dropped"] == {}
    local_ckpt, sync_ckpt = (tmp_path / name / "checkpoints" / "latest.pt" for name in ("local", "sync"))
    assert load_checkpoint(sync_ckpt)["updates"] == updates
    assert_same_params(local_ckpt, sync_ckpt)
    for name in ("learner", "actor-0", f"actor-{actors - 1}"):
        assert (tmp_path / "sync" / "logs" / f"{name}.log").stat().st_size > 0
    assert len((tmp_path / "sync" / "metrics.csv").read_text().splitlines()) == updates + 1


def test_bad_rollouts_are_dropped_and_counted(tmp_path):
    cfg = load_config("configs/ia2c.toml", ["train.steps=40", "dist.actors=1", "train.seed=1"])
    service = build_learner(cfg, tmp_path, "good-run", free_ports=True)
    ctx = zmq.Context()
    push = ctx.socket(zmq.PUSH)
    push.setsockopt(zmq.LINGER, 0)
    result: dict = {}
    learner = threading.Thread(target=lambda: result.update(service.run()), daemon=True)
    try:
        push.connect(service.endpoints["rollout"])
        push.send_multipart([b"\xc1garbage bytes"])
        push.send_multipart([msgpack.packb({"type": "rollout"})[:5]])  # truncated msgpack
        push.send_multipart(forged_rollout(service.spec, "another-run"))
        push.send_multipart(forged_rollout(service.spec, "good-run", nan_reward=True))
        deadline = time.monotonic() + 10
        while sum(service.dropped.values()) < 4 and time.monotonic() < deadline:
            service.poll(50)
        assert service.dropped["foreign_run"] == 1 and service.dropped["non_finite"] == 1
        assert service.dropped["not_msgpack"] == 2
        learner.start()
        code = run_actor(cfg, service.endpoints["control"], 0, "good-run", actor_logger(str(tmp_path), 0),
                         timeout_s=20)
        learner.join(30)
        assert code == 0 and not learner.is_alive()
        assert result["updates"] == 2 and result["env_steps"] == 40
        assert result["dropped"] == {"not_msgpack": 2, "foreign_run": 1, "non_finite": 1}
    finally:
        push.close()
        ctx.term()
        service.close()


def test_actor_exits_when_the_learner_is_gone(tmp_path):
    from actor.worker import LearnerGone

    ctx = zmq.Context()
    sock = ctx.socket(zmq.ROUTER)  # bound but silent: a learner that never answers
    port = sock.bind_to_random_port("tcp://127.0.0.1")
    cfg = load_config("configs/ia2c.toml", ["dist.actors=1"])
    start = time.monotonic()
    try:
        with pytest.raises(LearnerGone, match="did not answer"):
            run_actor(cfg, f"tcp://127.0.0.1:{port}", 0, "r", actor_logger(None, 0), timeout_s=2.5)
    finally:
        sock.close(0)
        ctx.term()
    assert time.monotonic() - start < 10
