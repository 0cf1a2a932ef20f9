"""The wire protocol between actors and the learner: message types, framing, validation, socket set-up.

A message travels as a ZeroMQ multipart message:

* frame 0: a small msgpack map, the header, with exactly these keys:
  ``type`` (str, one of `MESSAGE_TYPES`), ``proto`` (int, `PROTOCOL_VERSION`), ``run_id`` (str),
  ``sender`` (str), ``seq`` (int >= 0), ``weight_version`` (int >= 0), ``meta`` (map of str to a scalar:
  None, bool, int, finite float or str) and ``arrays`` (a list of ``[name, dtype, shape]``, one per
  array frame, in frame order; dtype is a name from `ALLOWED_DTYPES`, always little-endian on the wire);
* frames 1..n: the raw C-order bytes of each array, sent without copying and read back with
  `numpy.frombuffer`.

Nothing on the wire is ever pickled (nor run through msgpack-numpy, which unpickles object arrays): the
header is plain msgpack unpacked with safe options (str keys only, no ext types, container limits sized
for a header), and array frames are only ever interpreted as one of six plain numeric dtypes.

`decode` checks every field and raises `WireError` with a short machine-readable ``reason`` (one of
`REASONS`), so a service can log, count by reason and drop a bad message and keep serving. The checks run
in a fixed order and the first failure wins. `validate_rollout` then checks a rollout's layout, and every
float array against the run's value ranges (`RolloutSpec.bounds`: "out_of_range"), and
`validate_rollout_meta` the meta fields the learner reads ("bad_meta").

The protocol lives in three modules, all reached through this one: `common.wire_types` (message types,
dtypes, reasons, limits, `Message`), `common.wire_schema` (rollout layout, value ranges, meta schema,
weights check) and this module (framing, encoding, decoding, sockets).

Rollout array layout (T = n_steps, E = envs of the actor, N = agents, O = obs width, A = actions,
H = LSTM width), the same names and shapes as `common.rollout.Rollout`, so
``Rollout(**msg.arrays, version=msg.weight_version)`` rebuilds one:

=========  ==========  =======  ==========================================================
name       shape       dtype    meaning
=========  ==========  =======  ==========================================================
obs        [T,E,N,O]   float32  observation at step t
actions    [T,E,N]     int64    action taken, in 0..A-1
rewards    [T,E,N]     float32  raw per-agent reward after step t
dones      [T,E]       bool     the episode ended after step t
starts     [T,E]       bool     obs t is the first of an episode
values     [T,E,N]     float32  critic value at acting time
logp       [T,E,N]     float32  log-probability of the action at acting time
bootstrap  [E,N]       float32  V of the observation after the window (0 if it ended an episode)
h0, c0     [E,N,H]     float32  LSTM state before step 0 (only when the spec has ``hidden``)
fp0        [E,N,F]     float32  policy fingerprint before step 0 (only when the spec has ``fp_dim``)
links      [T,E,N,D]   bool     neighbour messages received with obs t (only when the spec has ``links_width``)
=========  ==========  =======  ==========================================================

A rollout may also carry ``sampler_state`` (1-D uint8, at most `MAX_SAMPLER_STATE_BYTES`): the actor's
action-sampling RNG state after the window, which the learner checkpoints so a resumed or restarted actor
continues the same random stream.

The header's ``weight_version`` of a rollout is the weight version that acted; of a weights message, the
version being published.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING, Any

import msgpack
import numpy as np
import zmq

from common.wire_schema import (
    GENERIC_ABS_MAX,
    LOGP_MIN,
    MAX_SAMPLER_STATE_BYTES,
    MAX_TIMER_S,
    ROLLOUT_META,
    SAMPLER_STATE,
    TIMER_PREFIX,
    RolloutSpec,
    RunBounds,
    default_bounds,
    validate_rollout,
    validate_rollout_meta,
    validate_weights,
)
from common.wire_types import (
    ALLOWED_DTYPES,
    CREDIT,
    DEFAULT_LIMITS,
    GET_WEIGHTS,
    HEADER_KEYS,
    HEARTBEAT,
    HELLO,
    INT_MAX,
    MESSAGE_TYPES,
    PROTOCOL_VERSION,
    REASONS,
    ROLLOUT,
    SEQ_MAX,
    STATS,
    STOP,
    WEIGHTS,
    Frame,
    Message,
    MetaValue,
    WireError,
    WireLimits,
    is_int,
    wire_dtype_name,
)

if TYPE_CHECKING:
    import torch

# Re-exported: the whole protocol is reached as `common.wire.X`.
__all__ = [
    "ALLOWED_DTYPES", "CREDIT", "DEFAULT_LIMITS", "GENERIC_ABS_MAX", "GET_WEIGHTS", "HEADER_KEYS", "HEARTBEAT", "HELLO",
    "LOGP_MIN", "MAX_SAMPLER_STATE_BYTES", "MAX_TIMER_S", "MESSAGE_TYPES", "PROTOCOL_VERSION", "REASONS",
    "ROLLOUT", "ROLLOUT_META", "SAMPLER_STATE", "STATS", "STOP", "TIMER_PREFIX", "WEIGHTS", "Frame", "Message",
    "MetaValue", "RolloutSpec", "RunBounds", "WireError", "WireLimits", "arrays_to_state_dict",
    "configure_socket", "decode", "default_bounds", "encode", "is_int", "recv", "recv_routed", "send", "send_routed",
    "state_dict_to_arrays", "validate_rollout", "validate_rollout_meta", "validate_weights",
]


# ----------------------------------------------------------------------------------------------------------
# encoding


def _meta_scalar(key: str, value: Any) -> MetaValue:
    """A meta value as a plain Python scalar (numpy scalars are unwrapped); anything else is refused."""
    if isinstance(value, np.generic) and value.dtype.kind in "biuf":
        value = value.item()
    if value is None or isinstance(value, bool | int | str):
        return value
    if isinstance(value, float):
        if not math.isfinite(value):
            raise WireError("non_finite", f"meta field {key!r} is {value}; send None for 'no value'")
        return value
    raise WireError("bad_header", f"meta field {key!r} has type {type(value).__name__}; only None, bool, int, "
                    "float and str are allowed")


def encode(msg: Message) -> list[bytes | memoryview | np.ndarray]:
    """Frame a message for `send_multipart(copy=False)`: header bytes, then one C-contiguous array per frame.

    The returned arrays share memory with ``msg.arrays`` where they already were C-contiguous little-endian:
    with ``copy=False`` ZeroMQ reads them after `send` returns, so do not modify them in place until the
    message has gone (hand over fresh arrays, or copies).
    """
    if msg.type not in MESSAGE_TYPES:
        raise WireError("unknown_type", f"message type {msg.type!r} is not one of {sorted(MESSAGE_TYPES)}")
    for name, value in (("run_id", msg.run_id), ("sender", msg.sender)):
        if not isinstance(value, str) or not value:
            raise WireError("bad_header", f"{name} must be a non-empty str, got {value!r}")
    for name, value, high in (("version", msg.version, INT_MAX), ("seq", msg.seq, SEQ_MAX),
                              ("weight_version", msg.weight_version, INT_MAX)):
        if isinstance(value, bool) or not isinstance(value, int | np.integer) or not 0 <= int(value) <= high:
            raise WireError("bad_header", f"{name} must be an int in 0..{high}, got {value!r}")
    meta = {}
    for key, value in msg.meta.items():
        if not isinstance(key, str):
            raise WireError("bad_header", f"meta keys must be str, got {key!r}")
        meta[key] = _meta_scalar(key, value)
    specs: list[list[Any]] = []
    frames: list[bytes | memoryview | np.ndarray] = []
    for name, arr in msg.arrays.items():
        if not isinstance(name, str) or not name:
            raise WireError("bad_header", f"array names must be non-empty str, got {name!r}")
        arr = np.asarray(arr)
        wire_name = wire_dtype_name(name, arr)
        target = ALLOWED_DTYPES[wire_name]
        if arr.dtype != target:  # same kind and size, other byte order: make it little-endian
            arr = arr.astype(target)
        if not arr.flags.c_contiguous:
            arr = arr.copy(order="C")
        specs.append([name, wire_name, list(arr.shape)])
        frames.append(arr)
    header = {"type": msg.type, "proto": int(msg.version), "run_id": msg.run_id, "sender": msg.sender,
              "seq": int(msg.seq), "weight_version": int(msg.weight_version), "meta": meta, "arrays": specs}
    return [msgpack.packb(header, use_bin_type=True), *frames]


# ----------------------------------------------------------------------------------------------------------
# decoding


def _reject_ext(code: int, data: bytes) -> Any:
    """msgpack ext hook: ext types are never part of the protocol."""
    raise ValueError(f"msgpack ext type {code} is not allowed")


def _unpack_header(data: memoryview, limits: WireLimits) -> Any:
    """Unpack frame 0 with options that only build str-keyed maps, lists and scalars of bounded size."""
    try:
        return msgpack.unpackb(
            data, raw=False, strict_map_key=True, use_list=True, ext_hook=_reject_ext, max_ext_len=0,
            max_str_len=limits.max_header_bytes, max_bin_len=limits.max_header_bytes,
            max_array_len=max(limits.max_arrays, limits.max_rank, 3), max_map_len=max(limits.max_meta_items, 16))
    except (ValueError, TypeError, msgpack.UnpackException) as exc:
        raise WireError("not_msgpack", f"header frame does not unpack: {exc}") from None



def _check_str(name: str, value: Any, max_len: int, allow_empty: bool = False) -> str:
    if not isinstance(value, str) or len(value) > max_len or (not value and not allow_empty):
        raise WireError("bad_header", f"{name} must be a {'' if allow_empty else 'non-empty '}str of at most "
                        f"{max_len} chars, got {type(value).__name__} {str(value)[:40]!r}")
    return value


def _check_int(name: str, value: Any, high: int) -> int:
    if not is_int(value) or not 0 <= value <= high:
        raise WireError("bad_header", f"{name} must be an int in 0..{high}, got {str(value)[:40]!r}")
    return value


def _check_meta(meta: Any, limits: WireLimits) -> dict[str, MetaValue]:
    if not isinstance(meta, dict) or len(meta) > limits.max_meta_items:
        raise WireError("bad_header", f"meta must be a map of at most {limits.max_meta_items} items")
    for key, value in meta.items():
        _check_str("meta key", key, limits.max_name_len)
        if isinstance(value, str):
            _check_str(f"meta[{key!r}]", value, limits.max_meta_str_len, allow_empty=True)
        elif isinstance(value, float):
            if not math.isfinite(value):
                raise WireError("non_finite", f"meta field {key!r} is {value}")
        elif value is not None and not isinstance(value, bool | int):
            raise WireError("bad_header", f"meta field {key!r} has type {type(value).__name__}")
    return meta


def _check_array_specs(specs: Any, limits: WireLimits) -> list[tuple[str, np.dtype, tuple[int, ...], int]]:
    """Validate the header's array list; return (name, dtype, shape, nbytes) per declared frame."""
    if not isinstance(specs, list) or len(specs) > limits.max_arrays:
        raise WireError("bad_header", f"arrays must be a list of at most {limits.max_arrays} entries")
    out = []
    seen: set[str] = set()
    total = 0
    for i, spec in enumerate(specs):
        if not isinstance(spec, list) or len(spec) != 3:
            raise WireError("bad_header", f"arrays[{i}] must be [name, dtype, shape]")
        name, dtype_name, shape = spec
        _check_str(f"arrays[{i}] name", name, limits.max_name_len)
        if name in seen:
            raise WireError("bad_header", f"array name {name!r} appears twice")
        seen.add(name)
        if not isinstance(dtype_name, str) or dtype_name not in ALLOWED_DTYPES:
            raise WireError("bad_dtype", f"array {name!r} has dtype {str(dtype_name)[:40]!r}; allowed: "
                            f"{', '.join(ALLOWED_DTYPES)}")
        dtype = ALLOWED_DTYPES[dtype_name]
        if not isinstance(shape, list) or len(shape) > limits.max_rank or not all(is_int(d) for d in shape):
            raise WireError("bad_header", f"array {name!r} shape must be a list of at most {limits.max_rank} ints")
        if any(d < 0 for d in shape):
            raise WireError("bad_header", f"array {name!r} has a negative dimension: {shape}")
        nbytes = math.prod(shape) * dtype.itemsize  # Python ints: no overflow however large the claim
        total += nbytes
        if nbytes > limits.max_total_bytes or total > limits.max_total_bytes:
            raise WireError("oversized", f"array {name!r} of shape {shape} takes the message past "
                            f"{limits.max_total_bytes} bytes")
        out.append((name, dtype, tuple(shape), nbytes))
    return out


def _as_bytes(frame: Any) -> np.ndarray:
    """A frame as a flat uint8 view of its memory, without copying."""
    if isinstance(frame, zmq.Frame):
        frame = frame.buffer
    try:
        return np.frombuffer(frame, dtype=np.uint8)
    except (TypeError, ValueError) as exc:
        raise WireError("bad_header", f"a frame is not a contiguous buffer: {exc}") from None


def decode(frames: Sequence[Frame], expected_run_id: str | None = None,
           limits: WireLimits = DEFAULT_LIMITS) -> Message:
    """Check a received frame list field by field and turn it into a Message, or raise WireError.

    Arrays are zero-copy `numpy.frombuffer` views of the frames where the frame memory is aligned (a copy
    otherwise) and are always marked read-only: copy one before writing to it.
    Pass the run's id as ``expected_run_id`` so messages from another run are refused as "foreign_run".
    """
    if len(frames) == 0:
        raise WireError("missing_frames", "empty message: no header frame")
    if len(frames) - 1 > limits.max_arrays:
        raise WireError("too_many_frames", f"{len(frames) - 1} array frames, at most {limits.max_arrays}")
    head = _as_bytes(frames[0])
    if head.nbytes > limits.max_header_bytes:
        raise WireError("oversized", f"header of {head.nbytes} bytes, at most {limits.max_header_bytes}")
    header = _unpack_header(memoryview(head), limits)
    if not isinstance(header, dict):
        raise WireError("bad_header", f"header must be a map, got {type(header).__name__}")
    proto = header.get("proto")
    if is_int(proto) and proto != PROTOCOL_VERSION:
        raise WireError("bad_version", f"protocol version {proto}, this side speaks {PROTOCOL_VERSION}")
    keys = set(header)
    if keys != HEADER_KEYS:
        missing = sorted(HEADER_KEYS - keys)
        extra = sorted(str(k)[:40] for k in keys - HEADER_KEYS)
        raise WireError("bad_header", f"header keys: missing {missing}, unexpected {extra}")
    if not is_int(proto):
        raise WireError("bad_header", f"proto must be an int, got {type(proto).__name__}")
    run_id = _check_str("run_id", header["run_id"], limits.max_id_len)
    if expected_run_id is not None and run_id != expected_run_id:
        raise WireError("foreign_run", f"run id {run_id!r}, expected {expected_run_id!r}")
    msg_type = _check_str("type", header["type"], limits.max_id_len)
    if msg_type not in MESSAGE_TYPES:
        raise WireError("unknown_type", f"message type {msg_type!r}")
    sender = _check_str("sender", header["sender"], limits.max_id_len)
    seq = _check_int("seq", header["seq"], SEQ_MAX)
    weight_version = _check_int("weight_version", header["weight_version"], INT_MAX)
    meta = _check_meta(header["meta"], limits)
    specs = _check_array_specs(header["arrays"], limits)

    n_frames = len(frames) - 1
    if n_frames > len(specs):
        raise WireError("too_many_frames", f"{n_frames} array frames for {len(specs)} declared arrays")
    if n_frames < len(specs):
        raise WireError("missing_frames", f"{n_frames} array frames for {len(specs)} declared arrays")
    arrays: dict[str, np.ndarray] = {}
    for (name, dtype, shape, nbytes), frame in zip(specs, frames[1:], strict=True):
        raw = _as_bytes(frame)
        if raw.nbytes != nbytes:
            raise WireError("size_mismatch", f"array {name!r} {dtype.name}{list(shape)} needs {nbytes} bytes, "
                            f"frame has {raw.nbytes}")
        if dtype == np.bool_ and raw.size and raw.max() > 1:
            raise WireError("bad_value", f"bool array {name!r} holds bytes other than 0 and 1")
        arr = raw.view(dtype).reshape(shape)
        if not arr.flags.aligned:  # small ZeroMQ frames may live at odd addresses; torch wants aligned data
            arr = arr.copy()
        if limits.check_finite and dtype.kind == "f" and not np.isfinite(arr).all():
            raise WireError("non_finite", f"array {name!r} holds NaN or inf")
        arr.flags.writeable = False  # the memory may be shared with the frame (or, over inproc, the sender)
        arrays[name] = arr
    return Message(type=msg_type, version=proto, run_id=run_id, sender=sender, seq=seq,
                   weight_version=weight_version, meta=meta, arrays=arrays)





def state_dict_to_arrays(state_dict: Mapping[str, torch.Tensor]) -> dict[str, np.ndarray]:
    """Copy a torch state_dict into named numpy arrays of wire dtypes.

    Always copies, so the learner can keep training while ZeroMQ still reads the arrays after a
    ``copy=False`` send. Half/bfloat16 become float32, small ints int64 (uint8 and bool keep theirs).
    """
    import torch

    out = {}
    for name, tensor in state_dict.items():
        t = tensor.detach().to("cpu")
        if t.is_complex():
            raise WireError("bad_dtype", f"state_dict entry {name!r} is complex ({t.dtype})")
        if t.is_floating_point():
            if t.dtype not in (torch.float32, torch.float64):
                t = t.to(torch.float32)
        elif t.dtype not in (torch.bool, torch.uint8, torch.int32, torch.int64):
            t = t.to(torch.int64)
        out[name] = t.numpy().copy(order="C")
    return out


def arrays_to_state_dict(arrays: Mapping[str, np.ndarray], device: str | torch.device = "cpu",
                         ) -> dict[str, torch.Tensor]:
    """Named arrays (e.g. a decoded weights message) back into tensors for `load_state_dict`.

    Read-only arrays (zero-copy views of received frames) are copied first, since torch needs writable memory.
    """
    import torch

    out = {}
    for name, arr in arrays.items():
        if not arr.flags.writeable or not arr.flags.c_contiguous or not arr.flags.aligned:
            arr = np.array(arr, order="C", copy=True)
        out[name] = torch.from_numpy(arr).to(device)
    return out


# ----------------------------------------------------------------------------------------------------------
# sockets


def configure_socket(sock: zmq.Socket, max_msg_bytes: int, hwm: int) -> None:
    """Apply the protocol's socket options before bind/connect.

    MAXMSGSIZE makes libzmq drop any inbound frame longer than ``max_msg_bytes`` and disconnect the peer that
    sent it, before the message reaches the application; the high-water marks bound the queues (backpressure
    instead of unbounded buffering); LINGER 0 lets close() return at once with messages still queued.
    """
    sock.setsockopt(zmq.MAXMSGSIZE, int(max_msg_bytes))
    sock.setsockopt(zmq.SNDHWM, int(hwm))
    sock.setsockopt(zmq.RCVHWM, int(hwm))
    sock.setsockopt(zmq.LINGER, 0)


def send(sock: zmq.Socket, msg: Message, flags: int = 0) -> None:
    """Encode and send without copying the arrays (see `encode` about not mutating them afterwards).

    With ``flags=zmq.NOBLOCK`` a full queue raises `zmq.Again` instead of blocking.
    """
    sock.send_multipart(encode(msg), flags=flags, copy=False)


def recv(sock: zmq.Socket, flags: int = 0) -> list[memoryview]:
    """Receive one multipart message as zero-copy buffers, ready for `decode` (ROUTER: see `recv_routed`)."""
    return [frame.buffer for frame in sock.recv_multipart(flags=flags, copy=False)]


def send_routed(sock: zmq.Socket, identity: bytes, msg: Message, flags: int = 0) -> None:
    """Send from a ROUTER socket to the peer with ``identity`` (the envelope frame ROUTER routes on)."""
    sock.send_multipart([identity, *encode(msg)], flags=flags, copy=False)


def recv_routed(sock: zmq.Socket, flags: int = 0) -> tuple[bytes, list[memoryview]]:
    """Receive on a ROUTER socket: the sender's identity and the message frames for `decode`."""
    frames = sock.recv_multipart(flags=flags, copy=False)
    return bytes(frames[0].buffer), [frame.buffer for frame in frames[1:]]
