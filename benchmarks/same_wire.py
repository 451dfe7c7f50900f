"""What one tree's daemon publishes for a fixed input, as JSON: the wire contract, compared across trees.

    bash benchmarks/same_wire.sh OLD_REV     # this tree against OLD_REV: every estimate equal but its latency_ms

Runs the daemon in-process (4 s windows, 1 s hop) and streams three devices: one with age and sex and a seq gap
(a `gap` marker), one with a cuff reference, one flat (rejected `flatline`); prints every estimate (less
`latency_ms`) in (device, seq) order, and the heartbeat's keys. `python benchmarks/same_wire.py [STORE]` with a
state store path adds `epoch`."""

from __future__ import annotations

import json
import sys
import tempfile
import threading
import time

import numpy as np
import zmq

from p2p_stream.config.daemon import load_daemon_config
from p2p_stream.model.estimator import Estimator
from p2p_stream.stream.daemon import Daemon

try:  # this tree, or one from before the wire format had a folder of its own
    from p2p_stream.wire.protocol import decode_map, encode_ingest
except ImportError:
    from p2p_stream.stream.protocol import decode_map, encode_ingest

FS, T0 = 125.0, 1_700_000_000.0


def ppg(hr_bpm: float, seconds: float, seed: int) -> np.ndarray:
    rng = np.random.default_rng(seed)
    t = np.arange(int(seconds * FS)) / FS
    phase = (t * hr_bpm / 60) % 1
    beat = 200 * np.exp(-((phase - 0.15) ** 2) / 0.005) + 80 * np.exp(-((phase - 0.45) ** 2) / 0.01)
    return (1000 + beat + 2 * rng.normal(size=t.size)).astype(np.float32)


def main() -> None:
    folder = tempfile.mkdtemp(prefix="w")
    a = {k: f"ipc://{folder}/{k}" for k in ("ingest", "publish", "control")}
    store = sys.argv[1] if len(sys.argv) > 1 else ""
    sections = {"sockets": a, "windowing": {"window_s": 4.0, "hop_s": 1.0}, "state": {"path": store},
                "limits": {"max_clock_skew_s": 1e9}}  # fmt: skip
    daemon = Daemon(load_daemon_config(None, [sections]), Estimator.load())
    thread = threading.Thread(target=daemon.run, daemon=True)
    thread.start()
    ctx = zmq.Context()
    pub, sub = ctx.socket(zmq.PUB), ctx.socket(zmq.SUB)
    pub.connect(a["ingest"])
    sub.connect(a["publish"])
    sub.setsockopt(zmq.SUBSCRIBE, b"")
    time.sleep(1.0)  # both subscriptions in place
    streams = {"a": ppg(70, 9, 1), "b": ppg(85, 9, 2), "flat": np.full(int(9 * FS), 2048.0, np.float32)}
    for device, x in streams.items():
        for seq, i in enumerate(range(0, len(x), 25)):
            extra: dict = {"ref": (120.0, 80.0)} if device == "b" else {}
            if device == "a" and i == 0:
                extra["meta"] = {"age": 60, "sex": "F"}
            if device == "a" and 500 <= i < 600:  # a seq gap: a break marker
                continue
            pub.send_multipart(encode_ingest(device, seq, T0 + i / FS, FS, x[i : i + 25], **extra))
            time.sleep(0.002)
    got, beats, end = [], [], time.monotonic() + 8
    while time.monotonic() < end:
        if sub.poll(200):
            topic, payload = sub.recv_multipart()
            (beats if topic == b"status" else got).append(decode_map(payload))
    daemon.stop()
    thread.join(10)
    ctx.destroy(linger=0)
    for e in got:
        e.pop("latency_ms", None)
    got.sort(key=lambda e: (e["device"], e["seq"]))
    print(json.dumps({"estimates": got, "status_keys": sorted(beats[-1]) if beats else []}))


if __name__ == "__main__":
    main()
