"""The value ranges and the rollout meta schema of the wire protocol (`common.wire_schema`): a finite but absurd
value in any rollout array is "out_of_range", junk in any meta field the learner reads is "bad_meta"."""

from __future__ import annotations

from typing import Any

import numpy as np
import pytest

from common import wire
from common.wire import Message, RolloutSpec, WireError, validate_rollout

pytestmark = pytest.mark.timeout(20)

T, E, N, O, A, H = 5, 3, 6, 4, 7, 8
DELETE = object()


def rollout_spec(**kw: Any) -> RolloutSpec:
    fields: dict[str, Any] = {"n_agents": N, "obs_dim": O, "n_actions": A, "n_steps": T, "hidden": H, "fp_dim": A}
    return RolloutSpec(**{**fields, **kw})


def rollout_arrays() -> dict[str, np.ndarray]:
    """A rollout an honest actor could send: values well inside every range."""
    rng = np.random.default_rng(1)

    def normal(*shape: int) -> np.ndarray:
        return rng.standard_normal(shape).astype(np.float32)

    return {"obs": normal(T, E, N, O), "actions": rng.integers(0, A, (T, E, N)).astype(np.int64),
            "rewards": normal(T, E, N), "dones": np.zeros((T, E), bool), "starts": np.zeros((T, E), bool),
            "values": normal(T, E, N), "logp": -rng.random((T, E, N)).astype(np.float32),
            "bootstrap": normal(E, N), "h0": np.tanh(normal(E, N, H)), "c0": normal(E, N, H),
            "fp0": np.full((E, N, A), 1.0 / A, np.float32)}


def rollout_reason(arrays: dict[str, np.ndarray], spec: RolloutSpec | None = None) -> str:
    msg = Message(type=wire.ROLLOUT, run_id="r", sender="actor-0", arrays=arrays)
    with pytest.raises(WireError) as info:
        validate_rollout(msg, spec or rollout_spec())
    return info.value.reason


# ------------------------------------------------------------------------------------------------ value ranges


@pytest.mark.parametrize("name, value", [("obs", 2e6), ("rewards", -1e30), ("values", 1e7), ("bootstrap", -1e7),
                                         ("logp", 1e-3), ("logp", -2e3), ("h0", 1.5), ("c0", 1e7), ("fp0", -0.1)])
def test_a_finite_value_outside_its_range_is_out_of_range(name: str, value: float) -> None:
    arrays = rollout_arrays()
    arrays[name] = arrays[name].copy()
    arrays[name].flat[-1] = value
    assert rollout_reason(arrays) == "out_of_range"


def test_a_run_can_tighten_the_ranges() -> None:
    arrays = rollout_arrays()
    validate_rollout(Message(type=wire.ROLLOUT, run_id="r", sender="actor-0", arrays=arrays), rollout_spec())
    tight = rollout_spec(bounds={**wire.default_bounds(), "rewards": (-0.5, 0.5)})
    assert rollout_reason(arrays, tight) == "out_of_range"  # standard normal rewards leave [-0.5, 0.5]


def good_meta() -> dict[str, Any]:
    return {"actor": 0, "episodes": 1, "episode_return_sum": -3.5, "violations": 4, "diverged": 0,
            "episodes_done": 7, "at_boundary": False, "t_simulate": 1.25, "t_infer": 0, "note": "kept out"}


def test_rollout_meta_passes_and_keeps_only_the_fields_the_learner_reads() -> None:
    out = wire.validate_rollout_meta(good_meta(), rollout_spec(max_episode_return=10.0), E)
    assert out == {k: v for k, v in good_meta().items() if k != "note"}


@pytest.mark.parametrize("key, value", [("episodes", "x"), ("episodes", T * E + 1), ("episodes", True),
                                        ("episodes", DELETE), ("episode_return_sum", "nan"),
                                        ("episode_return_sum", 11.0), ("violations", None),
                                        ("violations", T * E * N + 1), ("diverged", -1), ("episodes_done", 2.0),
                                        ("at_boundary", 1), ("t_simulate", -1.0), ("t_wait", 1e12)])
def test_junk_in_a_meta_field_is_bad_meta(key: str, value: Any) -> None:
    meta = good_meta()
    if value is DELETE:
        del meta[key]
    else:
        meta[key] = value
    with pytest.raises(WireError) as info:
        wire.validate_rollout_meta(meta, rollout_spec(max_episode_return=10.0), E)
    assert info.value.reason == "bad_meta" and repr(key) in info.value.detail
