"""The learner's table of control connections: who each one is, whether it is still there, which actor id
it holds, and its one deferred weights request. Bounded, so no number of peers can grow it without limit.

An actor id is bound to the connection whose HELLO the learner accepted. A HELLO for an id whose bound
connection is alive (open, and heard within `TAKEOVER_AFTER_S`) comes from someone else and is refused;
once the bound connection closes (ZeroMQ's socket monitor reports the disconnect, e.g. of a killed actor)
or falls silent that long, a new HELLO takes the id over (a restarted actor). Requests are kept per
connection and never moved or forgotten on a re-bind, so a claimant can neither steal nor cancel the real
actor's pending weights request.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass

SILENT_AFTER_S = 5.0     # a connection without any message for this long is reported (5 missed 1 s heartbeats)
TAKEOVER_AFTER_S = 10.0  # a bound connection silent this long no longer holds its actor id against a HELLO
FORGET_AFTER_S = 60.0    # an unbound connection silent this long is forgotten


@dataclass
class Peer:
    """One control connection (a ROUTER routing identity)."""

    identity: bytes
    sender: str                 # the name it last gave (for logs only; never trusted)
    key_name: str | None        # CURVE: the actor its key was issued to
    fd: int | None              # the connection's file descriptor in libzmq, to match disconnect events
    last_heard: float
    open: bool = True
    silent: bool = False
    waiting: int | None = None  # deferred get_weights: the min_version asked for


class Peers:
    """At most `max_peers` connections; when full, the least recently heard connection that holds no actor
    id makes room."""

    def __init__(self, max_peers: int) -> None:
        self.max_peers = max_peers
        self._peers: dict[bytes, Peer] = {}   # least recently heard first
        self._by_fd: dict[int, bytes] = {}
        self.bound: dict[int, bytes] = {}     # actor id -> identity of the connection holding it

    def __len__(self) -> int:
        return len(self._peers)

    def __iter__(self) -> Iterator[Peer]:
        return iter(list(self._peers.values()))

    def get(self, identity: bytes) -> Peer | None:
        return self._peers.get(identity)

    def heard(self, identity: bytes, sender: str, fd: int | None, key_name: str | None, now: float) -> Peer:
        """Record a message from `identity` (creating its entry, evicting one if full); return its entry."""
        peer = self._peers.pop(identity, None)
        if peer is None:
            while len(self._peers) >= self.max_peers:
                self._evict()
            peer = Peer(identity, sender, key_name, fd, now)
        peer.sender, peer.last_heard = sender, now
        if fd is not None and fd != peer.fd:  # a new connection (a reconnect handed the routing id over)
            if peer.fd is not None and self._by_fd.get(peer.fd) == identity:
                del self._by_fd[peer.fd]
            peer.fd, peer.open = fd, True
        if fd is not None:
            other = self._by_fd.get(fd)
            if other is not None and other != identity:  # the fd was reused: its earlier connection is gone
                self._closed(other)
            self._by_fd[fd] = identity
        self._peers[identity] = peer  # most recently heard last
        return peer

    def _evict(self) -> None:
        holders = set(self.bound.values())
        victim = next((i for i in self._peers if i not in holders), next(iter(self._peers)))
        self._remove(victim)

    def _remove(self, identity: bytes) -> None:
        peer = self._peers.pop(identity, None)
        if peer is not None and peer.fd is not None and self._by_fd.get(peer.fd) == identity:
            del self._by_fd[peer.fd]
        for actor in [a for a, i in self.bound.items() if i == identity]:
            del self.bound[actor]

    def _closed(self, identity: bytes) -> None:
        """A connection is gone: forget it, unless it holds an actor id (kept, closed, for the re-join log)."""
        peer = self._peers.get(identity)
        if peer is None:
            return
        if peer.fd is not None and self._by_fd.get(peer.fd) == identity:
            del self._by_fd[peer.fd]
        if identity in self.bound.values():
            peer.open, peer.waiting, peer.fd = False, None, None
        else:
            self._remove(identity)

    def disconnected(self, fd: int) -> None:
        """The socket monitor saw connection `fd` close."""
        identity = self._by_fd.get(fd)
        if identity is not None:
            self._closed(identity)

    def alive(self, identity: bytes, now: float) -> bool:
        peer = self._peers.get(identity)
        return peer is not None and peer.open and now - peer.last_heard <= TAKEOVER_AFTER_S

    def holder(self, actor: int) -> Peer | None:
        """The connection that holds `actor`, if any."""
        identity = self.bound.get(actor)
        return None if identity is None else self._peers.get(identity)

    def actor_of(self, identity: bytes) -> int | None:
        """The actor id the connection `identity` holds, if any."""
        return next((actor for actor, held in self.bound.items() if held == identity), None)

    def may_bind(self, actor: int, identity: bytes, now: float) -> bool:
        """Whether a HELLO for `actor` from `identity` may take the id: it is free, already this connection's,
        or held by a connection that is gone or silent."""
        current = self.bound.get(actor)
        return current is None or current == identity or not self.alive(current, now)

    def bind(self, actor: int, identity: bytes) -> Peer | None:
        """Give `actor` to `identity`; return the connection that held it before (None if none or itself).
        A previous holder that has closed is forgotten."""
        previous = self.bound.get(actor)
        self.bound[actor] = identity
        if previous is None or previous == identity:
            return None
        old = self._peers.get(previous)
        if old is not None and not old.open:
            self._remove(previous)
        return old

    def sweep(self, now: float) -> list[Peer]:
        """Forget unbound connections silent for FORGET_AFTER_S; return those newly silent for
        SILENT_AFTER_S (to report once)."""
        newly = []
        holders = set(self.bound.values())
        for peer in list(self._peers.values()):
            quiet = now - peer.last_heard
            if quiet > FORGET_AFTER_S and peer.identity not in holders:
                self._remove(peer.identity)
            elif quiet > SILENT_AFTER_S and peer.open and not peer.silent:
                peer.silent = True
                newly.append(peer)
        return newly
