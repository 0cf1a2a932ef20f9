"""Robustness of the distributed system: resume of a sync run, kill -9 of an actor (restarted, the run
finishes exactly as if nothing happened) and of the learner (actors give up on their own, the supervisor
fails), and bad input on a live learner's sockets. Free loopback ports, timeouts, every child killed in a
finally and checked gone by its recorded PID."""

from __future__ import annotations

import csv
import json
import os
import re
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import numpy as np
import pytest
import torch
import zmq
from checkpoint_helpers import assert_same_params
from proc_helpers import alive, kill_all, wait_gone
from wire_helpers import forged_rollout
from zmq.utils.monitor import recv_monitor_message

from actor.worker import run_actor
from common import wire
from common.config import load_config
from launch.dist import actor_logger, build_learner, run_distributed
from launch.local_trainer import train_local
from learner.checkpoint import load_checkpoint

pytestmark = pytest.mark.timeout(180)
torch.set_num_threads(1)

PER_UPDATE = 40  # 2 actors x 1 env x n_steps 20
BASE = ["train.n_steps=20", "train.seed=5", "dist.actors=2", "dist.envs_per_actor=1"]


def _cfg(updates: int, *extra: str):
    return load_config("configs/powernet.toml", BASE + [f"train.steps={updates * PER_UPDATE}", *extra])


def _rows(run: Path) -> list[dict[str, str]]:
    path = run / "metrics.csv"
    return list(csv.DictReader(path.open())) if path.exists() else []


def _wait_for(cond, timeout_s: float, what: str) -> None:
    deadline = time.monotonic() + timeout_s
    while not cond():
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        time.sleep(0.05)


def _actor_pids(run: Path) -> dict[int, list[int]]:
    """Actor id -> every pid the supervisor started for it, from its log."""
    found: dict[int, list[int]] = {}
    text = (run / "logs" / "supervisor.log").read_text() if (run / "logs" / "supervisor.log").exists() else ""
    for k, pid in re.findall(r"actor (\d+) started \(pid (\d+)\)", text):
        found.setdefault(int(k), []).append(int(pid))
    return found


def test_sync_resume_continues_from_the_checkpoint_and_matches_an_uninterrupted_run(tmp_path, no_orphans):
    k = 3
    run_distributed(_cfg(k), tmp_path / "split")
    ckpt = load_checkpoint(tmp_path / "split" / "checkpoints" / "latest.pt")
    assert ckpt["updates"] == k and sorted(ckpt["streams"]) == [0, 1]
    assert all(a["episodes_done"] == k and a["sampler_state"] is not None for a in ckpt["streams"].values())
    summary = run_distributed(_cfg(2 * k), tmp_path / "split", resume=True)
    assert summary["updates"] == 2 * k and summary["env_steps"] == 2 * k * PER_UPDATE
    rows = _rows(tmp_path / "split")
    assert [int(r["update"]) for r in rows] == list(range(1, 2 * k + 1))  # continued, not restarted at 0
    assert [int(r["env_steps"]) for r in rows] == [PER_UPDATE * u for u in range(1, 2 * k + 1)]
    assert "resumed at update 3" in (tmp_path / "split" / "logs" / "learner.log").read_text()
    run_distributed(_cfg(2 * k), tmp_path / "full")
    assert_same_params(tmp_path / "full" / "checkpoints" / "latest.pt",
                        tmp_path / "split" / "checkpoints" / "latest.pt")
    # the learner writes TensorBoard events under the local trainer's names
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    events = EventAccumulator(str(tmp_path / "full" / "tb"))
    events.Reload()
    assert {"losses/loss", "charts/reward_mean", "system/policy_lag"} <= set(events.Tags()["scalars"])
    assert [e.step for e in events.Scalars("losses/loss")] == [PER_UPDATE * u for u in range(1, 2 * k + 1)]


def test_resume_needs_a_checkpoint(tmp_path):
    from common.errors import InputError

    with pytest.raises(InputError, match="no checkpoint"):
        run_distributed(_cfg(1), tmp_path / "empty", resume=True)


def test_kill_9_of_an_actor_is_survived_and_the_run_is_unchanged(tmp_path, no_orphans):
    updates = 100
    run = tmp_path / "run"
    result: dict = {}
    errors: list[BaseException] = []

    def supervise() -> None:
        try:
            result.update(run_distributed(_cfg(updates, "train.log_every=1"), run, actor_timeout_s=20))
        except BaseException as exc:  # noqa: BLE001 - reported by the test thread
            errors.append(exc)

    thread = threading.Thread(target=supervise, daemon=True)
    thread.start()
    try:
        _wait_for(lambda: len(_rows(run)) >= 3 or not thread.is_alive(), 90, "three updates")
        assert thread.is_alive() and len(_rows(run)) < updates, "the run ended before the kill"
        victim = _actor_pids(run)[1][0]
        os.kill(victim, signal.SIGKILL)
        thread.join(120)
        assert not thread.is_alive() and not errors, errors
    finally:
        if thread.is_alive():  # the supervisor's finally stops its children once the run ends
            kill_all(p for pids in _actor_pids(run).values() for p in pids)
            thread.join(10)
    assert result["updates"] == updates and result["env_steps"] == updates * PER_UPDATE
    pids = _actor_pids(run)
    assert len(pids[1]) == 2 and len(pids[0]) == 1  # actor 1 restarted once, actor 0 untouched
    assert not wait_gone([p for ps in pids.values() for p in ps], 5)
    supervisor = (run / "logs" / "supervisor.log").read_text()
    assert f"actor 1 (pid {victim}) died with signal SIGKILL; last lines of its log" in supervisor
    assert "restarted actor 1" in supervisor
    assert "actor-1 went silent" in (run / "logs" / "learner.log").read_text()
    # the restarted actor continued actor 1's seed and sampler streams: same result as the reference
    local = load_config("configs/powernet.toml", ["train.n_steps=20", "train.seed=5", "train.num_envs=2",
                                                      "train.env_groups=2", f"train.steps={updates * PER_UPDATE}"])
    train_local(local, tmp_path / "local")
    assert_same_params(tmp_path / "local" / "checkpoints" / "latest.pt", run / "checkpoints" / "latest.pt")


def test_a_hung_actor_is_restarted_and_the_run_finishes(tmp_path, no_orphans):
    """An actor frozen by SIGSTOP (alive, but silent: no rollout, no heartbeat) is killed and restarted by the
    supervisor after dist.actor_hang_s, and the sync run finishes all its updates."""
    updates = 12
    run = tmp_path / "run"
    result: dict = {}
    errors: list[BaseException] = []

    def supervise() -> None:
        try:
            result.update(run_distributed(_cfg(updates, "train.log_every=1", "dist.actor_hang_s=3"), run,
                                          actor_timeout_s=30))
        except BaseException as exc:  # noqa: BLE001 - reported by the test thread
            errors.append(exc)

    thread = threading.Thread(target=supervise, daemon=True)
    thread.start()
    victim = None
    try:
        _wait_for(lambda: len(_rows(run)) >= 3 or not thread.is_alive(), 90, "three updates")
        assert thread.is_alive() and len(_rows(run)) < updates, "the run ended before the freeze"
        victim = _actor_pids(run)[1][0]
        os.kill(victim, signal.SIGSTOP)
        thread.join(120)
        assert not thread.is_alive() and not errors, errors
    finally:
        if victim is not None and alive(victim):
            os.kill(victim, signal.SIGCONT)
        if thread.is_alive():
            kill_all(p for pids in _actor_pids(run).values() for p in pids)
            thread.join(10)
    assert result["updates"] == updates
    pids = _actor_pids(run)
    assert len(pids[1]) == 2 and len(pids[0]) == 1  # actor 1 restarted once, actor 0 untouched
    supervisor = (run / "logs" / "supervisor.log").read_text()
    assert re.search(rf"actor 1 \(pid {victim}\) is hung: the learner has heard nothing from it \(no rollout, no "
                     rf"heartbeat\) for \d+ s \(dist.actor_hang_s = 3\); killing and restarting it", supervisor)
    assert "restarted actor 1" in supervisor and not (run / "liveness.json").exists()
    # the restart is the one of the kill -9 test above, which checks that the result is unchanged
    assert all(a["episodes_done"] > 0 for a in load_checkpoint(run / "checkpoints" / "latest.pt")["streams"].values())


SUPERVISOR = """
import sys
from common.config import load_config
from launch.dist import run_distributed
cfg = load_config("configs/powernet.toml", sys.argv[2:])
run_distributed(cfg, sys.argv[1], actor_timeout_s=3.0)
"""


def test_kill_9_of_the_learner_ends_every_process(tmp_path):
    run = tmp_path / "run"
    sup = subprocess.Popen([sys.executable, "-c", SUPERVISOR, str(run), *BASE, "train.steps=10000000"],
                           stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, cwd=Path(__file__).parent.parent)
    recorded = [sup.pid]
    try:
        _wait_for(lambda: len(_rows(run)) >= 2 or sup.poll() is not None, 90, "two updates")
        assert sup.poll() is None, sup.stderr.read().decode()
        learner = json.loads((run / "endpoints.json").read_text())["pid"]
        actors = [p for ps in _actor_pids(run).values() for p in ps]
        recorded += [learner, *actors]
        assert len(actors) == 2
        os.kill(sup.pid, signal.SIGSTOP)  # a frozen supervisor cannot stop them: the actors must give up alone
        os.kill(learner, signal.SIGKILL)
        assert not wait_gone(actors, 3.0 + 12.0), "actors still running after their --timeout"
        for k in (0, 1):
            assert "did not answer" in (run / "logs" / f"actor-{k}.log").read_text()
        os.kill(sup.pid, signal.SIGCONT)
        rc = sup.wait(30)
        assert rc != 0
        assert "learner failed with signal SIGKILL" in sup.stderr.read().decode()
        supervisor = (run / "logs" / "supervisor.log").read_text()
        for k in (0, 1):
            assert re.search(rf"actor {k} \(pid \d+\) ended with exit code 3", supervisor), supervisor
    finally:
        for pid in recorded:
            if alive(pid):
                os.kill(pid, signal.SIGCONT)
        kill_all(recorded)
        if sup.poll() is None:
            sup.wait(10)
        sup.stderr.close()
    assert not wait_gone(recorded, 5), "orphan processes"


def test_bad_input_on_a_live_learner_is_dropped_and_training_goes_on(tmp_path):
    cfg = load_config("configs/ia2c.toml", ["train.steps=40", "dist.actors=1", "train.seed=1"])
    service = build_learner(cfg, tmp_path, "good-run", free_ports=True)
    ctx = zmq.Context()
    push, dealer, big = ctx.socket(zmq.PUSH), ctx.socket(zmq.DEALER), ctx.socket(zmq.PUSH)
    monitor = big.get_monitor_socket(zmq.EVENT_DISCONNECTED)
    result: dict = {}
    learner = threading.Thread(target=lambda: result.update(service.run()), daemon=True)
    try:
        for sock in (push, dealer, big):
            sock.setsockopt(zmq.LINGER, 0)
        push.connect(service.endpoints["rollout"])
        dealer.connect(service.endpoints["control"])
        big.connect(service.endpoints["rollout"])
        spec = service.spec
        push.send_multipart(forged_rollout(spec, "good-run", obs=spec.obs_dim + 1))        # wrong obs width
        push.send_multipart(forged_rollout(spec, "good-run", rewards=spec.n_agents + 2))   # wrong agent count
        dealer.send_multipart([b"\x00\xffnot a header"])                               # garbage on ROUTER
        dealer.send_multipart(wire.encode(wire.Message(type=wire.HELLO, run_id="other-run", sender="x")))
        dealer.send_multipart(wire.encode(wire.Message(type=wire.ROLLOUT, run_id="good-run", sender="x")))
        # over the learner's ZMQ_MAXMSGSIZE (64 MiB): libzmq discards it and disconnects the sender
        big.send_multipart([b"\x80", np.zeros((64 << 20) + 16, dtype=np.uint8)], copy=False)
        deadline = time.monotonic() + 20
        while sum(service.dropped.values()) < 5 and time.monotonic() < deadline:
            service.poll(50)
        assert monitor.poll(10_000), "the oversized sender was not disconnected"
        assert recv_monitor_message(monitor)["event"] == zmq.EVENT_DISCONNECTED
        assert dict(service.dropped) == {"bad_shape": 2, "not_msgpack": 1, "foreign_run": 1, "wrong_type": 1}
        learner.start()
        code = run_actor(cfg, service.endpoints["control"], 0, "good-run", actor_logger(str(tmp_path), 0),
                         timeout_s=20)
        learner.join(30)
        assert code == 0 and not learner.is_alive()
        assert result["updates"] == 2 and result["env_steps"] == 40
        stats = json.loads((tmp_path / "learner_stats.json").read_text())
        assert stats["dropped"] == {"bad_shape": 2, "not_msgpack": 1, "foreign_run": 1, "wrong_type": 1}
    finally:
        big.disable_monitor()
        for sock in (monitor, push, dealer, big):
            sock.close(0)
        ctx.term()
        service.close()


def test_a_failed_distributed_run_ends_with_one_error_line_and_status_1(tmp_path, monkeypatch):
    from click.testing import CliRunner

    import launch.dist
    from launch.cli import main

    def fail(*args, **kwargs):
        raise launch.dist.TrainingFailed("learner failed with exit code 1; last lines of its log:\nboom")

    monkeypatch.setattr(launch.dist, "run_distributed", fail)
    config = Path(__file__).resolve().parents[1] / "configs" / "powernet.toml"
    result = CliRunner().invoke(main, ["train", "-c", str(config), "--mode", "sync", "--steps", "40",
                                       "--progress", "off", "--out", str(tmp_path / "run")])
    assert result.exit_code == 1, result.output
    logs = tmp_path / "run" / "logs"
    assert result.stderr.strip().splitlines() == [
        f"error: learner failed with exit code 1; last lines of its log: (see {logs})"]
