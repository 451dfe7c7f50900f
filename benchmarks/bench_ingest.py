"""Benchmark: ingest messages/s of a real p2p-daemon, against a bare pyzmq SUB loop on the same machine.

    python benchmarks/bench_ingest.py [--messages 200000] [--devices 1000]

Pre-encodes valid 25-sample messages for N devices (125 Hz, consecutive seq and t0, so every message is
buffered and windows are cut and inferred as usual), sends them as fast as one PUB socket can, and times how
long the daemon takes to count them all (`messages_total` from `stats`). The same messages into a SUB socket
that only receives them give the ceiling of this machine's ZeroMQ path.
"""

from __future__ import annotations

import argparse
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time

import numpy as np
import zmq

from p2p_stream.protocol import decode_map, encode_ingest, pack


def messages(n_messages: int, devices: int) -> list[list[bytes]]:
    rng = np.random.default_rng(0)
    chunk = (1000 + 200 * np.sin(np.arange(25) / 5) + rng.normal(0, 2, 25)).astype(np.float32)
    return [encode_ingest(f"dev{i % devices:05d}", i // devices, 1.7e9 + (i // devices) * 0.2, 125.0, chunk)
            for i in range(n_messages)]  # fmt: skip


def bare_rate(frames: list[list[bytes]]) -> float:
    ctx = zmq.Context()
    sub, pub = ctx.socket(zmq.SUB), ctx.socket(zmq.PUB)
    for s in (sub, pub):
        s.setsockopt(zmq.LINGER, 0)
    sub.setsockopt(zmq.RCVHWM, 0)
    pub.setsockopt(zmq.SNDHWM, 0)
    sub.setsockopt(zmq.SUBSCRIBE, b"ppg.")
    folder = tempfile.mkdtemp(prefix="p2pi")
    sub.bind(f"ipc://{folder}/bare")
    pub.connect(f"ipc://{folder}/bare")
    time.sleep(0.5)
    done = threading.Event()
    count = [0]

    def receive() -> None:
        while count[0] < len(frames):
            sub.recv_multipart()
            count[0] += 1
        done.set()

    t = threading.Thread(target=receive)
    t.start()
    start = time.perf_counter()
    for f in frames:
        pub.send_multipart(f)
    done.wait(120)
    rate = count[0] / (time.perf_counter() - start)
    t.join(1)
    ctx.destroy(linger=0)
    shutil.rmtree(folder, ignore_errors=True)
    return rate


def daemon_rate(frames: list[list[bytes]]) -> float:
    folder = tempfile.mkdtemp(prefix="p2pi")
    a = {k: f"ipc://{folder}/{k}" for k in ("ingest", "publish", "control")}
    cmd = [sys.executable, "-m", "p2p_stream.cli_daemon", "--device", "cpu", "--log-level", "WARNING",
           "--ingest", a["ingest"], "--publish", a["publish"], "--control", a["control"]]  # fmt: skip
    proc = subprocess.Popen(cmd)
    ctx = zmq.Context()
    req = ctx.socket(zmq.REQ)
    req.setsockopt(zmq.LINGER, 0)
    req.connect(a["control"])

    def stats() -> dict:
        req.send(pack({"cmd": "stats"}))
        return decode_map(req.recv())

    stats()
    pub = ctx.socket(zmq.XPUB)
    pub.setsockopt(zmq.SNDHWM, 0)
    pub.setsockopt(zmq.LINGER, 0)
    pub.connect(a["ingest"])
    while pub.recv()[:1] != b"\x01":
        pass
    start = time.perf_counter()
    for f in frames:
        pub.send_multipart(f)
    while stats()["messages_total"] < len(frames) and time.perf_counter() - start < 300:
        time.sleep(0.01)
    elapsed = time.perf_counter() - start
    counted = stats()["messages_total"]
    proc.send_signal(signal.SIGTERM)
    proc.wait(10)
    ctx.destroy(linger=0)
    shutil.rmtree(folder, ignore_errors=True)
    return counted / elapsed


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--messages", type=int, default=200_000)
    p.add_argument("--devices", type=int, default=1000)
    args = p.parse_args()
    frames = messages(args.messages, args.devices)
    bare = bare_rate(frames)
    daemon = daemon_rate(frames)
    print("| path | messages/s |\n|---|---|")
    print(f"| bare pyzmq SUB loop (receive only) | {bare:,.0f} |")
    print(f"| p2p-daemon (validate, buffer, cut windows, infer) | {daemon:,.0f} |")
    print(f"\nthe daemon ingests at {daemon / bare:.0%} of the bare loop's rate")


if __name__ == "__main__":
    main()
