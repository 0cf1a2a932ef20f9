"""What a rollout and a weights message must hold: a run's exact rollout layout (`RolloutSpec`), the
ranges of its values, the schema of the rollout meta the learner reads, and the check of a weights message
against the model. Callers reach all of it through `common.wire`; the table of arrays is in its docstring.

Value ranges: every float array of a rollout has a closed range (`RolloutSpec.bounds`). Some follow from the
networks alone and hold in every run: the LSTM output h lies in [-1, 1], a fingerprint is a probability
vector, and a log-probability is at most 0 (and above `LOGP_MIN`: an action whose float32 probability
underflows is never sampled). The rest (observations, rewards, values, bootstrap, the LSTM cell state)
depend on the environment, so `default_bounds` only caps them at `GENERIC_ABS_MAX` (the environments clip
observations to that magnitude) and a run passes tighter ones derived from its reward range and discount
(`launch.run_bounds`).
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from common.wire_types import ALLOWED_DTYPES, ROLLOUT, WEIGHTS, Message, MetaValue, WireError, is_int, wire_dtype_name

GENERIC_ABS_MAX = 1e6  # |x| of an environment-dependent float array when the run gives no tighter range
LOGP_MIN = -1e3        # a sampled action's float32 log-probability is far above this (about -104 at worst)
MAX_TIMER_S = 1e7      # an actor's per-stage timer totals (meta t_*), in seconds


def default_bounds() -> dict[str, tuple[float, float]]:
    """The ranges every run enforces: exact ones where the networks fix them, generic caps elsewhere."""
    cap = (-GENERIC_ABS_MAX, GENERIC_ABS_MAX)
    return {"obs": cap, "rewards": cap, "values": cap, "bootstrap": cap, "logp": (LOGP_MIN, 0.0),
            "h0": (-1.0, 1.0), "c0": cap, "fp0": (0.0, 1.0)}


@dataclass(frozen=True)
class RunBounds:
    """What a run derives from its environment and config (`launch.run_bounds`): ranges for the
    environment-dependent arrays (they replace the generic caps), the largest |return| of one episode, and
    whether the scenario loses messages between neighbours (then rollouts carry their link masks)."""

    arrays: Mapping[str, tuple[float, float]]
    max_episode_return: float
    message_loss: bool = False


@dataclass(frozen=True)
class RolloutSpec:
    """The exact rollout shapes a run accepts, from its config and environment (see the module docstring).

    ``n_envs`` fixes the env axis when set; otherwise any E in 1..``max_envs`` is accepted (the same E in every
    array). ``hidden`` / ``fp_dim`` are the widths of the recurrent state (h0, c0) and fingerprint (fp0) sent
    at rollout start; None means the run's networks have none and the arrays must be absent. ``links_width``
    is the largest degree D of the agent graph when the run's scenario loses messages: every rollout then
    carries its link masks ``links`` [T, E, N, D] bool; None (no message loss) means it must not.

    ``bounds`` maps a float array's name to the closed range its values must lie in (`default_bounds` unless
    the run derives tighter ones from its reward and discount); ``max_episode_return`` bounds the mean return
    of the episodes a window reports and ``max_episodes_done`` an actor's episode counter (rollout meta).
    """

    n_agents: int
    obs_dim: int
    n_actions: int
    n_steps: int
    max_envs: int = 1024
    n_envs: int | None = None
    hidden: int | None = None
    fp_dim: int | None = None
    links_width: int | None = None
    bounds: Mapping[str, tuple[float, float]] = field(default_factory=default_bounds)
    max_episode_return: float = GENERIC_ABS_MAX
    max_episodes_done: int = 1 << 53

    def layout(self, n_envs: int) -> dict[str, tuple[tuple[int, ...], str]]:
        """Required array name -> (shape, wire dtype name) for a rollout of ``n_envs`` environments."""
        t, e, n = self.n_steps, n_envs, self.n_agents
        out = {
            "obs": ((t, e, n, self.obs_dim), "float32"),
            "actions": ((t, e, n), "int64"),
            "rewards": ((t, e, n), "float32"),
            "dones": ((t, e), "bool"),
            "starts": ((t, e), "bool"),
            "values": ((t, e, n), "float32"),
            "logp": ((t, e, n), "float32"),
            "bootstrap": ((e, n), "float32"),
        }
        if self.hidden is not None:
            out["h0"] = ((e, n, self.hidden), "float32")
            out["c0"] = ((e, n, self.hidden), "float32")
        if self.fp_dim is not None:
            out["fp0"] = ((e, n, self.fp_dim), "float32")
        if self.links_width is not None:
            out["links"] = ((t, e, n, self.links_width), "bool")
        return out


# Optional rollout array: the actor's sampler state after the window (see the module docstring).
SAMPLER_STATE = "sampler_state"
MAX_SAMPLER_STATE_BYTES = 1 << 16

_AXIS_NAMES = {"obs": "TENO", "actions": "TEN", "rewards": "TEN", "dones": "TE", "starts": "TE",
               "values": "TEN", "logp": "TEN", "bootstrap": "EN", "h0": "ENH", "c0": "ENH", "fp0": "ENF",
               "links": "TEND"}
_AXIS_WORDS = {"T": "steps", "E": "envs", "N": "agents", "O": "obs width", "H": "hidden width",
               "F": "fingerprint width", "D": "neighbour slots"}


def _check_finite(arrays: Mapping[str, np.ndarray]) -> None:
    for name, arr in arrays.items():
        if arr.dtype.kind == "f" and not np.isfinite(arr).all():
            raise WireError("non_finite", f"array {name!r} holds NaN or inf")


def validate_rollout(msg: Message, spec: RolloutSpec) -> None:
    """Check a rollout against the run's exact layout, finiteness and value ranges; raise WireError if not."""
    if msg.type != ROLLOUT:
        raise WireError("wrong_type", f"expected a {ROLLOUT} message, got {msg.type!r}")
    arrays = msg.arrays
    if "actions" not in arrays:
        raise WireError("missing_array", "rollout has no 'actions' array")
    actions = arrays["actions"]
    if actions.ndim != 3:
        raise WireError("bad_shape", f"actions must be [T, E, N], got shape {list(actions.shape)}")
    n_envs = actions.shape[1]
    if spec.n_envs is not None and n_envs != spec.n_envs:
        raise WireError("bad_shape", f"rollout has {n_envs} envs, the run uses {spec.n_envs}")
    if not 1 <= n_envs <= spec.max_envs:
        raise WireError("bad_shape", f"rollout has {n_envs} envs, allowed 1..{spec.max_envs}")
    _check_layout(arrays, spec.layout(n_envs))
    if actions.size and (actions.min() < 0 or actions.max() >= spec.n_actions):
        raise WireError("bad_value", f"actions outside 0..{spec.n_actions - 1}: min {actions.min()}, "
                        f"max {actions.max()}")
    _check_finite(arrays)
    _check_bounds(arrays, spec.bounds)


def _check_layout(arrays: Mapping[str, np.ndarray], layout: dict[str, tuple[tuple[int, ...], str]]) -> None:
    """Exactly the layout's arrays (plus an optional sampler state), each of its dtype and shape."""
    missing = [name for name in layout if name not in arrays]
    if missing:
        raise WireError("missing_array", f"rollout lacks {missing}")
    extra = [name for name in arrays if name not in layout and name != SAMPLER_STATE]
    if extra:
        raise WireError("unexpected_array", f"rollout has unknown arrays {extra[:8]}")
    if SAMPLER_STATE in arrays:
        state = arrays[SAMPLER_STATE]
        if state.dtype != ALLOWED_DTYPES["uint8"]:
            raise WireError("bad_dtype", f"{SAMPLER_STATE} must be uint8, got {state.dtype}")
        if state.ndim != 1 or not 0 < state.size <= MAX_SAMPLER_STATE_BYTES:
            raise WireError("bad_shape", f"{SAMPLER_STATE} must be 1-D with 1..{MAX_SAMPLER_STATE_BYTES} "
                            f"bytes, got shape {list(state.shape)}")
    for name, (shape, dtype_name) in layout.items():
        arr = arrays[name]
        if arr.dtype != ALLOWED_DTYPES[dtype_name]:
            raise WireError("bad_dtype", f"{name} must be {dtype_name}, got {arr.dtype}")
        if arr.shape != shape:
            axes = _AXIS_NAMES[name]
            if arr.ndim != len(shape):
                raise WireError("bad_shape", f"{name} must be [{', '.join(axes)}] = {list(shape)}, "
                                f"got {list(arr.shape)}")
            axis = next(i for i, (got, want) in enumerate(zip(arr.shape, shape, strict=True)) if got != want)
            raise WireError("bad_shape", f"{name} axis {axes[axis]} ({_AXIS_WORDS[axes[axis]]}): expected "
                            f"{shape[axis]}, got {arr.shape[axis]}")


def _check_bounds(arrays: Mapping[str, np.ndarray], bounds: Mapping[str, tuple[float, float]]) -> None:
    """Every bounded array within its closed range: a finite but absurd value (a reward of 1e30) would
    otherwise reach the update."""
    for name, (low, high) in bounds.items():
        arr = arrays.get(name)
        if arr is None or arr.size == 0:
            continue
        lo, hi = float(arr.min()), float(arr.max())
        if lo < low or hi > high:
            bad = lo if lo < low else hi
            raise WireError("out_of_range", f"{name} holds {bad:.6g}, outside the run's range [{low:.6g}, "
                            f"{high:.6g}]")


def validate_weights(msg: Message, expected_shapes: Mapping[str, Sequence[int]] | None = None) -> None:
    """Check a weights message: a version >= 0, at least one array, all finite, and the model's names and
    shapes when ``expected_shapes`` is given, so a bad broadcast never reaches `load_state_dict`."""
    if msg.type != WEIGHTS:
        raise WireError("wrong_type", f"expected a {WEIGHTS} message, got {msg.type!r}")
    if not is_int(msg.weight_version) or msg.weight_version < 0:
        raise WireError("bad_header", f"weight_version must be an int >= 0, got {msg.weight_version!r}")
    if not msg.arrays:
        raise WireError("missing_array", "weights message carries no arrays")
    for name, arr in msg.arrays.items():
        wire_dtype_name(name, arr)
    if expected_shapes is not None:
        missing = [name for name in expected_shapes if name not in msg.arrays]
        if missing:
            raise WireError("missing_array", f"weights lack {missing[:8]}")
        extra = [name for name in msg.arrays if name not in expected_shapes]
        if extra:
            raise WireError("unexpected_array", f"weights have unknown arrays {extra[:8]}")
        for name, shape in expected_shapes.items():
            if msg.arrays[name].shape != tuple(shape):
                raise WireError("bad_shape", f"weight {name!r}: expected {list(shape)}, "
                                f"got {list(msg.arrays[name].shape)}")
    _check_finite(msg.arrays)


# ----------------------------------------------------------------------------------------------------------
# rollout meta

# The window summary and stream position an actor sends with each rollout (`actor.rollout.window_meta`,
# `actor.worker`), all read by the learner. ``actor`` itself is checked by the learner against its run.
ROLLOUT_META = ("episodes", "episode_return_sum", "violations", "diverged", "episodes_done", "at_boundary")
TIMER_PREFIX = "t_"  # per-stage timer totals, e.g. t_simulate


def _meta_error(key: str, value: Any, want: str) -> WireError:
    return WireError("bad_meta", f"meta field {key!r} must be {want}, got {type(value).__name__} "
                     f"{str(value)[:40]!r}")


def _meta_int(meta: Mapping[str, MetaValue], key: str, high: int) -> int:
    value = meta.get(key)
    if not is_int(value) or not 0 <= value <= high:
        raise _meta_error(key, value, f"an int in 0..{high}")
    return value


def _meta_number(key: str, value: Any, bound: float) -> float:
    if not (is_int(value) or isinstance(value, float)) or not math.isfinite(value) or abs(value) > bound:
        raise _meta_error(key, value, f"a number with |x| <= {bound:.6g}")
    return float(value)


def validate_rollout_meta(meta: Mapping[str, MetaValue], spec: RolloutSpec, n_envs: int) -> dict[str, MetaValue]:
    """Check every meta field the learner reads of a rollout of ``n_envs`` envs and return just those (plus
    the timers); a missing field, a wrong type or a value out of range raises WireError "bad_meta".

    Episodes and diverged envs finished in a window are at most envs x steps, violations at most the number
    of per-agent rewards, the returns' sum at most episodes x ``spec.max_episode_return``."""
    window = n_envs * spec.n_steps
    out: dict[str, MetaValue] = {"actor": meta.get("actor")}
    episodes = out["episodes"] = _meta_int(meta, "episodes", window)
    out["episode_return_sum"] = _meta_number("episode_return_sum", meta.get("episode_return_sum"),
                                             episodes * spec.max_episode_return)
    out["violations"] = _meta_int(meta, "violations", window * spec.n_agents)
    out["diverged"] = _meta_int(meta, "diverged", window)
    out["episodes_done"] = _meta_int(meta, "episodes_done", spec.max_episodes_done)
    if not isinstance(meta.get("at_boundary"), bool):
        raise _meta_error("at_boundary", meta.get("at_boundary"), "true or false")
    out["at_boundary"] = meta["at_boundary"]
    for key, value in meta.items():
        if key.startswith(TIMER_PREFIX):
            out[key] = _meta_number(key, value, MAX_TIMER_S)
            if out[key] < 0:
                raise _meta_error(key, value, f"a number of seconds in 0..{MAX_TIMER_S:.6g}")
    return out
