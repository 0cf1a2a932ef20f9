"""The actor process of a distributed run: E envs, a CPU policy copy, n-step rollouts sent to the learner.

Actor k seeds its envs and sampler by `actor.groups` (the same rule as the local trainer's env groups), so
a sync run reproduces `--mode local` with ``train.env_groups = dist.actors``. It talks to the learner's
control socket only through a DEALER: hello, get_weights (answered at once at start, so no slow-joiner
wait; in sync mode with ``min_version`` = the next version, answered when that version exists), and a
heartbeat about every second. If the learner stays silent it reconnects with exponential backoff, and
after `timeout_s` without any reply it gives up with `LearnerGone`.

In async mode the actor also subscribes to the learner's PUB weights socket, and between rollouts it
applies the newest broadcast version and reads heartbeat replies and stop without blocking (`_AsyncLink`);
the initial weights still come from get_weights, so a slow-joining subscription loses nothing. It collects
a window only with a credit: after each rollout it asks (`CREDIT`) and waits, heart-beating, until the
learner grants the next window (`learner.credits`), then acts with at least the weight version the grant
names (from the broadcast, or fetched if the broadcast is late).

The control socket keeps one routing id for the life of the process, so a reconnect does not lose the
actor id its HELLO bound to the connection.
"""

from __future__ import annotations

import logging
import secrets
import time
from collections.abc import Callable
from typing import Any

import numpy as np
import zmq

from actor.envs import make_vec_env
from actor.groups import group_sampler, group_seed
from actor.policy import ActingPolicy
from actor.rollout import RolloutCollector, window_meta
from actor.sampler import SamplerStateError, sampler_state
from common import wire
from common.config import Config, config_digest
from common.rollout import Rollout
from common.security import ClientSecurity, peer_endpoint
from common.timers import StageTimer

HEARTBEAT_S = 1.0
ASYNC_SILENT_S = 5.0  # async: a learner silent this long is waited for (and given up on after the timeout)
BROADCAST_WAIT_S = 1.0  # async: after a grant, how long the broadcast of its version is waited for before fetching


class LearnerGone(RuntimeError):
    """The learner did not answer within the timeout, after reconnect attempts."""


class StopRequested(Exception):
    """The learner told this actor to stop."""


class _Control:
    """The DEALER link to the learner's ROUTER, with Lazy-Pirate style reconnects (a fresh socket each time)."""

    def __init__(self, ctx: zmq.Context, address: str, run_id: str, sender: str, timeout_s: float,
                 log: logging.Logger, max_msg_bytes: int, security: ClientSecurity | None = None) -> None:
        self.ctx, self.address, self.run_id, self.sender = ctx, address, run_id, sender
        self.security = security or ClientSecurity()  # CURVE client options for every socket to the learner
        self.timeout_s, self.log, self.max_msg_bytes = timeout_s, log, max_msg_bytes
        self.seq = 0
        self.routing_id = f"{sender}-{secrets.token_hex(8)}".encode()  # kept across reconnects (the learner hands
        self.sock: zmq.Socket | None = None                             # the id over to the new connection)
        self._connect()

    def _connect(self) -> None:
        if self.sock is not None:
            self.sock.close(linger=0)
        self.sock = self.ctx.socket(zmq.DEALER)
        self.sock.setsockopt(zmq.ROUTING_ID, self.routing_id)
        wire.configure_socket(self.sock, self.max_msg_bytes, 16)
        self.security.apply(self.sock)
        self.sock.connect(self.address)

    def send(self, kind: str, meta: dict[str, Any] | None = None) -> None:
        self.seq += 1
        try:  # never block: a DEALER without a live peer (e.g. a refused CURVE handshake) would wait forever
            wire.send(self.sock, wire.Message(type=kind, run_id=self.run_id, sender=self.sender, seq=self.seq,
                                              meta=meta or {}), zmq.NOBLOCK)
        except zmq.Again:
            pass  # request() resends after reconnecting, and gives up after its timeout

    def request(self, kind: str, meta: dict[str, Any] | None, want: str, sent: bool = False) -> wire.Message:
        """Send `kind` (unless `sent`: it went already) and wait for a reply of type `want` (STOP raises),
        heartbeating while waiting; after a reconnect `kind` is sent again."""
        if not sent:
            self.send(kind, meta)
        last_heard = time.monotonic()
        next_beat = last_heard + HEARTBEAT_S
        backoff, next_retry = 1.0, last_heard + 2.0
        while True:
            now = time.monotonic()
            if now - last_heard > self.timeout_s:
                hint = (" (CURVE: is this actor's public key in the learner's allow-list, and --keys the run's "
                        "key directory?)" if self.security.secret is not None else "")
                raise LearnerGone(f"learner at {self.address} did not answer for {now - last_heard:.1f} s "
                                  f"(after reconnecting with backoff); giving up{hint}")
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


class _AsyncLink:
    """Async mode's non-blocking link to the learner: the newest weights from its PUB socket, heartbeats and
    stop on the control socket, and a get_weights fallback when the broadcast fell more than max_lag versions
    behind the learner (a subscription that missed messages while joining: the slow-joiner problem)."""

    def __init__(self, ctx: zmq.Context, control: _Control, address: str, max_lag: int, log: logging.Logger,
                 max_msg_bytes: int) -> None:
        self.control, self.max_lag, self.log = control, max_lag, log
        self.sub = ctx.socket(zmq.SUB)
        wire.configure_socket(self.sub, max_msg_bytes, 4)
        self.sub.setsockopt(zmq.SUBSCRIBE, b"")
        control.security.apply(self.sub)
        self.sub.connect(address)
        self.learner_version = 0  # the newest version any learner message has announced
        self.asked = False  # a get_weights fallback is outstanding
        self.last_heard = time.monotonic()
        self.next_beat = 0.0
        self.from_broadcast = 0
        self.fetched = 0
        self.asking: dict[str, Any] = {"after": -1}  # the last credit request's meta
        self.grant: wire.Message | None = None       # its grant, when it came while doing something else

    def _apply(self, msg: wire.Message, policy: ActingPolicy, version: int) -> int:
        self.learner_version = max(self.learner_version, msg.weight_version)
        if msg.type != wire.WEIGHTS or msg.weight_version <= version:
            return version
        try:
            return _load(policy, msg)
        except wire.WireError as exc:
            self.log.warning("ignored weights version %d (%s): %s", msg.weight_version, exc.reason,
                             exc.detail[:200])
            return version

    def refresh(self, policy: ActingPolicy, version: int) -> int:
        """Heartbeat if due, read what has arrived without waiting, apply the newest weights; return the
        version now loaded. Raises StopRequested, or LearnerGone after a silent learner's timeout."""
        now = time.monotonic()
        if now >= self.next_beat:
            self.control.send(wire.HEARTBEAT)
            self.next_beat = now + HEARTBEAT_S
        while self.control.sock.poll(0):
            try:
                msg = wire.decode(wire.recv(self.control.sock), expected_run_id=self.control.run_id)
            except wire.WireError as exc:
                self.log.warning("dropped a reply from the learner (%s): %s", exc.reason, exc.detail[:200])
                continue
            self.last_heard = time.monotonic()
            if msg.type == wire.STOP:
                raise StopRequested()
            if msg.type == wire.WEIGHTS:
                self.asked = False
                before = version
                version = self._apply(msg, policy, version)
                self.fetched += version != before
            elif msg.type == wire.CREDIT:  # the grant asked for; `credit` takes it from here
                self.grant = msg
                self.learner_version = max(self.learner_version, msg.weight_version)
            else:
                self.learner_version = max(self.learner_version, msg.weight_version)
        newest = None
        while self.sub.poll(0):  # keep only the last (newest) broadcast
            newest = wire.recv(self.sub)
        if newest is not None:
            try:
                msg = wire.decode(newest, expected_run_id=self.control.run_id)
            except wire.WireError as exc:
                self.log.warning("dropped a weights broadcast (%s): %s", exc.reason, exc.detail[:200])
            else:
                before = version
                version = self._apply(msg, policy, version)
                self.from_broadcast += version != before
        if self.learner_version - version > self.max_lag and not self.asked:
            self.log.info("weights broadcast is behind (have %d, learner at %d); fetching the current weights",
                          version, self.learner_version)
            self.control.send(wire.GET_WEIGHTS, {"min_version": 0})
            self.asked = True
        if time.monotonic() - self.last_heard > ASYNC_SILENT_S:
            # wait for a heartbeat reply: reconnects with backoff, raises LearnerGone after the timeout
            reply = self.control.request(wire.HEARTBEAT, None, wire.HEARTBEAT)
            self.last_heard, self.asked = time.monotonic(), False
            self.learner_version = max(self.learner_version, reply.weight_version)
        return version

    def ask(self, after: int) -> None:
        """Ask for the next window, to follow the rollout with seq `after` (-1: before the first). Sent before
        that rollout, so the learner has the request when the rollout arrives and can grant the next window
        as soon as it takes this one into an update."""
        self.asking, self.grant = {"after": after}, None
        self.control.send(wire.CREDIT, self.asking)

    def credit(self, policy: ActingPolicy, version: int) -> int:
        """Wait for the grant of the window asked for; return the weight version loaded to act with: at least
        the grant's. Raises StopRequested, or LearnerGone after a silent learner's timeout."""
        version = self.refresh(policy, version)  # the grant may be here already
        if self.grant is None:
            self.grant = self.control.request(wire.CREDIT, self.asking, wire.CREDIT, sent=True)
            self.asked = False  # replies to a fallback fetch may have been read (and dropped) meanwhile
        grant, self.grant = self.grant, None
        self.last_heard = time.monotonic()
        self.learner_version = max(self.learner_version, grant.weight_version)
        version = self.refresh(policy, version)
        deadline = time.monotonic() + BROADCAST_WAIT_S
        while version < grant.weight_version and time.monotonic() < deadline:
            self.sub.poll(20)  # its broadcast left before the grant: it is usually here already
            version = self.refresh(policy, version)
        if version < grant.weight_version:
            reply = self.control.request(wire.GET_WEIGHTS, {"min_version": grant.weight_version}, wire.WEIGHTS)
            version = _load(policy, reply)
            self.fetched += 1
        return version

    def close(self) -> None:
        self.sub.close(linger=0)


def acting_setup(cfg: Config, actor_id: int) -> tuple[RolloutCollector, StageTimer, int]:
    """Actor `actor_id`'s envs, acting policy and seeded collector (seeded as env group k of the local
    trainer), with per-stage timers on its simulation and inference; returns (collector, timers, seed). The
    policy's weights are the learner's: they arrive before the first step."""
    seed = group_seed(cfg.train.seed, actor_id)
    env = make_vec_env(cfg.env, cfg.dist.envs_per_actor, defer_reset=True)  # warm-ups run while the learner updates
    policy = ActingPolicy.for_model(cfg.model, env.adjacency, env.obs_dim, env.n_actions)
    collector = RolloutCollector(env, policy, cfg.train.n_steps, group_sampler(cfg.train.seed, actor_id))
    collector.reset(seed)
    timers = StageTimer()  # per-stage seconds, sent as t_* in each rollout's meta
    timers.wrap(env, "step", "simulate")
    if getattr(env, "defer_reset", False):
        timers.wrap(env, "finish_resets", "simulate")
    timers.wrap(collector, "_act", "infer")
    return collector, timers, seed


def run_actor(cfg: Config, learner: str | Callable[[], str], actor_id: int, run_id: str, log: logging.Logger,
              timeout_s: float = 15.0, max_msg_bytes: int = 64 << 20, max_rollouts: int | None = None,
              security: ClientSecurity | None = None) -> int:
    """Serve as actor `actor_id` until the learner says stop (return 0); raise LearnerGone if it vanishes.
    `learner` is the control endpoint, or a function that returns it (called once the envs are set up)."""
    collector, timers, seed = acting_setup(cfg, actor_id)
    if callable(learner):
        learner = learner()
    policy, sampler, E = collector.policy, collector.sampler, cfg.dist.envs_per_actor
    sender = f"actor-{actor_id}"
    ctx = zmq.Context()
    control = _Control(ctx, learner, run_id, sender, timeout_s, log, max_msg_bytes, security)
    push = None
    link: _AsyncLink | None = None
    try:
        hello = control.request(wire.HELLO, {"actor": actor_id, "envs": E}, wire.HELLO)
        if hello.meta.get("config_digest") != config_digest(cfg):
            log.error("this actor's config differs from the learner's (digest %s vs %s)",
                      config_digest(cfg), hello.meta.get("config_digest"))
            return 2
        push = ctx.socket(zmq.PUSH)
        wire.configure_socket(push, max_msg_bytes, 4)
        control.security.apply(push)
        push.connect(peer_endpoint(learner, str(hello.meta["rollout"])))
        if cfg.dist.mode == "async":  # subscribe before get_weights, so no later version is missed for long
            link = _AsyncLink(ctx, control, peer_endpoint(learner, str(hello.meta["weights"])),
                              cfg.dist.max_policy_lag, log, max_msg_bytes)
            push.setsockopt(zmq.SNDTIMEO, int(1000 * timeout_s))  # a learner gone can't block us forever
        first = _continue_streams(hello, collector, seed, log, sender)
        version = _load(policy, control.request(wire.GET_WEIGHTS, {"min_version": first}, wire.WEIGHTS))
        log.info("%s: %d envs, seed %d, weights version %d from %s", sender, E, seed, version, learner)
        timers.restart()
        sent = 0
        if link is not None:  # async: the first window, too, needs a credit
            link.ask(-1)
            with timers.stage("wait"):
                version = link.credit(policy, version)
        while max_rollouts is None or sent < max_rollouts:
            rollout, stats = collector.collect(version)
            meta = {"actor": actor_id, **window_meta(stats, rollout.rewards.size),
                    "episodes_done": int(collector.episodes_done.max()), "at_boundary": collector.at_episode_boundary}
            meta.update(timers.totals("t_"))
            if link is not None and (max_rollouts is None or sent + 1 < max_rollouts):
                link.ask(sent)  # for the window after this rollout
            with timers.stage("send"):
                wire.send(push, wire.Message(type=wire.ROLLOUT, run_id=run_id, sender=sender, seq=sent,
                                             weight_version=version, meta=meta, arrays=_with_sampler(rollout, sampler)))
            sent += 1
            collector.finish_resets()  # the learner needs no more of this window: warm up the next episodes
            if link is not None:  # async: the next window when the learner grants it, with the newest weights
                if max_rollouts is not None and sent >= max_rollouts:
                    break
                with timers.stage("wait"):
                    version = link.credit(policy, version)
                continue
            control.send(wire.HEARTBEAT)
            with timers.stage("wait"):
                reply = control.request(wire.GET_WEIGHTS, {"min_version": version + 1}, wire.WEIGHTS)
            with timers.stage("load"):
                version = _load(policy, reply)
        return 0
    except StopRequested:
        log.info("%s: stop received after version %s; exiting", sender, locals().get("version"))
        if link is not None:
            log.info("%s: %d weight versions applied from the broadcast, %d fetched on request", sender,
                     link.from_broadcast, link.fetched)
        return 0
    except zmq.Again as exc:  # async: the rollout could not be handed over within the timeout
        raise LearnerGone(f"learner at {learner} took no rollout for {timeout_s:.1f} s; giving up") from exc
    finally:
        if link is not None:
            link.close()
        control.close()
        if push is not None:
            push.close(linger=500)
        ctx.term()


def _continue_streams(hello: wire.Message, collector: RolloutCollector, seed: int, log: logging.Logger,
                      sender: str) -> int:
    """Apply the learner's record of this actor (episode counter and sampler state after its last accepted
    rollout), so a restarted or resumed actor continues its seed streams; return the first weight version
    to act with (``next_version``: past a version whose rollout the learner already holds)."""
    episodes = hello.meta.get("episodes_done")
    episodes = episodes if isinstance(episodes, int) and not isinstance(episodes, bool) and episodes > 0 else 0
    state = hello.arrays.get(wire.SAMPLER_STATE)
    if episodes or state is not None:
        try:
            collector.continue_stream(seed, {"episodes_done": episodes, "sampler_state": state})
        except SamplerStateError as exc:
            log.warning("%s: the learner's sampler state does not fit (%s); keeping a fresh one", sender, exc)
            collector.continue_stream(seed, {"episodes_done": episodes})
        log.info("%s: continuing at episode %d of its seed stream", sender, episodes)
    first = hello.meta.get("next_version", 0)
    return first if isinstance(first, int) and not isinstance(first, bool) and first >= 0 else 0


def _with_sampler(rollout: Rollout, sampler: np.random.Generator) -> dict[str, np.ndarray]:
    """The rollout's arrays plus the sampler state after the window (checkpointed by the learner)."""
    return {**rollout.arrays(), wire.SAMPLER_STATE: sampler_state(sampler)}


def _load(policy: ActingPolicy, msg: wire.Message) -> int:
    """Validate a weights message against the policy's state_dict layout and load it; return its version.
    The received arrays are copied straight into the policy's arrays (one copy)."""
    wire.validate_weights(msg, policy.shapes)
    policy.load(msg.arrays)
    return msg.weight_version
