"""The unit of data between actor and learner: one n-step window of E environments, as numpy arrays.

Arrays (T window steps, E envs, N agents, O obs width, A actions, H hidden width):
obs [T,E,N,O] float32; actions [T,E,N] int64; rewards [T,E,N] float32 (raw, per agent, unmixed);
dones [T,E] bool (episode ended after step t); starts [T,E] bool (obs t is an episode's first);
values [T,E,N] and logp [T,E,N] float32 from acting time; bootstrap [E,N] float32 (V of the observation
after the window, 0 where the window ended an episode); h0, c0 [E,N,H], fp0 [E,N,A]: the recurrent state
before step 0 (before the reset that `starts[0]` implies); version: the weight version that acted;
links [T,E,N,D] bool (optional, None without message loss): which neighbour messages agent i received with
obs t (slot s = its s-th neighbour in ascending order, docs/scenarios.md#message-loss).
"""

from __future__ import annotations

from dataclasses import dataclass, fields

import numpy as np

from common.errors import InputError


@dataclass
class Rollout:
    obs: np.ndarray
    actions: np.ndarray
    rewards: np.ndarray
    dones: np.ndarray
    starts: np.ndarray
    values: np.ndarray
    logp: np.ndarray
    bootstrap: np.ndarray
    h0: np.ndarray
    c0: np.ndarray
    fp0: np.ndarray
    version: int = 0
    links: np.ndarray | None = None

    def arrays(self) -> dict[str, np.ndarray]:
        """The named arrays (everything but the version; `links` only when present)."""
        return {f.name: getattr(self, f.name) for f in fields(self)
                if f.name != "version" and getattr(self, f.name) is not None}

    def validate(self) -> None:
        """Check shapes, dtypes and finiteness against each other; raise InputError naming the first bad one."""
        t, e, n = self.actions.shape
        expect = {
            "obs": ((t, e, n, self.obs.shape[-1]), np.float32),
            "actions": ((t, e, n), np.int64),
            "rewards": ((t, e, n), np.float32),
            "dones": ((t, e), np.bool_),
            "starts": ((t, e), np.bool_),
            "values": ((t, e, n), np.float32),
            "logp": ((t, e, n), np.float32),
            "bootstrap": ((e, n), np.float32),
            "h0": ((e, n, self.h0.shape[-1]), np.float32),
            "c0": ((e, n, self.h0.shape[-1]), np.float32),
            "fp0": ((e, n, self.fp0.shape[-1]), np.float32),
        }
        for name, (shape, dtype) in expect.items():
            arr = getattr(self, name)
            if arr.shape != shape or arr.dtype != dtype:
                raise InputError(f"rollout field {name}: expected {np.dtype(dtype).name}{list(shape)}, "
                                 f"got {arr.dtype.name}{list(arr.shape)}")
            if arr.dtype.kind == "f" and not np.isfinite(arr).all():
                raise InputError(f"rollout field {name}: contains NaN or inf")
        if self.links is not None:
            links = self.links
            if links.dtype != np.bool_ or links.ndim != 4 or links.shape[:3] != (t, e, n) or links.shape[3] < 1:
                raise InputError(f"rollout field links: expected bool[{t}, {e}, {n}, D], "
                                 f"got {links.dtype.name}{list(links.shape)}")

    @staticmethod
    def concat(parts: list[Rollout]) -> Rollout:
        """Join windows of different environments (same T) along the env axis into one batch."""
        if len(parts) == 1:
            return parts[0]
        if len({p.links is None for p in parts}) > 1:
            raise InputError("cannot join windows with and without link masks")
        joined = {}
        for name in parts[0].arrays():
            axis = 0 if name in ("bootstrap", "h0", "c0", "fp0") else 1
            joined[name] = np.concatenate([getattr(p, name) for p in parts], axis=axis)
        return Rollout(**joined, version=min(p.version for p in parts))
