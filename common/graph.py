"""Agent-graph helpers shared by the simulator and the networks (numpy only, no torch)."""

from __future__ import annotations

import numpy as np


def hop_distances(adjacency: np.ndarray) -> np.ndarray:
    """All-pairs hop distance of an undirected graph by breadth-first search; unreachable pairs get N."""
    adjacency = np.asarray(adjacency, dtype=bool)
    n = adjacency.shape[0]
    dist = np.full((n, n), n, dtype=np.int64)
    for src in range(n):
        dist[src, src] = 0
        frontier = [src]
        while frontier:
            nxt = []
            for u in frontier:
                for v in np.flatnonzero(adjacency[u]):
                    if dist[src, v] > dist[src, u] + 1:
                        dist[src, v] = dist[src, u] + 1
                        nxt.append(v)
            frontier = nxt
    return dist
