"""Probe: does ZeroMQ alone delay a PUB's good subscriber while another floods it with oversized subscriptions?

    python benchmarks/sub_flood_probe.py [--seconds 20]

A PUB bound on ipc:// with the daemon's subscription limit (MAXMSGSIZE 255) sends 50 stamped messages a second to a
good SUB; then the same with the hostile suite's subscription flood (100,000 subscriptions of 513 bytes, reconnecting
every 3 s) from another process. Prints the good subscriber's delay, p50/p99/max, for each (docs/reliability.md,
"Every attack at once": the flood's effect on the daemon's subscribers is not reproduced by ZeroMQ alone).
"""

from __future__ import annotations

import argparse
import subprocess
import sys
import tempfile
import threading
import time

import numpy as np
import zmq

FLOOD = """
import os, sys, time, zmq
c = zmq.Context(); s = c.socket(zmq.SUB)
s.setsockopt(zmq.LINGER, 0); s.setsockopt(zmq.RCVHWM, 10); s.setsockopt(zmq.SNDHWM, 0)
s.setsockopt(zmq.RECONNECT_IVL, 3000); s.connect(sys.argv[1])
for _ in range(100_000):
    s.setsockopt(zmq.SUBSCRIBE, os.urandom(513))
time.sleep(3600)
"""


def run(address: str, seconds: float, flood: bool) -> np.ndarray:
    ctx = zmq.Context()
    pub = ctx.socket(zmq.PUB)
    pub.setsockopt(zmq.MAXMSGSIZE, 255)
    pub.setsockopt(zmq.LINGER, 0)
    pub.bind(address)
    delays: list[float] = []
    stop = threading.Event()

    def good() -> None:
        sub = ctx.socket(zmq.SUB)
        sub.setsockopt(zmq.SUBSCRIBE, b"")
        sub.connect(address)
        while not stop.is_set():
            if sub.poll(100):
                delays.append(time.time() - float(sub.recv_multipart()[1]))
        sub.close(0)

    thread = threading.Thread(target=good)
    thread.start()
    time.sleep(1.0)
    attacker = subprocess.Popen([sys.executable, "-c", FLOOD, address]) if flood else None
    try:
        end = time.time() + seconds
        while time.time() < end:
            for _ in range(50):
                pub.send_multipart([b"sbp.x", repr(time.time()).encode()])
            time.sleep(1.0)
    finally:
        stop.set()
        thread.join()
        if attacker is not None:
            attacker.kill()
            attacker.wait()
        pub.close(0)
        ctx.term()
    return np.array(delays)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--seconds", type=float, default=20.0)
    args = p.parse_args()
    with tempfile.TemporaryDirectory() as folder:
        for flood in (False, True):
            d = run(f"ipc://{folder}/pub{int(flood)}", args.seconds, flood)
            p50, p99 = np.percentile(d, [50, 99])
            print(f"{'flood' if flood else 'no flood'}: {len(d)} messages, delay p50 {p50 * 1e3:.1f} ms, "
                  f"p99 {p99 * 1e3:.1f} ms, max {d.max() * 1e3:.1f} ms")  # fmt: skip


if __name__ == "__main__":
    main()
