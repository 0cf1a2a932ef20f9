"""Message loss between neighbouring agents (the scenario key `links.loss`, docs/scenarios.md#message-loss).

At every acting step (the observation after a reset and after each control step) each directed link j -> i of
the agent graph drops its message with probability p, independently. The mask is drawn here, by the
environment, not by the networks: then the local trainer and every actor see the same masks (they run the same
seeded episodes), and the networks, the acting kernel and the learner only read it. Each episode draws from
its own stream, spawned from the episode seed with `LINK_STREAM`, so turning loss on moves no other random
stream (loads, faults, noise) and a restarted episode draws the same masks again.

Layout: `mask` [E, N, D] bool, slot s of agent i is its s-th neighbour in ascending order (the slots of
`common.nets.layers.NeighbourGather` and `actor.policy.neighbour_table`); True = received. Padding slots
(beyond an agent's degree) are always False.
"""

from __future__ import annotations

import numpy as np

LINK_STREAM = 3  # spawn key of the per-episode generator of the link masks (loads 0/none, noise 1, faults 2)


def neighbour_slots(adjacency: np.ndarray) -> np.ndarray:
    """real [N, D] bool: slot s of agent i holds a neighbour (D = the largest degree, at least 1)."""
    adjacency = np.asarray(adjacency, dtype=bool)
    degree = adjacency.sum(axis=1)
    width = max(1, int(degree.max(initial=0)))
    return np.arange(width)[None, :] < degree[:, None]


def received_adjacency(adjacency: np.ndarray, links: np.ndarray) -> np.ndarray:
    """[E, N, N] float: entry (e, i, j) is 1 where agent i is j's neighbour and received j's message in env e
    (links [E, N, D] in the slot order above): the agent graph as it stands at one step, for controllers."""
    adjacency = np.asarray(adjacency, dtype=bool)
    out = np.zeros((links.shape[0], *adjacency.shape))
    for i in range(adjacency.shape[0]):
        nb = np.flatnonzero(adjacency[i])
        out[:, i, nb] = links[:, i, : len(nb)]
    return out


class LinkLoss:
    """The link masks of E environments: `start(e, seed)` at every episode start of env e, `draw(envs)` for
    every observation returned to the caller; `mask` holds the masks of the current observations."""

    def __init__(self, adjacency: np.ndarray, loss: float, n_envs: int) -> None:
        if not 0.0 <= loss < 1.0:
            raise ValueError(f"message loss must be in [0, 1), got {loss}")
        self.loss = float(loss)
        self.real = neighbour_slots(adjacency)
        self.mask = np.broadcast_to(self.real, (n_envs, *self.real.shape)).copy()
        self._rngs = [np.random.default_rng(0) for _ in range(n_envs)]

    def start(self, env: int, seed: int) -> None:
        """Env `env` begins the episode of `seed`: its masks come from that episode's own stream."""
        self._rngs[env] = np.random.default_rng(np.random.SeedSequence(int(seed), spawn_key=(LINK_STREAM,)))

    def draw(self, envs: np.ndarray) -> None:
        """Draw the masks of the given envs' new observations: one uniform per slot (padding included, so the
        stream advances the same on every graph row), a link received when it is at least p."""
        for e in envs:
            self.mask[e] = (self._rngs[e].random(self.real.shape) >= self.loss) & self.real
