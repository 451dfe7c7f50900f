"""The ECG topic under hostile input (issue 25): the PPG topic's 12 kinds of adversarial message, re-aimed at
`ecg.<device>`, and replays of a good device's own ECG, interleaved with that device's PPG and ECG, into a real
daemon process. The good device's estimates, its arrival times included, must be those of a clean run; every
rejection counted under the contract's reason; the daemon up."""

from __future__ import annotations

import math
from collections import Counter

import msgpack
import numpy as np
from test_fuzz import estimates_of, expected_reason, hostile, wait_until
from zmq_helpers import client, daemon_process, ipc_addresses

from p2p_stream.tools.bridges.fleet import Fleet, FleetConfig
from p2p_stream.wire.protocol import encode_ingest

T0 = 1_700_000_000.0
SEED = 20261207
N = 2000


def as_ecg(frames: list[bytes]) -> list[bytes]:
    """A hostile PPG message re-aimed at the ECG topic: its topic's prefix and, in a map, its samples' key."""
    topic = b"ecg." + frames[0][4:] if frames and frames[0].startswith(b"ppg.") else frames[0] if frames else b""
    out = [topic, *frames[1:]]
    if len(frames) == 2:
        try:
            msg = msgpack.unpackb(frames[1], raw=False, strict_map_key=False)
        except Exception:  # noqa: BLE001 - random bytes stay random bytes
            return out
        if isinstance(msg, dict) and "ppg" in msg:
            msg["ecg"] = msg.pop("ppg")
            out[1] = msgpack.packb(msg)
    return out


def ecg_reason(frames: list[bytes]) -> str:
    """What the contract says of a hostile ECG message: its decoding's rejection, else `ecg_no_ppg_stream` (its
    device sends no PPG: an ECG alone never takes a device slot)."""
    return expected_reason(frames, channel="ecg") or "ecg_no_ppg_stream"


def good_messages(seconds: float, device: str = "good") -> list[list[bytes]]:
    """A simulated wearable's PPG and ECG messages; the same signal whatever its id."""
    f = Fleet(FleetConfig(devices=1, rates_hz=(125.0,), ecg=True, seed=7, ids=(device,)))
    out = []
    while f.t < seconds:
        for m in f.tick():
            out.append(encode_ingest(m.device, m.seq, T0 + m.t0, m.fs, m.ppg))
            out.append(encode_ingest(m.device, m.seq, T0 + m.t0, f.config.ecg_hz, m.ecg, channel="ecg"))
    return out


KEYS = ("seq", "t", "ok", "reason", "sbp", "dbp", "sqi", "hr", "pat_ms")


def test_hostile_ecg_messages_are_counted_and_dropped_and_the_good_device_loses_nothing():
    rng = np.random.default_rng(SEED)
    barrage = [as_ecg(hostile(rng)) for _ in range(N)]
    good = good_messages(14.0)
    ecg_of_good = [m for m in good if m[0] == b"ecg.good"]
    replays = [ecg_of_good[int(k)] for k in rng.integers(0, 10, 40)]  # its first ECG messages, sent again later
    expected = Counter(map(ecg_reason, barrage))
    assert sum(n for r, n in expected.items() if r != "ecg_no_ppg_stream") > N / 2  # the generator is hostile
    per = math.ceil(N / len(good))
    with ipc_addresses() as a, daemon_process(a) as proc, client(a) as c:
        for m in good_messages(14.0, "clean"):  # the clean run: the same samples under another id
            c.pub.send_multipart(m)
        clean = c.estimates(lambda g: len(estimates_of(g, "clean")) >= 10, timeout_s=60)
        sent = c.control({"cmd": "stats"})["messages_total"]
        for i, m in enumerate(good):
            c.pub.send_multipart(m)
            chunk = barrage[i * per : (i + 1) * per] + ([replays.pop()] if i > 60 and replays else [])
            for frames in chunk:
                c.pub.send_multipart(frames)
            sent += 1 + len(chunk)
        wait_until(lambda: c.control({"cmd": "stats"})["messages_total"] >= sent, 120)
        got = c.estimates(lambda g: len(estimates_of(g, "good")) >= 10, timeout_s=60)
        stats = c.control({"cmd": "stats"})
        assert proc.poll() is None, "the daemon died"
    keyed = lambda es, d: [tuple(e.get(k) for k in KEYS) for e in es if e["device"] == d]  # noqa: E731
    mine, reference = keyed(got, "good"), keyed(clean, "clean")
    assert len(mine) >= 10 and [e[:4] for e in mine] == [e[:4] for e in reference[: len(mine)]]
    close = lambda x, y: x == y if x is None or y is None else abs(x - y) <= 0.051  # noqa: E731 - msgpack's rounding
    for e, ref in zip(mine, reference):
        assert all(close(x, y) for x, y in zip(e[4:], ref[4:])), (e, ref)
    assert any(e[-1] is not None for e in mine)  # its arrival times were measured, under fire
    rejected = stats["rejected"]
    assert "internal" not in rejected
    for reason, n in expected.items():
        assert rejected.get(reason, 0) == n, (reason, rejected.get(reason), n)
    assert rejected.get("ecg_duplicate", 0) == 40  # every replay of its own ECG refused, none applied


def test_the_same_replay_again_and_again_never_resyncs_and_cycling_rates_is_shed():
    """Found in review: any third refused message in a row resynced the channel, the same one three times too; and
    a new rate on every message cost a filter design each (~1 ms) for nothing."""
    from p2p_stream.beats.device_beats import DeviceBeats
    from p2p_stream.stream.ingest.ecg_channel import EcgChannel
    from p2p_stream.wire.protocol import Ingest

    x = np.zeros(50, dtype=np.float32)
    msg = lambda seq, t0, fs=250.0: Ingest("d", seq, t0, fs, x, None, None, None, "ecg")  # noqa: E731
    ch = EcgChannel(DeviceBeats(), rate_factor=4.0, burst_s=60.0, resync=3)
    assert [ch.push(msg(k, 100.0 + k * 0.2), 0.0) for k in range(10)] == [None] * 10
    assert [ch.push(msg(2, 100.4), 0.0) for _ in range(10)] == ["duplicate"] * 10  # the same one: never accepted
    # Three stale messages that continue each other (a device whose clock was pushed ahead by a forgery): resync.
    assert [ch.push(msg(5 + k, 101.0 + k * 0.2), 0.0) for k in range(3)] == ["duplicate", "duplicate", None]
    cycling = EcgChannel(DeviceBeats(), rate_factor=4.0, burst_s=60.0, resync=3)
    dropped = [cycling.push(msg(k, 200.0 + k, fs=250.0 + k), 0.0) for k in range(200)]
    assert dropped.count("over_budget") > 100  # a restart costs a second of the 60-s burst: about 60 get through
