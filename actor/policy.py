"""The acting policy: the learner's networks run forward without torch, over the same stacked weights.

`ActingPolicy` holds one NumPy array per entry of the torch network's state_dict (same names, shapes and
dtypes, so a weights message loads into it as into the model) and runs a step with the compiled kernel of
`actor.act_kernel`. What each algorithm feeds its LSTM is described by one row of `ACTING`; everything else
(encoder, LSTM, actor head, neighbourhood critic, state reset at episode starts) is shared, as in
`common.nets.base`. ConseNet's parameter averaging happens in the learner after each optimiser step, so
actors receive averaged weights and act like IA2C without neighbour observations. MAPPO's critic is not the
neighbourhood one but an MLP over all agents' observations, run by `actor.act_kernel.global_values`.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import NamedTuple

import numpy as np

from actor.act_kernel import H_GATHER, H_MEAN, H_NONE, act_step, global_values
from common.graph import hop_distances


@dataclass(frozen=True)
class Acting:
    """What an algorithm's LSTM reads besides its encoded observation (see docs/algorithms.md)."""

    neighbour_obs: bool = True   # the encoder reads [o_i, o_j for neighbours j] (else o_i only)
    fp_message: bool = False     # relu(W_p [fp_j]) of the neighbours' previous policies
    h_message: int = H_NONE      # H_GATHER: relu(W_m [h_j]); H_MEAN: W_m mean_j h_j
    additive: bool = False       # messages are added to the encoded observation (else concatenated)
    own_action: bool = False     # DIAL: plus the one-hot of the agent's previous greedy action
    global_critic: bool = False  # MAPPO: V from all agents' observations (else the neighbourhood critic)

    @property
    def layers(self) -> tuple[str, ...]:
        return ("obs_fc",) + ("fp_fc",) * self.fp_message + ("msg_fc",) * (self.h_message != H_NONE)


ACTING: dict[str, Acting] = {
    "powernet": Acting(fp_message=True, h_message=H_GATHER),
    "neurcomm": Acting(fp_message=True, h_message=H_GATHER),
    "commnet": Acting(h_message=H_MEAN, additive=True),
    "dial": Acting(h_message=H_GATHER, additive=True, own_action=True),
    "consenet": Acting(neighbour_obs=False),
    "fprint": Acting(fp_message=True),
    "ia2c": Acting(),
    "mappo": Acting(neighbour_obs=False, global_critic=True),
}


class State(NamedTuple):
    """Recurrent acting state, env-major: LSTM h, c [B, N, H] and the fingerprints fp [B, N, A]."""

    h: np.ndarray
    c: np.ndarray
    fp: np.ndarray


class Acted(NamedTuple):
    """One acting step's results: the new state and logits [B, N, A], actions, logp and values [B, N]."""

    state: State
    logits: np.ndarray
    actions: np.ndarray
    logp: np.ndarray
    values: np.ndarray


def neighbour_table(adjacency: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Each agent's neighbours in ascending order, padded to the largest degree D (at least 1): index [N, D]
    int64 and degree [N] int64, the same slots as `common.nets.layers.NeighbourGather`."""
    adjacency = np.asarray(adjacency, dtype=bool)
    n = adjacency.shape[0]
    rows = [np.flatnonzero(adjacency[i]) for i in range(n)]
    width = max(1, max((len(r) for r in rows), default=0))
    index = np.zeros((n, width), dtype=np.int64)
    for i, r in enumerate(rows):
        index[i, : len(r)] = r
    return index, np.array([len(r) for r in rows], dtype=np.int64)


def state_dict_layout(algorithm: str, adjacency: np.ndarray, obs_dim: int, n_actions: int, hidden: int,
                      share_weights: bool) -> dict[str, tuple[tuple[int, ...], np.dtype]]:
    """Name -> (shape, dtype) of the torch network's state_dict, computed without torch."""
    acting = ACTING[algorithm]
    n = int(np.asarray(adjacency).shape[0])
    width = neighbour_table(adjacency)[0].shape[1]
    rows = 1 if share_weights else n
    in_dim = obs_dim + (n if share_weights else 0)
    f32, i64 = np.dtype(np.float32), np.dtype(np.int64)
    out: dict[str, tuple[tuple[int, ...], np.dtype]] = {
        "hop_distance": ((n, n), i64), "agent_id": ((n, n if share_weights else 0), f32)}
    if algorithm == "consenet":
        out["consensus"] = ((n, n), f32)
    out.update({"neighbours.index": ((n * width,), i64), "neighbours.mask": ((n, width, 1), f32),
                "neighbours.has_neighbours": ((n, 1), f32), "neighbours.inv_degree": ((n, 1), f32)})
    inputs = {"obs_fc": in_dim * (1 + width) if acting.neighbour_obs else in_dim, "fp_fc": n_actions * width,
              "msg_fc": hidden * width if acting.h_message == H_GATHER else hidden}
    for layer in acting.layers:
        out[f"{layer}.weight"] = ((rows, inputs[layer], hidden), f32)
        out[f"{layer}.bias"] = ((rows, hidden), f32)
    lstm_in = hidden if acting.additive else hidden * len(acting.layers)
    out.update({"lstm.weight": ((rows, lstm_in + hidden, 4 * hidden), f32), "lstm.bias": ((rows, 4 * hidden), f32),
                "actor.weight": ((rows, hidden, n_actions), f32), "actor.bias": ((rows, n_actions), f32)})
    if acting.global_critic:  # torch Linear layers: weight [out, in]
        out.update({"critic.fc1.weight": ((hidden, n * obs_dim), f32), "critic.fc1.bias": ((hidden,), f32),
                    "critic.fc2.weight": ((hidden, hidden), f32), "critic.fc2.bias": ((hidden,), f32),
                    "critic.out.weight": ((n, hidden), f32), "critic.out.bias": ((n,), f32)})
    else:
        out.update({"critic.weight": ((rows, hidden + width * n_actions, 1), f32), "critic.bias": ((rows, 1), f32)})
    return out


class ActingPolicy:
    """A CPU copy of one algorithm's network for acting: `load` the learner's weights, then `act`."""

    def __init__(self, algorithm: str, adjacency: np.ndarray, obs_dim: int, n_actions: int, hidden: int = 64,
                 share_weights: bool = False) -> None:
        if algorithm not in ACTING:
            raise ValueError(f"no acting path for algorithm {algorithm!r}; known: {', '.join(ACTING)}")
        if ACTING[algorithm].own_action and n_actions > hidden:
            raise ValueError("DIAL embeds the previous action as a one-hot of width H: needs H >= actions")
        self.algorithm, self.acting = algorithm, ACTING[algorithm]
        self.n_agents, self.obs_dim, self.n_actions, self.hidden = len(adjacency), obs_dim, n_actions, hidden
        layout = state_dict_layout(algorithm, adjacency, obs_dim, n_actions, hidden, share_weights)
        self.shapes = {name: shape for name, (shape, _) in layout.items()}
        self.params = {name: np.zeros(shape, dtype=dtype) for name, (shape, dtype) in layout.items()}
        self._nb, self._cnt = neighbour_table(adjacency)
        self._all_links: dict[int, np.ndarray] = {}  # batch size -> an all-True link mask (no message loss)
        self.params["hop_distance"][:] = hop_distances(adjacency)
        if share_weights:
            self.params["agent_id"][:] = np.eye(self.n_agents, dtype=np.float32)
        self._mode = np.array([self.acting.neighbour_obs, self.acting.fp_message, self.acting.h_message,
                               self.acting.additive, self.acting.own_action, self.acting.global_critic],
                              dtype=np.int64)
        self._args = self._kernel_weights()

    @classmethod
    def for_model(cls, model_cfg: object, adjacency: np.ndarray, obs_dim: int, n_actions: int) -> ActingPolicy:
        """The policy of a `ModelConfig` (algorithm, hidden, share_weights) on an agent graph."""
        return cls(model_cfg.algorithm, adjacency, obs_dim, n_actions, hidden=model_cfg.hidden,
                   share_weights=model_cfg.share_weights)

    def _kernel_weights(self) -> tuple[np.ndarray, ...]:
        """Views of the parameters in `act_step`'s order; absent layers are empty [rows, 0, H] arrays."""
        p, rows, hidden = self.params, self.params["lstm.weight"].shape[0], self.hidden
        empty_w = np.zeros((rows, 0, hidden), dtype=np.float32)
        empty_b = np.zeros((rows, hidden), dtype=np.float32)
        if self.acting.global_critic:  # act_step skips its critic; `global_values` reads the critic.* layers
            critic, critic_b = np.zeros((rows, 0, 1), dtype=np.float32), np.zeros((rows, 1), dtype=np.float32)
        else:
            critic, critic_b = p["critic.weight"], p["critic.bias"]
        return (p["agent_id"], self._mode, p["obs_fc.weight"], p["obs_fc.bias"],
                p.get("fp_fc.weight", empty_w), p.get("fp_fc.bias", empty_b),
                p.get("msg_fc.weight", empty_w), p.get("msg_fc.bias", empty_b),
                p["lstm.weight"], p["lstm.bias"], p["actor.weight"], p["actor.bias"],
                critic.reshape(critic.shape[0], critic.shape[1]), critic_b)

    def load(self, arrays: Mapping[str, np.ndarray]) -> None:
        """Copy a state_dict's arrays (e.g. a weights message, already validated) into this policy."""
        missing = sorted(set(self.params) - set(arrays))
        if missing:
            raise ValueError(f"weights lack {missing[:8]}")
        for name, dst in self.params.items():
            src = np.asarray(arrays[name])
            if src.shape != dst.shape:
                raise ValueError(f"weight {name!r}: expected {list(dst.shape)}, got {list(src.shape)}")
            np.copyto(dst, src, casting="same_kind")

    def initial_state(self, batch: int) -> State:
        """Zero LSTM state and uniform fingerprints for `batch` envs."""
        zeros = np.zeros((batch, self.n_agents, self.hidden), dtype=np.float32)
        fp = np.full((batch, self.n_agents, self.n_actions), 1.0 / self.n_actions, dtype=np.float32)
        return State(zeros, zeros.copy(), fp)

    def act(self, obs: np.ndarray, starts: np.ndarray, state: State, u: np.ndarray,
            links: np.ndarray | None = None) -> Acted:
        """One step for all agents of all envs: obs [B, N, O], starts [B] (reset those envs' state first),
        uniforms u [B, N] in [0, 1) that pick the actions (see `actor.sampler`), and the link mask links
        [B, N, D] bool of the environment's message loss (None: every message arrives; the kernel then reads
        an all-True mask, so it compiles once)."""
        batch, n, hidden, n_actions = obs.shape[0], self.n_agents, self.hidden, self.n_actions
        f32 = np.float32
        new = State(np.empty((batch, n, hidden), f32), np.empty((batch, n, hidden), f32),
                    np.empty((batch, n, n_actions), f32))
        logits = np.empty((batch, n, n_actions), f32)
        actions = np.empty((batch, n), np.int64)
        logp, values = np.empty((batch, n), f32), np.empty((batch, n), f32)
        obs = np.ascontiguousarray(obs, dtype=f32)
        if links is None:
            links = self._all_links.get(batch)
            if links is None:
                links = self._all_links[batch] = np.ones((batch, n, self._nb.shape[1]), dtype=np.bool_)
        elif links.shape != (batch, n, self._nb.shape[1]):
            raise ValueError(f"links must be [B, N, D] = {[batch, n, self._nb.shape[1]]}, got {list(links.shape)}")
        act_step(obs, np.ascontiguousarray(starts, dtype=np.bool_),
                 state.h, state.c, state.fp, np.ascontiguousarray(u, dtype=np.float64),
                 np.ascontiguousarray(links, dtype=np.bool_), self._nb, self._cnt,
                 *self._args, new.h, new.c, new.fp, logits, actions, logp, values)
        if self.acting.global_critic:
            p = self.params
            global_values(obs, p["critic.fc1.weight"], p["critic.fc1.bias"], p["critic.fc2.weight"],
                          p["critic.fc2.bias"], p["critic.out.weight"], p["critic.out.bias"], values)
        return Acted(new, logits, actions, logp, values)
