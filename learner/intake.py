"""How the learner service admits a rollout and forms batches from the admitted ones.

A rollout passes, in this order (the first failure is the drop reason, counted and logged rate-limited):
the wire checks (`common.wire.decode`); the actor id it claims (``meta.actor`` in 0..dist.actors-1, sent
by ``actor-K``: else "bad_actor"); under CURVE, the key that authenticated its connection must be that
actor's ("wrong_identity"); its layout and value ranges (`wire.validate_rollout`: e.g. "out_of_range");
the meta the learner reads (`wire.validate_rollout_meta`: "bad_meta"); a sequence number above the last
one of that actor ("replay"; a new HELLO of the actor resets it, as a restarted actor counts from 0); then
the mode's own checks: sync "stale" or "duplicate", async "stale", "future_version" or "queue_full".

Everything kept here is bounded: one pending rollout per actor (sync), a queue of at most
(dist.max_policy_lag + 2) batches (async; with credits, `learner.credits`, it holds at most the credit
budget unless peers send rollouts nobody granted), one sequence number and one stream position per actor.

Async batches: every dist.batch_rollouts (B; 0 = one per actor) queued rollouts make one update. Fewer make
one when waiting cannot fill the batch (`Credits.settled`: no window on its way) or the oldest has waited
`BATCH_WAIT_S` (a slow or hung actor, or, before the first update, actors still starting).
"""

from __future__ import annotations

import dataclasses
import time
from collections import Counter, deque
from collections.abc import Callable
from typing import Any

import numpy as np

from common import wire
from common.config import Config
from common.ratelog import RateLimitedLog
from common.rollout import Rollout
from common.security import actor_name
from learner.core import Streams
from learner.credits import Credits

BATCH_WAIT_S = 2.0  # async: a batch short of B rollouts is taken once its oldest has waited this long

_ROLLOUT_ARRAYS = frozenset(f.name for f in dataclasses.fields(Rollout)) - {"version"}
# Drop reasons of the learner service on top of `wire.REASONS`.
SERVICE_REASONS = frozenset({"bad_actor", "wrong_identity", "id_in_use", "replay", "stale", "duplicate",
                             "future_version", "queue_full"})


class Intake:
    """The admitted rollouts of a run and where each actor's streams stand after its last one."""

    def __init__(self, cfg: Config, run_id: str, spec: wire.RolloutSpec, drops: RateLimitedLog,
                 curve: bool) -> None:
        self.cfg, self.run_id, self.spec, self.drops, self.curve = cfg, run_id, spec, drops, curve
        self.actor_state: Streams = {}          # actor id -> episodes_done, at_boundary, sampler_state
        self.last_seq: dict[int, int] = {}      # actor id -> seq of its last admitted rollout
        self.pending: dict[int, tuple[Rollout, dict[str, Any]]] = {}  # sync: actor id -> rollout, meta
        self.queue: deque[tuple[Rollout, dict[str, Any]]] = deque()   # async: admitted, in arrival order
        self.arrivals: deque[float] = deque()   # async: time.monotonic() of each queued rollout's arrival
        self.queued: Counter[int] = Counter()   # async: queued rollouts per actor
        self.rollout_at: dict[int, float] = {}  # actor id -> time.monotonic() of its last rollout (liveness)
        self.lag_counts: Counter[int] = Counter()  # async: rollouts used in updates, by policy lag
        self.accepted = 0
        self.want = cfg.dist.batch_rollouts or cfg.dist.actors
        self.queue_cap = self.want * (cfg.dist.max_policy_lag + 2)
        self.credits = Credits(cfg.dist.actors, self.want, cfg.dist.max_policy_lag) \
            if cfg.dist.mode == "async" else None
        self.partial_batches = 0  # async: updates made with fewer than `want` rollouts

    def claimed_actor(self, msg: wire.Message) -> int | None:
        """The actor id a message claims, if it is one of this run's and matches the message's sender."""
        actor = msg.meta.get("actor")
        if not wire.is_int(actor) or not 0 <= actor < self.cfg.dist.actors or msg.sender != actor_name(actor):
            return None
        return actor

    def admit(self, frames: list[memoryview], key_name: str | None, version: int) -> None:
        """Check one message from the rollout socket and keep it for a batch, or count and log why not.
        `key_name` is the actor whose CURVE key authenticated the connection (None without CURVE)."""
        try:
            msg = wire.decode(frames, expected_run_id=self.run_id)
        except wire.WireError as exc:
            self.drops.add(exc.reason, f"rollout socket: {exc.detail}")
            return
        actor = self.claimed_actor(msg)
        if actor is None:
            self.drops.add("bad_actor", f"rollout socket: actor {str(msg.meta.get('actor'))[:40]!r} from "
                           f"{msg.sender[:40]!r} (this run has actors 0..{self.cfg.dist.actors - 1})")
            return
        if self.curve and key_name != actor_name(actor):
            self.drops.add("wrong_identity", f"rollout socket: a rollout as {actor_name(actor)} from a "
                           f"connection authenticated as {key_name}")
            return
        self.rollout_at[actor] = time.monotonic()
        if self.credits is not None:  # its window has come in, whatever its fate below
            self.credits.arrived(actor, msg.seq)
        try:
            wire.validate_rollout(msg, self.spec)
            meta = wire.validate_rollout_meta(msg.meta, self.spec, msg.arrays["actions"].shape[1])
        except wire.WireError as exc:
            self.drops.add(exc.reason, f"rollout socket: {actor_name(actor)}: {exc.detail}")
            return
        last = self.last_seq.get(actor)
        if last is not None and msg.seq <= last:
            self.drops.add("replay", f"rollout socket: {actor_name(actor)} sent seq {msg.seq} after {last}")
            return
        self.last_seq[actor] = msg.seq
        if self.cfg.dist.mode == "async":
            self._admit_async(msg, actor, meta, version)
        else:
            self._admit_sync(msg, actor, meta, version)

    def _admit_sync(self, msg: wire.Message, actor: int, meta: dict[str, Any], version: int) -> None:
        if msg.weight_version != version:
            self.drops.add("stale", f"rollout socket: actor {actor} sent version {msg.weight_version}, "
                           f"current {version}")
            return
        if actor in self.pending:
            self.drops.add("duplicate", f"rollout socket: second rollout of actor {actor} for version {version}")
            return
        self._record_actor(actor, msg, meta)
        self.pending[actor] = (self._rollout(msg), meta)
        self.accepted += 1

    def _admit_async(self, msg: wire.Message, actor: int, meta: dict[str, Any], version: int) -> None:
        """Queue a rollout whose policy lag is within dist.max_policy_lag; drop one from the future or too old;
        a full queue drops its oldest."""
        lag = version - msg.weight_version
        if lag < 0:
            self.drops.add("future_version", f"rollout socket: actor {actor} sent version {msg.weight_version}, "
                           f"current {version}")
        elif lag > self.cfg.dist.max_policy_lag:
            self.drops.add("stale", f"rollout socket: actor {actor} sent version {msg.weight_version}, current "
                           f"{version} (lag {lag} > {self.cfg.dist.max_policy_lag})")
        else:
            if len(self.queue) >= self.queue_cap:
                old, _ = self._pop()
                self.drops.add("queue_full", f"rollout queue: {self.queue_cap} rollouts waiting; dropped the "
                               f"oldest (version {old.version})")
            self.queue.append((self._rollout(msg), meta))
            self.arrivals.append(time.monotonic())
            self.queued[actor] += 1
            self.accepted += 1

    def _pop(self) -> tuple[Rollout, dict[str, Any]]:
        """The oldest queued rollout, out of the queue."""
        item = self.queue.popleft()
        self.arrivals.popleft()
        self.queued[int(item[1]["actor"])] -= 1
        return item

    @staticmethod
    def _rollout(msg: wire.Message) -> Rollout:
        arrays = {name: np.array(arr) for name, arr in msg.arrays.items() if name in _ROLLOUT_ARRAYS}  # own copies
        return Rollout(**arrays, version=msg.weight_version)

    def _record_actor(self, actor: int, msg: wire.Message, meta: dict[str, Any]) -> None:
        """Remember where `actor` stands after the rollout just admitted (checkpointed, sent on re-join)."""
        state = msg.arrays.get(wire.SAMPLER_STATE)
        self.actor_state[actor] = {"episodes_done": meta["episodes_done"], "at_boundary": meta["at_boundary"],
                                   "sampler_state": None if state is None else np.array(state, dtype=np.uint8)}

    def grant(self, now: float, alive: Callable[[bytes], bool]) -> list:
        """Async: the credit requests to grant now (`learner.credits`); none in sync mode."""
        if self.credits is None:
            return []
        return self.credits.grant(self.queued, len(self.queue), now, alive)

    def next_batch(self, version: int, now: float | None = None, alive: Callable[[bytes], bool] | None = None,
                   alive_actor: Callable[[int], bool] | None = None,
                   ) -> tuple[Rollout, list[dict[str, Any]], list[int]] | None:
        """The next update's batch, its rollouts' meta and policy lags, or None while it is incomplete.
        Async: `alive` (a control connection) and `alive_actor` (an actor id's holder) tell the credits whether
        a rollout may still come; without them only full batches and waits past BATCH_WAIT_S count."""
        if self.cfg.dist.mode == "async":
            taken = self._take_async(version, time.monotonic() if now is None else now, alive, alive_actor)
            if taken is None:
                return None
            parts, metas = taken
            lags = [version - r.version for r in parts]
            self.lag_counts.update(lags)
            return Rollout.concat(parts), metas, lags
        if len(self.pending) < self.cfg.dist.actors:
            return None
        order = sorted(self.pending)
        batch = Rollout.concat([self.pending[k][0] for k in order])
        metas = [self.pending[k][1] for k in order]
        self.pending = {}
        return batch, metas, [0]

    def _take_async(self, version: int, now: float, alive: Callable[[bytes], bool] | None,
                    alive_actor: Callable[[int], bool] | None) -> tuple[list[Rollout], list[dict[str, Any]]] | None:
        """The next async batch (dropping queued rollouts that went stale meanwhile), or None while waiting can
        still fill it: `want` rollouts, or fewer when no more are on their way or the oldest waited long."""
        max_lag = self.cfg.dist.max_policy_lag
        if any(version - r.version > max_lag for r, _ in self.queue):
            kept = [(item, t) for item, t in zip(self.queue, self.arrivals, strict=True)
                    if version - item[0].version <= max_lag]
            for r, m in self.queue:
                if version - r.version > max_lag:
                    self.queued[int(m["actor"])] -= 1
                    self.drops.add("stale", f"rollout queue: a queued rollout of version {r.version} aged past lag "
                                   f"{max_lag} (current {version})")
            self.queue = deque(item for item, _ in kept)
            self.arrivals = deque(t for _, t in kept)
        if not self.queue:
            return None
        if len(self.queue) < self.want:
            settled = (self.credits is not None and alive is not None and alive_actor is not None
                       and self.credits.settled(self.queued, now, alive, alive_actor, first=not self.lag_counts))
            if not settled and now - self.arrivals[0] < BATCH_WAIT_S:
                return None
            self.partial_batches += 1
        taken = [self._pop() for _ in range(min(self.want, len(self.queue)))]
        return [r for r, _ in taken], [m for _, m in taken]
