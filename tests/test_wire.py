"""The wire protocol: round trips, every rejection reason, the socket size cap, and that nothing is pickled."""

from __future__ import annotations

import pickle
import shutil
import subprocess
import sys
import tempfile
import warnings
from pathlib import Path
from typing import Any

import msgpack
import numpy as np
import pytest
import zmq

from common import wire
from common.wire import (
    HEADER_KEYS,
    MESSAGE_TYPES,
    PROTOCOL_VERSION,
    REASONS,
    Message,
    RolloutSpec,
    WireError,
    WireLimits,
    decode,
    encode,
    validate_rollout,
    validate_weights,
)

pytestmark = pytest.mark.timeout(20)

RUN = "run-7f3a"
DELETE = object()


@pytest.fixture
def ctx():
    """A private ZeroMQ context; destroying it closes every socket a test opened, even on failure."""
    context = zmq.Context()
    yield context
    context.destroy(linger=0)


def make_msg(**kw: Any) -> Message:
    fields: dict[str, Any] = {"type": wire.HEARTBEAT, "run_id": RUN, "sender": "actor-0"}
    fields.update(kw)
    return Message(**fields)


def all_dtype_arrays() -> dict[str, np.ndarray]:
    rng = np.random.default_rng(0)
    return {
        "f32": rng.standard_normal((3, 4)).astype(np.float32),
        "f64": rng.standard_normal(5),
        "i32": np.arange(-6, 6, dtype=np.int32).reshape(2, 3, 2),
        "i64": np.array([np.iinfo(np.int64).min, 0, np.iinfo(np.int64).max], dtype=np.int64),
        "u8": np.arange(256, dtype=np.uint8),
        "b": np.array([[True, False, True]]),
        "scalar": np.array(2.5, dtype=np.float32),
        "empty": np.zeros((0, 7), dtype=np.float64),
        "empty_mid": np.zeros((4, 0, 2), dtype=np.int64),
    }


def reframe(frames: list, **changes: Any) -> list:
    """A copy of `frames` with header fields replaced (or removed with DELETE), repacked as msgpack."""
    header = msgpack.unpackb(bytes(frames[0]), raw=False)
    for key, value in changes.items():
        if value is DELETE:
            del header[key]
        else:
            header[key] = value
    return [msgpack.packb(header, use_bin_type=True), *frames[1:]]


def as_wire_bytes(frames: list) -> list[bytes]:
    """Frames as the bytes a receiver would see."""
    return [f.tobytes() if isinstance(f, np.ndarray) else bytes(f) for f in frames]


def reason_of(frames: list, **kw: Any) -> str:
    with pytest.raises(WireError) as info:
        decode(frames, **kw)
    assert info.value.reason in REASONS
    return info.value.reason


def recv_within(sock: zmq.Socket, timeout_ms: int) -> list[memoryview] | None:
    """The next message, or None if none arrives in time (never blocks a test forever)."""
    if sock.poll(timeout_ms, zmq.POLLIN) == 0:
        return None
    return wire.recv(sock)


# ------------------------------------------------------------------------------------------------ round trips


@pytest.mark.parametrize("msg_type", sorted(MESSAGE_TYPES))
def test_every_message_type_round_trips_with_every_allowed_dtype(msg_type: str) -> None:
    arrays = all_dtype_arrays()
    msg = make_msg(type=msg_type, seq=41, weight_version=9, meta={"pid": 123, "host": "n1", "lr": 5e-4,
                                                                     "ok": True, "none": None},
                   arrays=arrays)
    got = decode(as_wire_bytes(encode(msg)), expected_run_id=RUN)
    assert (got.type, got.version, got.run_id, got.sender, got.seq, got.weight_version) == (
        msg_type, PROTOCOL_VERSION, RUN, "actor-0", 41, 9)
    assert got.meta == msg.meta
    assert list(got.arrays) == list(arrays)
    for name, arr in arrays.items():
        assert got.arrays[name].dtype == arr.dtype, name
        assert got.arrays[name].shape == arr.shape, name
        np.testing.assert_array_equal(got.arrays[name], arr)


def test_message_without_arrays_is_a_single_frame() -> None:
    frames = encode(make_msg(type=wire.GET_WEIGHTS))
    assert len(frames) == 1
    assert decode(frames).arrays == {}


def test_non_contiguous_and_big_endian_inputs_arrive_as_their_values() -> None:
    base = np.arange(48, dtype=np.float32).reshape(6, 8)
    arrays = {
        "transposed": base.T,
        "strided": base[::2, 1::3],
        "reversed": np.arange(10, dtype=np.int64)[::-1],
        "big_endian": np.arange(5, dtype=">f8"),
        "fortran": np.asfortranarray(base),
    }
    assert not arrays["transposed"].flags.c_contiguous
    got = decode(as_wire_bytes(encode(make_msg(arrays=arrays))))
    for name, arr in arrays.items():
        np.testing.assert_array_equal(got.arrays[name], arr)
    assert got.arrays["big_endian"].dtype == np.dtype("<f8")


def test_encode_passes_contiguous_arrays_through_without_copying() -> None:
    arr = np.ones((256, 256), dtype=np.float32)
    frames = encode(make_msg(arrays={"w": arr}))
    assert np.shares_memory(frames[1], arr)


def test_decoded_arrays_are_readonly_zero_copy_views_of_the_frames() -> None:
    frames = as_wire_bytes(encode(make_msg(arrays={"w": np.arange(64, dtype=np.float64)})))
    got = decode(frames)
    assert not got.arrays["w"].flags.writeable
    assert np.shares_memory(got.arrays["w"], np.frombuffer(frames[1], dtype=np.uint8))


def test_unaligned_frame_memory_is_copied_to_an_aligned_array() -> None:
    frames = as_wire_bytes(encode(make_msg(arrays={"w": np.arange(4, dtype=np.float64)})))
    odd = bytearray(b"x" + frames[1])
    got = decode([frames[0], memoryview(odd)[1:]])
    assert got.arrays["w"].flags.aligned and not got.arrays["w"].flags.writeable
    np.testing.assert_array_equal(got.arrays["w"], np.arange(4.0))


def test_numpy_scalars_in_meta_are_sent_as_plain_scalars() -> None:
    got = decode(encode(make_msg(meta={"steps": np.int64(7), "reward": np.float32(0.5), "flag": np.bool_(True)})))
    assert got.meta == {"steps": 7, "reward": 0.5, "flag": True}
    assert type(got.meta["steps"]) is int


def test_push_pull_round_trip_over_tcp_loopback_without_copying(ctx: zmq.Context) -> None:
    pull = ctx.socket(zmq.PULL)
    wire.configure_socket(pull, max_msg_bytes=8 << 20, hwm=4)
    port = pull.bind_to_random_port("tcp://127.0.0.1")
    push = ctx.socket(zmq.PUSH)
    wire.configure_socket(push, max_msg_bytes=8 << 20, hwm=4)
    push.connect(f"tcp://127.0.0.1:{port}")
    big = np.arange(256 * 1024, dtype=np.float32).reshape(512, 512)  # 1 MiB: above pyzmq's copy threshold
    arrays = {**all_dtype_arrays(), "big": big}
    wire.send(push, make_msg(type=wire.ROLLOUT, seq=3, weight_version=2, arrays=arrays))
    frames = recv_within(pull, 5000)
    assert frames is not None
    assert all(isinstance(f, memoryview) for f in frames)
    got = decode(frames, expected_run_id=RUN)
    assert (got.type, got.seq, got.weight_version) == (wire.ROLLOUT, 3, 2)
    for name, arr in arrays.items():
        np.testing.assert_array_equal(got.arrays[name], arr)
    assert not got.arrays["big"].flags.writeable
    assert np.shares_memory(got.arrays["big"], np.frombuffer(frames[-1], dtype=np.uint8))  # no copy on receipt


@pytest.fixture()
def short_dir():
    """ipc endpoints are limited to ~107 bytes (sun_path): a short private directory, removed afterwards."""
    path = Path(tempfile.mkdtemp(prefix="pnw", dir="/tmp"))
    yield path
    shutil.rmtree(path, ignore_errors=True)


def test_round_trip_over_ipc_in_a_temporary_directory(ctx: zmq.Context, short_dir: Path) -> None:
    endpoint = f"ipc://{short_dir / 'w.sock'}"
    pull = ctx.socket(zmq.PULL)
    wire.configure_socket(pull, max_msg_bytes=1 << 20, hwm=4)
    pull.bind(endpoint)
    push = ctx.socket(zmq.PUSH)
    wire.configure_socket(push, max_msg_bytes=1 << 20, hwm=4)
    push.connect(endpoint)
    wire.send(push, make_msg(type=wire.STATS, meta={"reward": -1.25}, arrays={"x": np.arange(3)}))
    frames = recv_within(pull, 5000)
    assert frames is not None
    got = decode(frames, expected_run_id=RUN)
    assert got.meta == {"reward": -1.25}
    np.testing.assert_array_equal(got.arrays["x"], [0, 1, 2])


def test_router_dealer_request_and_reply_carry_the_peer_identity(ctx: zmq.Context) -> None:
    router = ctx.socket(zmq.ROUTER)
    wire.configure_socket(router, max_msg_bytes=1 << 20, hwm=16)
    port = router.bind_to_random_port("tcp://127.0.0.1")
    dealer = ctx.socket(zmq.DEALER)
    wire.configure_socket(dealer, max_msg_bytes=1 << 20, hwm=16)
    dealer.setsockopt(zmq.IDENTITY, b"actor-3")
    dealer.connect(f"tcp://127.0.0.1:{port}")
    wire.send(dealer, make_msg(type=wire.GET_WEIGHTS, sender="actor-3"))
    assert router.poll(5000, zmq.POLLIN)
    identity, frames = wire.recv_routed(router)
    assert identity == b"actor-3"
    assert decode(frames, expected_run_id=RUN).type == wire.GET_WEIGHTS
    weights = {"fc.weight": np.ones((2, 3), dtype=np.float32)}
    wire.send_routed(router, identity, make_msg(type=wire.WEIGHTS, sender="learner", weight_version=4,
                                                arrays=weights))
    reply = recv_within(dealer, 5000)
    assert reply is not None
    got = decode(reply, expected_run_id=RUN)
    validate_weights(got)
    assert got.weight_version == 4


# ------------------------------------------------------------------------------------------------ rejections


def valid_frames() -> list:
    return as_wire_bytes(encode(make_msg(arrays={"a": np.arange(6, dtype=np.float32).reshape(2, 3),
                                                 "b": np.array([1, 2], dtype=np.int64)})))


def test_valid_frames_decode() -> None:
    assert set(decode(valid_frames(), expected_run_id=RUN).arrays) == {"a", "b"}


@pytest.mark.parametrize("header", [
    b"",
    b"\xc1garbage",                               # 0xc1 is never used by msgpack
    bytes(range(200, 256)),
    msgpack.packb({"type": "heartbeat", "proto": 1, "run_id": RUN})[:-5],   # truncated
    msgpack.packb({"type": "heartbeat"}) + b"\x00",                         # trailing bytes
    msgpack.packb({1: "int keys"}),                                         # strict_map_key
], ids=["empty", "never_used_byte", "garbage", "truncated", "trailing_bytes", "int_map_key"])
def test_header_that_is_not_msgpack_is_rejected(header: bytes) -> None:
    assert reason_of([header]) == "not_msgpack"


@pytest.mark.parametrize("obj", [[1, 2, 3], "heartbeat", 42, None, b"bytes"], ids=repr)
def test_header_that_is_not_a_map_is_rejected(obj: Any) -> None:
    assert reason_of([msgpack.packb(obj, use_bin_type=True)]) == "bad_header"


@pytest.mark.parametrize("key", sorted(HEADER_KEYS))
def test_header_with_a_missing_key_is_rejected(key: str) -> None:
    assert reason_of(reframe(valid_frames(), **{key: DELETE})) == "bad_header"


def test_header_with_an_extra_key_is_rejected() -> None:
    assert reason_of(reframe(valid_frames(), pickle="cos\nsystem\n")) == "bad_header"


@pytest.mark.parametrize("proto", [0, 2, 99])
def test_other_protocol_version_is_rejected(proto: int) -> None:
    assert reason_of(reframe(valid_frames(), proto=proto)) == "bad_version"


def test_other_protocol_version_wins_over_unknown_keys() -> None:
    """A future version may change the keys; it must still be counted as a version mismatch."""
    assert reason_of(reframe(valid_frames(), proto=2, new_field=1)) == "bad_version"


def test_message_from_another_run_is_rejected() -> None:
    frames = reframe(valid_frames(), run_id="run-other")
    assert reason_of(frames, expected_run_id=RUN) == "foreign_run"
    assert decode(frames).run_id == "run-other"  # without an expected id the run is not checked


def test_encoded_message_of_another_run_is_rejected() -> None:
    assert reason_of(encode(make_msg(run_id="someone-else")), expected_run_id=RUN) == "foreign_run"


@pytest.mark.parametrize("msg_type", ["exec", "HELLO", "weights2"])
def test_unknown_message_type_is_rejected(msg_type: str) -> None:
    assert reason_of(reframe(valid_frames(), type=msg_type)) == "unknown_type"


@pytest.mark.parametrize("field,value", [
    ("type", 3), ("proto", "1"), ("proto", True), ("run_id", b"run"), ("run_id", ""), ("run_id", "r" * 500),
    ("sender", None), ("seq", -1), ("seq", 1.5), ("seq", "7"), ("weight_version", -3),
    ("weight_version", True), ("meta", [1]), ("meta", {"nested": {"a": 1}}), ("meta", {"list": [1, 2]}),
    ("meta", {"blob": b"\x00"}), ("arrays", {"a": 1}), ("arrays", "a"),
])
def test_header_field_of_wrong_type_or_range_is_rejected(field: str, value: Any) -> None:
    assert reason_of(reframe(valid_frames(), **{field: value})) == "bad_header"


@pytest.mark.parametrize("value", [float("nan"), float("inf"), float("-inf")])
def test_non_finite_meta_float_is_rejected(value: float) -> None:
    assert reason_of(reframe(valid_frames(), meta={"reward": value})) == "non_finite"


@pytest.mark.parametrize("dtype_name", ["object", "O", "|O", "complex128", "complex64", "float16", "<f2", "<U4",
                                        "str", "int8", "uint16", "<f4", "V8", 7])
def test_disallowed_dtype_in_header_is_rejected(dtype_name: Any) -> None:
    frames = valid_frames()
    assert reason_of(reframe(frames, arrays=[["a", dtype_name, [2, 3]], ["b", "int64", [2]]])) == "bad_dtype"


@pytest.mark.parametrize("spec", [
    ["a", "float32"], ["a", "float32", [2, 3], "x"], "a", [1, "float32", [2, 3]], ["", "float32", [2, 3]],
    ["a", "float32", 6], ["a", "float32", [2.0, 3]], ["a", "float32", [True, 3]], ["a", "float32", [-2, -3]],
    ["a", "float32", [1] * 9],
], ids=["short", "long", "not_a_list", "int_name", "empty_name", "int_shape", "float_dim", "bool_dim",
        "negative_dim", "rank_9"])
def test_malformed_array_spec_is_rejected(spec: Any) -> None:
    assert reason_of(reframe(valid_frames(), arrays=[spec, ["b", "int64", [2]]])) == "bad_header"


def test_duplicate_array_names_are_rejected() -> None:
    frames = valid_frames()
    assert reason_of(reframe(frames, arrays=[["a", "float32", [2, 3]], ["a", "int64", [2]]])) == "bad_header"


@pytest.mark.parametrize("shape", [[1 << 40, 1 << 40], [1 << 62], [1 << 31, 1 << 31, 1 << 31, 1 << 31]])
def test_huge_declared_shape_is_rejected_before_any_allocation(shape: list[int]) -> None:
    assert reason_of(reframe(valid_frames(), arrays=[["a", "float32", shape], ["b", "int64", [2]]])) == "oversized"


@pytest.mark.parametrize("shape", [[3, 3], [2, 2], [6, 1, 2], [0], []])
def test_frame_length_other_than_shape_times_itemsize_is_rejected(shape: list[int]) -> None:
    assert reason_of(reframe(valid_frames(), arrays=[["a", "float32", shape], ["b", "int64", [2]]])) == "size_mismatch"


def test_frame_length_mismatch_from_a_wider_dtype_is_rejected() -> None:
    assert reason_of(reframe(valid_frames(), arrays=[["a", "float64", [2, 3]], ["b", "int64", [2]]])) == (
        "size_mismatch")


def test_extra_frame_is_rejected() -> None:
    assert reason_of([*valid_frames(), b"\x00" * 8]) == "too_many_frames"


def test_missing_frame_is_rejected() -> None:
    assert reason_of(valid_frames()[:-1]) == "missing_frames"


def test_empty_frame_list_is_rejected() -> None:
    assert reason_of([]) == "missing_frames"


def test_more_frames_than_the_array_limit_are_rejected_before_unpacking() -> None:
    assert reason_of([b"\xc1", *([b""] * 9)], limits=WireLimits(max_arrays=8)) == "too_many_frames"


def test_header_over_the_header_limit_is_rejected() -> None:
    frames = reframe(valid_frames(), meta={"note": "x" * 900})
    assert reason_of(frames, limits=WireLimits(max_header_bytes=512)) == "oversized"


def test_message_over_the_total_byte_limit_is_rejected() -> None:
    frames = as_wire_bytes(encode(make_msg(arrays={"a": np.zeros(300, np.uint8), "b": np.zeros(300, np.uint8)})))
    assert reason_of(frames, limits=WireLimits(max_total_bytes=512)) == "oversized"


@pytest.mark.parametrize("bad", [np.nan, np.inf, -np.inf])
def test_non_finite_float_array_is_rejected(bad: float) -> None:
    arr = np.ones(5, dtype=np.float32)
    arr[2] = bad
    frames = encode(make_msg(arrays={"a": arr}))
    assert reason_of(frames) == "non_finite"
    assert np.isnan(decode(frames, limits=WireLimits(check_finite=False)).arrays["a"][2]) == np.isnan(bad)


def test_bool_array_bytes_other_than_zero_and_one_are_rejected() -> None:
    frames = as_wire_bytes(encode(make_msg(arrays={"d": np.array([True, False, True])})))
    assert reason_of([frames[0], b"\x01\x02\x00"]) == "bad_value"


def test_wire_error_only_carries_known_reasons() -> None:
    with pytest.raises(ValueError):
        WireError("made_up", "x")
    err = WireError("bad_header", "detail text")
    assert isinstance(err, ValueError)
    assert str(err) == "bad_header: detail text"


# ------------------------------------------------------------------------------------------------ no pickle


class _Exploit:
    ran = False

    def __reduce__(self):
        return (_Exploit._mark, ())

    @staticmethod
    def _mark() -> None:
        _Exploit.ran = True


@pytest.mark.parametrize("arr", [
    np.array([_Exploit(), 1], dtype=object), np.array(["a", "b"]), np.zeros(2, np.complex128),
    np.zeros(2, np.float16), np.zeros(2, np.int8), np.zeros(2, "datetime64[s]"),
], ids=["object", "unicode", "complex", "float16", "int8", "datetime"])
def test_disallowed_dtype_cannot_be_encoded(arr: np.ndarray) -> None:
    with pytest.raises(WireError) as info:
        encode(make_msg(arrays={"x": arr}))
    assert info.value.reason == "bad_dtype"
    assert str(arr.dtype) in str(info.value) and "allowed" in str(info.value)


@pytest.mark.parametrize("ext", [msgpack.ExtType(1, b"\x80\x04N."), msgpack.Timestamp(1, 0)], ids=["ext", "timestamp"])
def test_header_with_msgpack_ext_types_is_rejected(ext: Any) -> None:
    assert reason_of(reframe(valid_frames(), meta={"x": ext})) == "not_msgpack"
    assert reason_of([msgpack.packb(ext)]) == "not_msgpack"


def test_pickled_bytes_in_an_array_frame_are_never_unpickled() -> None:
    payload = pickle.dumps(_Exploit())
    frames = as_wire_bytes(encode(make_msg(arrays={"blob": np.frombuffer(payload, dtype=np.uint8)})))
    assert reason_of(reframe(frames, arrays=[["blob", "object", [len(payload)]]])) == "bad_dtype"
    got = decode(frames)
    assert bytes(got.arrays["blob"]) == payload
    assert not _Exploit.ran


def test_round_trip_works_with_pickle_disabled(ctx: zmq.Context, monkeypatch: pytest.MonkeyPatch) -> None:
    def refuse(*args: Any, **kwargs: Any) -> None:
        raise AssertionError("pickle used on the wire")

    for name in ("dumps", "loads", "dump", "load"):
        monkeypatch.setattr(pickle, name, refuse)
    pull = ctx.socket(zmq.PULL)
    port = pull.bind_to_random_port("tcp://127.0.0.1")
    push = ctx.socket(zmq.PUSH)
    push.connect(f"tcp://127.0.0.1:{port}")
    wire.send(push, make_msg(type=wire.ROLLOUT, meta={"k": 1}, arrays=all_dtype_arrays()))
    frames = recv_within(pull, 5000)
    assert frames is not None
    assert decode(frames).meta == {"k": 1}


# ------------------------------------------------------------------------------------------------ encode checks


@pytest.mark.parametrize("kw,reason", [
    ({"type": "exec"}, "unknown_type"),
    ({"seq": -1}, "bad_header"),
    ({"weight_version": -1}, "bad_header"),
    ({"weight_version": 1.0}, "bad_header"),
    ({"run_id": None}, "bad_header"),
    ({"sender": ""}, "bad_header"),
    ({"meta": {"r": float("nan")}}, "non_finite"),
    ({"meta": {"r": [1, 2]}}, "bad_header"),
    ({"meta": {"a": np.zeros(2)}}, "bad_header"),
    ({"meta": {1: 2}}, "bad_header"),
    ({"arrays": {"": np.zeros(2)}}, "bad_header"),
])
def test_encode_refuses_messages_the_receiver_would_drop(kw: dict[str, Any], reason: str) -> None:
    with pytest.raises(WireError) as info:
        encode(make_msg(**kw))
    assert info.value.reason == reason


# ------------------------------------------------------------------------------------------------ socket cap


def test_oversized_message_never_reaches_the_receiver_and_a_fresh_sender_still_gets_through(
        ctx: zmq.Context) -> None:
    pull = ctx.socket(zmq.PULL)
    wire.configure_socket(pull, max_msg_bytes=4096, hwm=8)
    assert pull.getsockopt(zmq.MAXMSGSIZE) == 4096
    assert pull.getsockopt(zmq.LINGER) == 0
    assert (pull.getsockopt(zmq.SNDHWM), pull.getsockopt(zmq.RCVHWM)) == (8, 8)
    port = pull.bind_to_random_port("tcp://127.0.0.1")

    bad = ctx.socket(zmq.PUSH)
    bad.setsockopt(zmq.LINGER, 0)
    bad.connect(f"tcp://127.0.0.1:{port}")
    wire.send(bad, make_msg(type=wire.ROLLOUT, sender="big", arrays={"x": np.zeros(64 * 1024, np.uint8)}))
    assert recv_within(pull, 500) is None
    bad.close()

    good = ctx.socket(zmq.PUSH)
    good.setsockopt(zmq.LINGER, 0)
    good.connect(f"tcp://127.0.0.1:{port}")
    wire.send(good, make_msg(sender="small", arrays={"x": np.ones(16, np.float32)}))
    frames = recv_within(pull, 5000)
    assert frames is not None
    got = decode(frames, expected_run_id=RUN)
    assert got.sender == "small"
    assert recv_within(pull, 100) is None  # nothing of the oversized message turned up late


# ------------------------------------------------------------------------------------------------ rollouts

T, E, N, O, A, H = 5, 3, 6, 4, 7, 8


def rollout_spec(**kw: Any) -> RolloutSpec:
    fields: dict[str, Any] = {"n_agents": N, "obs_dim": O, "n_actions": A, "n_steps": T, "max_envs": 8,
                              "hidden": H, "fp_dim": A}
    fields.update(kw)
    return RolloutSpec(**fields)


def rollout_arrays(n_envs: int = E, recurrent: bool = True) -> dict[str, np.ndarray]:
    rng = np.random.default_rng(1)
    arrays = {
        "obs": rng.standard_normal((T, n_envs, N, O)).astype(np.float32),
        "actions": rng.integers(0, A, (T, n_envs, N)).astype(np.int64),
        "rewards": rng.standard_normal((T, n_envs, N)).astype(np.float32),
        "dones": np.zeros((T, n_envs), dtype=bool),
        "starts": np.zeros((T, n_envs), dtype=bool),
        "values": rng.standard_normal((T, n_envs, N)).astype(np.float32),
        "logp": -rng.random((T, n_envs, N)).astype(np.float32),
        "bootstrap": rng.standard_normal((n_envs, N)).astype(np.float32),
    }
    arrays["dones"][-1] = True
    arrays["starts"][0] = True
    if recurrent:
        arrays["h0"] = np.zeros((n_envs, N, H), np.float32)
        arrays["c0"] = np.zeros((n_envs, N, H), np.float32)
        arrays["fp0"] = np.full((n_envs, N, A), 1.0 / A, np.float32)
    return arrays


def rollout_msg(arrays: dict[str, np.ndarray] | None = None) -> Message:
    return make_msg(type=wire.ROLLOUT, weight_version=5, arrays=rollout_arrays() if arrays is None else arrays)


def rollout_reason(arrays: dict[str, np.ndarray], spec: RolloutSpec | None = None) -> str:
    with pytest.raises(WireError) as info:
        validate_rollout(rollout_msg(arrays), spec or rollout_spec())
    return info.value.reason


def test_valid_rollout_passes_after_a_trip_over_the_wire() -> None:
    got = decode(encode(rollout_msg()), expected_run_id=RUN)
    validate_rollout(got, rollout_spec())
    validate_rollout(got, rollout_spec(n_envs=E))
    assert got.weight_version == 5


def test_rollout_without_recurrent_state_passes_a_feedforward_spec() -> None:
    validate_rollout(rollout_msg(rollout_arrays(recurrent=False)), rollout_spec(hidden=None, fp_dim=None))


def test_rollout_layout_is_the_one_common_rollout_uses() -> None:
    from common.rollout import Rollout

    got = decode(encode(rollout_msg()))
    rollout = Rollout(**got.arrays, version=got.weight_version)
    rollout.validate()
    validate_rollout(make_msg(type=wire.ROLLOUT, arrays=rollout.arrays()), rollout_spec())


@pytest.mark.parametrize("name,index", [("rewards", (0, 0, 0)), ("obs", (1, 2, 3, 0)), ("values", (4, 0, 5)),
                                        ("bootstrap", (0, 1)), ("h0", (0, 0, 0))])
def test_rollout_with_nan_is_rejected_as_non_finite(name: str, index: tuple[int, ...]) -> None:
    arrays = rollout_arrays()
    arrays[name][index] = np.nan
    assert rollout_reason(arrays) == "non_finite"
    with pytest.raises(WireError, match="non_finite"):  # decode catches it first on the wire
        decode(encode(rollout_msg(arrays)))


def test_rollout_nan_reward_is_caught_by_the_validator_even_when_decode_skips_finiteness() -> None:
    arrays = rollout_arrays()
    arrays["rewards"][2, 1, 3] = np.nan
    got = decode(encode(rollout_msg(arrays)), limits=WireLimits(check_finite=False))
    with pytest.raises(WireError) as info:
        validate_rollout(got, rollout_spec())
    assert info.value.reason == "non_finite" and "rewards" in info.value.detail


def test_rollout_with_the_wrong_agent_count_is_rejected() -> None:
    arrays = rollout_arrays()
    with pytest.raises(WireError) as info:
        validate_rollout(rollout_msg(arrays), rollout_spec(n_agents=N + 1))
    assert info.value.reason == "bad_shape" and "agents" in info.value.detail
    arrays["rewards"] = arrays["rewards"][:, :, :-1].copy()
    assert rollout_reason(arrays) == "bad_shape"


def test_rollout_with_the_wrong_obs_width_is_rejected() -> None:
    with pytest.raises(WireError) as info:
        validate_rollout(rollout_msg(), rollout_spec(obs_dim=O + 2))
    assert info.value.reason == "bad_shape" and "obs width" in info.value.detail


def test_rollout_with_the_wrong_window_length_is_rejected() -> None:
    assert rollout_reason(rollout_arrays(), rollout_spec(n_steps=T + 1)) == "bad_shape"


def test_rollout_with_too_many_or_unexpected_env_counts_is_rejected() -> None:
    assert rollout_reason(rollout_arrays(n_envs=9)) == "bad_shape"
    assert rollout_reason(rollout_arrays(n_envs=2), rollout_spec(n_envs=3)) == "bad_shape"
    assert rollout_reason(rollout_arrays(n_envs=0)) == "bad_shape"


def test_rollout_with_inconsistent_env_axes_is_rejected() -> None:
    arrays = rollout_arrays()
    arrays["dones"] = np.zeros((T, E + 1), bool)
    assert rollout_reason(arrays) == "bad_shape"


def test_rollout_with_the_wrong_rank_is_rejected() -> None:
    arrays = rollout_arrays()
    arrays["obs"] = arrays["obs"].reshape(T, E, N * O)
    assert rollout_reason(arrays) == "bad_shape"
    arrays = rollout_arrays()
    arrays["actions"] = arrays["actions"].reshape(T * E, N)
    assert rollout_reason(arrays) == "bad_shape"


@pytest.mark.parametrize("bad_action", [A, -1, 10**6])
def test_rollout_with_an_action_out_of_range_is_rejected(bad_action: int) -> None:
    arrays = rollout_arrays()
    arrays["actions"][3, 1, 2] = bad_action
    assert rollout_reason(arrays) == "bad_value"


@pytest.mark.parametrize("name,dtype", [("actions", np.int32), ("obs", np.float64), ("dones", np.uint8),
                                        ("rewards", np.float64)])
def test_rollout_with_the_wrong_dtype_is_rejected(name: str, dtype: type) -> None:
    arrays = rollout_arrays()
    arrays[name] = arrays[name].astype(dtype)
    assert rollout_reason(arrays) == "bad_dtype"


@pytest.mark.parametrize("name", ["obs", "actions", "logp", "bootstrap", "h0", "fp0"])
def test_rollout_missing_an_array_is_rejected(name: str) -> None:
    arrays = rollout_arrays()
    del arrays[name]
    assert rollout_reason(arrays) == "missing_array"


def test_rollout_with_an_unknown_array_or_unexpected_recurrent_state_is_rejected() -> None:
    arrays = rollout_arrays()
    arrays["extra"] = np.zeros(1, np.float32)
    assert rollout_reason(arrays) == "unexpected_array"
    assert rollout_reason(rollout_arrays(), rollout_spec(hidden=None)) == "unexpected_array"


def test_validate_rollout_refuses_other_message_types() -> None:
    with pytest.raises(WireError) as info:
        validate_rollout(make_msg(type=wire.WEIGHTS, arrays=rollout_arrays()), rollout_spec())
    assert info.value.reason == "wrong_type"


def test_rollout_spec_layout_lists_every_array_with_its_shape() -> None:
    layout = rollout_spec().layout(2)
    assert layout["obs"] == ((T, 2, N, O), "float32")
    assert layout["actions"] == ((T, 2, N), "int64")
    assert layout["dones"] == ((T, 2), "bool")
    assert layout["h0"] == ((2, N, H), "float32")
    assert set(rollout_spec(hidden=None, fp_dim=None).layout(1)) == {
        "obs", "actions", "rewards", "dones", "starts", "values", "logp", "bootstrap"}


# ------------------------------------------------------------------------------------------------ weights


def small_model():
    import torch

    torch.manual_seed(0)
    model = torch.nn.Sequential(torch.nn.Linear(4, 8), torch.nn.LSTM(8, 8), torch.nn.Linear(8, 3))
    model.register_buffer("steps", torch.tensor(11, dtype=torch.int64))
    model.register_buffer("fp16_buf", torch.ones(2, dtype=torch.float16))
    return torch, model


def test_state_dict_round_trips_through_a_weights_message() -> None:
    torch, model = small_model()
    arrays = wire.state_dict_to_arrays(model.state_dict())
    assert arrays["fp16_buf"].dtype == np.float32 and arrays["steps"].dtype == np.int64
    got = decode(encode(make_msg(type=wire.WEIGHTS, sender="learner", weight_version=12, arrays=arrays)),
                 expected_run_id=RUN)
    shapes = {name: tuple(t.shape) for name, t in model.state_dict().items()}
    validate_weights(got, expected_shapes=shapes)
    _, other = small_model()
    with torch.no_grad():
        for p in other.parameters():
            p.zero_()
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # torch warns about read-only numpy arrays; we must copy them first
        state = wire.arrays_to_state_dict(got.arrays)
    other.load_state_dict(state)
    for (name, a), (_, b) in zip(model.state_dict().items(), other.state_dict().items(), strict=True):
        assert torch.equal(a, b), name


def test_state_dict_arrays_are_copies_so_training_can_continue_while_sending() -> None:
    torch, model = small_model()
    arrays = wire.state_dict_to_arrays(model.state_dict())
    before = arrays["0.weight"].copy()
    with torch.no_grad():
        model[0].weight.add_(1.0)
    np.testing.assert_array_equal(arrays["0.weight"], before)


def test_weights_with_nan_are_rejected() -> None:
    arrays = {"w": np.ones((2, 2), np.float32)}
    arrays["w"][1, 1] = np.nan
    with pytest.raises(WireError) as info:
        validate_weights(make_msg(type=wire.WEIGHTS, arrays=arrays))
    assert info.value.reason == "non_finite"


@pytest.mark.parametrize("kw,shapes,reason", [
    ({"type": wire.ROLLOUT}, None, "wrong_type"),
    ({"weight_version": -1}, None, "bad_header"),
    ({"arrays": {}}, None, "missing_array"),
    ({}, {"w": (2, 2), "b": (2,)}, "missing_array"),
    ({}, {}, "unexpected_array"),
    ({}, {"w": (2, 3)}, "bad_shape"),
])
def test_bad_weights_messages_are_rejected(kw: dict[str, Any], shapes: dict | None, reason: str) -> None:
    fields: dict[str, Any] = {"type": wire.WEIGHTS, "arrays": {"w": np.ones((2, 2), np.float32)}}
    fields.update(kw)
    with pytest.raises(WireError) as info:
        validate_weights(make_msg(**fields), expected_shapes=shapes)
    assert info.value.reason == reason


def test_wire_module_imports_without_torch() -> None:
    code = "import sys; sys.modules['torch'] = None; import common.wire; print('ok')"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=15,
                         cwd=Path(__file__).resolve().parents[1])
    assert out.returncode == 0, out.stderr
