"""The learner service of a distributed run: receives rollouts, updates, publishes versioned weights.
It keeps the transport and the batching; what happens to a batch (update, metrics, checkpoints, resume) is
the learner core's (`learner.core`), the same as in `--mode local`.

Sockets (ZeroMQ, all bound by the learner): PULL for rollouts, PUB for weights broadcasts, ROUTER for
control (hello, heartbeat, get_weights, stats). Every inbound message goes through `common.wire`; a bad,
foreign, stale or forged one is counted by reason, logged (rate-limited: `common.ratelog`) and dropped, and
the service keeps serving. What a rollout must pass is in `learner.intake`; which control connection holds
which actor id in `learner.peers`. No peer can stop a run: the learner ends when it has trained
train.steps, when its launcher is gone, or when the operator signals it.

The receive loop reads at most `MAX_PER_POLL` messages per socket between two chances to update, so a
flood delays an update by a bounded amount of work. Under CURVE a socket monitor counts and logs every
refused handshake; on the control socket it also reports closed connections, so a restarted actor takes
its id back at once.

Sync mode: update u uses exactly one rollout of every actor 0..A-1 produced by weight version u, joined
along the env axis in actor order, exactly as the local trainer joins its env groups. An
actor's ``get_weights`` carrying ``meta.min_version`` is answered once that version exists, so actors
wait for the next weights without relying on PUB/SUB delivery (no slow-joiner waits).

Async mode: actors act with the newest weights they have (from the PUB broadcast), but collect a window
only with a credit (`learner.credits`): the learner grants no more windows than its next updates can use,
so many actors on few cores do not produce rollouts that go stale. A rollout is accepted when its lag
(current version - its weight version) is at most ``dist.max_policy_lag``, else dropped as "stale"
(checked on arrival and again when it enters an update); every ``dist.batch_rollouts`` accepted rollouts
(default one per actor), in arrival order, make one update corrected with V-trace
(`learner.update.vtrace_losses`), fewer when no more are on their way (`learner.intake`). Each update's mean
and max lag go to metrics.csv (``policy_lag``, ``policy_lag_max``), as Sample Factory reports policy lag.

The learner writes RUN/liveness.json about every second: when it last heard from each actor (a control
message or a rollout) and its weight version; the supervisor reads it to restart hung actors.

This module imports only `common` and `learner`; `launch` builds the model and writes the run's config.
"""

from __future__ import annotations

import errno
import json
import os
import time
from pathlib import Path
from typing import Any

import numpy as np
import torch
import zmq
from zmq.utils.monitor import recv_monitor_message

from common import wire
from common.config import Config, config_digest
from common.errors import InputError
from common.logs import setup_logging
from common.nets.base import GraphActorCritic
from common.ratelog import RateLimitedLog
from common.security import ServerSecurity, actor_name, server_security
from common.timers import StageTimer, from_meta
from learner.core import LearnerCore
from learner.intake import Intake
from learner.peers import Peer, Peers

SENDER = "learner"
LIVENESS_EVERY_S = 1.0  # how often RUN/liveness.json is rewritten
MAX_PER_POLL = 64  # messages read per socket per poll: a flood cannot keep the loop from its next update
_HANDSHAKE_FAILED = {zmq.EVENT_HANDSHAKE_FAILED_AUTH: "not_allowed",
                     zmq.EVENT_HANDSHAKE_FAILED_PROTOCOL: "protocol",
                     zmq.EVENT_HANDSHAKE_FAILED_NO_DETAIL: "other"}
_REFUSAL_WORDS = {"not_allowed": "its key is not in the allow-list",
                  "protocol": "it does not speak CURVE with this learner's public key",
                  "other": "the handshake failed"}


def rollout_spec(cfg: Config, model: GraphActorCritic, bounds: wire.RunBounds | None = None) -> wire.RolloutSpec:
    """The exact rollout layout this run's actors must send, with the value ranges it enforces: the generic
    ones, tightened by `bounds` when the launcher derived them from the run's environment (which also says
    whether its scenario loses messages, so that every window must carry its link masks)."""
    state = model.initial_state(1, device="cpu")
    window = cfg.dist.envs_per_actor * cfg.train.n_steps
    ranges = {**wire.default_bounds(), **(dict(bounds.arrays) if bounds is not None else {})}
    extra = {} if bounds is None else {"max_episode_return": bounds.max_episode_return}
    lossy = bounds is not None and bounds.message_loss
    return wire.RolloutSpec(n_agents=model.n_agents, obs_dim=int(model.obs_dim), n_actions=model.n_actions,
                            n_steps=cfg.train.n_steps, n_envs=cfg.dist.envs_per_actor,
                            hidden=int(state.h.shape[-1]), fp_dim=int(state.fp.shape[-1]),
                            links_width=model.neighbours.width if lossy else None, bounds=ranges,
                            max_episodes_done=cfg.train.steps + 4 * window, **extra)


def _bind_error(exc: zmq.ZMQError, host: str, port: int | None, name: str) -> str:
    """One line for a socket that cannot bind, naming the port or the host at fault."""
    where = f"tcp://{host}:{'*' if port is None else port}"
    if exc.errno == errno.EADDRINUSE:
        return (f"port {port} (dist.{name}_port) on {host} is in use, e.g. by another learner; choose other "
                f"ports with --bind tcp://HOST:PORT or --set dist.{name}_port=PORT")
    if exc.errno in (errno.EADDRNOTAVAIL, errno.ENODEV):
        return f"dist.host {host!r} is not an address of this machine ({exc.strerror}); cannot bind {where}"
    return f"cannot bind {where} (dist.{name}_port): {exc.strerror}"


class LearnerService:
    """Binds its sockets on construction (so `endpoints` is known at once); `run` trains to the end.
    A port in use or a host that is not this machine's is an InputError naming it, with nothing left open."""

    def __init__(self, cfg: Config, model: GraphActorCritic, out_dir: str | Path, run_id: str,
                 free_ports: bool = False, echo: bool = False,
                 max_msg_bytes: int = 64 << 20, hwm: int = 64, watch_parent: bool = False,
                 security: ServerSecurity | None = None, bounds: wire.RunBounds | None = None) -> None:
        if cfg.dist.mode not in ("sync", "async"):
            raise NotImplementedError(f"dist.mode = {cfg.dist.mode} is not implemented")
        self.cfg, self.model, self.run_id = cfg, model, run_id
        self.out = Path(out_dir)
        self.log = setup_logging(self.out / "logs" / "learner.log", "learner", echo=echo)
        self.digest = config_digest(cfg)
        self.drops = RateLimitedLog(self.log, "dropped a message")
        self.dropped = self.drops.counts  # by reason; learner_stats.json and the STATS reply report them
        self.refusals = RateLimitedLog(self.log, "refused a CURVE handshake")
        # CURVE + allow-list when keys were given; a non-loopback host without them is refused here too
        self.security = security or server_security(cfg.dist.host, None, False)
        self.intake = Intake(cfg, run_id, rollout_spec(cfg, model, bounds), self.drops, self.security.curve)
        self.core = LearnerCore(cfg, model, self.out, self.log, streams=lambda: self.actor_state)
        self.timers = StageTimer()  # restarted at the first update; totals go to learner_stats.json
        self.actor_timers: dict[int, dict[str, float]] = {}  # latest t_* totals each actor sent
        self.stop_requested = False
        self._parent = os.getppid() if watch_parent else None  # a launcher gone -> stop, leave no orphan
        self._seq = 0
        self.peers = Peers(max_peers=4 * cfg.dist.actors + 64)
        self._weights_cache: tuple[int, dict[str, np.ndarray]] | None = None
        self._liveness_at = 0.0
        self._ctx = zmq.Context()
        self._socks: list[zmq.Socket] = []
        self._monitors: dict[str, zmq.Socket] = {}
        try:
            self.security.start(self._ctx, self.log)
            self._pull = self._bind(zmq.PULL, "rollout", free_ports, max_msg_bytes, hwm)
            self._pub = self._bind(zmq.PUB, "weights", free_ports, max_msg_bytes, hwm)
            self._router = self._bind(zmq.ROUTER, "control", free_ports, max_msg_bytes, hwm)
        except BaseException:
            self.close()
            raise
        self._router.setsockopt(zmq.ROUTER_MANDATORY, 0)
        self.endpoints = {name: sock.getsockopt(zmq.LAST_ENDPOINT).decode() for name, sock in
                          (("rollout", self._pull), ("weights", self._pub), ("control", self._router))}
        self._poller = zmq.Poller()
        self._poller.register(self._pull, zmq.POLLIN)
        self._poller.register(self._router, zmq.POLLIN)
        self.log.info("run %s: bound %s", run_id, self.endpoints)

    def _bind(self, kind: int, name: str, free: bool, max_msg_bytes: int, hwm: int) -> zmq.Socket:
        sock = self._ctx.socket(kind)
        self._socks.append(sock)
        wire.configure_socket(sock, max_msg_bytes, hwm)
        self.security.apply(sock)
        if name == "control":  # an actor that reconnects keeps its routing id: the new connection takes it over
            sock.setsockopt(zmq.ROUTER_HANDOVER, 1)
        events = zmq.EVENT_DISCONNECTED if name == "control" else 0
        if self.security.curve:
            events |= sum(_HANDSHAKE_FAILED)
        if events:
            self._monitors[name] = sock.get_monitor_socket(events)
        host, port = self.cfg.dist.host, getattr(self.cfg.dist, f"{name}_port")
        try:
            if free:
                sock.bind_to_random_port(f"tcp://{host}")
            else:
                sock.bind(f"tcp://{host}:{port}")
        except zmq.ZMQError as exc:
            raise InputError(_bind_error(exc, host, None if free else port, name)) from None
        return sock

    @property
    def spec(self) -> wire.RolloutSpec:
        return self.intake.spec

    @property
    def actor_state(self) -> dict[int, dict[str, Any]]:
        return self.intake.actor_state

    @actor_state.setter
    def actor_state(self, value: dict[int, dict[str, Any]]) -> None:
        self.intake.actor_state = value

    def use_bounds(self, bounds: wire.RunBounds) -> None:
        """Enforce the value ranges the launcher derived from this run's environment (before `run`)."""
        self.intake.spec = rollout_spec(self.cfg, self.model, bounds)
        self.log.info("rollout value ranges: %s; |episode return| <= %.6g", dict(self.spec.bounds),
                      self.spec.max_episode_return)

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

    def _send(self, peer: Peer, kind: str, meta: dict[str, Any] | None = None,
              arrays: dict[str, np.ndarray] | None = None) -> None:
        try:  # never block on a peer that does not read (its queue full): it loses this reply, no one else
            wire.send_routed(self._router, peer.identity, self._message(kind, meta, arrays), zmq.NOBLOCK)
        except zmq.Again:
            pass

    def _origin(self, frame: zmq.Frame) -> tuple[int | None, str | None]:
        """The libzmq connection (file descriptor) a message came on, and under CURVE the actor whose key
        authenticated that connection."""
        try:
            fd = frame.get(zmq.SRCFD)
        except (zmq.ZMQError, AttributeError, ValueError):
            fd = None
        key = None
        if self.security.curve:
            try:
                key = self.security.actor_of(frame.get("User-Id"))
            except zmq.ZMQError:
                key = None
        return fd, key

    def _on_control(self, identity: bytes, frames: list[zmq.Frame]) -> None:
        fd, key_name = self._origin(frames[0]) if frames else (None, None)
        try:
            msg = wire.decode([f.buffer for f in frames], expected_run_id=self.run_id)
        except wire.WireError as exc:
            self.drops.add(exc.reason, f"control socket: {exc.detail}")
            return
        now = time.monotonic()
        peer = self.peers.heard(identity, msg.sender[:64], fd, key_name, now)
        if peer.silent:
            peer.silent = False
            self.log.info("%s is heard again", peer.sender)
        if msg.type == wire.HELLO:
            self._on_hello(peer, msg, now)
        elif msg.type == wire.HEARTBEAT:
            self._send(peer, wire.HEARTBEAT)
        elif msg.type == wire.GET_WEIGHTS:
            want = msg.meta.get("min_version", 0)
            want = want if wire.is_int(want) and want >= 0 else 0
            if self.stop_requested:
                self._send(peer, wire.STOP)
            elif want <= self.version:
                self._send(peer, wire.WEIGHTS, arrays=self._weights())
            else:
                peer.waiting = want  # one deferred request per connection: a newer one replaces it
        elif msg.type == wire.CREDIT and self.intake.credits is not None:
            self._on_credit(peer, msg, now)
        elif msg.type == wire.STATS:
            meta = {"version": self.version, "env_steps": self.env_steps, "dropped": sum(self.dropped.values()),
                    "refused": sum(self.refusals.counts.values()), "rollouts": self.intake.accepted,
                    "mode": self.cfg.dist.mode}
            self._send(peer, wire.STATS, meta)
        else:  # a STOP among them: only the operator stops a run, never a peer
            self.drops.add("wrong_type", f"control socket: {msg.type} from {msg.sender[:40]!r}")

    def _on_credit(self, peer: Peer, msg: wire.Message, now: float) -> None:
        """An actor asks for its next window (async); it is granted in `_grant` when the budget allows."""
        actor = self.peers.actor_of(peer.identity)
        if actor is None:
            self.drops.add("bad_actor", f"control socket: credit request from {msg.sender[:40]!r} on a connection "
                           f"that holds no actor id (no accepted hello)")
            return
        after = msg.meta.get("after", -1)
        after = after if wire.is_int(after) and after >= -1 else -1
        self.intake.credits.request(actor, peer.identity, after, now)

    def _grant(self, now: float) -> None:
        """Answer the credit requests the budget allows now (async)."""
        for req in self.intake.grant(now, lambda identity: self.peers.alive(identity, now)):
            peer = self.peers.get(req.identity)
            if peer is not None:
                self._send(peer, wire.CREDIT)

    def _alive_actor(self, actor: int, now: float) -> bool:
        holder = self.peers.holder(actor)
        return holder is not None and self.peers.alive(holder.identity, now)

    def _write_liveness(self, now: float) -> None:
        """RUN/liveness.json: when each actor was last heard (wall-clock seconds), for the supervisor."""
        wall = time.time()
        heard = {}
        for actor in range(self.cfg.dist.actors):
            holder = self.peers.holder(actor)
            last = max(holder.last_heard if holder is not None else -np.inf,
                       self.intake.rollout_at.get(actor, -np.inf))
            if np.isfinite(last):
                heard[str(actor)] = round(wall - (now - last), 3)
        path = self.out / "liveness.json"
        tmp = path.with_suffix(".tmp")
        try:
            tmp.write_text(json.dumps({"time": round(wall, 3), "version": self.version, "heard": heard}))
            os.replace(tmp, path)
        except OSError as exc:
            self.log.warning("cannot write %s: %s", path, exc)

    def _on_hello(self, peer: Peer, msg: wire.Message, now: float) -> None:
        """Bind the claimed actor id to this connection, if the claim holds; answer with the run's facts and
        the actor's continuation."""
        actor = self.intake.claimed_actor(msg)
        if actor is None:
            self.drops.add("bad_actor", f"control socket: hello as {str(msg.meta.get('actor'))[:40]!r} from "
                           f"{msg.sender[:40]!r}")
            return
        name = actor_name(actor)
        if self.security.curve and peer.key_name != name:
            self.drops.add("wrong_identity", f"control socket: hello as {name} from a connection authenticated "
                           f"as {peer.key_name}")
            return
        if not self.peers.may_bind(actor, peer.identity, now):
            holder = self.peers.holder(actor)
            self.drops.add("id_in_use", f"control socket: hello as {name} from a new connection while the one "
                           f"holding it is alive (heard {now - holder.last_heard:.1f} s ago)")
            return
        previous = self.peers.bind(actor, peer.identity)
        if previous is not None:
            self.log.warning("%s went silent (last heard %.1f s ago) and re-joined on a new connection", name,
                             now - previous.last_heard)
        self.intake.last_seq.pop(actor, None)  # a (re)started actor counts its rollouts from 0 again
        if self.intake.credits is not None:
            self.intake.credits.hello(actor)
        self.log.info("hello from %s (envs %s)", name, str(msg.meta.get("envs"))[:20])
        meta = {"mode": self.cfg.dist.mode, "config_digest": self.digest, "rollout": self.endpoints["rollout"],
                "weights": self.endpoints["weights"], **self._continuation(actor)}
        self._send(peer, wire.HELLO, meta, self._continuation_arrays(actor))

    def _answer_waiting(self) -> None:
        for peer in self.peers:
            if peer.waiting is not None and (self.stop_requested or peer.waiting <= self.version):
                peer.waiting = None
                if self.stop_requested:
                    self._send(peer, wire.STOP)
                else:
                    self._send(peer, wire.WEIGHTS, arrays=self._weights())

    def _read_monitors(self) -> None:
        """Closed control connections (a restarted actor may take its id back) and refused CURVE handshakes."""
        for name, monitor in self._monitors.items():
            for _ in range(MAX_PER_POLL):
                try:
                    event = recv_monitor_message(monitor, zmq.NOBLOCK)
                except zmq.Again:
                    break
                kind = event["event"]
                if kind == zmq.EVENT_DISCONNECTED and name == "control":
                    self.peers.disconnected(int(event["value"]))
                elif kind in _HANDSHAKE_FAILED:
                    why = _HANDSHAKE_FAILED[kind]
                    self.refusals.add(why, f"on the {name} socket ({event['endpoint'].decode(errors='replace')}): "
                                      f"{_REFUSAL_WORDS[why]} (code {int(event['value']):#x})")

    def _read(self, sock: zmq.Socket, stage: str) -> None:
        for _ in range(MAX_PER_POLL):
            try:
                frames = sock.recv_multipart(zmq.NOBLOCK, copy=False)
            except zmq.Again:
                return
            with self.timers.stage(stage):
                if sock is self._router:
                    self._on_control(bytes(frames[0].buffer), frames[1:])
                else:
                    key_name = self._origin(frames[0])[1]
                    self.intake.admit([f.buffer for f in frames], key_name, self.version)

    def poll(self, timeout_ms: int = 100) -> None:
        """Serve what arrives within `timeout_ms` (rollouts and control), at most MAX_PER_POLL per socket."""
        events = dict(self._poller.poll(timeout_ms))
        self._read_monitors()
        if self._router in events:
            self._read(self._router, "control")
        if self._pull in events:
            self._read(self._pull, "receive")
        now = time.monotonic()
        for peer in self.peers.sweep(now):
            self.log.warning("%s silent for %.1f s (no heartbeat)", peer.sender, now - peer.last_heard)
        self._grant(now)
        if now - self._liveness_at >= LIVENESS_EVERY_S:
            self._liveness_at = now
            self._write_liveness(now)
        self.drops.tick(now)
        self.refusals.tick(now)

    # ---------------------------------------------------------------------------------------------- training

    @property
    def version(self) -> int:
        """The current weight version: the number of updates so far."""
        return self.core.updates

    @property
    def env_steps(self) -> int:
        return self.core.env_steps

    def run(self) -> dict[str, Any]:
        """Train until train.steps env steps (or the launcher is gone); tell actors to stop; return a summary."""
        core = self.core
        loop_timers: dict[str, float] | None = None
        self._pub_weights()
        try:
            with core:
                while not core.done and not self.stop_requested:
                    with self.timers.stage("poll"):  # includes receive and control, the rest is idle
                        self.poll(100)
                    if self._parent is not None and os.getppid() != self._parent:
                        self.log.error("the launching process is gone; stopping")
                        break
                    self._step()
                # the steady-state totals: the final checkpoint and the stop handshake below are not step time
                loop_timers = self.timers.totals()
                core.checkpoint()
        finally:
            self.stop_actors()
            self.drops.flush()
            self.refusals.flush()
        summary = {**core.summary(), "dropped": dict(self.dropped), "rollouts": self.intake.accepted,
                   "handshakes_refused": dict(self.refusals.counts), "timers": loop_timers,
                   "actor_timers": {str(k): v for k, v in sorted(self.actor_timers.items())}}
        if self.cfg.dist.mode == "async":  # rollouts that entered updates, by policy lag
            summary["policy_lag_counts"] = {str(k): v for k, v in sorted(self.intake.lag_counts.items())}
            summary["credits"] = {"budget": self.intake.credits.budget, "granted": self.intake.credits.grants,
                                  "partial_batches": self.intake.partial_batches}
        (self.out / "learner_stats.json").write_text(json.dumps(summary, indent=2))
        self.log.info("finished: %d updates, %d env steps, dropped %s", self.version, self.env_steps,
                      dict(self.dropped))
        return summary

    def _step(self) -> None:
        """One update when a batch is complete: learn, publish and answer the waiting actors, record."""
        now = time.monotonic()
        taken = self.intake.next_batch(self.version, now, lambda identity: self.peers.alive(identity, now),
                                       lambda actor: self._alive_actor(actor, now))
        if taken is None:
            return
        batch, metas, lags = taken
        self._grant(now)  # async: the next windows are collected while this update runs
        if self.cfg.dist.learner_delay_s > 0:
            time.sleep(self.cfg.dist.learner_delay_s)  # testing aid: a slow learner
        self.actor_timers.update({int(m["actor"]): from_meta(m) for m in metas})
        if self.version == 0:
            self.timers.restart()  # time the steady state, not the wait for actors to start
        with self.timers.stage("learn"):
            stats = self.core.learn(batch, off_policy=self.cfg.dist.mode == "async")
        with self.timers.stage("publish"):
            self._pub_weights()
            self._answer_waiting()
        with self.timers.stage("record"):  # metrics row, TensorBoard, log line, scheduled checkpoint
            self.core.record(stats, batch, metas, lags, dropped=sum(self.dropped.values()))

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

    def _continuation(self, actor: int) -> dict[str, Any]:
        """Hello-reply fields for `actor`: its episode counter and the first version it should act with
        (sync: past the current one when its rollout for that version is already held)."""
        held = self.cfg.dist.mode == "sync" and actor in self.intake.pending
        out: dict[str, Any] = {"next_version": self.version + 1 if held else self.version}
        episodes = self.actor_state.get(actor, {}).get("episodes_done")
        if episodes is not None:
            out["episodes_done"] = int(episodes)
        return out

    def _continuation_arrays(self, actor: int) -> dict[str, np.ndarray]:
        """The sampler state of `actor` after its last accepted rollout, if known."""
        state = self.actor_state.get(actor, {}).get("sampler_state")
        return {} if state is None else {wire.SAMPLER_STATE: np.ascontiguousarray(state, dtype=np.uint8)}

    def stop_actors(self, grace_s: float = 1.0) -> None:
        """Answer every waiting actor and every known peer with stop, serving stragglers for `grace_s`."""
        self.stop_requested = True
        self._answer_waiting()
        for peer in self.peers:
            if peer.open:
                self._send(peer, wire.STOP)
        deadline = time.monotonic() + grace_s
        while time.monotonic() < deadline:
            self.poll(50)
            self._answer_waiting()

    def close(self) -> None:
        """Close the sockets, monitors and the context (safe to call twice)."""
        for sock in self._socks:
            if not sock.closed:
                try:
                    sock.disable_monitor()
                except zmq.ZMQError:
                    pass
        for monitor in self._monitors.values():
            monitor.close(linger=0)
        for sock in self._socks:
            sock.close(linger=200)
        self.security.stop()
        if not self._ctx.closed:
            self._ctx.term()


def torch_threads() -> None:
    """One intra-op thread: services share the machine's cores with each other."""
    torch.set_num_threads(1)
