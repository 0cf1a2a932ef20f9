"""The action sampler: one NumPy PCG64 stream per env group (actor), whose state travels as bytes.

Acting draws one uniform number per agent and env per step and inverts the policy's cumulative
distribution (`sample_from_probs`, and the same rule inside the acting kernel), so an action depends only
on the probabilities and the stream. The stream's state is a short byte string: the learner checkpoints it
and sends it back to a re-joining actor, which continues exactly where the lost one stopped.
"""

from __future__ import annotations

import numpy as np

_MAGIC = b"PCG64v1\0"
STATE_BYTES = len(_MAGIC) + 16 + 16 + 1 + 4  # magic, state, increment, has_uint32, uinteger


class SamplerStateError(ValueError):
    """A sampler state that is not one of ours (e.g. a torch generator's, from an older checkpoint)."""


def action_sampler(seed: int) -> np.random.Generator:
    """The sampling stream seeded `seed` (group k of a run uses `actor.groups.group_seed(S, k) + 1`)."""
    return np.random.Generator(np.random.PCG64(int(seed)))


def sampler_state(gen: np.random.Generator) -> np.ndarray:
    """The stream's position as a 1-D uint8 array (what rollouts carry and checkpoints keep)."""
    st = gen.bit_generator.state
    if st["bit_generator"] != "PCG64":
        raise SamplerStateError(f"only PCG64 streams are supported, got {st['bit_generator']}")
    raw = (_MAGIC + int(st["state"]["state"]).to_bytes(16, "little") + int(st["state"]["inc"]).to_bytes(16, "little")
           + bytes([int(st["has_uint32"])]) + int(st["uinteger"]).to_bytes(4, "little"))
    return np.frombuffer(raw, dtype=np.uint8).copy()


def set_sampler_state(gen: np.random.Generator, state: np.ndarray) -> None:
    """Move `gen` to a position saved by `sampler_state`; a foreign state raises SamplerStateError."""
    raw = np.asarray(state, dtype=np.uint8).tobytes()
    if len(raw) != STATE_BYTES or not raw.startswith(_MAGIC):
        raise SamplerStateError(f"a sampler state of {len(raw)} bytes is not a PCG64 stream of this version "
                                f"(expected {STATE_BYTES} bytes starting {_MAGIC!r})")
    body = raw[len(_MAGIC):]
    gen.bit_generator.state = {
        "bit_generator": "PCG64",
        "state": {"state": int.from_bytes(body[:16], "little"), "inc": int.from_bytes(body[16:32], "little")},
        "has_uint32": int(body[32]), "uinteger": int.from_bytes(body[33:37], "little")}


def sample_from_probs(probs: np.ndarray, u: np.ndarray) -> np.ndarray:
    """Inverse-CDF sampling: probs [..., A] and uniforms u [...] in [0, 1) -> actions [...] int64.

    The action is the first a whose float64 running sum of probabilities exceeds u times their total (A-1
    if rounding leaves none); the acting kernel applies exactly this rule."""
    cdf = np.cumsum(np.asarray(probs, dtype=np.float64), axis=-1)
    target = np.asarray(u, dtype=np.float64) * cdf[..., -1]
    return np.sum(cdf[..., :-1] <= target[..., None], axis=-1).astype(np.int64)
