"""The vocabulary of the wire protocol that every part of it shares: message types, the dtype allow-list,
header keys, the reasons a message is refused, the receiver's limits and the decoded `Message`.

`common.wire` (framing, encoding, decoding, sockets) and `common.wire_schema` (what a rollout and a weights
message must hold) build on it; callers import everything through `common.wire`.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, TypeAlias

import numpy as np
import zmq

PROTOCOL_VERSION = 1

# Message types. Plain strings so they go on the wire as they are and compare cheaply.
HELLO = "hello"
ROLLOUT = "rollout"
WEIGHTS = "weights"
GET_WEIGHTS = "get_weights"
HEARTBEAT = "heartbeat"
STATS = "stats"
STOP = "stop"
CREDIT = "credit"  # async: an actor asks for its next window; the learner's reply grants it
MESSAGE_TYPES: frozenset[str] = frozenset({HELLO, ROLLOUT, WEIGHTS, GET_WEIGHTS, HEARTBEAT, STATS, STOP, CREDIT})

# Wire dtype name -> numpy dtype. Little-endian is part of the protocol; bool is one byte of 0 or 1.
ALLOWED_DTYPES: dict[str, np.dtype] = {
    "float32": np.dtype("<f4"),
    "float64": np.dtype("<f8"),
    "int32": np.dtype("<i4"),
    "int64": np.dtype("<i8"),
    "uint8": np.dtype("u1"),
    "bool": np.dtype("?"),
}

HEADER_KEYS: frozenset[str] = frozenset(
    {"type", "proto", "run_id", "sender", "seq", "weight_version", "meta", "arrays"})

# Every reason a WireError can carry; services can pre-create one drop counter per entry.
REASONS: frozenset[str] = frozenset({
    "not_msgpack",       # frame 0 does not unpack under the safe options (garbage, truncated, ext types)
    "bad_header",        # header not a map, missing/extra keys, a field of the wrong type or range
    "bad_version",       # protocol version other than PROTOCOL_VERSION
    "foreign_run",       # run id other than the expected one
    "unknown_type",      # message type not in MESSAGE_TYPES
    "bad_dtype",         # dtype outside the allow-list, or not the one the schema needs
    "size_mismatch",     # an array frame's byte length differs from prod(shape) * itemsize
    "too_many_frames",   # more frames than arrays declared
    "missing_frames",    # fewer frames than arrays declared (or no frame at all)
    "oversized",         # header, one array or the whole message beyond the limits
    "non_finite",        # NaN or inf in a float array or a float meta field
    "bad_value",         # a value out of its range (bool byte not 0/1, action outside 0..A-1)
    "wrong_type",        # a schema validator got a message of another type
    "missing_array",     # a schema validator did not find a required array
    "unexpected_array",  # a schema validator found an array it does not know
    "bad_shape",         # an array's shape differs from the schema (agent count, obs width, ...)
    "out_of_range",      # a finite value outside the range the run allows for that array (RolloutSpec.bounds)
    "bad_meta",          # a rollout meta field the learner reads is missing, of the wrong type or out of range
})

INT_MAX = (1 << 63) - 1
SEQ_MAX = (1 << 64) - 1

Frame: TypeAlias = bytes | bytearray | memoryview | np.ndarray | zmq.Frame
MetaValue: TypeAlias = None | bool | int | float | str


class WireError(ValueError):
    """A message that cannot be sent or was rejected on receipt; ``reason`` is for counting, ``detail`` for logs."""

    def __init__(self, reason: str, detail: str) -> None:
        if reason not in REASONS:
            raise ValueError(f"unknown WireError reason {reason!r}")
        super().__init__(f"{reason}: {detail}")
        self.reason = reason
        self.detail = detail


@dataclass(frozen=True)
class WireLimits:
    """Bounds a receiver enforces before it trusts a header, so a hostile peer cannot make it allocate much.

    ZMQ_MAXMSGSIZE (see `configure_socket`) caps every frame inside libzmq; these limits also cap the header
    and the sum over all frames of one message.
    """

    max_header_bytes: int = 1 << 20
    max_arrays: int = 4096
    max_rank: int = 8
    max_name_len: int = 256
    max_id_len: int = 128
    max_meta_items: int = 64
    max_meta_str_len: int = 1024
    max_total_bytes: int = 1 << 30
    check_finite: bool = True


DEFAULT_LIMITS = WireLimits()


@dataclass(kw_only=True)
class Message:
    """One decoded (or to-be-encoded) message. Arrays decoded from the wire are read-only views of the frames."""

    type: str
    version: int = PROTOCOL_VERSION
    run_id: str
    sender: str
    seq: int = 0
    weight_version: int = 0
    meta: dict[str, MetaValue] = field(default_factory=dict)
    arrays: dict[str, np.ndarray] = field(default_factory=dict)


def is_int(value: Any) -> bool:
    """An int that is not a bool (msgpack and JSON both turn true into something int-like)."""
    return isinstance(value, int) and not isinstance(value, bool)


def wire_dtype_name(name: str, arr: np.ndarray) -> str:
    """The allow-list name of an array's dtype, or a clear WireError (object arrays never reach the wire)."""
    dt = arr.dtype
    for wire_name, allowed in ALLOWED_DTYPES.items():
        if dt.kind == allowed.kind and dt.itemsize == allowed.itemsize:
            return wire_name
    raise WireError("bad_dtype", f"array {name!r} has dtype {dt} which cannot be sent; allowed: "
                    f"{', '.join(ALLOWED_DTYPES)}")
