"""Protocol: the wire contract v1 (../shared/PROTOCOL.md) as pure encode/decode pairs, validating before anything acts.

Every message is two frames, ``[topic, msgpack map]``:

    ppg.<device>  ingest     {v, device, seq, t0, fs, ppg, ref?, meta?, wearer?}
    ecg.<device>  ingest     the same keys, `ecg` in place of `ppg`: a second channel on the device's clock
    sbp.<device>  estimate   {v, device, seq, t, window_s, sbp, dbp, ok, ...}: declared in wire/estimate.py (FIELDS)
    status        heartbeat  {uptime_s, devices, windows_total, windows_per_s, batch_mean, latency_p50_ms,
                              latency_p99_ms, rejected, ...}

`decode_ingest` raises `ProtocolError` whose `reason` is a short name counted in the heartbeat's `rejected`.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import msgpack
import numpy as np

from p2p_stream.errors import ProtocolError
from p2p_stream.ids import DEVICE_MAX_BYTES, DEVICE_RE  # noqa: F401  (DEVICE_MAX_BYTES: part of the contract, read from here)
from p2p_stream.model.demographics import age_years

VERSION = 1
INGEST_PREFIX = b"ppg."
ECG_PREFIX = b"ecg."
CHANNELS = {"ppg": INGEST_PREFIX, "ecg": ECG_PREFIX}  # channel → its topic prefix; its samples' key is its name
ESTIMATE_PREFIX = b"sbp."
STATUS_TOPIC = b"status"
# \A…\Z, not ^…$: `$` also matches before a trailing newline, so "dev\n" would pass `.match`. Use `.fullmatch`.
MIN_FS_HZ = 20.0  # below this a pulse wave's shape is gone (PPG sensors sample at 25 Hz and more)
MAX_FS_HZ = 10_000.0  # above this it is not a PPG sensor
MAX_SAMPLES = 16_384  # per message (16 s at 1 kHz); a wearable sends tens to hundreds
# 160 KiB: MAX_SAMPLES as a msgpack array of float64 (9 bytes each) and the other keys; bigger payloads are refused
# before unpacking. It sizes every ingest queue's bytes (docs/reliability.md), so it is kept near what is needed.
MAX_MESSAGE_BYTES = 160 * 1024
# The largest frame ZeroMQ hands us (the daemon's and the proxy's MAXMSGSIZE): a payload up to twice the limit
# reaches the code and is counted `oversized`; a bigger frame makes ZeroMQ drop the sender's connection.
MAX_FRAME_BYTES = 2 * MAX_MESSAGE_BYTES


@dataclass
class Ingest:
    """One validated ingest message."""

    device: str
    seq: int
    t0: float  # Unix time of the first sample, s
    fs: float  # Hz
    ppg: np.ndarray  # (n,) float32 samples of `channel` (named for the first one); may hold NaN/Inf, never empty
    ref: tuple[float, float] | None  # (sbp, dbp) mmHg
    meta: dict | None
    # Who wears the device: an opaque key of the operator's choosing (a subject or session id, never a name). A
    # change starts a new wearer session (stream/state/sessions.py); None says nothing, the session goes on.
    wearer: str | None = None
    channel: str = "ppg"  # which topic it came on (CHANNELS)

    @property
    def samples(self) -> np.ndarray:
        """Its samples, whichever the channel (`ppg` keeps the name the first channel gave it)."""
        return self.ppg


def _unpack(payload: bytes) -> object:
    if len(payload) > MAX_MESSAGE_BYTES:
        raise ProtocolError("oversized", f"payload of {len(payload)} bytes exceeds {MAX_MESSAGE_BYTES}")
    try:
        return msgpack.unpackb(payload, raw=False, strict_map_key=True)
    except Exception as exc:  # msgpack raises several unrelated exception types for garbage
        raise ProtocolError("not_msgpack", f"payload is not msgpack ({type(exc).__name__})") from exc


def _number(value: object, key: str) -> float:
    if type(value) is not float and type(value) is not int:  # bool, a subclass of int, is refused too
        raise ProtocolError("bad_type", f"{key!r} must be a number, got {type(value).__name__}")
    return float(value)


def _samples(value: object, key: str = "ppg") -> np.ndarray:
    """`ppg` (or `ecg`) → float32 samples; bytes are viewed in place (zero-copy), not copied."""
    if type(value) is bytes:
        if len(value) % 4:
            raise ProtocolError("bad_samples", f"'{key}' bytes length {len(value)} is not a multiple of 4 (float32)")
        x = np.frombuffer(value, dtype="<f4")
    elif isinstance(value, list):
        if not all(isinstance(v, (int, float)) and not isinstance(v, bool) for v in value):
            raise ProtocolError("bad_samples", f"'{key}' array must hold only numbers")
        x = np.asarray(value, dtype=np.float32)
    else:
        raise ProtocolError("bad_type", f"'{key}' must be float32 bytes or an array, got {type(value).__name__}")
    if x.size == 0:
        raise ProtocolError("empty_samples", f"'{key}' holds no samples")
    if x.size > MAX_SAMPLES:
        raise ProtocolError("oversized", f"'{key}' holds {x.size} samples, more than {MAX_SAMPLES}")
    return x


REQUIRED_KEYS = ("v", "device", "seq", "t0", "fs", "ppg")


def decode_ingest(
    frames: list[bytes],
    now: float | None = None,
    max_clock_skew_s: float = math.inf,
    max_fs_hz: float = MAX_FS_HZ,
    channel: str = "ppg",
) -> Ingest:
    """Validate and decode ``[topic, payload]`` from a wearable; raises ProtocolError(reason, message).

    With `now` (the receiver's Unix time, s), a `t0` more than `max_clock_skew_s` from it is refused as `bad_time`:
    a stream's clock is then never further than that from the daemon's, whatever a forged or buggy message says.
    `max_fs_hz` (at most MAX_FS_HZ) is the receiver's own ceiling on the rate: it bounds each device's ring memory.

    `channel` ("ppg" or "ecg", CHANNELS) says which topic prefix and samples key the message must have.

    This runs once per message on the daemon's ingest thread, so the checks are written for speed
    (exact type tests, one dict lookup per key); each still names what is wrong.
    """
    if len(frames) != 2:
        raise ProtocolError("bad_frames", f"expected 2 frames [topic, payload], got {len(frames)}")
    topic, payload = frames
    prefix = CHANNELS[channel]
    if not topic.startswith(prefix):
        raise ProtocolError("bad_topic", f"topic {topic[:80]!r} does not start with {prefix.decode()!r}")
    msg = _unpack(payload)
    if type(msg) is not dict:
        raise ProtocolError("bad_type", f"payload must be a map, got {type(msg).__name__}")
    try:
        v, device, seq, t0, fs, ppg = msg["v"], msg["device"], msg["seq"], msg["t0"], msg["fs"], msg[channel]
    except KeyError:
        missing = next(k for k in (*REQUIRED_KEYS[:-1], channel) if k not in msg)
        raise ProtocolError("missing_key", f"payload lacks {missing!r}") from None
    if v != VERSION or type(v) is bool:
        raise ProtocolError("bad_version", f"protocol version {v!r}, this daemon speaks {VERSION}")
    if type(device) is not str or not DEVICE_RE.fullmatch(device):
        raise ProtocolError("bad_device", f"device id {str(device)[:80]!r} is not 1–64 of [A-Za-z0-9_.:-]")
    if topic[len(prefix) :] != device.encode():
        raise ProtocolError("bad_device", f"topic {topic[:80]!r} does not match device {device!r}")
    if type(seq) is not int or seq < 0:
        raise ProtocolError("bad_type", f"'seq' must be an integer ≥ 0, got {seq!r}")
    t0, fs = _number(t0, "t0"), _number(fs, "fs")
    if not math.isfinite(t0):
        raise ProtocolError("bad_time", f"'t0' must be finite, got {t0}")
    if now is not None and not abs(t0 - now) <= max_clock_skew_s:
        raise ProtocolError(
            "bad_time",
            f"'t0' = {t0:.3f} is {t0 - now:+.0f} s from the daemon's clock; at most ±{max_clock_skew_s:g} s "
            "is accepted (limits.max_clock_skew_s): set the wearable's clock",
        )
    if not (MIN_FS_HZ <= fs <= max_fs_hz):  # NaN fails this too
        raise ProtocolError("bad_fs", f"'fs' must be within {MIN_FS_HZ:g}–{max_fs_hz:g} Hz, got {fs}")
    ref = None
    r = msg.get("ref")
    if r is not None:
        if type(r) is not dict:
            raise ProtocolError("bad_type", "'ref' must be a map {sbp, dbp}")
        ref = (_number(r.get("sbp"), "sbp"), _number(r.get("dbp"), "dbp"))
        if not all(math.isfinite(v) for v in ref):
            raise ProtocolError("bad_type", f"'ref' values must be finite, got {ref}")
    meta = msg.get("meta")
    if meta is not None and type(meta) is not dict:
        raise ProtocolError("bad_type", "'meta' must be a map")
    wearer = msg.get("wearer")
    if wearer is not None and (type(wearer) is not str or not DEVICE_RE.fullmatch(wearer)):
        raise ProtocolError("bad_wearer", f"'wearer' {str(wearer)[:80]!r} is not 1–64 of [A-Za-z0-9_.:-]")
    meta = _known_meta(meta) if meta else None
    return Ingest(device, seq, t0, fs, _samples(ppg, channel), ref, meta, wearer, channel)


def _known_meta(meta: dict | None) -> dict | None:
    """Keep only the subject facts a model can use (age, sex), small; the rest is not stored per device."""
    if not meta:
        return None
    kept = {}
    try:
        kept["age"] = age_years(meta["age"])  # the model's rule, so the worker never meets an age it refuses
    except (KeyError, ValueError):
        pass
    sex = meta.get("sex")
    if isinstance(sex, str):
        kept["sex"] = sex[:8]
    return kept or None


def encode_ingest(
    device: str,
    seq: int,
    t0: float,
    fs: float,
    ppg: np.ndarray,
    ref: tuple[float, float] | None = None,
    meta: dict | None = None,
    wearer: str | None = None,
    channel: str = "ppg",
) -> list[bytes]:
    """Frames of one ingest message of `channel` (CHANNELS: "ppg", or "ecg" with `ppg` holding the ECG samples),
    samples as little-endian float32 bytes."""
    msg: dict = {
        "v": VERSION,
        "device": device,
        "seq": seq,
        "t0": t0,
        "fs": fs,
        channel: np.ascontiguousarray(ppg, dtype="<f4").tobytes(),
    }
    if ref is not None:
        msg["ref"] = {"sbp": float(ref[0]), "dbp": float(ref[1])}
    if meta:
        msg["meta"] = meta
    if wearer is not None:
        msg["wearer"] = wearer
    return [CHANNELS[channel] + device.encode(), msgpack.packb(msg, use_bin_type=True)]


def encode_estimate(estimate: dict) -> list[bytes]:
    """Frames of one estimate; `estimate` holds the keys wire/estimate.py declares (`check_estimate` says if not)."""
    return [ESTIMATE_PREFIX + estimate["device"].encode(), msgpack.packb(estimate, use_bin_type=True)]


def decode_estimate(frames: list[bytes]) -> dict:
    """For subscribers and tests: ``[topic, payload]`` → the estimate map."""
    if len(frames) != 2 or not frames[0].startswith(ESTIMATE_PREFIX):
        raise ProtocolError("bad_frames", "not an estimate message")
    msg = _unpack(frames[1])
    if not isinstance(msg, dict) or msg.get("v") != VERSION:
        raise ProtocolError("bad_version", "estimate is not a v1 map")
    return msg


def encode_status(status: dict) -> list[bytes]:
    return [STATUS_TOPIC, msgpack.packb(status, use_bin_type=True)]


def decode_map(payload: bytes) -> dict:
    """A msgpack map (heartbeat, control request or reply)."""
    msg = _unpack(payload)
    if not isinstance(msg, dict):
        raise ProtocolError("bad_type", f"expected a map, got {type(msg).__name__}")
    return msg


def pack(msg: dict) -> bytes:
    return msgpack.packb(msg, use_bin_type=True)
