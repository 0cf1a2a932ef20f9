"""The actor process of a distributed run: E envs, a CPU policy copy, n-step rollouts sent to the learner.

Actor k seeds its envs and sampler by `actor.groups` (the same rule as the local trainer's env groups), so
a sync run reproduces `--mode local` with ``train.env_groups = dist.actors``. It talks to the learner's
control socket only through a DEALER: hello, get_weights (answered at once at start, so no slow-joiner
wait; in sync mode with ``min_version`` = the next version, answered when that version exists), and a
heartbeat about every second. If the learner stays silent it reconnects with exponential backoff, and
after `timeout_s` without any reply it gives up with `LearnerGone`.
"""

from __future__ import annotations

import logging
import time
from typing import Any

import numpy as np
import torch
import zmq

from actor.envs import make_vec_env
from actor.groups import group_seed
from actor.rollout import RolloutCollector
from common import wire
from common.config import Config
from common.nets import build_model
from common.seeding import seed_everything

HEARTBEAT_S = 1.0


class LearnerGone(RuntimeError):
    """The learner did not answer within the timeout, after reconnect attempts."""


class StopRequested(Exception):
    """The learner told this actor to stop."""


class _Control:
    """The DEALER link to the learner's ROUTER, with Lazy-Pirate style reconnects (a fresh socket each time)."""

    def __init__(self, ctx: zmq.Context, address: str, run_id: str, sender: str, timeout_s: float,
                 log: logging.Logger, max_msg_bytes: int) -> None:
        self.ctx, self.address, self.run_id, self.sender = ctx, address, run_id, sender
        self.timeout_s, self.log, self.max_msg_bytes = timeout_s, log, max_msg_bytes
        self.seq = 0
        self.sock: zmq.Socket | None = None
        self._connect()

    def _connect(self) -> None:
        if self.sock is not None:
            self.sock.close(linger=0)
        self.sock = self.ctx.socket(zmq.DEALER)
        wire.configure_socket(self.sock, self.max_msg_bytes, 16)
        self.sock.connect(self.address)

    def send(self, kind: str, meta: dict[str, Any] | None = None) -> None:
        self.seq += 1
        wire.send(self.sock, wire.Message(type=kind, run_id=self.run_id, sender=self.sender, seq=self.seq,
                                          meta=meta or {}))

    def request(self, kind: str, meta: dict[str, Any] | None, want: str) -> wire.Message:
        """Send `kind` and wait for a reply of type `want` (STOP raises), heartbeating while waiting."""
        self.send(kind, meta)
        last_heard = time.monotonic()
        next_beat = last_heard + HEARTBEAT_S
        backoff, next_retry = 1.0, last_heard + 2.0
        while True:
            now = time.monotonic()
            if now - last_heard > self.timeout_s:
                raise LearnerGone(f"learner at {self.address} did not answer for {now - last_heard:.1f} s "
                                  f"(after reconnecting with backoff); giving up")
            if now >= next_retry:
                self.log.warning("no answer from the learner for %.1f s; reconnecting", now - last_heard)
                self._connect()
                self.send(kind, meta)
                backoff = min(backoff * 2, 8.0)
                next_retry = now + backoff
                next_beat = now
            if now >= next_beat:
                self.send(wire.HEARTBEAT)
                next_beat = now + HEARTBEAT_S
            if not self.sock.poll(int(max(10, 1000 * min(next_beat, next_retry) - 1000 * now))):
                continue
            frames = wire.recv(self.sock)
            try:
                msg = wire.decode(frames, expected_run_id=self.run_id)
            except wire.WireError as exc:
                self.log.warning("dropped a reply from the learner (%s): %s", exc.reason, exc.detail[:200])
                continue
            last_heard = now = time.monotonic()
            backoff, next_retry = 1.0, now + 2.0 + self.timeout_s / 4
            if msg.type == wire.STOP:
                raise StopRequested()
            if msg.type == want:
                return msg

    def close(self) -> None:
        if self.sock is not None:
            self.sock.close(linger=0)


def run_actor(cfg: Config, learner: str, actor_id: int, run_id: str, log: logging.Logger,
              timeout_s: float = 15.0, max_msg_bytes: int = 64 << 20, max_rollouts: int | None = None) -> int:
    """Serve as actor `actor_id` until the learner says stop (return 0); raise LearnerGone if it vanishes."""
    from learner.service import config_digest  # a pure function of the config; no learner state

    torch.set_num_threads(1)
    tc, E = cfg.train, cfg.dist.envs_per_actor
    seed = group_seed(tc.seed, actor_id)
    sampler = seed_everything(seed)
    env = make_vec_env(cfg.env, E)
    model = build_model(cfg.model, env.adjacency, env.obs_dim, env.n_actions)
    model.eval()
    shapes = {k: tuple(v.shape) for k, v in model.state_dict().items()}
    collector = RolloutCollector(env, model, tc.n_steps, sampler)
    collector.reset(seed)
    sender = f"actor-{actor_id}"
    ctx = zmq.Context()
    control = _Control(ctx, learner, run_id, sender, timeout_s, log, max_msg_bytes)
    push = None
    try:
        hello = control.request(wire.HELLO, {"actor": actor_id, "envs": E}, wire.HELLO)
        if hello.meta.get("config_digest") != config_digest(cfg):
            log.error("this actor's config differs from the learner's (digest %s vs %s)",
                      config_digest(cfg), hello.meta.get("config_digest"))
            return 2
        push = ctx.socket(zmq.PUSH)
        wire.configure_socket(push, max_msg_bytes, 4)
        push.connect(str(hello.meta["rollout"]))
        version = _load(model, control.request(wire.GET_WEIGHTS, {"min_version": 0}, wire.WEIGHTS), shapes)
        log.info("%s: %d envs, seed %d, weights version %d from %s", sender, E, seed, version, learner)
        sent = 0
        while max_rollouts is None or sent < max_rollouts:
            rollout, stats = collector.collect(version)
            returns = stats["episode_returns"]
            meta = {"actor": actor_id, "episodes": len(returns), "episode_return_sum": float(np.sum(returns)),
                    "violations": int(round(stats["violation_rate"] * rollout.rewards.size)),
                    "diverged": int(stats["diverged"])}
            wire.send(push, wire.Message(type=wire.ROLLOUT, run_id=run_id, sender=sender, seq=sent,
                                         weight_version=version, meta=meta, arrays=rollout.arrays()))
            sent += 1
            control.send(wire.HEARTBEAT)
            reply = control.request(wire.GET_WEIGHTS, {"min_version": version + 1}, wire.WEIGHTS)
            version = _load(model, reply, shapes)
        return 0
    except StopRequested:
        log.info("%s: stop received after version %s; exiting", sender, locals().get("version"))
        return 0
    finally:
        control.close()
        if push is not None:
            push.close(linger=500)
        ctx.term()


def _load(model: torch.nn.Module, msg: wire.Message, shapes: dict[str, tuple[int, ...]]) -> int:
    """Validate a weights message against the model and load it; return its version."""
    wire.validate_weights(msg, shapes)
    model.load_state_dict(wire.arrays_to_state_dict(msg.arrays))
    return msg.weight_version
