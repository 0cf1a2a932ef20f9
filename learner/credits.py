"""Async mode's flow control: an actor collects a window only when the learner has granted it one, and the
learner grants no more windows than its next updates can use. See docs/architecture.md#async.

Without it, A free-running actors produce rollouts at their own pace; when they outpace the learner (many
actors on few cores: every actor takes CPU from the learner), rollouts wait in queues until they are older
than dist.max_policy_lag and are thrown away, and the learner's memory fills with them. With credits:

- after each rollout (and before its first) an actor sends `CREDIT` (meta `after`: the seq of the rollout
  it just sent, -1 before the first) and waits, heart-beating, for the learner's `CREDIT` reply, whose
  weight version it then acts with (at least);
- the learner grants a request once the rollout it follows has arrived (or `LAPSE_S` has passed: it was
  lost), while the windows granted and not yet delivered plus the rollouts queued stay below the budget
  (`budget`: min(A, B * max(1, L)) for B rollouts per update and L = dist.max_policy_lag, at least B), and
  at most `per_actor` of them are one actor's (one, unless B > A): a fast actor cannot crowd out the rest;
- requests are served oldest first; a grant is made as the learner takes a batch, so actors collect the
  next batch while the update runs, with the weights of the version before it (policy lag 1).

A grant whose actor goes away (its connection closed, silent, or it says HELLO again) is void. Everything
here is bounded by the number of actors.
"""

from __future__ import annotations

import math
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass

LAPSE_S = 5.0  # a request whose preceding rollout has not arrived after this long is granted anyway


@dataclass
class Request:
    """An actor's pending request for its next window, on the control connection `identity`."""

    actor: int
    identity: bytes
    after: int      # seq of the rollout sent just before (-1: none)
    since: float    # time.monotonic() of the request


class Credits:
    """Pending requests and granted windows of one async run (A actors, B rollouts per update, lag bound L)."""

    def __init__(self, actors: int, batch: int, max_lag: int) -> None:
        self.actors = actors
        self.budget = batch if batch >= actors else min(actors, batch * max(1, max_lag))
        self.per_actor = max(1, math.ceil(self.budget / actors))
        self.requests: dict[int, Request] = {}             # actor -> its pending request (a newer one replaces)
        self.granted: dict[int, tuple[bytes, float]] = {}  # actor -> (connection, time) of its window in flight
        self.seen: dict[int, int] = {}                     # actor -> highest seq of its rollouts that arrived
        self.joined: set[int] = set()                      # actors that said HELLO to this learner
        self.first_wave = actors  # actors the first update waits for (a supervisor may start the rest later)
        self.grants = 0

    def request(self, actor: int, identity: bytes, after: int, now: float) -> None:
        """`actor` asks for a window: it collects none now, so a grant it holds is used up."""
        self.granted.pop(actor, None)
        self.requests[actor] = Request(actor, identity, after, now)

    def arrived(self, actor: int, seq: int) -> None:
        """A rollout of `actor` reached the learner (whatever becomes of it): its window is no longer in flight."""
        self.seen[actor] = max(self.seen.get(actor, -1), seq)
        self.granted.pop(actor, None)

    def hello(self, actor: int) -> None:
        """`actor` (re)started: forget its grants, requests and sequence numbers (a new process counts from 0)."""
        self.granted.pop(actor, None)
        self.requests.pop(actor, None)
        self.seen.pop(actor, None)
        self.joined.add(actor)

    def in_flight(self, alive: Callable[[bytes], bool]) -> int:
        """Windows granted and not delivered whose actor is still there (void grants are forgotten)."""
        for actor, (identity, _) in list(self.granted.items()):
            if not alive(identity):
                del self.granted[actor]
        return len(self.granted)

    def grant(self, queued: Counter[int], queue_len: int, now: float,
              alive: Callable[[bytes], bool]) -> list[Request]:
        """The requests to grant now, oldest first, within the budget; they are recorded as in flight."""
        out: list[Request] = []
        outstanding = self.in_flight(alive) + queue_len
        for req in sorted(self.requests.values(), key=lambda r: r.since):
            if outstanding >= self.budget:
                break
            if not alive(req.identity):
                del self.requests[req.actor]
                continue
            if req.after >= 0 and self.seen.get(req.actor, -1) < req.after and now - req.since < LAPSE_S:
                continue  # its last rollout is still on its way: it counts as queued once it is here
            if queued[req.actor] >= self.per_actor:
                continue
            del self.requests[req.actor]
            self.granted[req.actor] = (req.identity, now)
            outstanding += 1
            self.grants += 1
            out.append(req)
        return out

    def settled(self, queued: Counter[int], now: float, alive: Callable[[bytes], bool],
                alive_actor: Callable[[int], bool], first: bool = False) -> bool:
        """Whether no rollout is on its way: every actor has one queued, is waiting for a window it cannot get
        yet, or is gone (not yet started counts as gone, except before the `first` update, which waits until
        `first_wave` actors have joined). Then waiting cannot fill a batch, and the learner takes the rollouts
        it has (a smaller batch)."""
        if (first and len(self.joined) < self.first_wave) or self.in_flight(alive):
            return False
        for actor in range(self.actors):
            if queued[actor] or not alive_actor(actor):
                continue
            req = self.requests.get(actor)
            if req is None:
                return False  # between its rollout and its next request
            if req.after >= 0 and self.seen.get(actor, -1) < req.after and now - req.since < LAPSE_S:
                return False  # its rollout is still on its way
        return True
