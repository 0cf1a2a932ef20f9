"""The learner service of a distributed run: receives rollouts, updates, publishes versioned weights.
It keeps the transport and the batching; what happens to a batch (update, metrics, checkpoints, resume) is
the learner core's (`learner.core`), the same as in `--mode local`.

Sockets (ZeroMQ, all bound by the learner): PULL for rollouts, PUB for weights broadcasts, ROUTER for
control (hello, heartbeat, get_weights, stats, stop). Every inbound message goes through `common.wire`; a
bad, foreign or stale one is logged, counted by reason and dropped, and the service keeps serving.

Sync mode: update u uses exactly one rollout of every actor 0..A-1 produced by weight version u, joined
along the env axis in actor order, exactly as the local trainer joins its env groups. An
actor's ``get_weights`` carrying ``meta.min_version`` is answered once that version exists, so actors
wait for the next weights without relying on PUB/SUB delivery (no slow-joiner waits).

Async mode: actors never wait; they act with the newest weights they have (from the PUB broadcast). A
rollout is accepted when its lag (current version - its weight version) is at most
``dist.max_policy_lag``, else dropped as "stale" (checked on arrival and again when it enters an update);
every ``dist.batch_rollouts`` accepted rollouts (default one per actor), in arrival order, make one update
corrected with V-trace (`learner.update.vtrace_losses`). Each update's mean and max lag go to metrics.csv
(``policy_lag``, ``policy_lag_max``), as Sample Factory reports policy lag.

This module imports only `common` and `learner`; `launch` builds the model and writes the run's config.
"""

from __future__ import annotations

import dataclasses
import json
import os
import time
from collections import Counter, deque
from pathlib import Path
from typing import Any

import numpy as np
import torch
import zmq

from common import wire
from common.config import Config, config_digest
from common.logs import setup_logging
from common.nets.base import GraphActorCritic
from common.rollout import Rollout
from common.security import ServerSecurity, server_security
from common.timers import StageTimer, from_meta
from learner.core import LearnerCore, Streams

SENDER = "learner"
_ROLLOUT_ARRAYS = frozenset(f.name for f in dataclasses.fields(Rollout)) - {"version"}
SILENT_AFTER_S = 5.0  # an actor without any message for this long is reported (5 missed 1 s heartbeats)


def rollout_spec(cfg: Config, model: GraphActorCritic) -> wire.RolloutSpec:
    """The exact rollout layout this run's actors must send."""
    state = model.initial_state(1, device="cpu")
    return wire.RolloutSpec(n_agents=model.n_agents, obs_dim=int(model.obs_dim), n_actions=model.n_actions,
                            n_steps=cfg.train.n_steps, n_envs=cfg.dist.envs_per_actor,
                            hidden=int(state.h.shape[-1]), fp_dim=int(state.fp.shape[-1]))


class LearnerService:
    """Binds its sockets on construction (so `endpoints` is known at once); `run` trains to the end."""

    def __init__(self, cfg: Config, model: GraphActorCritic, out_dir: str | Path, run_id: str,
                 free_ports: bool = False, echo: bool = False,
                 max_msg_bytes: int = 64 << 20, hwm: int = 64, watch_parent: bool = False,
                 security: ServerSecurity | None = None) -> None:
        if cfg.dist.mode not in ("sync", "async"):
            raise NotImplementedError(f"dist.mode = {cfg.dist.mode} is not implemented")
        self.cfg, self.model, self.run_id = cfg, model, run_id
        self.out = Path(out_dir)
        self.log = setup_logging(self.out / "logs" / "learner.log", "learner", echo=echo)
        self.spec = rollout_spec(cfg, model)
        self.digest = config_digest(cfg)
        # actor id -> its continuation after its last accepted rollout: episodes_done, at_boundary, sampler_state
        self.actor_state: Streams = {}
        self.core = LearnerCore(cfg, model, self.out, self.log, streams=lambda: self.actor_state)
        self.dropped: Counter[str] = Counter()
        self.timers = StageTimer()  # restarted at the first update; totals go to learner_stats.json
        self.actor_timers: dict[int, dict[str, float]] = {}  # latest t_* totals each actor sent
        self.stop_requested = False
        self._parent = os.getppid() if watch_parent else None  # a launcher gone -> stop, leave no orphan
        self._seq = 0
        # CURVE + allow-list when keys were given; a non-loopback host without them is refused here too
        self.security = security or server_security(cfg.dist.host, None, False)
        self._ctx = zmq.Context()
        self.security.start(self._ctx, self.log)
        self._pull = self._bind(zmq.PULL, cfg.dist.rollout_port, free_ports, max_msg_bytes, hwm)
        self._pub = self._bind(zmq.PUB, cfg.dist.weights_port, free_ports, max_msg_bytes, hwm)
        self._router = self._bind(zmq.ROUTER, cfg.dist.control_port, free_ports, max_msg_bytes, hwm)
        self._router.setsockopt(zmq.ROUTER_MANDATORY, 0)
        self.endpoints = {name: sock.getsockopt(zmq.LAST_ENDPOINT).decode() for name, sock in
                          (("rollout", self._pull), ("weights", self._pub), ("control", self._router))}
        self._peers: dict[bytes, float] = {}        # control identity -> last time heard
        self._peer_names: dict[bytes, str] = {}
        self._silent: set[bytes] = set()
        self._waiting: list[tuple[bytes, int]] = []  # deferred get_weights: (identity, min_version)
        self._pending: dict[int, Rollout] = {}       # sync: actor id -> rollout of the current version
        self._pending_stats: dict[int, dict[str, Any]] = {}
        self._queue: deque[tuple[Rollout, dict[str, Any]]] = deque()  # async: accepted, in arrival order
        self.lag_counts: Counter[int] = Counter()  # async: rollouts used in updates, by policy lag
        self._weights_cache: tuple[int, dict[str, np.ndarray]] | None = None
        self.log.info("run %s: bound %s", run_id, self.endpoints)

    def _bind(self, kind: int, port: int, free: bool, max_msg_bytes: int, hwm: int) -> zmq.Socket:
        sock = self._ctx.socket(kind)
        wire.configure_socket(sock, max_msg_bytes, hwm)
        self.security.apply(sock)
        host = self.cfg.dist.host
        if free:
            sock.bind_to_random_port(f"tcp://{host}")
        else:
            sock.bind(f"tcp://{host}:{port}")
        return sock

    def write_endpoints(self, path: str | Path) -> None:
        """Write run id and endpoints as JSON, atomically, for a launcher waiting on the file."""
        path = Path(path)
        tmp = path.with_suffix(".tmp")
        tmp.write_text(json.dumps({"run_id": self.run_id, "pid": os.getpid(), **self.endpoints}))
        os.replace(tmp, path)

    # ---------------------------------------------------------------------------------------------- messages

    def _message(self, kind: str, meta: dict[str, Any] | None = None,
                 arrays: dict[str, np.ndarray] | None = None) -> wire.Message:
        self._seq += 1
        return wire.Message(type=kind, run_id=self.run_id, sender=SENDER, seq=self._seq,
                            weight_version=self.version, meta=meta or {}, arrays=arrays or {})

    def _weights(self) -> dict[str, np.ndarray]:
        if self._weights_cache is None or self._weights_cache[0] != self.version:
            self._weights_cache = (self.version, wire.state_dict_to_arrays(self.model.state_dict()))
        return self._weights_cache[1]

    def _drop(self, reason: str, detail: str, where: str) -> None:
        self.dropped[reason] += 1
        self.log.warning("dropped a message on %s (%s): %s", where, reason, detail[:200])

    def _on_rollout(self, frames: list[memoryview]) -> None:
        try:
            msg = wire.decode(frames, expected_run_id=self.run_id)
            wire.validate_rollout(msg, self.spec)
        except wire.WireError as exc:
            self._drop(exc.reason, exc.detail, "rollout socket")
            return
        actor = msg.meta.get("actor")
        if not isinstance(actor, int) or isinstance(actor, bool) or not 0 <= actor < self.cfg.dist.actors:
            self._drop("bad_actor", f"actor id {actor!r} from {msg.sender!r}", "rollout socket")
            return
        if self.cfg.dist.mode == "async":
            self._accept_async(msg, actor)
            return
        if msg.weight_version != self.version:
            self._drop("stale", f"actor {actor} sent version {msg.weight_version}, current {self.version}",
                       "rollout socket")
            return
        if actor in self._pending:
            self._drop("duplicate", f"second rollout of actor {actor} for version {self.version}", "rollout socket")
            return
        arrays = {name: np.array(arr) for name, arr in msg.arrays.items()  # own, writable copies
                  if name != wire.SAMPLER_STATE}
        self._record_actor(actor, msg)
        self._pending[actor] = Rollout(**arrays, version=msg.weight_version)
        self._pending_stats[actor] = dict(msg.meta)

    def _accept_async(self, msg: wire.Message, actor: int) -> None:
        """Queue a rollout whose policy lag is within dist.max_policy_lag; drop one from the future or too old."""
        lag = self.version - msg.weight_version
        if lag < 0:
            self._drop("future_version", f"actor {actor} sent version {msg.weight_version}, current "
                       f"{self.version}", "rollout socket")
        elif lag > self.cfg.dist.max_policy_lag:
            self._drop("stale", f"actor {actor} sent version {msg.weight_version}, current {self.version} "
                       f"(lag {lag} > {self.cfg.dist.max_policy_lag})", "rollout socket")
        else:
            arrays = {name: np.array(arr) for name, arr in msg.arrays.items() if name in _ROLLOUT_ARRAYS}
            self._queue.append((Rollout(**arrays, version=msg.weight_version), dict(msg.meta)))

    def _take_async(self) -> tuple[list[Rollout], list[dict[str, Any]]] | None:
        """The next async batch (dropping queued rollouts that went stale meanwhile), or None if too few."""
        max_lag = self.cfg.dist.max_policy_lag
        if any(self.version - r.version > max_lag for r, _ in self._queue):
            for r, _ in self._queue:
                if self.version - r.version > max_lag:
                    self._drop("stale", f"a queued rollout of version {r.version} aged past lag {max_lag} "
                               f"(current {self.version})", "rollout queue")
            self._queue = deque(item for item in self._queue if self.version - item[0].version <= max_lag)
        want = self.cfg.dist.batch_rollouts or self.cfg.dist.actors
        if len(self._queue) < want:
            return None
        taken = [self._queue.popleft() for _ in range(want)]
        return [r for r, _ in taken], [m for _, m in taken]

    def _on_control(self, identity: bytes, frames: list[memoryview]) -> None:
        try:
            msg = wire.decode(frames, expected_run_id=self.run_id)
        except wire.WireError as exc:
            self._drop(exc.reason, exc.detail, "control socket")
            return
        self._peers[identity] = time.monotonic()
        self._peer_names[identity] = msg.sender
        if identity in self._silent:
            self._silent.discard(identity)
            self.log.info("%s is heard again", msg.sender)
        if msg.type == wire.HELLO:
            self._forget_old_connection(identity, msg.sender)
            self.log.info("hello from %s (%s)", msg.sender, msg.meta)
            meta = {"mode": self.cfg.dist.mode, "config_digest": self.digest, "rollout": self.endpoints["rollout"],
                    "weights": self.endpoints["weights"], **self._continuation(msg.meta.get("actor"))}
            wire.send_routed(self._router, identity,
                             self._message(wire.HELLO, meta, self._continuation_arrays(msg.meta.get("actor"))))
        elif msg.type == wire.HEARTBEAT:
            wire.send_routed(self._router, identity, self._message(wire.HEARTBEAT))
        elif msg.type == wire.GET_WEIGHTS:
            want = msg.meta.get("min_version", 0)
            want = want if isinstance(want, int) and not isinstance(want, bool) else 0
            if self.stop_requested:
                wire.send_routed(self._router, identity, self._message(wire.STOP))
            elif want <= self.version:
                wire.send_routed(self._router, identity, self._message(wire.WEIGHTS, arrays=self._weights()))
            else:
                self._waiting.append((identity, want))
        elif msg.type == wire.STATS:
            meta = {"version": self.version, "env_steps": self.env_steps,
                    "dropped": sum(self.dropped.values()), "mode": self.cfg.dist.mode}
            wire.send_routed(self._router, identity, self._message(wire.STATS, meta))
        elif msg.type == wire.STOP:
            self.log.info("stop requested by %s", msg.sender)
            self.stop_requested = True
        else:
            self._drop("wrong_type", f"{msg.type} from {msg.sender!r} on the control socket", "control socket")

    def _answer_waiting(self) -> None:
        still = []
        for identity, want in self._waiting:
            if self.stop_requested:
                wire.send_routed(self._router, identity, self._message(wire.STOP))
            elif want <= self.version:
                wire.send_routed(self._router, identity, self._message(wire.WEIGHTS, arrays=self._weights()))
            else:
                still.append((identity, want))
        self._waiting = still

    def _check_liveness(self) -> None:
        now = time.monotonic()
        for identity, last in self._peers.items():
            if now - last > SILENT_AFTER_S and identity not in self._silent:
                self._silent.add(identity)
                self.log.warning("%s silent for %.1f s (no heartbeat)", self._peer_names.get(identity, "?"),
                                 now - last)

    def poll(self, timeout_ms: int = 100) -> None:
        """Serve whatever arrives within `timeout_ms` (rollouts and control), without blocking longer."""
        poller = zmq.Poller()
        poller.register(self._pull, zmq.POLLIN)
        poller.register(self._router, zmq.POLLIN)
        events = dict(poller.poll(timeout_ms))
        if self._router in events:
            while True:
                try:
                    identity, frames = wire.recv_routed(self._router, zmq.NOBLOCK)
                except zmq.Again:
                    break
                with self.timers.stage("control"):
                    self._on_control(identity, frames)
        if self._pull in events:
            while True:
                try:
                    frames = wire.recv(self._pull, zmq.NOBLOCK)
                except zmq.Again:
                    break
                with self.timers.stage("receive"):
                    self._on_rollout(frames)
        self._check_liveness()

    # ---------------------------------------------------------------------------------------------- training

    @property
    def version(self) -> int:
        """The current weight version: the number of updates so far."""
        return self.core.updates

    @property
    def env_steps(self) -> int:
        return self.core.env_steps

    def _next_batch(self) -> tuple[Rollout, list[dict[str, Any]], list[int]] | None:
        """The next update's batch, its rollouts' meta and policy lags, or None while it is incomplete."""
        if self.cfg.dist.mode == "async":
            taken = self._take_async()
            if taken is None:
                return None
            parts, metas = taken
            lags = [self.version - r.version for r in parts]
            self.lag_counts.update(lags)
            return Rollout.concat(parts), metas, lags
        if len(self._pending) < self.cfg.dist.actors:
            return None
        order = sorted(self._pending)
        batch = Rollout.concat([self._pending[k] for k in order])
        metas = [self._pending_stats[k] for k in order]
        self._pending, self._pending_stats = {}, {}
        return batch, metas, [0]

    def run(self) -> dict[str, Any]:
        """Train until train.steps env steps (or a stop request); tell actors to stop; return a summary."""
        core = self.core
        loop_timers: dict[str, float] | None = None
        self._pub_weights()
        with core:
            while not core.done and not self.stop_requested:
                with self.timers.stage("poll"):  # includes receive and control, the rest is idle
                    self.poll(100)
                if self._parent is not None and os.getppid() != self._parent:
                    self.log.error("the launching process is gone; stopping")
                    break
                taken = self._next_batch()
                if taken is None:
                    continue
                batch, metas, lags = taken
                if self.cfg.dist.learner_delay_s > 0:
                    time.sleep(self.cfg.dist.learner_delay_s)  # testing aid: a slow learner
                self.actor_timers.update({int(m["actor"]): from_meta(m) for m in metas})
                if self.version == 0:
                    self.timers.restart()  # time the steady state, not the wait for actors to start
                with self.timers.stage("learn"):
                    stats = core.learn(batch, off_policy=self.cfg.dist.mode == "async")
                with self.timers.stage("publish"):
                    self._pub_weights()
                    self._answer_waiting()
                with self.timers.stage("record"):  # metrics row, TensorBoard, log line, scheduled checkpoint
                    core.record(stats, batch, metas, lags, dropped=sum(self.dropped.values()))
            # the steady-state totals: the final checkpoint and the stop handshake below are not step time
            loop_timers = self.timers.totals()
            core.checkpoint()
        self.stop_actors()
        summary = {**core.summary(), "dropped": dict(self.dropped), "timers": loop_timers,
                   "actor_timers": {str(k): v for k, v in sorted(self.actor_timers.items())}}
        if self.cfg.dist.mode == "async":  # rollouts that entered updates, by policy lag
            summary["policy_lag_counts"] = {str(k): v for k, v in sorted(self.lag_counts.items())}
        (self.out / "learner_stats.json").write_text(json.dumps(summary, indent=2))
        self.log.info("finished: %d updates, %d env steps, dropped %s", self.version, self.env_steps,
                      dict(self.dropped))
        return summary

    def _pub_weights(self) -> None:
        try:
            wire.send(self._pub, self._message(wire.WEIGHTS, arrays=self._weights()), zmq.NOBLOCK)
        except zmq.Again:
            pass

    # ---------------------------------------------------------------------------------------------- resume

    def restore(self, ckpt: dict[str, Any]) -> None:
        """Continue from a checkpoint of this run (`learner.core.read_checkpoint`): model, optimiser, counters,
        global generators and the actors' streams, which re-joining actors are sent in the hello reply."""
        self.actor_state = self.core.restore(ckpt)

    def _record_actor(self, actor: int, msg: wire.Message) -> None:
        """Remember where `actor` stands after the rollout just accepted (checkpointed, sent on re-join)."""
        episodes = msg.meta.get("episodes_done")
        state = msg.arrays.get(wire.SAMPLER_STATE)
        self.actor_state[actor] = {
            "episodes_done": episodes if isinstance(episodes, int) and not isinstance(episodes, bool) else None,
            "at_boundary": bool(msg.meta.get("at_boundary", True)),
            "sampler_state": None if state is None else np.array(state, dtype=np.uint8)}

    def _continuation(self, actor: Any) -> dict[str, Any]:
        """Hello-reply fields for `actor`: its episode counter and the first version it should act with
        (sync: past the current one when its rollout for that version is already held)."""
        if not isinstance(actor, int) or isinstance(actor, bool):
            return {}
        held = self.cfg.dist.mode == "sync" and actor in self._pending
        out: dict[str, Any] = {"next_version": self.version + 1 if held else self.version}
        episodes = self.actor_state.get(actor, {}).get("episodes_done")
        if episodes is not None:
            out["episodes_done"] = int(episodes)
        return out

    def _continuation_arrays(self, actor: Any) -> dict[str, np.ndarray]:
        """The sampler state of `actor` after its last accepted rollout, if known."""
        state = self.actor_state.get(actor, {}).get("sampler_state") if isinstance(actor, int) else None
        return {} if state is None else {wire.SAMPLER_STATE: np.ascontiguousarray(state, dtype=np.uint8)}

    def _forget_old_connection(self, identity: bytes, sender: str) -> None:
        """A hello from `sender` on a new connection means its old one is dead (e.g. a restarted actor)."""
        now = time.monotonic()
        for old in [i for i, name in self._peer_names.items() if name == sender and i != identity]:
            self.log.warning("%s went silent (last heard %.1f s ago) and re-joined on a new connection",
                             sender, now - self._peers.get(old, now))
            self._peers.pop(old, None)
            self._peer_names.pop(old, None)
            self._silent.discard(old)
            self._waiting = [(i, v) for i, v in self._waiting if i != old]

    def stop_actors(self, grace_s: float = 1.0) -> None:
        """Answer every waiting actor and every known peer with stop, serving stragglers for `grace_s`."""
        self.stop_requested = True
        self._answer_waiting()
        for identity in list(self._peers):
            wire.send_routed(self._router, identity, self._message(wire.STOP))
        deadline = time.monotonic() + grace_s
        while time.monotonic() < deadline:
            self.poll(50)
            self._answer_waiting()

    def close(self) -> None:
        """Close the sockets and the context (safe to call twice)."""
        for sock in (self._pull, self._pub, self._router):
            sock.close(linger=200)
        self.security.stop()
        self._ctx.term()


def torch_threads() -> None:
    """One intra-op thread: services share the machine's cores with each other."""
    torch.set_num_threads(1)
