"""Wire contract v1: encode/decode round trips and every way an ingest message is refused, by reason."""

import msgpack
import numpy as np
import pytest

from p2p_stream.errors import ProtocolError
from p2p_stream.wire.estimate import example_estimate
from p2p_stream.wire.protocol import decode_estimate, decode_ingest, encode_estimate, encode_ingest


def good(**changes):
    msg = {"v": 1, "device": "w-1", "seq": 3, "t0": 1.7e9, "fs": 125.0, "ppg": np.ones(4, "<f4").tobytes()}
    msg.update(changes)
    return [b"ppg." + str(msg.get("device", "w-1")).encode(), msgpack.packb(msg)]


def test_round_trip_bytes_and_array():
    frames = encode_ingest("w-1", 3, 1.7e9, 125.0, np.arange(5.0), ref=(120, 80), meta={"age": 54, "sex": "F"})
    assert frames[0] == b"ppg.w-1"
    m = decode_ingest(frames)
    assert (m.device, m.seq, m.t0, m.fs, m.ref, m.meta) == (
        "w-1",
        3,
        1.7e9,
        125.0,
        (120.0, 80.0),
        {"age": 54, "sex": "F"},
    )
    np.testing.assert_array_equal(m.ppg, np.arange(5.0, dtype=np.float32))
    as_list = decode_ingest(good(ppg=[1, 2.5, 3]))
    np.testing.assert_array_equal(as_list.ppg, [1, 2.5, 3])


def test_estimate_round_trip():
    e = example_estimate("gap", device="d", interval=0.8, epoch=3)  # a break marker: numbers nil
    frames = encode_estimate(e)
    assert frames[0] == b"sbp.d" and decode_estimate(frames) == e


@pytest.mark.parametrize(
    "frames,reason",
    [
        ([b"ppg.w-1"], "bad_frames"),
        ([b"sbp.w-1", good()[1]], "bad_topic"),
        ([b"ppg.w-1", b"\xc1"], "not_msgpack"),
        ([b"ppg.w-1", msgpack.packb("text")], "bad_type"),
        ([b"ppg.w-1", b"\x00" * (2 << 20)], "oversized"),
        (good(v=2), "bad_version"),
        (good(v=True), "bad_version"),
        ([b"ppg.w-1", msgpack.packb({"v": 1, "device": "w-1"})], "missing_key"),
        (good(device="x" * 65), "bad_device"),
        (good(device="sp ace"), "bad_device"),
        ([b"ppg.other", good()[1]], "bad_device"),
        (good(seq=-1), "bad_type"),
        (good(seq=1.5), "bad_type"),
        (good(t0=float("inf")), "bad_time"),
        (good(fs=0.5), "bad_fs"),
        (good(fs=10.0), "bad_fs"),
        (good(ref={"sbp": float("nan"), "dbp": 80}), "bad_type"),
        (good(fs=float("nan")), "bad_fs"),
        (good(fs="125"), "bad_type"),
        (good(ppg=b""), "empty_samples"),
        (good(ppg=[]), "empty_samples"),
        (good(ppg=b"\x00\x00\x80"), "bad_samples"),
        (good(ppg=[1, "x"]), "bad_samples"),
        (good(ppg=[True, False]), "bad_samples"),
        (good(ppg={"a": 1}), "bad_type"),
        (good(ppg=np.zeros(100_001, "<f4").tobytes()), "oversized"),
        (good(ref=[120, 80]), "bad_type"),
        (good(ref={"sbp": 120}), "bad_type"),
        (good(meta="old"), "bad_type"),
    ],
)
def test_malformed_ingest_names_its_reason(frames, reason):
    with pytest.raises(ProtocolError) as info:
        decode_ingest(frames)
    assert info.value.reason == reason and str(info.value)


def test_nan_samples_pass_decoding():
    # NaN is not malformed: it is a gap, handled by the ring buffer.
    m = decode_ingest(good(ppg=np.array([1, np.nan], "<f4").tobytes()))
    assert np.isnan(m.ppg[1])


def test_meta_keeps_only_what_a_model_uses():
    m = decode_ingest(good(meta={"age": 54, "sex": "Female-ish and long", "junk": [0] * 10_000}))
    assert m.meta == {"age": 54.0, "sex": "Female-i"}
    assert decode_ingest(good(meta={"junk": 1})).meta is None
